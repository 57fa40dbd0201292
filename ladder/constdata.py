"""The array a ``const`` op holds. Below the IR and its printer, which both need it."""

from __future__ import annotations

import numpy as np


class ConstData:
    """An immutable array held by a ``const`` op. Equal and hashable by dtype, shape and bytes."""

    __slots__ = ("array", "_key")

    def __init__(self, array: np.ndarray):
        arr = np.array(array, copy=True) if not _is_splat_view(array) else array
        arr.flags.writeable = False
        self.array = arr
        first = arr.reshape(-1)[:1].tobytes() if arr.size else b""
        body = first if self.is_splat else arr.tobytes()
        self._key = (str(arr.dtype), arr.shape, self.is_splat, body)

    @property
    def is_splat(self) -> bool:
        a = self.array
        if a.size <= 1:
            return a.size == 1
        if all(s == 0 for s in a.strides):
            return True
        # Same bits, not same value: 0.0 and -0.0 differ, and equal NaNs are a splat.
        bits = np.ascontiguousarray(a).reshape(-1).view(f"u{a.dtype.itemsize}")
        return bool(np.all(bits == bits[0]))

    def __eq__(self, other) -> bool:
        return isinstance(other, ConstData) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"ConstData({self.array.dtype}{list(self.array.shape)})"


def _is_splat_view(a) -> bool:
    return isinstance(a, np.ndarray) and a.size > 1 and all(s == 0 for s in a.strides)
