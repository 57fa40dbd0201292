"""legalize-types, fuse, quantize-activations and quantize-weights: differential tests against the logical graph,
the BitNet integer path, epilogue folding, printing, the interpreter's Session, verify errors and the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import ladder
from ladder import Builder, weights
from ladder.cli import main
from ladder.interpreter import Session
from ladder.ir import Graph
from ladder.models import SIZES, bitnet_decoder
from ladder.packing import PACKINGS, Packing, packings_for
from ladder.passes import PASSES, PassManager, parse_pipeline
from ladder.passes.lowbit import default_pipeline, weight_values
from ladder.target import get_target
from ladder.types import DTYPES

ROOT = Path(__file__).resolve().parent.parent
FFN = ROOT / "examples" / "ffn.lir"
BITLINEAR = ROOT / "examples" / "bitlinear.lir"
MLP = ROOT / "examples" / "int4_mlp.lir"

LOWBIT = ["i4", "u4", "i2", "u2", "i1", "u1", "ternary", "nf4", "fp4"]
INTEGER_LOWBIT = ["i4", "u4", "i2", "u2", "i1", "u1", "ternary"]
DT_PACKINGS = [(dt, p.name) for dt in LOWBIT for p in packings_for(DTYPES[dt])]
INT_PACKINGS = [(dt, p.name) for dt in INTEGER_LOWBIT for p in packings_for(DTYPES[dt])]
# A fixed target for the structural checks, so that the tests do not depend on the host CPU.
TARGET = "cpu:avx2"


def kinds(g: Graph) -> list[str]:
    return [op.kind for op in g.ops()]


def ops_of(g: Graph, kind: str):
    return [op for op in g.ops() if op.kind == kind]


def producer(g: Graph, name: str):
    node = g.producer(name)
    return None if node is None else g.op(node)


def legalize_fuse(g: Graph, dt: str | None = None, packing: str | None = None, target: str = TARGET,
                  block_scales: bool | None = None) -> Graph:
    """legalize-types + fuse; with dt and packing, that packing is forced (and, unless block_scales says
    otherwise, block scales are off, so that the layout is exactly the packing asked for)."""
    prefer = f",prefer={dt}:{packing}" if dt else ""
    if block_scales is None:
        block_scales = not dt
    bs = "" if block_scales else ",block_scales=false"
    return PassManager(f"legalize-types{{target={target}{prefer}{bs}}},fuse").run(g)


def float_inputs(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(v.type.shape).astype(v.type.dtype.np_dtype) for v in g.inputs}


def assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k], equal_nan=True), f"{k}: max diff {np.max(np.abs(a[k] - b[k]))}"


def assert_runs_like(out: Graph, g: Graph, weight_seed: int, inputs: dict[str, np.ndarray] | None = None) -> None:
    """``out`` gives exactly ``g``'s results on ``inputs`` (default ``float_inputs(g)``) with
    ``weights.random(g, weight_seed)``."""
    w = weights.random(g, weight_seed)
    if inputs is None:
        inputs = float_inputs(g)
    assert_same(ladder.run(out, inputs, w), ladder.run(g, inputs, w))


# -- differential tests: matmul(x, dequant(w, s[, z])) --------------------------------------------------------

# (name, x shape, transpose_b, N, scale kind, group, zero_mode, x dtype)
# scale kind: "tensor" (f32[1]), "channel" (one per output channel), "group" (group-wise along K)
SHAPES = [
    ("tensor_tb", (3, 37), True, 5, "tensor", 0, "none", "f32"),
    ("tensor_nt", (3, 37), False, 5, "tensor", 0, "none", "f32"),
    ("channel_tb", (3, 37), True, 5, "channel", 0, "none", "f32"),
    ("channel_nt", (3, 37), False, 5, "channel", 0, "none", "f32"),
    ("group8_tb_original", (3, 37), True, 6, "group", 8, "original", "f32"),  # 8 does not divide 37
    ("group16_nt_rescale", (3, 37), False, 6, "group", 16, "rescale", "f32"),
    ("group32_tb_rescale_batch", (2, 3, 64), True, 7, "group", 32, "rescale", "f32"),
    ("channel_tb_original", (4, 40), True, 3, "channel", 0, "original", "f32"),
    ("k1_tb", (2, 1), True, 4, "tensor", 0, "none", "f32"),
    ("k1_nt_channel", (2, 1), False, 4, "channel", 0, "none", "f32"),
    ("n1_m1_tb", (1, 16), True, 1, "channel", 0, "none", "f32"),
    ("n1_nt_group", (1, 37), False, 1, "group", 5, "none", "f32"),
    ("batch_nt_channel", (2, 2, 9), False, 12, "channel", 0, "none", "f32"),
    ("k200_tb_group64", (2, 200), True, 3, "group", 64, "none", "f32"),  # more than one 160-trit block
    ("f16_tb_channel", (3, 24), True, 5, "channel", 0, "none", "f16"),
    ("f16_tb_group32", (3, 70), True, 5, "group", 32, "none", "f16"),
    ("group4_tb", (2, 37), True, 3, "group", 4, "none", "f32"),  # a block of crumb, partial last group
    ("group2_tb_original", (2, 9), True, 3, "group", 2, "original", "f32"),  # a block of nib
    ("group160_tb", (2, 321), True, 2, "group", 160, "none", "f32"),  # a block of trit5
]


def build_dequant_matmul(dt: str, shape, name="dq"):
    _, xs, tb, n, kind, group, zmode, xdt = shape
    k = xs[-1]
    b = Builder(name)
    x = b.input("x", f"{xdt}[{', '.join(map(str, xs))}]")
    wshape = (n, k) if tb else (k, n)
    kaxis = 1 if tb else 0
    w = b.param("w", f"{dt}[{wshape[0]}, {wshape[1]}]")
    if kind == "tensor":
        sshape = (1,)
    elif kind == "channel":
        sshape = (n, 1) if tb else (1, n)
    else:
        ng = math.ceil(k / group)
        sshape = (n, ng) if tb else (ng, n)
    s = b.param("s", f"f32[{', '.join(map(str, sshape))}]")
    operands = [w, s]
    if zmode != "none":
        operands.append(b.param("z", f"f32[{', '.join(map(str, sshape))}]"))
    attrs = dict(axis=kaxis, group=group if kind == "group" else 0, zero_mode=zmode, dtype=xdt)
    d = b.dequant(*operands, **attrs)
    return b.build(b.matmul(x, d, transpose_b=tb))


@pytest.mark.parametrize("shape", SHAPES, ids=[s[0] for s in SHAPES])
@pytest.mark.parametrize("dt, packing", DT_PACKINGS, ids=[f"{d}-{p}" for d, p in DT_PACKINGS])
def test_legalize_fuse_is_exact_for_every_dtype_and_packing(dt, packing, shape):
    g = build_dequant_matmul(dt, shape)
    w = weights.random(g, 7)
    inputs = float_inputs(g, 3)
    ref = ladder.run(g, inputs, w)

    fused = legalize_fuse(g, dt, packing)
    assert sorted(kinds(fused)) == sorted(["param"] * len(ops_of(g, "param")) + ["pack", "qmatmul"])
    (qm,) = ops_of(fused, "qmatmul")
    (pk,) = ops_of(fused, "pack")
    assert qm.operands[1] == pk.name, "qmatmul must read the packed tensor"
    wt = fused.type_of(qm.operands[1])
    assert wt.layout == packing and wt.dtype.name == dt and wt.shape == g.type_of("w").shape
    assert qm.name == g.outputs[0]
    attrs = ladder.ops.OPS["qmatmul"].full_attrs(qm.attr)
    assert attrs["transpose_b"] == shape[2] and attrs["zero_mode"] == shape[6]
    assert attrs["group"] == (shape[5] if shape[4] == "group" else 0)

    out = ladder.run(fused, inputs, w)
    assert_same(out, ref)

    # legalize-types alone (pack + unpack, unfused) computes the same too
    legal = PassManager(f"legalize-types{{target={TARGET},prefer={dt}:{packing},block_scales=false}}").run(g)
    assert kinds(legal).count("pack") == 1 and kinds(legal).count("unpack") == 1
    assert_same(ladder.run(legal, inputs, w), ref)

    # with block scales allowed (the default), the result is exact too; when the dequant's groups run along
    # the packed axis and match a block, the scales travel inside w and qmatmul takes no scale operand
    bfused = legalize_fuse(g, dt, packing, block_scales=True)
    (bqm,) = ops_of(bfused, "qmatmul")
    (bpk,) = ops_of(bfused, "pack")
    blocked = "+" in bfused.type_of(bpk.name).layout
    along_k_last = shape[2] and shape[4] == "group"
    # an explicit prefer= is kept as it is: scales go inside only when that packing's block is the group
    forced = PACKINGS[packing]
    assert blocked == (along_k_last and forced.block == shape[5] and not forced.planes)
    if blocked:
        assert bqm.operands == ("x", bpk.name)
        assert bpk.operands[1:] == (("s", "z") if shape[6] != "none" else ("s",))
        assert bfused.type_of(bpk.name).layout.endswith("z") == (shape[6] != "none")
    else:
        assert bfused == fused
    assert_same(ladder.run(bfused, inputs, w), ref)


def test_dtype_packing_table_covers_every_packing():
    # every packing is exercised by the differential test above, and every low-bit type has several
    assert {p for _, p in DT_PACKINGS} == set(PACKINGS) - {"q8"}  # i8 only as a Q8_0 file's blocks: test_gguf
    assert {d for d, _ in DT_PACKINGS} == set(LOWBIT)
    assert len(DT_PACKINGS) >= 30


@pytest.mark.parametrize("dt", LOWBIT)
@pytest.mark.parametrize("target", ["cpu:generic", "cpu:avx2", "cpu:avx512", "lut", "cpu"])
def test_legalize_uses_the_targets_first_preference(dt, target):
    g = build_dequant_matmul(dt, SHAPES[0])
    fused = legalize_fuse(g, target=target)
    (pk,) = ops_of(fused, "pack")
    t = get_target(target)
    assert pk.result.type.layout == t.preferred_packings(DTYPES[dt])[0]
    assert_runs_like(fused, g, 1)


def test_prefer_overrides_only_the_named_type():
    b = Builder()
    x = b.input("x", "f32[2, 64]")
    y1 = b.matmul(x, b.dequant(b.param("a", "ternary[8, 64]"), b.param("sa", "f32[1]")), transpose_b=True)
    y2 = b.matmul(x, b.dequant(b.param("c", "i4[8, 64]"), b.param("sc", "f32[1]")), transpose_b=True)
    g = b.build(y1, y2)
    out = PassManager("legalize-types{target=cpu:avx2,prefer=ternary:trit5}").run(g)
    layouts = {op.operands[0]: op.result.type.layout for op in ops_of(out, "pack")}
    assert layouts == {"a": "trit5", "c": "nib32"}
    out = PassManager("legalize-types{target=cpu:avx2,prefer=ternary:planes;i4:nib}").run(g)
    assert {op.operands[0]: op.result.type.layout for op in ops_of(out, "pack")} == {"a": "planes", "c": "nib"}


@pytest.mark.parametrize("prefer", [
    "ternary", "f99:nib", "ternary:nib", "i4:crumb", "i4:nope", "ternary:",
])
def test_bad_prefer_is_a_pipeline_error(prefer):
    g = build_dequant_matmul("ternary", SHAPES[0])
    g = build_dequant_matmul("i4", SHAPES[0]) if prefer.startswith("i4") else g
    with pytest.raises(ladder.LadderError):
        PassManager(f"legalize-types{{target=cpu:avx2,prefer={prefer}}}").run(g)


def test_bad_target_is_an_error():
    g = build_dequant_matmul("ternary", SHAPES[0])
    with pytest.raises(ladder.LadderError, match="target"):
        PassManager("legalize-types{target=gpu}").run(g)


def test_legalize_leaves_activations_and_float_weights_alone():
    # a low-bit graph input is not a weight: it is not packed; neither are float params
    b = Builder()
    x = b.input("x", "f32[2, 16]")
    wi = b.input("wi", "i4[4, 16]")
    y = b.matmul(x, b.dequant(wi, b.param("s", "f32[1]")), transpose_b=True)
    y2 = b.matmul(x, b.param("wf", "f32[16, 3]"))
    g = b.build(y, y2)
    out = legalize_fuse(g)
    assert "pack" not in kinds(out) and "qmatmul" in kinds(out)  # fused, reading the unpacked input
    (qm,) = ops_of(out, "qmatmul")
    assert qm.operands[1] == "wi"
    assert "matmul" in kinds(out)
    assert_runs_like(out, g, 0, {"x": np.ones((2, 16), np.float32), "wi": np.arange(64).reshape(4, 16) % 16 - 8})


def test_legalize_packs_a_weight_once_for_several_users():
    b = Builder()
    x = b.input("x", "f32[2, 16]")
    w = b.param("w", "ternary[4, 16]")
    s = b.param("s", "f32[1]")
    y1 = b.matmul(x, b.dequant(w, s), transpose_b=True)
    y2 = b.matmul(x, b.dequant(w, s, dtype="f32"), transpose_b=True, name="y2")
    g = b.build(y1, y2)
    out = legalize_fuse(g)
    assert kinds(out).count("pack") == 1 and kinds(out).count("qmatmul") == 2
    (pk,) = ops_of(out, "pack")
    assert all(q.operands[1] == pk.name for q in ops_of(out, "qmatmul"))
    # legalizing twice does not pack again
    again = legalize_fuse(out)
    assert kinds(again).count("pack") == 1
    assert_runs_like(out, g, 2)


def test_tied_embedding_and_head_the_head_gets_the_block_packing_the_gather_its_rows():
    """A GGUF model's tied token_embd: its codes are gathered (the embedding, then dequantized) and dequantized
    whole by its block scales (the head). The head's dequant reads a packing with the scales inside (what the
    block kernels take: nib16+f16 for i4 in blocks of 32) and the gather reads rows of that packed weight,
    unpacked after (no decoded copy of the table); both compute what the unlegalized graph computes, on ref and
    cpu."""
    b = Builder()
    tok = b.input("tok", "i32[3]")
    x = b.input("x", "f32[1, 64]")
    w = b.param("w", "i4[10, 64]")
    s = b.param("s", "f16[10, 2]")
    rows = b.dequant(b.gather(w, tok), b.gather(s, tok), axis=-1, group=32, dtype="f32")
    head = b.matmul(x, b.dequant(w, s, axis=-1, group=32, dtype="f32"), transpose_b=True, name="head")
    g = b.build(rows, head)
    out = PassManager("legalize-types{target=cpu},fuse").run(g)
    (pk,) = ops_of(out, "pack")
    assert pk.attr["layout"] == "nib16+f16" and list(pk.operands) == ["w", "s"]
    (ga,) = [op for op in ops_of(out, "gather") if op.operands[1] == "tok" and out.type_of(op.operands[0]).dtype.name == "i4"]
    assert ga.operands[0] == pk.name and out.type_of(ga.results[0].name).layout == "nib16+f16"  # packed rows
    (up,) = [op for op in ops_of(out, "unpack") if op.operands[0] == ga.results[0].name]
    assert out.type_of(up.results[0].name) == g.type_of(g.op(g.producer(rows.name)).operands[0])
    (q,) = ops_of(out, "qmatmul")
    assert q.operands[1] == pk.name
    wts = weights.random(g, 3)
    inputs = {"tok": np.array([0, 9, 4], np.int32), "x": np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)}
    want = ladder.run(g, inputs, wts)
    assert_same(ladder.run(out, inputs, wts), want)
    got = ladder.compile(g, "cpu", wts)(inputs)
    np.testing.assert_array_equal(got[g.outputs[0]], want[g.outputs[0]])
    np.testing.assert_allclose(got["head"], want["head"], rtol=1e-5, atol=1e-5)


def test_fuse_leaves_unfusable_dequants_alone():
    # the dequant's axis is not K (per-K-column scales with transpose_b): no qmatmul, same result
    b = Builder()
    x = b.input("x", "f32[2, 16]")
    w = b.param("w", "i4[4, 16]")
    d = b.dequant(w, b.param("s", "f32[1, 16]"), axis=0, group=0)
    g = b.build(b.matmul(x, d, transpose_b=True))
    out = legalize_fuse(g)
    assert "qmatmul" not in kinds(out) and "matmul" in kinds(out) and "unpack" in kinds(out)
    assert_runs_like(out, g, 3)


# -- the integer path: BitNet's BitLinear ----------------------------------------------------------------------

def build_bitlinear(dt: str, m=3, k=37, n=6, tb=True, batch=()):
    b = Builder("bitlinear")
    xs = batch + (m, k)
    x = b.input("x", f"f32[{', '.join(map(str, xs))}]")
    xq, xsc = b.quantize(x, scheme="absmax", dtype="i8")
    w = b.param("w", f"{dt}[{n}, {k}]" if tb else f"{dt}[{k}, {n}]")
    ws = b.param("ws", "f32[1]")
    acc = b.matmul(xq, w, transpose_b=tb)
    y = b.mul(b.mul(b.cast(acc, dtype="f32"), xsc), ws)
    return b.build(y)


@pytest.mark.parametrize("tb", [True, False], ids=["tb", "nt"])
@pytest.mark.parametrize("dt, packing", INT_PACKINGS, ids=[f"{d}-{p}" for d, p in INT_PACKINGS])
def test_bitlinear_chain_fuses_into_qmatmul_i8_bit_exact(dt, packing, tb):
    g = build_bitlinear(dt, tb=tb)
    w = weights.random(g, 11)
    inputs = float_inputs(g, 5)
    ref = ladder.run(g, inputs, w)
    out = legalize_fuse(g, dt, packing)
    assert sorted(kinds(out)) == sorted(["param", "param", "quantize", "pack", "qmatmul_i8"])
    (qm,) = ops_of(out, "qmatmul_i8")
    (pk,) = ops_of(out, "pack")
    (qz,) = ops_of(out, "quantize")
    assert qm.operands == (qz.results[0].name, pk.name, qz.results[1].name, "ws")
    assert out.type_of(pk.name).layout == packing
    assert ladder.ops.OPS["qmatmul_i8"].full_attrs(qm.attr)["transpose_b"] == tb
    assert qm.name == g.outputs[0]
    assert_same(ladder.run(out, inputs, w), ref)


@pytest.mark.parametrize("m, k, n, batch", [(1, 1, 1, ()), (1, 160, 2, ()), (2, 5, 3, (2,)), (4, 321, 9, ())])
def test_bitlinear_odd_shapes(m, k, n, batch):
    g = build_bitlinear("ternary", m, k, n, batch=batch)
    w = weights.random(g, 4)
    inputs = float_inputs(g, 1)
    for packing in ("crumb", "crumb16", "trit5", "planes"):
        out = legalize_fuse(g, "ternary", packing)
        assert "qmatmul_i8" in kinds(out) and "matmul" not in kinds(out)
        assert_same(ladder.run(out, inputs, w), ladder.run(g, inputs, w))


def test_int_chain_is_not_fused_when_an_intermediate_is_used_elsewhere():
    b = Builder()
    x = b.input("x", "f32[2, 16]")
    xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
    acc = b.matmul(xq, b.param("w", "ternary[4, 16]"), transpose_b=True)
    f = b.cast(acc, dtype="f32")
    y = b.mul(b.mul(f, xs), b.param("ws", "f32[1]"))
    g = b.build(y, f)  # the cast is also an output
    out = legalize_fuse(g)
    assert "qmatmul_i8" not in kinds(out) and "matmul" in kinds(out)
    assert_runs_like(out, g, 0)


def test_int_chain_with_swapped_mul_operands_is_not_fused():
    # mul(s, f) instead of mul(f, s): the pattern demands the chain value first
    b = Builder()
    x = b.input("x", "f32[2, 16]")
    xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
    acc = b.matmul(xq, b.param("w", "ternary[4, 16]"), transpose_b=True)
    y = b.mul(b.mul(xs, b.cast(acc, dtype="f32")), b.param("ws", "f32[1]"))
    g = b.build(y)
    out = legalize_fuse(g)
    assert_runs_like(out, g, 0)


def test_bitlinear_example_fuses_bit_exact():
    g = ladder.parse(BITLINEAR.read_text())
    w = weights.random(g, 0)
    inputs = float_inputs(g, 2)
    ref = ladder.run(g, inputs, w)
    for target in ("cpu:generic", "cpu:avx2", "cpu:avx512", "lut"):
        out = legalize_fuse(g, target=target)
        assert kinds(out).count("qmatmul_i8") == 1 and "matmul" not in kinds(out)
        assert {"cast", "mul", "unpack"}.isdisjoint(kinds(out))
        (qm,) = ops_of(out, "qmatmul_i8")
        assert out.type_of(qm.operands[1]).layout == get_target(target).preferred_packings(DTYPES["ternary"])[0]
        assert qm.name == "y"
        assert_same(ladder.run(out, inputs, w), ref)


def test_int4_mlp_example_fuses_exact():
    g = ladder.parse(MLP.read_text())
    w = weights.random(g, 0)
    inputs = float_inputs(g, 2)
    out = legalize_fuse(g)
    assert kinds(out).count("qmatmul") == 3 and "matmul" not in kinds(out) and "dequant" not in kinds(out)
    # silu(hg) is folded into the gate qmatmul
    epis = sorted(tuple(ladder.ops.OPS["qmatmul"].full_attrs(q.attr)["epilogue"]) for q in ops_of(out, "qmatmul"))
    assert epis == [(), (), ("silu",)]
    assert_same(ladder.run(out, inputs, w), ladder.run(g, inputs, w))


# -- epilogues -----------------------------------------------------------------------------------------------------

def _float_mm(b, x):
    return b.matmul(x, b.dequant(b.param("w", "i4[6, 16]"), b.param("s", "f32[6, 1]")), transpose_b=True)


def _int_mm(b, x):
    xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
    acc = b.matmul(xq, b.param("w", "ternary[6, 16]"), transpose_b=True)
    return b.mul(b.mul(b.cast(acc, dtype="f32"), xs), b.param("ws", "f32[1]"))


PATHS = {"qmatmul": _float_mm, "qmatmul_i8": _int_mm}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("acts", [("relu2",), ("silu",), ("gelu",), ("relu", "neg"), ("sigmoid", "tanh", "exp")])
def test_epilogues_fold(path, acts):
    b = Builder()
    x = b.input("x", "f32[3, 16]")
    y = PATHS[path](b, x)
    for a in acts:
        y = getattr(b, a)(y)
    g = b.build(y)
    out = legalize_fuse(g)
    (qm,) = ops_of(out, path)
    assert tuple(qm.attr["epilogue"]) == acts
    assert not set(acts) & set(kinds(out))
    assert qm.name == g.outputs[0]
    assert_runs_like(out, g, 5, float_inputs(g, 5))


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("case", ["output", "two_users", "gelu_tanh", "not_unary"])
def test_epilogues_not_folded(path, case):
    b = Builder()
    x = b.input("x", "f32[3, 16]")
    y = PATHS[path](b, x)
    if case == "output":
        a = b.relu2(y)
        g = b.build(a, y)
    elif case == "two_users":
        a = b.add(b.silu(y), b.relu(y))
        g = b.build(a)
    elif case == "gelu_tanh":
        a = b.gelu(y, approximate="tanh")
        g = b.build(a)
    else:
        a = b.add(y, y)
        g = b.build(a)
    out = legalize_fuse(g)
    (qm,) = ops_of(out, path)
    assert tuple(qm.attr.get("epilogue", ())) == ()
    assert qm.name == y.name
    assert_runs_like(out, g, 5, float_inputs(g, 5))


def test_fuse_without_epilogues():
    b = Builder()
    x = b.input("x", "f32[3, 16]")
    g = b.build(b.relu2(_float_mm(b, x)))
    out = PassManager(f"legalize-types{{target={TARGET}}},fuse{{epilogues=false}}").run(g)
    assert "relu2" in kinds(out) and "qmatmul" in kinds(out)
    assert "epilogue" not in ops_of(out, "qmatmul")[0].attr


# -- the BitNet decoder ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def decoder():
    cfg = SIZES["tiny"]
    g = bitnet_decoder(cfg, 2)
    w = weights.random(g, 0)
    rng = np.random.default_rng(0)
    inputs = {"tokens": np.array([3, 200], np.int32), "pos": np.array([4, 5], np.int32),
              "start": np.array([4], np.int32), "kv_len": np.array([6], np.int32)}
    for v in g.inputs:
        if v.name.startswith(("k_cache", "v_cache")):
            inputs[v.name] = rng.standard_normal(v.type.shape).astype(np.float32)
    return cfg, g, w, inputs


@pytest.mark.parametrize("target", ["cpu", "cpu:generic", "lut"])
def test_bitnet_decoder_default_pipeline_is_bit_exact(decoder, target):
    cfg, g, w, inputs = decoder
    ref = ladder.run(g, inputs, w)
    out = PassManager(default_pipeline(target)).run(g)
    assert_same(ladder.run(out, inputs, w), ref)

    qms = ops_of(out, "qmatmul_i8")
    assert len(qms) == 7 * cfg.layers
    for q in qms:
        wt = out.type_of(q.operands[1])
        assert wt.dtype.name == "ternary" and wt.layout == get_target(target).preferred_packings(wt.dtype)[0]
        assert producer(out, q.operands[1]).kind == "pack"
    # no integer matmul on ternary weights is left, nor any unpack
    for op in ops_of(out, "matmul"):
        assert all(out.type_of(o).dtype.name != "ternary" for o in op.operands)
    assert "unpack" not in kinds(out)
    # the squared-ReLU of the gate is folded into its kernel
    assert sum(tuple(q.attr.get("epilogue", ())) == ("relu2",) for q in qms) == cfg.layers
    assert ladder.parse(str(out)) == out


# -- printing, parsing, Session --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dt, packing", DT_PACKINGS, ids=[f"{d}-{p}" for d, p in DT_PACKINGS])
def test_legalized_graph_prints_reparses_and_notes_storage(dt, packing):
    g = build_dequant_matmul(dt, SHAPES[4])  # N=6, K=37, group-wise with zeros
    for fuse in (False, True):
        out = PassManager(f"legalize-types{{target={TARGET},prefer={dt}:{packing},block_scales=false}}"
                          + (",fuse" if fuse else "")).run(g)
        text = str(out)
        p = PACKINGS[packing]
        storage = p.storage_shape((6, 37), DTYPES[dt])
        bpw = 8 * p.row_bytes(37, DTYPES[dt]) / 37
        note = f"# {packing}: u8[{storage[0]}, {storage[1]}], {bpw:.2f} bits/weight"
        assert note in text
        assert f"{dt}<{packing}>[6, 37]" in text
        g2 = ladder.parse(text)
        assert g2 == out and str(g2) == text
        assert_runs_like(g2, g, 1)


@pytest.mark.parametrize("packing, k, note", [
    ("crumb32", 2560, "crumb32: u8[4, 640], 2.00 bits/weight"),
    ("crumb", 37, "crumb: u8[4, 10], 2.16 bits/weight"),
    ("trit5", 160, "trit5: u8[4, 32], 1.60 bits/weight"),
    ("trit5", 37, "trit5: u8[4, 32], 6.92 bits/weight"),
    ("planes", 16, "planes: u8[4, 4], 2.00 bits/weight"),
])
def test_storage_note_by_hand(packing, k, note):
    b = Builder()
    x = b.input("x", f"f32[1, {k}]")
    g = b.build(b.matmul(x, b.dequant(b.param("w", f"ternary[4, {k}]"), b.param("s", "f32[1]")), transpose_b=True))
    out = legalize_fuse(g, "ternary", packing)
    assert note in str(out)


@pytest.mark.parametrize("block_scales", [True, False])
def test_session_packs_params_once(monkeypatch, block_scales):
    g = legalize_fuse(ladder.parse(MLP.read_text()), target="cpu:avx512", block_scales=block_scales)
    w = weights.random(g, 3)
    packs = ops_of(g, "pack")
    assert len(packs) == 3
    # group 32 along K is a block of nib16: with block scales the scales are packed with the codes
    assert all(("+" in pk.result.type.layout) == block_scales for pk in packs)
    calls = []
    orig = Packing.pack

    def counting(self, values, dt):
        calls.append(self.name)
        return orig(self, values, dt)

    monkeypatch.setattr(Packing, "pack", counting)
    s = Session(g, w)
    assert len(calls) == 3
    # the weight-only values are exactly what Session precomputes, packed storage included
    assert set(s.fixed) == weight_values(g)
    inputs = float_inputs(g, 0)
    r1 = s.run(inputs)
    r2 = s.run(inputs)
    assert len(calls) == 3, "running must not pack again"
    assert_same(r1, r2)
    r3 = s.run(float_inputs(g, 1))
    assert not np.array_equal(r1["y"], r3["y"])
    monkeypatch.undo()

    for pk in packs:
        t = pk.result.type
        arr = s.fixed[pk.name]
        assert arr.dtype == np.uint8 and arr.shape == t.storage_shape
        args = [w[producer(g, o).attr["ref"]] for o in pk.operands]
        assert np.array_equal(arr, t.packing.pack(args[0], t.dtype, *args[1:]))
        assert np.array_equal(t.packing.unpack(arr, t.shape, t.dtype), args[0])
    ref = ladder.parse(MLP.read_text())
    assert_same(r1, ladder.run(ref, inputs, w))


def test_session_keep_exposes_packed_storage():
    g = legalize_fuse(ladder.parse(FFN.read_text()), target="cpu:avx2")
    w = weights.random(g, 0)
    env = Session(g, w).run(float_inputs(g), keep=True)
    assert env["wu.packed"].dtype == np.uint8 and env["wu.packed"].shape == (6912, 640)
    assert env["wd.packed"].shape == (2560, 1728)


# -- quantize-activations ----------------------------------------------------------------------------------------

def qmatmul_graph(dt="ternary", kind="tensor", tb=True, m=4, k=64, n=8, epilogue=(), zero=False, batch=()):
    b = Builder()
    x = b.input("x", f"f32[{', '.join(map(str, batch + (m, k)))}]")
    w = b.param("w", f"{dt}[{n}, {k}]" if tb else f"{dt}[{k}, {n}]")
    kaxis = 1 if tb else 0
    group = 0
    if kind == "tensor":
        sshape = (1,)
    elif kind == "channel":
        sshape = (n, 1) if tb else (1, n)
    else:
        group = 16
        sshape = (n, k // 16) if tb else (k // 16, n)
    s = b.param("s", f"f32[{sshape[0]}, {sshape[1]}]" if len(sshape) == 2 else "f32[1]")
    ops = [x, b.pack(w, layout=get_target(TARGET).preferred_packings(DTYPES[dt])[0]), s]
    zm = "none"
    if zero:
        ops.append(b.param("z", f"f32[{', '.join(map(str, sshape))}]"))
        zm = "original"
    y = b.qmatmul(*ops, transpose_b=tb, axis=kaxis, group=group, zero_mode=zm, epilogue=list(epilogue))
    return b.build(y)


def act_quant_bound(x: np.ndarray, wdq: np.ndarray) -> np.ndarray:
    """|x @ W - (xq * sx) @ W| <= sum_k |x_k - xq_k sx| |W[k, n]|, and per-token absmax int8 rounds each
    x_k to within half a step, sx / 2 = max|x_row| / 254 (x * 127/m is exact to an ulp, so rint is off by
    at most 0.5 + a few ulps; the 1.01 factor and the 1e-5 term absorb that and float32 accumulation)."""
    half_step = np.max(np.abs(x), axis=-1, keepdims=True).astype(np.float64) / 254.0
    return 1.01 * half_step * np.abs(wdq).sum(axis=0)[None, :] + 1e-5


@pytest.mark.parametrize("dt", INTEGER_LOWBIT)
@pytest.mark.parametrize("kind, tb", [("tensor", True), ("tensor", False), ("channel", True), ("channel", False)])
def test_quantize_activations_uses_the_integer_path(dt, kind, tb):
    g = qmatmul_graph(dt, kind, tb, epilogue=())
    out = PassManager("quantize-activations").run(g)
    assert "qmatmul" not in kinds(out)
    (qm,) = ops_of(out, "qmatmul_i8")
    (qz,) = ops_of(out, "quantize")
    assert qz.attr["scheme"] == "absmax" and qz.attr["dtype"].name == "i8" and qz.operands == ("x",)
    assert qm.operands[0] == qz.results[0].name and qm.operands[2] == qz.results[1].name
    assert out.type_of(qm.operands[1]).layout  # still reads the packed weight
    assert qm.name == g.outputs[0]

    w = weights.random(g, 9)
    x = float_inputs(g, 9)["x"]
    ref = ladder.run(g, {"x": x}, w)[g.outputs[0]]
    got = ladder.run(out, {"x": x}, w)[g.outputs[0]]
    s = w["s"].astype(np.float64)
    wv = w["w"].astype(np.float64) * (s if s.size > 1 else s.reshape(()))
    wkn = wv.T if tb else wv  # [K, N]
    assert got.dtype == np.float32 and got.shape == ref.shape
    bound = act_quant_bound(x, wkn)
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    assert np.all(err <= bound), float(np.max(err - bound))
    assert not np.array_equal(got, ref)  # it does change numerics
    # and the integer graph then equals a hand-computed int8 absmax x int matmul
    m = np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), np.float32(1e-5))
    xq = np.clip(np.rint(x * (np.float32(127) / m)), -128, 127).astype(np.int64)
    acc = xq @ (w["w"].astype(np.int64).T if tb else w["w"].astype(np.int64))
    ws = w["s"].reshape(-1) if kind == "channel" else w["s"]
    hand = acc.astype(np.float32) * (m / np.float32(127)) * ws
    np.testing.assert_allclose(got, hand, rtol=1e-6, atol=1e-6)


def test_quantize_activations_keeps_the_epilogue_and_batch_dims():
    g = qmatmul_graph("i4", "channel", True, m=3, epilogue=("relu2",), batch=(2,))
    out = PassManager("quantize-activations").run(g)
    (qm,) = ops_of(out, "qmatmul_i8")
    assert tuple(qm.attr["epilogue"]) == ("relu2",)
    w = weights.random(g, 1)
    x = float_inputs(g, 1)
    ref = ladder.run(g, x, w)[g.outputs[0]]
    got = ladder.run(out, x, w)[g.outputs[0]]
    assert got.shape == (2, 3, 8)
    assert np.all(got >= 0)
    # relu2 at most doubles the relative error of a value; check against the un-squared difference
    np.testing.assert_allclose(np.sqrt(got), np.sqrt(ref), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("dt, kind, zero", [("nf4", "tensor", False), ("fp4", "channel", False),
                                            ("i4", "group", False), ("ternary", "group", False),
                                            ("u4", "channel", True)])
def test_quantize_activations_leaves_other_qmatmuls_alone(dt, kind, zero):
    g = qmatmul_graph(dt, kind, True, zero=zero)
    out = PassManager("quantize-activations").run(g)
    assert out == g
    assert "qmatmul_i8" not in kinds(out) and "quantize" not in kinds(out)


def test_quantize_activations_on_fused_ffn_example():
    g = ladder.parse(FFN.read_text())
    fused = legalize_fuse(g)
    out = PassManager("quantize-activations").run(fused)
    assert kinds(out).count("qmatmul_i8") == 2 and "qmatmul" not in kinds(out)
    (first,) = [q for q in ops_of(out, "qmatmul_i8") if q.attr.get("epilogue")]
    assert tuple(first.attr["epilogue"]) == ("relu2",)


def test_pass_numerics_flags_and_default_pipeline():
    passes = parse_pipeline(default_pipeline("cpu"))
    names = [p.name for p in passes]
    assert names == ["canonicalize", "legalize-types", "fuse", "lut", "canonicalize"]
    assert "quantize-activations" not in names and "quantize-weights" not in names
    assert all(p.changes_numerics is False for p in passes)
    assert PASSES["quantize-activations"].changes_numerics is True
    assert PASSES["quantize-weights"].changes_numerics is True
    assert PASSES["legalize-types"].changes_numerics is False and PASSES["fuse"].changes_numerics is False
    assert "target=lut" in default_pipeline("lut")


# -- quantize-weights ---------------------------------------------------------------------------------------------

def float_mlp(tb: bool, k=64, h=96, n=40):
    b = Builder("mlp")
    x = b.input("x", f"f32[4, {k}]")
    w1 = b.param("w1", f"f32[{h}, {k}]" if tb else f"f32[{k}, {h}]")
    w2 = b.param("w2", f"f32[{n}, {h}]" if tb else f"f32[{h}, {n}]")
    hdn = b.relu(b.matmul(x, w1, transpose_b=tb))
    return b.build(b.matmul(hdn, w2, transpose_b=tb))


def _steps(w_kn: np.ndarray, dt: str, group: int, zero_mode: str) -> np.ndarray:
    """One quantization step per element of a weight [K, N] (groups of ``group`` along K), from the
    recipe in ladder.quant: rtn without zeros: |absmax| / |qmin|; with zeros: (max - min) / qmax over a
    range widened to hold 0."""
    k = w_kn.shape[0]
    out = np.zeros_like(w_kn, dtype=np.float64)
    qmin, qmax = DTYPES[dt].value_range
    for g0 in range(0, k, group):
        blk = w_kn[g0:g0 + group].astype(np.float64)
        if zero_mode == "none":
            step = np.max(np.abs(blk), axis=0) / abs(qmin)
        else:
            step = (np.maximum(blk.max(axis=0), 0) - np.minimum(blk.min(axis=0), 0)) / qmax
        out[g0:g0 + group] = step
    return out


@pytest.mark.parametrize("opts, dt, group, zero_mode", [
    ("dtype=i4,group=32", "i4", 32, "none"),
    ("dtype=u4,group=32,zero_mode=original", "u4", 32, "original"),
    ("dtype=i2,group=16", "i2", 16, "none"),
    ("dtype=i4,group=24", "i4", 24, "none"),  # 24 does not divide 64 or 96
])
@pytest.mark.parametrize("tb", [True, False], ids=["tb", "nt"])
def test_quantize_weights_then_legalize_and_fuse(opts, dt, group, zero_mode, tb):
    g = float_mlp(tb)
    q = PassManager(f"quantize-weights{{{opts}}}").run(g)
    assert kinds(q).count("quantize") == 2 and kinds(q).count("dequant") == 2
    for op in ops_of(q, "quantize"):
        assert op.results[0].type.dtype.name == dt
        assert op.operands[0] in ("w1", "w2")
    for op in ops_of(q, "matmul"):
        assert producer(q, op.operands[1]).kind == "dequant"
    fused = legalize_fuse(q)
    assert kinds(fused).count("qmatmul") == 2 and "matmul" not in kinds(fused) and "dequant" not in kinds(fused)
    assert kinds(fused).count("pack") == 2
    for qm in ops_of(fused, "qmatmul"):
        t = fused.type_of(qm.operands[1])
        assert t.dtype.name == dt and t.layout
    (relu_fused,) = [qm for qm in ops_of(fused, "qmatmul") if qm.attr.get("epilogue")]
    assert tuple(relu_fused.attr["epilogue"]) == ("relu",)

    w = weights.random(g, 21)
    x = float_inputs(g, 21)["x"].astype(np.float64)
    ref = ladder.run(g, {"x": x}, w)[g.outputs[0]].astype(np.float64)
    got = ladder.run(fused, {"x": x}, w)[fused.outputs[0]].astype(np.float64)
    assert_same(ladder.run(fused, {"x": x}, w), ladder.run(q, {"x": x}, w))  # legalize + fuse is exact

    # Error bound: each weight moves by at most one step (rounding: half a step; clipping at the
    # asymmetric end of the range, qmax = |qmin| - 1 or a rounded zero point: another half step).
    # Layer 1: |dh| <= |x| @ S1 (relu is 1-Lipschitz); layer 2: |dy| <= |dh| @ |W2^| + |h| @ S2.
    w1 = w["w1"].T.astype(np.float64) if tb else w["w1"].astype(np.float64)
    w2 = w["w2"].T.astype(np.float64) if tb else w["w2"].astype(np.float64)
    s1, s2 = _steps(w1, dt, group, zero_mode), _steps(w2, dt, group, zero_mode)
    h = np.maximum(x @ w1, 0)
    dh = np.abs(x) @ s1
    bound = dh @ (np.abs(w2) + s2) + np.abs(h) @ s2
    err = np.abs(got - ref)
    assert np.all(err <= 1.001 * bound + 1e-4), float(np.max(err - bound))
    assert np.max(err) > 0  # the weights were quantized


def test_quantize_weights_skips_non_weight_and_non_2d_matmuls():
    b = Builder()
    x = b.input("x", "f32[2, 8]")
    y = b.input("y", "f32[8, 3]")
    z = b.input("z", "f32[2, 2, 8]")
    a = b.matmul(x, y)  # not a weight
    bw = b.matmul(z, b.param("w3", "f32[2, 8, 3]"))  # rank 3
    g = b.build(a, bw)
    assert PassManager("quantize-weights{dtype=i4,group=8}").run(g) == g


@pytest.mark.parametrize("opts", ["dtype=f99", "dtype=u4", "dtype=i4,group=-7", "dtype=i4,scheme=magic",
                                  "dtype=i4,zero_mode=sometimes", "group=abc", "dtype=i4,bits=3"])
def test_quantize_weights_bad_options(opts):
    with pytest.raises(ladder.PipelineError):
        PassManager(f"quantize-weights{{{opts}}}").run(float_mlp(True))


# -- packed values and verify errors ------------------------------------------------------------------------------

PACKED_HEADER = """graph @g(%x: f32[2, 8], %q: i8[2, 8]) -> {ret} {{
  %w = param @w : ternary[4, 8]
  %p = pack %w {{layout = "crumb"}} : ternary<crumb>[4, 8]
"""


@pytest.mark.parametrize("line, ret, op", [
    ("%r = relu %p : ternary[4, 8]", "ternary[4, 8]", "relu"),
    ("%r = add %p, %p : ternary[4, 8]", "ternary[4, 8]", "add"),
    ("%r = matmul %q, %p {transpose_b = true} : i32[2, 4]", "i32[2, 4]", "matmul"),
    ("%r = transpose %p {perm = [1, 0]} : ternary<crumb>[8, 4]", "ternary<crumb>[8, 4]", "transpose"),
    ("%r = reshape %p {shape = [32]} : ternary[32]", "ternary[32]", "reshape"),
    ("%r = cast %p {dtype = i8} : i8[4, 8]", "i8[4, 8]", "cast"),
    ("%r = pack %p {layout = \"crumb\"} : ternary<crumb>[4, 8]", "ternary<crumb>[4, 8]", "pack"),
])
def test_packed_operand_of_an_op_that_does_not_take_one(line, ret, op):
    text = PACKED_HEADER.format(ret=ret) + f"  {line}\n  return %r\n}}\n"
    with pytest.raises(ladder.VerifyError) as ei:
        ladder.parse(text)
    msg = str(ei.value)
    assert f"'{op}'" in msg and "packed" in msg, msg


def test_packed_operand_through_the_builder():
    b = Builder()
    x = b.input("x", "f32[2, 8]")
    p = b.pack(b.param("w", "i4[4, 8]"), layout="nib")
    with pytest.raises(ladder.VerifyError, match="'relu'.*packed"):
        b.relu(p)
    with pytest.raises(ladder.VerifyError, match="'matmul'.*packed"):
        b.matmul(x, p, transpose_b=True)
    # the scale of a qmatmul cannot be packed either
    with pytest.raises(ladder.VerifyError, match="'qmatmul'.*packed"):
        b.qmatmul(x, p, b.pack(b.param("s", "i4[1]"), layout="nib"), transpose_b=True)


def test_unpack_of_an_unpacked_tensor():
    text = ("graph @g() -> ternary[4, 8] {\n  %w = param @w : ternary[4, 8]\n"
            "  %u = unpack %w : ternary[4, 8]\n  return %u\n}\n")
    with pytest.raises(ladder.VerifyError) as ei:
        ladder.parse(text)
    assert "'unpack'" in str(ei.value) and "not packed" in str(ei.value)


@pytest.mark.parametrize("decl", ['param @w : ternary<crumb>[4, 8]', 'const 0 : i4<nib>[4, 8]',
                                  'param @w : i4<nib32>[2, 64]'])
def test_params_and_consts_cannot_have_a_layout(decl):
    t = decl.split(": ")[1]
    text = f"graph @g() -> {t} {{\n  %w = {decl}\n  return %w\n}}\n"
    with pytest.raises(ladder.VerifyError) as ei:
        ladder.parse(text)
    kind = decl.split()[0]
    assert f"'{kind}'" in str(ei.value)
    b = Builder()
    with pytest.raises(ladder.LadderError):
        b.build(b.param("w", t))


@pytest.mark.parametrize("line", [
    '%p = pack %w {layout = "nib"} : ternary<nib>[4, 8]',  # nib does not hold ternary
    '%p = pack %w {layout = "zigzag"} : ternary<zigzag>[4, 8]',
    '%p = pack %w {layout = "crumb"} : ternary<trit5>[4, 8]',  # declared type differs
    '%p = pack %w {layout = "crumb"} : ternary[4, 8]',
])
def test_bad_pack_ops(line):
    text = f"graph @g() -> ternary[4, 8] {{\n  %w = param @w : ternary[4, 8]\n  {line}\n  return %w\n}}\n"
    with pytest.raises(ladder.LadderError):
        ladder.parse(text)


def test_pack_of_a_float_or_scalar():
    b = Builder()
    with pytest.raises(ladder.VerifyError, match="'pack'"):
        b.pack(b.param("f", "f32[4, 8]"), layout="nib")
    with pytest.raises(ladder.VerifyError, match="'pack'"):
        b.pack(b.param("s", "i4[]"), layout="nib")


def test_packed_graph_input_is_storage():
    text = ("graph @g(%x: f32[2, 8], %p: ternary<crumb>[4, 8]) -> f32[2, 4] {\n  %s = param @s : f32[1]\n"
            "  %y = qmatmul %x, %p, %s {transpose_b = true} : f32[2, 4]\n  return %y\n}\n")
    g = ladder.parse(text)
    wv = np.array([[-1, 0, 1, 0, 1, 1, -1, -1]] * 4, np.int8)
    storage = PACKINGS["crumb"].pack(wv, DTYPES["ternary"])
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    out = ladder.run(g, {"x": x, "p": storage}, {"s": np.array([0.5], np.float32)})["y"]
    np.testing.assert_allclose(out, x @ (wv.astype(np.float32) * 0.5).T)
    with pytest.raises(ladder.RuntimeFailure, match="packed storage"):
        ladder.run(g, {"x": x, "p": wv}, {"s": np.array([0.5], np.float32)})


# -- the CLI -------------------------------------------------------------------------------------------------------

def test_cli_opt_print_ir_after_all_shows_layouts(capsys):
    code = main(["opt", str(FFN), "-p", "legalize-types{target=cpu},fuse", "--print-ir-after-all"])
    out, err = capsys.readouterr()
    assert code == 0, err
    layout = get_target("cpu").packing_for(DTYPES["ternary"]).name
    assert out.count("// ----- IR after") == 2
    parts = out.split("// ----- IR after ")
    after_legal, after_fuse = parts[1], parts[2]
    assert after_legal.startswith("legalize-types")
    assert after_fuse.startswith("fuse -----")
    for part in (after_legal, after_fuse):
        assert f"ternary<{layout}>[6912, 2560]" in part
        assert f"# {layout}: u8[" in part and "2.00 bits/weight" in part
    assert "unpack" in after_legal and "qmatmul" not in after_legal
    assert "qmatmul" in after_fuse and "unpack" not in after_fuse
    # the last thing printed is the result itself
    want = PassManager("legalize-types{target=cpu},fuse").run(ladder.parse(FFN.read_text()))
    body = after_fuse.split("-----\n", 1)[1]
    graphs = [t for t in body.split("\n\n") if t.strip()]
    assert ladder.parse(graphs[-1]) == want
    assert ladder.parse(graphs[0]) == want


# -- bugs ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x_t, w_t", [("i16", "ternary"), ("i8", "i32"), ("i32", "i8")])
def test_int_chain_with_wide_integers_is_left_alone(x_t, w_t):
    b = Builder()
    x = b.input("x", f"{x_t}[2, 16]")
    acc = b.matmul(x, b.param("w", f"{w_t}[4, 16]"), transpose_b=True)
    y = b.mul(b.mul(b.cast(acc, dtype="f32"), b.param("s1", "f32[1]")), b.param("s2", "f32[1]"))
    g = b.build(y)
    out = legalize_fuse(g)
    assert "qmatmul_i8" not in kinds(out)
    assert_runs_like(out, g, 0, {"x": np.arange(32).reshape(2, 16) - 16})


BITLINEAR_CONST = """graph @g(%x: f32[2, 8]) -> f32[2, 2] {
  %w = const [[-1, 0, 1, 1, 0, 0, -1, 1], [1, 1, 1, 0, 0, -1, -1, 0]] : ternary[2, 8]
  %ws = const 0.5 : f32[1]
  %q, %s = quantize %x {scheme = "absmax", dtype = i8} : i8[2, 8], f32[2, 1]
  %acc = matmul %q, %w {transpose_b = true} : i32[2, 2]
  %f = cast %acc {dtype = f32} : f32[2, 2]
  %y1 = mul %f, %s : f32[2, 2]
  %y = mul %y1, %ws : f32[2, 2]
  return %y
}
"""


def test_default_pipeline_with_a_const_ternary_weight():
    g = ladder.parse(BITLINEAR_CONST)
    out = PassManager(default_pipeline("cpu:avx2")).run(g)
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    assert_same(ladder.run(out, {"x": x}), ladder.run(g, {"x": x}))


# a weight with an empty last axis (K = 0): packing it once gave a whole padding block (fixed in 54740fa)
def test_legalized_weight_with_empty_k_runs():
    b = Builder()
    x = b.input("x", "f32[2, 0]")
    g = b.build(b.matmul(x, b.dequant(b.param("w", "ternary[3, 0]"), b.param("s", "f32[1]")), transpose_b=True))
    out = legalize_fuse(g)
    assert_runs_like(out, g, 0, {"x": np.zeros((2, 0), np.float32)})
