"""Quantization ONNX ops: QuantizeLinear / DequantizeLinear (weights behind DequantizeLinear become low-bit
params), MatMulInteger, QLinearMatMul, DynamicQuantizeLinear, and com.microsoft MatMulNBits and
MatMulIntegerToFloat (what onnxruntime's quantize_dynamic and its 4-bit quantizer write)."""

from __future__ import annotations

import math

import numpy as np

from ladder.ir import Value
from ladder.types import DTYPES

from .common import ONNX_TO_LADDER, type_name
from .ops_nn import matmul
from .table import MS_DOMAIN, converts


def int_minus_zero(im, x: Value, zp_name: str | None, axis_of_vector: int) -> Value:
    """i32(x) - zero point (a scalar, or a vector along ``axis_of_vector`` of a 2-D x)."""
    xi = im.emit("cast", [x], {"dtype": "i32"})
    if not zp_name:
        return xi
    zk = im.known(zp_name)
    if zk is not None and not np.any(zk):
        return xi
    z = im.value(zp_name)
    z = im.emit("cast", [z], {"dtype": "i32"}) if z.type.dtype.name != "i32" else z
    if z.type.size > 1 and z.type.rank == 1 and x.type.rank >= 2:
        shape = [1] * x.type.rank
        shape[axis_of_vector] = z.type.size
        z = im.emit("reshape", [z], {"shape": shape})
    return im.emit("sub", [xi, z])


def int8_dot(im, a: Value, b_name: str, a_zero: str | None, b_zero: str | None, out: int | None) -> Value | None:
    """(A - a_zero) @ B in i32 through ``qmatmul_i8`` (the int8 dot-product kernel), where B is a 2-D int8
    weight (an initializer) with no zero point and A 8-bit codes with at most one zero point:
    (A - 128) as int8 codes (uint8 A) times B, plus (128 - a_zero) * colsum(B); the transpose and column sums
    are weight-only, computed once. The dot product passes through f32: exact while below 2^24 in magnitude,
    else rounded once, as onnxruntime's MatMulIntegerToFloat rounds it. None where this does not apply."""
    b = im.value(b_name)
    zb = im.known(b_zero) if b_zero else None
    if (b_name not in im.inits or b.type.dtype.name != "i8" or b.type.rank != 2 or a.type.rank < 2
            or a.type.dtype.name not in ("u8", "i8") or (b_zero and (zb is None or np.any(zb)))
            or (a_zero and im.value(a_zero).type.size != 1)):
        return None
    shift = 128 if a.type.dtype.name == "u8" else 0
    x = a
    if shift:
        xi = im.emit("cast", [a], {"dtype": "i32"})
        x = im.emit("cast", [im.emit("sub", [xi, im.const(np.full((1,) * a.type.rank, shift), "i32", "c128")])],
                    {"dtype": "i8"})
    bt = im.emit("transpose", [b], {"perm": [1, 0]})
    one = im.const(np.ones((1, 1)), "f32", "one")
    acc = im.emit("cast", [im.emit("qmatmul_i8", [x, bt, one, one], {"transpose_b": True})], {"dtype": "i32"},
                  out=None if (shift or a_zero) else out)
    if not shift and not a_zero:
        return acc
    moved = im.const(np.array([shift]), "i32", "shift")  # 128 - a_zero, the codes' move
    if a_zero:
        z = im.emit("reshape", [im.emit("cast", [im.value(a_zero)], {"dtype": "i32"})], {"shape": [1]})
        moved = im.emit("sub", [moved, z])
    colsum = im.emit("reduce", [im.emit("cast", [b], {"dtype": "i32"})], {"kind": "sum", "axes": [0]})
    return im.emit("add", [acc, im.emit("mul", [colsum, moved])], out=out)


@converts("MatMulInteger")

def _matmulinteger(im):
    a, b = im.value(im.inp(0)), im.value(im.inp(1))
    fast = int8_dot(im, a, im.inp(1), im.inp(2) or None, im.inp(3) or None, 0)
    if fast is not None:
        im.bind(0, fast)
        return
    if not im.inp(2) and not im.inp(3):
        im.bind(0, matmul(im, a, b))
        return
    ai = int_minus_zero(im, a, im.inp(2), a.type.rank - 2)
    bi = int_minus_zero(im, b, im.inp(3), b.type.rank - 1)
    im.bind(0, matmul(im, ai, bi))


