"""Element types: one ``DType`` per type, and the table of them (``DTYPES``).

Each element type is one frozen ``DType``: its width in bits, whether it is signed, the set of values it
encodes and how a stored *code* maps to a *value*.

How tensors of each type are held in memory, unpacked (by the interpreter, and as numpy arrays a user passes):

==========  ===========================  ==========================================================
type        numpy dtype (``np_dtype``)   what an element holds
==========  ===========================  ==========================================================
f32 f16     float32 float16              the value
bf16        ml_dtypes.bfloat16           the value
fp8e4m3     ml_dtypes.float8_e4m3fn      the value
fp4         ml_dtypes.float4_e2m1fn      the value (e2m1: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and negatives)
i32 i16 i8  int32 int16 int8             the value
u8          uint8                        the value
i4 u4       ml_dtypes.int4 / uint4       the value, -8..7 / 0..15
i2 u2       ml_dtypes.int2 / uint2       the value, -2..1 / 0..3
u1          ml_dtypes.uint1              the value, 0..1
i1          int8                         the value, -1 or +1 (binary; code 0 means -1, code 1 means +1)
ternary     int8                         the value, -1, 0 or +1 (2-bit code = value + 1)
nf4         uint8                        the 4-bit code 0..15 (value = NF4 table[code])
==========  ===========================  ==========================================================

Weights files (safetensors) hold low-bit tensors *unpacked*, as int8/uint8 (see ``storage_dtype``), because
safetensors has no sub-byte types; ``from_storage``/``to_storage`` convert and check ranges.

Element types sit below the packings (``ladder.packing``), which sit below tensor types (``ladder.types``, which
re-exports every name here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

from .errors import LadderError, Location, TypeRangeError

# QLoRA's NormalFloat4 levels (Dettmers et al. 2023, bitsandbytes' table), code order.
NF4_VALUES = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)


@dataclass(frozen=True)
class DType:
    """One element type. ``kind`` is 'float', 'int', 'uint', 'binary', 'ternary' or 'table'."""

    name: str
    bits: int
    kind: str
    np_dtype: np.dtype = field(compare=False, repr=False)
    # Values a code can take, in code order, for types narrow enough to list (<= 8 bits).
    table: tuple[float, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def signed(self) -> bool:
        return self.kind in ("float", "int", "binary", "ternary", "table")

    @property
    def is_float(self) -> bool:
        return self.kind == "float"

    @property
    def is_integer(self) -> bool:
        """Integer-valued: arithmetic on the values is exact (i32 ... u1, i1, ternary)."""
        return self.kind in ("int", "uint", "binary", "ternary")

    @property
    def is_low_bit(self) -> bool:
        return self.bits < 8

    @property
    def values(self) -> tuple[float, ...] | None:
        """The distinct values this type encodes, ascending, or None for wide types."""
        if self.table is None:
            return None
        return tuple(sorted(set(v for v in self.table if not math.isnan(v))))

    @property
    def value_range(self) -> tuple[float, float]:
        if self.kind in ("int", "uint"):
            info = ml_dtypes.iinfo(self.np_dtype)
            return float(info.min), float(info.max)
        if self.kind == "float":
            info = ml_dtypes.finfo(self.np_dtype)
            return float(info.min), float(info.max)
        vals = self.values
        assert vals is not None
        return vals[0], vals[-1]

    @property
    def storage_dtype(self) -> np.dtype:
        """The numpy dtype a weights file holds this type in (sub-byte types widened to a byte)."""
        if self.name == "bf16":
            return np.dtype(np.uint16)
        if self.bits < 8 or self.name == "fp8e4m3":
            return np.dtype(np.int8) if self.kind in ("int", "binary", "ternary") else np.dtype(np.uint8)
        return self.np_dtype

    # -- codes and values ---------------------------------------------------------------------
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes (uint8, 0 .. 2**bits-1) -> values as float32. Defined for types up to 8 bits."""
        if self.table is None:
            raise LadderError(f"type {self.name} has no code table")
        codes = np.asarray(codes).astype(np.intp)
        if codes.size and (codes.min() < 0 or codes.max() >= len(self.table)):
            bad = codes[(codes < 0) | (codes >= len(self.table))].flat[0]
            raise TypeRangeError(f"code {bad} is not a {self.name} code (0 .. {len(self.table) - 1})")
        return np.asarray(self.table, dtype=np.float32)[codes]

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Values -> codes (uint8). Every value must be exactly representable."""
        if self.table is None:
            raise LadderError(f"type {self.name} has no code table")
        values = np.asarray(values, dtype=np.float32)
        table = np.asarray(self.table, dtype=np.float32)
        # -0.0 and 0.0 both map to the first matching code (fp4 has two zeros).
        order = np.argsort(table, kind="stable")
        pos = np.searchsorted(table[order], values)
        pos = np.clip(pos, 0, len(table) - 1)
        codes = order[pos]
        bad = table[codes] != values
        if np.any(bad):
            raise TypeRangeError(f"value {values[bad].flat[0]!r} is not a {self.name} value")
        return codes.astype(np.uint8)

    def to_values(self, arr: np.ndarray) -> np.ndarray:
        """A tensor held in ``np_dtype`` -> its values as float32 (nf4: codes through the table)."""
        if self.kind == "table":
            return self.decode(arr)
        return np.asarray(arr).astype(np.float32)

    # -- checking and conversion ----------------------------------------------------------------
    def check(self, arr: np.ndarray, what: str, loc: Location | None = None) -> None:
        """Raise TypeRangeError naming ``what`` if ``arr`` holds a value this type cannot encode."""
        arr = np.asarray(arr)
        if self.kind == "float" or arr.size == 0 or self._in_range(arr):
            return
        if self.kind == "table":
            ok = (arr >= 0) & (arr < 2**self.bits)
        elif self.kind in ("binary", "ternary"):
            ok = np.isin(arr, np.asarray(self.values))  # compared as numbers: -1 is no uint8
        else:
            lo, hi = self.value_range
            if arr.dtype.kind == "f":
                ok = (arr >= lo) & (arr <= hi) & (arr == np.round(arr))
            else:
                wide = arr.astype(np.int64)
                ok = (wide >= lo) & (wide <= hi)
        if not np.all(ok):
            idx = tuple(int(i) for i in np.argwhere(~ok)[0])
            bad = arr[idx]
            lo, hi = (0, 2**self.bits - 1) if self.kind == "table" else self.value_range
            allowed = (
                "{" + ", ".join(f"{v:g}" for v in self.values) + "}"
                if self.kind in ("binary", "ternary")
                else f"[{lo:g}, {hi:g}]"
            )
            raise TypeRangeError(
                f"{what} holds {bad!r} at index {list(idx)}, outside {self.name}'s values {allowed}", loc
            )

    def _in_range(self, arr: np.ndarray) -> bool:
        """True when the integers ``arr`` holds are all this type's, decided from their minimum and maximum
        (no copy: a weight of a billion codes is checked in one pass); False when that cannot tell, and
        ``check`` then finds the first bad value."""
        if arr.dtype.kind not in "iu":
            return False
        lo, hi = self.value_range if self.kind != "table" else (0, 2**self.bits - 1)
        if not (lo <= int(arr.min()) and int(arr.max()) <= hi):
            return False
        return self.kind != "binary" or not (arr == 0).any()

    def from_storage(self, arr: np.ndarray, what: str, loc: Location | None = None) -> np.ndarray:
        """A weights-file array (``storage_dtype``) -> the in-memory ``np_dtype``, range-checked."""
        arr = np.asarray(arr)
        if self.name == "bf16":
            return arr.view(ml_dtypes.bfloat16) if arr.dtype == np.uint16 else arr.astype(self.np_dtype)
        if self.name == "fp8e4m3":
            return arr.astype(np.uint8).view(self.np_dtype)
        if self.name == "fp4":
            if np.any(arr >= 2**self.bits):
                raise TypeRangeError(f"{what} holds a code >= {2**self.bits}, not a {self.name} code", loc)
            return self.decode(arr).astype(self.np_dtype)
        self.check(arr, what, loc)
        return arr.astype(self.np_dtype)

    def to_storage(self, arr: np.ndarray) -> np.ndarray:
        """The inverse of ``from_storage``."""
        arr = np.asarray(arr, dtype=self.np_dtype)
        if self.name == "bf16":
            return arr.view(np.uint16)
        if self.name == "fp8e4m3":
            return arr.view(np.uint8)
        if self.kind == "float" and self.bits < 8:
            return self.encode(arr.astype(np.float32))
        return arr.astype(self.storage_dtype)

    def __str__(self) -> str:
        return self.name


def _table_of(np_dtype, bits: int) -> tuple[float, ...]:
    codes = np.arange(2**bits, dtype=np.uint8)
    if bits < 8:
        return tuple(float(v) for v in _small_float_values(np_dtype, bits))
    return tuple(float(v) for v in codes.view(np_dtype).astype(np.float32))


def _small_float_values(np_dtype, bits: int) -> np.ndarray:
    # ml_dtypes stores a 4-bit float in the low bits of a byte: code -> value by viewing the byte.
    return np.arange(2**bits, dtype=np.uint8).view(np_dtype).astype(np.float32)


def _int_table(lo: int, hi: int, bits: int) -> tuple[float, ...]:
    # Code order: two's complement for signed types.
    return tuple(float(((c + 2 ** (bits - 1)) % 2**bits) - 2 ** (bits - 1)) if lo < 0 else float(c)
                 for c in range(2**bits))


def _make_types() -> dict[str, DType]:
    m = ml_dtypes
    ts = [
        DType("f32", 32, "float", np.dtype(np.float32)),
        DType("f16", 16, "float", np.dtype(np.float16)),
        DType("bf16", 16, "float", np.dtype(m.bfloat16)),
        DType("fp8e4m3", 8, "float", np.dtype(m.float8_e4m3fn), _table_of(m.float8_e4m3fn, 8)),
        DType("fp4", 4, "float", np.dtype(m.float4_e2m1fn), _table_of(m.float4_e2m1fn, 4)),
        DType("i32", 32, "int", np.dtype(np.int32)),
        DType("i16", 16, "int", np.dtype(np.int16)),
        DType("i8", 8, "int", np.dtype(np.int8), _int_table(-128, 127, 8)),
        DType("u8", 8, "uint", np.dtype(np.uint8), _int_table(0, 255, 8)),
        DType("i4", 4, "int", np.dtype(m.int4), _int_table(-8, 7, 4)),
        DType("u4", 4, "uint", np.dtype(m.uint4), _int_table(0, 15, 4)),
        DType("i2", 2, "int", np.dtype(m.int2), _int_table(-2, 1, 2)),
        DType("u2", 2, "uint", np.dtype(m.uint2), _int_table(0, 3, 2)),
        DType("u1", 1, "uint", np.dtype(m.uint1), (0.0, 1.0)),
        DType("i1", 1, "binary", np.dtype(np.int8), (-1.0, 1.0)),
        # 2-bit codes 0, 1, 2 mean -1, 0, +1 (bitnet.cpp's I2_S convention); code 3 is unused.
        DType("ternary", 2, "ternary", np.dtype(np.int8), (-1.0, 0.0, 1.0)),
        DType("nf4", 4, "table", np.dtype(np.uint8), NF4_VALUES),
    ]
    return {t.name: t for t in ts}


DTYPES: dict[str, DType] = _make_types()
globals().update(DTYPES)  # ladder.types.f32, ladder.types.ternary, ...

f32 = DTYPES["f32"]
i32 = DTYPES["i32"]
i8 = DTYPES["i8"]


def dtype(name: str | DType) -> DType:
    """Look up an element type by name; raises LadderError listing the known names."""
    if isinstance(name, DType):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise LadderError(f"unknown element type '{name}'; known: {', '.join(DTYPES)}") from None


def dtype_of_numpy(np_dtype) -> DType:
    """The ladder type whose in-memory dtype is ``np_dtype`` (int8 -> i8, never ternary)."""
    np_dtype = np.dtype(np_dtype)
    for t in DTYPES.values():
        if t.np_dtype == np_dtype and t.kind not in ("binary", "ternary", "table"):
            return t
    if np_dtype == np.float64:
        return f32
    if np_dtype == np.int64:
        return i32
    if np_dtype == np.bool_:
        return DTYPES["u1"]
    raise LadderError(f"no ladder element type for numpy dtype {np_dtype}")
