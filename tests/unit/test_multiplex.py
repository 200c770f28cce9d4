"""Many calls on one stream (node/rpc/multiplex.py) over a real grpc.aio server on loopback.

The server here is a plain (insecure) gRPC server like a node's local API, serving the
``ConsultCalls``/``ConsultReplies`` messages with :func:`serve_calls`; the handler echoes the
envelope bytes back in ``sender_ticket`` after an optional delay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from node.config import Limits
from node.core.errors import Unavailable
from node.core.reasons import CallReason
from node.rpc.multiplex import CallFailed, StreamCaller, serve_calls
from node.wire.gen.crossroads.v1 import consult_pb2 as cpb

METHOD = "/test.Multiplex/Calls"
Handler = Callable[[cpb.ConsultRequest], Awaitable[cpb.ConsultResponse]]


class Server:
    def __init__(self, handle: Handler, silent_streams: int = 0, **options: Any) -> None:
        self.handle = handle
        #: serve_calls' options: the configured in-flight cap unless a test sets its own.
        self.options = {"max_in_flight": Limits().stream_calls_in_flight, **options}
        self.messages = 0  # call messages received
        self.streams = 0  # streams opened
        self.silent_streams = silent_streams  # the first ones read their calls, answer none
        self.draining = asyncio.Event()
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> int:
        async def calls(requests: AsyncIterator[cpb.ConsultCalls],
                        context: grpc.aio.ServicerContext) -> AsyncIterator[cpb.ConsultReplies]:
            async def counted() -> AsyncIterator[cpb.ConsultCalls]:
                async for message in requests:
                    self.messages += 1
                    yield message

            self.streams += 1
            if self.streams <= self.silent_streams:
                async for _ in counted():
                    pass
                return
            async for replies in serve_calls(counted(), self.handle, cpb.ConsultReplies,
                                             cpb.ConsultReply, draining=self.draining,
                                             **self.options):
                yield replies

        handler = grpc.stream_stream_rpc_method_handler(
            calls, request_deserializer=cpb.ConsultCalls.FromString,
            response_serializer=cpb.ConsultReplies.SerializeToString)
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Multiplex", {"Calls": handler}),))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        await self.server.start()
        return self.port

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.stop(0)


def caller(channel: grpc.aio.Channel) -> StreamCaller[cpb.ConsultRequest, cpb.ConsultResponse]:
    open_stream = channel.stream_stream(
        METHOD, request_serializer=cpb.ConsultCalls.SerializeToString,
        response_deserializer=cpb.ConsultReplies.FromString)
    return StreamCaller(open_stream, cpb.ConsultCalls, cpb.ConsultCall)


@contextlib.asynccontextmanager
async def serving(handle: Handler | None = None, **options: Any) -> AsyncIterator[
        tuple[Server, StreamCaller[cpb.ConsultRequest, cpb.ConsultResponse]]]:
    """A server on 127.0.0.1:0 and a caller on a channel to it; all closed at the end."""
    server = Server(handle or echo, **options)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            calls = caller(channel)
            try:
                yield server, calls
            finally:
                await calls.close()
    finally:
        await server.stop()


def question(text: str, delay_ms: int = 0) -> cpb.ConsultRequest:
    return cpb.ConsultRequest(envelope=text.encode(), deadline_ms=delay_ms)


async def echo(request: cpb.ConsultRequest) -> cpb.ConsultResponse:
    """Echo after ``deadline_ms`` milliseconds (used here as the handler's delay)."""
    await asyncio.sleep(request.deadline_ms / 1000)
    return cpb.ConsultResponse(sender_ticket=request.envelope.decode())


async def test_concurrent_calls_get_their_own_replies_and_share_messages() -> None:
    async with serving(echo) as (server, calls):
        # Later questions answer sooner: replies come back out of order.
        texts = [f"q{i}" for i in range(200)]
        replies = await asyncio.gather(*(
            calls.call(question(t, delay_ms=(200 - i) % 7), timeout=10)
            for i, t in enumerate(texts)))
        assert [r.sender_ticket for r in replies] == texts
        # 200 calls issued at once went out in far fewer messages.
        assert server.messages < 50


async def test_a_late_reply_times_out_that_call_only() -> None:
    async with serving(echo) as (server, calls):
        slow = asyncio.ensure_future(calls.call(question("slow", delay_ms=500), timeout=0.05))
        fast = await calls.call(question("fast"), timeout=5)
        assert fast.sender_ticket == "fast"
        with pytest.raises(CallFailed) as failed:
            await slow
        assert failed.value.code == "DEADLINE_EXCEEDED"
        await asyncio.sleep(0.6)  # the late reply arrives and is dropped
        assert (await calls.call(question("after"), timeout=5)).sender_ticket == "after"


async def test_a_handler_error_fails_its_call_and_not_the_stream() -> None:
    async def picky(request: cpb.ConsultRequest) -> cpb.ConsultResponse:
        if request.envelope == b"bad":
            raise Unavailable("the hub is away", CallReason.HUB_UNAVAILABLE)
        if request.envelope == b"bug":
            raise RuntimeError("a bug")
        return await echo(request)

    async with serving(picky) as (server, calls):
        results = await asyncio.gather(
            *(calls.call(question(t), timeout=5) for t in ("ok1", "bad", "bug", "ok2")),
            return_exceptions=True)
        assert results[0].sender_ticket == "ok1"
        assert isinstance(results[1], CallFailed) and results[1].code == "UNAVAILABLE"
        assert "the hub is away" in results[1].detail
        assert results[1].reason is CallReason.HUB_UNAVAILABLE
        assert isinstance(results[2], CallFailed) and results[2].code == "INTERNAL"
        assert results[2].reason is CallReason.UNKNOWN
        assert results[3].sender_ticket == "ok2"


async def test_too_many_calls_in_flight_are_refused_not_queued() -> None:
    async with serving(echo, max_in_flight=3) as (server, calls):
        results = await asyncio.gather(
            *(calls.call(question(f"q{i}", delay_ms=200), timeout=5) for i in range(5)),
            return_exceptions=True)
        refused = [r for r in results if isinstance(r, CallFailed)]
        assert len(refused) == 2
        assert {(r.code, r.reason) for r in refused} == {
            ("RESOURCE_EXHAUSTED", CallReason.TOO_MANY_IN_FLIGHT)}
        assert sorted(r.sender_ticket for r in results if not isinstance(r, CallFailed)) == [
            "q0", "q1", "q2"]


async def test_a_broken_stream_fails_waiting_calls_and_the_next_call_reopens_it() -> None:
    server = Server(echo)
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        calls = caller(channel)
        waiting = asyncio.ensure_future(calls.call(question("w", delay_ms=5_000), timeout=30))
        await asyncio.sleep(0.2)
        await server.stop()
        with pytest.raises(CallFailed) as failed:
            await asyncio.wait_for(waiting, 5)  # at once, not after its 30 s
        assert failed.value.code == "UNAVAILABLE"
        again = Server(echo)
        await again.start(port)
        try:
            for _ in range(50):  # the channel reconnects with backoff
                try:
                    reply = await calls.call(question("back"), timeout=2)
                    break
                except CallFailed:
                    await asyncio.sleep(0.1)
            assert reply.sender_ticket == "back"
            await calls.close()
        finally:
            await again.stop()


async def test_a_stream_that_answers_nothing_is_given_up_and_the_next_call_reopens_it() -> None:
    """A peer that takes calls on a stream and never replies (alive: no keepalive ends it).
    The call times out, and the next call goes on a new stream instead of the stuck one."""
    async with serving(echo, silent_streams=1) as (server, calls):
        with pytest.raises(CallFailed) as failed:
            await calls.call(question("lost"), timeout=0.3)
        assert failed.value.code == "DEADLINE_EXCEEDED"
        assert (await calls.call(question("next"), timeout=5)).sender_ticket == "next"
        assert server.streams == 2 and server.messages == 2


async def test_draining_answers_the_calls_taken_then_ends_the_stream() -> None:
    async with serving(echo) as (server, calls):
        taken = asyncio.ensure_future(calls.call(question("taken", delay_ms=300), timeout=5))
        await asyncio.sleep(0.1)
        server.draining.set()
        assert (await taken).sender_ticket == "taken"
        await asyncio.sleep(0.1)
        # The stream ended: the next call opens a new one (this server still serves).
        server.draining.clear()
        assert (await calls.call(question("next"), timeout=5)).sender_ticket == "next"


async def test_replies_piled_up_are_split_to_fit_the_callers_message_limit() -> None:
    """Ten 30 KiB replies ready at once, for a caller that takes 100 KiB messages: batched in
    one message they would end the stream (and fail every call on it)."""
    gate = asyncio.Event()

    async def large(request: cpb.ConsultRequest) -> cpb.ConsultResponse:
        await gate.wait()
        return cpb.ConsultResponse(sender_ticket=request.envelope.decode() * (30 * 1024))

    limit = 100 * 1024
    server = Server(large, max_message_bytes=limit - 1024)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", limit)]
        ) as channel:
            calls = caller(channel)
            try:
                pending = [asyncio.ensure_future(calls.call(question(str(i)), timeout=10))
                           for i in range(10)]
                while server.messages == 0 or len(pending) > 10:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)  # every call is in its handler
                gate.set()
                replies = await asyncio.gather(*pending)
            finally:
                await calls.close()
    finally:
        await server.stop()
    assert [len(r.sender_ticket) for r in replies] == [30 * 1024] * 10
