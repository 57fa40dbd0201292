"""Movement and shape ONNX ops at run time: Reshape, Transpose, Concat, Slice, Split, Gather(Elements),
Expand, Shape, ConstantOfShape, Trilu, CumSum. Shape inputs must be known at import (they are folded)."""

from __future__ import annotations

import math

import numpy as np

from . import fold
from . import shapes as sh
from .common import broadcast_to
from .ops_math import greater, where
from .table import converts


@converts("Reshape", "Unsqueeze", "Squeeze", "Flatten")
def _reshape(im):
    x = im.value(im.inp(0))
    shape = sh.reshaped(im, x.type.shape)
    if list(shape) == list(x.type.shape):
        im.bind(0, x)
        return
    im.bind(0, im.emit("reshape", [x], {"shape": shape}, out=0))


@converts("Transpose")
def _transpose(im):
    x = im.value(im.inp(0))
    perm = im.ints_attr("perm", list(reversed(range(x.type.rank))))
    if sorted(perm) != list(range(x.type.rank)):
        raise im.error(f"Transpose perm {perm} is not a permutation of {x.type.rank} axes")
    im.bind(0, im.emit("transpose", [x], {"perm": perm}, out=0))


@converts("Concat")
def _concat(im):
    vals = [im.value(n) for n in im.node.input if n]
    if not vals:
        raise im.error("Concat needs at least one input")
    axis = im.axis(im.int_attr("axis"), max(vals[0].type.rank, 1))
    vals = [v for v in vals if v.type.size or len(vals) == 1] or vals[:1]
    if len(vals) == 1:
        im.bind(0, vals[0])
        return
    im.bind(0, im.emit("concat", vals, {"axis": axis}, out=0))


@converts("Slice")
def _slice(im):
    x = im.value(im.inp(0))
    spec = sh.slice_spec(im, x.type.shape)
    axes = [i for i, s in enumerate(spec) if s != slice(None)]
    if not axes:
        im.bind(0, x)
        return
    im.bind(0, im.emit("slice", [x], {"starts": [spec[a].start for a in axes],
                                      "ends": [spec[a].stop for a in axes], "axes": axes,
                                      "steps": [spec[a].step for a in axes]}, out=0))


@converts("Split")
def _split(im):
    x = im.value(im.inp(0))
    for i, s in enumerate(fold.split_slices(im, x.type.shape)):
        a = next(k for k, p in enumerate(s) if p != slice(None))
        im.bind(i, im.emit("slice", [x], {"starts": [s[a].start], "ends": [s[a].stop], "axes": [a]}, out=i))


@converts("Gather")
def _gather(im):
    table = im.value(im.inp(0))
    axis = im.axis(im.int_attr("axis", 0), table.type.rank)
    known = im.known(im.inp(1))
    if known is not None:
        if known.dtype.kind not in "iu":
            raise im.error(f"Gather indices must be integers, got {known.dtype}")
        n = table.type.shape[axis]
        if known.size and (known.min() < -n or known.max() >= n):
            raise im.error(f"Gather index out of range for axis {axis} of size {n}")
        idx = im.const(im.as_i32(known, "Gather's indices"), "i32", hint=f"{im.inp(1)}.i32")
    else:
        idx = im.value(im.inp(1))
    im.bind(0, im.emit("gather", [table, idx], {"axis": axis}, out=0))


@converts("GatherElements")
def _gather_elements(im):
    data = im.value(im.inp(0))
    r = data.type.rank
    axis = im.axis(im.int_attr("axis", 0), r)
    n = data.type.shape[axis]
    ishape = im.shape_of(im.inp(1))
    if len(ishape) != r:
        raise im.error(f"GatherElements indices have rank {len(ishape)}, data rank {r}")
    strides = [math.prod(data.type.shape[k + 1:]) for k in range(r)]
    grids = np.meshgrid(*[np.arange(d) for d in ishape], indexing="ij")
    base = sum(g * s for k, (g, s) in enumerate(zip(grids, strides)) if k != axis)
    base = np.asarray(base, np.int64).reshape(ishape) if r else np.zeros((), np.int64)
    flat = im.emit("reshape", [data], {"shape": [data.type.size]})
    known = im.known(im.inp(1))
    if known is not None:
        if known.size and (known.min() < -n or known.max() >= n):
            raise im.error(f"GatherElements index out of range for axis {axis} of size {n}")
        k = np.where(known < 0, known + n, known).astype(np.int64)
        idx = im.const((base + k * strides[axis]).astype(np.int32), "i32", "gather_elements.idx")
        im.bind(0, im.emit("gather", [flat, idx], {"axis": 0}, out=0))
        return
    i = im.value(im.inp(1))
    i = i if i.type.dtype.name == "i32" else im.emit("cast", [i], {"dtype": "i32"})
    zero = im.const(np.zeros((1,) * r, np.int32), "i32", "zero")
    neg = im.emit("cast", [greater(im, zero, i)], {"dtype": "i32"})  # a negative index counts from the end
    i = im.emit("add", [i, im.emit("mul", [neg, im.const(np.full((1,) * r, n, np.int32), "i32", "n")])])
    i = im.emit("mul", [i, im.const(np.full((1,) * r, strides[axis], np.int32), "i32", "stride")])
    idx = im.emit("add", [i, im.const(base.astype(np.int32), "i32", "gather_elements.base")])
    im.bind(0, im.emit("gather", [flat, idx], {"axis": 0}, out=0))


