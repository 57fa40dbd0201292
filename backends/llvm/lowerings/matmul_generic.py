"""The generic matmul kernel: every shape, dtype, packing, granularity and broadcast the reference accepts.

Work item = one (batch, n) output column; each weight element is decoded from its packed bytes as the packing's
declaration says (``Decoder``), dequantized exactly as ``ladder.quant.dequantize`` does, and accumulated (f32 for
float matmuls, int32 with wraparound for integer ones).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from ladder.backends.llvm.codegen import (C64, F32, I32, KernelSpec, entry_alloca, for_range, load_f32, storage_type,
                                          to_f32)

from .broadcast import batch_offsets, bstrides, const_table
from .decode import Decoder, gep8, int_value

from .epilogue import round_to, store_result
from .matmul_plan import MatmulOp


def _scale_index_fn(mm: MatmulOp):
    """For qmatmul with a scale operand: (batch offsets per output batch index, fn(b, r, c) -> in-matrix
    offset) where (r, c) index the weight matrix as stored ([N, K] or [K, N])."""
    w, s = mm.w, mm.extra[0]
    rank = w.rank
    axis = mm.attrs["axis"] % rank
    group = mm.attrs["group"] if s.size != 1 else -1
    if s.size == 1:
        return [0] * max(mm.B, 1), (lambda b, r, c: C64(0))
    st = bstrides(s.shape, s.shape)  # contiguous strides with 0 on size-1 dims

    # batch part: offsets of the scale for every output batch index (w's batch dims broadcast to out's)
    nb = rank - 2
    offs = []
    for flat in range(max(mm.B, 1)):
        idx = np.unravel_index(flat, mm.batch) if mm.batch else ()
        wb = list(idx)[len(mm.batch) - nb:] if nb else []
        o = 0
        for d in range(nb):
            i = wb[d] if w.shape[d] != 1 else 0
            if s.shape[d] != 1:
                o += (i // group if (d == axis and group > 0) else i) * st[d]
        offs.append(o)

    def inner(b, r, c):
        o = C64(0)
        for d, i in ((rank - 2, r), (rank - 1, c)):
            if s.shape[d] == 1:
                continue
            if d == axis and group > 0:
                i = b.udiv(i, C64(group))
            o = b.add(o, b.mul(i, C64(st[d])))
        return o

    return offs, inner


def lower_generic(ctx, op, mm: MatmulOp):
    x, w = mm.x, mm.w
    M, K, N = mm.M, mm.K, mm.N
    n_ops = len(op.operands)
    fn, b, ptrs, begin, end = ctx.kernel(f"{op.kind}_{op.name}", n_ops + 1)
    px, pw = ptrs[0], ptrs[1]
    xoffs = batch_offsets(mm.batch, x.shape[:-2], M * K)
    wb_inner = math.prod(w.storage_shape[-2:]) if w.rank >= 2 else 0
    woffs = batch_offsets(mm.batch, w.shape[:-2], wb_inner)
    xtab = const_table(ctx, b, xoffs, "x")
    wtab = const_table(ctx, b, woffs, "w")
    R0, R1 = (N, K) if mm.tb else (K, N)
    dec = Decoder(ctx, w) if mm.packed else None
    row_bytes = w.storage_shape[-1]
    if mm.kind == "qmatmul" and not mm.bscaled:
        soffs, sinner = _scale_index_fn(mm)
        stab = const_table(ctx, b, soffs, "s")
        ps = ptrs[2]
        pz = ptrs[3] if len(mm.extra) > 1 else None
        sdt = mm.extra[0].dtype
    zm = mm.attrs.get("zero_mode", "none")
    xst = storage_type(x.dtype)
    acc_t = I32 if mm.int_acc else F32
    fma = ctx.declare("llvm.fma.f32", F32, [F32, F32, F32])
    with for_range(b, begin, end, name="item") as item:
        bi = b.udiv(item, C64(N))
        n = b.urem(item, C64(N))
        xbase = xtab(bi)
        wbase = wtab(bi)
        if mm.kind == "qmatmul" and not mm.bscaled:
            sbase = stab(bi)
        with for_range(b, 0, M, name="m") as m:
            xrow = b.add(xbase, b.mul(m, C64(K)))
            acc_slot = entry_alloca(b, acc_t)
            b.store(ir.Constant(acc_t, 0 if mm.int_acc else 0.0), acc_slot)
            with for_range(b, 0, K, name="k") as k:
                r, c = (n, k) if mm.tb else (k, n)
                xptr = b.gep(px, [b.add(xrow, k)], source_etype=xst)
                if mm.packed:
                    rowp = gep8(b, pw, b.add(wbase, b.mul(r, C64(row_bytes))))
                    code = dec.code(b, rowp, c)
                if mm.int_acc:
                    xv = int_value(b, xptr, x.dtype)
                    wv = dec.int_value(b, code) if mm.packed else int_value(
                        b, b.gep(pw, [b.add(wbase, b.add(b.mul(r, C64(R1)), c))], source_etype=storage_type(w.dtype)),
                        w.dtype)
                    acc = b.add(b.load(acc_slot, typ=I32), b.mul(xv, wv))
                else:
                    xv = load_f32(b, xptr, x.dtype)
                    if mm.packed:
                        v = dec.f32_value(b, code)
                    else:
                        v = load_f32(b, b.gep(pw, [b.add(wbase, b.add(b.mul(r, C64(R1)), c))],
                                               source_etype=storage_type(w.dtype)), w.dtype)
                    if mm.kind == "qmatmul":
                        if mm.bscaled:
                            s = dec.block_scale(b, rowp, c, 0)
                            z = dec.block_scale(b, rowp, c, 1) if dec.zero else None
                        else:
                            off = b.add(sbase, sinner(b, r, c))
                            s = to_f32(b, b.load(b.gep(ps, [off], source_etype=storage_type(sdt)),
                                                 typ=storage_type(sdt)), sdt)
                            z = to_f32(b, b.load(b.gep(pz, [off], source_etype=storage_type(sdt)),
                                                 typ=storage_type(sdt)), sdt) if pz is not None else None
                        if zm == "original" and z is not None:
                            v = b.fmul(b.fsub(v, z), s)
                        elif zm == "rescale" and z is not None:
                            v = b.fsub(b.fmul(v, s), z)
                        else:
                            v = b.fmul(v, s)
                        v = round_to(b, v, x.dtype)  # dequant's result type is x's
                    acc = b.call(fma, [xv, v, b.load(acc_slot, typ=F32)])
                b.store(acc, acc_slot)
            acc = b.load(acc_slot, typ=acc_t)
            oidx = b.add(b.mul(b.add(b.mul(bi, C64(M)), m), C64(N)), n)
            store_result(ctx, b, mm, ptrs, acc, oidx)
    b.ret_void()
    return KernelSpec(fn, mm.B * N, 1)
