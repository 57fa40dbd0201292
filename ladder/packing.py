"""Packings: how a low-bit tensor is stored in bytes, and the decode a kernel performs.

Every packing works along the **last axis** (K of a weight ``[N, K]``): a tensor ``[..., K]`` of codes becomes
``uint8[..., row_bytes]``. ``pack`` is vectorised numpy (it runs once, on the weights, at compile time);
``unpack`` is the reference decode. Codes are the type's codes (``DType.encode`` order: two's complement for
i4/i2, value + 1 for ternary, 0/1 for i1's -1/+1, the table index for nf4, the e2m1 bits for fp4), except the
bit planes, which hold offset-binary codes (value - min), so that value = sum_b 2^b * bit_b + min.

Positions past K (padding up to a whole block) hold the code of 0 where the type has a 0 (code 0 otherwise);
kernels never read them as weights.

Byte layouts (c[k] is the code at position k of a row; a "block" is the unit a SIMD register decodes):

==========  ===================  ==============================================================================
name        types                byte layout
==========  ===================  ==============================================================================
nib         i4 u4 nf4 fp4        byte j = c[2j] | c[2j+1] << 4                                   (4 bits/w)
nib{B}      i4 u4 nf4 fp4        blocks of 2B codes in B bytes: byte j = c[j] | c[j+B] << 4; one AND gives
                                 codes 0..B-1, one shift + AND gives B..2B-1 (llama.cpp Q4_0 for B = 16)
crumb       i2 u2 ternary        byte j = c[4j] | c[4j+1] << 2 | c[4j+2] << 4 | c[4j+3] << 6     (2 bits/w)
crumb{B}    i2 u2 ternary        blocks of 4B codes in B bytes: byte j = c[j] << 6 | c[j+B] << 4 | c[j+2B] << 2
                                 | c[j+3B] (bitnet.cpp's I2_S; B = 32 for AVX2, 64 for AVX-512)
trit5       ternary              blocks of 160 in 32 bytes: byte m = ceil(256 q / 243),
                                 q = sum_n t[m + 32n] 3^(4-n), t = value + 1; trit n of byte b is
                                 ((b * 3^n) mod 256) * 3 >> 8 (llama.cpp TQ1_0)                  (1.6 bits/w)
bit         i1 u1                bit i of byte j = c[8j + i]                                     (1 bit/w)
planes      i1 u1 i2 u2          T-MAC bit planes: a row is P planes of ceil(K/8) bytes (P = bits, plane b
            ternary i4 u4        first for b = 0); in plane b, byte j's low nibble is the 4-bit index of bits b
                                 of positions 8j..8j+3 (bit t from position 8j+t) and its high nibble that of
                                 positions 8j+4..8j+7
==========  ===================  ==============================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import ml_dtypes
import numpy as np

from .errors import LadderError
from .dtypes import DTYPES, DType


# -- values <-> codes --------------------------------------------------------------------------------

def to_codes(values: np.ndarray, dt: DType) -> np.ndarray:
    """A tensor in the type's in-memory dtype -> uint8 codes (vectorised; no table search)."""
    v = np.asarray(values)
    if dt.kind == "table":
        return v.astype(np.uint8)
    if dt.kind == "ternary":
        return (v.astype(np.int8) + 1).astype(np.uint8)
    if dt.kind == "binary":
        return ((v.astype(np.int8) + 1) >> 1).astype(np.uint8)
    if dt.name == "fp4":
        return v.view(np.uint8) & np.uint8(0x0F)
    if dt.kind in ("int", "uint"):
        return (v.astype(np.int16) & ((1 << dt.bits) - 1)).astype(np.uint8)
    raise LadderError(f"{dt} has no packable codes")


def from_codes(codes: np.ndarray, dt: DType) -> np.ndarray:
    """uint8 codes -> the type's in-memory dtype (the inverse of ``to_codes``)."""
    c = np.asarray(codes, dtype=np.uint8)
    if dt.kind == "table":
        return c.copy()
    if dt.kind == "ternary":
        return c.astype(np.int8) - np.int8(1)
    if dt.kind == "binary":
        return (c.astype(np.int8) << 1) - np.int8(1)
    if dt.name == "fp4":
        return c.view(ml_dtypes.float4_e2m1fn).copy()
    if dt.kind == "int":
        half = 1 << (dt.bits - 1)
        return ((c.astype(np.int16) ^ half) - half).astype(dt.np_dtype)
    return c.astype(dt.np_dtype)


def pad_code(dt: DType) -> int:
    """The code of 0 where the type has one, else 0."""
    vals = dt.table or ()
    return vals.index(0.0) if 0.0 in vals else 0


