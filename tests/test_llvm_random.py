"""Hypothesis draws the shapes: every op family compiled for the native and the generic CPU against the reference.

The other test_llvm_* files pin hand-picked odd shapes; here hypothesis picks M, N, K, ranks, axes, head counts,
low-bit types and packings, and shrinks a failure to its smallest shape. Each example compiles one small graph
per target, so each test draws 20 examples by default (``LADDER_EXAMPLES=200`` for a longer hunt; 80 each ran
clean when this was written).

Tolerances are those of the hand-written tests (see their docstrings): integer paths bit-exact, float matmuls
within 1e-4 * sum |x||w|, norms exact, softmax and attention within 1e-5 relative.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ladder.backends.llvm.compiler import compile_graph
from test_llvm_matmul import FLOAT_W, INT_W, G, _float_case, check, rand_w

import ladder
from ladder import Builder
from ladder.packing import PACKINGS
from ladder.types import DTYPES

TARGETS = ["cpu", "cpu:generic"]
SETTINGS = settings(max_examples=int(os.environ.get("LADDER_EXAMPLES", "20")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

dims = st.integers(1, 9)
cols = st.integers(1, 40)
depth = st.one_of(st.integers(1, 300), st.integers(300, 1500))  # odd K: not a multiple of any block or vector


@SETTINGS
@given(M=dims, N=cols, K=depth, dname=st.sampled_from(INT_W), seed=st.integers(0, 2**32 - 1))
def test_bitlinear_default_pipeline(M, N, K, dname, seed):
    """quantize + integer matmul + rescale, as BitNet writes it: the default pipeline picks the target's packing
    and fuses into qmatmul_i8 (the fast madd kernels where the CPU has them). Bit-exact with the reference."""
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input("x", f"f32[{M}, {K}]")
    xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
    w = b.param("w", f"{dname}[{N}, {K}]")
    s = b.param("s", f"f32[{N}]")
    y = b.mul(b.mul(b.cast(b.matmul(xq, w, transpose_b=True), dtype="f32"), xs), s)
    g = b.build(b.relu2(y))
    weights = {"w": rand_w(rng, DTYPES[dname], (N, K)), "s": (rng.random(N) + 0.5).astype(np.float32)}
    feeds = {"x": (rng.standard_normal((M, K)) * rng.choice([1e-3, 1.0, 50.0])).astype(np.float32)}
    want = ladder.run(g, feeds, weights=weights)
    for target in TARGETS:
        m = ladder.compile(g, target=target, weights=weights, cache=False)
        assert "qmatmul_i8" in str(m.ir_after("fuse")), target
        for threads in (1, 2):
            got = m(feeds, threads=threads)
            for k in want:
                assert np.array_equal(got[k], want[k]), f"{target} threads={threads} {k}"


@SETTINGS
@given(M=dims, N=cols, K=depth, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_qmatmul_i8_any_packing(M, N, K, seed, data):
    dname = data.draw(st.sampled_from(INT_W), "dtype")
    layout = data.draw(st.sampled_from([p.name for p in PACKINGS.values() if p.accepts(DTYPES[dname])]), "layout")
    rng = np.random.default_rng(seed)
    gb = G()
    xn = gb.input(rng.integers(-128, 128, (M, K)).astype(np.int8), "i8")
    s1 = gb.input(rng.random((M, 1)).astype(np.float32) + 0.1, "f32")
    w = gb.param(rand_w(rng, DTYPES[dname], (N, K)), dname)
    s2 = gb.param(rng.random(N).astype(np.float32) + 0.5, "f32")
    gb.lines.append(f"%p = pack %{w} {{layout = \"{layout}\"}} : {dname}<{layout}>[{N}, {K}]")
    gb.op(f"qmatmul_i8 %{xn}, %p, %{s1}, %{s2} {{transpose_b = true}}", f"f32[{M}, {N}]")
    check(gb)


@SETTINGS
@given(M=dims, N=cols, K=depth, seed=st.integers(0, 2**32 - 1), data=st.data())
def test_qmatmul_float_any_packing_and_granularity(M, N, K, seed, data):
    dname = data.draw(st.sampled_from(FLOAT_W), "dtype")
    layouts = [None] + [p.name for p in PACKINGS.values() if p.accepts(DTYPES[dname])]
    layout = data.draw(st.sampled_from(layouts), "layout")
    mode = data.draw(st.sampled_from(["row", "tensor", "group32", "original", "rescale"]
                                     if dname.startswith("u") else ["row", "tensor", "group32"]), "mode")
    rng = np.random.default_rng(seed)
    gb = G()
    x = rng.standard_normal((M, K)).astype(np.float32)
    _float_case(gb, rng, x, gb.input(x, "f32"), dname, layout, N, K, mode=mode)
    check(gb)


@SETTINGS
@given(shape=st.lists(st.integers(1, 70), min_size=1, max_size=3), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_norms_softmax_reduce_any_shape(shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), "axis")
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input("x", f"f32[{', '.join(map(str, shape))}]")
    w = b.input("w", f"f32[{shape[-1]}]")
    outs = {"sm": b.softmax(x, axis=axis), "rms": b.rmsnorm(x, w), "ln": b.layernorm(x),
            "max": b.reduce(x, kind="max", axes=[axis]), "sum": b.reduce(x, kind="sum", axes=[axis])}
    g = b.build(*outs.values())
    feeds = {"x": (rng.standard_normal(shape) * 4).astype(np.float32), "w": rng.standard_normal(shape[-1:])
             .astype(np.float32)}
    want = ladder.run(g, feeds)
    for target in TARGETS:
        got = compile_graph(g, None, target=target, pipeline="").run(feeds, threads=2)
        for k, v in outs.items():
            a, r = got[v.name].astype(np.float64), want[v.name].astype(np.float64)
            if k in ("rms", "ln", "max"):
                assert np.array_equal(a, r), f"{target} {k}"
            else:
                scale = np.abs(feeds["x"]).sum(axis=axis).max() if k == "sum" else 1.0
                np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6 * scale, err_msg=f"{target} {k}")


@SETTINGS
@given(batch=st.integers(1, 2), kv_heads=st.integers(1, 3), group=st.integers(1, 3), seq=st.integers(1, 6),
       extra=st.integers(0, 20), head_dim=st.integers(1, 40), causal=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_rope_attention_any_heads_and_lengths(batch, kv_heads, group, seq, extra, head_dim, causal, seed):
    rng = np.random.default_rng(seed)
    ctx, hd = seq + extra, 2 * head_dim
    b = Builder()
    q = b.input("q", f"f32[{batch}, {kv_heads * group}, {seq}, {hd}]")
    k = b.input("k", f"f32[{batch}, {kv_heads}, {ctx}, {hd}]")
    v = b.input("v", f"f32[{batch}, {kv_heads}, {ctx}, {hd}]")
    pos = b.input("pos", f"i32[{seq}]")
    n = b.input("n", "i32[1]")
    att = b.attention(b.rope(q, pos), k, v, n, causal=causal)
    g = b.build(att)
    kv_len = int(rng.integers(seq, ctx + 1))
    feeds = {"q": rng.standard_normal((batch, kv_heads * group, seq, hd)).astype(np.float32),
             "k": rng.standard_normal((batch, kv_heads, ctx, hd)).astype(np.float32),
             "v": rng.standard_normal((batch, kv_heads, ctx, hd)).astype(np.float32),
             "pos": np.arange(kv_len - seq, kv_len, dtype=np.int32), "n": np.array([kv_len], np.int32)}
    want = ladder.run(g, feeds)[att.name]
    for target in TARGETS:
        got = compile_graph(g, None, target=target, pipeline="").run(feeds, threads=2)[att.name]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=target)


@SETTINGS
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_movement_any_shape(shape, seed, data):
    dname = data.draw(st.sampled_from(["f32", "f16", "i8", "u8", "i32", "bf16"]), "dtype")
    perm = data.draw(st.permutations(range(len(shape))), "perm")
    axis = data.draw(st.integers(0, len(shape) - 1), "axis")
    lo = data.draw(st.integers(0, shape[axis] - 1), "lo")
    hi = data.draw(st.integers(lo + 1, shape[axis]), "hi")
    rng = np.random.default_rng(seed)
    b = Builder()
    x = b.input("x", f"{dname}[{', '.join(map(str, shape))}]")
    outs = [b.transpose(x, perm=list(perm)), b.slice(x, starts=[lo], ends=[hi], axes=[axis]),
            b.concat(x, x, axis=axis), b.reshape(x, shape=[int(np.prod(shape))])]
    g = b.build(*outs)
    feeds = {"x": (rng.standard_normal(shape) * 50).astype(DTYPES[dname].np_dtype)}
    want = ladder.run(g, feeds)
    for target in TARGETS:
        got = compile_graph(g, None, target=target, pipeline="").run(feeds, threads=2)
        for o in outs:
            assert got[o.name].tobytes() == want[o.name].tobytes(), f"{target} {o.name}"


@SETTINGS
@given(lead=st.lists(st.integers(1, 4), max_size=2), M=dims, N=st.integers(1, 1100), K=depth,
       tb=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_float_matmul_any_shape(lead, M, N, K, tb, seed):
    """The dense f32 kernels (transpose_b: vector dots over tiles of rows; [K, N]: blocks of output columns in
    registers over tiles of rows, the weight read in row chunks when large, so N up to 1100 crosses blocks and
    a masked tail) within 1e-4 sum |x||w|."""
    rng = np.random.default_rng(seed)
    gb = G()
    x = rng.standard_normal(tuple(lead) + (M, K)).astype(np.float32)
    w = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    xn, wn = gb.input(x, "f32"), gb.param(w, "f32")
    wt = w if tb else w.T
    tol = 1e-4 * (np.abs(x) @ np.abs(wt).T) + 1e-30
    gb.op(f"matmul %{xn}, %{wn} {{transpose_b = {'true' if tb else 'false'}}}",
          f"f32[{', '.join(map(str, tuple(lead) + (M, N)))}]", tol=tol)
    check(gb)


@SETTINGS
@given(M=dims, N=cols, K=depth, seed=st.integers(0, 2**32 - 1), extremes=st.booleans())
def test_qmatmul_i8_over_unpacked_int8_weights(M, N, K, seed, extremes):
    """int8 x int8 (the Q8_0 kind of work): VNNI offset codes, AVX2 i16 vpmaddwd, generic i32 MACs; bit-exact,
    including rows of -128 x -128 (where vpmaddubsw would saturate)."""
    rng = np.random.default_rng(seed)
    gb = G()
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-128, 128, (N, K)).astype(np.int8)
    if extremes:
        x[0], w[0] = -128, -128
    xn = gb.input(x, "i8")
    s1 = gb.input(rng.random((M, 1)).astype(np.float32) + 0.1, "f32")
    wn, s2 = gb.param(w, "i8"), gb.param(rng.random(N).astype(np.float32) + 0.5, "f32")
    gb.op(f"qmatmul_i8 %{xn}, %{wn}, %{s1}, %{s2} {{transpose_b = true}}", f"f32[{M}, {N}]")
    check(gb)
