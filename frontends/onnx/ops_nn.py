"""Matmuls, normalizations, softmax and reductions."""

from __future__ import annotations

import math

import numpy as np

from ladder.ir import Value

from .table import converts


@converts("Softmax")

def _softmax(im):
    x = im.value(im.inp(0))
    r = x.type.rank
    if x.type.size == 0:  # nothing to normalize: an empty result of the same shape
        im.axis(im.int_attr("axis", -1 if im.ver() >= 13 else 1), max(r, 1))
        im.bind(0, np.zeros(x.type.shape, x.type.dtype.np_dtype))
        return
    if im.ver() >= 13:
        im.bind(0, im.emit("softmax", [x], {"axis": im.axis(im.int_attr("axis", -1), max(r, 1))}, out=0))
        return
    axis = im.axis(im.int_attr("axis", 1), max(r, 1))  # older opsets: softmax of the input coerced to 2-D
    flat = im.emit("reshape", [x], {"shape": [math.prod(x.type.shape[:axis]), -1]})
    s = im.emit("softmax", [flat], {"axis": -1})
    im.bind(0, im.emit("reshape", [s], {"shape": list(x.type.shape)}, out=0))


# normalization ---------------------------------------------------------------------------------

def rms_pattern(im) -> bool:
    """x * Reciprocal(Sqrt(ReduceMean(x^2, last axis) + eps)), or x / Sqrt(...): the RMS norm exporters write
    op by op (Llama's, from torch.rsqrt) becomes one rmsnorm. Returns False when the node is not that."""
    def made_by(name, *types):
        n = im.producer.get(name)
        return n if n is not None and n.op_type in types and not n.domain else None

    node = im.node
    if len(node.input) != 2:
        return False
    for x_name, r_name in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
        if node.op_type == "Div" and r_name != node.input[1]:
            continue
        sq = made_by(r_name, "Sqrt") if node.op_type == "Div" else None
        if node.op_type == "Mul":
            rec = made_by(r_name, "Reciprocal")
            sq = made_by(rec.input[0], "Sqrt") if rec is not None else None
        add = made_by(sq.input[0], "Add") if sq is not None else None
        if add is None or x_name not in im.env:
            continue
        for m_name, e_name in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
            eps, mean = im.known(e_name), made_by(m_name, "ReduceMean")
            if eps is None or eps.size != 1 or mean is None or float(eps.reshape(())) < 0:
                continue
            sqr = made_by(mean.input[0], "Pow", "Mul")
            if sqr is None or not _is_square_of(im, sqr, x_name):
                continue
            x = im.env[x_name]
            axes = [a.ints for a in mean.attribute if a.name == "axes"]
            axes = list(axes[0]) if axes else (im.known_ints(mean.input[1], "axes") if len(mean.input) > 1
                                              and mean.input[1] else None)
            keep = [a.i for a in mean.attribute if a.name == "keepdims"]
            if axes is None or [a % max(x.type.rank, 1) for a in axes] != [x.type.rank - 1] or \
                    (keep and not keep[0]) or not x.type.dtype.is_float:
                continue
            im.bind(0, im.emit("rmsnorm", [x], {"eps": float(eps.reshape(()))}, out=0))
            return True
    return False


def _is_square_of(im, node, x_name) -> bool:
    if node.op_type == "Mul":
        return list(node.input) == [x_name, x_name]
    e = im.known(node.input[1]) if len(node.input) > 1 else None
    return node.input[0] == x_name and e is not None and e.size == 1 and float(e.reshape(())) == 2.0


def _norm_2d(im, x: Value, axis: int) -> tuple[Value, int]:
    r = x.type.rank
    if axis == r - 1:
        return x, x.type.shape[-1]
    d = math.prod(x.type.shape[axis:])
    return im.emit("reshape", [x], {"shape": list(x.type.shape[:axis]) + [d]}), d


