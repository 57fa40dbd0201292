"""Shape rules shared by folding and run-time conversion: Reshape/Unsqueeze/Squeeze/Flatten output shapes,
Slice specs and Expand targets, each checked against the input (ONNX's checker rules, not numpy's wrapping)."""

from __future__ import annotations

import math

import numpy as np


def reshaped(im, shape: tuple[int, ...]) -> list[int]:
    """The output shape of the current Reshape / Unsqueeze / Squeeze / Flatten on an input of ``shape``."""
    t = im.node.op_type
    if t == "Reshape":
        spec = im.known_ints(im.inp(1), "the shape")
        allowzero = im.int_attr("allowzero", 0)
        if not allowzero:
            if any(s == 0 and i >= len(shape) for i, s in enumerate(spec)):
                raise im.error(f"Reshape shape {spec} copies a dimension (0) the input {list(shape)} lacks")
            spec = [shape[i] if s == 0 else s for i, s in enumerate(spec)]
        if spec.count(-1) > 1 or any(s < -1 for s in spec):
            raise im.error(f"Reshape shape {spec} is invalid (at most one -1, no other negative)")
        if spec.count(-1) == 1:
            known = math.prod(s for s in spec if s != -1)
            if known == 0 or math.prod(shape) % known:
                raise im.error(f"cannot reshape {list(shape)} to {spec}")
            spec[spec.index(-1)] = math.prod(shape) // known
        if math.prod(spec) != math.prod(shape):
            raise im.error(f"cannot reshape {list(shape)} to {spec}")
        return spec
    if t == "Flatten":
        a = im.int_attr("axis", 1)
        r = len(shape)
        if not -r <= a <= r:
            raise im.error(f"Flatten axis {a} is out of range for rank {r} (valid: {-r} .. {r})")
        a = a + r if a < 0 else a
        return [math.prod(shape[:a]), math.prod(shape[a:])]
    if im.inp(1):  # an input since opset 13, an attribute before
        axes = im.known_ints(im.inp(1), "the axes")
    else:
        axes = im.ints_attr("axes", [])
    if t == "Unsqueeze":
        rank = len(shape) + len(axes)
        axes = sorted(im.axes(axes, rank))
        out = list(shape)
        for a in axes:
            out.insert(a, 1)
        return out
    r = len(shape)
    axes = set(im.axes(axes, r)) if axes else {i for i, d in enumerate(shape) if d == 1}
    for a in axes:
        if shape[a] != 1:
            raise im.error(f"Squeeze of axis {a}, which has size {shape[a]}")
    return [d for i, d in enumerate(shape) if i not in axes]


def slice_spec(im, shape) -> tuple[slice, ...]:
    """Python slices of the current Slice node; lengths, axes and steps are checked, never wrapped."""
    if im.ver() >= 10:
        starts = im.known_ints(im.inp(1), "Slice's starts")
        ends = im.known_ints(im.inp(2), "Slice's ends")
        axes = im.known_ints(im.inp(3), "Slice's axes") if im.inp(3) else list(range(len(starts)))
        steps = im.known_ints(im.inp(4), "Slice's steps") if im.inp(4) else [1] * len(starts)
    else:
        starts, ends = im.ints_attr("starts"), im.ints_attr("ends")
        axes = im.ints_attr("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise im.error(f"Slice starts, ends, axes and steps have unequal lengths "
                       f"({len(starts)}, {len(ends)}, {len(axes)}, {len(steps)})")
    axes = im.axes(axes, len(shape), "axes")
    out = [slice(None)] * len(shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        if st == 0:
            raise im.error(f"Slice step 0 on axis {a}")
        start, stop, step = slice(int(s), int(e), int(st)).indices(shape[a])
        if step < 0 and stop < 0:
            stop = -shape[a] - 1
        out[a] = slice(start, stop, step)
    return tuple(out)


def expand_shape(im, shape: tuple[int, ...], spec: list[int]) -> tuple[int, ...]:
    """Expand's output: the two-way broadcast of ``shape`` and ``spec`` (ONNX Expand rules)."""
    if any(d < 0 for d in spec):
        raise im.error(f"Expand shape {spec} has a negative dimension")
    try:
        return tuple(int(d) for d in np.broadcast_shapes(tuple(shape), tuple(spec)))
    except ValueError:
        raise im.error(f"Expand of {list(shape)} to {spec}: the shapes do not broadcast") from None


def broadcast_shape(im, *shapes) -> tuple[int, ...]:
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        raise im.error(f"{im.node.op_type} operands {', '.join(str(list(s)) for s in shapes)} do not "
                       f"broadcast") from None
