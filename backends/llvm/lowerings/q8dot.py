"""Lowering: ``qmatmul_q8``, llama.cpp's Q8_0 dot products (int8 activation blocks x integer weight blocks).

Two tiers, chosen per op at lowering time:

* a **block** kernel for blocks of 32 along K (``group = 32``, K a whole number of blocks: what GGUF's Q8_0,
  Q5_0, Q4_0, Q4_K and Q5_K give; or ``group = 16``, two scales a block for w and for x, the first for the sums in
  lanes 0-3 and the second for lanes 4-7: Q6_K's, Q3_K's and Q2_K's, the weight scales apart) over int8 weights
  as numpy holds them (one byte a code, the scales a separate tensor) or in ``q8`` blocks (``q8+f16``: Q8_0's
  bytes, each block's f16 scale before its 32 codes), or 4-bit weights in 32-code nibble blocks (``nib16``, the
  scales inside each block as ``nib16+f16`` does, or beside them; with ``scale_group`` (a K-quant's scales as
  its file holds them) an i8 sub-scale a block or half block, times an f32 per 8 blocks, made into the f32
  scale in the kernel as the reference makes it: 1.125 bytes of scales per 32 codes where an f32 each takes
  4). Work item = one weight row n. Each thread first copies the rows of x of a pass (as many as
  fit SCRATCH bytes of stack, at most MCHUNK) to a scratch, clipped to -127 (the op's definition; absmax
  codes never hold -128), then streams its weight rows once per pass. Per block of 32, the integer dot
  product with each row of x, exact in int32, as llama.cpp takes it:

  - int8 weights: |w| (unsigned) times x with w's sign (``vpsignb``), summed by ``vpdpbusd`` (VNNI:
    AVX512-VNNI or AVX-VNNI) or ``vpmaddubsw`` + ``vpmaddwd`` (AVX2; |w| <= 128, |x| <= 127: each pair sum
    stays under 2^15);
  - nibbles: codes decoded by one AND of the bytes beside the bytes shifted right by 4, i4 made offset binary
    (c ^ 8, value c - 8) on the packed bytes; the offset codes (0-15) multiply x as they are, and 8 x is
    taken off per pair (computed once per row of x into the scratch): no sign trick per weight block; u4 codes
    (Q4_K's, Q2_K's) multiply x as they are;
  - elsewhere (no AVX2): i16 products of signed values.

  The 8 lanes of partial sums become f32 and are multiplied by (w's scale * x's scale) into f32 accumulators. A
  GEMV (one row of x: decode) takes GEMV_ROWS weight rows at a time (nibbles in rows of at most GEMV_SPAN /
  GEMV_ROWS bytes; int8 weights and longer rows one: see GEMV_ROWS_I8), each block of x, its offset's products
  and its scale loaded once for them, blocks 8 at a time into two accumulators per output (the add's latency
  does not bound the stream), each block's f16 scale broadcast as stored and converted as a vector, and prefetch
  hints whole row groups ahead (nibbles into L2: tiling.GEMV_PREFETCH). Rows of x left over from a tile of MTILE
  take the same sums one weight row at a time (``tile``): the GEMV gives their bits. Several rows of x (VNNI or
  AVX2 dots) take register tiles: MTILE rows of x by NTILE weight rows (NTILE_WIDE with 32 vector registers),
  the accumulators in registers, each weight block decoded once and each block of x loaded once per tile; int8
  weights there take x + 128 (unsigned) times w less 128 times w's sums (per weight block, not a sign per
  product). Each output still has one accumulator taking its blocks in order, as a row tile of the GEMV-style
  loop did, so the results are those bits; rows left over from a tile of MTILE keep the GEMV's two accumulators.
  With AVX-512 VNNI (32 zmm registers; where the buffers below fit the stack) the tiles run in 512-bit vectors
  over the blocks of whole groups of 8, two blocks a vector with their dwords woven (block j's dword i in lane
  2i, j + 1's in lane 2i + 1; ``fill`` weaves x so). Per pass, each tile of weight rows is decoded once into a
  buffer (woven codes, int8 weights' -128 w sums, f32 scales), and per tile of rows of x the scale products (w's
  * x's, 16 pairs a step) are made first in their own loop, so each reaches its FMA as a broadcast load: a dot
  product, a conversion and an FMA per output and pair of blocks. The even lanes are the GEMV's first
  accumulator and the odd ones its second, the blocks after the whole groups go into the first, and the two are
  summed as the GEMV sums them: every row of a prefill gets the bits of its decode (rows past the pass's end
  repeat its last row and are not stored). Measured on a Xeon (AVX-512 VNNI), Q4_0 512 x 2560 x 2560 at 1
  thread: 73.1 ms in 256-bit tiles, 40.0 ms so.
* **integer super-blocks** (AVX-512 VNNI + BW): nibbles whose scales are i8 sub-scales times an f32 per 8 blocks
  (``scale_group``) with x's scale one per super-block (Q8_K's): a Q4_K projection as llama.cpp's dot product
  takes it. Per pair of blocks one 64-byte ``vpdpbusd`` an output (pieces of 16 codes: ``split``), two pairs'
  dwords packed to words (each |sum| <= 4 * 15 * 127) and multiplied by their sub-scales into int32 lanes
  (``vpdpwssd``), exact over the super-block; then one conversion and one FMA by d * x's scale a super-block,
  where the float tiles take a conversion and an FMA a pair of blocks. The 512-bit tiles (each tile of weight
  rows decoded once a pass) and the GEMV (each pair decoded where it is read, from one broadcast load) take the
  same lanes and the same sums: a decode row has the bits of a prefill row. Zen 4, 1 thread, in turns: Q4_K
  64 x 6912 x 2560 16.3 -> 15.1 ms, 1 x 6912 x 2560 0.38 ms either way (Zen 4 runs both VNNI products on the
  same pipes as the FMA they replace: a 512-bit tile of integer sums alone ran 10-12 ms).
* a **generic** kernel for everything else the op takes: work item = one weight row, each element dequantized
  as the reference does (x's code * x's scale, w's value * w's scale) and the products summed in f32.

Only the summation order (and one rounding per block product) differs from the reference's dequantized f32
matmul, so the results agree to float rounding (tests/test_llvm_q8dot.py states the tolerance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llvmlite import ir

from ladder.backends.llvm.codegen import (C32, C64, F32, I8, I16, I32, KernelSpec, entry_alloca, for_range, has_f16c,
                                          lowers, storage_type, stored_to_f32, to_f32)
from ladder.ops import OPS
from ladder.ops.lowbit import block_scales, x_scale_per_superblock
from ladder.types import DType

from . import q8k
from .decode import Decoder, gep8, int_value
from .epilogue import store_epilogue
from .tiling import GEMV_LOCALITY, GEMV_PREFETCH, PREFETCH, in_tiles, passes_over_weights

BLOCK = 32  # codes per block: one 256-bit vector of int8
MCHUNK = 64  # rows of x per pass over the weight rows, at most
SCRATCH = 128 << 10  # bytes of stack for a pass's rows of x (clipped codes, and the offset's products)
SCRATCH_WIDE = 256 << 10  # the same for 512-bit tiles (each pass also decodes its weight tiles once)
WIDE_BUFFERS = 128 << 10  # at most this many bytes of stack for a 512-bit tile's decoded weights and scales
MTILE = 4  # rows of x sharing one decoded weight block
NTILE, NTILE_WIDE = 2, 4  # weight rows sharing each block of x (MTILE x NTILE accumulators: 16 vector registers, 32)
# weight rows sharing each block of x in a GEMV (one row of x): two for nibbles, one for int8 weights. Each
# output's two accumulators take an FMA every other block, so one row's loop is bound by the FMA's latency; two
# rows interleave two such chains. Zen 4, Q4_0 at 1 thread (the kernel with its scale products made first):
# 1 x 6912 x 2560 in cache 440 -> 377 us with two rows, 32768 x 2560 from DRAM 2950 -> 2480 us; four rows
# from DRAM 3400-3950 us. The 2B Q4_0 decode: 10.9 -> 11.2-12.2 tokens/s at 1 thread, 2 threads alike (18-20).
# Int8 weights: 4 or 2 interleaved 768-byte rows from L3/DRAM ran 2-3x slower at 32000 x 768 (an older kernel).
# Two rows only while a step's rows span at most GEMV_SPAN bytes (a page): longer rows stream from DRAM faster
# one at a time. The 2B Q4_0 decode step's kernels one by one (bench: ladder generate --profile's timing, 1
# thread, Zen 4, A/B twice): ffn_down (2560 x 6912, two rows 7.8 KB) 21.5-23.3 ms with two rows, 17.4-17.5
# with one; the K = 2560 projections (two rows 2.9 KB) 18-18.7 GB/s with two rows, 15.2-15.9 with one
GEMV_ROWS, GEMV_ROWS_I8 = 2, 1
GEMV_SPAN = 4096
GROUP = 8  # blocks per step: their scales are one vector of 8 (both scales multiplied once per 8 blocks)


@dataclass(frozen=True)
class Q8Plan:
    """What the block kernel reads, decided once per op."""

    rows: int  # rows of x (batch dims flattened)
    k: int
    n: int
    nblocks: int
    nibbles: bool  # 4-bit codes in nib16 blocks (else one int8 a code)
    signed: bool  # the nibbles are two's complement (i4) rather than unsigned (u4)
    nib_xor: int  # the XOR of a packed byte that makes both its nibbles offset codes (0x88 for i4: c ^ 8)
    row_bytes: int  # bytes of one weight row
    stride: int  # bytes from one block's codes to the next block's
    codes_at: int  # bytes from a block's start to its codes (its scale before them, when it carries one)
    scale_at: int  # bytes from a block's start to its inline scale
    inline_scale: DType | None  # the blocks' own scale type (nib16+f16), else None
    sw: DType | None  # the separate weight scale's type, else None
    sx: DType  # x's scale type
    dot: str  # "vnni" (vpdpbusd), "madd" (vpmaddubsw + vpmaddwd) or "i16" (portable products)
    f16c: bool  # fpext half -> float is one instruction (else integer arithmetic, as codegen does)
    fma: bool
    gfni: bool = False  # nibbles decode in one vgf2p8affineqb (GFNI + AVX; both nibbles' XORs alike)
    halves: bool = False  # a scale per 16 (group = 16) for w and x: two a block, lanes 0-3 and 4-7 of its sums
    # w's scales as i8 codes times an f32 per this many (``scale_group``: a K-quant's sub-scales and super-block
    # scale), each super-block one GROUP of blocks: the kernel makes each f32 scale as the reference does
    sub: int = 0
    zeros: bool = False  # w's zeros (i8 codes times an f32 per ``sub``, as its scales): less (sx * x's sums) @ zeros.T
    xsb: bool = False  # with ``sub``: x's scale one per super-block (Q8_K's), not one per group

    @property
    def per(self) -> int:
        """Scales a block of 32 takes, for w and for x."""
        return 2 if self.halves else 1


def plan(ctx, op, ins) -> Q8Plan | None:
    """The block kernel's plan, or None where the generic kernel is needed."""
    x, sx, w = ins[0], ins[1], ins[2]
    attrs = OPS[op.kind].full_attrs(op.attr)
    g, sub = attrs["group"], attrs["scale_group"]
    k, n = x.shape[-1], w.shape[0]
    if g not in (BLOCK, BLOCK // 2) or k == 0 or k % BLOCK or 2 * k > SCRATCH:
        return None
    if sub and (sub * g != GROUP * BLOCK or k % (GROUP * BLOCK)):
        return None  # quantized scales whose super-blocks are not the kernel's groups of 8 blocks
    halves = g == BLOCK // 2  # Q6_K's and Q3_K's scale per 16: both scales of a block, as a vector
    if halves and block_scales(w):
        return None
    t = ctx.target
    if w.layout is None:
        if w.dtype.name != "i8":
            return None
        nibbles, row_bytes, stride, codes_at, scale_at, inline, nib_xor = False, k, BLOCK, 0, 0, None, 0
    else:
        p = w.packing
        base = p.base if block_scales(w) else p
        if _byte_blocks(base) and w.dtype.name == "i8":
            nibbles = False
        elif base.nib_pairs and w.dtype.name in ("i4", "u4"):
            nibbles = True
        else:
            return None
        row_bytes = w.storage_shape[-1]
        inline = p.scale if block_scales(w) else None
        codes_at = p.codes_offset if inline is not None else 0
        scale_at = p.scale_offset(0) if inline is not None else 0
        stride = p.stride if inline is not None else base.block_bytes
        nib_xor = base.byte_xor(w.dtype) if nibbles else 0
    feats = t.features()
    madd = t.supports("i8-madd")
    return Q8Plan(
        rows=math.prod(x.shape[:-1]), k=k, n=n, nblocks=k // BLOCK, nibbles=nibbles, signed=w.dtype.name != "u4",
        nib_xor=nib_xor, row_bytes=row_bytes, stride=stride, codes_at=codes_at, scale_at=scale_at,
        inline_scale=inline,
        sw=None if inline is not None else ins[3].dtype, sx=sx.dtype,
        dot="vnni" if madd and t.supports("i8-dot") else ("madd" if madd else "i16"),
        f16c=has_f16c(t), fma=t.supports("f32-fma"),
        gfni=nibbles and "gfni" in feats and "avx" in feats and nib_xor >> 4 == nib_xor & 15, halves=halves,
        sub=sub, zeros=len(ins) == 7, xsb=x_scale_per_superblock(ins, attrs))


def _byte_blocks(L) -> bool:
    """Whether a layout is int8 codes a byte each in blocks of 32 (q8: Q8_0's codes, their scale beside them)."""
    return (not L.planes and not L.radix and L.bits == 8 and L.block == BLOCK and L.block_bytes == BLOCK
            and L.codes == "type")


@lowers("qmatmul_q8")
def lower_qmatmul_q8(ctx, op, ins, outs):
    p = plan(ctx, op, ins)
    if p is not None:
        return _lower_blocks(ctx, op, ins, outs, p)
    crumbs = q8k.plan(ctx, op, ins)  # ternary crumb blocks with Q8_K activations (TQ2_0): their own kernel
    if crumbs is not None:
        return q8k.lower(ctx, op, ins, outs, crumbs)
    return _lower_generic(ctx, op, ins, outs)


# -- the block kernel ----------------------------------------------------------------------------------------

def _lower_blocks(ctx, op, ins, outs, p: Q8Plan):
    fn, b, ptrs, begin, end = ctx.kernel(f"qmatmul_q8_{op.name}", len(ins) + 1)
    px, psx, pw = ptrs[0], ptrs[1], ptrs[2]
    psw = ptrs[3] if p.sw is not None else None
    psd = ptrs[4] if p.sub else None
    pzw, pzd = (ptrs[5], ptrs[6]) if p.zeros else (None, None)
    py = ptrs[-1]
    R, K, N, NB = p.rows, p.k, p.n, p.nblocks
    NS = NB * p.per  # scales a row (of w and of x)
    w_bytes = N * p.row_bytes
    v16i8, v32i8 = ir.VectorType(I8, 16), ir.VectorType(I8, 32)
    v8i16, v16i16, v32i16 = ir.VectorType(I16, 8), ir.VectorType(I16, 16), ir.VectorType(I16, 32)
    v8i32, v32i32 = ir.VectorType(I32, 8), ir.VectorType(I32, 32)
    v8f = ir.VectorType(F32, 8)
    splat8 = lambda c: ir.Constant(v32i8, [c] * 32)  # noqa: E731
    smax = ctx.declare("llvm.smax.v32i8", v32i8, [v32i8, v32i8])
    muladd = ctx.declare("llvm.fmuladd.v8f32", v8f, [v8f, v8f, v8f])
    vsum = ctx.declare("llvm.vector.reduce.fadd.v8f32", F32, [F32, v8f])
    fence = ctx.declare("llvm.arithmetic.fence.v8f32", v8f, [v8f])
    prefetch = ctx.declare("llvm.prefetch.p0", ir.VoidType(), [ir.PointerType(), I32, I32, I32])
    if p.gfni:
        affine = ctx.declare("llvm.x86.vgf2p8affineqb.256", v32i8, [v32i8, v32i8, I8])
    if p.dot != "i16":
        vabs = ctx.declare("llvm.abs.v32i8", v32i8, [v32i8, ir.IntType(1)])
        psign = ctx.declare("llvm.x86.avx2.psign.b", v32i8, [v32i8, v32i8])
    if p.dot == "vnni":  # _mm256_dpbusd_epi32(src, a: u8, b: i8) (AVX512-VNNI + VL, or AVX-VNNI)
        dpbusd = ctx.declare("llvm.x86.avx512.vpdpbusd.256", v8i32, [v8i32, v8i32, v8i32])
    elif p.dot == "madd":
        maddubs = ctx.declare("llvm.x86.avx2.pmadd.ub.sw", v16i16, [v32i8, v32i8])
        maddwd = ctx.declare("llvm.x86.avx2.pmadd.wd", v8i32, [v16i16, v16i16])
        ones16 = ir.Constant(v16i16, [1] * 16)
    # Offset nibbles (i4 as c ^ 8, value c - 8) are multiplied unsigned, as they are, and the offset taken off
    # with 8 x (x's pair sums), computed once per row of x: no sign trick, no subtraction per weight block.
    offset = p.nibbles and p.signed and p.dot != "i16"
    # Unsigned nibbles (u4: Q4_K's, Q2_K's) are u8 values as they are: one vpdpbusd (or vpmaddubsw) with x, no sign
    # trick and no offset (Zen 4, Q4_K's 1 x 6912 x 2560 at 1 thread: ~740 -> ~600 us, as Q4_0's)
    unsigned = p.nibbles and not p.signed and p.dot != "i16"
    direct = offset or unsigned  # the weight bytes are vpdpbusd's unsigned operand as they are
    # scratch, per pass over the weights: x's codes clipped to -127 and, with offset nibbles, the offset's
    # products negated (-8 x, 32 bytes a block), so the weight loops add them as they are
    # with zeros, then each group's sx * (sum of x's codes), f32 (4 NS bytes: a multiple of 32, K a multiple of 256)
    ZOFF = K * (2 if offset else 1)
    per_row = ZOFF + (4 * NS if p.zeros else 0)
    NT = NTILE_WIDE if "avx512f" in ctx.target.features() else NTILE  # 32 vector registers, or 16
    full = NB - NB % GROUP  # blocks in whole groups of 8 (the GEMV's two accumulators take them in turn)
    # 512-bit register tiles (AVX-512 VNNI; BW for the byte arithmetic), where their buffers fit the stack
    wide_ok = (p.dot == "vnni" and full > 0 and {"avx512f", "avx512bw", "avx512vnni"} <= ctx.target.features()
               and NT * K * (1 if direct else 3) + 4 * NS * (MTILE * NT + NT) <= WIDE_BUFFERS)
    # Integer super-blocks: nibbles whose scales are i8 sub-scales times an f32 per super-block, and x's scale one
    # per super-block (a Q4_K projection's, x in Q8_K blocks): each pair of blocks' dot products (|sum| <= 4 * 15
    # * 127 a dword, an i16) packed to words two pairs at a time and multiplied by the sub-scales into int32
    # (vpdpwssd), exact over the super-block; then one conversion and one FMA by d * x's scale a super-block,
    # where the float path takes a conversion and an FMA a pair of blocks. The GEMV takes the same tiles with
    # one row of x, so a decode row has the bits of a prefill row.
    isum = wide_ok and p.sub and p.xsb and p.nibbles and not p.halves and full == NB
    wide = wide_ok and (R > 1 or isum)
    MT = MTILE if R >= MTILE else R  # rows of x a 512-bit tile takes
    CH = max(1, min(MCHUNK, (SCRATCH_WIDE if wide else SCRATCH) // per_row, R))
    if wide and CH > MT:
        CH -= CH % MT  # whole tiles per pass
    scratch = entry_alloca(b, v32i8, CH * per_row // BLOCK)  # in 32-byte vectors
    scratch.align = 64
    scratch8 = b.bitcast(scratch, I8.as_pointer())
    if p.zeros:
        v16i32 = ir.VectorType(I32, 16)
        vsum32 = ctx.declare("llvm.vector.reduce.add.v32i32", I32, [v32i32])
        vsum16 = ctx.declare("llvm.vector.reduce.add.v16i32", I32, [v16i32])

    def vec_at(b, byte_off):
        return b.gep(scratch, [b.udiv(byte_off, C64(BLOCK))], source_etype=v32i8)

    def codes(b, wrow, j):
        """Block j of the weight row at byte offset ``wrow``: 32 bytes (signed values, or offset nibbles)."""
        blk = b.add(wrow, b.mul(j, C64(p.stride)))
        if not p.nibbles:
            return b.load(gep8(b, pw, b.add(blk, C64(p.codes_at))), typ=v32i8, align=1)
        # codes 0-15 in the low nibbles, 16-31 in the high ones: the 16 bytes in both halves (one broadcast
        # load), the upper half shifted right by 4 in 32-bit lanes (the bits shifted in from the next byte are
        # masked off), one AND keeps the nibbles. Two's complement nibbles (i4) are then made offset binary (XOR
        # 8, with the AND one vpternlog): the value is the nibble - 8. With GFNI, shift, mask and XOR are one
        # affine map per byte.
        packed = b.load(gep8(b, pw, b.add(blk, C64(p.codes_at))), typ=v16i8, align=1)
        if p.gfni:  # an affine map over GF(2) per byte, one matrix a half: bits 0-3 or 4-7 to bits 0-3, then the XOR
            rows = [[0, 0, 0, 0, 8, 4, 2, 1], [0, 0, 0, 0, 128, 64, 32, 16]]  # matrix byte 7 - i gives result bit i
            matrix = ir.Constant(v32i8, rows[0] * 2 + rows[1] * 2)
            wv = b.call(affine, [b.shuffle_vector(packed, packed, ir.Constant(v32i32, list(range(16)) * 2)), matrix,
                                 ir.Constant(I8, p.nib_xor & 15)])
            return b.sub(wv, splat8(8)) if p.signed and not offset else wv
        both = b.bitcast(b.shuffle_vector(packed, packed, ir.Constant(v32i32, list(range(16)) * 2)), v8i32)
        wv = b.and_(b.bitcast(b.lshr(both, ir.Constant(v8i32, [0] * 4 + [4] * 4)), v32i8), splat8(15))
        if p.nib_xor:
            wv = b.xor(wv, ir.Constant(v32i8, [p.nib_xor & 15] * 16 + [p.nib_xor >> 4] * 16))
        return b.sub(wv, splat8(8)) if p.signed and not offset else wv

    def scale_index(b, row, j):
        """The index of block j's (first) scale in a row of w's or x's separate scales."""
        return b.add(b.mul(row, C64(NS)), b.mul(j, C64(2)) if p.halves else j)

    def scales(b, n, wrow, j, count):
        """The f32 scales of blocks j .. j+count-1 of weight row n: a scalar (count 1) or a vector of count (with
        halves a vector of 2 count: each block's two in turn)."""
        cnt = count * p.per
        if p.inline_scale is not None:
            dt, st = p.inline_scale, storage_type(p.inline_scale)
            raws = [b.load(gep8(b, pw, b.add(b.add(wrow, b.mul(b.add(j, C64(a)), C64(p.stride))), C64(p.scale_at))),
                           typ=st, align=1) for a in range(count)]
        else:
            dt, st = p.sw, storage_type(p.sw)
            at = b.gep(psw, [scale_index(b, n, j)], source_etype=st)
            if cnt == 1:
                raws = [b.load(at, typ=st)]
            else:
                vec = b.load(at, typ=ir.VectorType(st, cnt), align=st.width // 8 if isinstance(st, ir.IntType) else 4)
                raws = vec
        if p.sub:  # i8 sub-scales times their super-block's f32 (blocks j .. j+count-1 lie in one GROUP)
            d = b.load(b.gep(psd, [b.add(b.mul(n, C64(NB // GROUP)), b.lshr(j, C64(3)))], source_etype=F32),
                       typ=F32)
            if cnt == 1:
                return b.fmul(b.sitofp(raws[0], F32), d)
            vt = ir.VectorType(F32, cnt)
            dv = b.shuffle_vector(b.insert_element(ir.Constant(vt, None), d, C32(0)), ir.Constant(vt, None),
                                  ir.Constant(ir.VectorType(I32, cnt), [0] * cnt))
            return b.fmul(b.sitofp(raws, vt), dv)
        return _scales_f32(b, raws, dt, cnt)

    def dot(b, wv, wabs, xv, corr):
        """The 8 lanes of partial sums (i32) of a block's 32 products w * x."""
        if p.dot == "i16":  # exact: |w x| <= 128 * 127 fits i16; 4 products summed into each lane
            prod = b.sext(b.mul(b.sext(wv, v32i16), b.sext(xv, v32i16)), v32i32)
            # lane i sums products i, 8 + i, 16 + i and 24 + i; with halves 4i .. 4i + 3, as vpdpbusd does (lanes 0-3
            # the block's first 16)
            parts = [b.shuffle_vector(prod, ir.Constant(v32i32, None), ir.Constant(v8i32, [
                4 * i + q if p.halves else 8 * q + i for i in range(8)])) for q in range(4)]
            return b.add(b.add(parts[0], parts[1]), b.add(parts[2], parts[3]))
        if direct:  # nibbles (0-15) times x, plus -8 x (corr) for offset ones
            if p.dot == "vnni":
                return b.call(dpbusd, [corr if offset else ir.Constant(v8i32, None), b.bitcast(wv, v8i32),
                                       b.bitcast(xv, v8i32)])
            pairs = b.call(maddubs, [wv, xv])
            return b.call(maddwd, [b.add(pairs, corr) if offset else pairs, ones16])
        sx_ = b.call(psign, [xv, wv])  # x with w's sign (0 where w is 0); never overflows: x >= -127
        if p.dot == "vnni":
            return b.call(dpbusd, [ir.Constant(v8i32, None), b.bitcast(wabs, v8i32), b.bitcast(sx_, v8i32)])
        return b.call(maddwd, [b.call(maddubs, [wabs, sx_]), ones16])

    def splat(b, v):
        vec = b.insert_element(ir.Constant(v8f, None), v, C32(0))
        return b.shuffle_vector(vec, ir.Constant(v8f, None), ir.Constant(v8i32, [0] * 8))

    def x_scales(b, m, j, count):
        """x's f32 scales of blocks j .. j+count-1 of row m: a scalar (count 1) or a vector of count (with halves
        a vector of 2 count, as ``scales``)."""
        st = storage_type(p.sx)
        cnt = count * p.per
        if p.xsb:  # one scale per super-block (blocks j .. j+count-1 lie in one), as many times as asked
            raw = b.load(b.gep(psx, [b.add(b.mul(m, C64(NB // GROUP)), b.lshr(j, C64(3)))], source_etype=st), typ=st)
            one = stored_to_f32(b, raw, p.sx, p.f16c)
            if cnt == 1:
                return one
            vt = ir.VectorType(F32, cnt)
            return b.shuffle_vector(b.insert_element(ir.Constant(vt, None), one, C32(0)), ir.Constant(vt, None),
                                    ir.Constant(ir.VectorType(I32, cnt), [0] * cnt))
        at = b.gep(psx, [scale_index(b, m, j)], source_etype=st)
        raws = [b.load(at, typ=st)] if cnt == 1 else b.load(at, typ=ir.VectorType(st, cnt), align=2)
        return _scales_f32(b, raws, p.sx, cnt)

    def lanes(b, v, a):
        """Block a's scale, of ``v`` (a scalar, or a vector of ``scales``' or ``x_scales``' or their products), in
        the 8 lanes of the block's sums; with halves its first scale in lanes 0-3 and its second in lanes 4-7."""
        if not isinstance(v.type, ir.VectorType):
            return splat(b, v)
        idx = [2 * a] * 4 + [2 * a + 1] * 4 if p.halves else [a] * 8
        return b.shuffle_vector(v, ir.Constant(v.type, None), ir.Constant(v8i32, idx))

    def _scales_f32(b, raws, dt, count):
        """Scales as stored (a list of scalars, or a vector) -> f32 (a scalar, or a vector of ``count``)."""
        if count == 1:
            return stored_to_f32(b, raws[0], dt, p.f16c)
        vt = ir.VectorType(F32, count)
        if isinstance(raws, list):
            st = raws[0].type
            vec = ir.Constant(ir.VectorType(st, count), None)
            for a, r in enumerate(raws):
                vec = b.insert_element(vec, r, C32(a))
            raws = vec
        if dt.name == "f32":
            return raws
        if dt.name == "f16" and p.f16c:
            return b.fpext(b.bitcast(raws, ir.VectorType(ir.HalfType(), count)), vt)
        if dt.name == "bf16":
            return b.bitcast(b.shl(b.zext(raws, ir.VectorType(I32, count)), ir.Constant(ir.VectorType(I32, count),
                                                                                     [16] * count)), vt)
        out = ir.Constant(vt, None)  # f16 without F16C: lane by lane, in integer arithmetic
        for a in range(count):
            out = b.insert_element(out, to_f32(b, b.extract_element(raws, C32(a)), dt), C32(a))
        return out

    corr_t = v8i32 if p.dot == "vnni" else v16i16
    if wide:
        v64i8, v16i32, v16f = ir.VectorType(I8, 64), ir.VectorType(I32, 16), ir.VectorType(F32, 16)
        dpbusd16 = ctx.declare("llvm.x86.avx512.vpdpbusd.512", v16i32, [v16i32, v16i32, v16i32])
        muladd16 = ctx.declare("llvm.fmuladd.v16f32", v16f, [v16f, v16f, v16f])
        # the dwords of blocks j and j + 1 alternate: dword i of block j in lane 2i, of block j + 1 in 2i + 1. With
        # halves (a scale per 16: dwords 0-3 and 4-7 of a block), lane 4i + h (h = 0..3) takes dword i of block j
        # (h = 0) or j + 1 (h = 1), or dword 4 + i of block j (h = 2) or j + 1 (h = 3): the four scales of the pair
        # [j's first, j + 1's first, j's second, j + 1's second] broadcast as 128 bits give every lane its own.
        # ``evens`` picks block j's dwords 0-7 (the GEMV's first accumulator) and ``odds`` block j + 1's.
        if p.halves:
            weave = ir.Constant(ir.VectorType(I32, 16), [8 * (i % 2) + 4 * (i % 4 // 2) + i // 4 for i in range(16)])
            evens, odds = (ir.Constant(v8i32, [4 * (i % 4) + 2 * (i // 4) + h for i in range(8)]) for h in (0, 1))
        else:
            weave = ir.Constant(ir.VectorType(I32, 16), [i // 2 + 8 * (i % 2) for i in range(16)])
            evens, odds = (ir.Constant(v8i32, list(range(h, 16, 2))) for h in (0, 1))
        bytes128 = ir.Constant(v16i32, [0x80808080 - (1 << 32)] * 16)  # 128 (unsigned) in every byte
        PW = 2 * p.per  # scales a pair of blocks takes (of w, and products of w's and x's)
        npairs = full // 2
        cbuf = entry_alloca(b, v64i8, NT * npairs)  # a column tile's codes, woven, [pair][c]
        cbuf.align = 64
        obuf = None if direct else entry_alloca(b, v16i32, NT * npairs)  # their -128 w sums (int8 weights)
        if obuf is not None:
            obuf.align = 64
        wsf = entry_alloca(b, F32, NT * npairs * PW)  # their scales in f32, [pair][c][PW]
        dbuf = entry_alloca(b, F32, NT * MTILE * npairs * PW)  # both scales' products, [pair][t][c][PW]
        dbuf.align = 64

    def fill(b, mc, mend):
        """The scratch for rows [mc, mend) of x (with 512-bit tiles, the blocks of whole groups woven in pairs)."""
        with for_range(b, mc, mend, name="xr", vectorize=False) as m:
            src = b.mul(m, C64(K))
            dst = b.mul(b.sub(m, mc), C64(per_row))
            if wide:
                with for_range(b, 0, full, step=2, name="xw", vectorize=False) as j:
                    at = b.mul(j, C64(BLOCK))
                    two = [b.load(gep8(b, px, b.add(src, b.add(at, C64(BLOCK * a)))), typ=v32i8, align=1)
                           for a in (0, 1)]
                    two = [b.bitcast(b.call(smax, [x, splat8(-127)]), v8i32) for x in two]
                    xw = b.shuffle_vector(two[0], two[1], split if isum else weave)
                    b.store(xw, b.bitcast(vec_at(b, b.add(dst, at)), v16i32.as_pointer()), align=32)
                    if offset:  # -8 x, woven as x is
                        c = b.call(dpbusd16, [ir.Constant(v16i32, None), ir.Constant(v16i32, [0x08080808] * 16), xw])
                        corr_at = b.bitcast(vec_at(b, b.add(b.add(dst, C64(K)), at)), v16i32.as_pointer())
                        b.store(b.sub(ir.Constant(v16i32, None), c), corr_at, align=32)
            with for_range(b, full if wide else 0, NB, name="xb", vectorize=False) as j:
                at = b.mul(j, C64(BLOCK))
                xv = b.call(smax, [b.load(gep8(b, px, b.add(src, at)), typ=v32i8, align=1), splat8(-127)])
                b.store(xv, vec_at(b, b.add(dst, at)), align=32)
                if offset:
                    eights = splat8(8)
                    if p.dot == "vnni":
                        c = b.call(dpbusd, [ir.Constant(v8i32, None), b.bitcast(eights, v8i32), b.bitcast(xv, v8i32)])
                    else:
                        c = b.call(maddubs, [eights, xv])
                    b.store(b.bitcast(b.sub(ir.Constant(c.type, None), c), v32i8),
                            vec_at(b, b.add(b.add(dst, C64(K)), at)), align=32)
            if p.zeros:  # each group's sx * (sum of its clipped codes): the sum exact in i32, one rounding
                with for_range(b, 0, NB, name="xz", vectorize=False) as j:
                    xv = b.call(smax, [b.load(gep8(b, px, b.add(src, b.mul(j, C64(BLOCK)))), typ=v32i8, align=1),
                                       splat8(-127)])
                    if p.halves:
                        sums = [b.call(vsum16, [b.sext(b.shuffle_vector(xv, xv, ir.Constant(
                            ir.VectorType(I32, 16), list(range(16 * h, 16 * h + 16)))), v16i32)]) for h in (0, 1)]
                    else:
                        sums = [b.call(vsum32, [b.sext(xv, v32i32)])]
                    xs = x_scales(b, m, j, 1)
                    for h, sm in enumerate(sums):
                        sxh = b.extract_element(xs, C32(h)) if p.halves else xs
                        at = b.add(b.add(dst, C64(ZOFF)), b.mul(b.add(b.mul(j, C64(p.per)), C64(h)), C64(4)))
                        b.store(b.fmul(b.sitofp(sm, F32), sxh), b.bitcast(gep8(b, scratch8, at), F32.as_pointer()))

    def zeros_term(b, n, m, mc):
        """sum over the groups of weight row n of (sx * x's sums) * zero for row m of x (of the pass at mc): 8
        groups a step into one 8-lane accumulator, then its lanes in order; every tier adds it alike, so every
        row keeps its bits."""
        xrow = b.add(b.mul(b.sub(m, mc), C64(per_row)), C64(ZOFF))
        slot = entry_alloca(b, v8f)
        b.store(ir.Constant(v8f, None), slot)
        with for_range(b, 0, NS, step=8, name="zg", vectorize=False) as g0:
            zeros_step(b, n, g0, xrow, slot)
        return b.call(vsum, [ir.Constant(F32, -0.0), b.load(slot, typ=v8f)])

    def zeros_step(b, n, g0, xrow, slot):
        """Groups g0 .. g0+7 of weight row n into ``slot`` (8 lanes): zero (i8 code * its f32) times x's sum * sx
        (at byte ``xrow`` of the scratch)."""
        codes8 = b.load(b.gep(pzw, [b.add(b.mul(n, C64(NS)), g0)], source_etype=I8), typ=ir.VectorType(I8, 8),
                        align=1)
        d = b.load(b.gep(pzd, [b.add(b.mul(n, C64(NS // p.sub)), b.udiv(g0, C64(p.sub)))], source_etype=F32),
                   typ=F32)
        z = b.fmul(b.sitofp(codes8, v8f), splat(b, d))
        xb = b.load(b.bitcast(gep8(b, scratch8, b.add(xrow, b.mul(g0, C64(4)))), v8f.as_pointer()), typ=v8f,
                    align=4)
        acc = b.load(slot, typ=v8f)
        b.store(b.call(muladd, [z, xb, acc]) if p.fma else b.fadd(b.fmul(z, xb), acc), slot)

    def less_zeros(b, v, n, m, mc, slot=None):
        """A row's sum ``v``, less its zeros' term when w has zeros (``slot``: its 8 lanes, summed already)."""
        if not p.zeros:
            return v
        term = zeros_term(b, n, m, mc) if slot is None else b.call(vsum, [ir.Constant(F32, -0.0),
                                                                            b.load(slot, typ=v8f)])
        return b.fsub(v, term)

    def by_groups(b, G, blocks, name):
        """Blocks 0 .. NB-1 of a row: ``blocks(b, j0, G)`` on whole groups of G, then ``blocks(b, j, 1)``."""
        full = NB - NB % G
        if full:
            with for_range(b, 0, full, step=G, name=name, vectorize=False) as j0:
                blocks(b, j0, G)
        if full < NB:
            with for_range(b, full, NB, name=f"{name}1", vectorize=False) as j:
                blocks(b, j, 1)

    def tile(b, n, m0, mc, T):
        """Rows m0 .. m0+T-1 of x (of the pass starting at row mc) against weight row n."""
        wrow = b.mul(n, C64(p.row_bytes))
        NA = 2 if T == 1 else 1  # accumulators per row of x (a GEMV alternates two)
        slots = [[entry_alloca(b, v8f) for _ in range(NA)] for _ in range(T)]
        for row in slots:
            for s_ in row:
                b.store(ir.Constant(v8f, None), s_)
        ms = [b.add(m0, C64(t)) for t in range(T)]
        xrows = [b.mul(b.sub(m, mc), C64(per_row)) for m in ms]

        def blocks(b, j0, count):
            """Blocks j0 .. j0+count-1 (count 1, or GROUP with the scales as vectors)."""
            if T == 1:  # hints inside the weights, one a cache line (the hardware prefetcher alone lags: -25%)
                here = b.add(wrow, b.mul(j0, C64(p.stride)))
                for line in range(0, count * p.stride, 64):
                    off = b.add(here, C64(PREFETCH + line))
                    off = b.select(b.icmp_signed("<", off, C64(w_bytes)), off, C64(w_bytes - 1))
                    b.call(prefetch, [gep8(b, pw, off), C32(0), C32(3), C32(1)])
            ws = scales(b, n, wrow, j0, count)
            ds = [b.fmul(ws, x_scales(b, ms[t], j0, count)) for t in range(T)]  # both blocks' scales
            accs = [[b.load(s_, typ=v8f) for s_ in row] for row in slots]
            for a in range(count):
                j = b.add(j0, C64(a))
                at = b.mul(j, C64(BLOCK))
                wv = codes(b, wrow, j)
                wabs = b.call(vabs, [wv, ir.Constant(ir.IntType(1), 0)]) if p.dot != "i16" and not direct else None
                for t in range(T):
                    xv = b.load(vec_at(b, b.add(xrows[t], at)), typ=v32i8, align=32)
                    corr = b.bitcast(b.load(vec_at(b, b.add(b.add(xrows[t], C64(K)), at)), typ=v32i8, align=32),
                                     corr_t) if offset else None
                    pf = b.sitofp(dot(b, wv, wabs, xv, corr), v8f)
                    d = lanes(b, ds[t], a)
                    acc = accs[t][a % NA]
                    accs[t][a % NA] = b.call(muladd, [pf, d, acc]) if p.fma else b.fadd(b.fmul(pf, d), acc)
            for row, vals in zip(slots, accs):
                for s_, v in zip(row, vals):
                    b.store(v, s_)

        # several rows of x: 8 vectors of scales a row would not stay in registers
        by_groups(b, GROUP if T == 1 else 1, blocks, "blk")
        for t in range(T):
            acc = b.load(slots[t][0], typ=v8f)
            for s_ in slots[t][1:]:
                acc = b.fadd(acc, b.load(s_, typ=v8f))
            store_epilogue(ctx, b, op, outs[0], py,
                           less_zeros(b, b.call(vsum, [ir.Constant(F32, -0.0), acc]), n, ms[t], mc),
                           b.add(b.mul(ms[t], C64(N)), n))

    def reg_tile(b, n0, C, m0, mc):
        """Rows m0 .. m0+MTILE-1 of x against weight rows n0 .. n0+C-1 with the MTILE x C accumulators in
        registers: each weight block decoded once, each block of x loaded once. Per output the same sums in the
        same order as ``tile(b, n, m0, mc, MTILE)`` (one accumulator, blocks in order), so the same bits."""
        ns = [b.add(n0, C64(c)) for c in range(C)]
        wrows = [b.mul(n, C64(p.row_bytes)) for n in ns]
        ms = [b.add(m0, C64(t)) for t in range(MTILE)]
        xrows = [b.mul(b.sub(m, mc), C64(per_row)) for m in ms]
        slots = [[entry_alloca(b, v8f) for _ in range(C)] for _ in range(MTILE)]
        for row in slots:
            for s_ in row:
                b.store(ir.Constant(v8f, None), s_)
        with for_range(b, 0, NB, name="rblk", vectorize=False) as j:
            at = b.mul(j, C64(BLOCK))
            # the fence keeps ws * xs a vector multiply by xs broadcast from memory (InstCombine would make the
            # product of two splats a scalar multiply and a broadcast: one instruction more per output)
            ws = [b.call(fence, [lanes(b, scales(b, ns[c], wrows[c], j, 1), 0)]) for c in range(C)]
            wv = [codes(b, wrows[c], j) for c in range(C)]
            if direct:
                wops = wv
            elif p.dot == "vnni":  # x + 128 (u8) times w, less 128 w (the weights' block sums, per weight row)
                wops = [b.sub(ir.Constant(v8i32, None), b.call(dpbusd, [ir.Constant(v8i32, None),
                        b.bitcast(splat8(-128), v8i32), b.bitcast(w, v8i32)])) for w in wv]
            else:
                wops = [b.call(vabs, [w, ir.Constant(ir.IntType(1), 0)]) for w in wv]
            accs = [[b.load(s_, typ=v8f) for s_ in row] for row in slots]
            for t in range(MTILE):
                xv = b.load(vec_at(b, b.add(xrows[t], at)), typ=v32i8, align=32)
                xs = lanes(b, x_scales(b, ms[t], j, 1), 0)
                if offset:
                    corr = b.bitcast(b.load(vec_at(b, b.add(b.add(xrows[t], C64(K)), at)), typ=v32i8, align=32),
                                     corr_t)
                elif p.dot == "vnni" and not unsigned:
                    xu = b.bitcast(b.xor(xv, splat8(-128)), v8i32)
                for c in range(C):
                    if direct:
                        s_ = dot(b, wv[c], None, xv, corr if offset else None)
                    elif p.dot == "vnni":
                        s_ = b.call(dpbusd, [wops[c], xu, b.bitcast(wv[c], v8i32)])
                    else:
                        s_ = dot(b, wv[c], wops[c], xv, None)
                    d = b.fmul(ws[c], xs)
                    pf = b.sitofp(s_, v8f)
                    accs[t][c] = b.call(muladd, [pf, d, accs[t][c]]) if p.fma else b.fadd(b.fmul(pf, d), accs[t][c])
            for row, vals in zip(slots, accs):
                for s_, v in zip(row, vals):
                    b.store(v, s_)
        for t in range(MTILE):
            for c in range(C):
                acc = b.call(vsum, [ir.Constant(F32, -0.0), b.load(slots[t][c], typ=v8f)])
                store_epilogue(ctx, b, op, outs[0], py, less_zeros(b, acc, ns[c], ms[t], mc),
                               b.add(b.mul(ms[t], C64(N)), ns[c]))

    def weave_columns(b, n0, C):
        """Weight rows n0 .. n0+C-1 of the whole groups, for every tile of rows of x of the pass: the codes of
        each pair of blocks woven (as ``fill`` weaves x), int8 weights' -128 w sums, the scales in f32."""
        ns = [b.add(n0, C64(c)) for c in range(C)]
        wrows = [b.mul(n, C64(p.row_bytes)) for n in ns]
        with for_range(b, 0, full, step=2, name="wv", vectorize=False) as j:
            q = b.udiv(j, C64(2))
            for c in range(C):
                two = [b.bitcast(codes(b, wrows[c], b.add(j, C64(a))), v8i32) for a in (0, 1)]
                wv = b.shuffle_vector(two[0], two[1], weave)
                at = b.add(b.mul(q, C64(C)), C64(c))
                b.store(b.bitcast(wv, v64i8), b.gep(cbuf, [at], source_etype=v64i8), align=64)
                if obuf is not None:  # x + 128 (u8) times w, less 128 w
                    sums = b.call(dpbusd16, [ir.Constant(v16i32, None), bytes128, wv])
                    b.store(b.sub(ir.Constant(v16i32, None), sums), b.gep(obuf, [at], source_etype=v16i32), align=64)
                two = [scales(b, ns[c], wrows[c], b.add(j, C64(a)), 1) for a in (0, 1)]
                at = b.gep(wsf, [b.add(b.mul(q, C64(PW * C)), C64(PW * c))], source_etype=F32)
                if p.halves:  # [j's first, j + 1's first, j's second, j + 1's second]
                    b.store(b.shuffle_vector(two[0], two[1], ir.Constant(ir.VectorType(I32, 4), [0, 2, 1, 3])),
                            b.bitcast(at, ir.VectorType(F32, 4).as_pointer()), align=4)
                else:
                    for a in (0, 1):
                        b.store(two[a], b.gep(at, [C64(a)], source_etype=F32))

    def wide_tile(b, n0, C, m0, mc, mend):
        """Rows m0 .. m0+MTILE-1 of x (those before mend; the others repeat row mend - 1 and are not stored)
        against weight rows n0 .. n0+C-1 (``weave_columns``'s), in 512-bit vectors: per pair of blocks of the
        whole groups, one dot product of 64 bytes per output, block j's in the even lanes and j + 1's in the odd
        ones, scaled by both blocks' scale products (made for the tile first, in their own loop, so each comes
        to the FMA by a broadcast load) into one accumulator. Its even lanes are the GEMV's first accumulator,
        its odd ones the second; the blocks after the whole groups go into the first, and the two are summed as
        the GEMV sums them: every row of x gets the bits a GEMV of that row gives."""
        ns = [b.add(n0, C64(c)) for c in range(C)]
        wrows = [b.mul(n, C64(p.row_bytes)) for n in ns]
        last = b.sub(mend, C64(1))
        ms = [b.add(m0, C64(t)) for t in range(MTILE)]
        ms = [b.select(b.icmp_signed("<", m, mend), m, last) for m in ms]
        xrows = [b.mul(b.sub(m, mc), C64(per_row)) for m in ms]
        wvec = ir.VectorType(F32, PW * C)
        with for_range(b, 0, full, step=2, name="wd", vectorize=False) as j:  # the scale products
            q = b.udiv(j, C64(2))
            ws = b.load(b.gep(wsf, [b.mul(q, C64(PW * C))], source_etype=F32), typ=wvec, align=4)
            for t in range(MTILE):
                xs = x_scales(b, ms[t], j, 2)  # blocks j and j + 1, once for each of the C weight rows
                pick = ([0, 2, 1, 3] if p.halves else [0, 1]) * C  # in wsf's order
                xs = b.shuffle_vector(xs, ir.Constant(xs.type, None), ir.Constant(ir.VectorType(I32, PW * C), pick))
                at = b.gep(dbuf, [b.mul(b.add(b.mul(q, C64(MTILE)), C64(t)), C64(PW * C))], source_etype=F32)
                b.store(b.fmul(ws, xs), b.bitcast(at, wvec.as_pointer()), align=8)
        slots = [[entry_alloca(b, v16f) for _ in range(C)] for _ in range(MTILE)]
        for row in slots:
            for s_ in row:
                b.store(ir.Constant(v16f, None), s_)
        with for_range(b, 0, full, step=2, name="wblk", vectorize=False) as j:
            q = b.udiv(j, C64(2))
            at = b.mul(j, C64(BLOCK))
            wv = [b.bitcast(b.load(b.gep(cbuf, [b.add(b.mul(q, C64(C)), C64(c))], source_etype=v64i8), typ=v64i8,
                                   align=64), v16i32) for c in range(C)]
            accs = [[b.load(s_, typ=v16f) for s_ in row] for row in slots]
            for t in range(MTILE):
                xv = b.load(vec_at(b, b.add(xrows[t], at)), typ=v16i32, align=32)
                if offset:
                    corr = b.load(vec_at(b, b.add(b.add(xrows[t], C64(K)), at)), typ=v16i32, align=32)
                elif not unsigned:
                    xu = b.xor(xv, bytes128)
                for c in range(C):
                    if direct:
                        s_ = b.call(dpbusd16, [corr if offset else ir.Constant(v16i32, None), wv[c], xv])
                    else:
                        wo = b.load(b.gep(obuf, [b.add(b.mul(q, C64(C)), C64(c))], source_etype=v16i32), typ=v16i32,
                                    align=64)
                        s_ = b.call(dpbusd16, [wo, xu, wv[c]])
                    dat = b.gep(dbuf, [b.mul(b.add(b.mul(b.add(b.mul(q, C64(MTILE)), C64(t)), C64(C)), C64(c)),
                                             C64(PW))], source_etype=F32)
                    if p.halves:  # the pair's four products, 128 bits broadcast
                        dd = b.load(b.bitcast(dat, ir.VectorType(F32, 4).as_pointer()), typ=ir.VectorType(F32, 4),
                                    align=16)
                        d = b.shuffle_vector(dd, ir.Constant(dd.type, None), ir.Constant(v16i32, [0, 1, 2, 3] * 4))
                    else:
                        dd = b.load(b.bitcast(dat, ir.DoubleType().as_pointer()), typ=ir.DoubleType(), align=8)
                        dv = b.insert_element(ir.Constant(ir.VectorType(ir.DoubleType(), 8), None), dd, C32(0))
                        dv = b.shuffle_vector(dv, ir.Constant(dv.type, None), ir.Constant(v8i32, [0] * 8))
                        d = b.bitcast(dv, v16f)
                    pf = b.sitofp(s_, v16f)
                    accs[t][c] = b.call(muladd16, [pf, d, accs[t][c]]) if p.fma else b.fadd(b.fmul(pf, d), accs[t][c])
            for row, vals in zip(slots, accs):
                for s_, v in zip(row, vals):
                    b.store(v, s_)
        halves = [[entry_alloca(b, v8f) for _ in range(C)] for _ in range(MTILE)]  # the GEMV's first accumulators
        for t in range(MTILE):
            for c in range(C):
                acc = b.load(slots[t][c], typ=v16f)
                b.store(b.shuffle_vector(acc, ir.Constant(v16f, None), evens), halves[t][c])
        if full < NB:  # the blocks after the whole groups, one at a time into the first accumulators
            with for_range(b, full, NB, name="wblk1", vectorize=False) as j:
                at = b.mul(j, C64(BLOCK))
                for c in range(C):
                    wv1 = codes(b, wrows[c], j)
                    wabs = b.call(vabs, [wv1, ir.Constant(ir.IntType(1), 0)]) if not direct else None
                    wsc = w_scale_splat(b, ns[c], wrows[c], j)
                    for t in range(MTILE):
                        xv = b.load(vec_at(b, b.add(xrows[t], at)), typ=v32i8, align=32)
                        corr = b.bitcast(b.load(vec_at(b, b.add(b.add(xrows[t], C64(K)), at)), typ=v32i8,
                                                align=32), corr_t) if offset else None
                        pf = b.sitofp(dot(b, wv1, wabs, xv, corr), v8f)
                        d = b.fmul(wsc, lanes(b, x_scales(b, ms[t], j, 1), 0))
                        lo = b.load(halves[t][c], typ=v8f)
                        b.store(b.call(muladd, [pf, d, lo]) if p.fma else b.fadd(b.fmul(pf, d), lo), halves[t][c])
        for t in range(MTILE):
            m = b.add(m0, C64(t))
            with b.if_then(b.icmp_signed("<", m, mend)):
                for c in range(C):
                    hi = b.shuffle_vector(b.load(slots[t][c], typ=v16f), ir.Constant(v16f, None), odds)
                    two = b.fadd(b.load(halves[t][c], typ=v8f), hi)
                    store_epilogue(ctx, b, op, outs[0], py,
                                   less_zeros(b, b.call(vsum, [ir.Constant(F32, -0.0), two]), ns[c], m, mc),
                                   b.add(b.mul(m, C64(N)), ns[c]))

    if isum:
        if p.gfni:
            affine16 = ctx.declare("llvm.x86.vgf2p8affineqb.512", v64i8, [v64i8, v64i8, I8])
        pack16 = ctx.declare("llvm.x86.avx512.packssdw.512", ir.VectorType(I16, 32), [v16i32, v16i32])
        dpwssd16 = ctx.declare("llvm.x86.avx512.vpdpwssd.512", v16i32, [v16i32, v16i32, v16i32])
        nquads, NSB = full // 4, full // GROUP
        sbuf = entry_alloca(b, v16i16, NT * nquads)  # the sub-scales as vpdpwssd's words (a 256-bit half), [quad][c]
        sbuf.align = 32
        # ``split``: a pair of blocks j, j + 1 in 16-byte pieces [j's codes 0-15, j + 1's 0-15, j's 16-31, j + 1's
        # 16-31] (x's so in the scratch, weights so from one 32-byte broadcast load); each piece's dot products are
        # one block's four dwords. vpackssdw of two pairs' dwords (blocks 4q, 4q + 1 and 4q + 2, 4q + 3) puts in
        # each 128-bit lane L the words of block 4q + L % 2 then of 4q + 2 + L % 2: QUAD_WORDS gives their scales
        split = ir.Constant(v16i32, [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15])
        QUAD_WORDS = [0] * 4 + [2] * 4 + [1] * 4 + [3] * 4
        ddbuf = entry_alloca(b, F32, NT * MT * NSB)  # d * x's scale, [super-block][t][c]

    def quad_words(b, n, j, count):
        """The i8 sub-scales of blocks j .. j+3 of weight row n as the words vpdpwssd multiplies two packed pairs
        by: QUAD_WORDS (a 256-bit half, count 16) or it twice (count 32)."""
        four = b.load(b.gep(psw, [scale_index(b, n, j)], source_etype=I8), typ=ir.VectorType(I8, 4), align=1)
        return b.shuffle_vector(b.sext(four, ir.VectorType(I16, 4)), ir.Constant(ir.VectorType(I16, 4), None),
                                ir.Constant(ir.VectorType(I32, count), QUAD_WORDS * (count // 16)))

    def sum16(b, v):
        """An output's 16 lanes summed as a tree (halves added, then their halves...): four dependent adds where
        an ordered sum takes fifteen, the same order in every tile and the GEMV."""
        width = 16
        while width > 1:
            width //= 2
            picks = [ir.Constant(ir.VectorType(I32, width), list(range(h * width, h * width + width))) for h in (0, 1)]
            halves = [b.shuffle_vector(v, ir.Constant(v.type, None), pick) for pick in picks]
            v = b.fadd(halves[0], halves[1])
        return b.extract_element(v, C32(0))

    def quad_sum(b, iacc, wv, xv, corr, words):
        """``iacc`` (int32 lanes) plus a quad of blocks: the two pairs' dot products (``wv``, ``xv``: 64-byte pairs
        in ``split``'s order; ``corr``: their accumulators' start, -8 x for offset nibbles) packed to words and
        multiplied by the sub-scales' words (vpdpwssd). The tiles and the GEMV both take it: the same lanes."""
        pq = [b.call(dpbusd16, [corr[h], wv[h], xv[h]]) for h in (0, 1)]
        return b.call(dpwssd16, [iacc, b.bitcast(b.call(pack16, pq), v16i32), words])

    def superblock_into(b, slot, iacc, dd):
        """A super-block's int32 lanes into the output's f32 accumulator at ``slot``: one conversion and one FMA by
        ``dd`` (d * x's scale), the same in the tiles and the GEMV."""
        ddv = b.shuffle_vector(b.insert_element(ir.Constant(v16f, None), dd, C32(0)), ir.Constant(v16f, None),
                               ir.Constant(v16i32, [0] * 16))
        acc = b.load(slot, typ=v16f)
        pf = b.sitofp(iacc, v16f)
        b.store(b.call(muladd16, [pf, ddv, acc]) if p.fma else b.fadd(b.fmul(pf, ddv), acc), slot)

    def weave_columns_int(b, n0, C):
        """Weight rows n0 .. n0+C-1 for every tile of rows of x of the pass: each pair of blocks' codes in
        ``split``'s order, and each quad of blocks' four i8 sub-scales as the words vpdpwssd takes for two pairs
        packed (``quad_words``)."""
        ns = [b.add(n0, C64(c)) for c in range(C)]
        wrows = [b.mul(n, C64(p.row_bytes)) for n in ns]
        with for_range(b, 0, full, step=2, name="wv", vectorize=False) as j:
            q = b.udiv(j, C64(2))
            for c in range(C):
                b.store(b.bitcast(pair_codes(b, wrows[c], j), v64i8),
                        b.gep(cbuf, [b.add(b.mul(q, C64(C)), C64(c))], source_etype=v64i8), align=64)
        with for_range(b, 0, nquads, name="wq", vectorize=False) as q:
            for c in range(C):
                words = quad_words(b, ns[c], b.mul(q, C64(4)), 16)
                b.store(words, b.gep(sbuf, [b.add(b.mul(q, C64(C)), C64(c))], source_etype=v16i16), align=32)

    def wide_tile_int(b, n0, C, m0, mc, mend):
        """Rows m0 .. m0+MT-1 of x (those before mend; the others repeat row mend - 1 and are not stored) against
        weight rows n0 .. n0+C-1 (``weave_columns_int``'s), a super-block at a time: per quad of blocks, two 64-byte
        dot products an output (a pair of blocks each, in ``split``'s order), packed to words and multiplied
        by the four sub-scales into the output's int32 lanes; per super-block the lanes become f32 and take one
        FMA by d * x's scale (made for the tile first); per output its 16 lanes summed as a tree. Exact integers
        up to the super-block, so an output's bits are the same whatever the tile (a GEMV's one row included)."""
        ns = [b.add(n0, C64(c)) for c in range(C)]
        last = b.sub(mend, C64(1))
        ms = [b.add(m0, C64(t)) for t in range(MT)]
        ms = [b.select(b.icmp_signed("<", m, mend), m, last) for m in ms]
        xrows = [b.mul(b.sub(m, mc), C64(per_row)) for m in ms]
        with for_range(b, 0, NSB, name="wd", vectorize=False) as sb:  # d * x's scale, per super-block
            xs = [x_scales(b, ms[t], b.mul(sb, C64(GROUP)), 1) for t in range(MT)]
            for c in range(C):
                d = b.load(b.gep(psd, [b.add(b.mul(ns[c], C64(NB // GROUP)), sb)], source_etype=F32), typ=F32)
                for t in range(MT):
                    at = b.add(b.mul(b.add(b.mul(sb, C64(MT)), C64(t)), C64(C)), C64(c))
                    b.store(b.fmul(d, xs[t]), b.gep(ddbuf, [at], source_etype=F32))
        slots = [[entry_alloca(b, v16f) for _ in range(C)] for _ in range(MT)]
        for row in slots:
            for s_ in row:
                b.store(ir.Constant(v16f, None), s_)
        with for_range(b, 0, NSB, name="wsb", vectorize=False) as sb:
            iacc = [[ir.Constant(v16i32, None) for _ in range(C)] for _ in range(MT)]
            for qd in range(GROUP // 4):
                q = b.add(b.mul(sb, C64(GROUP // 4)), C64(qd))  # quad q: pairs 2q and 2q + 1
                wv = [[b.bitcast(b.load(b.gep(cbuf, [b.add(b.mul(b.add(b.mul(q, C64(2)), C64(h)), C64(C)), C64(c))],
                                              source_etype=v64i8), typ=v64i8, align=64), v16i32) for h in (0, 1)]
                      for c in range(C)]
                sc = []
                for c in range(C):
                    w16 = b.load(b.gep(sbuf, [b.add(b.mul(q, C64(C)), C64(c))], source_etype=v16i16), typ=v16i16,
                                 align=32)
                    sc.append(b.bitcast(b.shuffle_vector(w16, ir.Constant(v16i16, None),
                                                         ir.Constant(ir.VectorType(I32, 32), list(range(16)) * 2)),
                                        v16i32))
                for t in range(MT):
                    xv, corr = [], []
                    for h in (0, 1):
                        at = b.mul(b.add(b.mul(q, C64(4)), C64(2 * h)), C64(BLOCK))
                        xv.append(b.load(vec_at(b, b.add(xrows[t], at)), typ=v16i32, align=32))
                        corr.append(b.load(vec_at(b, b.add(b.add(xrows[t], C64(K)), at)), typ=v16i32, align=32)
                                    if offset else ir.Constant(v16i32, None))
                    for c in range(C):
                        iacc[t][c] = quad_sum(b, iacc[t][c], wv[c], xv, corr, sc[c])
            for t in range(MT):
                for c in range(C):
                    at = b.add(b.mul(b.add(b.mul(sb, C64(MT)), C64(t)), C64(C)), C64(c))
                    superblock_into(b, slots[t][c], iacc[t][c], b.load(b.gep(ddbuf, [at], source_etype=F32), typ=F32))
        for t in range(MT):
            m = b.add(m0, C64(t))
            with b.if_then(b.icmp_signed("<", m, mend)):
                for c in range(C):
                    v = sum16(b, b.load(slots[t][c], typ=v16f))
                    store_epilogue(ctx, b, op, outs[0], py, less_zeros(b, v, ns[c], m, mc),
                                   b.add(b.mul(m, C64(N)), ns[c]))

    gemv_rows = GEMV_ROWS if p.nibbles and GEMV_ROWS * p.row_bytes <= GEMV_SPAN else GEMV_ROWS_I8

    def hint_rows(b, wrows, j0, count, ahead, locality):
        """Prefetch hints, a cache line each, ``ahead`` bytes past blocks j0 .. j0+count-1 of each weight row at
        the byte offsets ``wrows`` (clamped to the weights' last byte)."""
        for wrow in wrows:
            here = b.add(wrow, b.mul(j0, C64(p.stride)))
            for line in range(0, count * p.stride, 64):
                off = b.add(here, C64(ahead + line))
                off = b.select(b.icmp_signed("<", off, C64(w_bytes)), off, C64(w_bytes - 1))
                b.call(prefetch, [gep8(b, pw, off), C32(0), C32(locality), C32(1)])

    def pair_codes(b, wrow, j):
        """Blocks j and j + 1 of the weight row at byte offset ``wrow`` in ``split``'s order (16-byte pieces: j's
        codes 0-15, j + 1's 0-15, j's 16-31, j + 1's 16-31): the 32 packed bytes in both halves (one broadcast
        load), the upper half shifted right by 4, the nibbles masked (with GFNI: one affine map, a matrix a half)."""
        packed = b.load(gep8(b, pw, b.add(b.add(wrow, b.mul(j, C64(p.stride))), C64(p.codes_at))), typ=v8i32, align=1)
        both = b.shuffle_vector(packed, ir.Constant(v8i32, None), ir.Constant(v16i32, list(range(8)) * 2))
        if p.gfni:
            rows = [[0, 0, 0, 0, 8, 4, 2, 1], [0, 0, 0, 0, 128, 64, 32, 16]]
            wv = b.call(affine16, [b.bitcast(both, v64i8), ir.Constant(v64i8, rows[0] * 4 + rows[1] * 4),
                                   ir.Constant(I8, p.nib_xor & 15)])
            return b.bitcast(wv, v16i32)
        wv = b.and_(b.lshr(both, ir.Constant(v16i32, [0] * 8 + [4] * 8)), ir.Constant(v16i32, [0x0F0F0F0F] * 16))
        if p.nib_xor:
            lo, hi = (p.nib_xor & 15) * 0x01010101, (p.nib_xor >> 4) * 0x01010101
            wv = b.xor(wv, ir.Constant(v16i32, [lo] * 8 + [hi] * 8))
        return wv

    def gemv_int(b, n0, C):
        """The one row of x against weight rows n0 .. n0+C-1 with ``wide_tile_int``'s arithmetic (the same int32
        lanes per super-block, one FMA by d * x's scale, the 16 lanes summed as a tree: a prefill row's bits),
        each pair of weight blocks decoded where it is read; hints GEMV_PREFETCH bytes ahead, into L2."""
        ns = [b.add(n0, C64(c)) for c in range(C)]
        wrows = [b.mul(n, C64(p.row_bytes)) for n in ns]
        ahead = gemv_rows * p.row_bytes * -(-GEMV_PREFETCH // (gemv_rows * p.row_bytes))
        slots = [entry_alloca(b, v16f) for _ in range(C)]
        for s_ in slots:
            b.store(ir.Constant(v16f, None), s_)
        with for_range(b, 0, NSB, name="gsb", vectorize=False) as sb:
            j0 = b.mul(sb, C64(GROUP))
            hint_rows(b, wrows, j0, GROUP, ahead, GEMV_LOCALITY)
            iacc = [ir.Constant(v16i32, None) for _ in range(C)]
            for qd in range(GROUP // 4):
                j = b.add(j0, C64(4 * qd))
                xv, corr = [], []
                for h in (0, 1):
                    at = b.mul(b.add(j, C64(2 * h)), C64(BLOCK))
                    xv.append(b.load(vec_at(b, at), typ=v16i32, align=32))
                    corr.append(b.load(vec_at(b, b.add(C64(K), at)), typ=v16i32, align=32) if offset
                                else ir.Constant(v16i32, None))
                for c in range(C):
                    wv = [pair_codes(b, wrows[c], b.add(j, C64(2 * h))) for h in (0, 1)]
                    iacc[c] = quad_sum(b, iacc[c], wv, xv, corr, b.bitcast(quad_words(b, ns[c], j, 32), v16i32))
            xs = x_scales(b, C64(0), j0, 1)
            for c in range(C):
                d = b.load(b.gep(psd, [b.add(b.mul(ns[c], C64(NB // GROUP)), sb)], source_etype=F32), typ=F32)
                superblock_into(b, slots[c], iacc[c], b.fmul(d, xs))
        for c in range(C):
            v = sum16(b, b.load(slots[c], typ=v16f))
            store_epilogue(ctx, b, op, outs[0], py, less_zeros(b, v, ns[c], C64(0), C64(0)), ns[c])

    def w_scale_splat(b, n, wrow, j):
        """Block j's weight scale in 8 lanes: f16 broadcast as stored and converted as a vector (one broadcast load
        and one vcvtph2ps), else converted and broadcast."""
        if (p.inline_scale or p.sw).name != "f16" or not p.f16c or p.halves:
            return lanes(b, scales(b, n, wrow, j, 1), 0)
        if p.inline_scale is not None:
            at = gep8(b, pw, b.add(b.add(wrow, b.mul(j, C64(p.stride))), C64(p.scale_at)))
        else:
            at = b.gep(psw, [b.add(b.mul(n, C64(NB)), j)], source_etype=I16)
        raw = b.insert_element(ir.Constant(v8i16, None), b.load(at, typ=I16, align=1), C32(0))
        raw = b.shuffle_vector(raw, ir.Constant(v8i16, None), ir.Constant(v8i32, [0] * 8))
        return b.call(fence, [b.fpext(b.bitcast(raw, ir.VectorType(ir.HalfType(), 8)), v8f)])

    # A GEMV's inline f16 weight scales (Q4_0's), with AVX-512 BW: before a row's loop, the products of both
    # scales for its whole groups, 8 blocks a step: the group's first 128 bytes (inside its 8 blocks) in two
    # loads, one word permute (vpermt2w) picks the 8 scales, one conversion and one multiply by x's 8 scales;
    # the loop then takes each product as the FMA's broadcast operand. Per block a vpbroadcastw, a vcvtph2ps and
    # a vmulps less (Zen 4, Q4_0 in cache, 1 thread: 1 x 6912 x 2560 477 -> 440 us, 2560 x 2560 184 -> 170 us;
    # the same products, so the same bits)
    gather_scales = (p.inline_scale is not None and p.inline_scale.name == "f16" and p.f16c and R == 1
                     and "avx512bw" in ctx.target.features() and p.stride % 2 == 0 and p.scale_at % 2 == 0
                     and p.scale_at + (GROUP - 1) * p.stride < 128 <= GROUP * p.stride and 4 * full <= 16 << 10)
    # Scales apart from the codes (Q4_K's, Q5_K's: one a block), the same: each product of the row's whole groups
    # made first, 8 a step (with w's zeros' term, 8 groups a step as ``zeros_term`` takes it), then taken by the
    # FMA as a broadcast load, not picked from a vector by a permute per block (Zen 4, Q4_K 1 x 6912 x 2560 in
    # cache, 1 thread, in turns: 0.45 -> 0.39 ms; compiled for cpu:avx2, 0.53 -> 0.48 ms)
    apart_first = p.inline_scale is None and not p.halves and R == 1 and 4 * full * gemv_rows <= 16 << 10
    products_first = gather_scales or apart_first
    if products_first:
        dsbuf = entry_alloca(b, F32, gemv_rows * full)  # [c][j]: row c of the step, block j
        dsbuf.align = 32

    def ds_at(b, c, j):
        return b.gep(dsbuf, [b.add(b.mul(C64(c), C64(full)), j)], source_etype=F32)

    def group_scales(b, wrow, j0):
        """The f32 scales of blocks j0 .. j0+GROUP-1 of the weight row at byte offset ``wrow`` (inline f16)."""
        start = b.add(wrow, b.mul(j0, C64(p.stride)))
        two = [b.load(gep8(b, pw, b.add(start, C64(64 * v))), typ=v32i16, align=1) for v in (0, 1)]
        words = [(p.scale_at + a * p.stride) // 2 for a in range(GROUP)]
        raw = b.shuffle_vector(two[0], two[1], ir.Constant(v8i32, words))
        return b.fpext(b.bitcast(raw, ir.VectorType(ir.HalfType(), GROUP)), v8f)

    def gemv(b, n0, C):
        """The one row of x against weight rows n0 .. n0+C-1 (a GEMV): each block of x (and its offset's
        products, its scale) loaded once for the C rows. Per output the sums and order of ``tile(b, n, 0, 0, 1)``
        (blocks 8 at a time into two alternating accumulators, the rest into the first), so the same bits."""
        ns = [b.add(n0, C64(c)) for c in range(C)]
        wrows = [b.mul(n, C64(p.row_bytes)) for n in ns]
        slots = [[entry_alloca(b, v8f) for _ in range(2)] for _ in range(C)]
        for row in slots:
            for s_ in row:
                b.store(ir.Constant(v8f, None), s_)
        # nibbles: hints GEMV_PREFETCH bytes ahead into L2; int8 weights (half the work per byte): PREFETCH ahead
        # into L1 (Zen 4, Q8_0 1 x 65536 x 2560 from DRAM, A/B in turns: 27.2-28.7 GB/s at 1 thread and 32.4-36.8
        # at 2, against 25.3-28.8 and 32.2-32.7 into L2 8 KB ahead)
        distance, locality = (GEMV_PREFETCH, GEMV_LOCALITY) if p.nibbles else (PREFETCH, 3)
        ahead = gemv_rows * p.row_bytes * -(-distance // (gemv_rows * p.row_bytes))  # whole row groups ahead

        def blocks(b, j0, count):
            if count > 1:  # hints whole row groups ahead: what the loop reads ``distance`` bytes on
                hint_rows(b, wrows, j0, count, ahead, locality)
            accs = [[b.load(s_, typ=v8f) for s_ in row] for row in slots]
            # scales beside the codes (contiguous per row): both as vectors of 8, one multiply, lanes broadcast
            ds = None
            if p.inline_scale is None and count > 1 and not products_first:
                xs8 = x_scales(b, C64(0), j0, count)
                ds = [b.fmul(scales(b, ns[c], wrows[c], j0, count), xs8) for c in range(C)]
            for a in range(count):
                j = b.add(j0, C64(a))
                at = b.mul(j, C64(BLOCK))
                xv = b.load(vec_at(b, at), typ=v32i8, align=32)
                corr = b.bitcast(b.load(vec_at(b, b.add(C64(K), at)), typ=v32i8, align=32), corr_t) if offset else None
                xsv = lanes(b, x_scales(b, C64(0), j, 1), 0) if ds is None and not (count > 1 and products_first) \
                    else None
                for c in range(C):
                    wv = codes(b, wrows[c], j)
                    wabs = b.call(vabs, [wv, ir.Constant(ir.IntType(1), 0)]) if p.dot != "i16" and not direct else None
                    pf = b.sitofp(dot(b, wv, wabs, xv, corr), v8f)
                    if count > 1 and products_first:  # the product made before the row's loop, a broadcast load
                        d = splat(b, b.load(ds_at(b, c, j)))
                    elif ds is None:
                        d = b.fmul(w_scale_splat(b, ns[c], wrows[c], j), xsv)
                    else:
                        d = lanes(b, ds[c], a)
                    acc = accs[c][a % 2]
                    accs[c][a % 2] = b.call(muladd, [pf, d, acc]) if p.fma else b.fadd(b.fmul(pf, d), acc)
            for row, vals in zip(slots, accs):
                for s_, v in zip(row, vals):
                    b.store(v, s_)

        zslots = [None] * C  # with zeros and the products first, their term in the same loop (full == NB then)
        if products_first and p.zeros:
            zslots = [entry_alloca(b, v8f) for _ in range(C)]
            for z_ in zslots:
                b.store(ir.Constant(v8f, None), z_)
        if products_first and full:  # both scales' products of the whole groups, 8 blocks a step, first
            with for_range(b, 0, full, step=GROUP, name="gds", vectorize=False) as j0:
                xs8 = x_scales(b, C64(0), j0, GROUP)
                for c in range(C):
                    ws8 = group_scales(b, wrows[c], j0) if gather_scales else scales(b, ns[c], wrows[c], j0, GROUP)
                    b.store(b.fmul(ws8, xs8), b.bitcast(ds_at(b, c, j0), v8f.as_pointer()), align=4)
                    if zslots[c] is not None:
                        zeros_step(b, ns[c], j0, C64(ZOFF), zslots[c])
        by_groups(b, GROUP, blocks, "gblk")
        for c in range(C):
            acc = b.fadd(b.load(slots[c][0], typ=v8f), b.load(slots[c][1], typ=v8f))
            store_epilogue(ctx, b, op, outs[0], py, less_zeros(b, b.call(vsum, [ir.Constant(F32, -0.0), acc]), ns[c],
                                                               C64(0), C64(0), zslots[c]), ns[c])

    if R == 1:
        fill(b, C64(0), C64(1))
        in_tiles(b, begin, end, gemv_rows, gemv_int if isum else gemv, name="n")
    elif not wide and (p.dot == "i16" or CH < MTILE):
        passes_over_weights(b, R, CH, begin, end, min(MTILE, CH) if CH > 1 else 1, fill, tile)
    else:
        def cols(b, n0, C, mc, mend):
            if isum:
                weave_columns_int(b, n0, C)
                with for_range(b, mc, mend, step=MT, name="m", vectorize=False) as m0:
                    wide_tile_int(b, n0, C, m0, mc, mend)
                return
            if wide:
                weave_columns(b, n0, C)
                with for_range(b, mc, mend, step=MTILE, name="m", vectorize=False) as m0:
                    wide_tile(b, n0, C, m0, mc, mend)
                return

            def rows(b, m0, T):
                if T == MTILE:
                    reg_tile(b, n0, C, m0, mc)
                else:
                    for c in range(C):
                        tile(b, b.add(n0, C64(c)), m0, mc, T)
            in_tiles(b, mc, mend, MTILE, rows, name="m")

        with for_range(b, 0, R, step=CH, name="mc", vectorize=False) as mc:
            mend = b.select(b.icmp_signed("<", b.add(mc, C64(CH)), C64(R)), b.add(mc, C64(CH)), C64(R))
            fill(b, mc, mend)
            in_tiles(b, begin, end, NT, lambda b, n0, C: cols(b, n0, C, mc, mend), name="n")
    b.ret_void()
    return KernelSpec(fn, N, 1)


# -- the generic kernel --------------------------------------------------------------------------------------

def _lower_generic(ctx, op, ins, outs):
    """Work item = weight row n: for every row of x, sum_k (max(x, -127) * sx) * (w * sw) in f32, each factor
    dequantized exactly as the reference does."""
    x, sx, w = ins[0], ins[1], ins[2]
    g = OPS[op.kind].full_attrs(op.attr)["group"]
    R, K, N = math.prod(x.shape[:-1]), x.shape[-1], w.shape[0]
    nb = -(-K // g)
    fn, b, ptrs, begin, end = ctx.kernel(f"qmatmul_q8_{op.name}", len(ins) + 1)
    px, psx, pw = ptrs[0], ptrs[1], ptrs[2]
    psw = ptrs[3] if len(ins) > 3 else None
    sg = OPS[op.kind].full_attrs(op.attr)["scale_group"]
    psd = ptrs[4] if sg else None
    py = ptrs[-1]
    dec = Decoder(ctx, w) if w.layout is not None else None
    row_bytes = w.storage_shape[-1]
    fma = ctx.declare("llvm.fma.f32", F32, [F32, F32, F32])
    sx_t, sw_t = storage_type(sx.dtype), storage_type(ins[3].dtype) if psw is not None else None
    xg = g * sg if x_scale_per_superblock(ins, OPS[op.kind].full_attrs(op.attr)) else g  # x's scale per xg
    nxs = -(-K // xg)
    with for_range(b, begin, end, name="n", vectorize=False) as n:
        wrow = gep8(b, pw, b.mul(n, C64(row_bytes)))
        with for_range(b, 0, R, name="m", vectorize=False) as m:
            acc = entry_alloca(b, F32)
            b.store(ir.Constant(F32, 0.0), acc)
            with for_range(b, 0, K, name="k", vectorize=False) as k:
                blk = b.udiv(k, C64(g))
                xc = int_value(b, b.gep(px, [b.add(b.mul(m, C64(K)), k)], source_etype=I8), x.dtype)
                xc = b.select(b.icmp_signed("<", xc, C32(-127)), C32(-127), xc)
                xs = to_f32(b, b.load(b.gep(psx, [b.add(b.mul(m, C64(nxs)), b.udiv(k, C64(xg)))], source_etype=sx_t),
                                      typ=sx_t), sx.dtype)
                xv = b.fmul(b.sitofp(xc, F32), xs)
                if dec is not None:
                    wv = dec.f32_value(b, dec.code(b, wrow, k))
                else:
                    wv = b.sitofp(int_value(b, b.gep(wrow, [k], source_etype=storage_type(w.dtype)), w.dtype), F32)
                if dec is not None and dec.scaled:
                    ws = dec.block_scale(b, wrow, k, 0)
                elif sg:  # an i8 sub-scale times its f32 scale, as the reference's dequant
                    code = b.load(b.gep(psw, [b.add(b.mul(n, C64(nb)), blk)], source_etype=I8), typ=I8)
                    nd = -(-nb // sg)
                    d = b.load(b.gep(psd, [b.add(b.mul(n, C64(nd)), b.udiv(blk, C64(sg)))], source_etype=F32),
                               typ=F32)
                    ws = b.fmul(b.sitofp(code, F32), d)
                else:
                    ws = to_f32(b, b.load(b.gep(psw, [b.add(b.mul(n, C64(nb)), blk)], source_etype=sw_t), typ=sw_t),
                                ins[3].dtype)
                b.store(b.call(fma, [xv, b.fmul(wv, ws), b.load(acc, typ=F32)]), acc)
            if len(ins) == 7:  # less sum_j (sx_j * x's code sum_j) * (zw_j * zd): w's zeros' term
                pzw, pzd = ptrs[5], ptrs[6]
                with for_range(b, 0, nb, name="zj", vectorize=False) as j:
                    bsum = entry_alloca(b, I32)
                    b.store(C32(0), bsum)
                    with for_range(b, b.mul(j, C64(g)), b.mul(b.add(j, C64(1)), C64(g)), name="zk",
                                   vectorize=False) as k:
                        xc = int_value(b, b.gep(px, [b.add(b.mul(m, C64(K)), k)], source_etype=I8), x.dtype)
                        xc = b.select(b.icmp_signed("<", xc, C32(-127)), C32(-127), xc)
                        b.store(b.add(b.load(bsum, typ=I32), xc), bsum)
                    xs = to_f32(b, b.load(b.gep(psx, [b.add(b.mul(m, C64(nxs)), b.udiv(b.mul(j, C64(g)), C64(xg)))],
                                                source_etype=sx_t), typ=sx_t), sx.dtype)
                    code = b.load(b.gep(pzw, [b.add(b.mul(n, C64(nb)), j)], source_etype=I8), typ=I8)
                    d = b.load(b.gep(pzd, [b.add(b.mul(n, C64(-(-nb // sg))), b.udiv(j, C64(sg)))], source_etype=F32),
                               typ=F32)
                    zt = b.fmul(b.fmul(b.sitofp(b.load(bsum, typ=I32), F32), xs), b.fmul(b.sitofp(code, F32), d))
                    b.store(b.fsub(b.load(acc, typ=F32), zt), acc)
            store_epilogue(ctx, b, op, outs[0], py, b.load(acc, typ=F32), b.add(b.mul(m, C64(N)), n))
    b.ret_void()
    return KernelSpec(fn, N, 1)


__all__ = ["Q8Plan", "lower_qmatmul_q8", "plan"]