@converts("QLinearMatMul")

def _qlinearmatmul(im):
    n = list(im.node.input) + [""] * 8
    a, b = im.value(n[0]), im.value(n[3])
    ai = int_minus_zero(im, a, n[2], a.type.rank - 2)
    bi = int_minus_zero(im, b, n[5], b.type.rank - 1)
    f = im.emit("cast", [matmul(im, ai, bi, out=None)], {"dtype": "f32"})
    sa, sb, sy = (im.known(n[i]) for i in (1, 4, 6))
    if all(s is not None and s.size == 1 for s in (sa, sb, sy)):  # a * b / y as ONNX computes it
        mult = sa.astype(np.float32).reshape(()) * sb.astype(np.float32).reshape(()) \
            / sy.astype(np.float32).reshape(())
        m = im.const(np.full((1,) * f.type.rank, mult, np.float32), "f32", "mult")
    else:
        va, vb, vy = (f32_value(im, n[i]) for i in (1, 4, 6))
        if vb.type.rank == 1 and vb.type.size > 1:
            vb = im.emit("reshape", [vb], {"shape": [1, vb.type.size]})
        if va.type.rank == 1 and va.type.size > 1:
            va = im.emit("reshape", [va], {"shape": [va.type.size, 1]})
        m = im.emit("div", [im.emit("mul", [va, vb]), vy])
    f = im.emit("mul", [f, m])
    zero = None
    zk = im.known(n[7]) if n[7] else None
    if n[7] and not (zk is not None and not np.any(zk)):
        zero = f32_value(im, n[7])
    out_dt = value_dtype(im, n[7]) if n[7] else a.type.dtype.name
    im.bind(0, finish_q(im, f, zero, out_dt, out=0))


def f32_value(im, name: str) -> Value:
    k = im.known(name)
    if k is not None and name not in im.inits:
        return im.const(k.astype(np.float32), "f32", hint=f"{name}.f32")
    v = im.value(name)
    return v if v.type.dtype.name == "f32" else im.emit("cast", [v], {"dtype": "f32"})


def value_dtype(im, name: str) -> str:
    k = im.known(name)
    if k is not None:
        return im.ladder_dtype(k, f"'{name}'")
    return im.value(name).type.dtype.name


# quantization ------------------------------------------------------------------------------------

def quant_layout(im, x_shape, s_shape, axis: int, block: int) -> tuple[str, tuple[int, ...]]:
    """('tensor' | 'axis' | 'block', scale shape at x's rank)."""
    r = len(x_shape)
    if math.prod(s_shape) == 1 and (block == 0 or len(s_shape) <= 1):
        return "tensor", (1,) * max(r, 1)
    a = im.axis(axis, r)
    if block < 0:
        raise im.error(f"block_size {block} is negative")
    if block:
        if len(s_shape) != r:
            raise im.error(f"blocked quantization needs a scale of rank {r}, got {list(s_shape)}")
        return "block", tuple(s_shape)
    if len(s_shape) != 1 or s_shape[0] != x_shape[a]:
        raise im.error(f"per-axis scale {list(s_shape)} does not match axis {a} of {list(x_shape)}")
    shape = [1] * r
    shape[a] = x_shape[a]
    return "axis", tuple(shape)


@converts("DequantizeLinear")

