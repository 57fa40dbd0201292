"""Kernel generators (llvmlite.ir). First family: the BitNet integer matmul over I2_S-blocked ternary weights.

``qmatmul_i8`` with x int8 [M, K] and w ternary<crumbB>[N, K] (transpose_b): for each row n and each block of
4B positions, one B-byte load gives four groups of B codes by shift and mask (``(byte >> (6 - 2i)) & 3``,
codes = value + 1). The dot is sum(x * code) - sum(x), so every product is unsigned x signed 8-bit (what
``vpmaddubsw``/``vpdpbusd`` take); y = (f32(dot) * s1[m]) * s2, the reference's order, so results are
bit-exact. x is zero-padded to whole blocks by the caller (padding codes are 1, value 0), which also
passes sum(x) per row (the activation quantizer produces it).

The kernel handles rows [n_begin, n_end) so that a thread pool can split N.
"""

from __future__ import annotations

import ctypes

from llvmlite import ir

I8, I32, I64, F32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
PTR = ir.PointerType()  # opaque pointer


def _counted_loop(b: ir.IRBuilder, start, stop, name: str):
    """for (i = start; i < stop; ++i): yields (builder positioned in the body, i); the body must fall through."""
    fn = b.function
    head, body, done = (fn.append_basic_block(f"{name}.{s}") for s in ("head", "body", "done"))
    pre = b.block
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, stop), body, done)
    b.position_at_end(body)
    return head, body, done, i


def _close_loop(b: ir.IRBuilder, loop) -> None:
    head, body, done, i = loop
    nxt = b.add(i, ir.Constant(I64, 1))
    i.add_incoming(nxt, b.block)
    b.branch(head)
    b.position_at_end(done)


def qmatmul_i8_ternary_crumb(block_bytes: int, madd: bool = False, name: str | None = None) -> tuple[str, str]:
    """LLVM IR text of ``void NAME(i8* x, i8* w, f32* s1, f32* s2, i32* xsum, f32* y, i64 M, i64 N, i64 KP,
    i64 n_begin, i64 n_end)``; KP = K padded to whole blocks of 4 * block_bytes, xsum[m] = sum(x[m, :]).

    ``madd`` (AVX2, block_bytes 32): the four u8 x i8 products of a block are summed pairwise with
    ``vpmaddubsw`` into i16 (|sum| <= 4 * 2 * 2 * 128, no overflow) and widened with ``vpmaddwd``."""
    bb = block_bytes
    if madd and bb != 32:
        raise ValueError("the AVX2 madd path decodes 32-byte blocks")
    name = name or f"qmatmul_i8_ternary_crumb{bb}{'_madd' if madd else ''}"
    mod = ir.Module(name=name)
    vec_i8 = ir.VectorType(I8, bb)
    vec_i32 = ir.VectorType(I32, 8 if madd else bb)
    reduce = ir.Function(mod, ir.FunctionType(I32, [vec_i32]), f"llvm.vector.reduce.add.v{vec_i32.count}i32")
    if madd:
        v16 = ir.VectorType(ir.IntType(16), 16)
        maddubs = ir.Function(mod, ir.FunctionType(v16, [vec_i8, vec_i8]), "llvm.x86.avx2.pmadd.ub.sw")
        maddwd = ir.Function(mod, ir.FunctionType(vec_i32, [v16, v16]), "llvm.x86.avx2.pmadd.wd")
        ones16 = ir.Constant(v16, [1] * 16)
    fnty = ir.FunctionType(ir.VoidType(), [PTR] * 6 + [I64] * 5)
    fn = ir.Function(mod, fnty, name)
    names = ("x", "w", "s1", "s2", "xsum", "y", "M", "N", "KP", "n_begin", "n_end")
    x, w, s1, s2, xsum_p, y, M, N, KP, n_begin, n_end = fn.args
    for a, nm in zip(fn.args, names):
        a.name = nm
    for a in fn.args[:6]:
        a.attributes.add("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    row_bytes = b.sdiv(KP, ir.Constant(I64, 4))
    blocks = b.sdiv(KP, ir.Constant(I64, 4 * bb))
    scale_w = b.load(s2, typ=F32)
    three = ir.Constant(vec_i8, [3] * bb)
    # The running vector lives in an alloca; SROA/mem2reg turn it into registers at O3.
    acc_slot = b.alloca(vec_i32, name="acc.slot")

    # n outer, m inner: a weight row (K/4 bytes) is read from memory once and stays in L1 for every m.
    n_loop = _counted_loop(b, n_begin, n_end, "n")
    n = n_loop[3]
    w_row = b.gep(w, [b.mul(n, row_bytes)], source_etype=I8)
    m_loop = _counted_loop(b, ir.Constant(I64, 0), M, "m")
    m = m_loop[3]
    x_row = b.gep(x, [b.mul(m, KP)], source_etype=I8)
    b.store(ir.Constant(vec_i32, None), acc_slot)
    k_loop = _counted_loop(b, ir.Constant(I64, 0), blocks, "k")
    blk = k_loop[3]
    packed = b.load(b.gep(w_row, [b.mul(blk, ir.Constant(I64, bb))], source_etype=I8), typ=vec_i8, align=1)
    x_blk = b.gep(x_row, [b.mul(blk, ir.Constant(I64, 4 * bb))], source_etype=I8)
    acc = b.load(acc_slot, typ=vec_i32)
    partial = None
    for i in range(4):
        shift = ir.Constant(vec_i8, [6 - 2 * i] * bb)
        codes = b.and_(b.lshr(packed, shift), three)
        xi = b.load(b.gep(x_blk, [ir.Constant(I64, i * bb)], source_etype=I8), typ=vec_i8, align=1)
        if madd:
            pairs = b.call(maddubs, [codes, xi])
            partial = pairs if partial is None else b.add(partial, pairs)
        else:
            acc = b.add(acc, b.mul(b.zext(codes, vec_i32), b.sext(xi, vec_i32)))
    if madd:
        acc = b.add(acc, b.call(maddwd, [partial, ones16]))
    b.store(acc, acc_slot)
    _close_loop(b, k_loop)
    xsum = b.load(b.gep(xsum_p, [m], source_etype=I32), typ=I32)
    dot = b.sub(b.call(reduce, [b.load(acc_slot, typ=vec_i32)]), xsum)
    scale_x = b.load(b.gep(s1, [m], source_etype=F32), typ=F32)
    val = b.fmul(b.fmul(b.sitofp(dot, F32), scale_x), scale_w)
    b.store(val, b.gep(y, [b.add(b.mul(m, N), n)], source_etype=F32))
    _close_loop(b, m_loop)
    _close_loop(b, n_loop)
    b.ret_void()
    return str(mod), name


QMATMUL_I8_CTYPE = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 6 + [ctypes.c_int64] * 5))
