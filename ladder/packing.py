"""Packings: how a low-bit tensor is stored in bytes, declared once; everything else is derived.

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
tq2         i2 u2 ternary        blocks of 256 codes in 64 bytes, two 32-byte halves of 128 codes: byte j of
                                 half h = c[128h+j] | c[128h+j+32] << 2 | c[128h+j+64] << 4 | c[128h+j+96] << 6;
                                 with ``+f16`` the scale *follows* the block (llama.cpp's TQ2_0, byte for byte)
q4          i4 u4                nib16's bytes holding offset-binary codes (value - min: i4's -8..7 as 0..15);
                                 with ``+f16`` llama.cpp's Q4_0, byte for byte
q8          i8                   one byte a code, in blocks of 32 (the unit of a block scale); with ``+f16``
                                 llama.cpp's Q8_0, byte for byte (the one layout of a type that is not low-bit:
                                 it exists so that a Q8_0 file's blocks are the weight as stored)   (8 bits/w)
trit5       ternary              blocks of 160 in 32 bytes: byte m = ceil(256 q / 243),
                                 q = sum_n t[m + 32n] 3^(4-n), t = value + 1; trit n of byte b is
                                 ((b * 3^n) mod 256) * 3 >> 8 (llama.cpp TQ1_0)                  (1.6 bits/w)
tq1         ternary              blocks of 256 in 52 bytes: trit5's bytes in three chunks, bytes 0-31 holding
                                 codes 0-159 (byte m: t[m + 32n], n = 0..4), 32-47 codes 160-239 (byte
                                 32 + m: t[160 + m + 16n]), 48-51 codes 240-255 (byte 48 + m: t[240 + m + 4n],
                                 n = 0..3, its fifth digit 0); with ``+f16`` the scale *follows* the block
                                 (llama.cpp's TQ1_0, byte for byte)                            (1.625 bits/w)
bit         i1 u1                bit i of byte j = c[8j + i]                                     (1 bit/w)
planes      i1 u1 i2 u2          T-MAC bit planes: a row is P planes of ceil(K/8) bytes (P = bits, plane b
            ternary i4 u4        first for b = 0); in plane b, byte j's low nibble is the 4-bit index of bits b
                                 of positions 8j..8j+3 (bit t from position 8j+t) and its high nibble that of
                                 positions 8j+4..8j+7
==========  ===================  ==============================================================================

A ``+SCALE`` suffix (``nib16+f16``, ``crumb32+bf16z``) puts each block's scale (and zero) beside its codes:
``ScaledPacking``.

**One declaration per layout.** Each row of the table is one ``Packing(...)`` in ``_declare()`` below, by its
geometry alone:

* ``block`` codes in ``block_bytes`` bytes (per plane for bit planes); a byte holds ``slots = block //
  block_bytes`` codes;
* the order of the codes in a block: the block is cut into ``chunk``-byte chunks (the whole block by default);
  code i of a chunk sits in byte ``i % chunk``, slot ``i // chunk`` (``place``); chunks of differing sizes are
  ``parts``, (bytes, slots used) each (a byte's unused slots hold 0: TQ1_0's last chunk);
* how a slot sits in its byte: a ``bits``-wide field at ``shifts[slot]`` (0, bits, 2 bits, ... by default), or,
  with ``radix``, a base-``radix`` digit (slot 0 the most significant; the byte holds ceil(256 q / radix^slots));
* ``planes``: one plane per code bit, plane-major in the row, each plane the 1-bit layout of the declaration;
* ``codes``: ``"type"`` (the type's codes) or ``"offset"`` (value - min, offset binary);
* ``scale_at``: where ``+SCALE`` puts a block's scale and zero, ``"front"`` or ``"end"`` of the block.

From the declaration come: numpy ``pack``/``unpack`` (here), the LLVM scalar decode of one code
(``backends/llvm/lowerings/decode.py`` ``Decoder``: byte offset, shift, mask, digit and code fix-up, from
``place``/``shift``), the vector decoders' shifts, masks and XOR constants (``value_offset``, ``byte_xor``),
the unpack/pack kernels (``lowerings/movement.py``), the table-lookup index fields of bit planes
(``index_shifts``, ``plane_indices``: ``lowerings/lut.py`` and the ASIC simulator) and the ASIC weight images
(``pack``).

**Adding a layout:** append one ``Packing(...)`` to ``_declare()`` and a row to the table above; it then
packs, unpacks, round-trips through ``+SCALE``, decodes in every generic kernel and in the unpack/pack
kernels. A SIMD kernel takes it when its geometry fits what the kernel decodes (the fast matmul: fields of at
most 4 bits or base-3 digits, in 16-byte blocks or 32-byte chunks; ``qmatmul_q8``: nib16's geometry); a target
prefers it by naming it in ``ladder/target.py``. Its tests: the independent byte oracle of
tests/test_packing.py (``DOC_TYPES``, ``ref_pack_row``, written from the table row) and, for what the kernels
compute over it, tests/test_layouts.py, where ``tq2`` shows a layout added that way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from .dtypes import DTYPES, DType
from .errors import LadderError


# -- values <-> codes --------------------------------------------------------------------------------

def to_codes(values: np.ndarray, dt: DType) -> np.ndarray:
    """A tensor in the type's in-memory dtype -> uint8 codes (vectorised; no table search)."""
    v = np.asarray(values)
    if dt.kind == "table":
        return v.astype(np.uint8)
    if dt.kind == "ternary":  # value + 1 in one pass (int8's bytes + 1 wrap to the code)
        return np.add((v if v.dtype == np.int8 else v.astype(np.int8)).view(np.uint8), np.uint8(1))
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


