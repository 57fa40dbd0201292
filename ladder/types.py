"""Tensor types: an element type and a static shape, and for a legalized low-bit tensor its packing.

Element types are ``ladder.dtypes``; their names are re-exported here (``ladder.types.DType``,
``ladder.types.ternary``, ...). A tensor type names its packing, so this module sits above ``ladder.packing``,
which itself only needs element types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .dtypes import DTYPES, NF4_VALUES, DType, dtype, dtype_of_numpy, f32, i8, i32
from .errors import LadderError
from .packing import get_packing

globals().update(DTYPES)  # ladder.types.f32, ladder.types.ternary, ...

MAX_RANK = 32  # numpy allows 64 dimensions; nothing real comes near either


@dataclass(frozen=True)
class TensorType:
    """An element type and a static shape: ``f32[1, 2560]``; ``f32[]`` is a scalar.

    A legalized low-bit tensor also names its packing (ladder.packing): ``ternary<crumb32>[6912, 2560]`` is a
    logical ternary [6912, 2560] tensor held as the packing's uint8 storage (``storage_shape``)."""

    dtype: DType
    shape: tuple[int, ...]
    layout: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.layout is not None:
            self.packing  # raises for an unknown packing or one that cannot hold the type

    @property
    def packing(self):
        """The Packing of a legalized tensor (None when unpacked)."""
        if self.layout is None:
            return None
        p = get_packing(self.layout)
        if not p.accepts(self.dtype):
            raise LadderError(f"packing {p.name} cannot hold {self.dtype}; it holds {', '.join(sorted(p.dtypes))}")
        if not self.shape:
            raise LadderError(f"a packed tensor ({self.dtype}<{p.name}>) needs rank >= 1")
        return p

    @property
    def storage_shape(self) -> tuple[int, ...]:
        """Shape of the numpy array that holds a value of this type."""
        return self.packing.storage_shape(self.shape, self.dtype) if self.layout else self.shape

    @property
    def storage_np_dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.layout else self.dtype.np_dtype

    @property
    def logical(self) -> "TensorType":
        """The same tensor, unpacked."""
        return TensorType(self.dtype, self.shape)

    def storage_note(self) -> str:
        """'crumb32: u8[6912, 640], 2.00 bits/weight' for a packed tensor, '' otherwise."""
        if not self.layout:
            return ""
        bpw = 8 * self.packing.row_bytes(self.shape[-1], self.dtype) / max(self.shape[-1], 1)
        return f"{self.layout}: u8[{', '.join(map(str, self.storage_shape))}], {bpw:.2f} bits/weight"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def with_shape(self, shape: Iterable[int]) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dt: DType | str) -> "TensorType":
        return TensorType(dtype(dt), self.shape)

    def __str__(self) -> str:
        lay = f"<{self.layout}>" if self.layout else ""
        return f"{self.dtype.name}{lay}[{', '.join(str(d) for d in self.shape)}]"


def tensor_type(spec: "str | TensorType", shape: Iterable[int] | None = None) -> TensorType:
    """``tensor_type('f32[2, 3]')``, ``tensor_type('f32', [2, 3])`` or a TensorType unchanged."""
    if isinstance(spec, TensorType):
        return spec
    if shape is not None:
        return TensorType(dtype(spec), tuple(shape))
    text = spec.strip()
    if not text.endswith("]") or "[" not in text:
        raise LadderError(f"'{spec}' is not a tensor type like f32[2, 3]")
    name, dims = text[:-1].split("[", 1)
    layout = None
    if name.strip().endswith(">") and "<" in name:
        name, layout = name.strip()[:-1].split("<", 1)
        layout = layout.strip()
    try:
        parts = dims.split(",") if dims.strip() else []
        shape_t = tuple(int(d) for d in parts)
    except ValueError:
        raise LadderError(f"'{spec}' is not a tensor type like f32[2, 3]") from None
    if any(d < 0 for d in shape_t):
        raise LadderError(f"'{spec}' has a negative dimension")
    if len(shape_t) > MAX_RANK:
        raise LadderError(f"'{spec}' has more than {MAX_RANK} dimensions")
    return TensorType(dtype(name.strip()), shape_t, layout)


__all__ = ["DTYPES", "MAX_RANK", "NF4_VALUES", "DType", "TensorType", "dtype", "dtype_of_numpy", "f32", "i8", "i32",
           "tensor_type", *DTYPES]