def _norm_inputs(im) -> tuple[Value, int, float, Value]:
    """X, the first normalized axis, epsilon and Scale of a LayerNormalization or RMSNormalization node."""
    x = im.value(im.inp(0))
    return x, im.axis(im.int_attr("axis", -1), x.type.rank), im.float_attr("epsilon", 1e-5), im.value(im.inp(1))


def _scaled_norm(im, kind: str, x: Value, axis: int, eps: float, scale: Value, bias: Value | None = None) -> Value:
    """Output 0: ``kind`` (layernorm or rmsnorm) of x over the axes from ``axis`` on, times scale, plus bias.
    One op when those are the last axis only and scale (and bias) are vectors of x's type."""
    flat, d = _norm_2d(im, x, axis)
    if axis == x.type.rank - 1 and scale.type.shape == (d,) and (bias is None or bias.type.shape == (d,)) \
            and scale.type.dtype == x.type.dtype:
        return im.emit(kind, [flat, scale] + ([bias] if bias else []), {"eps": eps}, out=0)
    y = im.emit(kind, [flat], {"eps": eps})
    if flat is not x:
        y = im.emit("reshape", [y], {"shape": list(x.type.shape)})
    y = im.emit("mul", [y, scale], out=None if bias else 0)
    if bias is not None:
        y = im.emit("add", [y, bias], out=0)
    return y


@converts("LayerNormalization")

def _layernormalization(im):
    x, axis, eps, scale = _norm_inputs(im)
    r = x.type.rank
    bias = im.value(im.inp(2)) if im.inp(2) else None
    norm_shape = x.type.shape[axis:]
    im.bind(0, _scaled_norm(im, "layernorm", x, axis, eps, scale, bias))
    if im.out_wanted(1) or im.out_wanted(2):
        axes = list(range(axis, r))
        mean = im.emit("reduce", [x], {"kind": "mean", "axes": axes, "keepdims": True},
                         out=1 if im.out_wanted(1) else None)
        im.bind(1, mean)
        if im.out_wanted(2):
            im.bind(2, inv_std(im, x, mean, axis, math.prod(norm_shape), eps, norm_shape))


def inv_std(im, x: Value, mean: Value, axis: int, d: int, eps: float, norm_shape) -> Value:
    """1 / sqrt(var + eps) over the normalized axes, without a sqrt op: rmsnorm (eps 0) of
    e = [c * (x - mean), k] with c^2 = (D+1)/D and k^2 = (D+1) * eps has mean(e^2) = var + eps, so its
    last element is k / sqrt(var + eps)."""
    if eps <= 0:
        raise im.error("LayerNormalization's InvStdDev output needs epsilon > 0")
    lead = list(x.type.shape[:axis])
    cen = im.emit("sub", [x, mean])
    cen = im.emit("reshape", [cen], {"shape": lead + [d]})
    c = math.sqrt((d + 1) / d)
    k = math.sqrt((d + 1) * eps)
    cen = im.emit("mul", [cen, im.fconst(c, cen)])
    ones = im.emit("reduce", [im.emit("mul", [cen, im.fconst(0.0, cen)])],
                     {"kind": "sum", "axes": [-1], "keepdims": True})
    kk = im.emit("add", [ones, im.fconst(k, ones)])
    e = im.emit("concat", [cen, kk], {"axis": -1})
    n = im.emit("rmsnorm", [e], {"eps": 0.0})
    last = im.emit("slice", [n], {"starts": [d], "ends": [d + 1], "axes": [-1]})
    inv = im.emit("mul", [last, im.fconst(1.0 / k, last)])
    return im.emit("reshape", [inv], {"shape": lead + [1] * len(norm_shape)}, out=2)


@converts("RMSNormalization")

def _rmsnormalization(im):
    im.bind(0, _scaled_norm(im, "rmsnorm", *_norm_inputs(im)))


# reductions -----------------------------------------------------------------------------------

