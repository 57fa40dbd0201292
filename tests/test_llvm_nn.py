"""LLVM CPU backend: softmax, norms, reduce, rope, attention, quantize and dequant against the interpreter.

Every graph is compiled for ``cpu`` and ``cpu:generic`` and run with 1 and 2 threads (results must be
bit-identical across thread counts). Tolerances, and why:

* rmsnorm / layernorm (f32): exact. The kernel sums in numpy's pairwise order with the same float32
  operations (x*x, (x-mu)**2, sum / n, + eps, sqrt, divide, * w, + b).
* softmax: rtol 1e-5, atol 1e-7. libm expf vs numpy's exp (each within an ulp) and the row sum.
* reduce sum / mean (f32): rtol 1e-5, atol 1e-5. Strided or multi-axis sums are accumulated in float64 here,
  numpy sums in float32 (error ~ n * eps * sum|x|, n <= 100 here); max is exact.
* f16 / bf16 results: one rounding of the type (rtol 2^-10 / 2^-7) on top of the f32 tolerance.
* rope: rtol 1e-6, atol 1e-12. Both compute in float64 and round once; only libm's cos/sin last bit differs.
* attention: rtol 1e-5, atol 1e-6. Dot products are summed in another order (vectorised), expf, and
  sum(e*v)/sum(e) instead of sum((e/sum(e))*v).
* quantize codes, scales and zeros: exact. dequant: exact (v*s, (v-z)*s, v*s-z are single f32 operations).
* integer reduce: exact, sums wrap like the reference.
"""

from __future__ import annotations


import ml_dtypes
import numpy as np
import pytest

import ladder
from ladder import Builder
from ladder.backends.llvm.compiler import compile_graph
from ladder.errors import RuntimeFailure
from graph_inputs import declare_inputs

TARGETS = ["cpu", "cpu:generic"]
# the reference warns on the NaN / all-NaN slices the quantize test feeds it on purpose
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _f64(a):
    return np.asarray(a).astype(np.float64)


def run_both(g, inputs, target):
    """Reference outputs, and the compiled graph's outputs (checked identical at 1 and 2 threads)."""
    ref = ladder.run(g, inputs)
    cg = compile_graph(g, None, target=target, pipeline="")
    one = cg.run(inputs, threads=1)
    two = cg.run(inputs, threads=2)
    for k in one:
        assert one[k].dtype == ref[k].dtype and one[k].shape == ref[k].shape, k
        assert one[k].tobytes() == two[k].tobytes(), f"{k} differs between 1 and 2 threads"
    return ref, one, cg


def close(got, ref, rtol, atol, name=""):
    np.testing.assert_allclose(_f64(got), _f64(ref), rtol=rtol, atol=atol, err_msg=name)


def exact(got, ref, name=""):
    assert got.dtype == ref.dtype, name
    assert np.array_equal(_f64(got), _f64(ref), equal_nan=True), name


# -- softmax, norms, reduce ------------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_softmax_norms_reduce_f32(target):
    r = np.random.default_rng(1)
    b = Builder()
    x, long, w, bias = declare_inputs(b, x="f32[2, 3, 37]", long="f32[3, 1000]", w="f32[37]", bias="f32[37]")
    outs = {
        "sm0": b.softmax(x, axis=0), "sm1": b.softmax(x, axis=1), "sm2": b.softmax(x),
        "sml": b.softmax(long),
        "rms": b.rmsnorm(x), "rmsw": b.rmsnorm(x, w, eps=1e-3), "rmsl": b.rmsnorm(long),
        "ln": b.layernorm(x), "lnw": b.layernorm(x, w), "lnwb": b.layernorm(x, w, bias), "lnl": b.layernorm(long),
        "sum_all": b.reduce(x, kind="sum"), "sum02": b.reduce(x, kind="sum", axes=[0, 2], keepdims=True),
        "sum_last": b.reduce(long, kind="sum", axes=[-1]), "sum0": b.reduce(long, kind="sum", axes=[0]),
        "mean1": b.reduce(x, kind="mean", axes=[1]), "mean_last": b.reduce(long, kind="mean", axes=[1]),
        "max1": b.reduce(x, kind="max", axes=[1], keepdims=True), "max_all": b.reduce(long, kind="max"),
    }
    names = {v.name: k for k, v in outs.items()}
    g = b.build(*outs.values())
    xv = r.standard_normal((2, 3, 37)).astype(np.float32) * 3
    xv[0, 0, 0] = 80.0  # softmax must subtract the max: exp(80) alone overflows
    lv = r.standard_normal((3, 1000)).astype(np.float32)
    inputs = {"x": xv, "long": lv, "w": r.standard_normal(37).astype(np.float32),
              "bias": r.standard_normal(37).astype(np.float32)}
    ref, got, _ = run_both(g, inputs, target)
    for v, k in names.items():
        if k.startswith("sm"):
            close(got[v], ref[v], 1e-5, 1e-7, k)
            assert np.allclose(got[v].sum(axis={"sm0": 0, "sm1": 1}.get(k, -1)), 1, atol=1e-5)
        elif k.startswith(("rms", "ln", "max")):
            exact(got[v], ref[v], k)
        else:
            close(got[v], ref[v], 1e-5, 1e-5, k)
    assert np.all(np.isfinite(got[outs["sm2"].name]))


