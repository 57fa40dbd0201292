"""Every registered op, built with ladder.Builder, run by the reference interpreter and compared against a
hand-written numpy formula (never against ladder's own compute functions)."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

import ladder
from ladder import Builder
from ladder.ops import OPS

COVERED: set[str] = set()


def covers(*ops):
    """Record that the decorated test checks the semantics of ``ops``."""
    COVERED.update(ops)

    def deco(fn):
        return fn

    return deco


def run(b: Builder, outs, inputs=None, weights=None):
    """Build the graph with ``outs`` as outputs, run it and return the output arrays (one or a list)."""
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    g = b.build(*outs)
    res = ladder.run(g, inputs or {}, weights or {})
    arrs = [res[o.name] for o in outs]
    return arrs[0] if len(arrs) == 1 else arrs


def rng(seed=0):
    return np.random.default_rng(seed)


def f32(a):
    return np.asarray(a, dtype=np.float32)


# ---------------------------------------------------------------------------------------------- matmul

@covers("matmul")
def test_matmul_batched_float():
    r = rng(1)
    a, w = f32(r.standard_normal((2, 3, 4))), f32(r.standard_normal((2, 4, 5)))
    b = Builder()
    x, y = b.input("a", "f32[2, 3, 4]"), b.input("b", "f32[2, 4, 5]")
    out = run(b, b.matmul(x, y), {"a": a, "b": w})
    ref = np.zeros((2, 3, 5))
    for n in range(2):
        for i in range(3):
            for j in range(5):
                ref[n, i, j] = sum(float(a[n, i, k]) * float(w[n, k, j]) for k in range(4))
    assert out.dtype == np.float32 and out.shape == (2, 3, 5)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@covers("matmul")
def test_matmul_broadcast_batch():
    r = rng(2)
    a, w = f32(r.standard_normal((2, 1, 3, 4))), f32(r.standard_normal((3, 4, 5)))
    b = Builder()
    x, y = b.input("a", "f32[2, 1, 3, 4]"), b.input("b", "f32[3, 4, 5]")
    out = run(b, b.matmul(x, y), {"a": a, "b": w})
    assert out.shape == (2, 3, 3, 5)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(out[i, j], a[i, 0].astype(np.float64) @ w[j], rtol=1e-5, atol=1e-5)


@covers("matmul")
def test_matmul_transpose_b_and_f16():
    r = rng(3)
    a, w = r.standard_normal((3, 4)).astype(np.float16), r.standard_normal((5, 4)).astype(np.float16)
    b = Builder()
    x, y = b.input("a", "f16[3, 4]"), b.input("b", "f16[5, 4]")
    out = run(b, b.matmul(x, y, transpose_b=True), {"a": a, "b": w})
    assert out.dtype == np.float16 and out.shape == (3, 5)
    ref = np.einsum("mk,nk->mn", a.astype(np.float64), w.astype(np.float64))
    np.testing.assert_allclose(out.astype(np.float64), ref, rtol=2e-3, atol=2e-3)


@covers("matmul", "param")
def test_matmul_int8_by_ternary_param_gives_exact_i32():
    r = rng(4)
    xa = r.integers(-128, 128, (2, 16)).astype(np.int8)
    wt = r.integers(-1, 2, (6, 16)).astype(np.int8)
    b = Builder()
    x = b.input("x", "i8[2, 16]")
    w = b.param("w", "ternary[6, 16]")
    out = run(b, b.matmul(x, w, transpose_b=True), {"x": xa}, {"w": wt})
    assert out.dtype == np.int32
    ref = [[sum(int(xa[m, k]) * int(wt[n, k]) for k in range(16)) for n in range(6)] for m in range(2)]
    np.testing.assert_array_equal(out, np.array(ref))


@covers("matmul")
def test_matmul_integer_accumulation_wraps_int32():
    av = np.array([[2**30, 2**30, 2**30, 2**30], [2**30, 2**30, -7, 0], [-(2**31), -1, 0, 0]], np.int32)
    wv = np.array([[1, 1], [1, -1], [1, 1], [1, 0]], np.int8)
    b = Builder()
    x = b.input("a", "i32[3, 4]")
    w = b.input("w", "ternary[4, 2]")
    out = run(b, b.matmul(x, w), {"a": av, "w": wv})

    def wrap(v):
        return ((v + 2**31) % 2**32) - 2**31

    ref = [[wrap(sum(int(av[m, k]) * int(wv[k, n]) for k in range(4))) for n in range(2)] for m in range(3)]
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, np.array(ref, np.int64))
    assert out[0, 0] == 0 and out[1, 0] == 2**31 - 7 and out[1, 1] == -7  # 4 * 2^30 wraps to 0
    assert out[2, 0] == 2**31 - 1  # -2^31 - 1 wraps to the largest i32


# ---------------------------------------------------------------------------------------------- dequant

NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0]


@covers("dequant")
def test_dequant_per_tensor():
    codes = rng(5).integers(-128, 128, (3, 4)).astype(np.int8)
    b = Builder()
    c, s = b.input("c", "i8[3, 4]"), b.input("s", "f32[1]")
    out = run(b, b.dequant(c, s), {"c": codes, "s": f32([0.25])})
    np.testing.assert_array_equal(out, codes.astype(np.float32) * np.float32(0.25))


@covers("dequant")
def test_dequant_per_channel_both_axes():
    codes = rng(6).integers(-1, 2, (3, 4)).astype(np.int8)
    rows, cols = f32([[0.5], [2.0], [3.0]]), f32([[1.0, -2.0, 0.125, 4.0]])
    b = Builder()
    sr, sc = b.input("sr", "f32[3, 1]"), b.input("sc", "f32[1, 4]")
    c = b.param("w", "ternary[3, 4]")
    o1 = b.dequant(c, sr, axis=-1, group=0)
    o2 = b.dequant(c, sc, axis=0, group=0)
    r1, r2 = run(b, [o1, o2], {"sr": rows, "sc": cols}, {"w": codes})
    for i in range(3):
        for j in range(4):
            assert r1[i, j] == codes[i, j] * rows[i, 0]
            assert r2[i, j] == codes[i, j] * cols[0, j]


@covers("dequant")
def test_dequant_groupwise_partial_last_group():
    codes = rng(7).integers(-8, 8, (2, 10)).astype(np.int8)
    scale = f32(rng(8).uniform(0.1, 2.0, (2, 3)))
    b = Builder()
    c, s = b.input("c", "i4[2, 10]"), b.input("s", "f32[2, 3]")
    out = run(b, b.dequant(c, s, group=4), {"c": codes, "s": scale})
    ref = np.empty((2, 10), np.float32)
    for i in range(2):
        for j in range(10):
            ref[i, j] = np.float32(codes[i, j]) * scale[i, j // 4]
    np.testing.assert_array_equal(out, ref)


@covers("dequant")
@pytest.mark.parametrize("mode", ["original", "rescale"])
def test_dequant_zero_modes_groupwise(mode):
    codes = rng(9).integers(0, 16, (2, 6)).astype(np.uint8)
    scale = f32([[0.5, 0.25], [2.0, 1.0]])
    zero = f32([[8.0, 3.0], [1.5, -2.0]])
    b = Builder()
    c, s, z = b.input("c", "u4[2, 6]"), b.input("s", "f32[2, 2]"), b.input("z", "f32[2, 2]")
    out = run(b, b.dequant(c, s, z, group=3, zero_mode=mode), {"c": codes, "s": scale, "z": zero})
    ref = np.empty((2, 6), np.float32)
    for i in range(2):
        for j in range(6):
            v, sc, zz = float(codes[i, j]), float(scale[i, j // 3]), float(zero[i, j // 3])
            ref[i, j] = (v - zz) * sc if mode == "original" else v * sc - zz
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)


@covers("dequant")
def test_dequant_nf4_codes_per_channel():
    codes = np.arange(16, dtype=np.uint8).reshape(2, 8)
    scale = f32([[2.0], [0.5]])
    b = Builder()
    c, s = b.input("c", "nf4[2, 8]"), b.input("s", "f32[2, 1]")
    out = run(b, b.dequant(c, s), {"c": codes, "s": scale})
    ref = np.array([[NF4[codes[i, j]] * scale[i, 0] for j in range(8)] for i in range(2)], np.float32)
    np.testing.assert_allclose(out, ref, rtol=1e-6)


@covers("dequant")
def test_dequant_fp4_codes():
    vals = f32([[0.0, 0.5, 1.0, 1.5], [2.0, 3.0, -4.0, -6.0]])
    b = Builder()
    c, s = b.input("c", "fp4[2, 4]"), b.input("s", "f32[1]")
    out = run(b, b.dequant(c, s), {"c": vals, "s": f32([1.5])})
    np.testing.assert_array_equal(out, vals * np.float32(1.5))


@covers("dequant")
def test_dequant_f16_result():
    codes = np.array([[-8, 7, 3, -1]], np.int8)
    b = Builder()
    c, s = b.input("c", "i4[1, 4]"), b.input("s", "f32[1, 1]")
    out = run(b, b.dequant(c, s, dtype="f16"), {"c": codes, "s": f32([[0.1]])})
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, (codes.astype(np.float32) * np.float32(0.1)).astype(np.float16))


@covers("dequant")
def test_dequant_rejects_wide_integer_codes():
    b = Builder()
    c, s = b.input("c", "i32[2, 4]"), b.input("s", "f32[1]")
    with pytest.raises(ladder.VerifyError, match="dequant"):
        b.dequant(c, s)


@covers("dequant")
def test_dequant_per_tensor_group_rejects_per_row_scale():
    b = Builder()
    c, s = b.input("c", "i8[2, 4]"), b.input("s", "f32[2, 1]")
    with pytest.raises(ladder.VerifyError, match="dequant"):
        b.dequant(c, s, group=-1)


# ---------------------------------------------------------------------------------------------- quantize

def _bitnet_act_quant(x):
    x = f32(x)
    s = np.float32(127) / np.maximum(np.abs(x).max(-1, keepdims=True), np.float32(1e-5))
    return np.clip(np.round(x * s), -128, 127), s


@covers("quantize")
def test_quantize_absmax_i8_per_token_matches_bitnet():
    r = rng(10)
    x = f32(r.standard_normal((5, 32)) * np.array([[0.01], [1], [10], [300], [0]]))
    x[1, 3] = 7.0  # a dominant outlier in one token
    b = Builder()
    xi = b.input("x", "f32[5, 32]")
    q, s = run(b, list(b.quantize(xi, scheme="absmax", dtype="i8")), {"x": x})
    ref_q, ref_s = _bitnet_act_quant(x)
    assert q.dtype == np.int8 and s.shape == (5, 1) and s.dtype == np.float32
    np.testing.assert_array_equal(q, ref_q)
    np.testing.assert_allclose(s, 1.0 / ref_s, rtol=1e-6)
    assert np.all(q[4] == 0)  # the all-zero token: eps keeps it finite
    assert np.abs(q).max(-1)[:4].tolist() == [127] * 4


@covers("quantize")
def test_quantize_absmean_ternary_per_tensor():
    w = f32(rng(11).standard_normal((6, 8)) * 0.02)
    b = Builder()
    wi = b.input("w", "f32[6, 8]")
    q, s = run(b, list(b.quantize(wi, scheme="absmean", dtype="ternary", group=-1)), {"w": w})
    # BitNet b1.58: scale = 1 / mean|w|.clamp(1e-5); u = (w * scale).round().clamp(-1, 1); dequant = u / scale
    inv = np.float32(1) / max(np.float32(np.abs(w).mean()), np.float32(1e-5))
    ref = np.clip(np.round(w * inv), -1, 1)
    assert s.shape == (1, 1) and q.dtype == np.int8
    np.testing.assert_array_equal(q, ref)
    np.testing.assert_allclose(s[0, 0], np.abs(w.astype(np.float64)).mean(), rtol=1e-5)
    assert set(np.unique(q)) <= {-1, 0, 1}


@covers("quantize")
@pytest.mark.parametrize("group", [0, 4])
def test_quantize_rtn_i4_symmetric(group):
    x = f32(rng(12).standard_normal((3, 12)))
    x[0, 5] = -3.0  # negative extreme
    x[1, 2] = 3.5   # positive extreme
    b = Builder()
    xi = b.input("x", "f32[3, 12]")
    q, s = run(b, list(b.quantize(xi, scheme="rtn", dtype="i4", group=group)), {"x": x})
    g = 12 if group == 0 else group
    assert s.shape == (3, 12 // g) and q.dtype == ml_dtypes.int4
    for i in range(3):
        for j in range(12 // g):
            blk = x[i, j * g:(j + 1) * g]
            a = blk[np.argmax(np.abs(blk))]
            sc = np.float32(a / np.float32(-8))
            assert s[i, j] == sc
            ref = np.clip(np.rint(blk * (np.float32(1) / sc)), -8, 7)
            np.testing.assert_array_equal(q[i, j * g:(j + 1) * g].astype(np.int32), ref)


@covers("quantize")
@pytest.mark.parametrize("mode", ["original", "rescale"])
def test_quantize_rtn_u4_zero_modes(mode):
    x = f32(rng(13).uniform(-1.0, 2.0, (2, 8)))
    b = Builder()
    xi = b.input("x", "f32[2, 8]")
    q, s, z = run(b, list(b.quantize(xi, scheme="rtn", dtype="u4", zero_mode=mode)), {"x": x})
    assert q.dtype == ml_dtypes.uint4 and s.shape == z.shape == (2, 1)
    for i in range(2):
        lo, hi = x[i].min(), x[i].max()
        sc = np.float32((hi - lo) / np.float32(15))
        assert s[i, 0] == sc
        inv = np.float32(1) / sc
        if mode == "original":
            zz = np.clip(np.rint(-lo * inv), 0, 15)
            ref = np.clip(np.rint(x[i] * inv) + zz, 0, 15)
        else:
            zz = -lo
            ref = np.clip(np.rint((x[i] - lo) * inv), 0, 15)
        assert z[i, 0] == zz
        np.testing.assert_array_equal(q[i].astype(np.int32), ref)


@covers("quantize", "dequant")
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("case", [("absmax", "i8", "none", 0, 0.5),
                                  ("rtn", "i4", "none", 4, 1.0),
                                  ("rtn", "u4", "rescale", 5, 0.5),
                                  ("rtn", "u4", "original", 0, 1.0),
                                  ("rtn", "u8", "rescale", -1, 0.5)])
def test_dequant_of_quantize_error_bound(case, seed):
    """|x - dequant(quantize(x))| <= k * step, step being the granule's scale (mixed-sign data)."""
    scheme, dt, mode, group, k = case
    x = f32(rng(100 + seed).standard_normal((3, 10)) * 4)
    x[:, 0] = -abs(x[:, 0]) - 0.1  # every row holds both signs
    x[:, 1] = abs(x[:, 1]) + 0.1
    b = Builder()
    xi = b.input("x", "f32[3, 10]")
    res = b.quantize(xi, scheme=scheme, dtype=dt, group=group, zero_mode=mode)
    y = b.dequant(*res, group=group, zero_mode=mode)
    out, s = run(b, [y, res[1]], {"x": x})
    g = 10 if group == 0 else 10 * 3 if group == -1 else group
    step = np.empty_like(x)
    for i in range(3):
        for j in range(10):
            step[i, j] = abs(s.reshape(-1)[0] if group == -1 else s[i, j // g])
    assert np.all(np.abs(out - x) <= k * step * (1 + 1e-5) + 1e-6)


@covers("quantize", "dequant")
def test_quantize_rtn_original_all_positive_group_error_bound():
    x = f32([[1.0, 1.5, 2.0, 3.0]])
    b = Builder()
    xi = b.input("x", "f32[1, 4]")
    q, s, z = b.quantize(xi, scheme="rtn", dtype="u4", zero_mode="original")
    y = b.dequant(q, s, z, zero_mode="original")
    out, sc = run(b, [y, s], {"x": x})
    assert np.all(np.abs(out - x) <= sc[0, 0] * 1.0001)


# ---------------------------------------------------------------------------------------------- binary

@covers("add", "sub", "mul", "div")
@pytest.mark.parametrize("op,fn", [("add", lambda a, c: a + c), ("sub", lambda a, c: a - c),
                                   ("mul", lambda a, c: a * c), ("div", lambda a, c: a / c)])
@pytest.mark.parametrize("rshape", [(3,), (2, 1), (1, 1), (2, 3)])
def test_binary_float_broadcast(op, fn, rshape):
    r = rng(14)
    a = f32(r.standard_normal((2, 3)))
    c = f32(r.uniform(0.5, 2.0, rshape) * np.where(r.random(rshape) < 0.5, -1, 1))
    b = Builder()
    x, y = b.input("a", "f32[2, 3]"), b.input("c", ladder.tensor_type("f32", rshape))
    out = run(b, getattr(b, op)(x, y), {"a": a, "c": c})
    assert out.shape == (2, 3) and out.dtype == np.float32
    cb = np.broadcast_to(c, (2, 3))
    for i in range(2):
        for j in range(3):
            assert out[i, j] == np.float32(fn(a[i, j], cb[i, j]))


@covers("add", "sub", "mul")
def test_binary_integer_wraps_and_broadcasts():
    a = np.array([[127, -128, 5], [100, 0, -3]], np.int8)
    c = np.array([1, 1, 30], np.int8)
    b = Builder()
    x, y = b.input("a", "i8[2, 3]"), b.input("c", "i8[3]")
    o_add, o_sub, o_mul = run(b, [b.add(x, y), b.sub(x, y), b.mul(x, y)], {"a": a, "c": c})

    def wrap8(v):
        return ((v + 128) % 256) - 128

    for i in range(2):
        for j in range(3):
            av, cv = int(a[i, j]), int(c[j])
            assert o_add[i, j] == wrap8(av + cv)
            assert o_sub[i, j] == wrap8(av - cv)
            assert o_mul[i, j] == wrap8(av * cv)
    assert o_add.dtype == np.int8 and o_add[0, 0] == -128


@covers("div")
def test_div_by_zero_gives_inf_and_nan():
    b = Builder()
    x, y = b.input("a", "f32[3]"), b.input("c", "f32[3]")
    out = run(b, b.div(x, y), {"a": f32([1, -1, 0]), "c": f32([0, 0, 0])})
    assert out[0] == np.inf and out[1] == -np.inf and np.isnan(out[2])


# ---------------------------------------------------------------------------------------------- unary

X_UNARY = f32([-20.0, -3.0, -1.5, -0.5, -1e-3, 0.0, 0.25, 0.5, 1.0, 2.0, 4.5, 20.0])


def _gelu_erf(v):
    return 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))


