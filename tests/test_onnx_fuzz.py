"""Seeded fuzzing of the ONNX importer: mutated models (attributes, shapes and axes, initializers, wiring,
names, bytes of the file) must each import and run, or raise a LadderError. Anything else fails the test.
scripts/fuzz_onnx.py drives the same mutator for longer, in child processes, and also counts aborts."""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import AttributeProto, TensorProto, helper, numpy_helper  # noqa: E402

import ladder  # noqa: E402
from ladder.errors import LadderError  # noqa: E402
from ladder.frontends import onnx as lo  # noqa: E402

F = TensorProto.FLOAT
RUN_LIMIT = 1 << 22  # elements in all of a graph's values: larger mutants are imported, not run


def _i64(name, vals):
    return numpy_helper.from_array(np.array(vals, np.int64), name)


def seeds() -> list[onnx.ModelProto]:
    """Small models covering the op families, the shape subgraphs exporters write and the quantized ops."""
    vi = helper.make_tensor_value_info
    rng = np.random.default_rng(0)
    out = []

    def add(nodes, inputs, outputs, inits=(), ms=False, opset=18):
        ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
        out.append(helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)), opset_imports=ops))

    x = [vi("x", F, [2, 4, 8])]
    add([helper.make_node("Softmax", ["x"], ["a"], axis=-1),
         helper.make_node("Gather", ["a", "idx"], ["b"], axis=1),
         helper.make_node("Slice", ["b", "st", "en", "ax", "sp"], ["c"]),
         helper.make_node("Transpose", ["c"], ["d"], perm=[2, 0, 1]),
         helper.make_node("ReduceMean", ["d", "ax"], ["y"], keepdims=1)],
        x, [vi("y", F, None)], [_i64("idx", [3, 0]), _i64("st", [1]), _i64("en", [7]), _i64("ax", [2]),
                                _i64("sp", [2])])
    add([helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("Gather", ["s", "one"], ["n"], axis=0),
         helper.make_node("Range", ["zero", "n", "step"], ["r"]),
         helper.make_node("Unsqueeze", ["r", "ax0"], ["ru"]),
         helper.make_node("Unsqueeze", ["r", "ax1"], ["rv"]),
         helper.make_node("LessOrEqual", ["ru", "rv"], ["causal"]),
         helper.make_node("ConstantOfShape", ["s2"], ["neg"], value=numpy_helper.from_array(np.array([-1e9], np.float32))),
         helper.make_node("Where", ["causal", "zf", "neg"], ["mask"]),
         helper.make_node("MatMul", ["x", "xt"], ["sc"]),
         helper.make_node("Add", ["sc", "mask"], ["sm"]),
         helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
         helper.make_node("IsNaN", ["p"], ["isn"]),
         helper.make_node("Where", ["isn", "zf", "p"], ["y"])],
        x + [vi("xt", F, [2, 8, 4])], [vi("y", F, None)],
        [_i64("one", 1), _i64("zero", 0), _i64("step", 1), _i64("ax0", [0]), _i64("ax1", [1]), _i64("s2", [4, 4]),
         numpy_helper.from_array(np.zeros((1,), np.float32), "zf")])
    add([helper.make_node("Pow", ["x", "two"], ["p"]),
         helper.make_node("ReduceMean", ["p", "axl"], ["m"], keepdims=1),
         helper.make_node("Add", ["m", "eps"], ["me"]),
         helper.make_node("Sqrt", ["me"], ["r"]),
         helper.make_node("Reciprocal", ["r"], ["ir"]),
         helper.make_node("Mul", ["x", "ir"], ["n"]),
         helper.make_node("Split", ["n", "sp"], ["a", "b"], axis=2),
         helper.make_node("Max", ["a", "b"], ["y"]),
         helper.make_node("Expand", ["y", "shp"], ["e"]),
         helper.make_node("CumSum", ["e", "ax2"], ["c"]),
         helper.make_node("Trilu", ["c"], ["t"], upper=0)],
        x, [vi("t", F, None)],
        [numpy_helper.from_array(np.array(2, np.float32), "two"), _i64("axl", [-1]),
         numpy_helper.from_array(np.array(1e-6, np.float32), "eps"), _i64("sp", [4, 4]), _i64("shp", [3, 2, 4, 4]),
         _i64("ax2", 2)])
    k, n, blk = 64, 8, 32
    add([helper.make_node("MatMulNBits", ["a", "b", "s", "z"], ["y"], domain="com.microsoft", K=k, N=n, bits=4,
                          block_size=blk)],
        [vi("a", F, [2, k])], [vi("y", F, None)],
        [numpy_helper.from_array(rng.integers(0, 256, (n, k // blk, blk // 2)).astype(np.uint8), "b"),
         numpy_helper.from_array(rng.random(n * k // blk).astype(np.float32), "s"),
         numpy_helper.from_array(rng.integers(0, 256, (n, 1)).astype(np.uint8), "z")], ms=True)
    add([helper.make_node("DynamicQuantizeLinear", ["a"], ["q", "qs", "qz"]),
         helper.make_node("MatMulIntegerToFloat", ["q", "w", "qs", "ws", "qz"], ["y"], domain="com.microsoft"),
         helper.make_node("SkipLayerNormalization", ["y", "y", "g", "b"], ["o"], domain="com.microsoft",
                          epsilon=1e-5),
         helper.make_node("FastGelu", ["o"], ["f"], domain="com.microsoft")],
        [vi("a", F, [3, 16])], [vi("f", F, None)],
        [numpy_helper.from_array(rng.integers(-64, 64, (16, 8)).astype(np.int8), "w"),
         numpy_helper.from_array(np.array(0.02, np.float32), "ws"),
         numpy_helper.from_array(rng.random(8).astype(np.float32), "g"),
         numpy_helper.from_array(rng.random(8).astype(np.float32), "b")], ms=True)
    add([helper.make_node("QuantizeLinear", ["x", "sc", "zp"], ["q"], axis=1),
         helper.make_node("DequantizeLinear", ["q", "sc", "zp"], ["d"], axis=1),
         helper.make_node("Reshape", ["d", "rs"], ["r"]),
         helper.make_node("Gemm", ["r", "w"], ["y"], transB=1, alpha=0.5)],
        x, [vi("y", F, None)],
        [numpy_helper.from_array(np.full(4, 0.05, np.float32), "sc"),
         numpy_helper.from_array(np.full(4, 3, np.uint8), "zp"), _i64("rs", [-1, 8]),
         numpy_helper.from_array(rng.standard_normal((5, 8)).astype(np.float32), "w")])
    return out


_INTS = [0, 1, -1, 2, 3, 5, 7, -7, 16, 255, 2**31, -2**31, 2**40, 2**63 - 1, -2**63]


def _mutate_attribute(rng, m):
    nodes = [n for n in m.graph.node if n.attribute]
    if not nodes:
        return
    a = rng.choice(rng.choice(nodes).attribute)
    what = rng.randrange(4)
    if what == 0 and a.type == AttributeProto.INT:
        a.i = rng.choice(_INTS)
    elif what == 0 and a.type == AttributeProto.INTS and a.ints:
        a.ints[rng.randrange(len(a.ints))] = rng.choice(_INTS)
    elif what == 1:  # the wrong type
        new = helper.make_attribute(a.name, rng.choice([1.5, "text", [1, 2, 3], [0.5], 7]))
        a.CopyFrom(new)
    elif what == 2 and a.type == AttributeProto.FLOAT:
        a.f = rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30])
    else:
        a.s = rng.choice([b"\xff\xfe", b"none", b""])
        a.type = AttributeProto.STRING


def _mutate_initializer(rng, m):
    inits = list(m.graph.initializer)
    if not inits:
        return
    t = rng.choice(inits)
    arr = numpy_helper.to_array(t).copy()
    what = rng.randrange(4)
    if what == 0 and arr.size:
        flat = arr.reshape(-1)
        v = rng.choice(_INTS)
        if arr.dtype.kind == "f":
            v = rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e30])
        elif arr.dtype.kind in "iu":
            info = np.iinfo(arr.dtype)
            v = min(max(v, info.min), info.max)
        flat[rng.randrange(flat.size)] = v
        new = arr
    elif what == 1:  # a different length
        n = rng.choice([0, 1, 2, 5, 9])
        new = np.resize(arr.reshape(-1), n).astype(arr.dtype) if arr.size else np.zeros(n, arr.dtype)
    elif what == 2:  # another element type
        new = arr.astype(rng.choice([np.int32, np.float32, np.int8, np.uint8, np.float64, np.int64, bool]))
    else:
        new = arr.reshape(-1) if arr.ndim else arr.reshape(1)
    t.CopyFrom(numpy_helper.from_array(new, t.name))


def _mutate_wiring(rng, m):
    nodes = list(m.graph.node)
    n = rng.choice(nodes)
    what = rng.randrange(4)
    if what == 0 and n.input:
        n.input[rng.randrange(len(n.input))] = rng.choice(["", "nowhere", n.output[0]] +
                                                          [v.name for v in m.graph.input])
    elif what == 1 and n.input:
        del n.input[-1]
    elif what == 2:
        n.input.append(rng.choice(["", "x", n.input[0] if n.input else "x"]))
    else:
        n.domain = rng.choice(["", "com.microsoft", "ai.onnx.ml"])


def _mutate_shape(rng, m):
    for v in m.graph.input:
        dims = v.type.tensor_type.shape.dim
        if dims:
            d = dims[rng.randrange(len(dims))]
            choice = rng.choice([0, 1, 3, 2**20, -1, None])
            if choice is None:
                d.dim_param = "n"
            else:
                d.dim_value = choice
            return


def mutate(rng: random.Random, seed_model: onnx.ModelProto) -> bytes:
    m = onnx.ModelProto()
    m.CopyFrom(seed_model)
    for _ in range(rng.choice([1, 1, 2, 3])):
        rng.choice([_mutate_attribute, _mutate_initializer, _mutate_wiring, _mutate_shape])(rng, m)
    data = bytearray(m.SerializeToString())
    if rng.random() < 0.15:  # bytes of the file
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.05:
        data = data[: rng.randrange(len(data))]
    return bytes(data)


def try_one(data: bytes, path: str = "fuzz.onnx", target: str = "ref") -> str:
    """'ok', 'ladder' (a LadderError) or raises what escaped."""
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception:
        m = None
    try:
        if m is None:
            raise LadderError("not parseable")  # a file that is not ONNX: load reports it (tested elsewhere)
        g, w = lo.from_model(m, path=path)
        if sum(math.prod(g.type_of(v).shape) for o in g.ops() for v in [o.result.name]) > RUN_LIMIT:
            return "ok"
        rng = np.random.default_rng(0)
        feeds = []
        for v in g.inputs:
            t = v.type
            if t.dtype.is_float:
                feeds.append(rng.standard_normal(t.shape).astype(t.dtype.np_dtype))
            else:
                feeds.append(rng.integers(0, 2, t.shape).astype(t.dtype.np_dtype))
        if target == "ref":
            ladder.run(g, feeds, w)
        else:
            ladder.compile(g, target, w, cache=False)(feeds)
    except LadderError:
        return "ladder"
    return "ok"


def run_fuzz(n: int, seed: int, budget_s: float | None = None, target: str = "ref"):
    rng = random.Random(seed)
    base = seeds()
    counts = {"inputs": 0, "ok": 0, "ladder": 0, "other": 0}
    others = []
    t0 = time.perf_counter()
    for _ in range(n):
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            break
        data = mutate(rng, rng.choice(base))
        counts["inputs"] += 1
        try:
            counts[try_one(data, target=target)] += 1
        except Exception as e:  # noqa: BLE001  (what the fuzzer looks for)
            counts["other"] += 1
            others.append((type(e).__name__, str(e)[:200], data))
    return counts, others


def test_seeds_import_and_run():
    for m in seeds():
        assert try_one(m.SerializeToString()) == "ok"


def test_mutated_models_import_or_raise_ladder_errors():
    counts, others = run_fuzz(400, seed=1234, budget_s=15.0)
    print("onnx fuzz:", counts)
    assert counts["inputs"] >= 100
    assert not others, [(t, msg) for t, msg, _ in others[:5]]
