"""Helpers shared by every servicer: turning domain errors into gRPC statuses (the reason as
``ErrorInfo``, :mod:`node.rpc.refuse`), one log line per call.

The log line of a *refused* call (a domain error: revoked certificate, unknown institution,
...) is aggregated like the hub's audit of refusals (:mod:`node.core.refusals`): per peer
address (without port), method and reason, the first is logged at once and the others in
the interval (:data:`REFUSAL_INTERVAL_S`) as one ``rpc_refusals_repeated`` warning with
their count, when the interval ends. A client retrying in a loop cannot flood the logs."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

import grpc
import structlog

from node.core.errors import CrossroadsError
from node.core.refusals import RefusalKey, RefusalSummary
from node.rpc.refusal_flood import REFUSAL_INTERVAL_S, TimedRefusals, peer_host
from node.rpc.refuse import abort_refused
from node.wire.errors import status_of

__all__ = ["StreamCall", "describe", "guard_stream", "guard_unary", "really_cancelled", "refuse",
           "streaming", "unary", "until_drained"]

log = structlog.get_logger("rpc")
T = TypeVar("T")
S = TypeVar("S")
R = TypeVar("R")
Q = TypeVar("Q")
#: A servicer's unary method: ``(self, request, context)`` to the response.
_Unary = Callable[[S, Q, grpc.aio.ServicerContext], Awaitable[T]]


def _log_repeated(summaries: list[RefusalSummary]) -> None:
    for s in summaries:
        log.warning("rpc_refusals_repeated", method=s.key.method, peer=s.key.peer,
                    reason=s.key.reason, count=s.count, first_us=s.first_us,
                    last_us=s.last_us, error=s.detail, interval_s=REFUSAL_INTERVAL_S)


#: Refused calls' log lines, aggregated (module-wide: one per process).
refusal_logs = TimedRefusals(_log_repeated)


def _first_refusal(method: str, peer: str, exc: CrossroadsError, details: str) -> bool:
    """Whether this refusal's log line is written now (else it is counted for a summary)."""
    return refusal_logs.note(RefusalKey(peer_host(peer), method, exc.reason), details)


async def guard_unary(
    method: str, context: grpc.aio.ServicerContext, body: Callable[[], Awaitable[T]]
) -> T:
    started = time.perf_counter()
    peer = context.peer()  # now, while the call is alive (see guard_stream)
    try:
        result = await body()
    except CrossroadsError as exc:
        await refuse(method, context, exc, started, peer)
    except grpc.aio.AbortError:
        raise  # the handler ended the call with its own status (and said why)
    except Exception as exc:
        # Not a refusal: a bug or a failure below. The caller gets UNKNOWN from gRPC; the
        # daemon's log must still say which call failed and why (found by the fuzzing).
        log.error("rpc", method=method, peer=peer, status="UNKNOWN", error=describe(exc),
                  duration_ms=_ms(started))
        raise
    log.debug("rpc", method=method, peer=peer, status="OK", duration_ms=_ms(started))
    return result


def unary(method: str) -> Callable[[_Unary[S, Q, T]], _Unary[S, Q, T]]:
    """Decorates a servicer's unary gRPC method ``method`` (``(self, request, context)``): its
    body runs under :func:`guard_unary`."""

    def wrap(body: _Unary[S, Q, T]) -> _Unary[S, Q, T]:
        @functools.wraps(body)
        async def handler(self: S, request: Q, context: grpc.aio.ServicerContext) -> T:
            return await guard_unary(method, context, lambda: body(self, request, context))

        return handler

    return wrap


async def refuse(method: str, context: grpc.aio.ServicerContext, exc: CrossroadsError,
                 started: float, peer: str | None = None) -> NoReturn:
    """End a refused call with the refusal's status; its ``rpc`` log line is aggregated
    (see the module's docstring). ``peer``: the caller's address, if read already."""
    code, details = status_of(exc)
    peer = context.peer() if peer is None else peer
    if _first_refusal(method, peer, exc, details):
        log.warning("rpc", method=method, peer=peer, status=code.name, error=details,
                    duration_ms=_ms(started))
    await abort_refused(context, exc)


