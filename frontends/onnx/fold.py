"""Import-time evaluation of nodes whose inputs are all known (initializers, Constants, shapes).

Shapes are static in ladder, so the shape subgraphs exporters write (Shape -> Gather -> Range -> Equal ->
Where ...) become constants here. Every result is bounded before it is allocated (``Core.bound``): a
result over the limit is left to the run-time converter or refused with its size named."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import onnx

from . import shapes as sh

FOLDERS: dict[str, Callable] = {}
WEIGHT_SIZE = 4096  # a float initializer larger than this is a weight: ops on it are not folded
# Ops whose converters need import-time inputs anyway: a too-big fold of these is an error, not a fallback.
STATIC_ONLY = {"Range", "Shape", "Size", "Mod", "GatherND", "Tile", "IsInf", "Abs", "Cos", "Sin", "Floor", "Ceil",
               "Sign"}


class TooBig(Exception):
    pass


def has_runtime(op: str) -> bool:
    return op not in STATIC_ONLY


def folds(*ops: str):
    def deco(fn):
        for o in ops:
            FOLDERS[o] = fn
        return fn
    return deco


def _bcast(im, ins, itemsize=8):
    shape = sh.broadcast_shape(im, *[a.shape for a in ins if a is not None])
    im.bound(shape, itemsize)
    return shape


@folds("Identity")
def _identity(im, ins):
    return ins[0]


@folds("Cast")
def _cast(im, ins):
    to = im.int_attr("to")
    try:
        npdt = onnx.helper.tensor_dtype_to_np_dtype(to)
    except (KeyError, ValueError):
        raise im.error(f"Cast attribute 'to' is {to}, not an ONNX element type") from None
    with np.errstate(all="ignore"):
        return ins[0].astype(npdt)


_ARITH = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}


@folds("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "And", "Or", "Xor",
       "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual")
def _binary(im, ins):
    t = im.node.op_type
    args = [a for a in ins if a is not None]
    if t in ("Max", "Min"):
        if not args:
            raise im.error(f"{t} needs at least one input")
        _bcast(im, args)
        fn = np.maximum if t == "Max" else np.minimum
        out = args[0]
        for a in args[1:]:
            out = fn(out, a)
        return np.asarray(out).astype(args[0].dtype)
    if len(args) != 2:
        raise im.error(f"{t} takes 2 inputs, got {len(args)}")
    a, b = args
    _bcast(im, args)
    with np.errstate(all="ignore"):
        if t in _ARITH:
            return _ARITH[t](a, b).astype(a.dtype)
        if t == "Div":
            if a.dtype.kind in "iu":
                if np.any(b == 0):
                    raise im.error("integer Div by zero in a constant expression")
                q = np.abs(a.astype(np.int64)) // np.abs(b.astype(np.int64))
                return (q * np.sign(a) * np.sign(b)).astype(a.dtype)  # ONNX truncates toward zero
            return np.divide(a, b).astype(a.dtype)
        if t == "Pow":
            return np.power(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)
        if t == "Mod":
            if a.dtype.kind in "iu" and np.any(b == 0):
                raise im.error("integer Mod by zero in a constant expression")
            if im.int_attr("fmod", 0):
                return np.fmod(a, b).astype(a.dtype)
            if a.dtype.kind == "f":
                raise im.error("Mod of floats needs fmod=1 (ONNX)")
            return np.mod(a, b).astype(a.dtype)
        if t in ("And", "Or", "Xor"):
            fn = {"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}[t]
            return fn(a.astype(bool), b.astype(bool))
        fn = {"Equal": np.equal, "Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
              "GreaterOrEqual": np.greater_equal}[t]
        return fn(a, b)


_UNARY = {"Neg": np.negative, "Abs": np.abs, "Sqrt": np.sqrt, "Reciprocal": np.reciprocal, "Exp": np.exp,
          "Cos": np.cos, "Sin": np.sin, "Floor": np.floor, "Ceil": np.ceil, "Not": np.logical_not,
          "IsNaN": np.isnan, "Sign": np.sign}


@folds(*_UNARY)
def _unary(im, ins):
    t = im.node.op_type
    a = ins[0]
    with np.errstate(all="ignore"):
        if t == "Not":
            return np.logical_not(a.astype(bool))
        if t == "IsNaN":
            return np.isnan(a)
        if a.dtype.kind in "iu" and t in ("Sqrt", "Reciprocal", "Exp", "Cos", "Sin"):
            raise im.error(f"{t} of integers is not an ONNX operation")
        if a.dtype.kind == "f" and t != "Neg" and a.dtype != np.float32 and a.dtype != np.float64:
            return _UNARY[t](a.astype(np.float32)).astype(a.dtype)
        return _UNARY[t](a).astype(a.dtype)


@folds("IsInf")
def _isinf(im, ins):
    a = ins[0]
    pos, neg = im.int_attr("detect_positive", 1), im.int_attr("detect_negative", 1)
    return (np.isposinf(a) & bool(pos)) | (np.isneginf(a) & bool(neg))


@folds("Where")
def _where(im, ins):
    if len(ins) != 3:
        raise im.error(f"Where takes 3 inputs, got {len(ins)}")
    _bcast(im, ins)
    c, x, y = ins
    return np.where(c.astype(bool), x, y).astype(x.dtype)


@folds("Concat")
def _concat(im, ins):
    arrs = [a for a in ins if a is not None]
    if not arrs:
        raise im.error("Concat needs at least one input")
    r = arrs[0].ndim
    if any(a.ndim != r for a in arrs):
        raise im.error(f"Concat inputs have different ranks {[a.ndim for a in arrs]}")
    axis = im.axis(im.int_attr("axis"), max(r, 1))
    im.bound((sum(a.size for a in arrs),), arrs[0].itemsize)
    return np.concatenate(arrs, axis=axis)


@folds("Gather")
def _gather(im, ins):
    a, idx = ins
    if im.inp(0) in im.inits and a.dtype.kind == "f":
        return None  # a lookup in a float table (an embedding) stays a run-time gather of the param
    axis = im.axis(im.int_attr("axis", 0), a.ndim)
    n = a.shape[axis]
    if idx.dtype.kind not in "iu":
        raise im.error(f"Gather indices must be integers, got {idx.dtype}")
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise im.error(f"Gather index {int(idx.max() if idx.max() >= n else idx.min())} is out of range for "
                       f"axis {axis} of size {n}")
    im.bound(a.shape[:axis] + idx.shape + a.shape[axis + 1:], a.itemsize)
    return np.take(a, idx, axis=axis)


@folds("GatherElements")
def _gather_elements(im, ins):
    a, idx = ins
    axis = im.axis(im.int_attr("axis", 0), a.ndim)
    if idx.ndim != a.ndim:
        raise im.error(f"GatherElements indices have rank {idx.ndim}, data rank {a.ndim}")
    n = a.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise im.error(f"GatherElements index out of range for axis {axis} of size {n}")
    idx = np.where(idx < 0, idx + n, idx)
    return np.take_along_axis(a, idx.astype(np.int64), axis=axis)


@folds("GatherND")
def _gather_nd(im, ins):
    a, idx = ins
    b = im.int_attr("batch_dims", 0)
    if b != 0:
        raise im.error("GatherND with batch_dims != 0 is not supported")
    if idx.ndim < 1 or idx.shape[-1] > a.ndim:
        raise im.error(f"GatherND indices {list(idx.shape)} do not fit data of rank {a.ndim}")
    k = idx.shape[-1]
    for j in range(k):
        if idx.size and (idx[..., j].min() < -a.shape[j] or idx[..., j].max() >= a.shape[j]):
            raise im.error(f"GatherND index out of range on axis {j}")
    im.bound(idx.shape[:-1] + a.shape[k:], a.itemsize)
    return a[tuple(np.moveaxis(idx, -1, 0))]


@folds("Unsqueeze", "Squeeze", "Reshape", "Flatten")
def _reshape(im, ins):
    return ins[0].reshape(sh.reshaped(im, ins[0].shape))


@folds("Slice")
def _slice(im, ins):
    return ins[0][sh.slice_spec(im, ins[0].shape)]


@folds("Transpose")
def _transpose(im, ins):
    a = ins[0]
    perm = im.ints_attr("perm", list(reversed(range(a.ndim))))
    if sorted(perm) != list(range(a.ndim)):
        raise im.error(f"Transpose perm {perm} is not a permutation of {a.ndim} axes")
    return np.transpose(a, perm)


@folds("Expand")
def _expand(im, ins):
    spec = im.known_ints(im.inp(1), "Expand's shape")
    shape = sh.expand_shape(im, ins[0].shape, spec)
    im.bound(shape, ins[0].itemsize)
    return np.broadcast_to(ins[0], shape).copy()


@folds("Tile")
def _tile(im, ins):
    reps = im.known_ints(im.inp(1), "Tile's repeats")
    if len(reps) != ins[0].ndim or any(r < 0 for r in reps):
        raise im.error(f"Tile repeats {reps} do not fit rank {ins[0].ndim}")
    im.bound([d * r for d, r in zip(ins[0].shape, reps)], ins[0].itemsize)
    return np.tile(ins[0], reps)


@folds("ConstantOfShape")
def _constant_of_shape(im, ins):
    spec = im.known_ints(im.inp(0), "ConstantOfShape's shape")
    if any(d < 0 for d in spec):
        raise im.error(f"ConstantOfShape shape {spec} has a negative dimension")
    v = im.attr("value", None, "tensor")
    v = np.zeros(1, np.float32) if v is None else v
    if v.size != 1:
        raise im.error(f"ConstantOfShape value must have one element, got {v.size}")
    im.bound(spec, v.itemsize)
    return np.full(spec, v.reshape(()), v.dtype)


@folds("Shape")
def _shape(im, ins):
    return _shape_of(im, ins[0].shape)


def _shape_of(im, shape):
    r = len(shape)
    start, end = im.int_attr("start", 0), im.int_attr("end", r)
    start, end = (max(0, min(r, s + r if s < 0 else s)) for s in (start, end))
    return np.array(shape[start:end], np.int64)


@folds("Size")
def _size(im, ins):
    return np.array(ins[0].size, np.int64)


@folds("Range")
def _range(im, ins):
    start, limit, delta = (np.asarray(a).reshape(()) for a in ins[:3])
    if delta == 0:
        raise im.error("Range with delta 0")
    n = max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)
    im.bound((n,), start.dtype.itemsize)
    return (start + np.arange(n, dtype=np.float64 if start.dtype.kind == "f" else np.int64) * delta
            ).astype(start.dtype)


@folds("Trilu")
def _trilu(im, ins):
    a = ins[0]
    if a.ndim < 2:
        raise im.error(f"Trilu needs rank >= 2, got {a.ndim}")
    k = int(np.asarray(ins[1]).reshape(())) if len(ins) > 1 and ins[1] is not None else 0
    return np.triu(a, k) if im.int_attr("upper", 1) else np.tril(a, k)


@folds("CumSum")
def _cumsum(im, ins):
    a = ins[0]
    axis = im.axis(int(np.asarray(ins[1]).reshape(())), a.ndim)
    x = np.flip(a, axis) if im.int_attr("reverse", 0) else a
    y = np.cumsum(x, axis=axis, dtype=a.dtype)
    if im.int_attr("exclusive", 0):
        y = y - x
    return np.flip(y, axis) if im.int_attr("reverse", 0) else y


@folds("Split")
def _split(im, ins):
    return [ins[0][s] for s in split_slices(im, ins[0].shape)]


def split_slices(im, shape) -> list[tuple[slice, ...]]:
    """The slices of the current Split node's outputs (sizes from the input, attribute or num_outputs)."""
    r = len(shape)
    axis = im.axis(im.int_attr("axis", 0), r)
    d = shape[axis]
    n_out = len(im.node.output)
    if im.inp(1):
        sizes = im.known_ints(im.inp(1), "Split's split")
    elif im.attr("split", None) is not None:
        sizes = im.ints_attr("split")
    else:
        n = im.int_attr("num_outputs", n_out)
        if n <= 0:
            raise im.error(f"Split num_outputs {n} must be positive")
        if n != n_out:
            raise im.error(f"Split num_outputs {n} but the node has {n_out} outputs")
        chunk = -(-d // n)
        sizes = [min(chunk, max(d - chunk * i, 0)) for i in range(n)]
    if len(sizes) != n_out or any(s < 0 for s in sizes) or sum(sizes) != d:
        raise im.error(f"Split sizes {sizes} do not split axis {axis} of size {d} into {n_out} outputs")
    out, at = [], 0
    for s in sizes:
        sl = [slice(None)] * r
        sl[axis] = slice(at, at + s)
        out.append(tuple(sl))
        at += s
    return out


@folds("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd")
def _reduce(im, ins):
    a = ins[0]
    if a.dtype.kind not in "iub":
        return None  # float reductions stay run-time ops (their order of summation is the kernel's)
    keep = bool(im.int_attr("keepdims", 1))
    if len(ins) > 1 and ins[1] is not None:
        axes = [int(v) for v in ins[1].reshape(-1)]
    else:
        axes = im.ints_attr("axes", [])
    if not axes and im.int_attr("noop_with_empty_axes", 0):
        return a
    axes = tuple(im.axes(axes, a.ndim)) or None
    fn = {"ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min, "ReduceProd": np.prod}[im.node.op_type]
    if a.size == 0 and im.node.op_type in ("ReduceMax", "ReduceMin"):
        return None
    return np.asarray(fn(a, axis=axes, keepdims=keep)).astype(a.dtype)
