"""The base of the servers' interceptors that wrap each served method's behaviour.

grpc.aio hands a server interceptor only the method's name; what it can change is the
method's handler. A :class:`HandlerWrapper` asks the next one for the handler and, when the
server serves the method, returns :meth:`HandlerWrapper.wrap` of it (a method not served
stays None: ``UNIMPLEMENTED``). The wrappers themselves must be of the kind they wrap
(coroutine or async generator function): grpc.aio calls a behaviour by its kind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

__all__ = ["HandlerWrapper"]


class HandlerWrapper(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        return None if handler is None else self.wrap(handler, handler_call_details.method)

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The handler of ``method`` (``/package.Service/Method``) as this server serves it."""
        raise NotImplementedError
