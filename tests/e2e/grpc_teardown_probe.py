"""A process that closes every gRPC object while gRPC's TCP backup poller is polling
(``python -m tests.e2e.grpc_teardown_probe ROUNDS hold|plain``; tests/e2e/test_grpc_core_held.py).

Each round: an in-process grpc.aio server streams 1 MB messages to a client process, the client
is stopped (SIGSTOP) so that the server's writes block, which starts gRPC's TCP backup poller
(iomgr's ``tcp_posix.cc``: it polls in 10-second turns on a thread of its own); then the client
is killed and the server stopped, which leaves nothing of gRPC open, and the process allocates
and frees memory for a while as any test would. With ``plain``, gRPC's user count falls to zero
each round and its core is torn down under the poller: the process often dies of a SIGSEGV (or
an abort on a corrupt mutex) within a few rounds, in ``check_neighborhood_for_available_poller``
below the TCP backup poller, the frames of CI's crash. With ``hold``
(:func:`node.grpc_runtime.hold_core`, what the test suite does) it runs every round.
Prints one line per round done; exit 0 after the last.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

from node import grpc_runtime

grpc_runtime.apply()
import grpc  # noqa: E402 - after the transport setting, as in every entry point

# The client dies with this process (PR_SET_PDEATHSIG = 1, SIGKILL), stopped or not.
CLIENT = """
import ctypes, sys, grpc
ctypes.CDLL(None, use_errno=True).prctl(1, 9)
channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.max_receive_message_length", -1)])
for _ in channel.unary_stream("/probe/stream")(b""):
    pass
"""


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for _ in range(2000):
        yield b"y" * 1_000_000


async def _blocked_writes() -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "probe", {"stream": grpc.unary_stream_rpc_method_handler(_stream)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = subprocess.Popen([sys.executable, "-c", CLIENT, f"127.0.0.1:{port}"],
                              stderr=subprocess.DEVNULL)
    try:
        await asyncio.sleep(0.7)
        os.kill(client.pid, signal.SIGSTOP)
        await asyncio.sleep(random.uniform(0.5, 1.5))
    finally:
        client.kill()
        client.wait()
    await server.stop(0.2)


def _churn(seconds: float) -> None:
    end = time.monotonic() + seconds
    kept: list[bytearray] = []
    while time.monotonic() < end:
        kept.append(bytearray(random.choice((48, 64, 96, 128, 256, 512, 1024, 4096))))
        if len(kept) > 20_000:
            del kept[:10_000]


def main(rounds: int, mode: str) -> int:
    if mode == "hold":
        grpc_runtime.hold_core()
    for done in range(rounds):
        asyncio.run(_blocked_writes())
        _churn(random.uniform(2, 5))
        print(done, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(int(sys.argv[1]), sys.argv[2]))