def _gelu_tanh(v):
    return 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))


UNARY_REFS = {
    "neg": (lambda v: -v, {}),
    "relu": (lambda v: max(v, 0.0), {}),
    "relu2": (lambda v: max(v, 0.0) ** 2, {}),
    "gelu": (_gelu_erf, {}),
    "gelu_tanh": (_gelu_tanh, {"approximate": "tanh"}),
    "silu": (lambda v: v / (1.0 + math.exp(-v)), {}),
    "sigmoid": (lambda v: 1.0 / (1.0 + math.exp(-v)), {}),
    "tanh": (math.tanh, {}),
    "erf": (math.erf, {}),
    "exp": (math.exp, {}),
    "sqrt": (lambda v: math.sqrt(v) if v >= 0 else math.nan, {}),
}


@covers("neg", "relu", "relu2", "gelu", "silu", "sigmoid", "tanh", "erf", "exp", "sqrt")
@pytest.mark.parametrize("name", list(UNARY_REFS))
@pytest.mark.parametrize("dt", ["f32", "f16"])
def test_unary_float(name, dt):
    fn, attrs = UNARY_REFS[name]
    op = name.split("_")[0]
    np_dt = np.float32 if dt == "f32" else np.float16
    x = X_UNARY.astype(np_dt)
    b = Builder()
    xi = b.input("x", f"{dt}[12]")
    out = run(b, getattr(b, op)(xi, **attrs), {"x": x})
    assert out.dtype == np_dt
    with np.errstate(over="ignore"):
        ref = np.array([fn(float(v)) for v in x], np.float64).astype(np_dt)
    rtol = 1e-6 if dt == "f32" else 1e-3
    np.testing.assert_allclose(out.astype(np.float64), ref.astype(np.float64), rtol=rtol, atol=1e-7)