@pytest.mark.parametrize("target", TARGETS)
def test_half_types_and_special_values(target):
    r = np.random.default_rng(2)
    b = Builder()
    h, bf, wbf, s = declare_inputs(b, h="f16[4, 19]", bf="bf16[4, 19]", wbf="bf16[19]", s="f32[3, 6]")
    outs = {"smh": b.softmax(h), "rmsbf": b.rmsnorm(bf, wbf), "lnh": b.layernorm(h),
            "sumbf": b.reduce(bf, kind="sum", axes=[0]), "maxh": b.reduce(h, kind="max", axes=[1]),
            "meanh": b.reduce(h, kind="mean", axes=[0, 1]),
            "sms": b.softmax(s), "maxs": b.reduce(s, kind="max", axes=[1])}
    g = b.build(*outs.values())
    sv = r.standard_normal((3, 6)).astype(np.float32)
    sv[0, 2] = np.nan  # a NaN row: softmax and max give NaN, like numpy
    sv[1, :] = -np.inf  # an all -inf row: the max is not finite, so nothing is subtracted -> 0/0 = NaN
    sv[2, 3] = np.inf
    inputs = {"h": r.standard_normal((4, 19)).astype(np.float16),
              "bf": r.standard_normal((4, 19)).astype(ml_dtypes.bfloat16),
              "wbf": r.standard_normal(19).astype(ml_dtypes.bfloat16), "s": sv}
    ref, got, _ = run_both(g, inputs, target)
    tol = {"smh": 2**-10, "lnh": 2**-10, "maxh": 0, "meanh": 2**-10, "rmsbf": 2**-7, "sumbf": 2**-7}
    for k, t in tol.items():
        close(got[outs[k].name], ref[outs[k].name], t, 1e-3 if t else 0, k)
    exact(got[outs["sms"].name], ref[outs["sms"].name], "softmax specials")
    exact(got[outs["maxs"].name], ref[outs["maxs"].name], "max specials")
    assert np.isnan(got[outs["maxs"].name][0])


@pytest.mark.parametrize("target", TARGETS)
def test_integer_reduce_wraps(target):
    r = np.random.default_rng(3)
    b = Builder()
    a8, u8, a16, a32 = declare_inputs(b, a8="i8[5, 40]", u8="u8[5, 40]", a16="i16[3, 4, 5]", a32="i32[7, 3]")
    outs = [b.reduce(a8, kind="sum", axes=[1]), b.reduce(a8, kind="max", axes=[0]),
            b.reduce(u8, kind="sum"), b.reduce(u8, kind="max", axes=[1], keepdims=True),
            b.reduce(a16, kind="max", axes=[0, 2]), b.reduce(a16, kind="sum", axes=[1]),
            b.reduce(a32, kind="sum", axes=[0]), b.reduce(a32, kind="max")]
    g = b.build(*outs)
    inputs = {"a8": r.integers(-128, 128, (5, 40)).astype(np.int8),
              "u8": r.integers(0, 256, (5, 40)).astype(np.uint8),
              "a16": r.integers(-2**15, 2**15, (3, 4, 5)).astype(np.int16),
              "a32": r.integers(2**30, 2**31 - 1, (7, 3)).astype(np.int32)}  # the i32 sums overflow
    ref, got, _ = run_both(g, inputs, target)
    for o in outs:
        exact(got[o.name], ref[o.name], o.name)
    assert int(got[outs[6].name][0]) != int(inputs["a32"][:, 0].astype(np.int64).sum())  # it did wrap


