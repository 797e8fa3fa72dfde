"""Generated protobuf and gRPC stubs (written by proto/generate.py; do not edit).

Import the modules directly, e.g.
``from engine.protocol.generated.inference import grpc_service_pb2``.
"""

from engine.protocol.generated.pool import POOL

__all__ = ["POOL"]
