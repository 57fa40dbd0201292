"""Element-wise ONNX ops at run time: arithmetic, activations, casts, comparisons and logic, Where, Max/Min.

ladder has no bool type: a run-time ONNX bool is u8 holding 0 or 1. Comparisons are built from exact
steps (a strictly positive difference, scaled by 2^149 and clamped to [0, 1], is 1); Where selects by
gathering from the two candidates interleaved, so NaN and infinities pass through unchanged."""

from __future__ import annotations

import math

import numpy as np

from ladder.types import DTYPES

from .common import ONNX_TO_LADDER, broadcast_to, type_name
from .table import converts

BOOL = 9  # TensorProto.BOOL


def _same_dtype(im, a, b):
    if a.type.dtype != b.type.dtype:
        raise im.error(f"{im.node.op_type} of {a.type} and {b.type}: the element types differ")


def binary(im, kind: str) -> None:
    a, b = im.value(im.inp(0)), im.value(im.inp(1))
    _same_dtype(im, a, b)
    if kind == "div" and not a.type.dtype.is_float:
        if a.type.dtype.bits > 16:
            raise im.error(f"integer Div of {a.type} is not supported (ladder divides floats; "
                           f"only <= 16-bit integers convert exactly)")
        fa = im.emit("cast", [a], {"dtype": "f32"})
        fb = im.emit("cast", [b], {"dtype": "f32"})
        q = im.emit("div", [fa, fb])
        im.bind(0, im.emit("cast", [q], {"dtype": a.type.dtype.name}, out=0))
        return
    im.bind(0, im.emit(kind, [a, b], out=0))


@converts("Add", "Sub", "Mul", "Div")
def _arith(im):
    from .ops_nn import rms_pattern

    if im.node.op_type in ("Mul", "Div") and rms_pattern(im):
        return
    binary(im, im.node.op_type.lower())


def unary(im, kind: str, attrs=None) -> None:
    im.bind(0, im.emit(kind, [im.value(im.inp(0))], attrs, out=0))


@converts("Neg", "Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Sqrt")
def _unary(im):
    unary(im, im.node.op_type.lower())


@converts("Gelu")
def _gelu(im):
    approx = im.attr("approximate", "none", "str")
    if approx not in ("none", "tanh"):
        raise im.error(f"Gelu attribute 'approximate' is '{approx}'; ONNX allows 'none' and 'tanh'")
    unary(im, "gelu", {"approximate": approx})


@converts("Reciprocal")
def _reciprocal(im):
    x = im.value(im.inp(0))
    im.bind(0, im.emit("div", [im.fconst(1.0, x), x], out=0))


@converts("Pow")
def _pow(im):
    x = im.value(im.inp(0))
    e = im.known(im.inp(1))
    if e is None or e.size != 1:
        raise im.error("Pow needs its exponent as one import-time value (ladder has no general power op)")
    p = float(np.asarray(e).reshape(()))
    if not x.type.dtype.is_float:
        raise im.error(f"Pow of integer tensor {x.type} is not supported")
    if p == 0.5:
        im.bind(0, im.emit("sqrt", [x], out=0))
        return
    if p != int(p) or abs(p) > 16:
        raise im.error(f"Pow with exponent {p} is not supported (integers up to 16 and 0.5 are)")
    n = abs(int(p))
    if n == 0:  # x^0 is 1 everywhere, NaN included
        im.bind(0, broadcast_to(im, im.fconst(1.0, x), x.type.shape, out=0))
        return
    y = x
    for _ in range(n - 1):
        y = im.emit("mul", [y, x])
    if p < 0:
        y = im.emit("div", [im.fconst(1.0, y), y])
    im.bind(0, y)


@converts("Identity")
def _identity(im):
    im.bind(0, im.value(im.inp(0)))


@converts("Constant")
def _constant(im):
    keys = [a.name for a in im.node.attribute]
    if len(keys) != 1:
        raise im.error(f"Constant needs exactly one value attribute, got {keys or 'none'}")
    k = keys[0]
    if k == "value":
        arr = im.attr("value", kind="tensor")
    elif k == "value_float":
        arr = np.array(im.attr(k, kind="float"), np.float32)
    elif k == "value_floats":
        arr = np.array(im.attr(k, kind="floats"), np.float32)
    elif k == "value_int":
        arr = np.array(im.attr(k, kind="int"), np.int64)
    elif k == "value_ints":
        arr = np.array(im.attr(k, kind="ints"), np.int64)
    else:
        raise im.error(f"Constant with {k} is not supported")
    im.bind(0, arr)