# -- rope -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_rope_styles_and_position_types(target):
    r = np.random.default_rng(4)
    b = Builder()
    x = b.input("x", "f32[2, 3, 5, 10]")
    xh = b.input("xh", "f16[5, 8]")
    p32, p16, p8, pu8 = (b.input(n, f"{t}[5]") for n, t in (("p32", "i32"), ("p16", "i16"), ("p8", "i8"),
                                                           ("pu8", "u8")))
    outs = {"h32": b.rope(x, p32), "i16": b.rope(x, p16, style="interleaved", theta=500.0),
            "h8": b.rope(x, p8), "iu8": b.rope(x, pu8, style="interleaved"), "hh": b.rope(xh, pu8)}
    g = b.build(*outs.values())
    inputs = {"x": r.standard_normal((2, 3, 5, 10)).astype(np.float32),
              "xh": r.standard_normal((5, 8)).astype(np.float16),
              "p32": np.array([0, 1, 7, 100000, 4096], np.int32), "p16": np.array([3, -2, 30000, 0, 9], np.int16),
              "p8": np.array([-128, 127, 0, 1, -1], np.int8), "pu8": np.array([255, 0, 1, 2, 200], np.uint8)}
    ref, got, _ = run_both(g, inputs, target)
    for k, v in outs.items():
        if k == "hh":
            close(got[v.name], ref[v.name], 2**-10, 1e-3, k)
        else:
            close(got[v.name], ref[v.name], 1e-6, 1e-12, k)
    # position 0 is the identity
    assert np.array_equal(got[outs["h32"].name][..., 0, :], inputs["x"][..., 0, :])


# -- attention ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
def test_attention_gqa_causal_kv_len(target):
    r = np.random.default_rng(5)
    b = Builder()
    q, k, v = declare_inputs(b, q="f32[2, 4, 3, 16]", k="f32[2, 2, 7, 16]", v="f32[2, 2, 7, 9]")
    kb, vb = declare_inputs(b, kb="f32[2, 7, 16]", vb="f32[2, 7, 9]")  # batch broadcast: k and v without the batch dim
    n32, n8 = declare_inputs(b, n32="i32[1]", n8="u8[]")
    qh, kh = declare_inputs(b, qh="bf16[1, 2, 6]", kh="bf16[1, 4, 6]")
    outs = {"causal": b.attention(q, k, v), "full": b.attention(q, k, v, causal=False, scale=0.3),
            "len": b.attention(q, k, v, n32), "len_full": b.attention(q, k, v, n8, causal=False),
            "bcast": b.attention(q, kb, vb, n32), "bf": b.attention(qh, kh, kh)}
    g = b.build(*outs.values())
    inputs = {"q": r.standard_normal((2, 4, 3, 16)).astype(np.float32),
              "k": r.standard_normal((2, 2, 7, 16)).astype(np.float32),
              "v": r.standard_normal((2, 2, 7, 9)).astype(np.float32),
              "kb": r.standard_normal((2, 7, 16)).astype(np.float32),
              "vb": r.standard_normal((2, 7, 9)).astype(np.float32),
              "qh": r.standard_normal((1, 2, 6)).astype(ml_dtypes.bfloat16),
              "kh": r.standard_normal((1, 4, 6)).astype(ml_dtypes.bfloat16)}
    for n in (3, 5, 7):
        inputs.update(n32=np.array([n], np.int32), n8=np.array(n, np.uint8))
        ref, got, cg = run_both(g, inputs, target)
        for key, val in outs.items():
            close(got[val.name], ref[val.name], 2**-7 if key == "bf" else 1e-5, 1e-6, f"{key} kv_len={n}")
    # the first query with kv_len 3 and causal masking sees only key 0: its output is v[0] exactly weighted 1
    inputs.update(n32=np.array([3], np.int32))
    got = cg.run(inputs)
    assert np.allclose(got[outs["len"].name][:, :, 0, :], np.repeat(inputs["v"][:, :, 0, :], 2, axis=1), atol=1e-6)
    for bad in (2, 8, -1):
        inputs.update(n32=np.array([bad], np.int32))
        with pytest.raises(RuntimeFailure, match="kv_len"):
            cg.run(inputs)
        with pytest.raises(ladder.LadderError):
            ladder.run(g, inputs)


