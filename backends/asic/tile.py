"""A tile: a typed view of an ASIC buffer, ``%buf+offset:dtype<layout>[shape]/stride``.

Below both the ISA (isa.py, whose instructions take tiles as operands) and the assembly printer (asm_print.py,
which prints them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from ladder.types import TensorType, dtype as lookup_dtype


@dataclass(frozen=True)
class Tile:
    """A typed view of a buffer: ``%buf+offset:dtype<layout>[shape]/stride``."""

    buffer: str
    dtype: str
    shape: tuple[int, ...]
    offset: int = 0   # bytes from the start of the buffer
    stride: int = 0   # elements from one row's start to the next (rows = all but the last axis); 0 = packed
    layout: str = ""  # a ladder packing (``planes``): the tile holds that packing's bytes

    def __post_init__(self):
        if type(self.shape) is not tuple:
            object.__setattr__(self, "shape", tuple(map(int, self.shape)))

    @cached_property
    def type(self) -> TensorType:
        return TensorType(lookup_dtype(self.dtype), self.shape, self.layout or None)

    @property
    def elems(self) -> int:
        return math.prod(self.shape)

    @cached_property
    def itemsize(self) -> int:
        return 1 if self.layout else lookup_dtype(self.dtype).np_dtype.itemsize

    @property
    def row_elems(self) -> int:
        return self.stride or (self.shape[-1] if self.shape else 1)

    @cached_property
    def nbytes(self) -> int:
        """Bytes of data in the tile (without the gaps of a strided view)."""
        if self.layout:
            return math.prod(self.type.storage_shape)
        return math.prod(self.shape) * self.itemsize

    @cached_property
    def span(self) -> int:
        """Bytes from the tile's first byte to one past its last."""
        if self.layout or not self.stride or not self.shape:
            return self.nbytes
        rows = math.prod(self.shape[:-1])
        return ((rows - 1) * self.stride + self.shape[-1]) * self.itemsize if rows else 0

    def __str__(self) -> str:
        off = f"+{self.offset}" if self.offset else ""
        lay = f"<{self.layout}>" if self.layout else ""
        stride = f"/{self.stride}" if self.stride else ""
        return f"%{self.buffer}{off}:{self.dtype}{lay}[{', '.join(map(str, self.shape))}]{stride}"


__all__ = ["Tile"]
