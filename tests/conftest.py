"""Shared fixtures: in-process test networks with a real PKI, raw mTLS clients for the hub.

``start_network`` is the one way tests start an :class:`~node.testing.InProcessNetwork`: a test
or a module's fixture calls it with the options it needs (institutions, directory seed, config
overrides) and every network it started is stopped at teardown, the last first.
``network`` is the plain network of A, B and C with the default directory.
``pg_server`` is one PostgreSQL server for the session (started on first use: a run that
needs none starts none); ``pg_database`` a fresh database on it for one test (dropped after).
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
import pytest

from node import grpc_runtime
from node.client import LocalClient, make_envelope
from node.rpc.tls import channel_options, hub_tls_name
from node.testing import DEMO_SERVICE, InProcessNetwork
from node.testing_postgres import PgDatabase, PostgresServer
from node.wire.gen.crossroads.v1 import envelope_pb2, hub_pb2_grpc

A, B, C = "0403019261", "0428759497", "0566988259"


def pytest_configure(config: pytest.Config) -> None:
    """One gRPC core for the whole session: each in-process network would otherwise tear it
    down and build it again (node/grpc_runtime.py, hold_core: CI's pytest process crashed in
    gRPC's poller code after such cycles)."""
    grpc_runtime.hold_core()


def hub_channel(
    address: str, ca: Path, cert: Path | None, key: Path | None, network: str = "demo"
) -> grpc.aio.Channel:
    """A raw mTLS channel to the hub with any certificate (or none)."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )
    return grpc.aio.secure_channel(address, creds, options=channel_options(hub_tls_name(network),
                                                                          64 << 20))


async def submit_raw(
    channel: grpc.aio.Channel, batches: Sequence[envelope_pb2.EnvelopeBatch], timeout: float = 20
) -> list[envelope_pb2.BatchAck]:
    """Send batches on one Submit stream, one at a time, and return the acks."""
    call = hub_pb2_grpc.HubStub(channel).Submit(timeout=timeout)
    acks = []
    for batch in batches:
        await call.write(batch)
        ack = await call.read()
        assert ack is not grpc.aio.EOF, "stream closed"
        acks.append(ack)
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    return acks


async def fetch_all(api: str, expected: int, timeout: float = 30) -> list[envelope_pb2.Envelope]:
    """Read (and acknowledge) from a node's local API until ``expected`` envelopes arrived."""
    got: list[envelope_pb2.Envelope] = []

    def once() -> list[envelope_pb2.Envelope]:
        with LocalClient(api) as client:
            batch = client.fetch(1000, wait_ms=200)
            if batch:
                client.acknowledge([e.hub_ticket for e in batch])
            return batch

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < expected and loop.time() < deadline:
        got.extend(await asyncio.to_thread(once))
    return got


class Openable(Protocol):
    """A store (or anything) opened before use and closed after."""

    async def open(self) -> object: ...
    async def close(self) -> None: ...


OpenableT = TypeVar("OpenableT", bound=Openable)


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    """``GET http://127.0.0.1:<port><path>`` (a daemon's metrics port): status and body, an
    error status included."""

    def get() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    return await asyncio.to_thread(get)


@asynccontextmanager
async def opened(store: OpenableT) -> AsyncIterator[OpenableT]:
    """``store`` open for the block, closed after it (also when the block fails)."""
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def local_call(api: str, method: str, *args: object, **kwargs: object) -> object:
    """Call a LocalClient method without blocking the event loop serving it."""

    def run() -> object:
        with LocalClient(api) as client:
            return getattr(client, method)(*args, **kwargs)

    return await asyncio.to_thread(run)


def numbered_envelopes(count: int, receivers: Callable[[int], list[str]] = lambda i: [B]
                       ) -> list[bytes]:
    """``count`` demo-service envelopes about one citizen, the i-th with sender ticket
    ``str(i)`` and payload ``m<i>``, sent to ``receivers(i)``."""
    return [make_envelope(DEMO_SERVICE, receivers(i), f"m{i}".encode(),
                          subject_citizen="85073003328", sender_ticket=str(i))
            for i in range(count)]


async def submit_accepted(api: str, envelopes: Sequence[bytes]) -> list[int]:
    """Submit at a node's local API and wait until the hub accepted every one; the sequences."""
    _, seqs = await local_call(api, "submit", envelopes)
    decided = await local_call(api, "outcomes", seqs, wait_ms=20_000)
    assert [o.reason for o in decided] == ["ACCEPTED"] * len(envelopes)
    return list(seqs)


class NetworkStarter(Protocol):
    async def __call__(self, *institutions: str, name: str = "net",
                       **options: Any) -> InProcessNetwork: ...


@pytest.fixture
async def start_network(tmp_path: Path) -> AsyncIterator[NetworkStarter]:
    """``await start_network(*institutions, name="net", **options)``: an
    :class:`InProcessNetwork` of ``institutions`` (default A, B, C) under ``tmp_path / name``,
    started; ``options`` are its fields (``seed``, ``hub_overrides``, ``node_overrides``,
    ``per_node``). Stopped at teardown."""
    async with AsyncExitStack() as stack:

        async def start(*institutions: str, name: str = "net", **options: Any) -> InProcessNetwork:
            net = InProcessNetwork(tmp_path / name, institutions=institutions or (A, B, C),
                                   **options)
            return await stack.enter_async_context(net)

        yield start


@pytest.fixture
async def network(start_network: NetworkStarter) -> InProcessNetwork:
    return await start_network()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_database(pg_server: PostgresServer, tmp_path: Path) -> Iterator[PgDatabase]:
    with pg_server.database(tmp_path) as database:
        yield database


# -- the commands' JSON output (pki/output.py; docs/OPERATIONS.md, "Command-line output") --

_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def check_json_lines(text: str) -> list[dict[str, Any]]:
    """Each line of ``text`` is one JSON object in the documented style; the objects."""
    records = []
    for line in text.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert line == json.dumps(record, sort_keys=True, separators=(",", ":"),
                                  ensure_ascii=False), f"not compact and sorted: {line}"
        assert all(_SNAKE.match(key) for key in record), f"a key not snake_case: {line}"
        _check_values(record, line)
        records.append(record)
    return records


def _check_values(value: Any, line: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            assert not re.search(r"(^|_)at_us$|_unix_us$", key), f"a raw timestamp {key}: {line}"
            if key.endswith("_at") or key in ("at", "valid_until"):
                assert item is None or _RFC3339.match(str(item)), f"{key}={item!r}: {line}"
            _check_values(item, line)
    elif isinstance(value, list):
        for item in value:
            _check_values(item, line)
