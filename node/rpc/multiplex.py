"""Many request/reply calls on one long-lived gRPC stream, batched when they pile up.

Consultations are many small, independent request/reply pairs between the same two parties
(an application and its node, a node and the hub, the hub and a provider node). As unary
calls each pays a whole RPC: measured here, a ``grpc.aio`` unary round trip costs about twice
the CPU and the latency of a message pair on an open stream. So each pair of parties keeps one
bidirectional stream open (``Consultations``, ``Answers``); every request carries an id chosen
by the caller and its reply carries the same id, in any order.

Batching without waiting: a writer sends, in one message, every request (or reply) queued
while the stream was busy writing the previous message. At low load a message carries one
call and nothing waits for company; under load many calls share a message and its cost.

Client side, :class:`StreamCaller`: ``await caller.call(request, timeout)`` returns the
response or raises :class:`CallFailed` (``code`` is a gRPC status code name:
``DEADLINE_EXCEEDED`` when the reply did not come in time, ``UNAVAILABLE`` when the stream
broke, or the code the server put in the reply; ``reason`` the reply's call-level reason,
``UNKNOWN`` when it has none). When the stream breaks, every call waiting
on it fails at once and the next call opens a new stream. A reply that comes after its call
timed out is dropped. A call that times out while not one message came back on its stream
since it was sent means a stream stuck at the other end (alive, so keepalive does not end
it): the stream is failed like a broken one, and the next call opens a new stream.

Server side, :func:`serve_calls`: reads call messages, runs ``handle(request)`` for each
call in its own task (at most ``max_in_flight`` per stream, from the caller's
:class:`~node.config.Limits`; beyond, the call is refused with ``RESOURCE_EXHAUSTED``), and
yields reply messages, each at most ``max_message_bytes`` (the replies waiting are split
over several messages: two large answers batched together must not make a message the peer
refuses, which would end the stream and every call on it). A handler's
:class:`~node.core.errors.CrossroadsError` becomes that call's error reply (its gRPC code,
message and reason); it never ends the stream or the other calls.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import grpc
import structlog

from node.config import Limits
from node.core.errors import CrossroadsError
from node.core.reasons import CallReason
from node.tasks import consume
from node.wire.errors import reason_named, status_of

__all__ = ["CallFailed", "StreamCaller", "reply_message_bytes", "serve_calls"]

log = structlog.get_logger(__name__)
Req = TypeVar("Req")
Resp = TypeVar("Resp")


class CallFailed(Exception):
    """A call on a stream got no response: ``code`` is a gRPC status code name, ``reason``
    the call-level reason of a refusal (``UNKNOWN``: none given)."""

    def __init__(self, code: str, detail: str, reason: CallReason = CallReason.UNKNOWN) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.reason = reason


class _Stream:
    """One open stream and the calls waiting on it."""

    def __init__(self, call: Any, calls_type: Any, call_type: Any) -> None:
        self.call = call
        self.calls_type, self.call_type = calls_type, call_type
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.outbox: list[Any] = []
        self.wake = asyncio.Event()
        self.failure: CallFailed | None = None
        self.received = 0  # messages read from the stream
        self.writer = asyncio.create_task(self._write())
        self.reader = asyncio.create_task(self._read())

    async def _write(self) -> None:
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while self.outbox:
                    batch, self.outbox = self.outbox, []
                    await self.call.write(self.calls_type(calls=batch))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every waiting call learns why
            self.fail(exc)

    async def _read(self) -> None:
        try:
            while True:
                message = await self.call.read()
                if message is grpc.aio.EOF:
                    self.fail(CallFailed("UNAVAILABLE", "the stream ended"))
                    return
                self.received += 1
                waiting = self.waiting
                for reply in message.replies:
                    future = waiting.pop(reply.id, None)
                    if future is None or future.done():
                        continue  # timed out meanwhile
                    if reply.error_code:
                        future.set_exception(CallFailed(reply.error_code, reply.error,
                                                        reason_named(reply.error_reason)))
                    else:
                        future.set_result(reply.response)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            self.fail(exc)

    def send(self, ident: int, request: Any) -> asyncio.Future[Any]:
        if self.failure is not None:
            raise self.failure
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[ident] = future
        self.outbox.append(self.call_type(id=ident, request=request))
        self.wake.set()
        return future

    def fail(self, exc: BaseException) -> None:
        if self.failure is not None:
            return
        if isinstance(exc, CallFailed):
            self.failure = exc
        elif isinstance(exc, grpc.aio.AioRpcError):
            self.failure = CallFailed("UNAVAILABLE", f"{exc.code().name}: {exc.details()}")
        else:
            self.failure = CallFailed("UNAVAILABLE", f"stream failed: {exc!r}")
        waiting, self.waiting = self.waiting, {}
        for future in waiting.values():
            if not future.done():
                future.set_exception(self.failure)
        for task in (self.writer, self.reader):
            if task is not asyncio.current_task():
                task.cancel()
        self.call.cancel()


def _expire(future: asyncio.Future[Any], seconds: float) -> None:
    if not future.done():
        future.set_exception(CallFailed("DEADLINE_EXCEEDED", f"no reply within {seconds:.3f} s"))


class StreamCaller(Generic[Req, Resp]):
    """Calls on one stream opened by ``open_stream()`` (a grpc.aio stream-stream call),
    reopened after it breaks. ``calls_type``/``call_type`` are the batch and item messages
    (e.g. ``ConsultCalls``/``ConsultCall``)."""

    def __init__(self, open_stream: Callable[[], Any], calls_type: Any, call_type: Any) -> None:
        self._open = open_stream
        self._types = (calls_type, call_type)
        self._ids = itertools.count(1)
        self._stream: _Stream | None = None

    async def call(self, request: Req, timeout: float) -> Resp:
        stream = self._stream
        if stream is None or stream.failure is not None:
            stream = self._stream = _Stream(self._open(), *self._types)
        ident = next(self._ids)
        future = stream.send(ident, request)
        received = stream.received
        expiry = asyncio.get_running_loop().call_later(timeout, _expire, future, timeout)
        try:
            return await future  # type: ignore[no-any-return]
        except CallFailed as exc:
            if exc.code == "DEADLINE_EXCEEDED" and stream.received == received:
                stream.fail(CallFailed(  # the calls still waiting on it fail now
                    "UNAVAILABLE", f"no message on the stream in {timeout:.3f} s: given up"))
            raise
        finally:
            expiry.cancel()
            stream.waiting.pop(ident, None)

    @property
    def broken(self) -> bool:
        """True when the last stream opened failed (the next call opens another)."""
        return self._stream is not None and self._stream.failure is not None

    @property
    def streaming(self) -> bool:
        """True while a stream is open (opened and not failed)."""
        return self._stream is not None and self._stream.failure is None

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.fail(CallFailed("CANCELLED", "closed"))


async def serve_calls(  # noqa: C901 - reader, calls and writer of one stream share its state
    requests: AsyncIterator[Any],
    handle: Callable[[Any], Awaitable[Any]],
    replies_type: Any,
    reply_type: Any,
    *,
    on_message: Callable[[], Awaitable[None]] | None = None,
    draining: asyncio.Event | None = None,
    max_in_flight: int,
    on_refused: Callable[[Any], None] | None = None,
    max_message_bytes: int | None = None,
) -> AsyncIterator[Any]:
    """Serve a stream of call messages: yields reply messages until the caller closes its
    side (or ``draining`` is set: a graceful stop) and every call taken is answered.
    ``on_message`` runs before each message's calls are started (e.g. to re-check the
    caller's certificate; raising ends the stream). ``on_refused(request)`` is told of every
    call refused for ``max_in_flight`` (e.g. to audit it); it must not block."""
    out: list[Any] = []
    wake = asyncio.Event()
    running: set[asyncio.Task[None]] = set()

    async def run(ident: int, request: Any) -> None:
        try:
            reply = reply_type(id=ident, response=await handle(request))
        except CrossroadsError as exc:
            code, details = status_of(exc)
            reply = reply_type(id=ident, error_code=code.name, error=details,
                               error_reason=exc.reason)
        except Exception as exc:  # one call fails, the stream goes on
            log.exception("call_failed", error=repr(exc))
            reply = reply_type(id=ident, error_code="INTERNAL", error=repr(exc))
        out.append(reply)
        wake.set()

    async def read() -> None:
        try:
            async for message in requests:
                if on_message is not None:
                    await on_message()
                for item in message.calls:
                    if len(running) >= max_in_flight:
                        out.append(reply_type(id=item.id, error_code="RESOURCE_EXHAUSTED",
                                              error=f"more than {max_in_flight} calls in flight",
                                              error_reason=CallReason.TOO_MANY_IN_FLIGHT))
                        wake.set()
                        if on_refused is not None:
                            on_refused(item.request)
                        continue
                    task = asyncio.create_task(run(item.id, item.request))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            wake.set()

    reader = asyncio.create_task(read())
    # One watcher per stream (not a wait per message): a graceful stop stops the reading;
    # the calls already taken are still answered.
    drain = asyncio.ensure_future(_cancel_when(draining, reader)) if draining else None
    try:
        while True:
            await wake.wait()
            wake.clear()
            if out:
                batch, out = out, []
                for part in _split(batch, max_message_bytes):
                    yield replies_type(replies=part)
                wake.set()  # look again: more may have come while the message was written
            elif reader.done():
                if not running:
                    if not reader.cancelled():
                        reader.result()  # the caller's error, if any
                    return
                await asyncio.wait(set(running))
                wake.set()
    finally:
        reader.cancel()
        consume(reader)  # failed while the caller was going away: the stream is over anyway
        if drain is not None:
            drain.cancel()
        for task in running:
            task.cancel()


def reply_message_bytes(limits: Limits) -> int:
    """The most a ``ConsultReplies`` message may carry: what the asker's channel takes
    (``max_batch_bytes``) less a margin for the message's own framing."""
    return limits.max_batch_bytes - 64 * 1024


#: Bytes a reply costs in a replies message beyond its own (tag and length prefix).
_REPLY_FRAMING = 8


def _split(replies: list[Any], max_bytes: int | None) -> list[list[Any]]:
    """``replies`` cut into runs of at most ``max_bytes`` serialized (at least one each)."""
    if max_bytes is None:
        return [replies]
    runs: list[list[Any]] = [[]]
    size = 0
    for reply in replies:
        cost = reply.ByteSize() + _REPLY_FRAMING
        if runs[-1] and size + cost > max_bytes:
            runs.append([])
            size = 0
        runs[-1].append(reply)
        size += cost
    return runs


async def _cancel_when(event: asyncio.Event, task: asyncio.Task[None]) -> None:
    await event.wait()
    task.cancel()
