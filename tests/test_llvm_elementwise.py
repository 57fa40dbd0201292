"""LLVM element-wise kernels (backends/llvm/lowerings/elementwise.py) against the reference interpreter.

Bit-exact: add sub mul div, neg relu relu2 round clamp (every float type and the integer types), and cast
between every pair of types Cast allows (exhaustive over every 4/8/16-bit source code, a structured sample of
f32 bit patterns and i32 edge values). Float results that are NaN in the reference must be NaN (the payload of
a NaN *computed* by add/sub/mul/div depends on operand order, which LLVM may swap); casts compare every bit,
NaN included.

Tolerance: gelu silu sigmoid tanh erf exp compute in float64 like the reference, with libm, then round to
the result type; libm and numpy may differ by an ulp of float64, so a result may differ by at most 1 ulp of
the result type (checked: almost all are bit-exact). gelu(approximate="tanh") cancels in 1 + tanh(u) for
x < -5, where numpy's own tanh and libm's differ in the last float64 bit: there |got - ref| <= 1 ulp of the
result type + 2^-50 * |x|.

Every graph runs on target "cpu" and "cpu:generic", at 1 and 2 threads (identical results); a guard test calls
each kernel on buffers surrounded by canary bytes over arbitrary [begin, end) splits.
"""

import warnings

import ml_dtypes
import numpy as np
import pytest
from ladder.backends.llvm.codegen import LOWERINGS
from ladder.backends.llvm.compiler import compile_graph
from ladder.backends.llvm.lowerings import elementwise as elt

import ladder
from ladder.builder import Builder
from ladder.types import DTYPES

TARGETS = ["cpu", "cpu:generic"]
FLOATS = ["f32", "f16", "bf16", "fp8e4m3", "fp4"]
INTS = ["i32", "i16", "i8", "u8", "i4", "u4", "i2", "u2", "u1"]
SOURCES = FLOATS + INTS + ["i1", "ternary"]
TRANSCENDENTAL = ["exp", "tanh", "erf", "sigmoid", "silu", "gelu", "sqrt"]
KINDS = ["add", "sub", "mul", "div", "neg", "relu", "relu2", "gelu", "silu", "sigmoid", "tanh", "erf", "exp",
         "round", "clamp", "cast", "sqrt"]

SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 0.5, 1.5, 2.5, -2.5, 0.25, 0.75, 448, 464, 465,
                    480, 6, 7, -7, 5, 65504, 65520, 65519.99, 3.4e38, -3.4e38, 1e-8, -1e-40, 1.4e-45, 2 ** -24,
                    2 ** -25, 3 * 2 ** -26, 2 ** -10, 2 ** -9, 3 * 2 ** -10, 2147483520.0, 2147483648.0,
                    -2147483648.0, -2147483904.0, 32767.5, -32768.9, 127.9, -128.5, 255.5, 8388608.5, 0.9999999],
                   np.float32)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def np_dtype(name):
    return DTYPES[name].np_dtype


def f32_sample(rng, n):
    """Special values, random bit patterns, and patterns dense around the f16/fp8/fp4 exponent ranges."""
    bits = rng.integers(0, 2 ** 32, n, dtype=np.uint64)
    near = rng.integers(0x2A000000, 0x48000000, n, dtype=np.uint64) | (rng.integers(0, 2, n, dtype=np.uint64) << 31)
    nan_payloads = np.array([0x7F800001, 0xFF800001, 0x7F812345, 0x7FC00000, 0xFFC00000, 0x7FFFFFFF], np.uint64)
    allbits = np.concatenate([bits, near, nan_payloads]).astype(np.uint32)
    return np.concatenate([SPECIAL, allbits.view(np.float32)])


def values(rng, name, shape):
    """Random values of a type in its numpy dtype: floats spread over several scales with specials first."""
    n = int(np.prod(shape))
    dt = DTYPES[name]
    if dt.is_float:
        v = (rng.standard_normal(n) * rng.choice([0.01, 1, 4, 20, 100], n)).astype(np.float32)
        k = min(n, 12)
        v[:k] = SPECIAL[:k]
        return v.astype(dt.np_dtype).reshape(shape)
    lo, hi = dt.value_range
    return rng.integers(int(lo), int(hi) + 1, n).astype(dt.np_dtype).reshape(shape)


