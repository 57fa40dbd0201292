"""Quantization: how codes + scales (+ zeros) become values, and the recipes that produce them.

Granularity is one convention everywhere (``dequant`` and ``quantize`` ops, packings later):
``axis`` is the axis that groups run along (the reduction axis K of a weight or the hidden axis of a
token), and ``group`` says how many elements share a scale:

* ``group = -1``: per tensor, one scale (scale shape: all ones);
* ``group = 0``: per slice along ``axis`` (per token for activations, per output channel for
  weights ``[N, K]`` with ``axis = -1``); the scale has the tensor's shape with ``axis`` set to 1;
* ``group = g > 0``: groups of ``g`` consecutive elements along ``axis``; the scale has
  ``ceil(D / g)`` entries there (the last group may be partial).

Zero modes: ``none`` (v * s), ``original`` ((v - z) * s, z an integer-valued zero point as in GPTQ) and
``rescale`` (v * s - z, as llama.cpp's Q4_1 stores -min).

Recipes (``quantize`` op):

* ``absmax`` (BitNet's int8 per-token activations): m = max|x| clamped to >= 1e-5;
  q = clip(rint(x * (qmax / m)), qmin, qmax); scale = m / qmax.
* ``absmean`` (BitNet b1.58's ternary weights): m = mean|x| clamped to >= 1e-5;
  q = clip(rint(x * (1 / m)), qmin, qmax); scale = m.
* ``rtn`` round-to-nearest: without zeros, llama.cpp Q4_0's rule: a = the element of largest magnitude
  (signed), s = a / qmin, q = clip(rint(x / s), qmin, qmax) (0 if s = 0). With zeros (unsigned types):
  s = (max - min) / qmax; ``original`` (GPTQ): min <= 0 <= max widened to hold zero,
  z = clip(rint(-min / s), 0, qmax), q = clip(rint(x / s) + z, 0, qmax);
  ``rescale``: z = -min, q = clip(rint((x - min) / s), 0, qmax).

``rint`` rounds half to even. All arithmetic is float32.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .types import DType

SCHEMES = ("absmax", "absmean", "rtn")
ZERO_MODES = ("none", "original", "rescale")
EPS = np.float32(1e-5)


def reduced_shape(shape: tuple[int, ...], axis: int, group: int) -> tuple[int, ...]:
    """Shape of the scale for a tensor of ``shape`` (axis already normalized)."""
    if group < 0:
        return (1,) * len(shape)
    out = list(shape)
    out[axis] = 1 if group == 0 else math.ceil(shape[axis] / group)
    return tuple(out)


def expand(scale: np.ndarray, shape: tuple[int, ...], axis: int, group: int) -> np.ndarray:
    """Broadcast a scale (or zero) of granularity (axis, group) to the full ``shape``."""
    scale = np.asarray(scale)
    if scale.size == 1:
        return np.broadcast_to(scale.reshape(()), shape)
    if group > 0 and scale.shape[axis] > 1:
        # index, not np.repeat: a group far longer than the axis must not cost group x the memory
        scale = np.take(scale, np.arange(shape[axis]) // group, axis=axis)
    return np.broadcast_to(scale, shape)


def _grouped(x: np.ndarray, axis: int, group: int):
    """View ``x`` as [..., n_groups, group, ...] along axis, padding a partial group with NaN."""
    if group < 0:
        return x.reshape((1,) * x.ndim + (-1,)), lambda r: r.reshape((1,) * x.ndim)
    if group == 0:
        return np.moveaxis(x, axis, -1)[..., None, :], lambda r: np.moveaxis(r, -1, axis)
    d = x.shape[axis]
    if 0 < d <= group:  # one granule holds the whole axis; padding it to ``group`` would only waste memory
        return np.moveaxis(x, axis, -1)[..., None, :], lambda r: np.moveaxis(r, -1, axis)
    n = math.ceil(d / group)
    moved = np.moveaxis(x, axis, -1)
    pad = n * group - d
    if pad:
        moved = np.concatenate([moved, np.full(moved.shape[:-1] + (pad,), np.nan, np.float32)], axis=-1)
    grouped = moved.reshape(moved.shape[:-1] + (n, group))
    return grouped, lambda r: np.moveaxis(r, -1, axis)


def group_reduce(x: np.ndarray, axis: int, group: int, how: str) -> np.ndarray:
    """Reduce ``x`` over each granule: 'absmax', 'absmean', 'max', 'min' or 'signed_absmax'.
    An empty granule (an axis of length 0) reduces to 0, so an empty tensor quantizes like an all-zero one."""
    if how not in ("absmax", "absmean", "max", "min", "signed_absmax"):
        raise ValueError(how)
    g, back = _grouped(np.asarray(x, np.float32), axis, group)
    if g.shape[-1] == 0:
        return back(np.zeros(g.shape[:-1], np.float32))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN granule gives NaN, which is the answer
        if how == "absmax":
            r = np.nanmax(np.abs(g), axis=-1)
        elif how == "absmean":
            r = np.nanmean(np.abs(g), axis=-1)
        elif how == "max":
            r = np.nanmax(g, axis=-1)
        elif how == "min":
            r = np.nanmin(g, axis=-1)
        elif how == "signed_absmax":
            filled = np.where(np.isnan(g), 0, g)
            idx = np.argmax(np.abs(filled), axis=-1)
            r = np.take_along_axis(filled, idx[..., None], axis=-1)[..., 0]
    return back(r.astype(np.float32))


def quantize(x: np.ndarray, scheme: str, dt: DType, axis: int, group: int, zero_mode: str):
    """Apply a recipe; returns (codes in dt.np_dtype, scale f32[, zero f32])."""
    x = np.asarray(x, np.float32)
    qmin, qmax = (np.float32(v) for v in dt.value_range)
    shape = x.shape
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if scheme in ("absmax", "absmean"):
            m = np.maximum(group_reduce(x, axis, group, scheme), EPS)
            mult = qmax / m if scheme == "absmax" else np.float32(1) / m
            q = np.clip(np.rint(x * expand(mult, shape, axis, group)), qmin, qmax)
            scale = (m / qmax if scheme == "absmax" else m).astype(np.float32)
            return _codes(q, dt), scale
        if zero_mode == "none":
            s = (group_reduce(x, axis, group, "signed_absmax") / qmin).astype(np.float32)
            inv = np.where(s != 0, np.float32(1) / s, np.float32(0)).astype(np.float32)
            q = np.clip(np.rint(x * expand(inv, shape, axis, group)), qmin, qmax)
            return _codes(q, dt), s
        lo = group_reduce(x, axis, group, "min")
        hi = group_reduce(x, axis, group, "max")
        if zero_mode == "original":  # GPTQ: the range includes 0, so the integer zero point is in [0, qmax]
            lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
        s = ((hi - lo) / qmax).astype(np.float32)
        inv = np.where(s != 0, np.float32(1) / s, np.float32(0)).astype(np.float32)
        inv_full = expand(inv, shape, axis, group)
        if zero_mode == "original":
            z = np.clip(np.rint(-lo * inv), 0, qmax).astype(np.float32)
            q = np.clip(np.rint(x * inv_full) + expand(z, shape, axis, group), 0, qmax)
        else:
            z = (-lo).astype(np.float32)
            q = np.clip(np.rint((x - expand(lo, shape, axis, group)) * inv_full), 0, qmax)
        return _codes(q, dt), s, z


def _codes(q: np.ndarray, dt: DType) -> np.ndarray:
    """Rounded, clipped float codes -> dt. In place and through int16 (every code type has at most 8 bits):
    an int64 copy would take 8 bytes a code where the result takes one."""
    q = np.nan_to_num(np.asarray(q, np.float32), copy=False, nan=0.0)
    return q.astype(np.int16).astype(dt.np_dtype)


def dequantize(codes: np.ndarray, dt: DType, scale: np.ndarray, zero: np.ndarray | None,
               axis: int, group: int, zero_mode: str) -> np.ndarray:
    """codes (in dt.np_dtype) -> float32 values."""
    v = dt.to_values(codes)
    s = expand(np.asarray(scale, np.float32), v.shape, axis, group)
    if zero_mode == "none" or zero is None:
        return (v * s).astype(np.float32)
    z = expand(np.asarray(zero, np.float32), v.shape, axis, group)
    if zero_mode == "original":
        return ((v - z) * s).astype(np.float32)
    return (v * s - z).astype(np.float32)