# -- quantize ---------------------------------------------------------------------------------------------

def _ties(r, shape, scale):
    """Data rich in exact .5 ties for rint (half to even) plus random values."""
    x = (r.integers(-40, 40, shape) * 0.5).astype(np.float32) * np.float32(scale)
    mask = r.random(shape) < 0.5
    return np.where(mask, x, r.standard_normal(shape).astype(np.float32) * 3).astype(np.float32)


QUANT_CASES = [  # (scheme, dtype, axis, group, zero_mode)
    ("absmax", "i8", -1, 0, "none"), ("absmax", "i8", -1, -1, "none"), ("absmax", "i4", 0, 0, "none"),
    ("absmax", "i8", -1, 32, "none"), ("absmax", "i2", 0, 3, "none"),
    ("absmean", "ternary", -1, 0, "none"), ("absmean", "ternary", -1, -1, "none"),
    ("absmean", "ternary", 0, 0, "none"), ("absmean", "ternary", -1, 32, "none"),
    ("absmean", "ternary", 0, 16, "none"), ("absmean", "i8", 1, 20, "none"), ("absmean", "i4", 1, 0, "none"),
    ("rtn", "i4", -1, 32, "none"), ("rtn", "i8", 0, 0, "none"), ("rtn", "i4", -1, -1, "none"),
    ("rtn", "u4", -1, 32, "original"), ("rtn", "u8", 0, 0, "original"), ("rtn", "u2", -1, 0, "original"),
    ("rtn", "u4", -1, 32, "rescale"), ("rtn", "u8", 1, 7, "rescale"), ("rtn", "u1", -1, -1, "rescale"),
]


@pytest.mark.parametrize("target", TARGETS)
def test_quantize_bit_exact(target):
    r = np.random.default_rng(6)
    b = Builder()
    x = b.input("x", "f32[6, 40, 3]")   # axis 1 / 0: strided granules; group 32 of 40: a partial group
    x2 = b.input("x2", "f32[5, 200]")   # rows longer than numpy's pairwise block (128)
    xb = b.input("xb", "bf16[4, 33]")
    outs = []
    for scheme, dt, axis, group, zm in QUANT_CASES:
        src = x if axis in (0, 1) or group != 32 else x2
        if axis == 1 and group == 0:
            src = x
        res = b.quantize(src, scheme=scheme, dtype=dt, axis=axis, group=group, zero_mode=zm)
        outs.append(((scheme, dt, axis, group, zm), res))
    for scheme, dt in (("absmax", "i8"), ("absmean", "ternary"), ("rtn", "i4")):
        outs.append(((scheme, dt, "bf16"), b.quantize(xb, scheme=scheme, dtype=dt, group=8)))
    outs.append((("long",), b.quantize(x2, scheme="absmean", dtype="ternary", axis=-1, group=-1)))
    g = b.build(*[v for _, res in outs for v in res])
    xv = _ties(r, (6, 40, 3), 1.0)
    xv[2, 5, 1] = np.nan  # NaN: code 0, left out of the max / mean
    xv[3, :, 2] = np.nan  # an all-NaN slice along axis 1
    x2v = _ties(r, (5, 200), 0.01)
    x2v[4] = 0.0  # an all-zero row: rtn scale 0 -> codes 0
    inputs = {"x": xv, "x2": x2v, "xb": r.standard_normal((4, 33)).astype(ml_dtypes.bfloat16)}
    ref, got, _ = run_both(g, inputs, target)
    for case, res in outs:
        for v in res:
            exact(got[v.name], ref[v.name], f"{case} {v.name}")
    codes = got[outs[0][1][0].name]
    assert np.unique(codes).size > 100  # a real spread of int8 codes, not all zero