def reduce(im, kind: str) -> None:
    x = im.value(im.inp(0))
    keep = bool(im.int_attr("keepdims", 1))
    if im.inp(1):  # an input since opset 13 (ReduceSum) / 18 (the others), an attribute before
        axes = im.known_ints(im.inp(1), "the axes")
    else:
        axes = im.ints_attr("axes", [])
    if not axes and im.int_attr("noop_with_empty_axes", 0):
        im.bind(0, x)
        return
    if kind == "mean" and not x.type.dtype.is_float:
        raise im.error(f"ReduceMean of integer tensor {x.type} is not supported")
    red = im.axes(axes, x.type.rank) or list(range(x.type.rank))
    if kind in ("max", "min") and any(x.type.shape[a] == 0 for a in red) and x.type.dtype.is_float:
        shape = [1 if i in red else d for i, d in enumerate(x.type.shape) if keep or i not in red]
        im.bind(0, np.full(shape, -np.inf if kind == "max" else np.inf, x.type.dtype.np_dtype))  # max of nothing, as ONNX says
        return
    if kind == "min":  # min(x) = -max(-x)
        m = im.emit("reduce", [im.emit("neg", [x])], {"kind": "max", "axes": red, "keepdims": keep})
        im.bind(0, im.emit("neg", [m], out=0))
        return
    im.bind(0, im.emit("reduce", [x], {"kind": kind, "axes": red, "keepdims": keep}, out=0))


@converts("ReduceSum")

def _reducesum(im):
    reduce(im, "sum")


@converts("ReduceMean")

def _reducemean(im):
    reduce(im, "mean")


@converts("ReduceMax")

def _reducemax(im):
    reduce(im, "max")


@converts("ReduceMin")

def _reducemin(im):
    reduce(im, "min")


def matmul(im, a: Value, b: Value, out: int | None = 0, transpose_b: bool = False) -> Value:
    """numpy matmul semantics (1-D operands) on ladder's rank >= 2 matmul."""
    a2 = im.emit("reshape", [a], {"shape": [1, a.type.shape[0]]}) if a.type.rank == 1 else a
    b2 = im.emit("reshape", [b], {"shape": [b.type.shape[0], 1]}) if b.type.rank == 1 else b
    if a.type.rank == 1 or b.type.rank == 1:
        y = im.emit("matmul", [a2, b2], {"transpose_b": transpose_b})
        shape = list(y.type.shape)
        if b.type.rank == 1:
            shape.pop(-1)
        if a.type.rank == 1:
            shape.pop(-1 if b.type.rank == 1 else -2)
        return im.emit("reshape", [y], {"shape": shape}, out=out)
    return im.emit("matmul", [a2, b2], {"transpose_b": transpose_b}, out=out)


@converts("MatMul")

def _matmul(im):
    a, b = im.value(im.inp(0)), im.value(im.inp(1))
    if a.type.dtype != b.type.dtype:
        raise im.error(f"MatMul of {a.type} and {b.type}")
    im.bind(0, matmul(im, a, b))


@converts("Gemm")

def _gemm(im):
    a, b = im.value(im.inp(0)), im.value(im.inp(1))
    if a.type.rank != 2 or b.type.rank != 2:
        raise im.error(f"Gemm takes 2-D A and B, got {a.type} and {b.type}")
    alpha, beta = im.float_attr("alpha", 1.0), im.float_attr("beta", 1.0)
    if im.int_attr("transA", 0):
        a = im.emit("transpose", [a], {"perm": [1, 0]})
    c = im.inp(2)
    y = im.emit("matmul", [a, b], {"transpose_b": bool(im.int_attr("transB", 0))},
                  out=0 if alpha == 1 and not c else None)
    if alpha != 1:
        y = im.emit("mul", [y, im.fconst(alpha, y)], out=None if c else 0)
    if c:
        cv = im.value(c)
        if beta != 1:
            cv = im.emit("mul", [cv, im.fconst(beta, cv)])
        y = im.emit("add", [y, cv], out=0)
    im.bind(0, y)
