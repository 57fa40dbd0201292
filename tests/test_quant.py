"""ladder.quant against hand-written per-granule loops (explicit and hypothesis-driven shapes and groups)."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ladder import DTYPES
from ladder import quant

SETTINGS = settings(max_examples=50, deadline=None)
EPS = np.float32(1e-5)


# -- reference helpers ----------------------------------------------------------------------------------

def granules(shape, axis, group):
    """Yield (index tuple into x, index tuple into the scale) for every granule, written out by hand."""
    if group < 0:
        yield tuple(slice(None) for _ in shape), (0,) * len(shape)
        return
    others = [range(d) if i != axis else [None] for i, d in enumerate(shape)]
    d = shape[axis]
    g = d if group == 0 else group
    n = 1 if group == 0 else math.ceil(d / group)
    for o in np.ndindex(*[len(r) for r in others]):
        for j in range(n):
            xi = tuple(slice(j * g, min((j + 1) * g, d)) if i == axis else o[i] for i in range(len(shape)))
            si = tuple(j if i == axis else o[i] for i in range(len(shape)))
            yield xi, si


def ref_expand(scale, shape, axis, group):
    scale = np.asarray(scale)
    out = np.empty(shape, scale.dtype)
    for idx in np.ndindex(*shape):
        sidx = []
        for i, k in enumerate(idx):
            if scale.ndim == 0 or scale.size == 1:
                sidx.append(0)
            elif scale.shape[i] == 1:
                sidx.append(0)
            elif i == axis and group > 0:
                sidx.append(k // group)
            else:
                sidx.append(k)
        out[idx] = scale.reshape(-1)[0] if scale.size == 1 else scale[tuple(sidx)]
    return out


def ref_quantize(x, scheme, dt, axis, group, zero_mode):
    """Per-granule reference of the recipes in ladder.quant's docstring, in float32.
    Returns codes (float), the value each code was rounded from, scale[, zero]."""
    x = np.asarray(x, np.float32)
    qmin, qmax = (np.float32(v) for v in dt.value_range)
    sshape = tuple(1 for _ in x.shape) if group < 0 else tuple(
        (1 if group == 0 else math.ceil(d / group)) if i == axis else d for i, d in enumerate(x.shape))
    q = np.zeros(x.shape, np.float32)
    pre = np.zeros(x.shape, np.float32)
    scale = np.zeros(sshape, np.float32)
    zero = np.zeros(sshape, np.float32)
    for xi, si in granules(x.shape, axis, group):
        blk = x[xi]
        if scheme == "absmax":
            m = max(np.float32(np.abs(blk).max()), EPS)
            p = blk * (qmax / m)
            scale[si] = m / qmax
            lo_c, hi_c = qmin, qmax
        elif scheme == "absmean":
            m = max(np.float32(np.abs(blk.astype(np.float64)).mean()), EPS)
            p = blk * (np.float32(1) / m)
            scale[si] = m
            lo_c, hi_c = qmin, qmax
        elif zero_mode == "none":
            flat = blk.reshape(-1)
            a = flat[int(np.argmax(np.abs(flat)))]
            s = np.float32(a / qmin)
            inv = np.float32(1) / s if s != 0 else np.float32(0)
            p = blk * inv
            scale[si] = s
            lo_c, hi_c = qmin, qmax
        else:
            lo, hi = np.float32(blk.min()), np.float32(blk.max())
            if zero_mode == "original":  # GPTQ widens the range to hold 0
                lo, hi = min(lo, np.float32(0)), max(hi, np.float32(0))
            s = np.float32((hi - lo) / qmax)
            inv = np.float32(1) / s if s != 0 else np.float32(0)
            scale[si] = s
            if zero_mode == "original":
                z = np.float32(min(max(np.rint(-lo * inv), 0), qmax))
                p = blk * inv
                zero[si] = z
                q[xi] = np.clip(np.rint(p) + z, 0, qmax)
                pre[xi] = p
                continue
            zero[si] = -lo
            p = (blk - lo) * inv
            lo_c, hi_c = np.float32(0), qmax
        pre[xi] = p
        q[xi] = np.clip(np.rint(p), lo_c, hi_c)
    return (q, pre, scale) + ((zero,) if zero_mode != "none" else ())


def assert_codes(codes, ref_q, pre, exact=False):
    got = np.asarray(codes).astype(np.float32)
    diff = got != ref_q
    if exact:
        np.testing.assert_array_equal(got, ref_q)
        return
    # Away from a rounding tie (x.5) the codes must agree; at a tie the last ulp of the scale may decide.
    frac = np.abs(pre - np.floor(pre) - 0.5)
    assert np.all(~diff | (frac < 1e-3)), (got[diff], ref_q[diff], pre[diff])
    assert np.all(np.abs(got - ref_q) <= 1)


# -- reduced_shape and expand ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis,group,want", [
    ((4, 10), 1, -1, (1, 1)),
    ((4, 10), 1, 0, (4, 1)),
    ((4, 10), 0, 0, (1, 10)),
    ((4, 10), 1, 4, (4, 3)),
    ((4, 10), 1, 5, (4, 2)),
    ((4, 10), 1, 10, (4, 1)),
    ((4, 10), 1, 32, (4, 1)),
    ((2, 3, 7), 2, 1, (2, 3, 7)),
    ((2, 3, 7), 1, 2, (2, 2, 7)),
    ((5,), 0, 0, (1,)),
])
def test_reduced_shape(shape, axis, group, want):
    assert quant.reduced_shape(shape, axis, group) == want


def test_expand_groupwise_partial_last_group():
    s = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], np.float32)
    out = quant.expand(s, (2, 10), 1, 4)
    assert out.tolist() == [[1.0] * 4 + [2.0] * 4 + [3.0] * 2, [4.0] * 4 + [5.0] * 4 + [6.0] * 2]


def test_expand_per_channel_and_scalar():
    assert quant.expand(np.array([[2.0], [3.0]]), (2, 3), 1, 0).tolist() == [[2.0] * 3, [3.0] * 3]
    assert quant.expand(np.array([[2.0, 3.0, 4.0]]), (2, 3), 0, 0).tolist() == [[2.0, 3.0, 4.0]] * 2
    assert quant.expand(np.array([7.0]), (2, 2), 1, 4).tolist() == [[7.0, 7.0]] * 2
    assert quant.expand(np.float32(7.0), (3,), 0, -1).tolist() == [7.0] * 3


@st.composite
def granularity(draw, max_rank=3, max_dim=7):
    rank = draw(st.integers(1, max_rank))
    shape = tuple(draw(st.lists(st.integers(1, max_dim), min_size=rank, max_size=rank)))
    axis = draw(st.integers(0, rank - 1))
    group = draw(st.integers(-1, shape[axis] + 2))
    return shape, axis, group


@SETTINGS
@given(granularity(), st.integers(0, 2**32 - 1))
def test_reduced_shape_and_expand_hypothesis(gran, seed):
    shape, axis, group = gran
    rs = quant.reduced_shape(shape, axis, group)
    for i, (d, r) in enumerate(zip(shape, rs)):
        if group < 0:
            assert r == 1
        elif i != axis:
            assert r == d
        else:
            assert r == (1 if group == 0 else -(-d // group))
    scale = np.random.default_rng(seed).standard_normal(rs).astype(np.float32)
    np.testing.assert_array_equal(quant.expand(scale, shape, axis, group), ref_expand(scale, shape, axis, group))


# -- quantize -------------------------------------------------------------------------------------------

CASES = [
    ("absmax", "i8", "none"), ("absmax", "i4", "none"), ("absmax", "i2", "none"),
    ("absmean", "ternary", "none"), ("absmean", "i4", "none"),
    ("rtn", "i4", "none"), ("rtn", "i8", "none"), ("rtn", "i2", "none"),
    ("rtn", "u4", "original"), ("rtn", "u4", "rescale"), ("rtn", "u8", "original"), ("rtn", "u2", "rescale"),
]


def _sample(shape, seed):
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape).astype(np.float32) * np.float32(10.0 ** r.integers(-3, 3))
    kind = r.integers(0, 4)
    if kind == 1:
        x = np.abs(x)  # one-signed data
    elif kind == 2:
        x.reshape(-1)[r.integers(0, x.size)] = 0.0
        x[..., :1] = 0.0  # zero slices: all-zero granules happen
    return x


def _check_quantize(x, scheme, dt_name, axis, group, zero_mode):
    dt = DTYPES[dt_name]
    got = quant.quantize(x, scheme, dt, axis, group, zero_mode)
    ref = ref_quantize(x, scheme, dt, axis, group, zero_mode)
    assert len(got) == len(ref) - 1
    codes = got[0]
    assert codes.dtype == dt.np_dtype and codes.shape == x.shape
    for g, r in zip(got[1:], ref[2:]):
        assert g.dtype == np.float32 and g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=0)
    lo, hi = dt.value_range
    c = codes.astype(np.float32)
    assert c.min() >= lo and c.max() <= hi
    assert_codes(codes, ref[0], ref[1], exact=scheme == "absmax")
    return got


@pytest.mark.parametrize("scheme,dt,zero_mode", CASES)
@pytest.mark.parametrize("axis,group", [(1, -1), (1, 0), (0, 0), (1, 3), (1, 4), (0, 2)])
def test_quantize_against_reference(scheme, dt, zero_mode, axis, group):
    x = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32) * 2
    x[1, 4] = 9.0
    _check_quantize(x, scheme, dt, axis, group, zero_mode)


@pytest.mark.parametrize("scheme,dt,zero_mode", CASES)
def test_quantize_hypothesis(scheme, dt, zero_mode):
    @SETTINGS
    @given(granularity(), st.integers(0, 2**32 - 1))
    def check(gran, seed):
        shape, axis, group = gran
        _check_quantize(_sample(shape, seed), scheme, dt, axis, group, zero_mode)
    check()


def test_quantize_absmax_all_zero_token_uses_eps():
    q, s = quant.quantize(np.zeros((2, 4), np.float32), "absmax", DTYPES["i8"], 1, 0, "none")
    assert np.all(q == 0)
    np.testing.assert_allclose(s, np.full((2, 1), 1e-5 / 127, np.float32), rtol=1e-6)


def test_quantize_rtn_symmetric_uses_signed_extreme():
    # Q4_0: s = (element of largest magnitude) / -8, so that element maps to -8 exactly
    x = np.array([[0.5, -1.0, 2.0, 1.0], [-4.0, 1.0, 2.0, 3.0]], np.float32)
    q, s = quant.quantize(x, "rtn", DTYPES["i4"], 1, 0, "none")
    assert s[:, 0].tolist() == [-0.25, 0.5]
    assert q.dtype == ml_dtypes.int4
    assert q.astype(int).tolist() == [[-2, 4, -8, -4], [-8, 2, 4, 6]]


def test_quantize_rtn_ties_round_to_even():
    x = np.array([[2.5, 0.5, 1.5, -8.0]], np.float32)  # s = -8 / -8 = 1: codes are rint(x)
    q, s = quant.quantize(x, "rtn", DTYPES["i4"], 1, 0, "none")
    assert s.tolist() == [[1.0]] and q.astype(int).tolist() == [[2, 0, 2, -8]]


def test_quantize_ternary_absmean_values():
    w = np.array([[0.1, -0.3, 0.0, 0.6]], np.float32)  # mean|w| = 0.25
    q, s = quant.quantize(w, "absmean", DTYPES["ternary"], 1, -1, "none")
    assert s.shape == (1, 1) and abs(float(s[0, 0]) - 0.25) < 1e-7
    assert q.tolist() == [[0, -1, 0, 1]]


# -- dequantize -----------------------------------------------------------------------------------------

def ref_dequantize(codes_values, scale, zero, axis, group, zero_mode):
    out = np.empty(codes_values.shape, np.float32)
    s = ref_expand(np.asarray(scale, np.float32), codes_values.shape, axis, group)
    z = None if zero is None else ref_expand(np.asarray(zero, np.float32), codes_values.shape, axis, group)
    for idx in np.ndindex(*codes_values.shape):
        v = np.float32(codes_values[idx])
        if zero_mode == "none":
            out[idx] = v * s[idx]
        elif zero_mode == "original":
            out[idx] = (v - z[idx]) * s[idx]
        else:
            out[idx] = v * s[idx] - z[idx]
    return out


@pytest.mark.parametrize("dt", ["i8", "i4", "ternary", "u4", "nf4", "fp4", "i1"])
@pytest.mark.parametrize("zero_mode", ["none", "original", "rescale"])
def test_dequantize_against_reference(dt, zero_mode):
    t = DTYPES[dt]
    r = np.random.default_rng(3)
    codes_u8 = r.integers(0, len(t.table), (4, 9)).astype(np.uint8)
    values = t.decode(codes_u8)
    codes = codes_u8 if t.kind == "table" else values.astype(t.np_dtype)
    scale = r.uniform(0.1, 2.0, (4, 3)).astype(np.float32)
    zero = r.uniform(-3, 3, (4, 3)).astype(np.float32) if zero_mode != "none" else None
    got = quant.dequantize(codes, t, scale, zero, 1, 4, zero_mode)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref_dequantize(values, scale, zero, 1, 4, zero_mode), rtol=1e-6, atol=1e-6)


@SETTINGS
@given(granularity(), st.integers(0, 2**32 - 1), st.sampled_from(CASES))
def test_quantize_dequantize_round_trip_error_hypothesis(gran, seed, case):
    shape, axis, group = gran
    scheme, dt_name, zero_mode = case
    dt = DTYPES[dt_name]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    res = quant.quantize(x, scheme, dt, axis, group, zero_mode)
    zero = res[2] if zero_mode != "none" else None
    y = quant.dequantize(res[0], dt, res[1], zero, axis, group, zero_mode)
    np.testing.assert_allclose(y, ref_dequantize(res[0].astype(np.float32), res[1], zero, axis, group, zero_mode),
                               rtol=1e-6, atol=1e-6)
    step = np.abs(ref_expand(res[1], shape, axis, group))
    err = np.abs(y - x)
    tol = 1e-5 * (1 + np.abs(x))
    if scheme == "absmax":  # max|x| maps to qmax exactly: nothing is clipped
        assert np.all(err <= 0.5 * step * (1 + 1e-5) + tol)
    elif scheme == "rtn" and zero_mode == "rescale":
        assert np.all(err <= 0.5 * step * (1 + 1e-5) + tol)
    elif scheme == "rtn" and zero_mode == "none":  # the extreme of the other sign may clip by one step
        assert np.all(err <= step * (1 + 1e-5) + tol)
    elif scheme == "rtn":  # original: the range holds 0, so only the rounded zero point adds a step
        assert np.all(err <= step * (1 + 1e-5) + tol)
    else:  # absmean: values beyond qmax * mean|x| clip; the rest are within half a step
        inside = np.abs(x) <= (float(dt.value_range[1]) + 0.5) * step
        assert np.all(err[inside] <= 0.5 * step[inside] * (1 + 1e-5) + tol[inside])


# -- regressions from differential fuzzing: the reference must compute every graph the verifier accepts --------

EMPTY_CASES = [("absmax", "i8", "none"), ("absmean", "ternary", "none"), ("rtn", "i4", "none"),
               ("rtn", "u4", "original"), ("rtn", "u8", "rescale")]


@pytest.mark.parametrize("case", EMPTY_CASES, ids="-".join)
@pytest.mark.parametrize("shape, axis", [((3, 0), 1), ((0, 5), 1), ((0, 5), 0), ((0,), 0)])
@pytest.mark.parametrize("group", [-1, 0, 2])
def test_quantize_empty_granules(case, shape, axis, group):
    # numpy's max over a zero-size granule raised ValueError; an empty granule now has scale 0 (eps for absmax)
    scheme, dt_name, zero_mode = case
    dt = DTYPES[dt_name]
    res = quant.quantize(np.zeros(shape, np.float32), scheme, dt, axis, group, zero_mode)
    assert res[0].shape == shape and res[0].dtype == dt.np_dtype
    assert all(r.shape == quant.reduced_shape(shape, axis, group) for r in res[1:])
    assert np.all(np.isfinite(res[1]))
    y = quant.dequantize(res[0], dt, res[1], res[2] if zero_mode != "none" else None, axis, group, zero_mode)
    assert y.shape == shape


def test_quantize_empty_granule_through_the_interpreter():
    import ladder
    g = ladder.parse("graph @g(%x: f32[3, 0]) -> (i8[3, 0], f32[3, 1]) {\n"
                     "  %q, %s = quantize %x {scheme = \"absmax\", dtype = i8} : i8[3, 0], f32[3, 1]\n"
                     "  return %q, %s\n}\n")
    out = ladder.run(g, {"x": np.zeros((3, 0), np.float32)})
    q, s = (out[v] for v in g.outputs)
    assert q.shape == (3, 0) and s.tolist() == [[float(EPS / np.float32(127))]] * 3


@pytest.mark.parametrize("group", [1 << 20, 1 << 40])
def test_group_longer_than_the_axis_costs_no_memory(group):
    # a group of 2^20 over an axis of 95 padded every row to 2^20 (GiBs for a 2 MiB tensor); it is one granule
    import tracemalloc
    x = np.random.default_rng(5).standard_normal((4096, 95)).astype(np.float32)  # 1.5 MiB
    tracemalloc.start()
    try:
        q, s, z = quant.quantize(x, "rtn", DTYPES["u4"], 1, group, "original")
        y = quant.dequantize(q, DTYPES["u4"], s, z, 1, group, "original")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * x.nbytes, f"peak {peak / 2**20:.1f} MiB for a {x.nbytes / 2**20:.1f} MiB tensor"
    want = quant.quantize(x, "rtn", DTYPES["u4"], 1, 0, "original")  # one granule per row, the same thing
    assert np.array_equal(q, want[0]) and np.array_equal(s, want[1]) and np.array_equal(z, want[2])
    np.testing.assert_array_equal(y, quant.dequantize(want[0], DTYPES["u4"], want[1], want[2], 1, 0, "original"))


def test_codes_take_no_int64_copy():
    # _codes went through an int64 copy: 8 bytes a code for an int8 result
    import tracemalloc
    x = np.random.default_rng(6).standard_normal((1024, 1024)).astype(np.float32)  # 4 MiB
    tracemalloc.start()
    try:
        quant.quantize(x, "absmax", DTYPES["i8"], 1, 0, "none")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * x.nbytes, f"peak {peak / 2**20:.1f} MiB for a 4 MiB tensor"
