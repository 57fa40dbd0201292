"""The ONNX frontend: hand-built models for each op family (ONNX's own node tests are in test_onnx_nodes.py), the quantized patterns (DequantizeLinear + MatMul, com.microsoft.MatMulNBits) down to qmatmul, the
CLI round trip, and the errors (unsupported ops, symbolic shapes, int64 at run time, malformed files)."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import ladder  # noqa: E402
from ladder.cli import main as cli_main  # noqa: E402
from ladder.errors import LadderError  # noqa: E402
from ladder.frontends import load  # noqa: E402
from ladder.frontends import onnx as lo  # noqa: E402

F = TensorProto.FLOAT


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def model(nodes, inputs, outputs, inits=(), opset=21, ms=False, name="g"):
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=ops)


def run(m, feeds, shapes=None):
    g, w = lo.from_model(m, shapes)
    out = ladder.run(g, [feeds[v] for v in feeds], w)
    return [out[n] for n in g.outputs], g, w


# -- op families ----------------------------------------------------------------------------------------

def test_elementwise_and_activations():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    b = rng.standard_normal((3,)).astype(np.float32)
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Sub", ["a", "x"], ["s"]),
        helper.make_node("Mul", ["s", "x"], ["m"]), helper.make_node("Div", ["m", "two"], ["d"]),
        helper.make_node("Neg", ["d"], ["n"]), helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Sigmoid", ["x"], ["sg"]), helper.make_node("Tanh", ["x"], ["th"]),
        helper.make_node("Erf", ["x"], ["ef"]), helper.make_node("Gelu", ["x"], ["ge"], approximate="tanh"),
        helper.make_node("Softmax", ["x"], ["sm"], axis=0), helper.make_node("Identity", ["sm"], ["id"]),
    ]
    two = helper.make_tensor("two", F, [1], [2.0])
    m = model(nodes, [vi("x", F, [2, 3])], [vi(o, F, None) for o in ("r", "sg", "th", "ef", "ge", "id")],
              [numpy_helper.from_array(b, "b"), two])
    (r, sg, th, ef, ge, sm), g, w = run(m, {"x": x})
    np.testing.assert_allclose(r, np.maximum(-(b * x / 2), 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sg, 1 / (1 + np.exp(-x)), rtol=1e-5)
    np.testing.assert_allclose(th, np.tanh(x), rtol=1e-5)
    np.testing.assert_allclose(ef, [[math.erf(v) for v in row] for row in x], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ge, 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sm, np.exp(x) / np.exp(x).sum(0), rtol=1e-5)
    assert w["b"].dtype == np.float32 and "b" in w  # the initializer is a param by its name
    assert [o.kind for o in g.ops()].count("param") == 2


def test_gemm_and_matmul_variants():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((4, 3)).astype(np.float32)
    bt = rng.standard_normal((5, 4)).astype(np.float32)
    c = rng.standard_normal((5,)).astype(np.float32)
    v = rng.standard_normal((5,)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["a", "bt", "c"], ["y"], alpha=0.5, beta=2.0, transA=1, transB=1),
             helper.make_node("MatMul", ["y", "v"], ["z"])]  # 1-D right operand
    m = model(nodes, [vi("a", F, [4, 3])], [vi("y", F, [3, 5]), vi("z", F, [3])],
              [numpy_helper.from_array(bt, "bt"), numpy_helper.from_array(c, "c"), numpy_helper.from_array(v, "v")])
    (y, z), g, _ = run(m, {"a": a})
    want = 0.5 * a.T @ bt.T + 2.0 * c
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z, want @ v, rtol=1e-5, atol=1e-5)
    assert any(o.kind == "matmul" and o.attr.get("transpose_b") for o in g.ops())


def test_norms_over_leading_axes_with_mean_and_invstd():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    sc = rng.standard_normal((3, 4)).astype(np.float32)
    bi = rng.standard_normal((3, 4)).astype(np.float32)
    nodes = [helper.make_node("LayerNormalization", ["x", "sc", "bi"], ["y", "mu", "inv"], axis=1, epsilon=1e-3),
             helper.make_node("RMSNormalization", ["x", "sc"], ["r"], axis=1, epsilon=1e-3)]
    m = model(nodes, [vi("x", F, [2, 3, 4])], [vi(n, F, None) for n in ("y", "mu", "inv", "r")],
              [numpy_helper.from_array(sc, "sc"), numpy_helper.from_array(bi, "bi")], opset=23)
    (y, mu, inv, r), g, _ = run(m, {"x": x})
    mean = x.mean((1, 2), keepdims=True)
    istd = 1 / np.sqrt(x.var((1, 2), keepdims=True) + 1e-3)
    np.testing.assert_allclose(mu, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inv, istd, rtol=1e-5)
    np.testing.assert_allclose(y, (x - mean) * istd * sc + bi, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r, x / np.sqrt((x * x).mean((1, 2), keepdims=True) + 1e-3) * sc, rtol=1e-4, atol=1e-5)
    # Last-axis norms with [D] weights map onto the ladder ops directly.
    m2 = model([helper.make_node("LayerNormalization", ["x", "w"], ["y"])], [vi("x", F, [2, 4])], [vi("y", F, None)],
               [numpy_helper.from_array(np.ones(4, np.float32), "w")], opset=17)
    assert [o.kind for o in lo.from_model(m2)[0].ops()] == ["param", "layernorm"]


def test_shape_ops_fold_int64_at_import():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    table = rng.standard_normal((10, 4)).astype(np.float32)
    i64 = lambda name, vals: numpy_helper.from_array(np.array(vals, np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Constant", [], ["c1"], value=numpy_helper.from_array(np.array([-1], np.int64))),
        helper.make_node("Concat", ["c1", "four"], ["shape"], axis=0),          # folded: [-1, 4]
        helper.make_node("Reshape", ["x", "shape"], ["r"]),                     # [6, 4]
        helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0]),               # [4, 6]
        helper.make_node("Slice", ["t", "st", "en", "ax", "sp"], ["sl"]),        # [4, 3], reversed columns
        helper.make_node("Unsqueeze", ["sl", "ax0"], ["u"]),                    # [1, 4, 3]
        helper.make_node("Squeeze", ["u", "ax0"], ["sq"]),                      # [4, 3]
        helper.make_node("Gather", ["table", "idx"], ["gt"], axis=0),           # [2, 2, 4]
        helper.make_node("Concat", ["sq", "sq"], ["cc"], axis=-1),              # [4, 6]
        helper.make_node("ReduceSum", ["cc", "ax1"], ["rs"], keepdims=0),       # [4]
        helper.make_node("ReduceMean", ["x"], ["rm"], axes=[0, 2], keepdims=1),
        helper.make_node("ReduceMax", ["x"], ["rx"], axes=[1], keepdims=0),
        helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
    ]
    inits = [i64("four", [4]), i64("st", [-1]), i64("en", [0]), i64("ax", [1]), i64("sp", [-2]), i64("ax0", [0]),
             i64("ax1", [1]), i64("idx", [[1, 9], [-1, 0]]), numpy_helper.from_array(table, "table")]
    outs = [vi(n, F, None) for n in ("sq", "gt", "rs", "rm", "rx")] + [vi("xh", TensorProto.FLOAT16, None)]
    m = model(nodes, [vi("x", F, [2, 3, 4])], outs, inits, opset=18)
    (sq, gt, rs, rm, rx, xh), g, w = run(m, {"x": x})
    t = x.reshape(6, 4).T
    np.testing.assert_array_equal(sq, t[:, -1:0:-2])
    np.testing.assert_array_equal(gt, table[np.array([[1, 9], [-1, 0]])])
    np.testing.assert_allclose(rs, 2 * t[:, -1:0:-2].sum(1), rtol=1e-5)
    np.testing.assert_allclose(rm, x.mean((0, 2), keepdims=True), rtol=1e-5)
    np.testing.assert_array_equal(rx, x.max(1))
    assert xh.dtype == np.float16 and np.array_equal(xh, x.astype(np.float16))
    # int64 shapes and axes never reach the graph; the Gather indices became an i32 const
    assert all(o.result.type.dtype.name != "i64" for o in g.ops())
    gather_idx = [o for o in g.ops() if o.kind == "gather"][0].operands[1]
    assert g.type_of(gather_idx).dtype.name == "i32"
    assert set(w) == {"table"}


def test_quantize_linear_and_integer_matmuls():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 32)).astype(np.float32) * 4
    s = np.float32(0.05)
    sb = (rng.random((2, 32)) + 0.5).astype(np.float32) * 0.5  # blocks of 2 rows: ceil(3 / 2) = 2
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),                       # per tensor u8
             helper.make_node("QuantizeLinear", ["x", "sb"], ["qb"], axis=0, block_size=2,
                              output_dtype=TensorProto.INT4)]                                  # blocked int4
    inits = [numpy_helper.from_array(np.array(s), "s"), numpy_helper.from_array(np.array(128, np.uint8), "z"),
             numpy_helper.from_array(sb, "sb")]
    m = model(nodes, [vi("x", F, [3, 32])], [vi("q", TensorProto.UINT8, None), vi("qb", TensorProto.INT4, None)],
              inits)
    (q, qb), g, _ = run(m, {"x": x})
    np.testing.assert_array_equal(q, np.clip(np.rint(x / s) + 128, 0, 255).astype(np.uint8))
    full = np.repeat(sb, 2, axis=0)[:3]
    np.testing.assert_array_equal(qb.astype(np.int8), np.clip(np.rint(x / full), -8, 7).astype(np.int8))
    assert qb.dtype == ml_dtypes.int4

    a = rng.integers(0, 256, (2, 5)).astype(np.uint8)
    b = rng.integers(-128, 128, (5, 3)).astype(np.int8)
    nodes = [helper.make_node("MatMulInteger", ["a", "b", "az"], ["y"]),
             helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["qy"])]
    inits = [numpy_helper.from_array(b, "b"), numpy_helper.from_array(np.array(3, np.uint8), "az"),
             numpy_helper.from_array(np.array(0.02, np.float32), "as"),
             numpy_helper.from_array(np.array(0.01, np.float32), "bs"),
             numpy_helper.from_array(np.array(-2, np.int8), "bz"),
             numpy_helper.from_array(np.array(0.5, np.float32), "ys"),
             numpy_helper.from_array(np.array(10, np.uint8), "yz")]
    m = model(nodes, [vi("a", TensorProto.UINT8, [2, 5])], [vi("y", TensorProto.INT32, None),
                                                          vi("qy", TensorProto.UINT8, None)], inits)
    (y, qy), _, w = run(m, {"a": a})
    acc = (a.astype(np.int32) - 3) @ b.astype(np.int32)
    np.testing.assert_array_equal(y, acc)
    acc2 = (a.astype(np.int32) - 3) @ (b.astype(np.int32) + 2)
    want = np.clip(np.rint(acc2 * (np.float32(0.02) * np.float32(0.01) / np.float32(0.5)) + 10), 0, 255)
    np.testing.assert_array_equal(qy, want.astype(np.uint8))
    assert w["b"].dtype == np.int8


# -- quantized weights down to qmatmul ------------------------------------------------------------------

def _fused(g):
    fused = ladder.PassManager("legalize-types,fuse").run(g)
    kinds = [o.kind for o in fused.ops()]
    assert "qmatmul" in kinds and "matmul" not in kinds and "dequant" not in kinds, kinds
    return fused


@pytest.mark.parametrize("kind", ["per_axis_i8", "per_axis_u8_zero", "blocked_i4", "blocked_u4_zero",
                                  "per_tensor_i2"])
def test_dequantize_linear_weights_become_lowbit_params(kind):
    rng = np.random.default_rng(5)
    K, N = 64, 6
    qt, np_t, lo_, hi = {"per_axis_i8": ("i8", np.int8, -128, 127), "per_axis_u8_zero": ("u8", np.uint8, 0, 255),
                         "blocked_i4": ("i4", ml_dtypes.int4, -8, 7), "blocked_u4_zero": ("u4", ml_dtypes.uint4, 0, 15),
                         "per_tensor_i2": ("i2", ml_dtypes.int2, -2, 1)}[kind]
    codes = rng.integers(lo_, hi + 1, (K, N))
    if kind.startswith("per_axis"):
        scale, attrs = (rng.random(N) + 0.5).astype(np.float32), {"axis": 1}
        s_full = scale[None, :]
    elif kind.startswith("blocked"):
        scale, attrs = (rng.random((K // 16, N)) + 0.5).astype(np.float32), {"axis": 0, "block_size": 16}
        s_full = np.repeat(scale, 16, 0)
    else:
        scale, attrs = np.array(0.25, np.float32), {}
        s_full = scale
    inits = [numpy_helper.from_array(codes.astype(np_t), "model/W:q"), numpy_helper.from_array(scale, "W.scale")]
    ins = ["model/W:q", "W.scale"]
    z_full = 0
    if kind.endswith("zero"):
        zero = rng.integers(lo_, hi + 1, scale.shape).astype(np_t)
        inits.append(numpy_helper.from_array(zero, "W.zero"))
        ins.append("W.zero")
        z_full = np.repeat(zero.astype(np.float32), 16, 0) if kind.startswith("blocked") else zero.astype(np.float32)
    nodes = [helper.make_node("DequantizeLinear", ins, ["W"], **attrs), helper.make_node("MatMul", ["x", "W"], ["y"])]
    m = model(nodes, [vi("x", F, [2, K])], [vi("y", F, [2, N])], inits)
    g, w = lo.from_model(m)
    (p,) = [o for o in g.ops() if o.kind == "param" and o.attr["ref"] == "model/W:q"]
    assert p.result.type.dtype.name == qt
    assert w["model/W:q"].dtype == np.dtype(np_t) and w["W.scale"].dtype == np.float32
    x = rng.standard_normal((2, K)).astype(np.float32)
    want = x @ ((codes.astype(np.float32) - z_full) * s_full)
    np.testing.assert_allclose(ladder.run(g, {"x": x}, w)["y"], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ladder.run(_fused(g), {"x": x}, w)["y"], want, rtol=1e-4, atol=1e-4)


def _ort_matmulnbits_ref(a, packed, scales, zp, K, N, bits, block):
    """ORT's documented semantics, bit by bit: B[n] holds the codes of column n, block after block, each code
    `bits` wide, the lowest bits of each byte first; value = (code - zero) * scale of its block."""
    nb = (K + block - 1) // block
    flat = packed.reshape(N, -1)
    deq = np.zeros((N, K), np.float32)
    for n in range(N):
        for k in range(K):
            blk, pos = divmod(k, block)
            bit = blk * (block * bits) + pos * bits
            code = (int(flat[n, bit // 8]) >> (bit % 8)) & ((1 << bits) - 1)
            if zp is None:
                z = 2 ** (bits - 1)
            elif zp.dtype == np.uint8:
                zbit = blk * bits
                per = (nb * bits + 7) // 8
                z = (int(zp[n * per + zbit // 8]) >> (zbit % 8)) & ((1 << bits) - 1)
            else:
                z = float(zp[n * nb + blk])
            deq[n, k] = (code - z) * scales[n * nb + blk]
    return a @ deq.T


@pytest.mark.parametrize("bits,with_zero,K", [(4, False, 64), (4, True, 48), (2, False, 64), (2, True, 40),
                                              (8, True, 32), (4, "float", 32)])
def test_matmulnbits(bits, with_zero, K):
    rng = np.random.default_rng(bits * 10 + K)
    N, block = 5, 16
    nb = (K + block - 1) // block
    codes = rng.integers(0, 2**bits, (N, nb * block)).astype(np.uint8)
    packed = lo.pack_bits(codes, bits).reshape(N, nb, block * bits // 8)
    scales = (rng.random(N * nb) + 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(scales, "B_scales")]
    ins = ["a", "B", "B_scales"]
    zp = None
    if with_zero == "float":
        zp = (rng.random(N * nb) * 8).astype(np.float32)
    elif with_zero:
        per = (nb * bits + 7) // 8
        zc = rng.integers(0, 2**bits, (N, per * 8 // bits)).astype(np.uint8)
        zp = lo.pack_bits(zc, bits).reshape(-1)
    if zp is not None:
        inits.append(numpy_helper.from_array(zp, "B_zp"))
        ins.append("B_zp")
    node = helper.make_node("MatMulNBits", ins, ["y"], domain="com.microsoft", K=K, N=N, bits=bits, block_size=block)
    m = model([node], [vi("a", F, [3, K])], [vi("y", F, [3, N])], inits, ms=True)
    a = rng.standard_normal((3, K)).astype(np.float32)
    g, w = lo.from_model(m)
    want = _ort_matmulnbits_ref(a, packed, scales, zp, K, N, bits, block)
    np.testing.assert_allclose(ladder.run(g, {"a": a}, w)["y"], want, rtol=1e-4, atol=1e-4)
    wt = {o.attr["ref"]: o.result.type for o in g.ops() if o.kind == "param"}
    want_t = {(2, False): "i2", (4, False): "i4", (8, False): "i8"}.get((bits, bool(with_zero)),
                                                                       {2: "u2", 4: "u4", 8: "u8"}[bits])
    assert str(wt["B"]) == f"{want_t}[{N}, {K}]" and str(wt["B_scales"]) == f"f32[{N}, {nb}]"
    assert w["B"].dtype == wt["B"].dtype.np_dtype
    np.testing.assert_allclose(ladder.run(_fused(g), {"a": a}, w)["y"], want, rtol=1e-4, atol=1e-4)


# -- the command line -----------------------------------------------------------------------------------

def _mlp(path, dims=(2, 8)):
    rng = np.random.default_rng(6)
    w1 = rng.integers(-8, 8, (8, 16)).astype(ml_dtypes.int4)
    s1 = (rng.random((1, 16)) + 0.5).astype(np.float32) * 0.1
    w2 = rng.standard_normal((16, 4)).astype(np.float32)
    nodes = [helper.make_node("DequantizeLinear", ["fc1/w", "fc1/s"], ["fc1/W"], axis=0, block_size=8),
             helper.make_node("MatMul", ["in:x", "fc1/W"], ["h"], name="fc1/MatMul"),
             helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("Gemm", ["hr", "fc2.w"], ["out/y"], name="fc2/Gemm")]
    inits = [numpy_helper.from_array(w1, "fc1/w"), numpy_helper.from_array(s1, "fc1/s"),
             numpy_helper.from_array(w2, "fc2.w")]
    m = model(nodes, [vi("in:x", F, list(dims))], [vi("out/y", F, None)], inits)
    onnx.save(m, str(path))
    return m


def test_cli_import_then_run_equals_run_onnx(tmp_path, capsys):
    src = tmp_path / "m.onnx"
    _mlp(src)
    x = np.random.default_rng(7).standard_normal((2, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    lir, wf = tmp_path / "m.lir", tmp_path / "w.safetensors"
    assert cli_main(["import", str(src), "-o", str(lir), "--weights-out", str(wf)]) == 0
    assert "3 weights" in capsys.readouterr().out
    assert cli_main(["run", str(lir), "--weights", str(wf), "--input", f"in_x={tmp_path / 'x.npy'}",
                     "--output", str(tmp_path / "a.npz")]) == 0
    assert cli_main(["run", str(src), "--input", f"in_x={tmp_path / 'x.npy'}", "--output", str(tmp_path / "b.npz")]) == 0
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert list(a.keys()) == list(b.keys()) == ["out_y"]
    np.testing.assert_array_equal(a["out_y"], b["out_y"])
    g, w = load(src)
    text = lir.read_text()
    assert "param @fc1/w : i4[8, 16]" in text and "%in_x: f32[2, 8]" in text
    w1 = numpy_helper.to_array(onnx.load(str(src)).graph.initializer[0]).astype(np.float32)
    s1 = np.repeat(numpy_helper.to_array(onnx.load(str(src)).graph.initializer[1]), 8, 0)
    want = np.maximum(x @ (w1 * s1), 0) @ w["fc2.w"]
    np.testing.assert_allclose(a["out_y"], want, rtol=1e-5, atol=1e-5)


def test_symbolic_shapes(tmp_path, capsys):
    src = tmp_path / "sym.onnx"
    _mlp(src, dims=("batch", 8))
    with pytest.raises(LadderError) as e:
        load(src)
    assert "in:x" in e.value.message and "'batch'" in e.value.message and "dimension 0" in e.value.message
    g, _ = load(src, {"in:x": (3, 8)})
    assert g.inputs[0].type.shape == (3, 8) and g.type_of(g.outputs[0]).shape == (3, 4)
    with pytest.raises(LadderError, match="dimension 1 is 8 in the model, not 9"):
        load(src, {"in:x": (3, 9)})
    with pytest.raises(LadderError, match="names no input"):
        load(src, {"nope": (3, 8)})
    assert cli_main(["run", str(src), "--random-inputs", "0"]) == 1
    assert "symbolic dimension" in capsys.readouterr().err
    assert cli_main(["run", str(src), "--random-inputs", "0", "--shape", "in:x=5x8"]) == 0
    assert "f32[5, 4]" in capsys.readouterr().out


# -- errors --------------------------------------------------------------------------------------------

def test_unsupported_ops_are_one_error():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv1"), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["c2"], name="conv2"),
             helper.make_node("LSTM", ["c2", "w", "w"], ["l"], name="lstm"),
             helper.make_node("FusedGemm", ["l", "w"], ["y"], name="fg", domain="com.microsoft")]
    m = model(nodes, [vi("x", F, [1, 1, 4, 4])], [vi("y", F, None)], ms=True)
    with pytest.raises(LadderError) as e:
        lo.from_model(m)
    msg = e.value.message
    assert "Conv (conv1, conv2)" in msg and "LSTM (lstm)" in msg and "com.microsoft.FusedGemm (fg)" in msg
    assert "Relu" not in msg


def test_int64_token_ids_become_i32_inputs_checked_at_run_time():
    table = np.arange(8, dtype=np.float32).reshape(4, 2)
    m = model([helper.make_node("Gather", ["t", "ids"], ["y"])], [vi("ids", TensorProto.INT64, [1, 3])],
              [vi("y", F, None)], [numpy_helper.from_array(table, "t")])
    g, w = lo.from_model(m)
    assert str(g.inputs[0].type) == "i32[1, 3]"
    ids = np.array([[3, 0, 2]], np.int64)
    assert np.array_equal(ladder.run(g, {"ids": ids}, w)["y"], table[ids])
    with pytest.raises(LadderError, match="ids"):
        ladder.run(g, {"ids": np.array([[2**40, 0, 1]], np.int64)}, w)


def test_runtime_double_is_rejected_by_name():
    m = model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.DOUBLE, name="to_f64")], [vi("x", F, [2])],
              [vi("y", TensorProto.DOUBLE, None)])
    with pytest.raises(LadderError) as e:
        lo.from_model(m)
    assert "'x' to DOUBLE" in e.value.message and "to_f64" in str(e.value)
    # an int64 tensor computed at run time (not a constant) used as a shape names the node
    m = model([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
              [vi("x", F, [2, 2]), vi("s", TensorProto.INT32, [1])], [vi("y", F, None)])
    with pytest.raises(LadderError) as e:
        lo.from_model(m, path="m.onnx")
    assert "computed at run time" in e.value.message and e.value.loc.line == 1 and "'rs'" in str(e.value)


def test_names_are_sanitized_uniquely():
    nodes = [helper.make_node("Relu", ["a/b"], ["a:b"]), helper.make_node("Neg", ["a:b"], ["a b"]),
             helper.make_node("Tanh", ["a b"], ["y/0"])]
    m = model(nodes, [vi("a/b", F, [2])], [vi("y/0", F, None)], name="my model")
    g, _ = lo.from_model(m)
    names = [g.inputs[0].name] + [o.name for o in g.ops()]
    assert names == ["a_b", "a_b.1", "a_b.2", "y_0"] and g.name == "my_model"
    assert ladder.parse(str(g)) == g  # printable and parseable


def test_malformed_files(tmp_path, capsys):
    good = tmp_path / "good.onnx"
    _mlp(good)
    data = good.read_bytes()
    cases = {"junk.onnx": b"this is not an onnx file at all \x00\x01\x02", "empty.onnx": b"",
             "trunc.onnx": data[: len(data) // 2], "trunc2.onnx": data[:-7]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(LadderError) as e:
            load(tmp_path / name)
        assert name in str(e.value)
        assert cli_main(["import", str(tmp_path / name), "-o", str(tmp_path / "o.lir")]) == 1
        assert name in capsys.readouterr().err
    with pytest.raises(LadderError, match="no such file"):
        load(tmp_path / "missing.onnx")


def test_softmax_before_opset13_flattens():
    x = np.random.default_rng(8).standard_normal((2, 3, 4)).astype(np.float32)
    m = model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [vi("x", F, [2, 3, 4])], [vi("y", F, None)],
              opset=11)
    (y,), _, _ = run(m, {"x": x})
    flat = x.reshape(2, 12)
    np.testing.assert_allclose(y, (np.exp(flat) / np.exp(flat).sum(1, keepdims=True)).reshape(2, 3, 4), rtol=1e-5)