# -- dequant ----------------------------------------------------------------------------------------------

def _codes(r, dt, shape):
    t = ladder.DTYPES[dt]
    if t.kind == "table":
        return r.integers(0, 16, shape).astype(np.uint8)
    if t.kind == "float":
        vals = np.array([v for v in t.table if np.isfinite(v)], np.float32)
        return r.choice(vals, shape).astype(t.np_dtype)
    lo, hi = t.value_range
    vals = np.array(t.values if t.values else np.arange(lo, hi + 1), np.float32)
    return r.choice(vals, shape).astype(t.np_dtype)


@pytest.mark.parametrize("target", TARGETS)
def test_dequant_all_code_types_and_granularities(target):
    r = np.random.default_rng(7)
    cases = [  # (codes type, shape, scale type, scale shape, axis, group, zero_mode, out dtype)
        ("i8", (4, 37), "f32", (4, 1), -1, 0, "none", "f32"),
        ("i4", (4, 37), "f32", (4, 2), -1, 32, "none", "f16"),
        ("i2", (4, 37), "f16", (1,), -1, 0, "none", "f32"),
        ("ternary", (6, 10), "bf16", (6, 1), -1, 0, "none", "bf16"),
        ("i1", (6, 10), "f32", (1, 10), 0, 0, "none", "f32"),
        ("u1", (3, 5), "f32", (1, 1), -1, -1, "none", "f32"),
        ("u8", (10, 6), "f32", (4, 6), 0, 3, "original", "f32"),
        ("u4", (2, 5, 7), "f32", (2, 5, 1), -1, 0, "rescale", "bf16"),
        ("u2", (2, 5, 7), "f16", (1, 2, 7), 1, 3, "original", "f32"),
        ("nf4", (4, 64), "f32", (4, 1), -1, 64, "none", "f32"),
        ("fp4", (4, 32), "f32", (4, 1), -1, 32, "none", "f16"),
        ("fp8e4m3", (3, 16), "bf16", (3, 16), -1, 0, "none", "f32"),
        ("i8", (0, 5), "f32", (0, 1), -1, 0, "none", "f32"),
    ]
    b = Builder()
    inputs, outs = {}, []
    ins = []
    for n, (ct, shape, st, sshape, *_rest) in enumerate(cases):
        ins.append((b.input(f"c{n}", f"{ct}[{', '.join(map(str, shape))}]"),
                    b.input(f"s{n}", f"{st}[{', '.join(map(str, sshape))}]"),
                    b.input(f"z{n}", f"{st}[{', '.join(map(str, sshape))}]")))
    for n, (ct, shape, st, sshape, axis, group, zm, odt) in enumerate(cases):
        c, s, z = ins[n]
        args = (c, s, z) if zm != "none" else (c, s)
        outs.append(b.dequant(*args, axis=axis, group=group, zero_mode=zm, dtype=odt))
        inputs[f"c{n}"] = _codes(r, ct, shape)
        sdt = ladder.DTYPES[st].np_dtype
        inputs[f"s{n}"] = (r.random(sshape) + 0.1).astype(sdt)
        inputs[f"z{n}"] = r.integers(0, 5, sshape).astype(sdt)
    g = b.build(*outs)
    ref, got, _ = run_both(g, inputs, target)
    for case, o in zip(cases, outs):
        exact(got[o.name], ref[o.name], str(case))
    assert np.any(got[outs[1].name].astype(np.float32) < 0)  # i4 negatives decoded from their low 4 bits


# -- memory safety --------------------------------------------------------------------------------------

