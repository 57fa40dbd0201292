"""Invalid ONNX models are refused with the node, op and field named, never wrapped around or half-computed;
import-time folding is bounded; malformed fields (wrong attribute types, names that are not UTF-8, a zero
block size) are LadderErrors, and an error names the file once."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import ladder  # noqa: E402
from ladder.errors import LadderError  # noqa: E402
from ladder.frontends import onnx as lo  # noqa: E402

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=18, ms=False):
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=ops)


def _vi(name, elem=F, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def _i64(name, vals):
    return numpy_helper.from_array(np.array(vals, np.int64), name)


def _refused(m, *words):
    with pytest.raises(LadderError) as ei:
        lo.from_model(m, path="m.onnx")
    text = str(ei.value)
    for w in words:
        assert w in text, (w, text)
    return text


def _checker_rejects(m):
    with pytest.raises(Exception):
        onnx.checker.check_model(m, full_check=True)


def test_softmax_axis_out_of_range():
    m = _model([helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=7)], [_vi("x", F, [2, 3])], [_vi("y")])
    _checker_rejects(m)
    _refused(m, "m.onnx:1", "'sm'", "Softmax", "axis 7", "rank 2")


def test_gather_axis_out_of_range():
    m = _model([helper.make_node("Gather", ["x", "i"], ["y"], name="ga", axis=2)], [_vi("x", F, [4, 3])],
               [_vi("y")], [_i64("i", [0, 1])])
    _checker_rejects(m)
    _refused(m, "'ga'", "Gather", "axis 2")
    # a run-time table too
    m = _model([helper.make_node("Gather", ["x", "i"], ["y"], name="gr", axis=-3)],
               [_vi("x", F, [4, 3]), _vi("i", TensorProto.INT32, [2])], [_vi("y")])
    _refused(m, "'gr'", "axis -3")


def test_slice_axes_out_of_range_and_unequal_lengths():
    x = [_vi("x", F, [4, 6])]
    m = _model([helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="sl")], x, [_vi("y")],
               [_i64("s", [0]), _i64("e", [2]), _i64("a", [5])])
    _checker_rejects(m)
    _refused(m, "'sl'", "Slice", "axes 5")
    m = _model([helper.make_node("Slice", ["x", "s", "e"], ["y"], name="sl2")], x, [_vi("y")],
               [_i64("s", [0, 1]), _i64("e", [2])])
    _refused(m, "'sl2'", "Slice", "unequal lengths")
    m = _model([helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="sl3")], x, [_vi("y")],
               [_i64("s", [0, 0]), _i64("e", [2, 2]), _i64("a", [1, -1])])
    _refused(m, "'sl3'", "repeat an axis")


def test_other_axes_are_checked():
    x = [_vi("x", F, [2, 3])]
    cases = [
        helper.make_node("Concat", ["x", "x"], ["y"], name="c", axis=2),
        helper.make_node("LayerNormalization", ["x", "x"], ["y"], name="c", axis=-3),
        helper.make_node("ReduceSum", ["x"], ["y"], name="c", axes=[4]),
        helper.make_node("Transpose", ["x"], ["y"], name="c", perm=[0, 0]),
        helper.make_node("Flatten", ["x"], ["y"], name="c", axis=3),
        helper.make_node("Split", ["x"], ["y", "z"], name="c", axis=2, num_outputs=2),
    ]
    for node in cases:
        m = _model([node], x, [_vi(o) for o in node.output], opset=18 if node.op_type != "ReduceSum" else 11)
        _refused(m, "'c'", node.op_type)


def test_wrong_attribute_type_names_node_and_field():
    node = helper.make_node("Softmax", ["x"], ["y"], name="sm")
    node.attribute.append(helper.make_attribute("axis", 1.5))
    m = _model([node], [_vi("x", F, [2, 3])], [_vi("y")])
    _refused(m, "'sm'", "Softmax", "attribute 'axis' must be int", "FLOAT")
    node = helper.make_node("Gelu", ["x"], ["y"], name="ge")
    node.attribute.append(helper.make_attribute("approximate", 3))
    _refused(_model([node], [_vi("x", F, [2, 3])], [_vi("y")], opset=20), "'ge'", "approximate")


def test_names_that_are_not_utf8(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["yQQ"], name="nQQ")], [_vi("x", F, [2])], [_vi("yQQ")])
    p = tmp_path / "bad.onnx"
    p.write_bytes(m.SerializeToString().replace(b"QQ", b"\xff\xfe"))
    with pytest.raises(LadderError, match="not UTF-8"):
        lo.load(p)


def test_matmulnbits_zero_block_size():
    k, n = 32, 4
    node = helper.make_node("MatMulNBits", ["a", "b", "s"], ["y"], name="mm", domain="com.microsoft",
                            K=k, N=n, bits=4, block_size=0)
    inits = [numpy_helper.from_array(np.zeros((n, 1, 16), np.uint8), "b"),
             numpy_helper.from_array(np.ones((n,), np.float32), "s")]
    m = _model([node], [_vi("a", F, [1, k])], [_vi("y")], inits, ms=True)
    _refused(m, "'mm'", "MatMulNBits", "block_size=0")


def test_unsupported_error_names_the_file_once(tmp_path):
    m = _model([helper.make_node("Conv", ["x", "x"], ["y"], name="cv")], [_vi("x", F, [1, 1, 3, 3])], [_vi("y")])
    p = tmp_path / "conv_model.onnx"
    onnx.save(m, p)
    with pytest.raises(LadderError) as ei:
        lo.load(p)
    assert str(ei.value).count("conv_model.onnx") == 1, str(ei.value)
    assert "Conv (cv)" in str(ei.value)
    with pytest.raises(LadderError) as ei:
        lo.load(tmp_path / "missing.onnx")
    assert str(ei.value).count("missing.onnx") == 1


def test_folding_is_bounded():
    """A shape subgraph asking for a 2^36-element constant is not evaluated at import: Expand stays a
    run-time op (quickly, without allocating), Range is refused with its size."""
    big = [1 << 18, 1 << 18]
    m = _model([helper.make_node("Expand", ["one", "shape"], ["y"], name="ex")], [], [_vi("y")],
               [numpy_helper.from_array(np.ones((1,), np.float32), "one"), _i64("shape", big)])
    g, w = lo.from_model(m)
    assert g.type_of(g.outputs[0]).shape == tuple(big)
    assert sum(np.asarray(v).nbytes for v in w.values()) < 1 << 20
    m = _model([helper.make_node("Range", ["a", "b", "c"], ["y"], name="rg")], [], [_vi("y")],
               [numpy_helper.from_array(np.array(0, np.int64), "a"),
                numpy_helper.from_array(np.array(1 << 40, np.int64), "b"),
                numpy_helper.from_array(np.array(1, np.int64), "c")])
    _refused(m, "'rg'", "Range", "folding limit")


def test_fold_limit_is_a_parameter():
    """Under a small limit an Expand of a constant is computed at run time; the answer is the same."""
    m = _model([helper.make_node("Expand", ["v", "shape"], ["e"]), helper.make_node("Add", ["e", "x"], ["y"])],
               [_vi("x", F, [64, 8])], [_vi("y")],
               [numpy_helper.from_array(np.arange(8, dtype=np.float32), "v"), _i64("shape", [64, 8])])
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    outs = []
    for limit in (lo.FOLD_LIMIT_BYTES, 64):
        g, w = lo.from_model(m, fold_limit=limit)
        outs.append(ladder.run(g, [x], w)[g.outputs[0]])
        assert ("gather" in {o.kind for o in g.ops()}) == (limit == 64)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], x + np.arange(8, dtype=np.float32))


def test_runtime_where_compare_and_isnan_are_exact():
    """Where(IsNaN(x), 0, x), Equal/Less on run-time values, Max: NaN and infinities pass through."""
    nodes = [helper.make_node("IsNaN", ["x"], ["n"]), helper.make_node("Where", ["n", "zero", "x"], ["w"]),
             helper.make_node("Less", ["x", "z"], ["lt"]), helper.make_node("Equal", ["x", "z"], ["eq"]),
             helper.make_node("Max", ["x", "z"], ["mx"]), helper.make_node("Equal", ["i", "j"], ["ieq"]),
             helper.make_node("Greater", ["i", "j"], ["igt"])]
    m = _model(nodes, [_vi("x", F, [8]), _vi("z", F, [8]), _vi("i", TensorProto.INT32, [4]),
                       _vi("j", TensorProto.INT32, [4])],
               [_vi("w"), _vi("lt", TensorProto.BOOL), _vi("eq", TensorProto.BOOL), _vi("mx"),
                _vi("ieq", TensorProto.BOOL), _vi("igt", TensorProto.BOOL)],
               [numpy_helper.from_array(np.zeros((1,), np.float32), "zero")])
    x = np.array([np.nan, np.inf, -np.inf, 1e-45, -0.0, 3.0, 2.0, -1e38], np.float32)
    z = np.array([1.0, np.inf, 0.0, 0.0, 0.0, 3.0, np.nan, 1e38], np.float32)
    i = np.array([-2**31, 2**31 - 1, 5, -7], np.int32)
    j = np.array([2**31 - 1, -2**31, 5, -8], np.int32)
    g, w = lo.from_model(m)
    for target in ("ref", "cpu"):
        got = ladder.compile(g, target, w)([x, z, i, j])
        wv, lt, eq, mx, ieq, igt = (got[n] for n in g.outputs)
        np.testing.assert_array_equal(wv, np.where(np.isnan(x), 0, x))
        np.testing.assert_array_equal(lt.astype(bool), x < z)
        np.testing.assert_array_equal(eq.astype(bool), x == z)
        np.testing.assert_array_equal(mx, np.maximum(x, z))
        np.testing.assert_array_equal(ieq.astype(bool), i == j)
        np.testing.assert_array_equal(igt.astype(bool), i > j)
