"""A hub store committing batches until it is killed (tests/contract/test_hub_contract.py).

``python -m tests.contract.crash_writer BACKEND DIR``: commits batches of :data:`BATCH`
envelopes for one origin, each with its queue row, its audit records and its ack, and prints
the batch number once the commit has returned (what the hub would acknowledge).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from node.core.audit import accepted
from node.wire.delivery import pack
from tests.contract.backends import HUB_BACKENDS

SENDER, DEST, ORIGIN = "0403019261", "0428759497", "crash-origin"
BATCH = 50


def batch(n: int) -> tuple[int, int, list[tuple[str, int, bytes]], list, bytes]:  # type: ignore[type-arg]
    first, last = (n - 1) * BATCH + 1, n * BATCH
    tickets = [f"t{seq}" for seq in range(first, last + 1)]
    rows = [(DEST, BATCH, pack([b"envelope %d" % seq for seq in range(first, last + 1)], tickets))]
    records = [accepted(str(seq), t, SENDER, DEST, "svc", "CITIZEN", "85073003328")
               for seq, t in zip(range(first, last + 1), tickets, strict=True)]
    return first, last, rows, records, b"ack %d" % n


async def main(backend: str, directory: Path) -> None:
    store = HUB_BACKENDS[backend].hub(directory, None)
    await store.open()
    n = 0
    while True:
        n += 1
        first, last, rows, records, ack = batch(n)
        await store.commit_batch(SENDER, ORIGIN, first, last, rows, records, ack)
        print(n, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