def _run_guarded(cg, inputs, pad=64):
    """Run every kernel on buffers surrounded by canaries (operands too) in two uneven pieces; assert no
    byte outside a buffer changes. Returns the outputs."""
    from ladder.interpreter import bind_inputs

    env = dict(getattr(cg, "fixed", {}))
    env.update(bind_inputs(cg.graph, inputs))
    keep = []

    def guarded(arr):
        raw = np.frombuffer(np.random.default_rng(0).bytes(arr.nbytes + 2 * pad), np.uint8).copy()
        raw[pad:pad + arr.nbytes] = np.frombuffer(np.ascontiguousarray(arr).tobytes(), np.uint8)
        keep.append((raw, raw.copy(), arr.nbytes))
        return raw

    for s in cg.steps:
        bufs = [guarded(env[o]) for o in s.op.operands]
        outs = [np.empty(r.type.storage_shape, r.type.storage_np_dtype) for r in s.op.results]
        obufs = [guarded(o) for o in outs]
        status = np.zeros(1, np.int64)
        ptrs = [raw.ctypes.data + pad for raw in bufs + obufs]
        if s.spec.has_status:
            ptrs.append(status.ctypes.data)
        w = s.spec.work
        cut = (w * 2) // 5
        for lo, hi in ((0, cut), (cut, w)):
            if hi > lo:
                s.fn(*ptrs, lo, hi)
        for raw, orig, n in keep:
            assert np.array_equal(raw[:pad], orig[:pad]) and np.array_equal(raw[pad + n:], orig[pad + n:]), \
                f"{s.op.kind} wrote outside a buffer"
        for ob in bufs:
            assert np.array_equal(ob, keep[[k[0] is ob for k in keep].index(True)][1]), \
                f"{s.op.kind} wrote into an operand"
        assert status[0] == 0
        for r, o, raw in zip(s.op.results, outs, obufs):
            env[r.name] = np.frombuffer(raw[pad:pad + o.nbytes].tobytes(), o.dtype).reshape(o.shape)
    return {n: env[n] for n in cg.graph.outputs}


def test_kernels_stay_inside_their_buffers_odd_and_empty_shapes():
    r = np.random.default_rng(8)
    b = Builder()
    x, e, e2, one = declare_inputs(b, x="f32[3, 1, 7]", e="f32[0, 5]", e2="f32[4, 0]", one="f32[1]")
    pos, q, c, s = declare_inputs(b, pos="i8[1]", q="f32[3, 1, 2]", c="i4[3, 7]", s="f32[3, 1]")
    n, kv = declare_inputs(b, n="i32[1]", kv="f32[1, 2, 2]")
    outs = [b.softmax(x, axis=0), b.softmax(x, axis=1), b.rmsnorm(x), b.layernorm(e), b.softmax(e),
            b.reduce(x, kind="mean", axes=[0, 2]), b.reduce(e, kind="sum", axes=[0]), b.reduce(e2, kind="sum", axes=[1]),
            b.reduce(one, kind="max"), b.softmax(one), b.rope(q, pos),
            *b.quantize(x, scheme="absmean", dtype="ternary", axis=2, group=3),
            *b.quantize(x, scheme="rtn", dtype="u4", axis=0, group=2, zero_mode="original"),
            *b.quantize(e, scheme="absmax", dtype="i8"),
            b.dequant(c, s, dtype="bf16"), b.attention(q, kv, kv, n)]
    g = b.build(*outs)
    inputs = {"x": r.standard_normal((3, 1, 7)).astype(np.float32), "e": np.zeros((0, 5), np.float32),
              "e2": np.zeros((4, 0), np.float32), "one": np.array([2.5], np.float32), "pos": np.array([3], np.int8),
              "q": r.standard_normal((3, 1, 2)).astype(np.float32), "c": _codes(r, "i4", (3, 7)),
              "s": np.ones((3, 1), np.float32), "n": np.array([2], np.int32),
              "kv": r.standard_normal((1, 2, 2)).astype(np.float32)}
    ref = ladder.run(g, inputs)
    for target in TARGETS:
        cg = compile_graph(g, None, target=target, pipeline="")
        got = _run_guarded(cg, inputs)
        for o in outs:
            close(got[o.name], ref[o.name], 1e-5, 1e-6, o.name)