@covers("gelu")
def test_gelu_tanh_differs_from_erf():
    b = Builder()
    xi = b.input("x", "f32[1]")
    e, t = run(b, [b.gelu(xi), b.gelu(xi, approximate="tanh")], {"x": f32([-1.0])})
    assert abs(float(e[0]) - _gelu_erf(-1.0)) < 1e-6 and abs(float(t[0]) - _gelu_tanh(-1.0)) < 1e-6
    assert e[0] != t[0]


@covers("neg", "relu")
def test_neg_relu_integer():
    a = np.array([-128, -5, 0, 7, 127], np.int8)
    b = Builder()
    xi = b.input("x", "i8[5]")
    n, r = run(b, [b.neg(xi), b.relu(xi)], {"x": a})
    assert n.dtype == np.int8 and r.dtype == np.int8
    assert n.tolist() == [-128, 5, 0, -7, -127]  # -(-128) wraps in int8
    assert r.tolist() == [0, 0, 0, 7, 127]


# ---------------------------------------------------------------------------------------------- softmax, norms

@covers("softmax")
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax(axis):
    x = f32(rng(15).standard_normal((3, 5)) * 5)
    x[1, 2] = 80.0  # large: a naive exp would overflow without max subtraction
    b = Builder()
    xi = b.input("x", "f32[3, 5]")
    out = run(b, b.softmax(xi, axis=axis), {"x": x})
    xd = x.astype(np.float64)
    e = np.exp(xd - xd.max(axis=axis, keepdims=True))
    ref = e / e.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.sum(axis=axis), 1.0, rtol=1e-5)


@covers("rmsnorm")
@pytest.mark.parametrize("with_weight", [False, True])
def test_rmsnorm(with_weight):
    r = rng(16)
    x, w = f32(r.standard_normal((2, 3, 8))), f32(r.uniform(0.5, 1.5, 8))
    b = Builder()
    xi, wi = b.input("x", "f32[2, 3, 8]"), b.input("w", "f32[8]")
    y = b.rmsnorm(xi, wi, eps=1e-5) if with_weight else b.rmsnorm(xi, eps=1e-5)
    out = run(b, y, {"x": x, "w": w})
    ref = np.empty(x.shape)
    for i in range(2):
        for j in range(3):
            row = x[i, j].astype(np.float64)
            ref[i, j] = row / math.sqrt(sum(v * v for v in row) / 8 + 1e-5) * (w if with_weight else 1.0)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@covers("layernorm")
@pytest.mark.parametrize("nargs", [1, 2, 3])
def test_layernorm(nargs):
    r = rng(17)
    x = f32(r.standard_normal((4, 6)) * 3 + 2)
    w, bias = f32(r.uniform(0.5, 1.5, 6)), f32(r.standard_normal(6))
    b = Builder()
    xi, wi, bi = b.input("x", "f32[4, 6]"), b.input("w", "f32[6]"), b.input("b", "f32[6]")
    out = run(b, b.layernorm(xi, *[wi, bi][: nargs - 1]), {"x": x, "w": w, "b": bias})
    ref = np.empty(x.shape)
    for i in range(4):
        row = x[i].astype(np.float64)
        mu = sum(row) / 6
        var = sum((v - mu) ** 2 for v in row) / 6
        ref[i] = (row - mu) / math.sqrt(var + 1e-5)
        if nargs >= 2:
            ref[i] *= w
        if nargs == 3:
            ref[i] += bias
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- reduce

def _reduce_graph(xtype: str, kind: str, axes, keepdims: bool, out_type: str) -> ladder.Graph:
    # Built from .lir text; test_builder_reduce_kind_attribute checks the Builder makes the same graph.
    attrs = f'kind = "{kind}"' + (f", axes = {list(axes)}" if axes else "") + (", keepdims = true" if keepdims else "")
    return ladder.parse(f"graph @r(%x: {xtype}) -> {out_type} {{\n"
                        f"  %y = reduce %x {{{attrs}}} : {out_type}\n  return %y\n}}\n")


@covers("reduce")
@pytest.mark.parametrize("kind", ["sum", "max", "mean"])
@pytest.mark.parametrize("axes,keepdims", [((), False), ((1,), False), ((-1, 0), True), ((0, 2), False)])
def test_reduce_float(kind, axes, keepdims):
    x = f32(rng(18).standard_normal((2, 3, 4)))
    red = tuple(a % 3 for a in axes) or (0, 1, 2)
    keep_shape = tuple(1 if i in red else d for i, d in enumerate(x.shape))
    out_shape = keep_shape if keepdims else tuple(d for i, d in enumerate(x.shape) if i not in red)
    g = _reduce_graph("f32[2, 3, 4]", kind, axes, keepdims, str(ladder.tensor_type("f32", out_shape)))
    out = ladder.run(g, {"x": x})["y"]
    ref = np.empty(keep_shape)
    for idx in np.ndindex(*keep_shape):
        sl = tuple(slice(None) if i in red else idx[i] for i in range(3))
        vals = x[sl].astype(np.float64).reshape(-1).tolist()
        ref[idx] = {"sum": sum(vals), "max": max(vals), "mean": sum(vals) / len(vals)}[kind]
    ref = ref.reshape(out_shape)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@covers("reduce")
