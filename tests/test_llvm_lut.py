"""The LLVM kernels of lut_precompute and lut_matmul against the reference interpreter, bit for bit (every
table form is specified to the last rounding), on random odd shapes driven by hypothesis, for the native CPU
(AVX2 byte shuffles here) and cpu:generic (the portable lookup); AVX-512 is compiled, not run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ladder.backends.llvm.compiler import compile_graph
from ladder.backends.llvm.lowerings.lut import CH
from test_llvm_matmul import Guarded

import ladder
from ladder.ops.lut import LUT_DTYPES
from ladder.packing import from_codes
from ladder.passes import PassManager
from ladder.types import DTYPES

TARGETS = ["cpu", "cpu:generic"]
MODES = {  # lut pass options per table form
    "exact": ("i8", ""),
    "float": ("f32", ""),
    "quantized": ("f32", ",quantize=true"),
    "grouped": ("f32", ",quantize=true,act_group=8"),
    "fast": ("f32", ",quantize=true,act_group=12,fast_aggregation=true"),
    "fast-row": ("f32", ",quantize=true,fast_aggregation=true"),
}


def rand_w(rng, dname, shape):
    dt = DTYPES[dname]
    return from_codes(rng.integers(0, 3 if dname == "ternary" else 2 ** dt.bits, shape).astype(np.uint8), dt)


def lut_problem(rng, mode, dname, m, n, k, rows, g, unroll, batch=()):
    """A graph whose only matmul the lut pass turns into lut_precompute + lut_matmul, its weights and inputs."""
    act, opts = MODES[mode]
    xs = ", ".join(map(str, batch + (m, k)))
    ys = ", ".join(map(str, batch + (m, n)))
    head = f"%x: i8[{xs}], %xs: f32[{', '.join(map(str, batch + (m, 1)))}]" if act == "i8" else f"%x: f32[{xs}]"
    mm = ("qmatmul_i8 %x, %w, %xs, %s {transpose_b = true, epilogue = [\"silu\"]}" if act == "i8"
          else "qmatmul %x, %w, %s {transpose_b = true}")
    text = f"""graph @lut({head}) -> f32[{ys}] {{
  %w = param @w : {dname}[{n}, {k}]
  %s = param @s : f32[{'1' if act == 'i8' else f'{n}, 1'}]
  %y = {mm} : f32[{ys}]
  return %y
}}"""
    g0 = ladder.parse(text)
    graph = PassManager(f"lut{{rows={rows},g={g},unroll={unroll}{opts}}},canonicalize").run(g0)
    assert "lut_matmul" in {op.kind for op in graph.ops()}
    weights = {"w": rand_w(rng, dname, (n, k)),
               "s": rng.uniform(0.5, 2, (1,) if act == "i8" else (n, 1)).astype(np.float32)}
    if act == "i8":
        feeds = {"x": rng.integers(-128, 128, batch + (m, k)).astype(np.int8),
                 "xs": rng.uniform(0.001, 0.01, batch + (m, 1)).astype(np.float32)}
    else:
        feeds = {"x": (rng.standard_normal(batch + (m, k)) * 3).astype(np.float32)}
    return graph, weights, feeds


def check(graph, weights, feeds, target, threads=None):
    cg = compile_graph(graph, weights, target=target, pipeline="", threads=threads)
    assert {s.op.kind for s in cg.steps} == {"lut_precompute", "lut_matmul"}
    want = ladder.run(graph, feeds, weights)["y"]
    got = cg.run(feeds)["y"]
    np.testing.assert_array_equal(got, want)
    return cg


shapes = st.tuples(st.integers(1, 5), st.integers(1, 70), st.integers(1, 150))


@pytest.mark.parametrize("target", TARGETS)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_odd_shapes_match_the_reference(target, data):
    m, n, k = data.draw(shapes, "m, n, k")
    mode = data.draw(st.sampled_from(sorted(MODES)), "mode")
    dname = data.draw(st.sampled_from(LUT_DTYPES), "dtype")
    rows = data.draw(st.sampled_from([8, 16, 32]), "rows")
    g = data.draw(st.sampled_from([4, 4, 2, 1]), "g")
    unroll = data.draw(st.sampled_from([1, 2, 4]), "unroll")
    seed = data.draw(st.integers(0, 2**16), "seed")
    check(*lut_problem(np.random.default_rng(seed), mode, dname, m, n, k, rows, g, unroll), target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_table_form_with_batch_dims(target, mode):
    rng = np.random.default_rng(len(mode))
    check(*lut_problem(rng, mode, "i4", 3, 37, 131, 32, 4, 2, batch=(2,)), target)


@pytest.mark.parametrize("dname", LUT_DTYPES)
def test_every_weight_type_large_k(dname):
    """K long enough for several i16 chunks (CH groups) and a partial last one."""
    rng = np.random.default_rng(11)
    check(*lut_problem(rng, "exact", dname, 2, 40, 4 * CH["exact"] * 2 + 6, 32, 4, 4), "cpu")
    check(*lut_problem(rng, "fast-row", dname, 1, 17, 4 * CH["quantized"] + 9, 16, 4, 1), "cpu")


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(12)
    graph, weights, feeds = lut_problem(rng, "exact", "ternary", 2, 200, 64, 16, 4, 2)
    one = check(graph, weights, feeds, "cpu", threads=1).run(feeds)["y"]
    two = compile_graph(graph, weights, target="cpu", pipeline="", threads=2).run(feeds, threads=2)["y"]
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("target", TARGETS)
def test_kernels_stay_inside_their_buffers(target):
    """Each kernel on guarded buffers: a read past the end faults, a write before the start is seen."""
    rng = np.random.default_rng(13)
    for mode, (m, n, k) in (("exact", (1, 1, 1)), ("grouped", (2, 9, 13)), ("float", (1, 33, 7))):
        graph, weights, feeds = lut_problem(rng, mode, "u2", m, n, k, 16, 4, 4)
        cg = compile_graph(graph, weights, target=target, pipeline="")
        ref = ladder.run(graph, feeds, weights, keep=True)  # every value, weights and tables included
        for step in cg.steps:
            ins = [Guarded(ref[o]) for o in step.op.operands]
            outs = [Guarded(np.zeros(r.type.storage_shape, r.type.storage_np_dtype)) for r in step.op.results]
            step.fn(*[a.ptr for a in ins + outs], 0, step.spec.work)
            assert all(a.canary_ok() for a in ins + outs), step.op.describe()
            for r, o in zip(step.op.results, outs):
                np.testing.assert_array_equal(o.arr, ref[r.name])


def shuffles(target, rows):
    """The registers of every pshufb in the kernels compiled for ``target`` with ``rows`` lanes."""
    graph, weights, _ = lut_problem(np.random.default_rng(0), "exact", "i2", 1, 64, 64, rows, 4, 1)
    asm = compile_graph(graph, weights, target=target, pipeline="", jit=False).source("asm")
    return {reg for line in asm.splitlines() if "pshufb" in line for reg in ("xmm", "ymm", "zmm") if reg in line}


def test_byte_shuffles_by_target():
    assert "ymm" in shuffles("cpu:avx2", 32)
    assert shuffles("cpu:avx2", 16) == {"xmm"}
    assert "zmm" in shuffles("cpu:avx512", 64)  # compile-only: this machine has no AVX-512
    assert shuffles("cpu:generic", 16) == set()  # SSE2 only: the portable lookup