def test_attention_long_rows_without_the_score_scratch(monkeypatch):
    """A cache longer than SCORES_MAX recomputes each score (libm's expf) instead of keeping it (the polynomial
    exp, a vector loop): both agree with the reference."""
    from ladder.backends.llvm.lowerings import nn

    r = np.random.default_rng(11)
    b = Builder()
    q, k, v = b.input("q", "f32[2, 4, 8]"), b.input("k", "f32[1, 40, 8]"), b.input("v", "f32[1, 40, 5]")
    n = b.input("n", "i32[1]")
    y = b.attention(q, k, v, n)
    g = b.build(y)
    inputs = {"q": r.standard_normal((2, 4, 8)).astype(np.float32) * 4,
              "k": r.standard_normal((1, 40, 8)).astype(np.float32),
              "v": r.standard_normal((1, 40, 5)).astype(np.float32), "n": np.array([33], np.int32)}
    ref = ladder.run(g, inputs)[y.name]
    kept = compile_graph(g, {}, target="cpu", pipeline="", cache_dir=None)
    monkeypatch.setattr(nn, "SCORES_MAX", 16)
    recomputed = compile_graph(g, {}, target="cpu", pipeline="", cache_dir=None)
    assert '@"expf"' not in kept.ir_text and '@"expf"' in recomputed.ir_text
    close(kept.run(inputs)[y.name], ref, 1e-5, 1e-6, "kept scores")
    close(recomputed.run(inputs)[y.name], ref, 1e-5, 1e-6, "recomputed scores")


def test_the_polynomial_exp_is_within_two_ulp_of_numpy():
    """nn.exp_f32 (attention's vectorisable exp) against numpy's f32 exp on [-87.3, 88.7] (2 ulp), and its
    edges: 0 below -87.3 (where exp is at most 1.2e-38), +inf above 88.7, NaN kept."""
    import ctypes

    import llvmlite.binding as llvm
    from llvmlite import ir as llir

    from ladder.backends.llvm.codegen import F32 as F32T
    from ladder.backends.llvm.codegen import I64 as I64T
    from ladder.backends.llvm.lowerings import nn

    class Ctx:
        def __init__(self, module):
            self.module = module

        def declare(self, name, ret, args):
            found = self.module.globals.get(name)
            return found or llir.Function(self.module, llir.FunctionType(ret, list(args)), name)

    mod = llir.Module("exp_test")
    fn = llir.Function(mod, llir.FunctionType(llir.VoidType(), [llir.PointerType(), llir.PointerType(), I64T]), "f")
    px, py, count = fn.args
    bld = llir.IRBuilder(fn.append_basic_block("entry"))
    loop, done = fn.append_basic_block("loop"), fn.append_basic_block("done")
    bld.branch(loop)
    bld.position_at_end(loop)
    i = bld.phi(I64T)
    i.add_incoming(llir.Constant(I64T, 0), fn.entry_basic_block)
    xv = bld.load(bld.gep(px, [i], source_etype=F32T), typ=F32T)
    bld.store(nn.exp_f32(Ctx(mod), bld, xv), bld.gep(py, [i], source_etype=F32T))
    nxt = bld.add(i, llir.Constant(I64T, 1))
    i.add_incoming(nxt, loop)
    bld.cbranch(bld.icmp_signed("<", nxt, count), loop, done)
    bld.position_at_end(done)
    bld.ret_void()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    tm = llvm.Target.from_default_triple().create_target_machine()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(str(mod)), tm)
    engine.finalize_object()
    f = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(engine.get_function_address("f"))

    inner = np.linspace(-87.3, 88.7, 400_001, dtype=np.float32)
    edges = np.array([-np.inf, -1000, -87.31, 88.71, 1000, np.inf, np.nan], np.float32)
    x = np.concatenate([inner, edges])
    y = np.empty_like(x)
    f(x.ctypes.data, y.ctypes.data, x.size)
    want = np.exp(inner.astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(y[:inner.size] - want) / ulp) <= 2.0
    assert list(y[inner.size:inner.size + 3]) == [0.0, 0.0, 0.0]
    assert list(y[inner.size + 3:inner.size + 6]) == [np.inf] * 3 and np.isnan(y[-1])
