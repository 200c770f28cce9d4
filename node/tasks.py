"""The daemons' background tasks (watchers, pollers, workers): starting, failing, stopping.

A task whose exception nobody retrieves is reported by asyncio as a plain-text "Task
exception was never retrieved" traceback on stderr, long after the fact, once per task:
under a retry storm, a flood of unstructured lines. Here:

* :func:`spawn` starts a background task that nobody awaits for its result: if it ends
  with an exception, that exception is logged once, as a structured ``background_task_failed``
  line naming the task and the chain of causes, and counted as retrieved.
* :class:`BackgroundTask` is the base of a component that runs one such task (its ``_run``)
  from ``start()`` until ``stop()`` (cancel, and wait until it has ended).
* :func:`consume` marks a future whose outcome is deliberately dropped (a pipelined commit
  overtaken by an earlier failure) as retrieved, so asyncio does not report it.
* :func:`report_unhandled` is the event loop's exception handler in the daemons: anything
  asyncio would still print (a future nobody looked at, a failing callback) comes out as one
  structured ``asyncio_unhandled`` line instead.
* :func:`wait_event` waits for an event at most so long. Not ``asyncio.wait_for``: on Python
  3.11 it loses a cancellation that arrives as the awaited event is set, and the cancelled
  task then runs on (a hub whose store health task was cancelled while a failed write set
  its event never finished stopping).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Coroutine
from typing import Any, ClassVar

import structlog

__all__ = ["BackgroundTask", "cancel_and_wait", "cause_of", "consume", "report_unhandled",
           "spawn", "wait_event"]

log = structlog.get_logger("tasks")


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds have passed; whether it is set
    (see the module's docstring for why not ``asyncio.wait_for``)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel every task given (``None`` ones are skipped) and wait until each has ended."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def cause_of(exc: BaseException) -> str:
    """``Type: message``, followed by each ``__cause__``/``__context__`` (``<- ...``)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 5:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Start ``coro`` as a background task whose failure is logged once, structured.

    It runs in a context of its own: one started during a call does not carry the call's
    caller (node/rpc/auth_interceptor.py) into its log lines for the rest of its life."""
    task = asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())
    task.add_done_callback(_log_failure)
    return task


class BackgroundTask:
    """A component running one background task, :meth:`_run`, from :meth:`start` until
    :meth:`stop`; a failure of the task is logged as :func:`spawn` does."""

    #: The task's name (in ``background_task_failed`` lines).
    task_name: ClassVar[str]
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = spawn(self._run(), self.task_name)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        raise NotImplementedError


def _log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()  # retrieved: asyncio will not report it again
    if exc is not None:
        log.error("background_task_failed", task=task.get_name(), error=cause_of(exc))


def consume(future: asyncio.Future[Any]) -> None:
    """Mark ``future``'s outcome as seen, now or when it ends (its exception is dropped)."""
    if future.done():
        _retrieve(future)
    else:
        future.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def report_unhandled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Event loop exception handler: one structured line instead of a plain traceback."""
    exc = context.get("exception")
    holder = context.get("future") or context.get("task")
    name = holder.get_name() if isinstance(holder, asyncio.Task) else repr(holder)[:200]
    log.error("asyncio_unhandled", message=context.get("message", ""), task=name,
              error=cause_of(exc) if isinstance(exc, BaseException) else None)