def test_reduce_integer_sum_and_max():
    x = np.array([[100, 100, -5], [1, 2, 3]], np.int8)
    s = ladder.run(_reduce_graph("i8[2, 3]", "sum", [1], False, "i8[2]"), {"x": x})["y"]
    m = ladder.run(_reduce_graph("i8[2, 3]", "max", [0], True, "i8[1, 3]"), {"x": x})["y"]
    assert s.dtype == np.int8 and s.tolist() == [((195 + 128) % 256) - 128, 6]
    assert m.shape == (1, 3) and m.tolist() == [[100, 100, 3]]


@covers("reduce")
def test_builder_reduce_kind_attribute():
    b = Builder()
    xi = b.input("x", "f32[2, 3]")
    out = run(b, b.reduce(xi, kind="sum", axes=[1]), {"x": np.ones((2, 3), np.float32)})
    assert out.tolist() == [3.0, 3.0]


# ---------------------------------------------------------------------------------------------- shape ops

@covers("reshape")
def test_reshape_minus_one():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    b = Builder()
    xi = b.input("x", "f32[2, 3, 4]")
    y1, y2 = run(b, [b.reshape(xi, shape=[-1, 4]), b.reshape(xi, shape=[4, -1, 2])], {"x": x})
    assert y1.shape == (6, 4) and y2.shape == (4, 3, 2)
    assert y1.reshape(-1).tolist() == list(range(24)) and y2.reshape(-1).tolist() == list(range(24))


@covers("transpose")
def test_transpose():
    x = np.arange(24, dtype=np.int8).reshape(2, 3, 4)
    b = Builder()
    xi = b.input("x", "i8[2, 3, 4]")
    out = run(b, b.transpose(xi, perm=[2, 0, 1]), {"x": x})
    assert out.shape == (4, 2, 3)
    for i, j, k in np.ndindex(2, 3, 4):
        assert out[k, i, j] == x[i, j, k]


@covers("concat")
def test_concat():
    r = rng(19)
    a, c, d = (f32(r.standard_normal((2, n))) for n in (1, 3, 2))
    b = Builder()
    ai, ci, di = b.input("a", "f32[2, 1]"), b.input("c", "f32[2, 3]"), b.input("d", "f32[2, 2]")
    out = run(b, b.concat(ai, ci, di, axis=-1), {"a": a, "c": c, "d": d})
    assert out.shape == (2, 6)
    for i in range(2):
        assert out[i].tolist() == a[i].tolist() + c[i].tolist() + d[i].tolist()


@covers("concat")
def test_concat_low_bit_along_axis0():
    b = Builder()
    wi, vi = b.param("w", "ternary[1, 3]"), b.param("v", "ternary[2, 3]")
    out = run(b, b.concat(wi, vi, axis=0), {}, {"w": np.array([[1, 0, -1]], np.int8),
                                               "v": np.array([[0, 0, 1], [-1, -1, -1]], np.int8)})
    assert out.tolist() == [[1, 0, -1], [0, 0, 1], [-1, -1, -1]]


@covers("slice")
@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1], [-1], [1], [1]),
    ([-2, 0], [100, 4], [0, 1], [1, 2]),
    ([4], [0], [1], [-1]),
    ([-1, 5], [-100, -100], [], [-2, -2]),
    ([0, 1], [2, 4], [], []),
])
def test_slice(starts, ends, axes, steps):
    x = np.arange(30, dtype=np.float32).reshape(5, 6)
    b = Builder()
    xi = b.input("x", "f32[5, 6]")
    attrs = {"starts": starts, "ends": ends}
    if axes:
        attrs["axes"] = axes
    if steps:
        attrs["steps"] = steps
    out = run(b, b.slice(xi, **attrs), {"x": x})
    ax = axes or list(range(len(starts)))
    st = steps or [1] * len(starts)
    idx = [list(range(5)), list(range(6))]
    for s, e, a, p in zip(starts, ends, ax, st):
        n = x.shape[a]
        s2 = s + n if s < 0 else s
        e2 = e + n if e < 0 else e
        if p > 0:
            s2, e2 = max(0, min(s2, n)), max(0, min(e2, n))
            idx[a] = list(range(s2, e2, p))
        else:
            s2, e2 = max(-1, min(s2, n - 1)), max(-1, min(e2, n - 1))
            idx[a] = list(range(s2, e2, p))
    ref = [[x[i, j] for j in idx[1]] for i in idx[0]]
    assert out.shape == (len(idx[0]), len(idx[1]))
    assert out.tolist() == [[float(v) for v in row] for row in ref]


@covers("gather")
def test_gather_embedding_and_negative_index():
    table = f32(rng(20).standard_normal((5, 3)))
    ids = np.array([[4, 0, -1], [2, 2, -5]], np.int32)
    b = Builder()
    ii = b.input("ids", "i32[2, 3]")
    t = b.param("emb", "f32[5, 3]")
    out = run(b, b.gather(t, ii), {"ids": ids}, {"emb": table})
    assert out.shape == (2, 3, 3)
    for i, j in np.ndindex(2, 3):
        np.testing.assert_array_equal(out[i, j], table[ids[i, j] % 5])


@covers("gather")
def test_gather_axis1():
    table = np.arange(12, dtype=np.int8).reshape(3, 4)
    b = Builder()
    t, ii = b.input("t", "i8[3, 4]"), b.input("i", "u8[2]")
    out = run(b, b.gather(t, ii, axis=1), {"t": table, "i": np.array([3, 1], np.uint8)})
    assert out.tolist() == [[3, 1], [7, 5], [11, 9]]


@covers("gather")
@pytest.mark.parametrize("bad", [5, -6])
def test_gather_out_of_range_is_runtime_failure(bad):
    b = Builder()
    t, ii = b.input("t", "f32[5, 3]"), b.input("i", "i32[2]")
    g = b.build(b.gather(t, ii))
    with pytest.raises(ladder.RuntimeFailure, match="out of range"):
        ladder.run(g, {"t": np.zeros((5, 3), np.float32), "i": np.array([0, bad], np.int32)})


# ---------------------------------------------------------------------------------------------- rope

