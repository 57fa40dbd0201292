"""Fused ops that onnxruntime's transformer optimizer writes (com.microsoft, and SimplifiedLayerNormalization
which it registers in the default domain): each lowers onto ladder's norms, gelu and element-wise ops."""

from __future__ import annotations

import numpy as np

from .common import broadcast_to
from .ops_nn import inv_std
from .table import MS_DOMAIN, ONNX_DOMAIN, converts


def _last_axis_vector(im, name, d, what):
    v = im.value(name)
    if v.type.shape != (d,):
        raise im.error(f"{im.node.op_type} {what} '{name}' is {v.type}; expected [{d}]")
    return v


def _skip_sum(im, x, with_bias_at: int):
    """input + skip (+ bias): the residual sum both Skip*Normalization ops normalize."""
    d = x.type.shape[-1]
    skip = im.value(im.inp(1))
    s = im.emit("add", [x, skip])
    if im.inp(with_bias_at):
        s = im.emit("add", [s, _last_axis_vector(im, im.inp(with_bias_at), d, "bias")])
    return s


def _check_input(im, x):
    if x.type.rank < 1 or not x.type.dtype.is_float:
        raise im.error(f"{im.node.op_type} takes a float tensor of rank >= 1, got {x.type}")


def _skip_norm_inputs(im, bias_at: int):
    """A Skip*Normalization node's input (checked), epsilon, residual sum (``_skip_sum``) and gamma."""
    x = im.value(im.inp(0))
    _check_input(im, x)
    eps = im.float_attr("epsilon", 1e-12)
    s = _skip_sum(im, x, bias_at)
    return x, eps, s, _last_axis_vector(im, im.inp(2), x.type.shape[-1], "gamma")


@converts("SkipLayerNormalization", domain=MS_DOMAIN)
def _skip_layer_norm(im):
    x, eps, s, gamma = _skip_norm_inputs(im, 4)
    d = x.type.shape[-1]
    beta = [_last_axis_vector(im, im.inp(3), d, "beta")] if im.inp(3) else []
    im.bind(0, im.emit("layernorm", [s, gamma] + beta, {"eps": eps}, out=0))
    if im.out_wanted(1) or im.out_wanted(2):
        mean = im.emit("reduce", [s], {"kind": "mean", "axes": [-1], "keepdims": True},
                       out=1 if im.out_wanted(1) else None)
        im.bind(1, mean)
        if im.out_wanted(2):
            im.bind(2, inv_std(im, s, mean, x.type.rank - 1, d, eps, (d,)))
    if im.out_wanted(3):
        im.bind(3, im.emit("reshape", [s], {"shape": list(s.type.shape)}, out=3))


def _rms_inv(im, s, eps):
    """1 / sqrt(mean(s^2) + eps) over the last axis, [..., 1]."""
    ms = im.emit("reduce", [im.emit("mul", [s, s])], {"kind": "mean", "axes": [-1], "keepdims": True})
    root = im.emit("sqrt", [im.emit("add", [ms, im.fconst(eps, ms)])])
    return im.emit("div", [im.fconst(1.0, root), root])


@converts("SkipSimplifiedLayerNormalization", domain=MS_DOMAIN)
def _skip_simplified_layer_norm(im):
    _, eps, s, gamma = _skip_norm_inputs(im, 3)
    im.bind(0, im.emit("rmsnorm", [s, gamma], {"eps": eps}, out=0))
    if im.out_wanted(1):
        raise im.error("SkipSimplifiedLayerNormalization has no mean output (it is not defined for RMS norm)")
    if im.out_wanted(2):
        im.bind(2, im.emit("reshape", [_rms_inv(im, s, eps)], {"shape": list(s.type.shape[:-1]) + [1]}, out=2))
    if im.out_wanted(3):
        im.bind(3, im.emit("reshape", [s], {"shape": list(s.type.shape)}, out=3))