def _dequantizelinear(im):
    xname, sname, zname = im.inp(0), im.inp(1), im.inp(2)
    xk = im.inits.get(xname)
    sk, zk = im.known(sname), (im.known(zname) if zname else None)
    x_shape = tuple(xk.shape) if xk is not None else im.value(xname).type.shape
    s_shape = tuple(sk.shape) if sk is not None else im.value(sname).type.shape
    r = max(len(x_shape), 1)
    axis = im.int_attr("axis", 1) if len(x_shape) else 0
    block = im.int_attr("block_size", 0)
    layout, sshape = quant_layout(im, x_shape or (1,), s_shape, axis, block)
    if not x_shape:
        x_shape = ()
    # Output type: the scale's (or output_dtype's).
    out_dt = ONNX_TO_LADDER.get(im.int_attr("output_dtype", 0)) if im.int_attr("output_dtype", 0) else None
    s_dt = (im.ladder_dtype(sk, f"scale '{sname}'") if sk is not None else im.value(sname).type.dtype.name)
    out_dt = out_dt or s_dt
    # codes
    if xk is not None:
        cdt = im.ladder_dtype(xk, f"'{xname}'")
        codes = im.param(xname, xk.reshape(x_shape or (1,)), cdt)
    else:
        codes = im.value(xname)
        if not x_shape:
            codes = im.emit("reshape", [codes], {"shape": [1]})
    cdt = codes.type.dtype
    wide = cdt.bits > 8
    if cdt.kind not in ("int", "uint", "float"):
        raise im.error(f"DequantizeLinear of {codes.type} codes is not supported")
    # scale and zero as f32 at x's rank
    scale = scale_value(im, sname, sk, sshape)
    zero = None
    if zname and not (zk is not None and not np.any(zk)):
        zero = scale_value(im, zname, zk, sshape, is_zero=True)
    if layout == "tensor":
        lax, group = (r - 2 if r >= 2 else 0), -1
    elif layout == "axis":
        a = im.axis(axis, r)
        lax, group = (0 if r == 1 else (r - 2 if a == r - 1 else r - 1)), 0
    else:
        lax, group = im.axis(axis, r), block
    if wide:  # i16/i32 codes: the dequant op takes <= 8-bit codes, so compose it
        im.bind(0, dequant_wide(im, codes, scale, zero, out_dt, layout,
                                im.axis(axis, r) if layout != "tensor" else 0, block, bool(x_shape)))
        return
    attrs = {"axis": lax, "group": group, "dtype": out_dt}
    if zero is not None:
        attrs["zero_mode"] = "original"
    y = im.emit("dequant", [codes, scale] + ([zero] if zero is not None else []), attrs,
                  out=None if not x_shape else 0)
    if not x_shape:
        y = im.emit("reshape", [y], {"shape": []}, out=0)
    im.bind(0, y)


