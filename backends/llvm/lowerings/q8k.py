"""Lowering: ``qmatmul_q8`` over 2-bit weights in blocks with one scale each, llama.cpp's TQ2_0 dot product with
Q8_K activations (int8 codes, one f32 scale per 256).

Taken where ``qmatmul_q8``'s weights are 2-bit codes (ternary, i2, u2) in a layout whose block is the op's group
(K a whole number of blocks) and whose every 32-byte piece holds, in each of its four bit fields, 32 consecutive
codes (read off the layout's declaration, ``ladder.packing``: ``crumb32``, ``crumb64``, ``tq2``...), or ternary
codes as base-3 digits (``trit5``, ``tq1``: TQ1_0), with the scales inside the blocks (``crumb64+f16``,
``tq2+f16``, ``tq1+f16``: before or after the codes) or beside them. ``q8dot.lower_qmatmul_q8`` hands such ops
here.

Base-3 digits: each 32 consecutive codes of a block are 32 bytes times a constant per byte, radix^slot, wrapping
(mod 256): a chunk's product (each chunk's products made once a block, from its own length: TQ1_0's 32- and
16-byte chunks times 3, 9, 27, 81 in adds and shifts), or two of them put side by side (its 16-byte chunk
beside itself, or beside its 4-byte chunk's four digits, multiplied lane by lane). Each byte's top digit,
(byte * 3) >> 8, is llama.cpp's TQ1_0 decode in bytes, two vpavgb, but left in bits 6-7 (64 times the digit,
0..2 = value + 1): the shift is folded into the scale product (``DIGIT_UNIT``). The weights stay the file's
bytes (1.69 bits a weight with the scale, against TQ2_0's 2.06). With several rows of x, each weight row is
decoded once a pass into a buffer that every tile of rows reads. BitNet-2B-shaped 2560 x 2560 GEMV at 1 thread
on a Zen 4, cache-hot: 209 us against TQ2_0's 82 us (the digits cost five vector operations per 32 codes, a
2-bit field one or two); 64 rows: 4.9 ms against 4.3 ms.

Work item = one weight row n. Each thread first copies the rows of x of a pass to a scratch, clipped to -127 (the
op's definition; absmax codes never hold -128), with the sum of each block's codes beside them. Per block, per
32-byte piece and bit field, the 32 codes (the field shifted down and masked, after the layout's XOR that makes
them offset codes: value = code - zero, zero 1 for ternary) are multiplied unsigned by x and summed exactly into
8 int32 lanes (``vpdpbusd`` with VNNI, ``vpmaddubsw`` + ``vpmaddwd`` on AVX2, i16 products elsewhere); the
block's lanes become f32 once and are multiplied by both scales into f32 accumulators, and the offset is taken
off once per block as zero times x's block sum times both scales. Rows of x are taken 4 at a time against each
decoded block; one row of x (a GEMV: decode) against GEMV_ROWS weight rows at a time (GEMV_ROWS_DIGITS for base-3
digits), each piece of x loaded
once for them, the same float sums per output as a row at a time. With GFNI a field (shift, mask and XOR) is
one ``vgf2p8affineqb``.

Only the summation order differs from the reference's (integers exactly, then one product per block), so the
results agree to float rounding (tests/test_llvm_q8dot.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llvmlite import ir

from ladder.backends.llvm.codegen import (C32, C64, F32, I8, I16, I32, KernelSpec, entry_alloca, for_range, has_f16c,
                                          storage_type, stored_to_f32)
from ladder.ops import OPS
from ladder.ops.lowbit import block_scales
from ladder.types import DType

from .decode import gep8

from .epilogue import store_epilogue
from .tiling import PREFETCH, in_tiles, passes_over_weights

SUB = 32  # codes per integer dot product step: one 256-bit vector of int8
MCHUNK = 64  # rows of x per pass over the weight rows, at most
SCRATCH = 128 << 10  # bytes of stack for a pass's rows of x
MTILE = 4  # rows of x sharing one decoded block
# weight rows sharing each block of x in a GEMV (one row of x): 2-bit fields one, base-3 digits two. Several rows
# a step share x's loads but stream from DRAM slower on Zen 4 (bench_matmul --gguf, TQ2_0 weights from DRAM, 1
# thread: 2560 x 2560 at 16.1 GB/s with one row a step, 9.7-14.4 with two, 7.3-14.6 with four; 6912 x 2560 at
# 14.7-15.9, 9.6-15.5 and 8.3-16.2); the digits are bound by their decode (TQ1_0: 5.7-6.4 GB/s whatever the rows,
# two the steadiest at 2 threads)
GEMV_ROWS, GEMV_ROWS_DIGITS = 1, 2
# a base-3 digit is decoded as digit * 64 (bits 6-7 of llama.cpp's average, its shift left out): 0, 64, 128 times
# x (|x| <= 127) stays inside vpmaddubsw's i16 pair sums (2 * 128 * 127 < 2^15) and i16 products, and 64 times a
# block's integer sum is exact in f32 (under 2^24), so dividing the scale product by 64 gives the same bits
DIGIT_UNIT = 64


@dataclass(frozen=True)
class CrumbPlan:
    rows: int  # rows of x (batch dims flattened)
    k: int
    n: int
    group: int  # codes per block (one scale each)
    nblocks: int
    # per 32 codes: (where its bytes are, how its codes come out of them, its first code). Bit fields: (byte of
    # a block's 32-byte piece, field shift, first); base-``radix`` digits: (each lane's byte in the block, each
    # lane's multiplier radix^slot, first)
    pieces: tuple[tuple, ...]
    mask: int  # a field's mask
    xor: int  # the byte XOR that makes every field an offset code
    zero: int  # value = offset code - zero
    row_bytes: int
    stride: int  # bytes from one block to the next
    codes_at: int  # bytes from a block's start to its codes
    scale_at: int  # bytes from a block's start to its scale (inline scales)
    inline_scale: DType | None
    sw: DType | None
    sx: DType
    dot: str  # "vnni", "madd" or "i16"
    f16c: bool
    gfni: bool = False  # a field (shifted down, masked, XORed) is one vgf2p8affineqb
    radix: int = 0  # codes are base-radix digits (pieces give lanes' bytes and multipliers)
    unit: int = 1  # a decoded code's byte holds code * unit (digits: DIGIT_UNIT)
    segments: tuple[tuple[int, int, int, int], ...] = ()  # radix: the layout's chunks (Packing.segments)


def digit_pieces(layout) -> tuple[tuple, ...] | None:
    """Base-3 digits: for each 32 consecutive codes of a block, (each code's byte in the block, radix^its slot,
    the first code), from the layout's declaration; None unless the block is whole 32-code vectors whose bytes
    come from at most two of the layout's chunks (two loads put side by side)."""
    if layout.radix != 3 or layout.planes or layout.block % SUB:
        return None
    out = []
    for first in range(0, layout.block, SUB):
        lanes = [layout.place(first + m) for m in range(SUB)]
        if len({_segment_of(layout, byte) for byte, _ in lanes}) > 2:
            return None
        out.append((tuple(byte for byte, _ in lanes), tuple(layout.radix ** slot for _, slot in lanes), first))
    return tuple(out)


