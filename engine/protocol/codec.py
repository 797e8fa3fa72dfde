"""The tensor codec: protobuf <-> numpy at the protocol edge.

Servicers use only this module; the work is split by direction:

- ``codec_request``: ``parse_infer_request``/``parse_message``,
  ``requested_outputs``, ``wants_raw``;
- ``codec_decode``: ``decode_inputs`` (every malformed tensor becomes a
  ``TensorError``, checked before anything is allocated);
- ``codec_encode``: ``encode_response``, ``encode_tensor``, ``tensor_bytes``;
- ``codec_tables``: ``CodecLimits`` and the per-datatype tables built at import.

Wire format (Open Inference Protocol v2): raw contents are little-endian and
row-major, one entry per tensor in tensor order; a BYTES element is a 4-byte
little-endian length followed by its bytes; BOOL is one byte, 0 or 1.
"""

from engine.protocol.codec_decode import decode_inputs
from engine.protocol.codec_encode import datatype_of, encode_response, encode_tensor, tensor_bytes
from engine.protocol.codec_request import (
    check_parameters,
    parse_infer_request,
    parse_message,
    requested_outputs,
    wants_raw,
)
from engine.protocol.codec_tables import DEFAULT_LIMITS, CodecLimits

__all__ = [
    "DEFAULT_LIMITS",
    "CodecLimits",
    "check_parameters",
    "datatype_of",
    "decode_inputs",
    "encode_response",
    "encode_tensor",
    "parse_infer_request",
    "parse_message",
    "requested_outputs",
    "tensor_bytes",
    "wants_raw",
]