@converts("Expand")
def _expand(im):
    x = im.value(im.inp(0))
    spec = im.known_ints(im.inp(1), "Expand's shape")
    shape = sh.expand_shape(im, x.type.shape, spec)
    im.bind(0, broadcast_to(im, x, shape, out=0) if shape != x.type.shape else x)


@converts("Shape", "Size")
def _shape(im):
    shape = im.value(im.inp(0)).type.shape
    if im.node.op_type == "Size":
        im.bind(0, np.array(math.prod(shape), np.int64))
        return
    im.bind(0, fold._shape_of(im, shape))


@converts("ConstantOfShape")
def _constant_of_shape(im):
    # Reached when the folded constant would be too big: a one-element const broadcast at run time.
    spec = im.known_ints(im.inp(0), "ConstantOfShape's shape")
    v = im.attr("value", None, "tensor")
    v = np.zeros(1, np.float32) if v is None else v
    if any(d < 0 for d in spec) or v.size != 1:
        raise im.error(f"ConstantOfShape shape {spec} / value of {v.size} elements is invalid")
    c = im.const(v.reshape((1,) * len(spec)), im.ladder_dtype(v, "ConstantOfShape's value"), "fill")
    im.bind(0, broadcast_to(im, c, tuple(spec), out=0))


@converts(*sorted(fold.STATIC_ONLY - {"Shape", "Size"}))
def _static_only(im):
    raise im.error(f"{im.node.op_type} is supported on import-time values only (shape computations); "
                   f"its inputs here are computed at run time")


@converts("Trilu")
def _trilu(im):
    x = im.value(im.inp(0))
    if x.type.rank < 2:
        raise im.error(f"Trilu needs rank >= 2, got {x.type}")
    k = im.known_ints(im.inp(1), "Trilu's k")[0] if im.inp(1) else 0
    rows, cols = x.type.shape[-2:]
    keep = np.triu(np.ones((rows, cols), np.uint8), k) if im.int_attr("upper", 1) else \
        np.tril(np.ones((rows, cols), np.uint8), k)
    zero = im.const(np.zeros((1,) * x.type.rank, x.type.dtype.np_dtype), x.type.dtype.name, "zero")
    im.bind(0, where(im, im.const(keep, "u8", "trilu.mask"), x, zero, out=0))


@converts("CumSum")
def _cumsum(im):
    x = im.value(im.inp(0))
    r = x.type.rank
    axis = im.axis(im.known_ints(im.inp(1), "CumSum's axis")[0], r)
    n = x.type.shape[axis]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    rev, exc = im.int_attr("reverse", 0), im.int_attr("exclusive", 0)
    tri = (i > j if exc else i >= j) if rev else (i < j if exc else i <= j)  # y[j] = sum_i x[i] tri[i, j]
    if not x.type.dtype.is_float and x.type.dtype.name != "i32":
        raise im.error(f"CumSum of {x.type} at run time is not supported (f32 and i32 are)")
    perm = [a for a in range(r) if a != axis] + [axis]
    xt = im.emit("transpose", [x], {"perm": perm}) if axis != r - 1 else x
    lead = list(xt.type.shape[:-1])
    x2 = im.emit("reshape", [xt], {"shape": [max(math.prod(lead), 1), n]})
    m = im.const(tri.astype(x.type.dtype.np_dtype), x.type.dtype.name, "cumsum.tri")
    y = im.emit("reshape", [im.emit("matmul", [x2, m])], {"shape": lead + [n]})
    if axis != r - 1:
        y = im.emit("transpose", [y], {"perm": list(np.argsort(perm))})
    im.bind(0, im.emit("reshape", [y], {"shape": list(x.type.shape)}, out=0))
