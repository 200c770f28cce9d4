"""Imports :mod:`node` before anything imports ``grpc``: the package sets gRPC's transport for
this process and the processes it starts (:mod:`node.grpc_runtime`)."""

import node  # noqa: F401
