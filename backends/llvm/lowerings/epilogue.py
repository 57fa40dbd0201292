"""The end of a matmul-family kernel: an output value rounded to its type, through the op's epilogue ops (each in
f64, libm's, then rounded per op as the interpreter does), and stored."""

from __future__ import annotations

import math

from llvmlite import ir

from ladder.backends.llvm.codegen import F32, F64, I32, from_f32, storage_type, to_f32
from ladder.ops import OPS

from .broadcast import bstrides, offset_of
from .matmul_plan import MatmulOp


def round_to(b, v32, dt):
    """f32 -> the value of dt (rounded), back as f32."""
    if dt.name == "f32":
        return v32
    return to_f32(b, from_f32(b, v32, dt), dt)


def apply_epilogue(ctx, b, v32, kinds, dt):
    """v32 (f32, already a value of dt) through the epilogue ops, each computed in f64 then rounded to dt."""
    for kind in kinds:
        x = b.fpext(v32, F64)
        one = ir.Constant(F64, 1.0)
        if kind == "relu":
            r = b.select(b.fcmp_ordered(">", x, ir.Constant(F64, 0.0)), x, ir.Constant(F64, 0.0))
            r = b.select(b.fcmp_unordered("uno", x, x), x, r)
        elif kind == "neg":
            r = b.fneg(x)
        elif kind == "relu2":
            m = b.select(b.fcmp_ordered(">", x, ir.Constant(F64, 0.0)), x, ir.Constant(F64, 0.0))
            m = b.select(b.fcmp_unordered("uno", x, x), x, m)
            r = b.fmul(m, m)
        elif kind == "exp":
            r = b.call(ctx.declare("exp", F64, [F64]), [x])
        elif kind == "tanh":
            r = b.call(ctx.declare("tanh", F64, [F64]), [x])
        elif kind in ("sigmoid", "silu"):
            e = b.call(ctx.declare("exp", F64, [F64]), [b.fneg(x)])
            den = b.fadd(one, e)
            r = b.fdiv(one, den) if kind == "sigmoid" else b.fdiv(x, den)
        elif kind == "gelu":
            erf = b.call(ctx.declare("erf", F64, [F64]), [b.fdiv(x, ir.Constant(F64, math.sqrt(2.0)))])
            r = b.fmul(b.fmul(ir.Constant(F64, 0.5), x), b.fadd(one, erf))
        else:
            raise NotImplementedError(kind)
        v32 = round_to(b, b.fptrunc(r, F32), dt)
    return v32


def store_epilogue(ctx, b, op, out, py, v, idx):
    """An f32 result of ``op`` at flat index ``idx`` of its output: the op's epilogue, then stored as ``out``'s
    dtype (the block kernels' store)."""
    v = apply_epilogue(ctx, b, v, tuple(OPS[op.kind].full_attrs(op.attr)["epilogue"]), out.dtype)
    b.store(from_f32(b, v, out.dtype), b.gep(py, [idx], source_etype=storage_type(out.dtype)))


def store_result(ctx, b, mm: MatmulOp, ptrs, acc, oidx):
    """acc (i32 or f32) at output flat index oidx -> scales, cast, epilogue, store."""
    out = mm.out
    py = ptrs[len(ptrs) - 1]
    if mm.kind == "matmul" and mm.int_acc:
        b.store(acc, b.gep(py, [oidx], source_etype=I32))
        return
    if mm.kind == "qmatmul_i8":
        v = b.sitofp(acc, F32)
        for p, t in ((ptrs[2], mm.extra[0]), (ptrs[3], mm.extra[1])):
            off = offset_of(b, oidx, out.shape, bstrides(t.shape, out.shape))
            v = b.fmul(v, b.load(b.gep(p, [off], source_etype=F32), typ=F32))
    else:
        v = round_to(b, acc, out.dtype)
    v = apply_epilogue(ctx, b, v, mm.epi, out.dtype)
    b.store(from_f32(b, v, out.dtype), b.gep(py, [oidx], source_etype=storage_type(out.dtype)))