def expand_blocks(im, s: Value, x: Value, axis: int, block: int) -> Value:
    """A blocked scale [.., ceil(D / block), ..] repeated to x's shape along ``axis`` (a gather)."""
    d = x.type.shape[axis]
    idx = im.const((np.arange(d) // block).astype(np.int32), "i32", hint=f"{s.name}.blocks")
    return im.emit("gather", [s, idx], {"axis": axis})


def dequant_wide(im, codes, scale, zero, out_dt, layout, axis, block, shaped) -> Value:
    """(f32(codes) - zero) * scale for codes wider than 8 bits."""
    f = im.emit("cast", [codes], {"dtype": "f32"})
    if layout == "block":
        scale = expand_blocks(im, scale, codes, axis, block)
        zero = expand_blocks(im, zero, codes, axis, block) if zero is not None else None
    if zero is not None:
        f = im.emit("sub", [f, zero])
    y = im.emit("mul", [f, scale])
    if not shaped:
        y = im.emit("reshape", [y], {"shape": []})
    return im.emit("cast", [y], {"dtype": out_dt}, out=0)


def scale_value(im, name: str, known, shape, is_zero: bool = False) -> Value:
    """A scale or zero point as an f32 value of ``shape``: an f32 param (initializer), const or a
    reshape + cast of a run-time value."""
    if known is not None:
        arr = np.asarray(known).astype(np.float32).reshape(shape)
        if name in im.inits:
            return im.param(name, arr, "f32")
        return im.const(arr, "f32", hint=name)
    v = im.value(name)
    if v.type.dtype.name != "f32" and (is_zero or not v.type.dtype.is_float):
        v = im.emit("cast", [v], {"dtype": "f32"})
    if v.type.shape != tuple(shape):
        v = im.emit("reshape", [v], {"shape": list(shape)})
    return v


@converts("QuantizeLinear")

def _quantizelinear(im):
    xname, sname, zname = im.inp(0), im.inp(1), im.inp(2)
    x = im.value(xname)
    sk, zk = im.known(sname), (im.known(zname) if zname else None)
    s_shape = tuple(sk.shape) if sk is not None else im.value(sname).type.shape
    x_shape = x.type.shape
    r = max(len(x_shape), 1)
    axis = im.int_attr("axis", 1) if x_shape else 0
    block = im.int_attr("block_size", 0)
    layout, sshape = quant_layout(im, x_shape or (1,), s_shape, axis, block)
    if not x_shape:
        x = im.emit("reshape", [x], {"shape": [1]})
    out_to = im.int_attr("output_dtype", 0)
    if out_to:
        out_dt = ONNX_TO_LADDER.get(out_to)
    elif zname:
        out_dt = value_dtype(im, zname)
    else:
        out_dt = "u8"
    if out_dt is None or DTYPES[out_dt].kind not in ("int", "uint", "float") or \
            (DTYPES[out_dt].is_float and out_dt not in ("fp8e4m3", "fp4")):
        raise im.error(f"QuantizeLinear to {type_name(out_to) if out_to else out_dt} is not supported")
    if out_dt == "fp8e4m3" and not im.int_attr("saturate", 1):
        raise im.error("QuantizeLinear to FLOAT8E4M3FN with saturate=0 is not supported (ladder saturates)")
    fdt = x.type.dtype.name
    scale = scale_value(im, sname, sk, sshape)
    if scale.type.dtype.name != fdt:
        scale = im.emit("cast", [scale], {"dtype": fdt})
    zero_v = None
    if zname and not (zk is not None and not np.any(zk)):
        zero_v = scale_value(im, zname, zk, sshape, is_zero=True)
        if zero_v.type.dtype.name != fdt:
            zero_v = im.emit("cast", [zero_v], {"dtype": fdt})
    if layout == "block":
        scale = expand_blocks(im, scale, x, im.axis(axis, r), block)
        if zero_v is not None:
            zero_v = expand_blocks(im, zero_v, x, im.axis(axis, r), block)
    q = im.emit("div", [x, scale])
    y = finish_q(im, q, zero_v, out_dt, out=0 if x_shape else None)
    if not x_shape:
        y = im.emit("reshape", [y], {"shape": []}, out=0)
    im.bind(0, y)


def finish_q(im, f: Value, zero: Value | None, out_dt: str, out) -> Value:
    dt = DTYPES[out_dt]
    if dt.is_float:  # float8/float4: no rounding, saturate (ladder's cast saturates)
        if zero is not None:
            f = im.emit("add", [f, zero])
        return im.emit("cast", [f], {"dtype": out_dt}, out=out)
    f = im.emit("round", [f])
    if zero is not None:
        f = im.emit("add", [f, zero])
    lo, hi = dt.value_range
    f = im.emit("clamp", [f], {"min": lo, "max": hi})
    return im.emit("cast", [f], {"dtype": out_dt}, out=out)


# com.microsoft.MatMulNBits ----------------------------------------------------------------------

@converts("MatMulNBits", domain=MS_DOMAIN)

def _matmulnbits(im):
    n = im.node.input
    a = im.value(n[0])
    K, N = im.int_attr("K"), im.int_attr("N")
    bits, block = im.int_attr("bits", 4), im.int_attr("block_size")
    if K <= 0 or N <= 0:
        raise im.error(f"MatMulNBits K={K} and N={N} must be positive")
    if block < 16 or block & (block - 1):
        raise im.error(f"MatMulNBits block_size={block} must be a power of 2 and at least 16")
    if bits not in (2, 4, 8):
        raise im.error(f"MatMulNBits with bits={bits} is not supported (2, 4 and 8 are)")
    if len(n) > 4 and n[4]:
        raise im.error("MatMulNBits with g_idx (act-order) is not supported")
    bk = im.inits.get(n[1])
    sk = im.known(n[2])
    if bk is None or sk is None:
        raise im.error("MatMulNBits needs B and scales as initializers")
    nb = (K + block - 1) // block
    blob = block * bits // 8
    if bk.dtype != np.uint8 or bk.size != N * nb * blob:
        raise im.error(f"MatMulNBits B '{n[1]}' is {bk.dtype}{list(bk.shape)}; expected uint8 "
                         f"[{N}, {nb}, {blob}]")
    if sk.size != N * nb:
        raise im.error(f"MatMulNBits scales '{n[2]}' has {sk.size} values; expected N * n_blocks = {N * nb}")
    if a.type.rank < 1 or a.type.shape[-1] != K:
        raise im.error(f"MatMulNBits input A {a.type} does not have K = {K} columns")
    codes = unpack_bits(bk.reshape(N, nb * blob), bits)[:, :K]  # [N, K] codes 0 .. 2^bits - 1
    scale = im.param(n[2], sk.astype(np.float32).reshape(N, nb), "f32")
    zname = n[3] if len(n) > 3 and n[3] else None
    ddt = a.type.dtype.name
    attrs = {"axis": -1, "group": block, "dtype": ddt}
    if zname is None:
        sdt = {2: "i2", 4: "i4", 8: "i8"}[bits]
        w = im.param(n[1], codes.astype(np.int16) - 2 ** (bits - 1), sdt)
        deq = im.emit("dequant", [w, scale], attrs, hint=f"{n[1]}")
    else:
        zk = im.known(zname)
        if zk is None:
            raise im.error("MatMulNBits needs its zero points as an initializer")
        if zk.dtype == np.uint8:
            per = (nb * bits + 7) // 8
            if zk.size != N * per:
                raise im.error(f"MatMulNBits zero_points '{zname}' has {zk.size} bytes; expected {N * per}")
            z = unpack_bits(zk.reshape(N, per), bits)[:, :nb].astype(np.float32)
        else:
            if zk.size != N * nb:
                raise im.error(f"MatMulNBits zero_points '{zname}' has {zk.size} values; expected {N * nb}")
            z = zk.astype(np.float32).reshape(N, nb)
        udt = {2: "u2", 4: "u4", 8: "u8"}[bits]
        w = im.param(n[1], codes, udt)
        zero = im.param(zname, z, "f32")
        deq = im.emit("dequant", [w, scale, zero], dict(attrs, zero_mode="original"), hint=f"{n[1]}")
    bias = n[5] if len(n) > 5 and n[5] else None
    y = matmul(im, a, deq, out=None if bias else 0, transpose_b=True)
    if bias:
        y = im.emit("add", [y, im.value(bias)], out=0)
    im.bind(0, y)


def unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    """uint8 [..., B] holding ``8 / bits`` codes per byte, lowest bits first -> uint8 [..., B * 8 / bits]."""
    packed = np.asarray(packed, np.uint8)
    per = 8 // bits
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    codes = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.reshape(packed.shape[:-1] + (packed.shape[-1] * per,))


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of ``unpack_bits`` (the last axis a multiple of ``8 / bits``)."""
    codes = np.asarray(codes, np.uint8)
    per = 8 // bits
    grouped = codes.reshape(codes.shape[:-1] + (codes.shape[-1] // per, per))
    out = np.zeros(grouped.shape[:-1], np.uint8)
    for j in range(per):
        out |= (grouped[..., j] & ((1 << bits) - 1)) << (j * bits)
    return out


@converts("DynamicQuantizeLinear")
def _dynamic_quantize_linear(im):
    """ONNX's uint8 recipe: scale = (max(x, 0) - min(x, 0)) / 255, zero = clamp(round(-min / scale)),
    y = clamp(round(x / scale) + zero); an all-zero x gets scale 0 and zero 0 (onnxruntime's choice)."""
    q, scale, zero = _dql(im, im.value(im.inp(0)))
    im.bind(0, im.emit("reshape", [q], {"shape": list(q.type.shape)}, out=0))
    im.bind(1, im.emit("reshape", [scale], {"shape": []}, out=1))
    im.bind(2, im.emit("reshape", [zero], {"shape": []}, out=2))


def _dql(im, x):
    """(u8 codes of x's shape, f32 scale [1, 1], u8 zero [1, 1]) as DynamicQuantizeLinear computes them."""
    if x.type.dtype.name != "f32":
        raise im.error(f"{im.node.op_type} takes f32, got {x.type}")
    r = x.type.rank
    if x.type.size == 0:
        raise im.error(f"{im.node.op_type} of an empty tensor")
    flat = im.emit("reshape", [x], {"shape": [1, x.type.size]})
    hi = im.emit("relu", [im.emit("reduce", [flat], {"kind": "max", "keepdims": True})])
    lo = im.emit("relu", [im.emit("reduce", [im.emit("neg", [flat])], {"kind": "max", "keepdims": True})])
    scale = im.emit("div", [im.emit("add", [hi, lo]), im.fconst(255.0, hi)])       # [1, 1]
    # x / scale with scale 0 (x all zero) must give 0: divide by scale + (scale == 0)
    safe = im.emit("add", [scale, im.emit("cast", [_is_zero(im, scale)], {"dtype": "f32"})])
    zero = im.emit("clamp", [im.emit("round", [im.emit("div", [lo, safe])])], {"min": 0.0, "max": 255.0})
    at_rank = (lambda v: v) if r == 2 else (lambda v: im.emit("reshape", [v], {"shape": [1] * max(r, 1)}))
    q = im.emit("add", [im.emit("round", [im.emit("div", [x, at_rank(safe)])]), at_rank(zero)])
    q = im.emit("cast", [im.emit("clamp", [q], {"min": 0.0, "max": 255.0})], {"dtype": "u8"})
    return q, scale, im.emit("cast", [zero], {"dtype": "u8"})


@converts("DynamicQuantizeMatMul", domain=MS_DOMAIN)
def _dynamic_quantize_matmul(im):
    """DynamicQuantizeLinear of A, then MatMulIntegerToFloat with B (int8/uint8), b_scale, b_zero, bias."""
    n = list(im.node.input) + [""] * 5
    q, scale, zero = _dql(im, im.value(n[0]))
    b = im.value(n[1])
    if b.type.dtype.name not in ("u8", "i8"):
        raise im.error(f"DynamicQuantizeMatMul B must be uint8 or int8, got {b.type}")
    ai = im.emit("sub", [im.emit("cast", [q], {"dtype": "i32"}), im.emit("cast", [zero], {"dtype": "i32"})])
    bi = int_minus_zero(im, b, n[3] or None, b.type.rank - 1)
    f = im.emit("cast", [matmul(im, ai, bi, out=None)], {"dtype": "f32"})
    im.bind(0, _times_scales_plus_bias(im, f, scale, f32_value(im, n[2]), b, n[4], "DynamicQuantizeMatMul"))


def _is_zero(im, s):
    from .ops_math import greater, one_minus

    z = im.fconst(0.0, s)
    return one_minus(im, im.emit("add", [greater(im, s, z), greater(im, z, s)]))


@converts("MatMulIntegerToFloat", domain=MS_DOMAIN)
def _matmul_integer_to_float(im):
    """(A - a_zero) @ (B - b_zero) * a_scale * b_scale (+ bias), in f32: quantize_dynamic's matmul."""
    n = list(im.node.input) + [""] * 7
    a, b = im.value(n[0]), im.value(n[1])
    for v, what in ((a, "A"), (b, "B")):
        if v.type.dtype.name not in ("u8", "i8"):
            raise im.error(f"MatMulIntegerToFloat {what} must be uint8 or int8, got {v.type}")
    acc = int8_dot(im, a, n[1], n[4] or None, n[5] or None, None)
    if acc is None:
        ai = int_minus_zero(im, a, n[4] or None, a.type.rank - 2)
        bi = int_minus_zero(im, b, n[5] or None, b.type.rank - 1)
        acc = matmul(im, ai, bi, out=None)
    f = im.emit("cast", [acc], {"dtype": "f32"})
    sa, sb = f32_value(im, n[2]), f32_value(im, n[3])
    if sa.type.size != 1:
        raise im.error(f"MatMulIntegerToFloat a_scale must be one value, got {sa.type}")
    im.bind(0, _times_scales_plus_bias(im, f, sa, sb, b, n[6], "MatMulIntegerToFloat"))


def _times_scales_plus_bias(im, f: Value, sa: Value, sb: Value, b: Value, bias: str, what: str) -> Value:
    """f * a_scale * b_scale (+ bias, if named), the end of both integer matmuls that give floats. The a_scale
    ``sa`` is one value; the b_scale ``sb`` one value or one per column of B (``b``)."""
    if sb.type.size not in (1, b.type.shape[-1]):
        raise im.error(f"{what} b_scale {sb.type} is neither per-tensor nor per-column")
    m = im.emit("mul", [_rank(im, sa, f.type.rank), _rank(im, sb, f.type.rank)])
    y = im.emit("mul", [f, m], out=None if bias else 0)
    if bias:
        y = im.emit("add", [y, im.value(bias)], out=0)
    return y


def _rank(im, v, r):
    shape = [1] * (r - 1) + [v.type.size]
    return v if list(v.type.shape) == shape else im.emit("reshape", [v], {"shape": shape})
