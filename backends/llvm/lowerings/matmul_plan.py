"""What a matmul kernel is asked for (``MatmulOp``: the op read once) and how the fast kernel will do it
(``FastPlan``, decided by one planner, ``fast_plan``, from the op, the packing's declaration and the target).

Pure decisions: nothing here emits IR (the fast kernel's code is matmul_fast.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ladder.ops import OPS
from ladder.ops.lowbit import block_scales
from ladder.types import TensorType


@dataclass(frozen=True)
class MatmulOp:
    """A matmul, qmatmul or qmatmul_i8 as its kernels read it: operand types, attributes, sizes."""

    kind: str
    attrs: Mapping[str, object]
    x: TensorType
    w: TensorType
    extra: tuple[TensorType, ...]  # the operands after x and w (scales, zeros)
    out: TensorType
    tb: bool  # transpose_b: w is [..., N, K]
    M: int
    K: int
    N: int
    batch: tuple[int, ...]  # the output's batch dims
    B: int  # their product
    epi: tuple[str, ...]
    int_acc: bool  # accumulate in int32 (qmatmul_i8, integer matmul)
    packed: bool  # w in a packing
    bscaled: bool  # w's packing holds block scales

    @classmethod
    def read(cls, op, ins, outs) -> MatmulOp:
        attrs = OPS[op.kind].full_attrs(op.attr)
        x, w, out = ins[0], ins[1], outs[0]
        batch = tuple(out.shape[:-2])
        return cls(kind=op.kind, attrs=attrs, x=x, w=w, extra=tuple(ins[2:]), out=out,
                   tb=bool(attrs.get("transpose_b", False)), M=x.shape[-2], K=x.shape[-1], N=out.shape[-1],
                   batch=batch, B=math.prod(batch), epi=tuple(attrs.get("epilogue", ())),
                   int_acc=op.kind == "qmatmul_i8" or (op.kind == "matmul" and out.dtype.name == "i32"),
                   packed=w.layout is not None, bscaled=block_scales(w))


# per 32-byte piece of a superblock: its (byte offset, length) parts, and per sub q the (k offset, length) ranges
Piece = tuple[list[tuple[int, int]], list[list[tuple[int, int]]]]


@dataclass(frozen=True)
class SeparateScales:
    """qmatmul's scale operand (beside the weights) as the fast kernel reads it: constant over 8 consecutive k."""

    row: bool = False  # one scale per weight row, no zero: applied once to the row's sum
    n: int = 0  # elements per weight row of scales (0: one row for all)
    n_group: int = 0  # weight rows per scale row (0: one each)
    k_group: int = 0  # k per scale along a row (0: one per row)


@dataclass(frozen=True)
class FastPlan:
    """What the fast kernel (matmul_fast.py) decodes and how it multiplies, decided once per op by one planner
    (``fast_plan``) from the op, the packing's declaration and the target."""

    raw: bool  # unpacked int8 weights (the bytes are the codes)
    radix: int  # 3: base-3 digits (decoded by the multiply trick); 0: bit fields
    shifts: tuple[int, ...]  # the bit field of slot q: (byte >> shifts[q]) & mask
    mask: int
    B: int  # bytes of a block's codes
    block: int  # codes per block
    stride: int  # bytes from one block to the next (codes and inline scales)
    hb: int  # bytes from a block's start to its codes
    xor: int  # value = (code ^ xor) - zero, code ^ xor unsigned
    zero: int
    xor_byte: int  # the XOR making every code of a packed byte its offset code (0: none)
    subs: int  # codes per byte: 32-code groups per 32-byte piece
    sb_codes: int  # codes of a superblock (the whole blocks that fill 32-byte pieces)
    sb_bytes: int
    chunks: tuple[Piece, ...]  # per 32-byte piece: its (byte offset, length) parts, and per sub q the k ranges
    madd: bool  # vpmaddubsw + vpmaddwd (AVX2)
    vnni: bool  # vpdpbusd (AVX512-VNNI or AVX-VNNI)
    wd: bool  # i16 products by vpmaddwd (raw int8 weights without VNNI)
    scales: SeparateScales = SeparateScales()  # qmatmul: the scale operand beside the weights


def fast_layout(L) -> bool:
    """Whether the fast kernel decodes this layout (ladder.packing.Packing): 32-byte vectors of bit fields of at
    most 4 bits (shift + AND each) or base-3 digits, in blocks of 16 bytes (two blocks a vector) or in chunks
    (and blocks) of whole 32-byte vectors; not chunks of differing sizes (``parts``: TQ1_0)."""
    if L.parts or L.planes or L.radix not in (0, 3) or (not L.radix and L.bits > 4):
        return False
    return (L.block_bytes == L.chunk_bytes == 16) or (L.chunk_bytes % 32 == 0 and L.block_bytes % 32 == 0)


