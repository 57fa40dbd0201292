"""int8 x int8 matmuls as the integer dot-product kernel (qmatmul_i8): the ``fuse-qdq-matmul`` pattern
(onnxruntime's QDQ MatMul: matmul of two dequants, one scale each, an activation zero point) and the ONNX
importer's MatMulInteger / MatMulIntegerToFloat over an int8 initializer. Each against the unfused graph in the
reference interpreter and on cpu: equal up to float rounding (the integer dot product is exact; the zero
point's term is subtracted after scaling), and the pattern leaves what it cannot take alone."""

from __future__ import annotations

import numpy as np
import pytest

import ladder
from ladder import Builder
from ladder.passes import PassManager


def _qdq_graph(zero: bool, tb: bool, w_zero: bool = False, per_channel: bool = False):
    b = Builder()
    xq = b.input("xq", "i8[5, 64]")
    sx = b.input("sx", "f32[1]")
    zx = b.input("zx", "f32[1]") if zero else None
    w = b.param("w", "i8[32, 64]" if tb else "i8[64, 32]")
    sw = b.param("sw", "f32[32, 1]" if per_channel else "f32[1]")
    if zero:
        x = b.dequant(xq, sx, zx, zero_mode="original")
    else:
        x = b.dequant(xq, sx)
    wq = b.dequant(w, sw, b.param("zw", "f32[1]"), zero_mode="original") if w_zero else b.dequant(w, sw)
    return b.build(b.matmul(x, wq, transpose_b=tb))


def _inputs(rng, zero):
    x = {"xq": rng.integers(-128, 128, (5, 64)).astype(np.int8), "sx": np.array([0.02], np.float32)}
    if zero:
        x["zx"] = np.array([-7.0], np.float32)
    return x


def _weights(rng, tb, per_channel=False, w_zero=False):
    w = {"w": rng.integers(-128, 128, (32, 64) if tb else (64, 32)).astype(np.int8),
         "sw": (rng.random((32, 1) if per_channel else 1) * 0.01 + 0.001).astype(np.float32)}
    if w_zero:
        w["zw"] = np.array([3.0], np.float32)
    return w


@pytest.mark.parametrize("zero", [False, True], ids=["no-zero", "zero-point"])
@pytest.mark.parametrize("tb", [False, True], ids=["kn", "nk"])
def test_a_qdq_matmul_becomes_an_int8_dot_product(zero, tb):
    rng = np.random.default_rng(11)
    g = _qdq_graph(zero, tb)
    fused, trace = PassManager("fuse").passes[0].run_traced(g)
    assert [f.pattern for f in trace] == ["fuse-qdq-matmul"]
    kinds = [op.kind for op in fused.ops()]
    assert kinds.count("qmatmul_i8") == 1 and "matmul" not in kinds
    assert ("reduce" in kinds) == zero  # the zero point's column-sum term
    x, w = _inputs(rng, zero), _weights(rng, tb)
    want = ladder.run(g, x, w)[g.outputs[0]]
    for target in ("ref", "cpu"):
        got = ladder.compile(fused, target, w).run(x)[fused.outputs[0]]
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * float(np.abs(want).max()))
    # the whole default pipeline takes the same path
    cpu = ladder.compile(g, "cpu", w)
    assert "qmatmul_i8" in {op.kind for op in cpu.graph.ops()}
    np.testing.assert_allclose(cpu.run(x)[g.outputs[0]], want, rtol=2e-6, atol=2e-6 * float(np.abs(want).max()))


@pytest.mark.parametrize("case", ["weight-zero", "per-channel"])
def test_the_pattern_leaves_what_it_cannot_take(case):
    g = _qdq_graph(False, True, w_zero=case == "weight-zero", per_channel=case == "per-channel")
    fused, trace = PassManager("fuse").passes[0].run_traced(g)
    assert "fuse-qdq-matmul" not in [f.pattern for f in trace]


def test_onnx_matmulinteger_over_an_int8_initializer_is_the_int8_kernel():
    pytest.importorskip("onnx")
    from test_onnx_exports import _check, _load

    g, w, feeds, want = _load("llama_dynquant")
    kinds = [op.kind for op in g.ops()]
    assert kinds.count("qmatmul_i8") == 15  # 2 layers x 7 projections and the head
    assert all(g.type_of(op.operands[0]).dtype.name == "f32" for op in g.ops() if op.kind == "matmul")
    _check(g, ladder.compile(g, "cpu", w)(list(feeds.values())), want)
