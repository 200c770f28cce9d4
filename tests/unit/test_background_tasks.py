"""Background tasks' failures: logged once, structured, with their cause (node.tasks)."""

from __future__ import annotations

import asyncio
import gc

import structlog

from node.tasks import cause_of, consume, report_unhandled, spawn


async def _fails() -> None:
    try:
        raise OSError(28, "No space left on device")
    except OSError as exc:
        raise RuntimeError("store failed") from exc


async def test_a_spawned_task_that_fails_is_logged_once_with_its_cause() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        with structlog.testing.capture_logs() as logs:
            task = spawn(_fails(), "uplink")
            await asyncio.wait({task})
            await asyncio.sleep(0)
            del task
            gc.collect()
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    failures = [e for e in logs if e["event"] == "background_task_failed"]
    assert len(failures) == 1
    assert failures[0]["task"] == "uplink"
    assert failures[0]["error"] == (
        "RuntimeError: store failed <- OSError: [Errno 28] No space left on device")
    assert reported == []  # asyncio had nothing left to say about it


async def test_a_consumed_future_is_not_reported_and_the_handler_is_structured() -> None:
    loop = asyncio.get_running_loop()
    with structlog.testing.capture_logs() as logs:
        loop.set_exception_handler(report_unhandled)
        try:
            quiet = asyncio.ensure_future(_fails())
            consume(quiet)
            loud = asyncio.ensure_future(_fails())
            await asyncio.wait({quiet, loud})
            del quiet, loud
            gc.collect()
            await asyncio.sleep(0)
        finally:
            loop.set_exception_handler(None)
    unhandled = [e for e in logs if e["event"] == "asyncio_unhandled"]
    assert len(unhandled) == 1  # the one nobody looked at, as one structured line
    assert unhandled[0]["message"] == "Task exception was never retrieved"
    assert unhandled[0]["error"].startswith("RuntimeError: store failed <- OSError")


def test_cause_of_stops_on_a_cycle() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert cause_of(a) == "ValueError: a <- ValueError: b"
