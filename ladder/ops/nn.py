"""Neural-network ops: softmax, norms, reductions, rotary embedding, attention and the KV cache."""

from __future__ import annotations

import math

import numpy as np

from ..types import TensorType
from .base import AttrSpec, InferError, OpDef, broadcast, need_float, norm_axis, register, to_f32


@register
class Softmax(OpDef):
    name = "softmax"
    operands = ("x",)
    attrs = {"axis": AttrSpec("int", -1)}

    def infer(self, types, attrs):
        need_float(types[0], "the operand of 'softmax'")
        norm_axis(attrs["axis"], types[0].rank)
        return [types[0]]

    def compute(self, args, attrs, out, ins):
        return [softmax(to_f32(args[0]), attrs["axis"]).astype(out[0].dtype.np_dtype)]


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x, axis=axis, keepdims=True)
        e = np.exp(x - np.where(np.isfinite(m), m, 0))
        return e / np.sum(e, axis=axis, keepdims=True)


class _Norm(OpDef):
    """Normalization over the last axis with optional per-feature weight (and bias)."""

    def infer(self, types, attrs):
        x = types[0]
        need_float(x, f"the input of '{self.name}'")
        if x.rank < 1:
            raise InferError(f"'{self.name}' needs rank >= 1, got {x}")
        for role, t in zip(self.operands[1:], types[1:]):
            if t.shape != (x.shape[-1],) or t.dtype != x.dtype:
                raise InferError(f"{role.rstrip('?')} must be {x.dtype}[{x.shape[-1]}], got {t}")
        if attrs["eps"] < 0:
            raise InferError(f"eps must be >= 0, got {attrs['eps']}")
        return [x]


@register
class RmsNorm(_Norm):
    """y = x / sqrt(mean(x^2, last axis) + eps) * weight."""

    name = "rmsnorm"
    operands = ("x", "weight?")
    attrs = {"eps": AttrSpec("float", 1e-6)}

    def compute(self, args, attrs, out, ins):
        x = to_f32(args[0])
        y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(attrs["eps"]))
        if len(args) > 1:
            y = y * to_f32(args[1])
        return [y.astype(out[0].dtype.np_dtype)]


