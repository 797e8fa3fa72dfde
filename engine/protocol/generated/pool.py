"""The descriptor pool every generated stub in this package registers in.

Written by proto/generate.py; do not edit. A private pool keeps our
``inference.*`` symbols apart from tritonclient's copy of the same protocol,
which lives in protobuf's default pool. Pass ``POOL`` to gRPC server
reflection.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
