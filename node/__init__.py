"""Crossroads: the hub and node daemons, their client library and tools.

Importing the package first sets gRPC's transport for the process (:mod:`node.grpc_runtime`):
it must happen before ``grpc`` is imported, and every entry point imports ``node`` first.
"""

from node import grpc_runtime as _grpc_runtime

_grpc_runtime.apply()