@converts("SimplifiedLayerNormalization", domain=ONNX_DOMAIN)
@converts("SimplifiedLayerNormalization", domain=MS_DOMAIN)
def _simplified_layer_norm(im):
    x = im.value(im.inp(0))
    _check_input(im, x)
    r = x.type.rank
    axis = im.axis(im.int_attr("axis", -1), r)
    eps = im.float_attr("epsilon", 1e-5)
    lead = list(x.type.shape[:axis])
    d = int(np.prod(x.type.shape[axis:], dtype=np.int64))
    flat = x if axis == r - 1 else im.emit("reshape", [x], {"shape": lead + [d]})
    scale = im.value(im.inp(1))
    if scale.type.shape == (d,) and axis == r - 1:
        im.bind(0, im.emit("rmsnorm", [flat, scale], {"eps": eps}, out=0))
    else:
        y = im.emit("rmsnorm", [flat], {"eps": eps})
        y = y if axis == r - 1 else im.emit("reshape", [y], {"shape": list(x.type.shape)})
        im.bind(0, im.emit("mul", [y, scale], out=0))
    if im.out_wanted(1):
        inv = _rms_inv(im, flat, eps)
        im.bind(1, im.emit("reshape", [inv], {"shape": lead + [1] * (r - axis)}, out=1))


@converts("FastGelu", "BiasGelu", "Gelu", domain=MS_DOMAIN)
def _fast_gelu(im):
    x = im.value(im.inp(0))
    _check_input(im, x)
    if im.inp(1):
        x = im.emit("add", [x, _last_axis_vector(im, im.inp(1), x.type.shape[-1], "bias")])
    approx = "tanh" if im.node.op_type == "FastGelu" else "none"
    im.bind(0, im.emit("gelu", [x], {"approximate": approx}, out=0))


@converts("RotaryEmbedding", domain=MS_DOMAIN)
def _rotary(im):
    """x [B, S, N*H] or [B, N, S, H]; position_ids [B, S] (or [1]: an offset); cos/sin caches [max, rd/2]."""
    x = im.value(im.inp(0))
    _check_input(im, x)
    interleaved = im.int_attr("interleaved", 0)
    if im.int_attr("is_packed_batching", 0):
        raise im.error("RotaryEmbedding with is_packed_batching=1 is not supported")
    scale = im.float_attr("scale", 1.0)
    cos_c, sin_c = im.value(im.inp(2)), im.value(im.inp(3))
    if cos_c.type.rank != 2 or sin_c.type.shape != cos_c.type.shape:
        raise im.error(f"RotaryEmbedding caches must both be [max_len, rotary_dim / 2], got {cos_c.type} "
                       f"and {sin_c.type}")
    half = cos_c.type.shape[1]
    if x.type.rank == 3:
        n = im.int_attr("num_heads", 0)
        b, s, hidden = x.type.shape
        if n <= 0 or hidden % n:
            raise im.error(f"RotaryEmbedding of a 3-D input needs num_heads dividing {hidden}, got {n}")
        h = hidden // n
        xs = im.emit("reshape", [x], {"shape": [b, s, n, h]})
        seq_axis = 1
    elif x.type.rank == 4:
        b, n, s, h = x.type.shape
        xs, seq_axis = x, 2
    else:
        raise im.error(f"RotaryEmbedding takes a 3-D or 4-D input, got {x.type}")
    rd = im.int_attr("rotary_embedding_dim", 0) or 2 * half
    if rd != 2 * half or rd > h or rd % 2:
        raise im.error(f"RotaryEmbedding rotary dim {rd} does not fit head size {h} and caches of width {half}")
    pos = _positions(im, b, s, cos_c.type.shape[0])
    cos = im.emit("gather", [cos_c, pos], {"axis": 0})   # [B, S, half]
    sin = im.emit("gather", [sin_c, pos], {"axis": 0})
    bshape = [b, s, 1, half] if seq_axis == 1 else [b, 1, s, half]
    cos = im.emit("reshape", [cos], {"shape": bshape})
    sin = im.emit("reshape", [sin], {"shape": bshape})
    if scale != 1.0:
        xs = im.emit("mul", [xs, im.fconst(scale, xs)])
    lead = list(xs.type.shape[:-1])
    rot = xs if rd == h else im.emit("slice", [xs], {"starts": [0], "ends": [rd], "axes": [-1]})
    if interleaved:
        pairs = im.emit("reshape", [rot], {"shape": lead + [half, 2]})
        x1 = im.emit("reshape", [im.emit("slice", [pairs], {"starts": [0], "ends": [1], "axes": [-1]})],
                     {"shape": lead + [half]})
        x2 = im.emit("reshape", [im.emit("slice", [pairs], {"starts": [1], "ends": [2], "axes": [-1]})],
                     {"shape": lead + [half]})
    else:
        x1 = im.emit("slice", [rot], {"starts": [0], "ends": [half], "axes": [-1]})
        x2 = im.emit("slice", [rot], {"starts": [half], "ends": [rd], "axes": [-1]})
    y1 = im.emit("sub", [im.emit("mul", [x1, cos]), im.emit("mul", [x2, sin])])
    y2 = im.emit("add", [im.emit("mul", [x2, cos]), im.emit("mul", [x1, sin])])
    if interleaved:
        y = im.emit("concat", [im.emit("reshape", [y1], {"shape": lead + [half, 1]}),
                               im.emit("reshape", [y2], {"shape": lead + [half, 1]})], {"axis": -1})
        y = im.emit("reshape", [y], {"shape": lead + [rd]})
    else:
        y = im.emit("concat", [y1, y2], {"axis": -1})
    if rd < h:
        y = im.emit("concat", [y, im.emit("slice", [xs], {"starts": [rd], "ends": [h], "axes": [-1]})],
                    {"axis": -1})
    im.bind(0, im.emit("reshape", [y], {"shape": list(x.type.shape)}, out=0))


