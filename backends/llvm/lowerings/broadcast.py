"""Offsets of broadcast operands (numpy rules) in LLVM kernels: element strides with 0 on broadcast axes, the
offset of each batch matrix, a constant table of such offsets, and an operand's offset at an output index."""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from ladder.backends.llvm.codegen import C64, I64



def bstrides(shape, out_shape):
    """Element strides of a tensor of ``shape`` broadcast (numpy rules) to ``out_shape``: 0 on broadcast axes."""
    shape = tuple(shape)
    pad = len(out_shape) - len(shape)
    full = (1,) * pad + shape
    strides, acc = [0] * len(out_shape), 1
    for d in range(len(out_shape) - 1, -1, -1):
        strides[d] = 0 if full[d] == 1 else acc
        acc *= full[d]
    return strides


def batch_offsets(batch, shape_b, inner):
    """For each flat index of the broadcast batch ``batch``: the element offset into a tensor whose batch dims
    are ``shape_b`` (right-aligned) and whose matrices hold ``inner`` elements."""
    n = math.prod(batch)
    if n == 0:
        return [0]
    idx = np.indices(batch).reshape(len(batch), -1) if batch else np.zeros((0, 1), np.int64)
    st = bstrides(shape_b, batch)
    off = np.zeros(idx.shape[1], np.int64)
    for d, s in enumerate(st):
        off += idx[d] * s * inner
    return [int(v) for v in off]


def const_table(ctx, b, values, hint):
    """A constant i64 array (internal global); returns a function index -> loaded value."""
    arr_t = ir.ArrayType(I64, len(values))
    g = ir.GlobalVariable(ctx.module, arr_t, ctx.unique("tab_" + hint))
    g.global_constant = True
    g.linkage = "internal"
    g.initializer = ir.Constant(arr_t, [int(v) for v in values])
    return lambda i: b.load(b.gep(g, [C64(0), i], source_etype=arr_t), typ=I64)


def offset_of(b, flat, out_shape, strides):
    """Element offset of a broadcast operand at the flat index of the output (constant divisors)."""
    off = C64(0)
    acc = 1
    for d in range(len(out_shape) - 1, -1, -1):
        if strides[d]:
            idx = b.urem(b.udiv(flat, C64(acc)), C64(out_shape[d])) if out_shape[d] > 1 else C64(0)
            off = b.add(off, b.mul(idx, C64(strides[d])))
        acc *= out_shape[d]
    return off