@converts("Cast")
def _cast(im):
    to = im.int_attr("to")
    x = im.value(im.inp(0))
    if to == BOOL:
        im.bind(0, nonzero(im, x, out=0))
        return
    dt = ONNX_TO_LADDER.get(to)
    if dt is None or DTYPES[dt].kind not in ("float", "int", "uint"):
        raise im.error(f"Cast of '{im.inp(0)}' to {type_name(to)}: ladder has no such type at run time")
    src = x.type.dtype
    if dt in ("i4", "u4", "i2", "u2") and (src.is_float or src.value_range[0] < DTYPES[dt].value_range[0]
                                          or src.value_range[1] > DTYPES[dt].value_range[1]):
        raise im.error(f"Cast of {x.type} to {type_name(to)} is not supported: ONNX wraps out-of-range values, "
                       f"ladder's cast saturates")
    if dt == "fp8e4m3" and not im.int_attr("saturate", 1):
        raise im.error("Cast to FLOAT8E4M3FN with saturate=0 is not supported (ladder saturates)")
    if x.type.dtype.name == dt:
        im.bind(0, x)
        return
    im.bind(0, im.emit("cast", [x], {"dtype": dt}, out=0))


# -- bool results (u8 0/1) -----------------------------------------------------------------------------

def u8(im, v, out=None):
    return v if v.type.dtype.name == "u8" and out is None else im.emit("cast", [v], {"dtype": "u8"}, out=out)


def one_minus(im, m, out=None):
    return im.emit("sub", [im.const(np.ones((1,) * max(m.type.rank, 1), np.uint8), "u8", "one"), m], out=out)


def not_nan(im, x):
    """u8 1 where x is not NaN: clamp(x, 0, 0) is 0 or NaN; + 1 then cast (NaN casts to 0)."""
    f = x if x.type.dtype.name == "f32" else im.emit("cast", [x], {"dtype": "f32"})
    z = im.emit("clamp", [f], {"min": 0.0, "max": 0.0})
    return u8(im, im.emit("add", [z, im.fconst(1.0, z)]))


def greater(im, a, b):
    """u8 1 where a > b (exact for floats and integers; 0 where either is NaN)."""
    dt = a.type.dtype
    if dt.is_float:
        if dt.name != "f32":
            a, b = (im.emit("cast", [v], {"dtype": "f32"}) for v in (a, b))
        d = im.emit("sub", [a, b])
        # any positive f32 (down to 2^-149) times 2^149 is >= 1; overflow to inf clamps to 1
        d = im.emit("mul", [im.emit("mul", [d, im.fconst(2.0 ** 100, d)]), im.fconst(2.0 ** 49, d)])
        return u8(im, im.emit("clamp", [d], {"min": 0.0, "max": 1.0}))
    if dt.bits < 32:
        ai, bi = (im.emit("cast", [v], {"dtype": "i32"}) for v in (a, b))
        return u8(im, im.emit("clamp", [im.emit("sub", [ai, bi])], {"min": 0, "max": 1}))
    if dt.kind == "uint":
        raise im.error(f"comparison of {a.type} is not supported")
    # i32: a - b may wrap; when the signs differ the answer is the sign of a alone.
    sa = im.emit("clamp", [a], {"min": -1, "max": 0})
    sb = im.emit("clamp", [b], {"min": -1, "max": 0})
    ds = im.emit("sub", [sa, sb])                                  # 1: a >= 0 > b; -1: b >= 0 > a
    differ = im.emit("mul", [ds, ds])
    by_sign = im.emit("clamp", [ds], {"min": 0, "max": 1})
    by_diff = im.emit("clamp", [im.emit("sub", [a, b])], {"min": 0, "max": 1})
    one = im.const(np.ones((1,) * max(a.type.rank, 1), np.int32), "i32", "one")
    r = im.emit("add", [im.emit("mul", [differ, by_sign]),
                        im.emit("mul", [im.emit("sub", [one, differ]), by_diff])])
    return u8(im, r)


def nonzero(im, x, out=None):
    if x.type.dtype.name == "u8":
        x = im.emit("cast", [x], {"dtype": "i32"})
    z = im.const(np.zeros((1,) * max(x.type.rank, 1), x.type.dtype.np_dtype), x.type.dtype.name, "zero")
    m = im.emit("add", [greater(im, x, z), greater(im, z, x)])
    if x.type.dtype.is_float:
        m = im.emit("add", [m, one_minus(im, not_nan(im, x))])
    return u8(im, im.emit("clamp", [im.emit("cast", [m], {"dtype": "i32"})], {"min": 0, "max": 1}), out=out)