def bits_of(a):
    a = np.ascontiguousarray(a).reshape(-1)
    return a.view(np.uint8).reshape(a.size, a.dtype.itemsize)


def is_float_array(a):
    return a.dtype in (np.float32, np.float16) or a.dtype in (np.dtype(ml_dtypes.bfloat16),
                                                              np.dtype(ml_dtypes.float8_e4m3fn),
                                                              np.dtype(ml_dtypes.float4_e2m1fn))


def assert_same(ref, got, what, nan_as_nan=True):
    assert got.shape == ref.shape and got.dtype == ref.dtype, (what, got.shape, got.dtype, ref.shape, ref.dtype)
    bad = ~np.all(bits_of(ref) == bits_of(got), axis=1)
    if nan_as_nan and is_float_array(ref):
        r, g = ref.reshape(-1).astype(np.float32), got.reshape(-1).astype(np.float32)
        bad &= ~(np.isnan(r) & np.isnan(g))
    if bad.any():
        i = int(np.argmax(bad))
        pytest.fail(f"{what}: {int(bad.sum())}/{bad.size} differ; first at flat {i}: "
                    f"ref {ref.reshape(-1)[i]!r} got {got.reshape(-1)[i]!r}")


def run_everywhere(graph, inputs, targets=TARGETS):
    """The graph on the targets at 1 and 2 threads; every run must give identical bits. Returns one result."""
    results = []
    for target in targets:
        cg = compile_graph(graph, target=target, pipeline="")
        for threads in (1, 2):
            results.append(cg.run(inputs, threads=threads))
    for other in results[1:]:
        for k in results[0]:
            assert np.array_equal(bits_of(results[0][k]), bits_of(other[k])), k
    return results[0]


# -- structure -----------------------------------------------------------------------------------------------

def test_one_description_driven_lowering_covers_every_kind():
    assert sorted(elt.ELEMENTWISE) == sorted(KINDS)
    assert {LOWERINGS[k] for k in KINDS} == {elt.lower_elementwise}


def test_broadcast_plan_merges_axes():
    assert elt.broadcast_plan((2, 3, 4), [(2, 3, 4), (2, 3, 4)]) == ([24], [[1], [1]])
    assert elt.broadcast_plan((1, 6912), [(1, 6912), (6912,)]) == ([6912], [[1], [1]])
    assert elt.broadcast_plan((4, 5, 6), [(4, 5, 6), (6,)]) == ([20, 6], [[6, 1], [0, 1]])
    assert elt.broadcast_plan((4, 5, 6), [(4, 1, 1), (1, 5, 6)]) == ([4, 30], [[1, 0], [0, 1]])
    assert elt.broadcast_plan((), [(), ()]) == ([1], [[0], [0]])


@pytest.mark.parametrize("target, width", [("cpu", 8), ("cpu:generic", 4)])
def test_inner_loops_vectorise(target, width):
    b = Builder("v")
    x, y = b.input("x", "f32[4, 1000]"), b.input("y", "f32[1000]")
    h = b.input("h", "f16[1000]")
    g = b.build(b.add(x, y, name="s"), b.cast(h, dtype="f32", name="c"), b.relu(x, name="r"))
    ir_text = compile_graph(g, target=target, pipeline="").source()
    for fn in ("k_add_s", "k_cast_c", "k_relu_r"):
        body = ir_text.split(f"@{fn}(")[1].split("\n}\n")[0]
        assert f"<{width} x float>" in body or f"<{2 * width} x float>" in body, fn


# -- cast -------------------------------------------------------------------------------------------------------