@register
class LayerNorm(_Norm):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, over the last axis (biased variance)."""

    name = "layernorm"
    operands = ("x", "weight?", "bias?")
    attrs = {"eps": AttrSpec("float", 1e-5)}

    def compute(self, args, attrs, out, ins):
        x = to_f32(args[0])
        mu = np.mean(x, axis=-1, keepdims=True)
        var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + np.float32(attrs["eps"]))
        if len(args) > 1:
            y = y * to_f32(args[1])
        if len(args) > 2:
            y = y + to_f32(args[2])
        return [y.astype(out[0].dtype.np_dtype)]


@register
class Reduce(OpDef):
    """Sum, max or mean over ``axes`` (all axes when empty), keeping them as size 1 if ``keepdims``."""

    name = "reduce"
    operands = ("x",)
    attrs = {"kind": AttrSpec("str", choices=("sum", "max", "mean")),
             "axes": AttrSpec("ints", ()), "keepdims": AttrSpec("bool", False)}

    def axes(self, t: TensorType, attrs) -> tuple[int, ...]:
        axes = tuple(norm_axis(a, t.rank) for a in attrs["axes"]) or tuple(range(t.rank))
        if len(set(axes)) != len(axes):
            raise InferError(f"axes {list(attrs['axes'])} repeat an axis")
        return axes

    def infer(self, types, attrs):
        x = types[0]
        if not (x.dtype.is_float or x.dtype.kind in ("int", "uint") and x.dtype.bits >= 8):
            raise InferError(f"reduce takes float or 8/16/32-bit integer tensors, got {x}")
        if attrs["kind"] == "mean":
            need_float(x, "the operand of a mean")
        axes = self.axes(x, attrs)
        if attrs["kind"] == "max" and any(x.shape[a] == 0 for a in axes):
            raise InferError(f"max over an empty axis of {x}")
        shape = [1 if i in axes else d for i, d in enumerate(x.shape)] if attrs["keepdims"] else \
            [d for i, d in enumerate(x.shape) if i not in axes]
        return [x.with_shape(shape)]

    def compute(self, args, attrs, out, ins):
        x, axes, keep = args[0], self.axes(ins[0], attrs), attrs["keepdims"]
        kind, dt = attrs["kind"], out[0].dtype
        if kind == "max":
            return [np.max(x, axis=axes, keepdims=keep).astype(dt.np_dtype)]
        if dt.is_float:
            x = to_f32(x)
            r = np.sum(x, axis=axes, keepdims=keep) if kind == "sum" else np.mean(x, axis=axes, keepdims=keep)
            return [np.asarray(r).astype(dt.np_dtype)]
        with np.errstate(over="ignore"):
            return [np.sum(x.astype(np.int64), axis=axes, keepdims=keep).astype(dt.np_dtype)]


@register
class Rope(OpDef):
    """Rotary position embedding of ``x [..., S, D]`` at integer positions ``pos [S]``.

    Frequencies theta^(-2i/D), i < D/2. ``style = "half"`` rotates (x[:D/2], x[D/2:]) pairs (GPT-NeoX,
    Hugging Face Llama); ``"interleaved"`` rotates (x[2i], x[2i+1]) pairs (GPT-J, llama.cpp's normal mode)."""

    name = "rope"
    operands = ("x", "pos")
    attrs = {"theta": AttrSpec("float", 10000.0),
             "style": AttrSpec("str", "half", ("half", "interleaved"))}

    def infer(self, types, attrs):
        x, pos = types
        need_float(x, "the input of 'rope'")
        if x.rank < 2 or x.shape[-1] % 2:
            raise InferError(f"rope needs x [..., S, D] with even D, got {x}")
        if pos.dtype.kind not in ("int", "uint") or pos.dtype.bits < 8 or pos.shape != (x.shape[-2],):
            raise InferError(f"pos must be an integer tensor of shape [{x.shape[-2]}], got {pos}")
        if attrs["theta"] <= 0:
            raise InferError(f"theta must be > 0, got {attrs['theta']}")
        return [x]

    def compute(self, args, attrs, out, ins):
        x, pos = to_f32(args[0]).astype(np.float64), args[1].astype(np.float64)
        d = x.shape[-1]
        inv_freq = attrs["theta"] ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        ang = pos[:, None] * inv_freq[None, :]
        cos, sin = np.cos(ang), np.sin(ang)
        if attrs["style"] == "half":
            x1, x2 = x[..., : d // 2], x[..., d // 2:]
            y = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        else:
            x1, x2 = x[..., 0::2], x[..., 1::2]
            y = np.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(x.shape)
        return [y.astype(out[0].dtype.np_dtype)]


def _scalar_int(t: TensorType, what: str) -> None:
    if t.dtype.kind not in ("int", "uint") or t.dtype.bits < 8 or t.size != 1:
        raise InferError(f"{what} must be one integer (e.g. i32[1]), got {t}")


@register
class Attention(OpDef):
    """Scaled dot-product attention with a KV cache and grouped-query heads.

    q [..., Hq, Sq, D], k [..., Hkv, Skv, D], v [..., Hkv, Skv, Dv] -> [..., Hq, Sq, Dv]; Hq is a multiple of
    Hkv (query head h reads kv head h // (Hq / Hkv)). The optional ``kv_len`` (one integer L <= Skv) says how
    many cache positions are filled; the queries sit at positions L - Sq .. L - 1. Without it, L = Skv.
    Keys at positions >= L are masked; with ``causal``, query i also sees only keys j <= L - Sq + i.
    ``scale = 0`` means 1 / sqrt(D). With f32 queries, k and v may be a f16 or bf16 cache: computed in f32."""

    name = "attention"
    operands = ("q", "k", "v", "kv_len?")
    attrs = {"causal": AttrSpec("bool", True), "scale": AttrSpec("float", 0.0)}

    def infer(self, types, attrs):
        q, k, v = types[:3]
        for t, role in ((q, "q"), (k, "k"), (v, "v")):
            need_float(t, role)
            if t.rank < 3:
                raise InferError(f"{role} must be [..., heads, seq, dim], got {t}")
        if k.dtype != v.dtype or (k.dtype != q.dtype and q.dtype.name != "f32"):
            raise InferError(f"k and v must have one element type, and q the same or f32 (a f16/bf16 cache "
                             f"read in f32), got {q}, {k}, {v}")
        if q.shape[-1] != k.shape[-1] or k.shape[-3:-1] != v.shape[-3:-1]:
            raise InferError(f"k {k} must match q's dim and v {v}'s heads and length")
        if k.shape[-3] == 0 or q.shape[-3] % k.shape[-3]:
            raise InferError(f"query heads {q.shape[-3]} must be a multiple of kv heads {k.shape[-3]}")
        if len(types) == 4:
            _scalar_int(types[3], "kv_len")
        elif q.shape[-2] > k.shape[-2]:
            raise InferError(f"{q.shape[-2]} queries but only {k.shape[-2]} keys")
        batch = broadcast([q.shape[:-3], k.shape[:-3], v.shape[:-3]])
        return [TensorType(q.dtype, batch + q.shape[-3:-1] + (v.shape[-1],))]

    def compute(self, args, attrs, out, ins):
        q, k, v = (to_f32(a) for a in args[:3])
        sq, skv, d = q.shape[-2], k.shape[-2], q.shape[-1]
        length = int(np.asarray(args[3]).reshape(-1)[0]) if len(args) == 4 else skv
        if not sq <= length <= skv:
            raise InferError(f"kv_len {length} must be between the {sq} queries and the cache size {skv}")
        rep = q.shape[-3] // k.shape[-3]
        k = np.repeat(k, rep, axis=-3)
        v = np.repeat(v, rep, axis=-3)
        scale = attrs["scale"] or 1.0 / math.sqrt(d)
        scores = np.matmul(q, np.swapaxes(k, -1, -2)) * np.float32(scale)
        key_pos = np.arange(skv)[None, :]
        allowed = key_pos < length
        if attrs["causal"]:
            allowed = allowed & (key_pos <= (length - sq + np.arange(sq))[:, None])
        scores = np.where(allowed, scores, -np.inf)
        return [np.matmul(softmax(scores, -1), v).astype(out[0].dtype.np_dtype)]


@register
class CacheWrite(OpDef):
    """The cache with ``new`` written at position ``pos`` along ``axis`` (a functional update of a KV cache).
    Writing past the cache's end is a runtime error."""

    name = "cache_write"
    operands = ("cache", "new", "pos")
    attrs = {"axis": AttrSpec("int", -2)}

    def infer(self, types, attrs):
        cache, new, pos = types
        axis = norm_axis(attrs["axis"], cache.rank)
        if new.dtype != cache.dtype or new.rank != cache.rank or any(
            a != b for i, (a, b) in enumerate(zip(new.shape, cache.shape)) if i != axis
        ) or new.shape[axis] > cache.shape[axis]:
            raise InferError(f"cannot write {new} into cache {cache} along axis {axis}")
        _scalar_int(pos, "pos")
        return [cache]

    def compute(self, args, attrs, out, ins):
        cache, new = args[0], args[1]
        p = int(np.asarray(args[2]).reshape(-1)[0])
        axis = attrs["axis"] % cache.ndim
        n, cap = new.shape[axis], cache.shape[axis]
        if p < 0 or p + n > cap:
            raise InferError(f"writing {n} positions at {p} overflows the cache of {cap}")
        res = np.array(cache, copy=True)
        idx = [slice(None)] * cache.ndim
        idx[axis] = slice(p, p + n)
        res[tuple(idx)] = new
        return [res]
