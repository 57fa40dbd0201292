"""Data movement: reshape, transpose, concat, slice, gather. They work on any element type."""

from __future__ import annotations

import math

import numpy as np

from ..types import TensorType
from .base import AttrSpec, InferError, OpDef, norm_axis, register


@register
class Reshape(OpDef):
    """New shape with the same number of elements; one dimension may be -1 (inferred)."""

    name = "reshape"
    operands = ("x",)
    attrs = {"shape": AttrSpec("ints")}

    def infer(self, types, attrs):
        x = types[0]
        shape = list(attrs["shape"])
        if shape.count(-1) > 1 or any(d < -1 for d in shape):
            raise InferError(f"shape {shape} may hold one -1 and otherwise sizes >= 0")
        if -1 in shape:
            known = math.prod(d for d in shape if d != -1)
            if known == 0 or x.size % known:
                raise InferError(f"cannot infer -1 in {shape} for {x.size} elements")
            shape[shape.index(-1)] = x.size // known
        if math.prod(shape) != x.size:
            raise InferError(f"cannot reshape {x} ({x.size} elements) to {shape}")
        return [x.with_shape(shape)]

    def compute(self, args, attrs, out, ins):
        return [args[0].reshape(out[0].shape)]


@register
class Transpose(OpDef):
    name = "transpose"
    operands = ("x",)
    attrs = {"perm": AttrSpec("ints")}

    def infer(self, types, attrs):
        x, perm = types[0], attrs["perm"]
        if sorted(perm) != list(range(x.rank)):
            raise InferError(f"perm {list(perm)} is not a permutation of the {x.rank} axes of {x}")
        return [x.with_shape(x.shape[p] for p in perm)]

    def compute(self, args, attrs, out, ins):
        return [np.transpose(args[0], attrs["perm"]).copy(order="C")]  # (ascontiguousarray makes 0-d 1-d)


@register
class Concat(OpDef):
    name = "concat"
    operands = ("*inputs",)
    attrs = {"axis": AttrSpec("int")}

    def infer(self, types, attrs):
        if not types:
            raise InferError("concat needs at least one operand")
        first = types[0]
        axis = norm_axis(attrs["axis"], first.rank)
        for t in types[1:]:
            if t.dtype != first.dtype or t.rank != first.rank or any(
                a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != axis
            ):
                raise InferError(f"cannot concat {t} with {first} along axis {axis}")
        shape = list(first.shape)
        shape[axis] = sum(t.shape[axis] for t in types)
        return [first.with_shape(shape)]

    def compute(self, args, attrs, out, ins):
        return [np.concatenate(args, axis=attrs["axis"])]


@register
class Slice(OpDef):
    """Python slicing ``x[start:end:step]`` along each listed axis (negative indices count from the end,
    bounds are clamped, as in numpy and ONNX Slice)."""

    name = "slice"
    operands = ("x",)
    attrs = {"starts": AttrSpec("ints"), "ends": AttrSpec("ints"),
             "axes": AttrSpec("ints", ()), "steps": AttrSpec("ints", ())}

    def slices(self, t: TensorType, attrs) -> tuple[slice, ...]:
        starts, ends = attrs["starts"], attrs["ends"]
        axes = attrs["axes"] or tuple(range(len(starts)))
        steps = attrs["steps"] or (1,) * len(starts)
        if not len(starts) == len(ends) == len(axes) == len(steps):
            raise InferError("starts, ends, axes and steps must have the same length")
        out = [slice(None)] * t.rank
        seen = set()
        for s, e, a, st in zip(starts, ends, axes, steps):
            a = norm_axis(a, t.rank)
            if a in seen:
                raise InferError(f"axis {a} is sliced twice")
            if st == 0:
                raise InferError("a slice step cannot be 0")
            seen.add(a)
            out[a] = slice(s, e, st)
        return tuple(out)

    def infer(self, types, attrs):
        x = types[0]
        sl = self.slices(x, attrs)
        return [x.with_shape(len(range(*s.indices(d))) for s, d in zip(sl, x.shape))]

    def compute(self, args, attrs, out, ins):
        return [np.array(args[0][self.slices(ins[0], attrs)], order="C")]


@register
class Gather(OpDef):
    """``take(table, indices, axis)``: an embedding lookup when table is [V, D] and axis is 0.
    An index outside [-size, size) is a runtime error. A packed table (a weight in its packing) is gathered
    along an axis before the last: the rows of its storage, as packed (``unpack`` then gives their codes)."""

    name = "gather"
    operands = ("table", "indices")
    attrs = {"axis": AttrSpec("int", 0)}
    packed_operands = ("table",)  # along an axis before the last: whole rows of its storage, packed as they were

    def infer(self, types, attrs):
        table, idx = types
        if idx.dtype.kind not in ("int", "uint") or idx.dtype.bits < 8:
            raise InferError(f"indices must be i32, i16, i8 or u8, got {idx}")
        axis = norm_axis(attrs["axis"], table.rank)
        shape = table.shape[:axis] + idx.shape + table.shape[axis + 1:]
        if table.layout:
            if axis == table.rank - 1:
                raise InferError(f"a packed table ({table}) is gathered along an axis before its last")
            return [TensorType(table.dtype, shape, table.layout)]
        return [table.with_shape(shape)]

    def compute(self, args, attrs, out, ins):
        table, idx = args
        axis = attrs["axis"] % table.ndim
        n = table.shape[axis]
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = idx[(idx < -n) | (idx >= n)].flat[0]
            raise InferError(f"index {bad} is out of range for axis {axis} of size {n}")
        return [np.take(table, idx, axis=axis)]