def cast_inputs(rng):
    ins = {"f32": f32_sample(rng, 60000)}
    h = np.arange(2 ** 16, dtype=np.uint16)
    ins["f16"], ins["bf16"] = h.view(np.float16), h.view(ml_dtypes.bfloat16)
    ins["fp8e4m3"] = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn)
    ins["fp4"] = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn)
    edges = [2 ** 31 - 1, -2 ** 31, 2 ** 24 + 1, 2 ** 25 + 3, -(2 ** 24 + 1), 2 ** 30 + 2 ** 6, 65504, 65520, 65536,
             464, 465, 449, -465, 2 ** 31 - 64, 2 ** 31 - 65, 2 ** 31 - 129, 7, 5, -7]
    ins["i32"] = np.concatenate([edges, rng.integers(-2 ** 31, 2 ** 31, 20000), np.arange(-70000, 70000, 7)]
                                ).astype(np.int32)
    ins["i16"] = np.arange(-2 ** 15, 2 ** 15).astype(np.int16)
    ins["i8"], ins["u8"] = np.arange(-128, 128).astype(np.int8), np.arange(256).astype(np.uint8)
    for s in ("i4", "u4", "i2", "u2", "u1"):
        lo, hi = DTYPES[s].value_range
        ins[s] = np.arange(lo, hi + 1).astype(np_dtype(s))
    ins["i1"], ins["ternary"] = np.array([-1, 1, 1, -1], np.int8), np.array([-1, 0, 1, 1, 0], np.int8)
    return ins


@pytest.mark.parametrize("target", TARGETS)
def test_cast_every_pair_bit_exact(target):
    """cpu: all 224 (source, target) pairs. cpu:generic (the same integer-only conversion code, other vector
    widths): every source to every float type, and f32/f16/i32/i4 to every type."""
    ins = cast_inputs(np.random.default_rng(11))
    b = Builder("casts")
    xs = {s: b.input(s, f"{s}[{len(ins[s])}]") for s in SOURCES}
    pairs = [(s, t) for s in SOURCES for t in FLOATS + INTS
             if target == "cpu" or t in FLOATS or s in ("f32", "f16", "i32", "i4")]
    outs = [b.cast(xs[s], dtype=t, name=f"{s}_to_{t}") for s, t in pairs]
    g = b.build(*outs)
    ref = ladder.run(g, ins)
    got = run_everywhere(g, ins, [target])
    assert len(ref) == (224 if target == "cpu" else 16 * 5 + 4 * 9)
    for k in ref:
        assert_same(ref[k], got[k], k, nan_as_nan=False)


# -- arithmetic ----------------------------------------------------------------------------------------------

BROADCASTS = [((3, 1, 5), (1, 4, 5)), ((2, 3), (3,)), ((), (2, 3)), ((37,), (37,)), ((0, 3), (1, 3)),
              ((2, 1, 3, 1), (1, 5, 1, 4)), ((1,), (1,)), ((3, 33), (3, 1)), ((), ()), ((4, 1), (1, 7)),
              ((5,), (1,)), ((1, 1, 65), (2, 3, 1))]


def random_broadcasts(rng, count):
    out = []
    for _ in range(count):
        rank = int(rng.integers(0, 5))
        full = [int(rng.integers(0, 2) and rng.integers(1, 9)) or int(rng.integers(1, 4)) for _ in range(rank)]
        a = [d if rng.random() < 0.6 else 1 for d in full]
        bshape = [d if rng.random() < 0.6 else 1 for d in full][int(rng.integers(0, rank + 1)):]
        out.append((tuple(a), tuple(bshape)))
    return out


@pytest.mark.parametrize("dt", ["f32", "f16", "bf16", "fp8e4m3", "fp4", "i32", "i16", "i8", "u8"])
def test_binary_ops_broadcast_bit_exact(dt):
    rng = np.random.default_rng(sum(map(ord, dt)))
    kinds = ["add", "sub", "mul"] + (["div"] if DTYPES[dt].is_float else [])
    # every shape for f32 and i8; the others (same indexing code) take fewer
    shapes = BROADCASTS + random_broadcasts(rng, 6) if dt in ("f32", "i8") else BROADCASTS[:4] + random_broadcasts(rng, 1)
    b = Builder("bin")
    pairs, ins = [], {}
    for i, (sa, sb) in enumerate(shapes):
        pairs.append((b.input(f"a{i}", DTYPES[dt].name + str(list(sa))),
                      b.input(f"b{i}", DTYPES[dt].name + str(list(sb)))))
        ins[f"a{i}"], ins[f"b{i}"] = values(rng, dt, sa), values(rng, dt, sb)
    outs = [getattr(b, k)(x, y, name=f"{k}{i}") for i, (x, y) in enumerate(pairs) for k in kinds]
    g = b.build(*outs)
    ref = ladder.run(g, ins)
    got = run_everywhere(g, ins)
    for k in ref:
        assert_same(ref[k], got[k], f"{dt} {k}")
    if dt in ("i8", "u8"):  # wraparound was exercised
        assert any(np.any(ref[f"mul{i}"] != ins[f"a{i}"].astype(np.int64) * ins[f"b{i}"]) for i in range(3))


