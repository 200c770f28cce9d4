"""Makes gRPC's process-wide settings before anything imports ``grpc``, for this process and
the processes it starts (:mod:`node.grpc_runtime`; importing :mod:`node` does not)."""

from node import grpc_runtime

grpc_runtime.apply()
grpc_runtime.quiet_core_logs()