def _segment_of(layout, byte: int) -> int:
    """The chunk holding a block's byte (``layout``: a Packing, or a CrumbPlan's copy of its segments)."""
    return next(i for i, (at, nb, _, _) in enumerate(layout.segments) if at <= byte < at + nb)


def pieces_of(layout) -> tuple[tuple[int, int, int], ...] | None:
    """For each 32-byte piece of a block and each bit field: (the piece's byte, the field's shift, the first of
    the 32 consecutive codes it holds), from the layout's declaration; None unless every piece and field holds
    32 consecutive codes."""
    if layout.radix:
        return digit_pieces(layout)
    if layout.planes or layout.bits != 2 or layout.block_bytes % SUB:
        return None
    where = {layout.place(i): i for i in range(layout.block)}
    out = []
    for at in range(0, layout.block_bytes, SUB):
        for slot, shift in enumerate(layout.slot_shifts):
            first = where[(at, slot)]
            if any(where[(at + m, slot)] != first + m for m in range(SUB)):
                return None
            out.append((at, shift, first))
    return tuple(out)


def plan(ctx, op, ins) -> CrumbPlan | None:
    """The kernel's plan, or None when the op's weights are not 2-bit blocks this kernel takes."""
    x, sx, w = ins[0], ins[1], ins[2]
    if w.layout is None or w.dtype.bits != 2 or OPS[op.kind].full_attrs(op.attr)["scale_group"]:
        return None
    g = OPS[op.kind].full_attrs(op.attr)["group"]
    p = w.packing
    inline = block_scales(w)
    base = p.base if inline else p
    pieces = pieces_of(base)
    offset = base.value_offset(w.dtype)
    k, n = x.shape[-1], w.shape[0]
    if (pieces is None or offset is None or g != base.block or k == 0 or k % g
            or k + 4 * (k // g) > SCRATCH or (inline and p.zero)):
        return None
    t = ctx.target
    madd = t.supports("i8-madd")
    feats = t.features()
    return CrumbPlan(rows=math.prod(x.shape[:-1]), k=k, n=n, group=g, nblocks=k // g, pieces=pieces,
                     mask=base.mask, xor=base.byte_xor(w.dtype), zero=offset[1], row_bytes=w.storage_shape[-1],
                     stride=p.stride if inline else base.block_bytes, codes_at=p.codes_offset if inline else 0,
                     scale_at=p.scale_offset(0) if inline else 0, inline_scale=p.scale if inline else None,
                     sw=None if inline else ins[3].dtype, sx=sx.dtype,
                     dot="vnni" if madd and t.supports("i8-dot") else ("madd" if madd else "i16"),
                     f16c=has_f16c(t),
                     gfni="gfni" in feats and "avx" in feats and base.bits == 2 and base.mask == 3,
                     radix=base.radix, segments=base.segments if base.radix else (),
                     unit=DIGIT_UNIT if base.radix else 1)


def lower(ctx, op, ins, outs, p: CrumbPlan):
    """The kernel of ``plan``'s op."""
    fn, b, ptrs, begin, end = ctx.kernel(f"qmatmul_q8k_{op.name}", len(ins) + 1)
    px, psx, pw = ptrs[0], ptrs[1], ptrs[2]
    psw = ptrs[3] if p.sw is not None else None
    py = ptrs[-1]
    R, K, N, NB, G = p.rows, p.k, p.n, p.nblocks, p.group
    w_bytes = N * p.row_bytes
    v32i8 = ir.VectorType(I8, 32)
    v16i16, v32i16 = ir.VectorType(I16, 16), ir.VectorType(I16, 32)
    v8i32, v32i32 = ir.VectorType(I32, 8), ir.VectorType(I32, 32)
    v8f = ir.VectorType(F32, 8)
    splat8 = lambda c: ir.Constant(v32i8, [c] * 32)  # noqa: E731
    smax = ctx.declare("llvm.smax.v32i8", v32i8, [v32i8, v32i8])
    muladd = ctx.declare("llvm.fmuladd.v8f32", v8f, [v8f, v8f, v8f])
    fmuladd = ctx.declare("llvm.fmuladd.f32", F32, [F32, F32, F32])
    vsum = ctx.declare("llvm.vector.reduce.fadd.v8f32", F32, [F32, v8f])
    prefetch = ctx.declare("llvm.prefetch.p0", ir.VoidType(), [ir.PointerType(), I32, I32, I32])
    if p.dot == "vnni":
        dpbusd = ctx.declare("llvm.x86.avx512.vpdpbusd.256", v8i32, [v8i32, v8i32, v8i32])
    elif p.dot == "madd":
        maddubs = ctx.declare("llvm.x86.avx2.pmadd.ub.sw", v16i16, [v32i8, v32i8])
        maddwd = ctx.declare("llvm.x86.avx2.pmadd.wd", v8i32, [v16i16, v16i16])
        ones16 = ir.Constant(v16i16, [1] * 16)
    # scratch per pass: each row of x as K clipped codes, then NB int32 block sums
    per_row = K + 4 * NB
    per_row += -per_row % SUB
    CH = max(1, min(MCHUNK, SCRATCH // per_row, R))
    scratch = entry_alloca(b, v32i8, CH * per_row // SUB)
    scratch.align = 32
    base8 = b.bitcast(scratch, ir.PointerType())

    def x_vec(b, row_off, at):
        return b.load(gep8(b, base8, b.add(row_off, at)), typ=v32i8, align=32)

    def bsum_at(b, row_off, j):
        return b.bitcast(gep8(b, base8, b.add(b.add(row_off, C64(K)), b.mul(j, C64(4)))), I32.as_pointer())

    def x_bsum(b, row_off, j):
        return b.load(bsum_at(b, row_off, j), typ=I32)

    def fill(b, mc, mend):
        with for_range(b, mc, mend, name="xr", vectorize=False) as m:
            src = b.mul(m, C64(K))
            dst = b.mul(b.sub(m, mc), C64(per_row))
            with for_range(b, 0, NB, name="xb", vectorize=False) as j:
                tot = ir.Constant(I32, 0)
                for a in range(G // SUB):
                    at = b.add(b.mul(j, C64(G)), C64(a * SUB))
                    xv = b.call(smax, [b.load(gep8(b, px, b.add(src, at)), typ=v32i8, align=1), splat8(-127)])
                    b.store(xv, b.bitcast(gep8(b, base8, b.add(dst, at)), v32i8.as_pointer()), align=32)
                    tot = b.add(tot, b.call(ctx.declare("llvm.vector.reduce.add.v32i32", I32, [v32i32]),
                                            [b.sext(xv, v32i32)]))
                b.store(tot, bsum_at(b, dst, j))

    if p.radix:
        usubsat = ctx.declare("llvm.usub.sat.v32i8", v32i8, [v32i8, v32i8])
    if p.gfni:
        affine = ctx.declare("llvm.x86.vgf2p8affineqb.256", v32i8, [v32i8, v32i8, ir.IntType(8)])

    def piece(b, codes, src, loads):
        """The 32 bytes of a piece: bit fields, the block's 32 bytes at ``src`` as loaded (with GFNI its XOR is
        left to ``field``); digits (``src`` = (each lane's byte, each lane's radix^slot)), each lane's byte
        times its multiplier, wrapping: ``digit_bytes``."""
        if not p.radix:
            chunk = b.load(gep8(b, pw, b.add(codes, C64(src))), typ=v32i8, align=1)
            return b.xor(chunk, splat8(p.xor)) if p.xor and not p.gfni else chunk
        return digit_bytes(b, codes, *src, loads)

    def chunk_times(b, codes, i, m, loads):
        """Chunk i of the block (its own length) times m, a power of the radix (each product once a block).
        3 and 9 are two adds or a shift and an add; higher powers are 9 times a lower product, kept apart by an
        empty asm (the compiler would fold the products into one multiply, three instructions a vector)."""
        if (i, m) not in loads:
            if m == 1:
                at, nb, _, _ = p.segments[i]
                v = b.load(gep8(b, pw, b.add(codes, C64(at))), typ=ir.VectorType(I8, nb), align=1)
            else:
                low = m // 9 if m > 9 else 1
                v = chunk_times(b, codes, i, low, loads)
                if low > 1:
                    v = opaque(b, v)
                v = b.mul(v, ir.Constant(v.type, [m // low] * v.type.count))
            loads[(i, m)] = v
        return loads[(i, m)]

    def digit_bytes(b, codes, src, mults, loads):
        """A digit piece's 32 bytes times their multipliers: lanes from one chunk with one multiplier are that
        chunk's product (``chunk_times``); lanes from one chunk with several (TQ1_0's 4-byte chunk, four digits
        each) are gathered, then multiplied lane by lane; at most two such sources, side by side in one
        shuffle."""
        groups = {}
        for lane, byte in enumerate(src):
            groups.setdefault(_segment_of(p, byte), []).append(lane)
        sources = []  # (vector, {lane: its element})
        for i, lanes in sorted(groups.items()):
            at = p.segments[i][0]
            ms = {mults[lane] for lane in lanes}
            if len(ms) == 1:
                sources.append((chunk_times(b, codes, i, ms.pop(), loads), {lane: src[lane] - at for lane in lanes}))
                continue
            raw = chunk_times(b, codes, i, 1, loads)
            picks = ir.Constant(ir.VectorType(I32, len(lanes)), [src[lane] - at for lane in lanes])
            g = b.shuffle_vector(raw, raw, picks)
            g = b.mul(g, ir.Constant(g.type, [mults[lane] for lane in lanes]))
            sources.append((g, {lane: e for e, lane in enumerate(lanes)}))
        if len(sources) == 1 and sources[0][0].type.count == SUB and all(sources[0][1][m] == m for m in range(SUB)):
            return sources[0][0]
        width = max(v.type.count for v, _ in sources)
        vecs = []
        for v, idx in sources:
            n = v.type.count
            if n < width:  # widen to the other source's length (the lanes past n are not read)
                v = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, width), [m % n for m in range(width)]))
            vecs.append((v, idx))
        mask = []
        for lane in range(SUB):
            which = next(j for j, (_, idx) in enumerate(vecs) if lane in idx)
            mask.append(which * width + vecs[which][1][lane])
        other = vecs[1][0] if len(vecs) > 1 else vecs[0][0]
        return b.shuffle_vector(vecs[0][0], other, ir.Constant(ir.VectorType(I32, SUB), mask))

    def opaque(b, v):
        """v, hidden from the optimiser by an empty asm (AVX2 targets): it would fold an average with 0 into
        wider arithmetic, or successive products into one multiply."""
        return b.asm(ir.FunctionType(v.type, [v.type]), "", "=v,0", [v], False) if p.dot != "i16" else v

    def average(b, u, v):
        """(u + v + 1) >> 1 per byte (vpavgb)."""
        wide = b.add(b.add(b.zext(u, v32i16), b.zext(v, v32i16)), ir.Constant(v32i16, [1] * SUB))
        return b.trunc(b.lshr(wide, ir.Constant(v32i16, [1] * SUB)), v32i8)

    def field(b, chunk, shift):
        """One bit field of each byte of a 32-byte piece: 32 offset codes. Digits (the bytes already times
        radix^slot): each byte's top digit, (byte * 3) >> 8, as llama.cpp's TQ1_0 takes it in bytes (exact for
        every byte): y = byte - 1 (saturating), the digit is bits 6-7 of avg(y, byte >> 1) (= avg(y, avg(y, 0)),
        one vpavgb)."""
        if p.radix:  # the digit is left in bits 6-7 (times DIGIT_UNIT; the block's scale product divides it)
            y = b.call(usubsat, [chunk, splat8(1)])
            return b.and_(average(b, y, average(b, y, opaque(b, splat8(0)))), splat8(0xC0))
        if p.gfni:  # an affine map over GF(2) per byte: bits shift, shift + 1 to bits 0, 1, the XOR its constant
            rows = [0] * 8
            rows[7], rows[6] = 1 << shift, 1 << (shift + 1)  # matrix byte 7 - i gives result bit i
            matrix = ir.Constant(v32i8, rows * 4)
            return b.call(affine, [chunk, matrix, ir.Constant(ir.IntType(8), (p.xor >> shift) & p.mask)])
        v = chunk
        if shift:
            v = b.bitcast(b.lshr(b.bitcast(chunk, v16i16), ir.Constant(v16i16, [shift] * 16)), v32i8)
        return b.and_(v, splat8(p.mask))

    def dot(b, acc, wv, xv):
        """acc (8 i32 lanes) + the 32 products of codes (unsigned) and x."""
        if p.dot == "vnni":
            return b.call(dpbusd, [acc, b.bitcast(wv, v8i32), b.bitcast(xv, v8i32)])
        if p.dot == "madd":
            return b.add(acc, b.call(maddwd, [b.call(maddubs, [wv, xv]), ones16]))
        prod = b.mul(b.zext(wv, v32i16), b.sext(xv, v32i16))  # |c x| <= 2 * 127
        wide = b.sext(prod, v32i32)
        parts = [b.shuffle_vector(wide, ir.Constant(v32i32, None), ir.Constant(v8i32, list(range(8 * s, 8 * s + 8))))
                 for s in range(4)]
        return b.add(acc, b.add(b.add(parts[0], parts[1]), b.add(parts[2], parts[3])))

    def w_scale(b, n, blk_off, j):
        if p.inline_scale is not None:
            st = storage_type(p.inline_scale)
            at = gep8(b, pw, b.add(blk_off, C64(p.scale_at)))
            return stored_to_f32(b, b.load(at, typ=st, align=1), p.inline_scale, p.f16c)
        st = storage_type(p.sw)
        return stored_to_f32(b, b.load(b.gep(psw, [b.add(b.mul(n, C64(NB)), j)], source_etype=st), typ=st), p.sw,
                          p.f16c)

    def x_scale(b, m, j):
        st = storage_type(p.sx)
        return stored_to_f32(b, b.load(b.gep(psx, [b.add(b.mul(m, C64(NB)), j)], source_etype=st), typ=st), p.sx,
                          p.f16c)

    def codes_of(b, codes, src, shift, cache):
        """The 32 offset codes of a piece of the block at ``codes``; what a block's pieces share is made once in
        ``cache`` (a bit-field piece's loaded bytes, a digit chunk's loads and products)."""
        key = (src, shift) if p.radix else src  # a digit piece's bytes differ per slot; a field's are shared
        if key not in cache:
            cache[key] = piece(b, codes, key, cache)
        return field(b, cache[key], shift)

    def prefetch_block(b, blk, ahead):
        """Hints for the cache lines of the weight block ``ahead`` bytes past ``blk``, kept inside the weights."""
        for line in range(0, p.stride, 64):
            off = b.add(blk, C64(ahead + line))
            off = b.select(b.icmp_signed("<", off, C64(w_bytes)), off, C64(w_bytes - 1))
            b.call(prefetch, [gep8(b, pw, off), C32(0), C32(3), C32(1)])

    # digits with several rows of x: each weight row is decoded once a pass into a buffer of offset codes and
    # f32 scales (``decode_row``), which every tile of the pass reads (the same codes: the same bits)
    decoded = bool(p.radix) and R > 1
    if decoded:
        wbuf = entry_alloca(b, v32i8, K // SUB)
        wbuf.align = 32
        wbuf8 = b.bitcast(wbuf, ir.PointerType())
        sbuf = entry_alloca(b, F32, NB)

    def decode_row(b, n):
        wrow = b.mul(n, C64(p.row_bytes))
        with for_range(b, 0, NB, name="dblk", vectorize=False) as j:
            blk = b.add(wrow, b.mul(j, C64(p.stride)))
            prefetch_block(b, blk, PREFETCH)
            b.store(w_scale(b, n, blk, j), b.gep(sbuf, [j], source_etype=F32))
            cache, codes = {}, b.add(blk, C64(p.codes_at))
            for src, shift, first in p.pieces:
                at = gep8(b, wbuf8, b.add(b.mul(j, C64(G)), C64(first)))
                b.store(codes_of(b, codes, src, shift, cache), b.bitcast(at, v32i8.as_pointer()), align=32)

    def per_unit(b, d):
        """The scale product for integer sums of codes in units of ``unit`` (a power of 2: exact, so the same
        product as the sum's times d)."""
        return b.fmul(d, ir.Constant(F32, 1.0 / p.unit)) if p.unit != 1 else d

    def tile(b, n, m0, mc, T):
        wrow = b.mul(n, C64(p.row_bytes))
        accs = [entry_alloca(b, v8f) for _ in range(T)]
        corrs = [entry_alloca(b, F32) for _ in range(T)]
        for t in range(T):
            b.store(ir.Constant(v8f, None), accs[t])
            b.store(ir.Constant(F32, 0.0), corrs[t])
        ms = [b.add(m0, C64(t)) for t in range(T)]
        xrows = [b.mul(b.sub(m, mc), C64(per_row)) for m in ms]
        with for_range(b, 0, NB, name="blk", vectorize=False) as j:
            blk = b.add(wrow, b.mul(j, C64(p.stride)))
            if T == 1 and not decoded:
                prefetch_block(b, blk, PREFETCH)
            ws = b.load(b.gep(sbuf, [j], source_etype=F32), typ=F32) if decoded else w_scale(b, n, blk, j)
            ints = [ir.Constant(v8i32, None) for _ in range(T)]
            cache, codes = {}, b.add(blk, C64(p.codes_at))
            for src, shift, first in p.pieces:
                if decoded:
                    wv = b.load(gep8(b, wbuf8, b.add(b.mul(j, C64(G)), C64(first))), typ=v32i8, align=32)
                else:
                    wv = codes_of(b, codes, src, shift, cache)
                at = b.add(b.mul(j, C64(G)), C64(first))
                for t in range(T):
                    ints[t] = dot(b, ints[t], wv, x_vec(b, xrows[t], at))
            for t in range(T):
                d = b.fmul(ws, x_scale(b, ms[t], j))
                dv = b.shuffle_vector(b.insert_element(ir.Constant(v8f, None), per_unit(b, d), C32(0)),
                                      ir.Constant(v8f, None),
                                      ir.Constant(v8i32, [0] * 8))
                b.store(b.call(muladd, [b.sitofp(ints[t], v8f), dv, b.load(accs[t], typ=v8f)]), accs[t])
                if p.zero:
                    bs = b.sitofp(b.mul(x_bsum(b, xrows[t], j), ir.Constant(I32, p.zero)), F32)
                    b.store(b.call(fmuladd, [bs, d, b.load(corrs[t], typ=F32)]), corrs[t])
        for t in range(T):
            total = b.call(vsum, [ir.Constant(F32, -0.0), b.load(accs[t], typ=v8f)])
            store_epilogue(ctx, b, op, outs[0], py, b.fsub(total, b.load(corrs[t], typ=F32)),
                      b.add(b.mul(ms[t], C64(N)), n))

    rows = GEMV_ROWS_DIGITS if p.radix else GEMV_ROWS

    def gemv(b, n0, C):
        """The one row of x against weight rows n0 .. n0+C-1 (a GEMV): each 32 codes of x loaded once for the C
        rows, each row's 8 dot products a block in two chains (integers: exact in any order). Per output the
        float sums and order of ``tile(b, n, 0, 0, 1)``, so the same bits."""
        ns = [b.add(n0, C64(c)) for c in range(C)]
        wrows = [b.mul(n, C64(p.row_bytes)) for n in ns]
        accs = [entry_alloca(b, v8f) for _ in range(C)]
        corrs = [entry_alloca(b, F32) for _ in range(C)]
        for c in range(C):
            b.store(ir.Constant(v8f, None), accs[c])
            b.store(ir.Constant(F32, 0.0), corrs[c])
        ahead = rows * p.row_bytes * -(-PREFETCH // (rows * p.row_bytes))  # whole row groups ahead
        with for_range(b, 0, NB, name="gblk", vectorize=False) as j:
            xs = x_scale(b, C64(0), j)
            bs = b.sitofp(b.mul(x_bsum(b, C64(0), j), ir.Constant(I32, p.zero)), F32) if p.zero else None
            xv = {first: x_vec(b, C64(0), b.add(b.mul(j, C64(G)), C64(first))) for _, _, first in p.pieces}
            for c in range(C):
                blk = b.add(wrows[c], b.mul(j, C64(p.stride)))
                prefetch_block(b, blk, ahead)
                d = b.fmul(w_scale(b, ns[c], blk, j), xs)
                ints = [ir.Constant(v8i32, None)] * 2
                cache, codes = {}, b.add(blk, C64(p.codes_at))
                for i, (src, shift, first) in enumerate(p.pieces):
                    ints[i % 2] = dot(b, ints[i % 2], codes_of(b, codes, src, shift, cache), xv[first])
                dv = b.shuffle_vector(b.insert_element(ir.Constant(v8f, None), per_unit(b, d), C32(0)),
                                      ir.Constant(v8f, None),
                                      ir.Constant(v8i32, [0] * 8))
                total = b.sitofp(b.add(ints[0], ints[1]), v8f)
                b.store(b.call(muladd, [total, dv, b.load(accs[c], typ=v8f)]), accs[c])
                if p.zero:
                    b.store(b.call(fmuladd, [bs, d, b.load(corrs[c], typ=F32)]), corrs[c])
        for c in range(C):
            total = b.call(vsum, [ir.Constant(F32, -0.0), b.load(accs[c], typ=v8f)])
            store_epilogue(ctx, b, op, outs[0], py, b.fsub(total, b.load(corrs[c], typ=F32)), ns[c])

    if R == 1:
        fill(b, C64(0), C64(1))
        in_tiles(b, begin, end, rows, gemv, name="n")
    else:
        passes_over_weights(b, R, CH, begin, end, min(MTILE, CH) if CH > 1 else 1, fill, tile,
                            decode_row if decoded else None)
    b.ret_void()
    return KernelSpec(fn, N, 1)


__all__ = ["CrumbPlan", "lower", "pieces_of", "plan"]