# -- unary ops -----------------------------------------------------------------------------------------------

CLAMPS = [dict(min=-0.3, max=2.1), dict(max=7.0), dict(min=-1e6), dict(min=0.1, max=0.1), dict(min=-3.5, max=1e30)]


@pytest.mark.parametrize("dt", FLOATS)
def test_exact_unary_float_ops_bit_exact(dt):
    rng = np.random.default_rng(5)
    shape = (3, 41)
    b = Builder("un")
    x = b.input("x", f"{dt}[3, 41]")
    outs = [getattr(b, k)(x, name=k) for k in ("neg", "relu", "relu2", "round")]
    outs += [b.clamp(x, name=f"clamp{i}", **c) for i, c in enumerate(CLAMPS)]
    g = b.build(*outs)
    xv = values(rng, dt, shape)
    if dt in ("f32", "f16", "bf16"):
        xv.reshape(-1)[12:24] = np.array([-0.4, -0.5, 0.49999997, 1e5, -1e5, 2.0 ** 23 + 1, -(2.0 ** 23) + 0.5,
                                          1e30, 3e38, -0.0, 1e-30, 5.5], np.float32).astype(xv.dtype)
    ref = ladder.run(g, {"x": xv})
    got = run_everywhere(g, {"x": xv})
    for k in ref:
        assert_same(ref[k], got[k], f"{dt} {k}")
    assert not np.signbit(got["relu"].astype(np.float32)[xv.astype(np.float32) == 0]).any()  # relu(-0) = +0


@pytest.mark.parametrize("dt", ["i32", "i16", "i8"])
def test_integer_unary_ops_bit_exact(dt):
    rng = np.random.default_rng(6)
    b = Builder("iun")
    x = b.input("x", f"{dt}[5, 19]")
    outs = [b.neg(x, name="neg"), b.relu(x, name="relu")]
    outs += [b.clamp(x, name=f"clamp{i}", **c) for i, c in enumerate(CLAMPS + [dict(min=-20.5, max=20.5)])]
    g = b.build(*outs)
    xv = values(rng, dt, (5, 19))
    lo, hi = DTYPES[dt].value_range
    xv.reshape(-1)[:4] = [lo, hi, 0, -1]
    ref = ladder.run(g, {"x": xv})
    got = run_everywhere(g, {"x": xv})
    for k in ref:
        assert_same(ref[k], got[k], f"{dt} {k}")
    assert got["neg"].reshape(-1)[0] == lo  # -min wraps


def ulp(a, dt):
    a = np.abs(a.astype(np.float64))
    if dt in ("fp8e4m3", "fp4"):
        vals = np.array(sorted({abs(v) for v in DTYPES[dt].values}))
        idx = np.clip(np.searchsorted(vals, a), 1, len(vals) - 1)
        return vals[idx] - vals[idx - 1]
    return np.spacing(a.astype(np_dtype(dt))).astype(np.float64)