# -- the declaration ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Packing:
    """A storage layout along the last axis, declared by its geometry (see the module docstring)."""

    name: str
    dtypes: frozenset[str]
    doc: str
    block: int  # codes per block (K is padded to a multiple)
    block_bytes: int  # bytes per block (per plane with planes)
    bits: int = 0  # width of a code's bit field in its byte (0: radix digits)
    shifts: tuple[int, ...] = ()  # bit offset of slot h's field (default: h * bits)
    chunk: int = 0  # bytes per chunk (0: the whole block); code i of a chunk: byte i % chunk, slot i // chunk
    radix: int = 0  # > 0: a byte holds its slots as base-radix digits, slot 0 most significant
    parts: tuple[tuple[int, int], ...] = ()  # chunks of differing sizes, in order: (bytes, slots used) each;
    #   a byte's unused slots (past its chunk's) hold 0; with parts, slots = the most any chunk uses
    planes: bool = False  # one plane per code bit (bytes per block scale with the type's bits)
    codes: str = "type"  # "type": the type's codes; "offset": offset binary (value - min)
    scale_at: str = "front"  # where +SCALE puts a block's scale (and zero): "front" or "end"

    def __post_init__(self):
        def bad(why):
            raise LadderError(f"internal: packing {self.name}: {why}")
        if self.parts:
            if (self.chunk or self.planes or sum(nb for nb, _ in self.parts) != self.block_bytes
                    or sum(nb * u for nb, u in self.parts) != self.block or any(u < 1 or nb < 1 for nb, u in self.parts)):
                bad("parts are (bytes, slots used) chunks that fill the block's bytes and codes (no chunk, no planes)")
        elif self.block <= 0 or self.block_bytes <= 0 or self.block % self.block_bytes:
            bad("block must be a whole number of codes per byte")
        elif self.block_bytes % self.chunk_bytes:
            bad("chunk must divide block_bytes")
        h = self.slots
        if self.radix:
            if self.bits or self.shifts or self.radix ** h > 256 or self.planes:
                bad("radix digits take no bit fields, and radix^slots must fit a byte")
        else:
            sh = self.slot_shifts
            if not self.bits or len(sh) != h:
                bad(f"{h} slots need {h} shifts of {self.bits}-bit fields")
            used = 0
            for s in sh:
                field = ((1 << self.bits) - 1) << s
                if s < 0 or field > 0xFF or used & field:
                    bad("bit fields must lie inside the byte without overlapping")
                used |= field
        if self.planes and self.bits != 1:
            bad("bit planes hold 1-bit fields")
        if self.codes not in ("type", "offset") or self.scale_at not in ("front", "end"):
            bad("codes is 'type' or 'offset', scale_at 'front' or 'end'")

    # -- geometry, derived -------------------------------------------------------------------------------

    @property
    def slots(self) -> int:
        """Codes per byte (per plane); with ``parts``, the most a chunk's bytes hold."""
        if self.parts:
            return max(u for _, u in self.parts)
        return self.block // self.block_bytes

    @property
    def chunk_bytes(self) -> int:
        if self.parts:
            raise LadderError(f"internal: packing {self.name}: its chunks differ in size (see segments)")
        return self.chunk or self.block_bytes

    @property
    def segments(self) -> tuple[tuple[int, int, int, int], ...]:
        """The chunks of a block, in order: (first byte, bytes, slots used, first code) each; code i of a chunk
        sits in byte first byte + i % bytes, slot i // bytes."""
        if self.parts:
            sizes = self.parts
        else:
            ch = self.chunk or self.block_bytes
            sizes = ((ch, self.slots),) * (self.block_bytes // ch)
        out, byte, code = [], 0, 0
        for nb, u in sizes:
            out.append((byte, nb, u, code))
            byte, code = byte + nb, code + nb * u
        return tuple(out)

    @property
    def mask(self) -> int:
        """The field mask of a slot (radix layouts: 0xFF, a whole byte)."""
        return (1 << self.bits) - 1 if self.bits else 0xFF

    @property
    def slot_shifts(self) -> tuple[int, ...]:
        return self.shifts or tuple(h * self.bits for h in range(self.slots))

    def shift(self, slot: int) -> int:
        return self.slot_shifts[slot]

    def place(self, i: int) -> tuple[int, int]:
        """Code i of a block -> (its byte in the block, its slot in that byte)."""
        if self.parts:
            for byte, nb, u, code in self.segments:
                if i < code + nb * u:
                    return byte + (i - code) % nb, (i - code) // nb
            raise LadderError(f"internal: packing {self.name}: code {i} is past its block of {self.block}")
        ch = self.chunk_bytes
        c, r = divmod(i, ch * self.slots)
        return c * ch + r % ch, r // ch

    @property
    def nib_pairs(self) -> bool:
        """Blocks of 32 4-bit codes in 16 bytes, code j in the low nibble of byte j and code j + 16 in its high one
        (nib16, and q4: Q4_0's bytes): what the int8 dot product kernels decode (the q8dot lowering) and what
        Q4_K's code bytes become without decoding (the GGUF importer)."""
        return (not self.planes and not self.radix and self.bits == 4 and self.block == 32 and self.block_bytes == 16
                and [self.place(i) for i in (0, 15, 16, 31)] == [(0, 0), (15, 0), (0, 1), (15, 1)]
                and self.slot_shifts == (0, 4))

    def stored_xor(self, dt: DType) -> int:
        """The XOR from a stored code to the type's code (offset binary <-> two's complement), 0 if none."""
        return (1 << (dt.bits - 1)) if self.codes == "offset" and dt.kind == "int" else 0

    def value_offset(self, dt: DType) -> tuple[int, int] | None:
        """(xor, zero) with value = (stored code ^ xor) - zero and stored code ^ xor unsigned, for the integer
        types a dot product can take as offset codes (None for the others: i1, nf4, fp4)."""
        if dt.kind == "ternary":
            return 0, 1
        if dt.kind == "uint":
            return 0, 0
        if dt.kind == "int":
            half = 1 << (dt.bits - 1)
            return (0, half) if self.codes == "offset" else (half, half)
        return None

    def byte_xor(self, dt: DType) -> int:
        """The XOR that makes every code of a packed byte the offset code of ``value_offset`` at once."""
        vo = self.value_offset(dt)
        xor = vo[0] if vo else 0
        if not xor:
            return 0
        if self.radix:
            raise LadderError(f"internal: packing {self.name}: digits cannot be offset by an XOR")
        return sum(xor << s for s in self.slot_shifts)

    def index_shifts(self, g: int) -> tuple[int, ...]:
        """Bit planes: the shift of each g-bit table index in a plane byte (index f: slots f*g .. f*g+g-1,
        bit t of the index from slot f*g+t)."""
        sh = self.slot_shifts
        if not self.planes or self.slots % g or any(sh[f + t] != sh[f] + t for f in range(0, self.slots, g)
                                                    for t in range(g)):
            raise LadderError(f"internal: packing {self.name} holds no {g}-bit table indices")
        return tuple(sh[f] for f in range(0, self.slots, g))

    # -- sizes ---------------------------------------------------------------------------------------------

    def accepts(self, dt: DType) -> bool:
        return dt.name in self.dtypes

    def plane_bytes(self, k: int) -> int:
        """Bytes of one plane of a row of k codes (the whole row unless ``planes``)."""
        return math.ceil(k / self.block) * self.block_bytes

    def row_bytes(self, k: int, dt: DType) -> int:
        return self.plane_bytes(k) * (dt.bits if self.planes else 1)

    def storage_shape(self, shape: tuple[int, ...], dt: DType) -> tuple[int, ...]:
        if not shape:
            raise LadderError(f"packing {self.name} needs a tensor of rank >= 1")
        return tuple(shape[:-1]) + (self.row_bytes(shape[-1], dt),)

    def bits_per_weight(self, dt: DType, k: int | None = None) -> float:
        """Storage bits per logical weight (over a whole number of blocks when k is None)."""
        k = k or self.block
        return 8 * self.row_bytes(k, dt) / k

    # -- numpy pack and unpack ---------------------------------------------------------------------------

    def pack(self, values: np.ndarray, dt: DType) -> np.ndarray:
        """Values (the type's in-memory dtype) -> uint8 storage."""
        if not self.accepts(dt):
            raise LadderError(f"packing {self.name} does not hold {dt} (it holds {', '.join(sorted(self.dtypes))})")
        codes = to_codes(values, dt) ^ np.uint8(self.stored_xor(dt))
        codes = _pad_last(codes, self.block, self._pad(dt))
        if not self.planes:
            return np.ascontiguousarray(self._pack_bytes(codes))
        planes = [self._pack_bytes((codes >> np.uint8(b)) & np.uint8(1)) for b in range(dt.bits)]
        return np.ascontiguousarray(np.concatenate(planes, axis=-1))

    def unpack(self, storage: np.ndarray, shape: tuple[int, ...], dt: DType) -> np.ndarray:
        """uint8 storage -> values (the type's in-memory dtype) of the logical ``shape``."""
        storage = np.asarray(storage)
        want = self.storage_shape(tuple(shape), dt)
        if storage.shape != want or storage.dtype != np.uint8:
            raise LadderError(f"{self.name} storage of {dt}{list(shape)} is uint8{list(want)}, "
                              f"got {storage.dtype}{list(storage.shape)}")
        k = shape[-1]
        if not self.planes:
            codes = self._unpack_bytes(storage)
        else:
            per = self.plane_bytes(k)
            codes = np.zeros(storage.shape[:-1] + (per * self.slots,), np.uint8)
            for b in range(dt.bits):
                codes |= self._unpack_bytes(storage[..., b * per:(b + 1) * per]) << np.uint8(b)
        return from_codes(codes[..., :k] ^ np.uint8(self.stored_xor(dt)), dt)

    def plane_indices(self, storage: np.ndarray, dt: DType, g: int) -> np.ndarray:
        """Bit-plane storage ``[N, row_bytes]`` -> the g-bit table indices ``[bits, N, K / g]`` (index j of
        plane b: bit t from bit b of the stored code at position g j + t), K the padded row length."""
        n = storage.shape[0]
        per = storage.shape[-1] // dt.bits
        self.index_shifts(g)  # the planes hold such indices
        bits = np.stack([self._unpack_bytes(storage[:, b * per:(b + 1) * per]) for b in range(dt.bits)])
        bits = bits.reshape(dt.bits, n, bits.shape[-1] // g, g)
        idx = np.zeros(bits.shape[:-1], np.uint8)
        for t in range(g):
            idx |= bits[..., t] << np.uint8(t)
        return idx.astype(np.intp)

    def _pad(self, dt: DType) -> int:
        """The stored code of padding positions."""
        return pad_code(dt) ^ self.stored_xor(dt)

    def _blocked(self, a: np.ndarray, per_block: int, inner: tuple[int, ...]) -> np.ndarray:
        nb = a.shape[-1] // per_block
        return a.reshape(a.shape[:-1] + (nb, self.block_bytes // self.chunk_bytes) + inner)

    def _digits_to_bytes(self, d: np.ndarray) -> np.ndarray:
        """Codes [..., slot, byte] (every slot of the byte) -> the bytes [..., byte]."""
        h = d.shape[-2]
        if self.radix:
            q = sum(d[..., s, :].astype(np.uint16) * np.uint16(self.radix ** (h - 1 - s)) for s in range(h))
            top = self.radix ** h  # ceiling division: digit s decodes as ((byte * radix^s) mod 256) * radix >> 8
            return ((q * np.uint16(256) + np.uint16(top - 1)) // np.uint16(top)).astype(np.uint8)
        out = np.zeros(d.shape[:-2] + d.shape[-1:], np.uint8)
        for s, sh in enumerate(self.slot_shifts):
            out |= d[..., s, :] << np.uint8(sh)
        return out

    def _bytes_to_digits(self, blk: np.ndarray) -> np.ndarray:
        """Bytes [..., byte] -> every slot's code [..., slot, byte]."""
        if self.radix:
            wide = blk.astype(np.uint16)
            parts = [((((wide * np.uint16(self.radix ** n)) & np.uint16(0xFF)) * np.uint16(self.radix)) >> 8)
                     .astype(np.uint8) for n in range(self.slots)]
        else:
            parts = [(blk >> np.uint8(sh)) & np.uint8(self.mask) for sh in self.slot_shifts]
        return np.stack(parts, axis=-2)

    def _pack_parts(self, c: np.ndarray) -> np.ndarray:
        nb = c.shape[-1] // self.block
        blk = c.reshape(c.shape[:-1] + (nb, self.block))
        out = np.empty(c.shape[:-1] + (nb, self.block_bytes), np.uint8)
        for byte, n, u, code in self.segments:
            d = np.zeros(blk.shape[:-1] + (self.slots, n), np.uint8)  # unused slots hold 0
            d[..., :u, :] = blk[..., code:code + n * u].reshape(blk.shape[:-1] + (u, n))
            out[..., byte:byte + n] = self._digits_to_bytes(d)
        return out.reshape(c.shape[:-1] + (nb * self.block_bytes,))

    def _unpack_parts(self, s: np.ndarray) -> np.ndarray:
        nb = s.shape[-1] // self.block_bytes
        blk = s.reshape(s.shape[:-1] + (nb, self.block_bytes))
        out = np.empty(s.shape[:-1] + (nb, self.block), np.uint8)
        for byte, n, u, code in self.segments:
            d = self._bytes_to_digits(blk[..., byte:byte + n])
            out[..., code:code + n * u] = d[..., :u, :].reshape(blk.shape[:-1] + (n * u,))
        return out.reshape(s.shape[:-1] + (nb * self.block,))

    def _pack_bytes(self, c: np.ndarray) -> np.ndarray:
        """Stored codes [..., whole blocks] -> bytes (one plane)."""
        if self.parts:
            return self._pack_parts(c)
        h, ch = self.slots, self.chunk_bytes
        blk = self._blocked(c, self.block, (h, ch))  # [..., block, chunk, slot, byte of the chunk]
        out = self._digits_to_bytes(blk)
        return out.reshape(c.shape[:-1] + (c.shape[-1] // self.block * self.block_bytes,))

    def _unpack_bytes(self, s: np.ndarray) -> np.ndarray:
        """Bytes (one plane, whole blocks) -> stored codes."""
        if self.parts:
            return self._unpack_parts(s)
        blk = self._blocked(s, self.block_bytes, (self.chunk_bytes,))
        return self._bytes_to_digits(blk).reshape(s.shape[:-1] + (s.shape[-1] // self.block_bytes * self.block,))


FOUR_BIT = frozenset({"i4", "u4", "nf4", "fp4"})
TWO_BIT = frozenset({"i2", "u2", "ternary"})
ONE_BIT = frozenset({"i1", "u1"})


def _declare() -> list[Packing]:
    """Every packing: one declaration each (the table in the module docstring)."""
    return [
        Packing("nib", FOUR_BIT, "two codes per byte, in order", block=2, block_bytes=1, bits=4),
        *[Packing(f"nib{b}", FOUR_BIT, f"two codes per byte, halves of {2 * b}-code blocks",
                  block=2 * b, block_bytes=b, bits=4) for b in (16, 32, 64)],
        Packing("crumb", TWO_BIT, "four 2-bit codes per byte, in order", block=4, block_bytes=1, bits=2),
        *[Packing(f"crumb{b}", TWO_BIT, f"four 2-bit codes per byte, quarters of {4 * b}-code blocks (I2_S)",
                  block=4 * b, block_bytes=b, bits=2, shifts=(6, 4, 2, 0)) for b in (16, 32, 64)],
        Packing("trit5", frozenset({"ternary"}), "five trits per byte, base 3 (TQ1_0)",
                block=160, block_bytes=32, radix=3),
        Packing("bit", ONE_BIT, "eight codes per byte", block=8, block_bytes=1, bits=1),
        Packing("planes", ONE_BIT | TWO_BIT | frozenset({"i4", "u4"}), "T-MAC bit planes, 4-bit indices of 4 "
                "positions", block=8, block_bytes=1, bits=1, planes=True, codes="offset"),
        Packing("q4", frozenset({"i4", "u4"}), "two offset-binary codes per byte, halves of 32-code blocks (Q4_0)",
                block=32, block_bytes=16, bits=4, codes="offset"),
        Packing("q8", frozenset({"i8"}), "one two's complement code per byte, 32-code blocks (Q8_0's codes)",
                block=32, block_bytes=32, bits=8),
        Packing("tq1", frozenset({"ternary"}), "five trits per byte in 32- and 16-byte chunks, four in a 4-byte "
                "chunk, of 256-code blocks, scale after the block (TQ1_0)", block=256, block_bytes=52, radix=3,
                parts=((32, 5), (16, 5), (4, 4)), scale_at="end"),
        Packing("tq2", TWO_BIT, "four 2-bit codes per byte, quarters of 128-code halves of 256-code blocks, "
                "scale after the block (TQ2_0)", block=256, block_bytes=64, chunk=32, bits=2, scale_at="end"),
    ]


PACKINGS: dict[str, Packing] = {p.name: p for p in _declare()}


@dataclass(frozen=True)
class ScaledPacking:
    """A packing whose blocks each carry their group's scale (and zero) beside their codes, as llama.cpp's
    block formats do (``nib16+f16`` is Q4_0's 4.5 bits/weight; ``tq2+f16`` is TQ2_0): a row is ``nblocks``
    times [scale bytes][zero bytes][the block's codes in the base packing], or [codes][scale][zero] when the
    base declares ``scale_at="end"``. The group is the base packing's block; scales keep their own type (f16,
    bf16 or f32), so embedding them is exact. Named ``BASE+SCALE`` or ``BASE+SCALEz`` (with zeros)."""

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
        """Bytes of a block's scale and zero."""
        return self.scale.bits // 8 * (2 if self.zero else 1)

    @property
    def stride(self) -> int:
        """Bytes from one block to the next."""
        return self.header_bytes + self.base.block_bytes

    @property
    def codes_offset(self) -> int:
        """Bytes from a block's start to its codes."""
        return self.header_bytes if self.base.scale_at == "front" else 0

    def scale_offset(self, which: int = 0) -> int:
        """Bytes from a block's start to its scale (which=0) or zero (which=1)."""
        first = 0 if self.base.scale_at == "front" else self.base.block_bytes
        return first + which * (self.scale.bits // 8)

    def blocks(self, k: int) -> int:
        return math.ceil(k / self.block)

    def row_bytes(self, k: int, dt: DType) -> int:
        return self.blocks(k) * self.stride

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
        header = [_bytes_of(scale, self.scale, lead, nb)]
        if self.zero:
            header.append(_bytes_of(zero, self.scale, lead, nb))
        body = codes.reshape(lead + (nb, self.base.block_bytes))
        parts = header + [body] if self.base.scale_at == "front" else [body] + header
        return np.ascontiguousarray(np.concatenate(parts, axis=-1).reshape(lead + (nb * self.stride,)))

    def _split(self, storage: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        storage = np.asarray(storage)
        want = self.storage_shape(tuple(shape), None)
        if storage.shape != want or storage.dtype != np.uint8:
            raise LadderError(f"{self.name} storage of {list(shape)} is uint8{list(want)}, "
                              f"got {storage.dtype}{list(storage.shape)}")
        return storage.reshape(storage.shape[:-1] + (self.blocks(shape[-1]), self.stride))

    def unpack(self, storage: np.ndarray, shape: tuple[int, ...], dt: DType) -> np.ndarray:
        blocks = self._split(storage, shape)
        at = self.codes_offset
        codes = np.ascontiguousarray(blocks[..., at:at + self.base.block_bytes]).reshape(
            blocks.shape[:-2] + (blocks.shape[-2] * self.base.block_bytes,))
        return self.base.unpack(codes, shape, dt)

    def unpack_scales(self, storage: np.ndarray, shape: tuple[int, ...]):
        """(scale, zero or None), each [..., nblocks] in the scale type."""
        blocks = self._split(storage, shape)
        sb = self.scale.bits // 8

        def field(which):
            at = self.scale_offset(which)
            return np.ascontiguousarray(blocks[..., at:at + sb]).view(self.scale.np_dtype)[..., 0]
        return field(0), (field(1) if self.zero else None)


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
