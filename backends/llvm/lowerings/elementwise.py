"""Lowerings of element-wise ops."""

from __future__ import annotations

from ladder.backends.llvm.codegen import KernelSpec, for_range, load_f32, lowers, store_f32, elem_ptr, storage_type
from llvmlite import ir


@lowers("relu")
def lower_relu(ctx, op, ins, outs):
    (x,), (y,) = ins, outs
    fn, b, (px, py), begin, end = ctx.kernel(f"{op.kind}_{op.name}", 2)
    et = storage_type(x.dtype)
    with for_range(b, begin, end) as i:
        v = load_f32(b, elem_ptr(b, px, i, et), x.dtype)
        r = b.select(b.fcmp_ordered(">", v, ir.Constant(v.type, 0.0)), v, ir.Constant(v.type, 0.0))
        store_f32(b, r, elem_ptr(b, py, i, storage_type(y.dtype)), y.dtype)
    b.ret_void()
    return KernelSpec(fn, max(y.size, 0), 1)
