"""Crossroads: the hub and node daemons, their client library and tools.

Importing the package first sets gRPC's transport for the process (:mod:`node.grpc_runtime`):
it must happen before ``grpc`` is imported, and every entry point imports ``node`` first. So
does gRPC core's log verbosity (off unless the environment sets one).
"""

from node import grpc_runtime as _grpc_runtime

_grpc_runtime.apply()
_grpc_runtime.quiet_core_logs()