def _rope_ref(x, pos, theta, style):
    s, d = x.shape[-2], x.shape[-1]
    out = np.empty(x.shape, np.float64)
    for idx in np.ndindex(*x.shape[:-2]):
        for t in range(s):
            row = x[idx + (t,)].astype(np.float64)
            y = np.empty(d)
            for i in range(d // 2):
                ang = pos[t] * theta ** (-2.0 * i / d)
                a, bb = (i, i + d // 2) if style == "half" else (2 * i, 2 * i + 1)
                y[a] = row[a] * math.cos(ang) - row[bb] * math.sin(ang)
                y[bb] = row[bb] * math.cos(ang) + row[a] * math.sin(ang)
            out[idx + (t,)] = y
    return out


@covers("rope")
@pytest.mark.parametrize("style", ["half", "interleaved"])
def test_rope(style):
    x = f32(rng(21).standard_normal((2, 3, 8)))
    pos = np.array([0, 5, 17], np.int32)
    b = Builder()
    xi, pi = b.input("x", "f32[2, 3, 8]"), b.input("p", "i32[3]")
    out = run(b, b.rope(xi, pi, theta=500.0, style=style), {"x": x, "p": pos})
    np.testing.assert_allclose(out, _rope_ref(x, pos, 500.0, style), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[:, 0], x[:, 0], rtol=1e-6)  # position 0 is the identity


@covers("rope")
def test_rope_styles_differ():
    x = f32(rng(22).standard_normal((1, 2, 4)))
    b = Builder()
    xi, pi = b.input("x", "f32[1, 2, 4]"), b.input("p", "i32[2]")
    h, i = run(b, [b.rope(xi, pi), b.rope(xi, pi, style="interleaved")], {"x": x, "p": np.array([1, 2], np.int32)})
    assert not np.allclose(h, i)


# ---------------------------------------------------------------------------------------------- attention

def _attention_ref(q, k, v, length, causal, scale=None):
    hq, sq, d = q.shape
    hkv, skv, dv = v.shape
    scale = scale or 1.0 / math.sqrt(d)
    out = np.zeros((hq, sq, dv))
    for h in range(hq):
        kh = h // (hq // hkv)
        for i in range(sq):
            keys = [j for j in range(length) if not causal or j <= length - sq + i]
            sc = [scale * float(np.dot(q[h, i].astype(np.float64), k[kh, j].astype(np.float64))) for j in keys]
            m = max(sc)
            w = [math.exp(s - m) for s in sc]
            tot = sum(w)
            for wj, j in zip(w, keys):
                out[h, i] += wj / tot * v[kh, j].astype(np.float64)
    return out


@covers("attention")
@pytest.mark.parametrize("causal", [True, False])
def test_attention_gqa_full(causal):
    r = rng(23)
    q, k, v = f32(r.standard_normal((4, 3, 8))), f32(r.standard_normal((2, 5, 8))), f32(r.standard_normal((2, 5, 6)))
    b = Builder()
    qi, ki, vi = b.input("q", "f32[4, 3, 8]"), b.input("k", "f32[2, 5, 8]"), b.input("v", "f32[2, 5, 6]")
    out = run(b, b.attention(qi, ki, vi, causal=causal), {"q": q, "k": k, "v": v})
    assert out.shape == (4, 3, 6)
    np.testing.assert_allclose(out, _attention_ref(q, k, v, 5, causal), rtol=1e-5, atol=1e-5)


@covers("attention")
@pytest.mark.parametrize("causal", [True, False])
def test_attention_kv_len_masks_partially_filled_cache(causal):
    r = rng(24)
    q, k, v = f32(r.standard_normal((4, 2, 8))), f32(r.standard_normal((2, 7, 8))), f32(r.standard_normal((2, 7, 8)))
    k_junk, v_junk = k.copy(), v.copy()
    k_junk[:, 4:] = 1e4  # unfilled cache slots: must not influence the result
    v_junk[:, 4:] = -1e4
    b = Builder()
    qi, ki, vi = b.input("q", "f32[4, 2, 8]"), b.input("k", "f32[2, 7, 8]"), b.input("v", "f32[2, 7, 8]")
    li = b.input("n", "i32[1]")
    y = b.attention(qi, ki, vi, li, causal=causal, scale=0.3)
    g = b.build(y)
    out = ladder.run(g, {"q": q, "k": k_junk, "v": v_junk, "n": np.array([4], np.int32)})[y.name]
    np.testing.assert_allclose(out, _attention_ref(q, k, v, 4, causal, 0.3), rtol=1e-5, atol=1e-5)
    with pytest.raises(ladder.RuntimeFailure, match="kv_len"):
        ladder.run(g, {"q": q, "k": k, "v": v, "n": np.array([8], np.int32)})


@covers("attention")
def test_attention_batch_dims():
    r = rng(25)
    q, k, v = (f32(r.standard_normal((2, 2, 3, 4))) for _ in range(3))
    b = Builder()
    qi, ki, vi = (b.input(n, "f32[2, 2, 3, 4]") for n in "qkv")
    out = run(b, b.attention(qi, ki, vi), {"q": q, "k": k, "v": v})
    for n in range(2):
        np.testing.assert_allclose(out[n], _attention_ref(q[n], k[n], v[n], 3, True), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- cache_write

@covers("cache_write")
def test_cache_write_and_overflow():
    cache = f32(rng(26).standard_normal((2, 6, 4)))
    new = f32(rng(27).standard_normal((2, 2, 4)))
    b = Builder()
    ci, ni, pi = b.input("c", "f32[2, 6, 4]"), b.input("n", "f32[2, 2, 4]"), b.input("p", "i32[1]")
    y = b.cache_write(ci, ni, pi)
    g = b.build(y)
    out = ladder.run(g, {"c": cache, "n": new, "p": np.array([3], np.int32)})[y.name]
    ref = cache.copy()
    for h in range(2):
        for t in range(2):
            ref[h, 3 + t] = new[h, t]
    np.testing.assert_array_equal(out, ref)
    out_end = ladder.run(g, {"c": cache, "n": new, "p": np.array([4], np.int32)})[y.name]
    np.testing.assert_array_equal(out_end[:, 4:], new)
    for p in (5, -1):
        with pytest.raises(ladder.RuntimeFailure, match="overflow"):
            ladder.run(g, {"c": cache, "n": new, "p": np.array([p], np.int32)})


@covers("cache_write")
def test_cache_write_other_axis_leaves_input_unchanged():
    cache = np.zeros((3, 4), np.float16)
    b = Builder()
    ci, ni, pi = b.input("c", "f16[3, 4]"), b.input("n", "f16[1, 4]"), b.input("p", "u8[1]")
    out = run(b, b.cache_write(ci, ni, pi, axis=0), {"c": cache, "n": np.ones((1, 4), np.float16),
                                                      "p": np.array([2], np.uint8)})
    assert out.tolist() == [[0] * 4, [0] * 4, [1] * 4]
    assert not cache.any()


# ---------------------------------------------------------------------------------------------- cast

@covers("cast")
def test_cast_float_to_int_truncates_and_saturates():
    x = f32([2.9, -2.9, 0.5, -0.5, 127.9, 128.0, -128.9, -1000.0, 1e30, np.inf, -np.inf, np.nan])
    b = Builder()
    xi = b.input("x", "f32[12]")
    i8, u8, i32 = run(b, [b.cast(xi, dtype="i8"), b.cast(xi, dtype="u8"), b.cast(xi, dtype="i32")], {"x": x})

    def ref(v, lo, hi):
        if math.isnan(v):
            return 0
        if math.isinf(v):
            return hi if v > 0 else lo
        return max(lo, min(hi, math.trunc(v)))

    assert i8.dtype == np.int8 and u8.dtype == np.uint8 and i32.dtype == np.int32
    assert i8.tolist() == [ref(float(v), -128, 127) for v in x]
    assert u8.tolist() == [ref(float(v), 0, 255) for v in x]
    assert i32.tolist() == [ref(float(v), -2**31, 2**31 - 1) for v in x]


@covers("cast")
def test_cast_to_i4_saturates():
    x = f32([-9.5, -8.0, -1.7, 0.0, 6.99, 7.0, 100.0])
    b = Builder()
    xi = b.input("x", "f32[7]")
    out = run(b, b.cast(xi, dtype="i4"), {"x": x})
    assert out.dtype == ml_dtypes.int4
    assert out.astype(np.int32).tolist() == [-8, -8, -1, 0, 6, 7, 7]


@covers("cast")
def test_cast_to_f16_and_bf16_round_to_nearest_even():
    one = 1.0
    x = np.array([one + 2**-8, one + 3 * 2**-8, one + 2**-11, one + 3 * 2**-11, 1e6, -3.25, 70000.0], np.float32)
    b = Builder()
    xi = b.input("x", "f32[7]")
    h, bf = run(b, [b.cast(xi, dtype="f16"), b.cast(xi, dtype="bf16")], {"x": x})
    assert h.dtype == np.float16 and bf.dtype == ml_dtypes.bfloat16
    # bf16 keeps 8 significant bits: 1 + 2^-8 is a tie -> 1.0 (even); 1 + 3*2^-8 is a tie -> 1 + 2^-6
    assert float(bf[0]) == 1.0 and float(bf[1]) == 1.0 + 2**-6
    assert float(bf[4]) == 999424.0 and float(bf[5]) == -3.25
    # f16 keeps 11 significant bits: 1 + 2^-11 ties to 1.0, 1 + 3*2^-11 ties to 1 + 2^-9; 70000 overflows to inf
    assert float(h[2]) == 1.0 and float(h[3]) == 1.0 + 2**-9
    assert float(h[5]) == -3.25 and h[6] == np.inf


@covers("cast")
def test_cast_int_to_float_and_low_bit_to_float():
    b = Builder()
    xi = b.input("x", "i32[3]")
    ti = b.param("t", "ternary[3]")
    f, t = run(b, [b.cast(xi, dtype="f32"), b.cast(ti, dtype="f16")], {"x": np.array([-7, 2**24 + 1, 3], np.int32)},
               {"t": np.array([-1, 0, 1], np.int8)})
    assert f.tolist() == [-7.0, 16777216.0, 3.0]
    assert t.dtype == np.float16 and t.tolist() == [-1.0, 0.0, 1.0]


@covers("cast")
def test_cast_int_to_bf16_single_rounding():
    v = 2**24 + 2**16 + 1  # just above the halfway point between two bf16 neighbours 2^24 and 2^24 + 2^17
    b = Builder()
    xi = b.input("x", "i32[1]")
    out = run(b, b.cast(xi, dtype="bf16"), {"x": np.array([v], np.int32)})
    assert float(out[0]) == 2**24 + 2**17


@covers("cast")
def test_cast_to_fp8_saturates():
    b = Builder()
    xi = b.input("x", "f32[3]")
    out = run(b, b.cast(xi, dtype="fp8e4m3"), {"x": f32([1000.0, -1000.0, 0.3])})
    assert float(out[0]) == 448.0 and float(out[1]) == -448.0 and abs(float(out[2]) - 0.3) <= 0.3 / 16


# ---------------------------------------------------------------------------------------------- clamp, round

@covers("clamp")
def test_clamp_float_and_integer():
    x = f32([-5.0, -1.0, 0.0, 0.7, 3.0])
    xi8 = np.array([-128, -3, 0, 2, 3, 127], np.int8)
    b = Builder()
    a, c = b.input("x", "f32[5]"), b.input("y", "i8[6]")
    o1, o2, o3 = run(b, [b.clamp(a, min=-1.5, max=0.5), b.clamp(c, min=-2.5, max=2.5), b.clamp(a, min=0.0)],
                     {"x": x, "y": xi8})
    assert o1.tolist() == [max(-1.5, min(0.5, float(v))) for v in x]
    assert o2.dtype == np.int8 and o2.tolist() == [-2, -2, 0, 2, 2, 2]  # integer bounds: ceil(min), floor(max)
    assert o3.tolist() == [max(0.0, float(v)) for v in x]


@covers("round")
def test_round_half_to_even():
    x = f32([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 0.49999997, 2.6, -2.6])
    b = Builder()
    xi = b.input("x", "f32[10]")
    out = run(b, b.round(xi), {"x": x})
    assert out.tolist() == [-2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 4.0, 0.0, 3.0, -3.0]
    assert math.copysign(1.0, float(out[2])) == -1.0


# ---------------------------------------------------------------------------------------------- const, param

@covers("const")
def test_const_values_and_splat():
    b = Builder()
    c1 = b.const([[1, -1], [0, 1]], "ternary[2, 2]")
    c2 = b.const(2.5, "f32[2, 3]")
    c3 = b.const(np.array([1, 2, 3], np.int8))
    o1, o2, o3 = run(b, [c1, c2, c3])
    assert o1.dtype == np.int8 and o1.tolist() == [[1, -1], [0, 1]]
    assert o2.shape == (2, 3) and np.all(o2 == 2.5)
    assert o3.dtype == np.int8 and o3.tolist() == [1, 2, 3]


@covers("const")
def test_const_out_of_range_literal_rejected():
    b = Builder()
    with pytest.raises(ladder.TypeRangeError, match="const literal"):
        b.const([[2, 0]], "ternary[1, 2]")


@covers("param")
def test_param_storage_forms():
    b = Builder()
    p1, p2, p3, p4 = (b.param("a", "i4[3]"), b.param("bb", "bf16[2]"), b.param("c", "nf4[2]"),
                      b.param("d", "fp4[2]"))
    bf = np.array([1.5, -2.0], ml_dtypes.bfloat16)
    o1, o2, o3, o4 = run(b, [p1, p2, p3, p4], {}, {
        "a": np.array([-8, 0, 7], np.int8), "bb": bf.view(np.uint16), "c": np.array([0, 15], np.uint8),
        "d": np.array([7, 15], np.uint8)})  # fp4 stored as codes: 7 -> 6.0, 15 -> -6.0
    assert o1.dtype == ml_dtypes.int4 and o1.astype(int).tolist() == [-8, 0, 7]
    assert o2.dtype == ml_dtypes.bfloat16 and o2.astype(float).tolist() == [1.5, -2.0]
    assert o3.tolist() == [0, 15]
    assert o4.astype(float).tolist() == [6.0, -6.0]


@covers("param")
def test_param_missing_or_out_of_range_weight():
    b = Builder()
    g = b.build(b.param("w", "ternary[2]"))
    with pytest.raises(ladder.WeightsError, match="@w"):
        ladder.run(g, {}, {})
    with pytest.raises(ladder.WeightsError, match="@w"):
        ladder.run(g, {}, {"w": np.array([2, 0], np.int8)})


# ---------------------------------------------------------------------------------------------- low-bit ops

def _crumb_bytes(vals):
    """Hand-written crumb layout of ternary rows: byte j = c[4j] | c[4j+1] << 2 | ..., c = value + 1, rows
    padded with the code of 0 (1)."""
    out = []
    for row in vals:
        codes = [int(v) + 1 for v in row]
        codes += [1] * (-len(codes) % 4)
        out.append([codes[i] | codes[i + 1] << 2 | codes[i + 2] << 4 | codes[i + 3] << 6
                    for i in range(0, len(codes), 4)])
    return np.array(out, np.uint8)


def _nib_bytes(vals):
    """nib layout of i4 rows: byte j = c[2j] | c[2j+1] << 4, c the two's complement nibble."""
    out = []
    for row in vals:
        codes = [int(v) & 15 for v in row]
        codes += [0] * (len(codes) % 2)
        out.append([codes[i] | codes[i + 1] << 4 for i in range(0, len(codes), 2)])
    return np.array(out, np.uint8)


@covers("pack")
def test_pack_crumb_nib_and_bit_bytes():
    t = f32([[-1, 0, 1, 1, 0, -1, -1], [1, 1, 0, -1, 0, 0, 1]]).astype(np.int8)
    i4 = np.array([[-8, 7, 0, -1, 3], [1, 2, -3, 4, -5]], np.int8)
    i1 = np.array([[1, -1, -1, 1, 1, 1, -1, 1, -1, 1]], np.int8)
    b = Builder()
    pt = b.pack(b.param("t", "ternary[2, 7]"), layout="crumb")
    pi = b.pack(b.param("i", "i4[2, 5]"), layout="nib")
    pb = b.pack(b.param("b", "i1[1, 10]"), layout="bit")
    ot, oi, ob = run(b, [pt, pi, pb], {}, {"t": t, "i": i4.astype(ml_dtypes.int4), "b": i1})
    assert ot.dtype == np.uint8 and ot.shape == (2, 2)
    np.testing.assert_array_equal(ot, _crumb_bytes(t))
    # first row by hand: codes 0 1 2 2 | 1 0 0 (+pad 1) -> 0b10100100, 0b01000001
    assert ot[0].tolist() == [0b10100100, 0b01000001]
    np.testing.assert_array_equal(oi, _nib_bytes(i4))
    assert oi[0].tolist() == [0x78, 0xF0, 0x03]
    # bit i of byte j is the code (0 for -1, 1 for +1) of position 8j + i
    assert ob.tolist() == [[0b10111001, 0b10]]


@covers("unpack")
def test_unpack_packed_input_and_round_trip():
    t = np.array([[-1, 0, 1, 1, 0, -1, -1, 0, 1], [1, 1, 0, -1, 0, 0, 1, -1, -1]], np.int8)
    b = Builder()
    p = b.input("p", "ternary<crumb>[2, 9]")
    u = b.unpack(p)
    w = b.param("w", "i4[3, 37]")
    u2 = b.unpack(b.pack(w, layout="nib32"))
    i4 = rng(30).integers(-8, 8, (3, 37)).astype(ml_dtypes.int4)
    o1, o2 = run(b, [u, u2], {"p": _crumb_bytes(t)}, {"w": i4})
    assert o1.dtype == np.int8 and o1.tolist() == t.tolist()
    assert o2.dtype == ml_dtypes.int4 and o2.astype(int).tolist() == i4.astype(int).tolist()


@covers("qmatmul")
def test_qmatmul_is_matmul_of_dequantized_weights():
    r = rng(31)
    x = f32(r.standard_normal((3, 37)))
    codes = r.integers(-8, 8, (5, 37)).astype(np.int8)
    sc = f32(r.uniform(0.1, 1.0, (5, 1)))
    gs = f32(r.uniform(0.1, 1.0, (5, 3)))  # groups of 16 along K (the last partial)
    gz = f32(r.integers(-2, 3, (5, 3)))
    b = Builder()
    xi = b.input("x", "f32[3, 37]")
    w = b.param("w", "i4[5, 37]")
    s = b.param("s", "f32[5, 1]")
    y1 = b.qmatmul(xi, w, s, transpose_b=True)
    y2 = b.qmatmul(xi, b.pack(w, layout="nib"), s, transpose_b=True, epilogue=["relu"])
    y3 = b.qmatmul(xi, b.pack(w, layout="planes"), b.param("g", "f32[5, 3]"), b.param("z", "f32[5, 3]"),
                   transpose_b=True, group=16, zero_mode="original")
    o1, o2, o3 = run(b, [y1, y2, y3], {"x": x},
                     {"w": codes.astype(ml_dtypes.int4), "s": sc, "g": gs, "z": gz})
    deq = codes.astype(np.float64) * sc
    ref = x.astype(np.float64) @ deq.T
    assert o1.dtype == np.float32 and o1.shape == (3, 5)
    np.testing.assert_allclose(o1, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(o2, np.maximum(ref, 0), rtol=1e-5, atol=1e-5)
    deq3 = np.zeros((5, 37))
    for n in range(5):
        for k in range(37):
            deq3[n, k] = (codes[n, k] - gz[n, k // 16]) * gs[n, k // 16]
    np.testing.assert_allclose(o3, x.astype(np.float64) @ deq3.T, rtol=1e-5, atol=1e-5)


@covers("qmatmul")
def test_qmatmul_without_transpose_nf4_and_silu_epilogue():
    r = rng(32)
    x = f32(r.standard_normal((2, 6)))
    codes = r.integers(0, 16, (6, 4)).astype(np.uint8)
    sc = f32([[0.5, 2.0, 1.0, 0.25]])  # one per output column
    b = Builder()
    xi = b.input("x", "f32[2, 6]")
    y = b.qmatmul(xi, b.pack(b.param("w", "nf4[6, 4]"), layout="nib"), b.param("s", "f32[1, 4]"),
                  axis=0, epilogue=["silu"])
    out = run(b, y, {"x": x}, {"w": codes, "s": sc})
    deq = np.array([[NF4[c] for c in row] for row in codes]) * sc
    h = x.astype(np.float64) @ deq
    np.testing.assert_allclose(out, h / (1 + np.exp(-h)), rtol=1e-5, atol=1e-6)


@covers("qmatmul_i8")
def test_qmatmul_i8_integer_accumulation_then_scales():
    r = rng(33)
    xq = r.integers(-128, 128, (3, 37)).astype(np.int8)
    w = r.integers(-1, 2, (4, 37)).astype(np.int8)
    s1 = f32(r.uniform(0.01, 0.1, (3, 1)))
    s2 = f32([0.75])
    b = Builder()
    xi = b.input("x", "i8[3, 37]")
    s1i = b.input("s1", "f32[3, 1]")
    wp = b.param("w", "ternary[4, 37]")
    s2p = b.param("s2", "f32[1]")
    y1 = b.qmatmul_i8(xi, wp, s1i, s2p, transpose_b=True)
    y2 = b.qmatmul_i8(xi, b.pack(wp, layout="trit5"), s1i, s2p, transpose_b=True, epilogue=["relu2"])
    o1, o2 = run(b, [y1, y2], {"x": xq, "s1": s1}, {"w": w, "s2": s2})
    acc = [[sum(int(xq[m, k]) * int(w[n, k]) for k in range(37)) for n in range(4)] for m in range(3)]
    ref = (np.array(acc, np.float32) * s1) * s2
    assert o1.dtype == np.float32 and o1.shape == (3, 4)
    np.testing.assert_array_equal(o1, ref)
    np.testing.assert_allclose(o2, np.maximum(ref.astype(np.float64), 0) ** 2, rtol=1e-6)


@covers("qmatmul_i8")
def test_qmatmul_i8_unpacked_u4_weights_per_channel_scale():
    xq = np.array([[1, -2, 3], [127, -128, 0]], np.int8)
    w = np.array([[0, 15], [7, 1], [2, 3]], np.uint8)  # [K, N], not transposed
    b = Builder()
    y = b.qmatmul_i8(b.input("x", "i8[2, 3]"), b.param("w", "u4[3, 2]"), b.param("s1", "f32[2, 1]"),
                     b.param("s2", "f32[2]"))
    out = run(b, y, {"x": xq}, {"w": w.astype(ml_dtypes.uint4), "s1": f32([[1.0], [0.5]]), "s2": f32([2.0, -1.0])})
    acc = xq.astype(np.int64) @ w.astype(np.int64)
    np.testing.assert_array_equal(out, acc.astype(np.float32) * f32([[1.0], [0.5]]) * f32([2.0, -1.0]))


@covers("qmatmul_q8")
def test_qmatmul_q8_block_dot_products_times_both_scales():
    """llama.cpp's Q8_0 dot product, written out: per block of 32, the integer sum of x's codes (clipped to
    -127) times w's codes, times x's block scale and w's block scale; a partial last block too."""
    r = rng(34)
    M, N, K, G = 3, 4, 70, 32
    nb = -(-K // G)
    xq = r.integers(-128, 128, (M, K)).astype(np.int8)
    xq[0, 0] = -128  # read as -127
    sx = f32(r.uniform(0.01, 0.1, (M, nb)))
    w = r.integers(-8, 8, (N, K)).astype(np.int8)
    sw = r.uniform(0.01, 0.1, (N, nb)).astype(np.float16)
    b = Builder()
    xi, sxi = b.input("x", f"i8[{M}, {K}]"), b.input("sx", f"f32[{M}, {nb}]")
    wp, swp = b.param("w", f"i4[{N}, {K}]"), b.param("sw", f"f16[{N}, {nb}]")
    y1 = b.qmatmul_q8(xi, sxi, wp, swp, group=G)
    y2 = b.qmatmul_q8(xi, sxi, b.pack(wp, layout="nib32"), swp, group=G, epilogue=["relu"])
    o1, o2 = run(b, [y1, y2], {"x": xq, "sx": sx}, {"w": w.astype(ml_dtypes.int4), "sw": sw})
    xc = np.maximum(xq.astype(np.int64), -127)
    ref = np.zeros((M, N))
    for m in range(M):
        for n in range(N):
            for j in range(nb):
                blk = slice(j * G, (j + 1) * G)
                ref[m, n] += int(xc[m, blk] @ w[n, blk].astype(np.int64)) * float(sx[m, j]) * float(sw[n, j])
    assert o1.dtype == np.float32 and o1.shape == (M, N)
    np.testing.assert_allclose(o1, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(o2, np.maximum(ref, 0), rtol=1e-5, atol=1e-6)


@covers("lut_precompute")
def test_lut_precompute_tables_by_hand():
    xq = np.array([[3, -5, 7, 100, -128, 2]], np.int8)  # K = 6: two groups of 4, the second padded with zeros
    xf = f32([[0.5, -1.25, 2.0, 0.25, 3.0]])
    b = Builder()
    x, y, z = b.input("x", "i8[1, 6]"), b.input("y", "f32[1, 5]"), b.input("z", "f32[1, 5]")
    t, s = b.lut_precompute(x)
    tf, sf = b.lut_precompute(y)
    tq, sq, sc = b.lut_precompute(z, quantize=True)
    out = run(b, [t, s, tf, sf, tq, sq, sc], {"x": xq, "y": xf, "z": xf})
    assert out[0].shape == (1, 2, 2, 16) and out[0].dtype == np.int8 and out[2].shape == (1, 2, 16)

    def table(xs):  # entry i = sum_t (2 bit_t(i) - 1) x_t
        xs = list(xs) + [0] * (4 - len(xs))
        return [sum((1 if (i >> t) & 1 else -1) * float(xs[t]) for t in range(4)) for i in range(16)]

    for j, part in enumerate((xq[0, :4], xq[0, 4:])):
        want = table(part)
        got = [int(np.uint8(out[0][0, j, 0, i].view(np.uint8))) + 256 * int(out[0][0, j, 1, i]) for i in range(16)]
        assert got == want
    assert out[1].tolist() == [[int(xq.astype(int).sum())]]
    for j, part in enumerate((xf[0, :4], xf[0, 4:])):
        np.testing.assert_array_equal(out[2][0, j], table(part))
        assert out[2][0, j, 15] == -out[2][0, j, 0]  # mirror consolidation
    assert out[3][0, 0] == np.float32(4.5)
    scale = max(abs(v) for part in (xf[0, :4], xf[0, 4:]) for v in table(part)) / 127
    np.testing.assert_allclose(out[6], [[scale]], rtol=1e-6)
    np.testing.assert_array_equal(out[4][0, 0], np.clip(np.rint(np.array(table(xf[0, :4])) / out[6][0, 0]), -127, 127))


@covers("lut_matmul")
def test_lut_matmul_equals_the_integer_dot_product():
    r = rng(34)
    n, k, rows = 5, 6, 8
    xq = r.integers(-128, 128, (2, k)).astype(np.int8)
    w = r.integers(-1, 2, (n, k)).astype(np.int8)
    # interleave by hand: rows padded to 8 (repeat row 0), K to 8 (zeros), [1, 8, 2, 4] -> (0, 2, 1, 3)
    wp = np.zeros((rows, 8), np.int8)
    wp[:n, :k] = w
    wp[n:, :k] = w[0]
    wi = wp.reshape(1, rows, 2, 4).transpose(0, 2, 1, 3).reshape(1, 64)
    b = Builder()
    x, s1 = b.input("x", "i8[2, 6]"), b.input("s1", "f32[2, 1]")
    t, s = b.lut_precompute(x)
    s2 = b.param("s2", "f32[1]")
    y = b.lut_matmul(t, s, b.pack(b.param("w", "ternary[1, 64]"), layout="planes"), s1, s2, n=n, rows=rows)
    sv = f32([[0.5], [2.0]])
    out = run(b, y, {"x": xq, "s1": sv}, {"w": wi, "s2": f32([0.25])})
    dot = np.array([[sum(int(xq[m, kk]) * int(w[j, kk]) for kk in range(k)) for j in range(n)] for m in range(2)])
    np.testing.assert_array_equal(out, dot.astype(np.float32) * sv * f32([0.25]))


# ---------------------------------------------------------------------------------------------- verify errors

def _bad_param(b):
    return b.param("", "f32[2]", name="p")  # a param needs a weight name


def _bad_const(b):
    return b.const(np.zeros(3, np.float32), "f32[2]")


BAD = {
    "matmul": lambda b: b.matmul(b.input("a", "f32[2, 3]"), b.input("c", "f32[4, 5]")),
    "dequant": lambda b: b.dequant(b.input("a", "i4[2, 8]"), b.input("s", "i8[2, 1]")),
    "quantize": lambda b: b.quantize(b.input("a", "f32[2, 8]"), scheme="rtn", dtype="u4"),
    "add": lambda b: b.add(b.input("a", "f32[2, 3]"), b.input("c", "f32[4]")),
    "sub": lambda b: b.sub(b.input("a", "f32[2]"), b.input("c", "i8[2]")),
    "mul": lambda b: b.mul(b.input("a", "i4[2]"), b.input("c", "i4[2]")),
    "div": lambda b: b.div(b.input("a", "i32[2]"), b.input("c", "i32[2]")),
    "neg": lambda b: b.neg(b.input("a", "ternary[2]")),
    "relu": lambda b: b.relu(b.input("a", "u8[2]")),
    "relu2": lambda b: b.relu2(b.input("a", "i32[2]")),
    "gelu": lambda b: b.gelu(b.input("a", "f32[2]"), approximate="fast"),
    "silu": lambda b: b.silu(b.input("a", "i8[2]")),
    "sigmoid": lambda b: b.sigmoid(b.input("a", "i8[2]")),
    "tanh": lambda b: b.tanh(b.input("a", "i16[2]")),
    "erf": lambda b: b.erf(b.input("a", "i8[2]")),
    "sqrt": lambda b: b.sqrt(b.input("a", "i8[2]")),
    "exp": lambda b: b.exp(b.input("a", "i32[2]")),
    "softmax": lambda b: b.softmax(b.input("a", "f32[2, 3]"), axis=2),
    "rmsnorm": lambda b: b.rmsnorm(b.input("a", "f32[2, 3]"), b.input("w", "f32[2]")),
    "layernorm": lambda b: b.layernorm(b.input("a", "f32[2, 3]"), b.input("w", "f32[3]"), b.input("c", "f16[3]")),
    "reduce": lambda b: b.reduce(b.input("a", "i32[2, 3]"), kind="mean", axes=[1]),
    "reshape": lambda b: b.reshape(b.input("a", "f32[2, 3]"), shape=[4, -1]),
    "transpose": lambda b: b.transpose(b.input("a", "f32[2, 3]"), perm=[0, 0]),
    "concat": lambda b: b.concat(b.input("a", "f32[2, 3]"), b.input("c", "f32[3, 3]"), axis=1),
    "slice": lambda b: b.slice(b.input("a", "f32[4]"), starts=[0], ends=[4], steps=[0]),
    "gather": lambda b: b.gather(b.input("a", "f32[4, 2]"), b.input("i", "f32[3]")),
    "rope": lambda b: b.rope(b.input("a", "f32[2, 5]"), b.input("p", "i32[2]")),
    "attention": lambda b: b.attention(b.input("q", "f32[3, 2, 4]"), b.input("k", "f32[2, 2, 4]"),
                                       b.input("v", "f32[2, 2, 4]")),
    "cache_write": lambda b: b.cache_write(b.input("c", "f32[2, 4, 3]"), b.input("n", "f32[2, 5, 3]"),
                                           b.input("p", "i32[1]")),
    "cast": lambda b: b.cast(b.input("a", "f32[2]"), dtype="ternary"),
    "clamp": lambda b: b.clamp(b.input("a", "f32[2]"), min=1.0, max=0.0),
    "round": lambda b: b.round(b.input("a", "i8[2]")),
    "const": _bad_const,
    "param": _bad_param,
    "pack": lambda b: b.pack(b.input("a", "f32[2, 8]"), layout="nib"),
    "unpack": lambda b: b.unpack(b.input("a", "ternary[2, 8]")),
    "qmatmul": lambda b: b.qmatmul(b.input("x", "i8[2, 8]"), b.input("w", "i4[4, 8]"), b.input("s", "f32[1]"),
                                   transpose_b=True),
    "qmatmul_i8": lambda b: b.qmatmul_i8(b.input("x", "f32[2, 8]"), b.input("w", "ternary[4, 8]"),
                                         b.input("s", "f32[2, 1]"), b.input("t", "f32[1]"), transpose_b=True),
    "qmatmul_q8": lambda b: b.qmatmul_q8(b.input("x", "i8[2, 64]"), b.input("s", "f32[2, 2]"),
                                         b.input("w", "i4[4, 64]"), b.input("t", "f32[4, 1]"), group=32),
    "lut_precompute": lambda b: b.lut_precompute(b.input("x", "i8[2, 8]"), quantize=True),
    "lut_matmul": lambda b: b.lut_matmul(b.input("l", "i8[2, 2, 2, 16]"), b.input("u", "i32[2, 1]"),
                                         b.input("w", "i2[2, 128]"), b.input("s", "f32[1]"), b.input("t", "f32[1]"),
                                         n=40, rows=32),
}


@pytest.mark.parametrize("op", sorted(BAD))
def test_bad_operands_raise_verify_error_naming_the_op(op):
    b = Builder()
    with pytest.raises(ladder.LadderError) as ei:
        out = BAD[op](b)
        if isinstance(out, ladder.Value):
            b.build(out)  # param and const are checked by the verifier when the graph is built
    err = ei.value
    assert isinstance(err, ladder.VerifyError), type(err)
    assert f"'{op}'" in err.message, str(err)
    # the location points at the offending line (the builder records the Python call site)
    assert err.loc is not None
    assert "test_ops.py" in str(err.loc)


def test_bad_operand_counts_are_verify_errors():
    b = Builder()
    x = b.input("x", "f32[2]")
    with pytest.raises(ladder.VerifyError, match="'add'.*operand"):
        b.add(x)
    with pytest.raises(ladder.VerifyError, match="'matmul'.*attribute"):
        b.matmul(x, x, transpose=True)


# ---------------------------------------------------------------------------------------------- coverage

def test_every_registered_op_is_tested():
    assert COVERED == set(OPS), f"untested: {sorted(set(OPS) - COVERED)}; unknown: {sorted(COVERED - set(OPS))}"
    assert set(BAD) == set(OPS), f"no verify-error case for {sorted(set(OPS) - set(BAD))}"