async def guard_stream(
    method: str,
    context: grpc.aio.ServicerContext,
    body: AsyncIterator[T],
    summary: dict[str, Any],
) -> AsyncIterator[T]:
    """Wrap a streaming handler: map domain errors, log one summary line at the end.

    The peer is read when the stream starts. The ``finally`` below may run long after the
    call is gone: when gRPC stops iterating a handler whose client vanished, the generator is
    closed later by the event loop's finalizer, and ``context.peer()`` then dereferences a
    released call inside grpcio (a segfault of the whole process, seen with grpcio 1.85.3)."""
    started = time.perf_counter()
    peer = context.peer()
    status = "OK"
    quiet = False  # a refusal counted for a summary line (see the module's docstring)
    try:
        async for item in body:
            yield item
    except CrossroadsError as exc:
        code, details = status_of(exc)
        status = code.name
        summary["error"] = details
        quiet = not _first_refusal(method, peer, exc, details)
        await abort_refused(context, exc)
    except BaseException as exc:
        status = type(exc).__name__
        if not isinstance(exc, asyncio.CancelledError | GeneratorExit | grpc.aio.AbortError):
            summary["error"] = describe(exc)
        raise
    finally:
        # A stream that failed is not routine: warning when the peer or the operator is to
        # act (a domain error), error for anything unexpected; a stream ended by the peer
        # or by a stop (cancelled) stays at info.
        # A refusal counted for a summary line is not logged on its own.
        if not quiet:
            _log_at(_STREAM_LEVELS.get(status, "warning" if status in _CODE_NAMES else "error"),
                    "rpc", method=method, peer=peer, status=status, duration_ms=_ms(started),
                    **summary)


@dataclass(frozen=True, slots=True)
class StreamCall(Generic[R]):
    """One call of a client-streaming method, as its body (:func:`streaming`) sees it."""

    #: The client's messages.
    requests: AsyncIterator[R]
    context: grpc.aio.ServicerContext
    #: The fields of the call's end-of-stream log line (the body adds to them).
    summary: dict[str, Any]


def streaming(
    method: str,
    body: Callable[[S, StreamCall[Any]], AsyncIterator[T]],
    **summary: Any,
) -> Callable[[S, AsyncIterator[Any], grpc.aio.ServicerContext], AsyncIterator[T]]:
    """A servicer's streaming gRPC method ``method``: ``body(self, call)`` under
    :func:`guard_stream`, the call's ``summary`` (its end-of-stream log line's fields) starting
    as ``summary`` on each call. grpc.aio calls a method by its kind: this is an async
    generator function, like the method it stands for."""

    async def handler(self: S, requests: AsyncIterator[Any],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[T]:
        call = StreamCall(requests, context, dict(summary))
        async for item in guard_stream(method, context, body(self, call), call.summary):
            yield item

    handler.__name__ = handler.__qualname__ = method.rpartition(".")[2]
    return handler


#: Stream end statuses logged at info (the rest: warning or error, see guard_stream).
_STREAM_LEVELS = {"OK": "info", "CancelledError": "info", "GeneratorExit": "info",
                  "AbortError": "warning"}
_CODE_NAMES = frozenset(code.name for code in grpc.StatusCode)


def _log_at(level: str, event: str, **fields: Any) -> None:
    getattr(log, level)(event, **fields)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


async def until_drained(iterator: AsyncIterator[T], draining: asyncio.Event) -> AsyncIterator[T]:
    """Yield from a request stream until it ends or ``draining`` is set.

    A graceful stop sets ``draining``: a handler then finishes the batch in hand (its ack is
    sent) and ends the stream instead of waiting for the next batch, so long-lived streams
    do not hold the server's shutdown for its whole grace period.
    """
    it = iterator.__aiter__()
    stop = asyncio.ensure_future(draining.wait())
    nxt: asyncio.Future[T] | None = None
    try:
        while not draining.is_set():
            nxt = asyncio.ensure_future(it.__anext__())
            done, _ = await asyncio.wait({nxt, stop}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                return
            try:
                item = nxt.result()
            except StopAsyncIteration:
                return
            nxt = None
            yield item
    finally:
        stop.cancel()
        if nxt is not None:
            nxt.cancel()
            nxt.add_done_callback(_consume)


def _consume(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()


def describe(exc: BaseException) -> str:
    """One line for a log: the gRPC status and details, or the exception's type and text."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


def really_cancelled() -> bool:
    """True when the current task itself is being cancelled (a stop), as opposed to
    grpc.aio raising CancelledError for a call that was cancelled under it."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