def _mask_and(im, *ms):
    y = ms[0]
    for m in ms[1:]:
        y = im.emit("mul", [y, m])
    return y


@converts("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")
def _compare(im):
    t = im.node.op_type
    a, b = im.value(im.inp(0)), im.value(im.inp(1))
    _same_dtype(im, a, b)
    if t in ("Less", "LessOrEqual"):
        a, b = b, a
    if t in ("Less", "Greater"):
        im.bind(0, im.emit("reshape", [greater(im, a, b)], {"shape": list(im.broadcast(a.type.shape, b.type.shape))}, out=0))
        return
    if t == "Equal":
        ne = im.emit("add", [greater(im, a, b), greater(im, b, a)])
    else:  # a >= b is not (b > a)
        ne = greater(im, b, a)
    if a.type.dtype.is_float:  # NaN compares false
        im.bind(0, im.emit("mul", [_mask_and(im, one_minus(im, ne), not_nan(im, a)), not_nan(im, b)], out=0))
    else:
        im.bind(0, one_minus(im, ne, out=0))


@converts("IsNaN")
def _isnan(im):
    x = im.value(im.inp(0))
    if not x.type.dtype.is_float:
        raise im.error(f"IsNaN of {x.type}: ONNX takes floats")
    im.bind(0, one_minus(im, not_nan(im, x), out=0))


def as_mask(im, name):
    v = im.value(name)
    if v.type.dtype.name != "u8":
        raise im.error(f"{im.node.op_type} input '{name}' is {v.type}, not a bool tensor")
    return v


@converts("Not")
def _not(im):
    im.bind(0, one_minus(im, as_mask(im, im.inp(0)), out=0))


@converts("And", "Or", "Xor")
def _logic(im):
    a, b = as_mask(im, im.inp(0)), as_mask(im, im.inp(1))
    t = im.node.op_type
    if t == "And":
        im.bind(0, im.emit("mul", [a, b], out=0))
    elif t == "Or":
        im.bind(0, im.emit("sub", [im.emit("add", [a, b]), im.emit("mul", [a, b])], out=0))
    else:
        s = im.emit("sub", [im.emit("cast", [a], {"dtype": "i32"}), im.emit("cast", [b], {"dtype": "i32"})])
        im.bind(0, u8(im, im.emit("mul", [s, s]), out=0))


def where(im, cond, x, y, out=None):
    """cond ? x : y, exact: x and y broadcast and interleaved, then one gather picks per element."""
    _same_dtype(im, x, y)
    shape = im.broadcast(cond.type.shape, x.type.shape, y.type.shape)
    n = math.prod(shape)
    if n >= 2 ** 30:  # the gather's i32 indices reach 2n
        raise im.error(f"{im.node.op_type} over {n} elements {list(shape)} is too large (limit 2^30)")
    xb, yb, cb = (im.emit("reshape", [broadcast_to(im, v, shape)], {"shape": [n, 1]}) for v in (x, y, cond))
    pair = im.emit("reshape", [im.emit("concat", [yb, xb], {"axis": 1})], {"shape": [2 * n]})
    base = im.const((np.arange(n, dtype=np.int64) * 2).astype(np.int32), "i32", "where.base")
    idx = im.emit("add", [base, im.emit("reshape", [im.emit("cast", [cb], {"dtype": "i32"})], {"shape": [n]})])
    picked = im.emit("gather", [pair, idx], {"axis": 0})
    return im.emit("reshape", [picked], {"shape": list(shape)}, out=out)


@converts("Where")
def _where(im):
    c = im.value(im.inp(0))
    if c.type.dtype.name != "u8":
        raise im.error(f"Where condition is {c.type}, not a bool tensor")
    im.bind(0, where(im, c, im.value(im.inp(1)), im.value(im.inp(2)), out=0))


@converts("Max", "Min")
def _max_min(im):
    names = [n for n in im.node.input if n]
    if not names:
        raise im.error(f"{im.node.op_type} needs at least one input")
    vals = [im.value(n) for n in names]
    y = vals[0]
    for v in vals[1:]:
        _same_dtype(im, y, v)
        take_v = greater(im, v, y) if im.node.op_type == "Max" else greater(im, y, v)
        if y.type.dtype.is_float:  # NaN wins, as in ONNX
            isnan_v = one_minus(im, not_nan(im, v))
            take_v = im.emit("sub", [im.emit("add", [take_v, isnan_v]), im.emit("mul", [take_v, isnan_v])])
        y = where(im, take_v, v, y)
    im.bind(0, y)
