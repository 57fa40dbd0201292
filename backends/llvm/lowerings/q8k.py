"""Lowering: ``qmatmul_q8`` over ternary weights in crumb blocks with one scale per block, llama.cpp's TQ2_0 dot
product with Q8_K activations (int8 codes, one f32 scale per 256).

Taken where ``qmatmul_q8``'s weights are ternary in ``crumb{B}`` (B a multiple of 32: 4B codes a block, as TQ2_0's
256 in 64 bytes for ``crumb64``), with their scales inside the blocks (``crumb64+f16``) or beside them, and the
op's group is the block (K a whole number of blocks). ``q8dot.lower_qmatmul_q8`` hands such ops here.

Work item = one weight row n. Each thread first copies the rows of x of a pass to a scratch, clipped to -127 (the
op's definition; absmax codes never hold -128), with the sum of each block's codes beside them. Per block of
4B codes, per 32 of them, the codes (0, 1, 2 for -1, 0, +1: crumb j of byte i is bits 6 - 2j of it) are
multiplied unsigned by x and summed exactly into 8 int32 lanes (``vpdpbusd`` with VNNI, ``vpmaddubsw`` +
``vpmaddwd`` on AVX2, i16 products elsewhere); the block's lanes become f32 once and are multiplied by both
scales into f32 accumulators, and the code offset (the value is the code - 1) is taken off once per block as
x's block sum times both scales. Rows of x are taken 4 at a time against each decoded block.

Only the summation order differs from the reference's (integers exactly, then one product per block), so the
results agree to float rounding (tests/test_llvm_q8dot.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llvmlite import ir

from ladder.backends.llvm.codegen import F32, I8, I16, I32, I64, KernelSpec, for_range, storage_type, to_f32
from ladder.ops import OPS
from ladder.ops.lowbit import block_scales
from ladder.types import DType

from .matmul import C32, C64, PREFETCH, _entry_alloca, _gep8

SUB = 32  # codes per integer dot product step: one 256-bit vector of int8
MCHUNK = 64  # rows of x per pass over the weight rows, at most
SCRATCH = 128 << 10  # bytes of stack for a pass's rows of x
MTILE = 4  # rows of x sharing one decoded block


@dataclass(frozen=True)
class CrumbPlan:
    rows: int  # rows of x (batch dims flattened)
    k: int
    n: int
    group: int  # codes per block (one scale each)
    nblocks: int
    quarter: int  # bytes of a block: each byte holds one crumb of each quarter of the block
    row_bytes: int
    stride: int  # bytes from one block to the next
    codes_at: int  # bytes from a block's start to its codes
    inline_scale: DType | None
    sw: DType | None
    sx: DType
    dot: str  # "vnni", "madd" or "i16"
    f16c: bool


def plan(ctx, op, ins) -> CrumbPlan | None:
    """The kernel's plan, or None when the op is not ternary crumb blocks this kernel takes."""
    x, sx, w = ins[0], ins[1], ins[2]
    if w.layout is None or w.dtype.kind != "ternary":
        return None
    g = OPS[op.kind].full_attrs(op.attr)["group"]
    p = w.packing
    inline = block_scales(w)
    base = p.base if inline else p
    if not base.name.startswith("crumb") or base.name == "crumb" or base.planes:
        return None
    quarter = base.block_bytes
    k, n = x.shape[-1], w.shape[0]
    if g != base.block or quarter % SUB or k == 0 or k % g or k + 4 * (k // g) > SCRATCH:
        return None
    if inline and (p.zero or p.header_bytes != storage_type(p.scale).width // 8):
        return None  # only a scale in front of each block's codes
    t = ctx.target
    madd = t.supports("i8-madd")
    feats = t.features()
    return CrumbPlan(rows=math.prod(x.shape[:-1]), k=k, n=n, group=g, nblocks=k // g, quarter=quarter,
                     row_bytes=w.storage_shape[-1], stride=(p.header_bytes if inline else 0) + quarter,
                     codes_at=p.header_bytes if inline else 0, inline_scale=p.scale if inline else None,
                     sw=None if inline else ins[3].dtype, sx=sx.dtype,
                     dot="vnni" if madd and t.supports("i8-dot") else ("madd" if madd else "i16"),
                     f16c="f16c" in feats or "avx512f" in feats)


def _scale_f32(b, v, dt: DType, f16c: bool):
    if dt.name == "f16" and f16c:
        return b.fpext(b.bitcast(v, ir.HalfType()), F32)
    return to_f32(b, v, dt)


def lower(ctx, op, ins, outs, p: CrumbPlan, store_out):
    """The kernel; ``store_out(ctx, b, op, out, py, value, index)`` stores one result (with the epilogue)."""
    fn, b, ptrs, begin, end = ctx.kernel(f"qmatmul_q8k_{op.name}", len(ins) + 1)
    px, psx, pw = ptrs[0], ptrs[1], ptrs[2]
    psw = ptrs[3] if p.sw is not None else None
    py = ptrs[-1]
    R, K, N, NB, G, Q = p.rows, p.k, p.n, p.nblocks, p.group, p.quarter
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
    scratch = _entry_alloca(b, v32i8, CH * per_row // SUB)
    scratch.align = 32
    base8 = b.bitcast(scratch, ir.PointerType())

    def x_vec(b, row_off, at):
        return b.load(_gep8(b, base8, b.add(row_off, at)), typ=v32i8, align=32)

    def bsum_at(b, row_off, j):
        return b.bitcast(_gep8(b, base8, b.add(b.add(row_off, C64(K)), b.mul(j, C64(4)))), I32.as_pointer())

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
                    xv = b.call(smax, [b.load(_gep8(b, px, b.add(src, at)), typ=v32i8, align=1), splat8(-127)])
                    b.store(xv, b.bitcast(_gep8(b, base8, b.add(dst, at)), v32i8.as_pointer()), align=32)
                    tot = b.add(tot, b.call(ctx.declare("llvm.vector.reduce.add.v32i32", I32, [v32i32]),
                                            [b.sext(xv, v32i32)]))
                b.store(tot, bsum_at(b, dst, j))

    def crumbs(b, chunk, q):
        """Quarter q's codes (0-2) of a 32-byte chunk of a block: bits 6 - 2q of each byte."""
        shift = 6 - 2 * q
        v = chunk
        if shift:
            v = b.bitcast(b.lshr(b.bitcast(chunk, v16i16), ir.Constant(v16i16, [shift] * 16)), v32i8)
        return b.and_(v, splat8(3))

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
            return _scale_f32(b, b.load(_gep8(b, pw, blk_off), typ=st, align=1), p.inline_scale, p.f16c)
        st = storage_type(p.sw)
        return _scale_f32(b, b.load(b.gep(psw, [b.add(b.mul(n, C64(NB)), j)], source_etype=st), typ=st), p.sw,
                          p.f16c)

    def x_scale(b, m, j):
        st = storage_type(p.sx)
        return _scale_f32(b, b.load(b.gep(psx, [b.add(b.mul(m, C64(NB)), j)], source_etype=st), typ=st), p.sx,
                          p.f16c)

    def tile(b, n, m0, mc, T):
        wrow = b.mul(n, C64(p.row_bytes))
        accs = [_entry_alloca(b, v8f) for _ in range(T)]
        corrs = [_entry_alloca(b, F32) for _ in range(T)]
        for t in range(T):
            b.store(ir.Constant(v8f, None), accs[t])
            b.store(ir.Constant(F32, 0.0), corrs[t])
        ms = [b.add(m0, C64(t)) for t in range(T)]
        xrows = [b.mul(b.sub(m, mc), C64(per_row)) for m in ms]
        with for_range(b, 0, NB, name="blk", vectorize=False) as j:
            blk = b.add(wrow, b.mul(j, C64(p.stride)))
            if T == 1:
                for line in range(0, p.stride, 64):
                    off = b.add(blk, C64(PREFETCH + line))
                    off = b.select(b.icmp_signed("<", off, C64(w_bytes)), off, C64(w_bytes - 1))
                    b.call(prefetch, [_gep8(b, pw, off), C32(0), C32(3), C32(1)])
            ws = w_scale(b, n, blk, j)
            ints = [ir.Constant(v8i32, None) for _ in range(T)]
            for h in range(Q // SUB):
                chunk = b.load(_gep8(b, pw, b.add(blk, C64(p.codes_at + h * SUB))), typ=v32i8, align=1)
                for q in range(4):
                    wv = crumbs(b, chunk, q)
                    at = b.add(b.mul(j, C64(G)), C64(q * Q + h * SUB))
                    for t in range(T):
                        ints[t] = dot(b, ints[t], wv, x_vec(b, xrows[t], at))
            for t in range(T):
                d = b.fmul(ws, x_scale(b, ms[t], j))
                dv = b.shuffle_vector(b.insert_element(ir.Constant(v8f, None), d, C32(0)), ir.Constant(v8f, None),
                                      ir.Constant(v8i32, [0] * 8))
                b.store(b.call(muladd, [b.sitofp(ints[t], v8f), dv, b.load(accs[t], typ=v8f)]), accs[t])
                bs = b.sitofp(x_bsum(b, xrows[t], j), F32)
                b.store(b.call(fmuladd, [bs, d, b.load(corrs[t], typ=F32)]), corrs[t])
        for t in range(T):
            total = b.call(vsum, [ir.Constant(F32, -0.0), b.load(accs[t], typ=v8f)])
            store_out(ctx, b, op, outs[0], py, b.fsub(total, b.load(corrs[t], typ=F32)),
                      b.add(b.mul(ms[t], C64(N)), n))

    T = min(MTILE, CH) if CH > 1 else 1
    with for_range(b, 0, R, step=CH, name="mc", vectorize=False) as mc:
        mend = b.select(b.icmp_signed("<", b.add(mc, C64(CH)), C64(R)), b.add(mc, C64(CH)), C64(R))
        fill(b, mc, mend)
        with for_range(b, begin, end, name="n", vectorize=False) as n:
            start = mc
            if T > 1:
                mslot = _entry_alloca(b, I64)
                b.store(mc, mslot)
                head = b.function.append_basic_block("t.head")
                body = b.function.append_basic_block("t.body")
                done = b.function.append_basic_block("t.done")
                b.branch(head)
                b.position_at_end(head)
                m0 = b.load(mslot, typ=I64)
                b.cbranch(b.icmp_signed("<=", b.add(m0, C64(T)), mend), body, done)
                b.position_at_end(body)
                tile(b, n, m0, mc, T)
                b.store(b.add(m0, C64(T)), mslot)
                b.branch(head)
                b.position_at_end(done)
                start = b.load(mslot, typ=I64)
            with for_range(b, start, mend, name="m1", vectorize=False) as m:
                tile(b, n, m, mc, 1)
    b.ret_void()
    return KernelSpec(fn, N, 1)


__all__ = ["CrumbPlan", "lower", "plan"]