@pytest.mark.parametrize("dt", FLOATS)
def test_transcendental_ops_within_one_ulp(dt):
    rng = np.random.default_rng(7)
    n = 6000 if dt in ("f32", "bf16") else 3000
    x = np.concatenate([SPECIAL, rng.standard_normal(n) * 3, rng.uniform(-110, 110, n // 2),
                        rng.standard_normal(n // 2) * 1e-3]).astype(np.float32).astype(np_dtype(dt))
    b = Builder("tr")
    xi = b.input("x", f"{dt}[{len(x)}]")
    outs = [getattr(b, k)(xi, name=k) for k in TRANSCENDENTAL] + [b.gelu(xi, approximate="tanh", name="gelu_tanh")]
    g = b.build(*outs)
    ref = ladder.run(g, {"x": x})
    got = run_everywhere(g, {"x": x})
    xf = x.astype(np.float64)
    for k in ref:
        r, o = ref[k].astype(np.float64), got[k].astype(np.float64)
        assert got[k].dtype == ref[k].dtype
        assert np.array_equal(np.isnan(r), np.isnan(o)), k
        same = (r == o) | np.isnan(r)
        assert np.array_equal(np.signbit(r[same & (r == 0)]), np.signbit(o[same & (r == 0)])), k
        tol = ulp(ref[k], dt) + (2.0 ** -50 * np.abs(xf) if k == "gelu_tanh" else 0.0)
        bad = ~same & ~(np.abs(r - o) <= tol)
        assert not bad.any(), (k, x[bad][:3], r[bad][:3], o[bad][:3])
        assert same.mean() > (0.99 if k == "gelu_tanh" else 0.999), (k, same.mean())


# -- memory safety and splits ------------------------------------------------------------------------------

def guard_graph():
    """Zero-size, scalar, 1-element, odd and broadcast shapes; every op's result is a graph output."""
    b = Builder("guard")
    shapes = [(0,), (1,), (17,), (3, 5, 1), (2, 0, 3), (), (4, 9)]
    rng = np.random.default_rng(9)
    xs = [b.input(f"x{i}", f"f16{list(s)}") for i, s in enumerate(shapes)]
    ys = [b.input(f"y{i}", f"i8{list(s[-1:] or [1])}") for i, s in enumerate(shapes)]
    z, w = b.input("z", "bf16[5, 1, 7]"), b.input("w", "bf16[3, 1]")
    ins = {f"x{i}": values(rng, "f16", s) for i, s in enumerate(shapes)}
    ins.update({f"y{i}": values(rng, "i8", s[-1:] or (1,)) for i, s in enumerate(shapes)})
    ins.update(z=values(rng, "bf16", (5, 1, 7)), w=values(rng, "bf16", (3, 1)))
    outs = [b.mul(z, w, name="zw")]
    for i, (x, y) in enumerate(zip(xs, ys)):
        q = b.cast(x, dtype="i8", name=f"q{i}")
        outs += [b.cast(x, dtype="i4", name=f"c{i}"), b.silu(x, name=f"s{i}"), b.relu(x, name=f"r{i}"),
                 b.cast(x, dtype="f32", name=f"w{i}"), q, b.add(q, y, name=f"a{i}")]
    return b.build(*outs), ins


@pytest.mark.parametrize("target", TARGETS)
def test_kernels_stay_in_bounds_for_any_split(target):
    """Call every kernel directly on buffers with canary bytes around each result, over several random
    splits of its work; the results equal the driver's and no canary byte changes."""
    g, ins = guard_graph()
    cg = compile_graph(g, target=target, pipeline="")
    full = cg.run(ins, threads=1)
    ref = ladder.run(g, ins)
    for k in ref:
        assert_same(ref[k], full[k], k)
    env = {**ins, **full}
    rng = np.random.default_rng(10)
    pad = 64
    assert len(cg.steps) == len(g.outputs) == 43
    for s in cg.steps:
        args = [np.ascontiguousarray(env[o]) for o in s.op.operands]
        (res,) = s.op.results
        assert s.spec.work == res.type.size
        nbytes = res.type.size * np.dtype(res.type.storage_np_dtype).itemsize
        want = bits_of(full[res.name]).reshape(-1)
        for trial in range(3):
            canary = np.uint8(0xA5 if trial % 2 else 0x5A)
            buf = np.full(nbytes + 2 * pad, canary, np.uint8)
            cuts = sorted(set([0, s.spec.work] + [int(c) for c in rng.integers(0, s.spec.work + 1, 3)]))
            ranges = list(zip(cuts[:-1], cuts[1:]))
            rng.shuffle(ranges)
            for lo, hi in ranges + [(s.spec.work, s.spec.work), (0, 0)]:
                s.fn(*[a.ctypes.data for a in args], buf.ctypes.data + pad, lo, hi)
            assert np.all(buf[:pad] == canary) and np.all(buf[pad + nbytes:] == canary), s.op.describe()
            assert np.array_equal(buf[pad:pad + nbytes], want), s.op.describe()
