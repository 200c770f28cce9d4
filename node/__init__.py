"""Crossroads: the hub and node daemons, their client library and tools.

Importing the package does nothing but import it: no environment is written, ``grpc`` is not
loaded. The process-wide gRPC settings (:mod:`node.grpc_runtime`) are made by the entry
points before they import ``grpc``: the ``crossroads`` command (:mod:`node.cli`), and the
``tests`` and ``benchmarks`` packages.
"""
