"""lut_precompute and lut_matmul (ladder.ops.lut) in the reference interpreter: tables against brute-force
sums, lookups against plain integer dot products, the stated error bound of int8 tables, and verify errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import ladder
from ladder import Builder
from ladder.ops.lut import LUT_DTYPES, beta, quantization_error_bound, weight_form
from ladder.packing import from_codes
from ladder.types import DTYPES


def rand_codes(rng, dname, shape):
    dt = DTYPES[dname]
    return from_codes(rng.integers(0, 3 if dname == "ternary" else 2 ** dt.bits, shape).astype(np.uint8), dt)


def interleave(w: np.ndarray, rows: int, g: int) -> np.ndarray:
    """[n, k] -> lut_matmul's [NB, G * rows * g]: rows padded with row 0, K with column 0 (values that meet
    zero activations or are never returned)."""
    n, k = w.shape
    nb, n_groups = -(-n // rows), -(-k // g)
    wp = np.empty((nb * rows, n_groups * g), w.dtype)
    wp[:n, :k] = w
    wp[:n, k:] = w[:, :1]
    wp[n:] = wp[:1]
    return wp.reshape(nb, rows, n_groups, g).transpose(0, 2, 1, 3).reshape(nb, n_groups * rows * g)


def lut_graph(x_type: str, dname: str, n: int, k: int, rows: int, g: int, quantize=False, act_group=0,
              fast=False, epilogue=()):
    b = Builder()
    x = b.input("x", x_type)
    res = b.lut_precompute(x, g=g, quantize=quantize, act_group=act_group)
    nb, width = -(-n // rows), -(-k // g) * rows * g
    w = b.pack(b.param("w", f"{dname}[{nb}, {width}]"), layout="planes")
    s1, s2 = b.param("s1", "f32[1]"), b.param("s2", f"f32[{n}]")
    y = b.lut_matmul(res[0], res[1], w, s1, s2, *res[2:], n=n, rows=rows, g=g, act_group=act_group,
                     fast_aggregation=fast, epilogue=list(epilogue))
    return b.build(y)


def run_lut(x, w, **kw):
    n, k = w.shape
    dname = kw.pop("dname")
    xt = f"{'i8' if x.dtype == np.int8 else 'f32'}[{', '.join(map(str, x.shape))}]"
    g = lut_graph(xt, dname, n, k, **kw)
    s2 = np.linspace(0.5, 1.5, n).astype(np.float32)
    weights = {"w": interleave(w, kw["rows"], kw["g"]), "s1": np.full(1, 0.25, np.float32), "s2": s2}
    (y,) = ladder.run(g, {"x": x}, weights).values()
    return y, np.float32(0.25) * s2


# -- tables ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("g", [1, 2, 4])
def test_tables_hold_every_signed_sum_and_mirror(g):
    rng = np.random.default_rng(g)
    k = 4 * g + 1  # a partial last group
    xq = rng.integers(-128, 128, (2, k)).astype(np.int8)
    xf = rng.standard_normal((2, k)).astype(np.float32)
    b = Builder()
    i, f = b.input("i", f"i8[2, {k}]"), b.input("f", f"f32[2, {k}]")
    ti, si = b.lut_precompute(i, g=g)
    tf, sf = b.lut_precompute(f, g=g)
    out = ladder.run(b.build(ti, si, tf, sf), {"i": xq, "f": xf})
    ti, si, tf, sf = (out[v] for v in ("0", "1", "2", "3"))
    n_groups = -(-k // g)
    assert ti.shape == (2, n_groups, 2, 1 << g) and tf.shape == (2, n_groups, 1 << g)
    exact = ti[..., 0, :].view(np.uint8).astype(np.int64) + 256 * ti[..., 1, :].astype(np.int64)
    for m, j in itertools.product(range(2), range(n_groups)):
        xs = list(range(j * g, min(k, (j + 1) * g)))
        for idx, signs in enumerate(itertools.product((-1, 1), repeat=g)):
            signs = signs[::-1]  # itertools varies the last position fastest; bit t of idx is sign t
            assert exact[m, j, idx] == sum(s * int(xq[m, kk]) for s, kk in zip(signs, xs))
            np.testing.assert_allclose(tf[m, j, idx], sum(s * float(xf[m, kk]) for s, kk in zip(signs, xs)),
                                       rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(tf[m, j], -tf[m, j, ::-1])  # T[~i] = -T[i], bit for bit
    np.testing.assert_array_equal(si[:, 0], xq.astype(np.int64).sum(axis=1))
    np.testing.assert_allclose(sf[:, 0], xf.astype(np.float64).sum(axis=1), rtol=1e-5)


def test_quantized_tables_use_one_scale_per_activation_group():
    x = np.array([[1.0, -2.0, 0.5, 0.25, 8.0, 0.0, 0.0, -1.0, 0.125]], np.float32)  # 3 groups of 4
    b = Builder()
    xi = b.input("x", "f32[1, 9]")
    t, _, scale = b.lut_precompute(xi, quantize=True, act_group=4)
    _, _, scale0 = b.lut_precompute(xi, quantize=True)
    out = ladder.run(b.build(t, scale, scale0), {"x": x})
    np.testing.assert_allclose(out["2"][0], [3.75 / 127, 9.0 / 127, 0.125 / 127], rtol=1e-6)
    np.testing.assert_allclose(out["5"][0], [9.0 / 127], rtol=1e-6)
    q = out["0"][0]
    assert q.dtype == np.int8 and q[0, 0] == -q[0, 15] and np.abs(q).max() == 127
    assert (np.abs(q).max(axis=1) == 127).all()  # every activation group uses its whole range


# -- lookups ------------------------------------------------------------------------------------------------

SHAPES = [(1, 1, 1), (3, 5, 7), (2, 17, 33), (1, 40, 64)]


@pytest.mark.parametrize("dname", LUT_DTYPES)
@pytest.mark.parametrize("g, rows", [(4, 16), (2, 8), (1, 8), (4, 32)])
def test_exact_tables_give_the_integer_dot_product(dname, g, rows):
    rng = np.random.default_rng(hash((dname, g, rows)) % 2**32)
    for m, n, k in SHAPES:
        x = rng.integers(-128, 128, (m, k)).astype(np.int8)
        w = rand_codes(rng, dname, (n, k))
        y, scale = run_lut(x, w, dname=dname, rows=rows, g=g)
        dot = x.astype(np.int64) @ w.astype(np.int64).T
        np.testing.assert_array_equal(y, dot.astype(np.float32) * scale)


def test_weight_forms_fold_the_offset_into_the_activation_sum():
    # value = a * offset_code + c; beta = a (2^P - 1) + 2c
    assert [weight_form(DTYPES[d]) for d in LUT_DTYPES] == [(2, -1), (1, 0), (1, -2), (1, 0), (1, -1), (1, -8),
                                                            (1, 0)]
    assert [beta(DTYPES[d]) for d in LUT_DTYPES] == [0, 1, -1, 3, 1, -1, 15]


def test_float_tables_match_the_float_dot_product():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 50)).astype(np.float32)
    w = rand_codes(rng, "i4", (9, 50))
    y, scale = run_lut(x, w, dname="i4", rows=16, g=4, epilogue=("relu",))
    ref = np.maximum(x.astype(np.float64) @ w.astype(np.float64).T * scale, 0)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * np.abs(x).sum())


@pytest.mark.parametrize("dname", ["i1", "ternary", "i2", "u4"])
@pytest.mark.parametrize("act_group, fast", [(0, False), (8, False), (12, True), (0, True)])
def test_int8_tables_stay_within_the_stated_bound(dname, act_group, fast):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((4, 301)) * rng.uniform(0.1, 10, (4, 1))).astype(np.float32)
    w = rand_codes(rng, dname, (33, 301))
    y, scale = run_lut(x, w, dname=dname, rows=16, g=4, quantize=True, act_group=act_group, fast=fast)
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    err = np.abs(y / scale - exact)
    bound = quantization_error_bound(x, DTYPES[dname], 4, act_group, fast)[:, None]
    slack = 1e-5 * (np.abs(x).astype(np.float64) @ np.abs(w.astype(np.float64)).T)  # f32 rounding
    assert (err <= bound + slack).all(), (err - bound - slack).max()
    assert err.max() > 0  # the tables really are quantized
    assert (bound < 0.1 * np.abs(x).sum(axis=1, keepdims=True) * 2 ** DTYPES[dname].bits).all()


def test_fast_aggregation_rounds_pairs_up():
    # two groups of 4 activations with sums 5 and 2.05; u1 weights all 1 -> index 15 of both tables
    x = np.array([[2.5, 1.25, 0.75, 0.5, 1.0, 0.5, 0.25, 0.3]], np.float32)
    w = np.ones((1, 8), np.uint8)
    exact, scale = run_lut(x, w, dname="u1", rows=8, g=4, quantize=True)
    fast, _ = run_lut(x, w, dname="u1", rows=8, g=4, quantize=True, fast=True)
    unit = np.float32(5.0) / np.float32(127)
    q = np.rint(np.array([5.0, 2.05], np.float32) / unit)
    assert q.tolist() == [127, 52]
    s = float(x.astype(np.float64).sum())
    # u1: dot = (U + S) / 2; int8 tables: U = (127 + 52) units; fast: 2 * floor((127 + 52 + 1) / 2) = 180 units
    np.testing.assert_allclose(exact[0, 0] / scale[0], (179 * unit + s) / 2, rtol=1e-6)
    np.testing.assert_allclose(fast[0, 0] / scale[0], (180 * unit + s) / 2, rtol=1e-6)


# -- verify errors -------------------------------------------------------------------------------------------

def _pre(b, x="i8[2, 8]", **kw):
    return b.lut_precompute(b.input("x", x), **kw)


def _mm(b, table="i8[2, 2, 2, 16]", tsum="i32[2, 1]", w="i2[1, 64]", s1="f32[1]", s2="f32[1]", scale=None, **kw):
    ins = [b.input("t", table), b.input("u", tsum), b.input("w", w), b.input("s", s1), b.input("r", s2)]
    if scale:
        ins.append(b.input("c", scale))
    return b.lut_matmul(*ins, **{"n": 5, "rows": 8, **kw})


BAD = [
    (lambda b: _pre(b, g=3), r"g must be one of 1, 2, 4"),
    (lambda b: _pre(b, x="f16[2, 8]"), r"x must be i8 codes or f32"),
    (lambda b: _pre(b, quantize=True), r"quantize applies to f32"),
    (lambda b: _pre(b, x="f32[2, 8]", quantize=True, act_group=6), r"act_group must be 0 .* multiple of g = 4"),
    (lambda b: _pre(b, x="f32[2, 8]", act_group=8), r"needs quantize = true"),
    (lambda b: _pre(b, x="f32[2, 0]"), r"non-empty last axis"),
    (lambda b: _mm(b, w="i2[1, 32]"), r"interleaved for 8 rows: i2\[1, 64\]"),
    (lambda b: _mm(b, w="nf4[1, 64]"), r"w must be i1, u1"),
    (lambda b: _mm(b, tsum="f32[2, 1]"), r"sum must be i32\[2, 1\]"),
    (lambda b: _mm(b, table="i8[2, 3, 16]"), r"table must be i8\[..., G, 2, 16\]"),
    (lambda b: _mm(b, rows=12), r"rows a positive multiple of 8"),
    (lambda b: _mm(b, fast_aggregation=True), r"fast_aggregation .* needs quantized tables"),
    (lambda b: _mm(b, s1="f32[3]"), r"\[2, 5\] and \[3\] and \[1\] do not broadcast"),
    (lambda b: _mm(b, s2="i32[1]"), r"s2 must be f32"),
    (lambda b: _mm(b, table="i8[2, 2, 16]", tsum="f32[2, 1]", scale="f32[2, 2]"), r"scale must be f32\[2, 1\]"),
    (lambda b: _mm(b, epilogue=["softmax"]), r"epilogue 'softmax'"),
    (lambda b: _mm(b, unroll=3), r"unroll must be 1, 2, 4 or 8"),
]


@pytest.mark.parametrize("case, message", BAD, ids=[m for _, m in BAD])
def test_bad_lut_ops_raise_located_verify_errors(case, message):
    with pytest.raises(ladder.VerifyError, match=message) as ei:
        case(Builder())
    assert ei.value.loc is not None and "test_lut_ops.py" in str(ei.value.loc)
    assert "'lut_" in ei.value.message


def test_text_errors_point_at_the_line():
    text = """graph @g(%x: i8[2, 8], %s: f32[1]) -> f32[2, 5] {
  %w = param @w : i2[1, 64]
  %t, %u = lut_precompute %x : i8[2, 2, 2, 16], i32[2, 1]
  %y = lut_matmul %t, %u, %w, %s, %s {n = 5, rows = 16} : f32[2, 5]
  return %y
}
"""
    with pytest.raises(ladder.LadderError) as ei:
        ladder.parse(text, "bad.lir")
    assert "bad.lir:4:" in str(ei.value) and "interleaved for 16 rows" in str(ei.value)


def test_printed_graph_parses_back_the_same():
    g = lut_graph("f32[3, 37]", "ternary", 5, 37, 8, 4, quantize=True, act_group=8, fast=True, epilogue=("silu",))
    assert ladder.parse(str(g)) == g
    assert "fast_aggregation = true" in str(g) and "act_group = 8" in str(g)