def _positions(im, b, s, max_len):
    """position_ids as i32 [B, S]; a one-element position_ids is the offset of positions 0 .. S-1."""
    name = im.inp(1)
    known = im.known(name)
    if known is not None:
        p = np.asarray(known).astype(np.int64)
        if p.size == 1:
            p = np.broadcast_to(p.reshape(1, 1) + np.arange(s)[None, :], (b, s))
        if p.shape != (b, s):
            raise im.error(f"RotaryEmbedding position_ids {list(p.shape)} is not [{b}, {s}] or [1]")
        if p.size and (p.min() < 0 or p.max() >= max_len):
            raise im.error(f"RotaryEmbedding position {int(p.max())} is outside the cache of {max_len}")
        return im.const(p.astype(np.int32), "i32", "positions")
    p = im.value(name)
    if p.type.dtype.kind not in ("int", "uint"):
        raise im.error(f"RotaryEmbedding position_ids must be integers, got {p.type}")
    if p.type.size == 1:
        p = im.emit("add", [im.emit("reshape", [p], {"shape": [1, 1]}),
                            im.const(np.arange(s, dtype=np.int32).reshape(1, s), "i32", "arange")])
        return broadcast_to(im, p, (b, s))
    if p.type.shape != (b, s):
        raise im.error(f"RotaryEmbedding position_ids {p.type} is not [{b}, {s}] or [1]")
    return p


@converts("QuickGelu", domain=MS_DOMAIN)
def _quick_gelu(im):
    """x * sigmoid(alpha * x): silu when alpha is 1."""
    x = im.value(im.inp(0))
    _check_input(im, x)
    alpha = im.float_attr("alpha", 1.702)
    if alpha == 1.0:
        im.bind(0, im.emit("silu", [x], out=0))
        return
    s = im.emit("sigmoid", [im.emit("mul", [x, im.fconst(alpha, x)])])
    im.bind(0, im.emit("mul", [x, s], out=0))


@converts("FusedMatMul", domain=MS_DOMAIN)
def _fused_matmul(im):
    """alpha * op(A) @ op(B), op a transpose of the last two axes."""
    from .ops_nn import matmul

    a, b = im.value(im.inp(0)), im.value(im.inp(1))
    if im.int_attr("transBatchA", 0) or im.int_attr("transBatchB", 0):
        raise im.error("FusedMatMul with transBatchA/transBatchB is not supported")
    if a.type.dtype != b.type.dtype or a.type.rank < 2 or b.type.rank < 2:
        raise im.error(f"FusedMatMul takes two float tensors of rank >= 2 with one type, got {a.type}, {b.type}")
    if im.int_attr("transA", 0):
        perm = list(range(a.type.rank - 2)) + [a.type.rank - 1, a.type.rank - 2]
        a = im.emit("transpose", [a], {"perm": perm})
    alpha = im.float_attr("alpha", 1.0)
    y = matmul(im, a, b, out=None if alpha != 1.0 else 0, transpose_b=bool(im.int_attr("transB", 0)))
    if alpha != 1.0:
        y = im.emit("mul", [y, im.fconst(alpha, y)], out=0)
    im.bind(0, y)