def fast_plan(ctx, mm: MatmulOp) -> FastPlan | None:
    """The fast kernel's plan for ``transpose_b`` with 2-D weights (packed in a layout ``fast_layout`` takes, or
    unpacked int8 for qmatmul_i8), or None where another kernel is needed."""
    w = mm.w
    if (mm.kind == "qmatmul_i8" and mm.tb and w.rank == 2 and not mm.packed and w.dtype.name == "i8"
            and mm.K > 0 and mm.x.dtype.name in ("i8", "i1", "ternary")):
        return _raw_i8_plan(ctx)
    if mm.kind not in ("qmatmul", "qmatmul_i8") or not mm.tb or w.rank != 2 or not mm.packed:
        return None
    base = w.packing.base if mm.bscaled else w.packing
    if not fast_layout(base) or base.value_offset(w.dtype) is None or mm.K == 0:
        return None
    scales = SeparateScales()
    if mm.kind == "qmatmul_i8":
        if mm.x.dtype.name not in ("i8", "i1", "ternary"):  # held as sign-extended bytes
            return None
    else:
        if mm.x.dtype.name != "f32":
            return None
        if not mm.bscaled:
            scales = _separate_scales(mm)
            if scales is None:
                return None
    hb = w.packing.codes_offset if mm.bscaled else 0
    stride = w.packing.stride if mm.bscaled else base.block_bytes
    # a superblock: the codes of whole blocks that fill 32-byte pieces
    per = 2 if base.block_bytes == 16 else 1  # blocks per superblock
    madd = mm.kind == "qmatmul_i8" and ctx.target.supports("i8-madd")
    xor, zero = base.value_offset(w.dtype)
    return FastPlan(
        raw=False, radix=base.radix, shifts=base.slot_shifts, mask=base.mask, B=base.block_bytes,
        block=base.block, stride=stride, hb=hb, xor=xor, zero=zero, xor_byte=base.byte_xor(w.dtype),
        subs=base.slots, sb_codes=base.block * per, sb_bytes=stride * per, chunks=_pieces(base, hb, stride),
        # VNNI: one vpdpbusd (u8 x i8, groups of 4 summed into i32 lanes, no saturation) replaces maddubs + maddwd
        madd=madd, vnni=madd and ctx.target.supports("i8-dot"), wd=False, scales=scales)


def _raw_i8_plan(ctx) -> FastPlan:
    """qmatmul_i8 over unpacked int8 weights (llama.cpp's Q8_0 work): rows of plain bytes, 32 per step. VNNI:
    vpdpbusd on offset codes (w ^ 0x80, zero 128); AVX2: both sides sign-extended to i16 and vpmaddwd (exact:
    vpmaddubsw would saturate on 255 * -128 pairs); elsewhere i32 MACs."""
    vnni = ctx.target.supports("i8-madd") and ctx.target.supports("i8-dot")
    wd = not vnni and ctx.target.supports("i8-madd")
    xor, zero = (0, 0) if wd else (0x80, 128)  # unsigned offset codes where the product wants u8
    return FastPlan(raw=True, radix=0, shifts=(0,), mask=0xFF, B=32, block=32, stride=32, hb=0, xor=xor, zero=zero,
                    xor_byte=xor, subs=1, sb_codes=32, sb_bytes=32, chunks=(([(0, 32)], [[(0, 32)]]),),
                    madd=vnni, vnni=vnni, wd=wd)


def _separate_scales(mm: MatmulOp) -> SeparateScales | None:
    """qmatmul's scale operand as the fast kernel reads it, or None when it is not constant over 8 consecutive
    k."""
    s = mm.extra[0]
    axis = mm.attrs["axis"] % 2
    group = mm.attrs["group"] if s.size != 1 else -1
    n = n_group = k_group = 0
    if s.size != 1:
        if s.shape[1] != 1 and not (axis == 1 and group > 0 and group % 8 == 0):
            return None  # the scale must be constant over 8 consecutive k
        n = 0 if s.shape[0] == 1 else s.shape[1]
        n_group = group if (axis == 0 and group > 0) else 0
        k_group = group if (axis == 1 and group > 0 and s.shape[1] != 1) else 0
    zm = mm.attrs.get("zero_mode", "none")
    row = not k_group and (zm == "none" or len(mm.extra) < 2)
    return SeparateScales(row=row, n=n, n_group=n_group, k_group=k_group)


def _pieces(base, hb: int, stride: int) -> tuple[Piece, ...]:
    """The 32-byte pieces of a superblock: for each, its (byte offset in the superblock, length) parts and, for
    each sub q, the k offsets (relative to the superblock) of each part: slot q of byte j of a layout chunk of C
    bytes is code C q + j of the chunk (Packing.place)."""
    subs, B = base.slots, base.block_bytes
    if B == 16:  # two blocks
        return (([(hb, 16), (stride + hb, 16)], [[(q * 16, 16), (base.block + q * 16, 16)] for q in range(subs)]),)
    out = []
    for v in range(B // 32):
        c, o = divmod(32 * v, base.chunk_bytes)
        out.append(([(hb + 32 * v, 32)],
                    [[(c * base.chunk_bytes * subs + q * base.chunk_bytes + o, 32)] for q in range(subs)]))
    return tuple(out)