def _pad_last(codes: np.ndarray, multiple: int, fill: int) -> np.ndarray:
    k = codes.shape[-1]
    padded = -(-k // multiple) * multiple
    if padded == k:
        return codes
    out = np.full(codes.shape[:-1] + (padded,), fill, dtype=np.uint8)
    out[..., :k] = codes
    return out


# -- packings --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Packing:
    """A storage layout along the last axis. ``block`` codes go into ``block_bytes`` bytes."""

    name: str
    dtypes: frozenset[str]
    block: int  # codes per block (K is padded to a multiple)
    block_bytes: int
    doc: str
    _pack: Callable[[np.ndarray, "Packing", DType], np.ndarray]
    _unpack: Callable[[np.ndarray, "Packing", DType, int], np.ndarray]
    planes: bool = False  # one plane per code bit (bytes per block scale with the type's bits)

    def accepts(self, dt: DType) -> bool:
        return dt.name in self.dtypes

    def row_bytes(self, k: int, dt: DType) -> int:
        blocks = math.ceil(k / self.block)
        per = self.block_bytes * (dt.bits if self.planes else 1)
        return blocks * per

    def storage_shape(self, shape: tuple[int, ...], dt: DType) -> tuple[int, ...]:
        if not shape:
            raise LadderError(f"packing {self.name} needs a tensor of rank >= 1")
        return tuple(shape[:-1]) + (self.row_bytes(shape[-1], dt),)

    def bits_per_weight(self, dt: DType, k: int | None = None) -> float:
        """Storage bits per logical weight (over a whole number of blocks when k is None)."""
        k = k or self.block
        return 8 * self.row_bytes(k, dt) / k

    def pack(self, values: np.ndarray, dt: DType) -> np.ndarray:
        """Values (the type's in-memory dtype) -> uint8 storage."""
        if not self.accepts(dt):
            raise LadderError(f"packing {self.name} does not hold {dt} (it holds {', '.join(sorted(self.dtypes))})")
        codes = to_codes(values, dt)
        if self.planes:
            codes = _offset_codes(codes, dt)
        out = self._pack(_pad_last(codes, self.block, self._pad(dt)), self, dt)
        return np.ascontiguousarray(out)

    def unpack(self, storage: np.ndarray, shape: tuple[int, ...], dt: DType) -> np.ndarray:
        """uint8 storage -> values (the type's in-memory dtype) of the logical ``shape``."""
        storage = np.asarray(storage)
        want = self.storage_shape(tuple(shape), dt)
        if storage.shape != want or storage.dtype != np.uint8:
            raise LadderError(f"{self.name} storage of {dt}{list(shape)} is uint8{list(want)}, "
                              f"got {storage.dtype}{list(storage.shape)}")
        k = shape[-1]
        codes = self._unpack(storage, self, dt, -(-k // self.block) * self.block)[..., :k]
        if self.planes:
            codes = _from_offset_codes(codes, dt)
        return from_codes(codes, dt)

    def _pad(self, dt: DType) -> int:
        code = pad_code(dt)
        return int(_offset_codes(np.array([code], np.uint8), dt)[0]) if self.planes else code


def _offset_codes(codes: np.ndarray, dt: DType) -> np.ndarray:
    """Type codes -> offset-binary (value - min): only two's complement ints differ."""
    if dt.kind == "int":
        return codes ^ np.uint8(1 << (dt.bits - 1))
    return codes


def _from_offset_codes(codes: np.ndarray, dt: DType) -> np.ndarray:
    return _offset_codes(codes, dt)  # the XOR is its own inverse


# nib ----------------------------------------------------------------------------------------------------

def _pack_nib(c, p, dt):
    if p.block == 2:
        return c[..., 0::2] | (c[..., 1::2] << 4)
    b = p.block // 2
    nb = c.shape[-1] // (2 * b)
    blk = c.reshape(c.shape[:-1] + (nb, 2, b))
    return (blk[..., 0, :] | (blk[..., 1, :] << 4)).reshape(c.shape[:-1] + (nb * b,))


def _unpack_nib(s, p, dt, k):
    lo, hi = s & np.uint8(0x0F), s >> np.uint8(4)
    if p.block == 2:
        return np.stack([lo, hi], axis=-1).reshape(s.shape[:-1] + (k,))
    b = p.block // 2
    shape = s.shape[:-1] + (s.shape[-1] // b, b)
    return np.stack([lo.reshape(shape), hi.reshape(shape)], axis=-2).reshape(s.shape[:-1] + (k,))


# crumb --------------------------------------------------------------------------------------------------

def _pack_crumb(c, p, dt):
    if p.block == 4:
        return c[..., 0::4] | (c[..., 1::4] << 2) | (c[..., 2::4] << 4) | (c[..., 3::4] << 6)
    b = p.block // 4
    nb = c.shape[-1] // (4 * b)
    blk = c.reshape(c.shape[:-1] + (nb, 4, b))
    out = (blk[..., 0, :] << 6) | (blk[..., 1, :] << 4) | (blk[..., 2, :] << 2) | blk[..., 3, :]
    return out.reshape(c.shape[:-1] + (nb * b,))


def _unpack_crumb(s, p, dt, k):
    if p.block == 4:
        parts = [(s >> np.uint8(2 * i)) & np.uint8(3) for i in range(4)]
        return np.stack(parts, axis=-1).reshape(s.shape[:-1] + (k,))
    b = p.block // 4
    shape = s.shape[:-1] + (s.shape[-1] // b, b)
    parts = [((s >> np.uint8(6 - 2 * i)) & np.uint8(3)).reshape(shape) for i in range(4)]
    return np.stack(parts, axis=-2).reshape(s.shape[:-1] + (k,))


# trit5 --------------------------------------------------------------------------------------------------

_POW3 = np.array([81, 27, 9, 3, 1], dtype=np.uint16)  # first trit most significant


def _pack_trit5(c, p, dt):
    nb = c.shape[-1] // 160
    blk = c.reshape(c.shape[:-1] + (nb, 5, 32)).astype(np.uint16)
    q = (blk * _POW3[:, None]).sum(axis=-2)
    q = (q * 256 + 242) // 243  # ceiling division: trit n decodes as ((q * 3^n) mod 256) * 3 >> 8
    return q.astype(np.uint8).reshape(c.shape[:-1] + (nb * 32,))


def _unpack_trit5(s, p, dt, k):
    shape = s.shape[:-1] + (s.shape[-1] // 32, 32)
    b = s.reshape(shape).astype(np.uint16)
    trits = [(((b * int(3**n)) & 0xFF) * 3) >> 8 for n in range(5)]
    return np.stack(trits, axis=-2).astype(np.uint8).reshape(s.shape[:-1] + (k,))


# bit ----------------------------------------------------------------------------------------------------

def _pack_bit(c, p, dt):
    return np.packbits(c.astype(bool), axis=-1, bitorder="little")


def _unpack_bit(s, p, dt, k):
    return np.unpackbits(s, axis=-1, count=k, bitorder="little")


# planes -------------------------------------------------------------------------------------------------

def _pack_planes(c, p, dt):
    planes = [np.packbits(((c >> np.uint8(b)) & np.uint8(1)).astype(bool), axis=-1, bitorder="little")
              for b in range(dt.bits)]
    return np.concatenate(planes, axis=-1)


def _unpack_planes(s, p, dt, k):
    per = k // 8
    out = np.zeros(s.shape[:-1] + (k,), np.uint8)
    for b in range(dt.bits):
        bits = np.unpackbits(s[..., b * per:(b + 1) * per], axis=-1, count=k, bitorder="little")
        out |= bits << np.uint8(b)
    return out


FOUR_BIT = frozenset({"i4", "u4", "nf4", "fp4"})
TWO_BIT = frozenset({"i2", "u2", "ternary"})
ONE_BIT = frozenset({"i1", "u1"})


def _make() -> dict[str, Packing]:
    ps = [Packing("nib", FOUR_BIT, 2, 1, "two codes per byte, in order", _pack_nib, _unpack_nib)]
    ps += [Packing(f"nib{b}", FOUR_BIT, 2 * b, b, f"two codes per byte, halves of {2 * b}-code blocks",
                   _pack_nib, _unpack_nib) for b in (16, 32, 64)]
    ps.append(Packing("crumb", TWO_BIT, 4, 1, "four 2-bit codes per byte, in order", _pack_crumb, _unpack_crumb))
    ps += [Packing(f"crumb{b}", TWO_BIT, 4 * b, b, f"four 2-bit codes per byte, quarters of {4 * b}-code blocks "
                   "(I2_S)", _pack_crumb, _unpack_crumb) for b in (16, 32, 64)]
    ps.append(Packing("trit5", frozenset({"ternary"}), 160, 32, "five trits per byte, base 3 (TQ1_0)",
                      _pack_trit5, _unpack_trit5))
    ps.append(Packing("bit", ONE_BIT, 8, 1, "eight codes per byte", _pack_bit, _unpack_bit))
    ps.append(Packing("planes", ONE_BIT | TWO_BIT | frozenset({"i4", "u4"}), 8, 1,
                      "T-MAC bit planes, 4-bit indices of 4 positions", _pack_planes, _unpack_planes, planes=True))
    return {p.name: p for p in ps}


PACKINGS: dict[str, Packing] = _make()


@dataclass(frozen=True)
class ScaledPacking:
    """A packing whose blocks each carry their group's scale (and zero) in front of their codes, as
    llama.cpp's block formats do (``nib16+f16`` is Q4_0's 4.5 bits/weight; ``crumb64+f16`` TQ2_0-like):
    a row is ``nblocks`` times [scale bytes][zero bytes][the block's codes in the base packing].
    The group is the base packing's block; scales keep their own type (f16, bf16 or f32), so embedding
    them is exact. Named ``BASE+SCALE`` or ``BASE+SCALEz`` (with zeros)."""

    base: Packing
    scale: DType
    zero: bool = False

    @property
    def name(self) -> str:
        return f"{self.base.name}+{self.scale.name}{'z' if self.zero else ''}"

    @property
    def dtypes(self) -> frozenset[str]:
        return self.base.dtypes

    @property
    def block(self) -> int:
        return self.base.block

    planes = False

    def accepts(self, dt: DType) -> bool:
        return self.base.accepts(dt)

    @property
    def header_bytes(self) -> int:
        return self.scale.bits // 8 * (2 if self.zero else 1)

    def blocks(self, k: int) -> int:
        return math.ceil(k / self.block)

    def row_bytes(self, k: int, dt: DType) -> int:
        return self.blocks(k) * (self.header_bytes + self.base.block_bytes)

    storage_shape = Packing.storage_shape
    bits_per_weight = Packing.bits_per_weight

    def scale_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape[:-1]) + (self.blocks(shape[-1]),)

    def pack(self, values: np.ndarray, dt: DType, scale=None, zero=None) -> np.ndarray:
        if scale is None or (zero is None) == self.zero:
            raise LadderError(f"packing {self.name} needs the scales{' and zeros' if self.zero else ''} of its blocks")
        codes = self.base.pack(values, dt)
        lead = codes.shape[:-1]
        nb = self.blocks(np.shape(values)[-1])
        parts = [_bytes_of(scale, self.scale, lead, nb)]
        if self.zero:
            parts.append(_bytes_of(zero, self.scale, lead, nb))
        parts.append(codes.reshape(lead + (nb, self.base.block_bytes)))
        return np.ascontiguousarray(np.concatenate(parts, axis=-1).reshape(lead + (nb * (self.header_bytes + self.base.block_bytes),)))

    def _split(self, storage: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        storage = np.asarray(storage)
        want = self.storage_shape(tuple(shape), None)
        if storage.shape != want or storage.dtype != np.uint8:
            raise LadderError(f"{self.name} storage of {list(shape)} is uint8{list(want)}, "
                              f"got {storage.dtype}{list(storage.shape)}")
        return storage.reshape(storage.shape[:-1] + (self.blocks(shape[-1]), self.header_bytes + self.base.block_bytes))

    def unpack(self, storage: np.ndarray, shape: tuple[int, ...], dt: DType) -> np.ndarray:
        blocks = self._split(storage, shape)
        codes = np.ascontiguousarray(blocks[..., self.header_bytes:]).reshape(
            blocks.shape[:-2] + (blocks.shape[-2] * self.base.block_bytes,))
        return self.base.unpack(codes, shape, dt)

    def unpack_scales(self, storage: np.ndarray, shape: tuple[int, ...]):
        """(scale, zero or None), each [..., nblocks] in the scale type."""
        blocks = self._split(storage, shape)
        sb = self.scale.bits // 8
        scale = np.ascontiguousarray(blocks[..., :sb]).view(self.scale.np_dtype)[..., 0]
        zero = np.ascontiguousarray(blocks[..., sb:2 * sb]).view(self.scale.np_dtype)[..., 0] if self.zero else None
        return scale, zero


def _bytes_of(arr, dt: DType, lead, nb) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(arr).astype(dt.np_dtype))
    if a.shape != tuple(lead) + (nb,):
        raise LadderError(f"block scales must be {dt}{list(lead) + [nb]}, got {list(a.shape)}")
    return a.view(np.uint8).reshape(tuple(lead) + (nb, dt.bits // 8))


def get_packing(name: str) -> "Packing | ScaledPacking":
    base_name, plus, scale = name.partition("+")
    try:
        base = PACKINGS[base_name]
    except KeyError:
        raise LadderError(f"unknown packing '{name}'; known: {', '.join(PACKINGS)}, and BASE+f16 / BASE+f32 "
                          f"(z for zeros) for block scales") from None
    if not plus:
        return base
    zero = scale.endswith("z")
    sdt = DTYPES.get(scale[:-1] if zero else scale)
    if sdt is None or sdt.name not in ("f16", "bf16", "f32"):
        raise LadderError(f"packing '{name}': block scales are f16, bf16 or f32 (+z for zeros), not '{scale}'")
    if base.planes:
        raise LadderError(f"packing '{name}': bit planes are not blocks; their scales stay a separate tensor")
    return ScaledPacking(base, sdt, zero)


def packings_for(dt: DType) -> list[Packing]:
    return [p for p in PACKINGS.values() if p.accepts(dt)]
