"""The shape check every front door applies to a request tensor, before anything is allocated.

A door reads the tensor's declared name and shape from its wire form and calls
``checked_shape``; the rank, every fixed dimension and the element count are checked against
the graph's ``TensorSpec`` and the server's element limit, with one wording for every door.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from engine.errors import TensorError
from engine.tensors import TensorSpec

_SHAPE_CLIP: Final = 8  # dimensions quoted in a message


def shape_text(shape: Sequence[int]) -> str:
    """``[1, 4]``; a shape of many dimensions quoted in part, so messages stay small."""
    dims = [str(d) for d in shape[:_SHAPE_CLIP]]
    if len(shape) > _SHAPE_CLIP:
        dims.append(f"… ({len(shape)} dims)")
    return "[" + ", ".join(dims) + "]"


def checked_shape(name: str, shape: tuple[int, ...], spec: TensorSpec, max_elements: int) -> int:
    """The element count of a tensor of ``shape`` declared as ``spec``; TensorError naming ``name``
    (already clipped by the door) when the rank, a fixed dimension or the size is wrong."""
    if len(shape) != len(spec.shape):
        raise TensorError(
            name,
            f"shape {shape_text(shape)} has rank {len(shape)} but the declared shape "
            f"{spec.shape_text()} has rank {len(spec.shape)}",
        )
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=False)):  # ranks checked above
        if got < 0:
            raise TensorError(name, f"shape {shape_text(shape)} has a negative dimension at axis {axis}")
        if want != -1 and got != want:
            raise TensorError(
                name,
                f"shape {shape_text(shape)} has {got} at axis {axis} but the declared shape "
                f"{spec.shape_text()} needs {want}",
            )
        if got > max_elements:
            raise TensorError(
                name, f"dimension {got} at axis {axis} is above the limit of {max_elements} elements"
            )
    count = math.prod(shape)
    if count > max_elements:
        raise TensorError(
            name, f"shape {shape_text(shape)} has {count} elements, above the limit of {max_elements}"
        )
    return count
