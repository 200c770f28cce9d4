"""What the gRPC edge logs when a unary handler fails in a way no refusal names."""

from __future__ import annotations

import grpc
import pytest
from structlog.testing import capture_logs

from node.core.errors import PermissionDenied
from node.rpc.edge import guard_unary

METHOD = "/test.Edge/Call"


async def _serve(handler_body: object) -> tuple[grpc.aio.Server, int]:
    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        async def body() -> bytes:
            return handler_body(request)  # type: ignore[operator, no-any-return]
        return await guard_unary("Edge.Call", context, body)

    handler = grpc.method_handlers_generic_handler(
        "test.Edge", {"Call": grpc.unary_unary_rpc_method_handler(call)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _call(port: int) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary(METHOD)(b"x", timeout=5)
    return caught.value


async def _failed_call(handler_body: object) -> tuple[grpc.aio.AioRpcError, list[dict]]:
    """Serve ``handler_body``, call it once: the client's error and the lines logged."""
    server, port = await _serve(handler_body)
    try:
        with capture_logs() as logs:
            error = await _call(port)
    finally:
        await server.stop(None)
    return error, logs


def _boom(request: bytes) -> bytes:
    raise OverflowError("Python int too large to convert to SQLite INTEGER")


def _refuse(request: bytes) -> bytes:
    raise PermissionDenied("not for you", "WRONG_ROLE")


async def test_an_unexpected_failure_of_a_unary_call_is_logged_at_error() -> None:
    error, logs = await _failed_call(_boom)
    assert error.code() is grpc.StatusCode.UNKNOWN
    failed = [e for e in logs if e["event"] == "rpc" and e["log_level"] == "error"]
    assert len(failed) == 1, logs
    assert failed[0]["method"] == "Edge.Call" and failed[0]["status"] == "UNKNOWN"
    assert "too large to convert" in failed[0]["error"]


async def test_a_refusal_is_a_warning_with_its_status_not_an_error() -> None:
    error, logs = await _failed_call(_refuse)
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert [e["log_level"] for e in logs if e["event"] == "rpc"] in (["warning"], [])
    assert not [e for e in logs if e["log_level"] == "error"], logs
