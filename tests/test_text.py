"""Tests of the .lir text format: parsing, printing, round trips, the Builder, and located error messages."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ladder
from ladder import DTYPES, Builder, LadderError, ParseError, TensorType, VerifyError
from ladder.frontends import text as lir

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.lir"))


def roundtrip(g: ladder.Graph) -> ladder.Graph:
    """Print ``g``, parse it back; the re-parse equals ``g`` and printing is a fixpoint."""
    printed = str(g)
    g2 = ladder.parse(printed)
    assert g2 == g, f"re-parse differs:\n{printed}\n{g2}"
    assert str(g2) == printed
    return g2


# -- the DESIGN.md example, verbatim ---------------------------------------------------------------------

DESIGN_EXAMPLE = """\
# a BitNet-style feed-forward block
graph @ffn(%x: f32[1, 2560]) -> f32[1, 2560] {
  %wu  = param @w_up   : ternary[6912, 2560]
  %su  = param @s_up   : f32[1]
  %wd  = param @w_down : ternary[2560, 6912]
  %sd  = param @s_down : f32[1]
  %u   = dequant %wu, %su : f32[6912, 2560]
  %h   = matmul %x, %u {transpose_b = true} : f32[1, 6912]
  %a   = relu2 %h : f32[1, 6912]
  %d   = dequant %wd, %sd : f32[2560, 6912]
  %y   = matmul %a, %d {transpose_b = true} : f32[1, 2560]
  return %y
}
"""


def test_design_example_is_still_in_design_md():
    design = ROOT.parent / "shared" / "DESIGN.md"
    if not design.exists():
        pytest.skip("../shared/DESIGN.md is not next to this checkout")
    assert DESIGN_EXAMPLE in design.read_text()


def test_design_example_parses():
    g = ladder.parse(DESIGN_EXAMPLE)
    assert g.name == "ffn"
    assert [(v.name, str(v.type)) for v in g.inputs] == [("x", "f32[1, 2560]")]
    assert [(op.kind, [r.name for r in op.results], [str(r.type) for r in op.results]) for op in g.ops()] == [
        ("param", ["wu"], ["ternary[6912, 2560]"]),
        ("param", ["su"], ["f32[1]"]),
        ("param", ["wd"], ["ternary[2560, 6912]"]),
        ("param", ["sd"], ["f32[1]"]),
        ("dequant", ["u"], ["f32[6912, 2560]"]),
        ("matmul", ["h"], ["f32[1, 6912]"]),
        ("relu2", ["a"], ["f32[1, 6912]"]),
        ("dequant", ["d"], ["f32[2560, 6912]"]),
        ("matmul", ["y"], ["f32[1, 2560]"]),
    ]
    ops = {op.name: op for op in g.ops()}
    assert ops["wu"].attr == {"ref": "w_up"} and ops["sd"].attr == {"ref": "s_down"}
    assert ops["u"].operands == ("wu", "su") and ops["d"].operands == ("wd", "sd")
    assert ops["h"].operands == ("x", "u") and ops["h"].attr == {"transpose_b": True}
    assert ops["y"].operands == ("a", "d") and ops["y"].attr == {"transpose_b": True}
    assert ops["u"].attr == {}  # dequant's defaults are not stored
    assert ops["wu"].results[0].type == TensorType(DTYPES["ternary"], (6912, 2560))
    assert g.outputs == ["y"]
    assert g.output_types() == [TensorType(DTYPES["f32"], (1, 2560))]
    # locations point into the text
    assert (ops["h"].loc.line, ops["h"].loc.col) == (8, 10)
    roundtrip(g)


def test_design_example_canonical_print():
    printed = str(ladder.parse(DESIGN_EXAMPLE))
    assert printed.splitlines()[0] == "graph @ffn(%x: f32[1, 2560]) -> f32[1, 2560] {"
    assert "  %h = matmul %x, %u {transpose_b = true} : f32[1, 6912]" in printed.splitlines()
    assert "  %wu = param @w_up : ternary[6912, 2560]" in printed.splitlines()
    assert printed.endswith("  return %y\n}\n")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_parse_and_roundtrip(path):
    g_text = ladder.parse(path.read_text())
    g_path = ladder.parse(path)  # a Path
    g_str = ladder.parse(str(path))  # a string naming a .lir file
    assert g_text == g_path == g_str
    assert len(g_text) > 0 and g_text.outputs
    assert g_path.ops()[0].loc.file == str(path)
    roundtrip(g_text)


def test_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"bitlinear.lir", "ffn.lir", "int4_mlp.lir"}


# -- one small graph per op ----------------------------------------------------------------------------------

def unary_case(kind: str, ty: str = "f32[3]") -> str:
    """A graph of one ``kind`` op on its one input."""
    return f"""
graph @{kind}(%a: {ty}) -> {ty} {{
  %y = {kind} %a : {ty}
  return %y
}}
"""


OP_CASES = {
    "param": """
graph @p(%x: f32[2]) -> (ternary[4, 8], f32[1], nf4[3]) {
  %w = param @w.up : ternary[4, 8]
  %s = param @"scale of w" : f32[1]
  %n = param @"model/layers.0/w-q$4" : nf4[3]
  return %w, %s, %n
}
""",
    "const": """
graph @c() -> (f32[2, 3], i8[2, 2], nf4[4], f32[], f16[3], i32[2]) {
  %a = const 1.5 : f32[2, 3]
  %b = const [[1, -2], [127, -128]] : i8[2, 2]
  %n = const [0, 7, 15, 3] : nf4[4]
  %s = const -2.5e-3 : f32[]
  %h = const [inf, -inf, nan] : f16[3]
  %i = const [-2147483648, 2147483647] : i32[2]
  return %a, %b, %n, %s, %h, %i
}
""",
    "add": """
graph @add(%a: f32[2, 3], %b: f32[3], %i: i8[4]) -> (f32[2, 3], i8[4]) {
  %y = add %a, %b : f32[2, 3]
  %j = add %i, %i : i8[4]
  return %y, %j
}
""",
    "sub": """
graph @sub(%a: f32[2, 1], %b: f32[1, 3]) -> f32[2, 3] {
  %y = sub %a, %b : f32[2, 3]
  return %y
}
""",
    "mul": """
graph @mul(%a: bf16[2, 3], %u: u8[3], %v: u8[2, 3]) -> (bf16[2, 3], u8[2, 3]) {
  %y = mul %a, %a : bf16[2, 3]
  %w = mul %u, %v : u8[2, 3]
  return %y, %w
}
""",
    "div": """
graph @div(%a: f16[4], %b: f16[]) -> f16[4] {
  %y = div %a, %b : f16[4]
  return %y
}
""",
    "neg": """
graph @neg(%a: f32[3], %i: i32[2]) -> (f32[3], i32[2]) {
  %y = neg %a : f32[3]
  %j = neg %i : i32[2]
  return %y, %j
}
""",
    "relu": """
graph @relu(%a: f32[3], %i: i16[2]) -> (f32[3], i16[2]) {
  %y = relu %a : f32[3]
  %j = relu %i : i16[2]
  return %y, %j
}
""",
    "relu2": unary_case("relu2", "f32[1, 3]"),
    "gelu": """
graph @gelu(%a: f32[3]) -> (f32[3], f32[3]) {
  %y = gelu %a {approximate = "tanh"} : f32[3]
  %z = gelu %a : f32[3]
  return %y, %z
}
""",
    "silu": unary_case("silu"),
    "sigmoid": unary_case("sigmoid", "f16[3]"),
    "tanh": unary_case("tanh"),
    "sqrt": unary_case("sqrt"),
    "erf": unary_case("erf"),
    "exp": unary_case("exp"),
    "round": unary_case("round"),
    "clamp": """
graph @clamp(%a: f32[3], %i: i8[2]) -> (f32[3], f32[3], i8[2]) {
  %y = clamp %a {min = -1.5, max = 2} : f32[3]
  %z = clamp %a {min = -inf, max = inf} : f32[3]
  %j = clamp %i {min = 0.0, max = 1e+30} : i8[2]
  return %y, %z, %j
}
""",
    "cast": """
graph @cast(%a: f32[3], %i: i32[3]) -> (f16[3], i8[3], fp4[3], f32[3]) {
  %h = cast %a {dtype = f16} : f16[3]
  %b = cast %a {dtype = i8} : i8[3]
  %c = cast %a {dtype = "fp4"} : fp4[3]
  %d = cast %i {dtype = f32} : f32[3]
  return %h, %b, %c, %d
}
""",
    "matmul": """
graph @matmul(%x: f32[2, 8], %q: i8[2, 8]) -> (f32[2, 4], i32[2, 4], f32[3, 2, 4]) {
  %w = param @w : f32[8, 4]
  %t = param @t : ternary[4, 8]
  %y = matmul %x, %w : f32[2, 4]
  %z = matmul %q, %t {transpose_b = true} : i32[2, 4]
  %bw = param @bw : f32[3, 8, 4]
  %b = matmul %x, %bw : f32[3, 2, 4]
  return %y, %z, %b
}
""",
    "dequant": """
graph @dequant() -> (f32[4, 8], f16[4, 8], f32[4, 8]) {
  %w = param @w : u4[4, 8]
  %s = param @s : f32[4, 2]
  %z = param @z : f32[4, 2]
  %a = dequant %w, %s, %z {group = 4, zero_mode = "original"} : f32[4, 8]
  %t = param @t : ternary[4, 8]
  %ts = param @ts : f32[1]
  %b = dequant %t, %ts {dtype = f16} : f16[4, 8]
  %n = param @n : nf4[4, 8]
  %ns = param @ns : f32[1, 8]
  %c = dequant %n, %ns {axis = 0, group = 0} : f32[4, 8]
  return %a, %b, %c
}
""",
    "quantize": """
graph @quantize(%x: f32[2, 8]) -> (i8[2, 8], f32[2, 1], u4[2, 8], f32[2, 2], f32[2, 2], ternary[2, 8], f32[1, 1]) {
  %q, %s = quantize %x {scheme = "absmax", dtype = i8} : i8[2, 8], f32[2, 1]
  %u, %us, %uz = quantize %x {scheme = "rtn", dtype = u4, group = 4, zero_mode = "original"} : u4[2, 8], f32[2, 2], f32[2, 2]
  %t, %ts = quantize %x {scheme = "absmean", dtype = ternary, group = -1} : ternary[2, 8], f32[1, 1]
  return %q, %s, %u, %us, %uz, %t, %ts
}
""",
    "softmax": """
graph @softmax(%x: f32[2, 3]) -> (f32[2, 3], f32[2, 3]) {
  %y = softmax %x : f32[2, 3]
  %z = softmax %x {axis = 0} : f32[2, 3]
  return %y, %z
}
""",
    "rmsnorm": """
graph @rmsnorm(%x: f32[2, 4], %w: f32[4]) -> (f32[2, 4], f32[2, 4]) {
  %y = rmsnorm %x, %w {eps = 1e-05} : f32[2, 4]
  %z = rmsnorm %x : f32[2, 4]
  return %y, %z
}
""",
    "layernorm": """
graph @layernorm(%x: f32[2, 4], %w: f32[4], %b: f32[4]) -> (f32[2, 4], f32[2, 4]) {
  %y = layernorm %x, %w, %b {eps = 0.001} : f32[2, 4]
  %z = layernorm %x, %w : f32[2, 4]
  return %y, %z
}
""",
    "reduce": """
graph @reduce(%x: f32[2, 3, 4], %i: i8[5]) -> (f32[2, 1, 1], f32[], f32[3], i8[]) {
  %a = reduce %x {kind = "sum", axes = [1, -1], keepdims = true} : f32[2, 1, 1]
  %b = reduce %x {kind = "mean"} : f32[]
  %c = reduce %x {kind = "max", axes = [0, 2]} : f32[3]
  %d = reduce %i {kind = "sum"} : i8[]
  return %a, %b, %c, %d
}
""",
    "rope": """
graph @rope(%x: f32[2, 3, 4], %pos: i32[3]) -> (f32[2, 3, 4], f32[2, 3, 4]) {
  %y = rope %x, %pos {theta = 500000.0, style = "interleaved"} : f32[2, 3, 4]
  %z = rope %x, %pos : f32[2, 3, 4]
  return %y, %z
}
""",
    "attention": """
graph @attention(%q: f32[1, 4, 2, 8], %k: f32[1, 2, 6, 8], %v: f32[1, 2, 6, 5], %len: i32[1]) -> (f32[1, 4, 2, 5], f32[1, 4, 2, 5]) {
  %a = attention %q, %k, %v, %len {causal = false, scale = 0.125} : f32[1, 4, 2, 5]
  %b = attention %q, %k, %v : f32[1, 4, 2, 5]
  return %a, %b
}
""",
    "cache_write": """
graph @cache_write(%cache: f16[2, 8, 4], %new: f16[2, 1, 4], %pos: i32[1]) -> (f16[2, 8, 4], f16[2, 8, 4]) {
  %c = cache_write %cache, %new, %pos : f16[2, 8, 4]
  %d = cache_write %cache, %cache, %pos {axis = 0} : f16[2, 8, 4]
  return %c, %d
}
""",
    "reshape": """
graph @reshape(%x: f32[2, 6], %t: ternary[4, 2]) -> (f32[3, 4], f32[2, 2, 3], ternary[8]) {
  %a = reshape %x {shape = [3, 4]} : f32[3, 4]
  %b = reshape %x {shape = [2, -1, 3]} : f32[2, 2, 3]
  %c = reshape %t {shape = [8]} : ternary[8]
  return %a, %b, %c
}
""",
    "transpose": """
graph @transpose(%x: i4[2, 3, 4]) -> i4[4, 2, 3] {
  %y = transpose %x {perm = [2, 0, 1]} : i4[4, 2, 3]
  return %y
}
""",
    "concat": """
graph @concat(%a: f32[2, 3], %b: f32[2, 5]) -> (f32[2, 11], f32[2, 3]) {
  %y = concat %a, %b, %a {axis = -1} : f32[2, 11]
  %z = concat %a {axis = 0} : f32[2, 3]
  return %y, %z
}
""",
    "slice": """
graph @slice(%x: f32[4, 10]) -> (f32[2, 10], f32[4, 3], f32[2, 5]) {
  %a = slice %x {starts = [1], ends = [3]} : f32[2, 10]
  %b = slice %x {starts = [-1], ends = [-10], axes = [1], steps = [-3]} : f32[4, 3]
  %c = slice %x {starts = [0, 0], ends = [100, 100], axes = [0, 1], steps = [2, 2]} : f32[2, 5]
  return %a, %b, %c
}
""",
    "pack": """
graph @pack(%c: u4[2, 70]) -> (ternary<crumb32>[4, 200], i4<nib>[3, 5], u4<nib16+f16z>[2, 70], i1<planes>[2, 9], u4<nib16>[2, 70]) {
  %w = param @w : ternary[4, 200]
  %p = pack %w {layout = "crumb32"} : ternary<crumb32>[4, 200]
  %i = param @i : i4[3, 5]
  %n = pack %i {layout = "nib"} : i4<nib>[3, 5]
  %s = param @s : f16[2, 3]
  %z = param @z : f16[2, 3]
  %b = pack %c, %s, %z {layout = "nib16+f16z"} : u4<nib16+f16z>[2, 70]
  %o = param @o : i1[2, 9]
  %q = pack %o {layout = "planes"} : i1<planes>[2, 9]
  %d = pack %c {layout = "nib16"} : u4<nib16>[2, 70]
  return %p, %n, %b, %q, %d
}
""",
    "unpack": """
graph @unpack(%p: ternary<trit5>[3, 170], %q: nf4<nib64+bf16>[2, 128]) -> (ternary[3, 170], nf4[2, 128]) {
  %u = unpack %p : ternary[3, 170]
  %v = unpack %q : nf4[2, 128]
  return %u, %v
}
""",
    "qmatmul": """
graph @qmatmul(%x: f32[2, 37], %h: f16[1, 2, 64]) -> (f32[2, 5], f32[2, 5], f16[1, 2, 3], f32[2, 4]) {
  %w = param @w : i4[5, 37]
  %s = param @s : f32[5, 1]
  %p = pack %w {layout = "nib32"} : i4<nib32>[5, 37]
  %a = qmatmul %x, %p, %s {transpose_b = true} : f32[2, 5]
  %g = param @g : f32[5, 3]
  %z = param @z : f32[5, 3]
  %b = qmatmul %x, %w, %g, %z {transpose_b = true, group = 16, zero_mode = "original", epilogue = ["relu2", "neg"]} : f32[2, 5]
  %t = param @t : ternary[3, 64]
  %ts = param @ts : f16[3, 1]
  %tp = pack %t, %ts {layout = "crumb16+f16"} : ternary<crumb16+f16>[3, 64]
  %c = qmatmul %h, %tp {transpose_b = true, group = 64} : f16[1, 2, 3]
  %n = param @n : nf4[37, 4]
  %ns = param @ns : f32[1, 4]
  %d = qmatmul %x, %n, %ns {axis = 0, epilogue = ["gelu"]} : f32[2, 4]
  return %a, %b, %c, %d
}
""",
    "qmatmul_i8": """
graph @qmatmul_i8(%x: f32[2, 37]) -> (f32[2, 6], f32[2, 6]) {
  %q, %xs = quantize %x {scheme = "absmax", dtype = i8} : i8[2, 37], f32[2, 1]
  %w = param @w : ternary[6, 37]
  %ws = param @ws : f32[1]
  %p = pack %w {layout = "planes"} : ternary<planes>[6, 37]
  %a = qmatmul_i8 %q, %p, %xs, %ws {transpose_b = true, epilogue = ["relu2"]} : f32[2, 6]
  %v = param @v : u2[37, 6]
  %vs = param @vs : f32[6]
  %b = qmatmul_i8 %q, %v, %xs, %vs : f32[2, 6]
  return %a, %b
}
""",
    "qmatmul_q8": """
graph @qmatmul_q8(%x: f32[2, 64]) -> (f32[2, 6]) {
  %q, %xs = quantize %x {scheme = "absmax", dtype = i8, axis = -1, group = 32} : i8[2, 64], f32[2, 2]
  %w = param @w : i4[6, 64]
  %ws = param @ws : f16[6, 2]
  %p = pack %w, %ws {layout = "nib16+f16"} : i4<nib16+f16>[6, 64]
  %a = qmatmul_q8 %q, %xs, %p {group = 32, epilogue = ["silu"]} : f32[2, 6]
  return %a
}
""",
    "lut_precompute": """
graph @lut_precompute(%x: f32[2, 37], %q: i8[3, 9]) -> (i8[3, 3, 2, 16], i32[3, 1], f32[2, 10, 4], f32[2, 1], i8[2, 10, 16], f32[2, 1], f32[2, 3]) {
  %t, %s = lut_precompute %q : i8[3, 3, 2, 16], i32[3, 1]
  %f, %fs = lut_precompute %x {g = 2} : f32[2, 19, 4], f32[2, 1]
  %a, %as = lut_precompute %x {g = 4} : f32[2, 10, 16], f32[2, 1]
  %u, %us, %uc = lut_precompute %x {quantize = true, act_group = 16} : i8[2, 10, 16], f32[2, 1], f32[2, 3]
  %r = slice %f {starts = [0], ends = [10], axes = [1]} : f32[2, 10, 4]
  return %t, %s, %r, %fs, %u, %us, %uc
}
""",
    "lut_matmul": """
graph @lut_matmul(%x: f32[2, 37], %q: i8[2, 37], %xs: f32[2, 1]) -> (f32[2, 5], f32[2, 5]) {
  %w = param @w : ternary[1, 320]
  %p = pack %w {layout = "planes"} : ternary<planes>[1, 320]
  %ws = param @ws : f32[1]
  %t, %s = lut_precompute %q : i8[2, 10, 2, 16], i32[2, 1]
  %a = lut_matmul %t, %s, %p, %xs, %ws {n = 5, rows = 8, epilogue = ["relu2"], unroll = 2} : f32[2, 5]
  %u, %us, %uc = lut_precompute %x {quantize = true, act_group = 8} : i8[2, 10, 16], f32[2, 1], f32[2, 5]
  %b = lut_matmul %u, %us, %p, %xs, %ws, %uc {n = 5, rows = 8, act_group = 8, fast_aggregation = true} : f32[2, 5]
  return %a, %b
}
""",
    "gather": """
graph @gather(%ids: i32[1, 3]) -> (f32[1, 3, 4], f32[5, 1, 3]) {
  %emb = param @embed : f32[5, 4]
  %a = gather %emb, %ids : f32[1, 3, 4]
  %b = gather %emb, %ids {axis = 1} : f32[5, 1, 3]
  return %a, %b
}
""",
}


def test_op_cases_cover_every_op():
    assert set(OP_CASES) == set(ladder.ops.OPS)


@pytest.mark.parametrize("kind", sorted(OP_CASES))
def test_op_roundtrip(kind):
    g = ladder.parse(OP_CASES[kind])
    assert kind in {op.kind for op in g.ops()}
    assert len(g.outputs) >= 1
    g2 = roundtrip(g)
    # the round trip also keeps each op's attributes exactly (same keys, same Python types)
    for a, b in zip(g.ops(), g2.ops()):
        assert a.attrs == b.attrs
        assert [type(v) for _, v in a.attrs] == [type(v) for _, v in b.attrs]


def test_packed_types_print_their_storage_and_keep_their_layout():
    g = ladder.parse(OP_CASES["pack"])
    printed = str(g)
    assert "ternary<crumb32>[4, 200]  # crumb32: u8[4, 64], 2.56 bits/weight" in printed
    assert "u4<nib16+f16z>[2, 70]  # nib16+f16z: u8[2, 60], 6.86 bits/weight" in printed
    types = {op.name: op.result.type for op in g.ops()}
    assert types["b"].layout == "nib16+f16z" and types["b"].storage_shape == (2, 60)
    assert types["q"].layout == "planes" and types["q"].storage_shape == (2, 2)
    g = ladder.parse(OP_CASES["qmatmul"])
    attrs = {op.name: op.attr for op in g.ops()}
    assert attrs["b"]["epilogue"] == ("relu2", "neg") and attrs["b"]["zero_mode"] == "original"
    assert attrs["c"] == {"transpose_b": True, "group": 64}
    roundtrip(g)


def test_attribute_kinds_parse_to_their_python_types():
    g = ladder.parse(OP_CASES["reduce"])
    a = {op.name: op.attr for op in g.ops()}["a"]
    assert a == {"kind": "sum", "axes": (1, -1), "keepdims": True}  # str, ints, bool
    g = ladder.parse(OP_CASES["clamp"])
    attrs = {op.name: op.attr for op in g.ops()}
    assert attrs["y"] == {"min": -1.5, "max": 2.0} and isinstance(attrs["y"]["max"], float)  # int -> float
    assert attrs["z"] == {}  # -inf and inf are clamp's defaults
    assert attrs["j"] == {"min": 0.0, "max": 1e30}
    g = ladder.parse(OP_CASES["cast"])
    attrs = {op.name: op.attr for op in g.ops()}
    assert attrs["h"]["dtype"] is DTYPES["f16"] and attrs["c"]["dtype"] is DTYPES["fp4"]  # word or string
    g = ladder.parse(OP_CASES["param"])
    assert [op.attr["ref"] for op in g.ops()] == ["w.up", "scale of w", "model/layers.0/w-q$4"]


def test_infinite_float_attributes_roundtrip():
    text = """\
graph @g(%x: f32[2], %pos: i32[2], %q: f32[1, 2, 4]) -> (f32[2], f32[2], f32[2, 2], f32[1, 2, 4], f32[1, 2, 4]) {
  %a = clamp %x {min = -inf, max = -1e+300} : f32[2]
  %b = clamp %x {min = 1.0, max = inf} : f32[2]
  %n = rmsnorm %x {eps = inf} : f32[2]
  %r = rope %q, %pos {theta = inf} : f32[1, 2, 4]
  %s = attention %q, %q, %q {scale = -inf} : f32[1, 2, 4]
  %c = const [[inf, -inf], [1.401298464324817e-45, -3.4028234663852886e+38]] : f32[2, 2]
  return %a, %b, %c, %r, %s
}
"""
    g = ladder.parse(text)
    attrs = {op.name: op.attr for op in g.ops()}
    assert attrs["a"] == {"max": -1e300}
    assert attrs["b"] == {"min": 1.0}
    assert attrs["n"] == {"eps": math.inf}
    assert attrs["r"] == {"theta": math.inf}
    assert attrs["s"] == {"scale": -math.inf}
    printed = str(g)
    assert "{eps = inf}" in printed and "{scale = -inf}" in printed
    assert "[[inf, -inf], [1.401298464324817e-45, -3.4028234663852886e+38]]" in printed
    roundtrip(g)


def test_nan_const_roundtrips():
    g = ladder.parse("graph @g() -> (f32[3], f16[2]) {\n  %c = const [nan, 1.0, nan] : f32[3]\n"
                     "  %d = const nan : f16[2]\n  return %c, %d\n}\n")
    arrs = [op.attr["value"].array for op in g.ops()]
    assert np.isnan(arrs[0][[0, 2]]).all() and arrs[0][1] == 1.0
    assert np.isnan(arrs[1].astype(np.float32)).all()
    g2 = roundtrip(g)
    for a, b in zip(arrs, [op.attr["value"].array for op in g2.ops()]):
        assert a.tobytes() == b.tobytes()


def test_nan_float_attribute_roundtrip():
    # Regression: at fb21511 a NaN attribute made a graph unequal to its re-parse (nan != nan).
    text = ("graph @g(%x: f32[2], %q: f32[1, 2, 4]) -> (f32[2], f32[1, 2, 4]) {\n"
            "  %y = clamp %x {max = nan} : f32[2]\n"
            "  %s = attention %q, %q, %q {scale = nan} : f32[1, 2, 4]\n"
            "  return %y, %s\n}\n")
    g = ladder.parse(text)
    assert "{max = nan}" in str(g)
    roundtrip(g)


# -- every element type -----------------------------------------------------------------------------------------

# Values each type can hold exactly (the extremes where there are any).
TYPE_VALUES = {
    "f32": [1.5, -3.4028234663852886e38, 1.401298464324817e-45, math.inf],
    "f16": [65504.0, -0.000060975551605224609, -math.inf, 0.5],
    "bf16": [3.3895313892515355e38, -0.0078125, 1.0, math.inf],
    "fp8e4m3": [448.0, -0.001953125, 1.0, -448.0],
    "fp4": [6.0, -0.5, 1.5, -6.0],
    "i32": [-2147483648, 2147483647, 0, 5],
    "i16": [-32768, 32767, 0, -1],
    "i8": [-128, 127, 0, 3],
    "u8": [0, 255, 128, 1],
    "i4": [-8, 7, 0, -1],
    "u4": [0, 15, 8, 1],
    "i2": [-2, 1, 0, -1],
    "u2": [0, 3, 2, 1],
    "u1": [0, 1, 1, 0],
    "i1": [-1, 1, 1, -1],
    "ternary": [-1, 0, 1, 0],
    "nf4": [0, 15, 7, 3],  # codes
}


def lir_number(v) -> str:
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    return str(v)


def type_program(name: str) -> str:
    vals = TYPE_VALUES[name]
    full_1d = "[" + ", ".join(map(lir_number, vals)) + "]"
    full_2d = "[[" + ", ".join(map(lir_number, vals[:2])) + "], [" + ", ".join(map(lir_number, vals[2:])) + "]]"
    t = name
    return f"""\
graph @types_{name}(%x: {t}[2, 2], %s: {t}[]) -> ({t}[4], {t}[2, 2], {t}[3], {t}[], {t}[1, 4], {t}[2, 2], {t}[4, 1], {t}[0], {t}[2, 2], {t}[]) {{
  %full = const {full_1d} : {t}[4]
  %full2 = const {full_2d} : {t}[2, 2]
  %splat = const {lir_number(vals[1])} : {t}[3]
  %scalar = const {lir_number(vals[0])} : {t}[]
  %w = param @"weights of {name}" : {t}[1, 4]
  %p = param @{name}.p : {t}[2, 2]
  %r = reshape %w {{shape = [4, -1]}} : {t}[4, 1]
  %e = const [] : {t}[0]
  %tr = transpose %x {{perm = [1, 0]}} : {t}[2, 2]
  return %full, %full2, %splat, %scalar, %w, %p, %r, %e, %tr, %s
}}
"""


def test_type_values_cover_every_type():
    assert set(TYPE_VALUES) == set(DTYPES)


@pytest.mark.parametrize("name", list(DTYPES))
def test_type_roundtrip(name):
    g = ladder.parse(type_program(name))
    dt = DTYPES[name]
    assert {r.type.dtype for op in g.ops() for r in op.results} == {dt}
    consts = {op.name: op.attr["value"] for op in g.ops() if op.kind == "const"}
    full = consts["full"].array
    assert full.dtype == dt.np_dtype and full.shape == (4,)
    want = np.array(TYPE_VALUES[name], dtype=np.float64)
    got = np.asarray(full).astype(np.float64)
    assert np.array_equal(got, want), (got, want)
    assert consts["splat"].is_splat and consts["splat"].array.shape == (3,)
    assert consts["scalar"].array.shape == ()
    assert consts["e"].array.shape == (0,)
    assert {op.attr["ref"] for op in g.ops() if op.kind == "param"} == {f"weights of {name}", f"{name}.p"}
    g2 = roundtrip(g)
    for op, op2 in zip(g.ops(), g2.ops()):
        if op.kind == "const":  # the data survives bit for bit
            a, b = op.attr["value"].array, op2.attr["value"].array
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name", list(DTYPES))
def test_type_printing(name):
    g = ladder.parse(type_program(name))
    lines = str(g).splitlines()
    splat = next(ln for ln in lines if ln.strip().startswith("%splat = const "))
    literal = splat.split("const ", 1)[1].rsplit(" : ", 1)[0]
    assert "[" not in literal  # a splat prints as one number
    assert float(literal) == float(TYPE_VALUES[name][1])
    assert splat.endswith(f" : {name}[3]")
    assert f'  %w = param @"weights of {name}" : {name}[1, 4]' in lines
    assert f"  %p = param @{name}.p : {name}[2, 2]" in lines
    empty = next(ln for ln in lines if ln.strip().startswith("%e = const "))
    assert empty.endswith(f" : {name}[0]")


@pytest.mark.parametrize("name", ["i4", "u4", "i2", "u2", "u1"])
def test_sub_byte_integer_consts_print_as_integers(name):
    g = ladder.parse(type_program(name))
    full = next(ln for ln in str(g).splitlines() if ln.strip().startswith("%full = const "))
    assert "." not in full.split("const ", 1)[1].rsplit(" : ", 1)[0], full


def test_nf4_consts_hold_codes():
    g = ladder.parse("graph @g() -> nf4[16] {\n  %c = const [" + ", ".join(map(str, range(16)))
                     + "] : nf4[16]\n  return %c\n}\n")
    arr = g.ops()[0].attr["value"].array
    assert arr.dtype == np.uint8 and arr.tolist() == list(range(16))
    assert "const [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] : nf4[16]" in str(g)
    roundtrip(g)


def test_int_consts_written_as_floats_and_floats_written_as_ints():
    a = ladder.parse("graph @g() -> (i8[2], f32[2]) {\n  %c = const [1.0, -2.0] : i8[2]\n"
                     "  %f = const [1, 2] : f32[2]\n  return %c, %f\n}\n")
    b = ladder.parse("graph @g() -> (i8[2], f32[2]) {\n  %c = const [1, -2] : i8[2]\n"
                     "  %f = const [1.0, 2.0] : f32[2]\n  return %c, %f\n}\n")
    assert a == b
    roundtrip(a)


def test_negative_nan_const_roundtrip():
    # Regression: at fb21511 -nan printed as 'nan' and lost its sign bit.
    g = ladder.parse("graph @g() -> (f32[2], fp8e4m3[1]) {\n  %c = const [-nan, 1.0] : f32[2]\n"
                     "  %d = const [-nan] : fp8e4m3[1]\n  return %c, %d\n}\n")
    g2 = roundtrip(g)
    for op in g2.ops():
        a = op.attr["value"].array.astype(np.float32)
        assert np.isnan(a[0]) and np.signbit(a[0])


def test_signed_zeros_in_const_survive_printing():
    # Regression: at fb21511 [0.0, -0.0, 0.0] was taken for a splat and printed as '0.0'.
    g = ladder.parse("graph @g() -> f32[3] {\n  %c = const [0.0, -0.0, 0.0] : f32[3]\n  return %c\n}\n")
    g2 = ladder.parse(str(g))
    a, b = g.ops()[0].attr["value"].array, g2.ops()[0].attr["value"].array
    assert np.signbit(a).tolist() == [False, True, False]
    assert np.signbit(b).tolist() == [False, True, False]


def test_empty_const_with_inner_dims_roundtrip():
    # Regression: at fb21511 f32[0, 2] printed as '[]', which did not parse back.
    g = ladder.parse("graph @g() -> (f32[0, 2], i8[2, 0, 3], nf4[0, 0]) {\n  %c = const 1.0 : f32[0, 2]\n"
                     "  %d = const 0 : i8[2, 0, 3]\n  %e = const 3 : nf4[0, 0]\n  return %c, %d, %e\n}\n")
    g2 = roundtrip(g)
    assert [op.attr["value"].array.shape for op in g2.ops()] == [(0, 2), (2, 0, 3), (0, 0)]


def test_empty_const_with_trailing_zero_dim_roundtrip():
    g = ladder.parse("graph @g() -> (f32[2, 0], i8[0]) {\n  %c = const [[], []] : f32[2, 0]\n"
                     "  %d = const [] : i8[0]\n  return %c, %d\n}\n")
    assert g.ops()[0].attr["value"].array.shape == (2, 0)
    roundtrip(g)


# -- names, outputs, layout ---------------------------------------------------------------------------------

def test_quoted_names_roundtrip():
    text = r'''graph @"my model: v2"(%x: f32[2]) -> (f32[2], f32[3], i8[1], u4[2]) {
  %a = param @"weird name" : f32[3]
  %b = param @"quote \" backslash \\ tab \t newline \n" : i8[1]
  %c = param @"unicode \u00e9 \u4e2d" : u4[2]
  %y = relu %x : f32[2]
  return %y, %a, %b, %c
}
'''
    g = ladder.parse(text)
    assert g.name == "my model: v2"
    assert [op.attr["ref"] for op in g.ops() if op.kind == "param"] == [
        "weird name", 'quote " backslash \\ tab \t newline \n', "unicode \u00e9 \u4e2d"]
    printed = str(g)
    assert printed.startswith('graph @"my model: v2"(')
    assert '@"weird name"' in printed
    roundtrip(g)


def test_simple_names_are_printed_unquoted():
    g = ladder.parse('graph @"ffn"(%x.1: f32[2]) -> f32[2] {\n  %w = param @"a/b-c.d$e_1" : f32[2]\n'
                     '  %$y = add %x.1, %w : f32[2]\n  return %$y\n}\n')
    printed = str(g)
    assert printed.startswith("graph @ffn(%x.1: f32[2])")
    assert "param @a/b-c.d$e_1 : f32[2]" in printed
    assert "%$y = add %x.1, %w" in printed
    roundtrip(g)


def test_multi_output_graph_and_repeated_outputs():
    text = """graph @multi(%x: f32[2], %i: i8[3]) -> (f32[2], i8[3], f32[2], f32[2]) {
  %y = relu %x : f32[2]
  return %y, %i, %x, %y
}
"""
    g = ladder.parse(text)
    assert g.outputs == ["y", "i", "x", "y"]
    assert [str(t) for t in g.output_types()] == ["f32[2]", "i8[3]", "f32[2]", "f32[2]"]
    assert str(g) == text
    roundtrip(g)


def test_single_result_in_parentheses_and_no_inputs():
    g = ladder.parse("graph @g() -> (f32[]) {\n  %c = const 2.0 : f32[]\n  return %c\n}\n")
    assert g.inputs == [] and str(g).startswith("graph @g() -> f32[] {")
    roundtrip(g)


def test_comments_whitespace_and_layout_do_not_matter():
    messy = ("# header\r\ngraph   @ffn (%x:f32[1,2560])->f32[1,2560]{# brace\r\n"
             "\t%wu=param @w_up:ternary[6912,2560]\n%su = param @s_up : f32 [ 1 ]   # trailing\n"
             "  %wd  = param @w_down : ternary[2560, 6912]\n  %sd  = param @s_down : f32[1]\n\n\n"
             "  %u   = dequant %wu, %su : f32[6912, 2560]\n"
             "  %h = matmul %x,%u{transpose_b=true}:f32[1,6912]\n  %a   = relu2 %h : f32[1, 6912]\n"
             "  %d   = dequant %wd, %sd : f32[2560, 6912]\n"
             "  %y   = matmul %a, %d {transpose_b = true} : f32[1, 2560]\n  return %y}")
    assert ladder.parse(messy) == ladder.parse(DESIGN_EXAMPLE)
    assert str(ladder.parse(messy)) == str(ladder.parse(DESIGN_EXAMPLE))


def test_attribute_order_and_spelling_normalize():
    a = ladder.parse('graph @g(%x: f32[2, 8]) -> (i8[2, 8], f32[2, 1]) {\n'
                     '  %q, %s = quantize %x {scheme = absmax, dtype = "i8", axis = -1, group = 0} '
                     ': i8[2, 8], f32[2, 1]\n  return %q, %s\n}\n')
    b = ladder.parse('graph @g(%x: f32[2, 8]) -> (i8[2, 8], f32[2, 1]) {\n'
                     '  %q, %s = quantize %x {dtype = i8, scheme = "absmax"} : i8[2, 8], f32[2, 1]\n'
                     '  return %q, %s\n}\n')
    assert a == b
    assert '{dtype = i8, scheme = "absmax"}' in str(a)  # sorted keys, defaults dropped, strings quoted


def test_parse_check_false_skips_the_verifier():
    text = "graph @g(%x: f32[2]) -> f32[3] {\n  %y = relu %x : f32[3]\n  return %y\n}\n"
    with pytest.raises(VerifyError):
        lir.parse(text)
    g = lir.parse(text, check=False)
    assert g.output_types() == [TensorType(DTYPES["f32"], (3,))]


# -- the Builder makes the same graphs -------------------------------------------------------------------

def test_builder_equals_parsed_design_example():
    b = Builder("ffn")
    x = b.input("x", "f32[1, 2560]")
    wu = b.param("w_up", "ternary[6912, 2560]", name="wu")
    su = b.param("s_up", "f32[1]", name="su")
    wd = b.param("w_down", "ternary", [2560, 6912], name="wd")
    sd = b.param("@s_down", "f32[1]", name="%sd")
    u = b.dequant(wu, su, name="u")
    h = b.matmul(x, u, transpose_b=True, name="h")
    a = b.relu2(h, name="a")
    d = b.dequant(wd, sd, name="d")
    y = b.matmul(a, d, transpose_b=True, name="y")
    g = b.build(y)
    parsed = ladder.parse(DESIGN_EXAMPLE)
    assert g == parsed
    assert str(g) == str(parsed)
    # Builder locations are the lines of this test
    assert g.ops()[-1].loc.file == __file__


def test_builder_equals_parsed_bitlinear_example():
    b = Builder("bitlinear")
    x = b.input("x", "f32[2, 128]")
    n = b.param("norm", "f32[128]", name="n")
    w = b.param("w", "ternary[64, 128]")
    ws = b.param("w_scale", "f32[1]", name="ws")
    h = b.rmsnorm(x, n, eps=1e-5, name="h")
    q, s = b.quantize(h, dtype="i8", scheme="absmax", name=["q", "s"])
    acc = b.matmul(q, w, transpose_b=True, name="acc")
    f = b.cast(acc, dtype=DTYPES["f32"], name="f")
    y1 = b.mul(f, s, name="y1")
    y = b.mul(y1, ws, name="y")
    g = b.build(y)
    assert g == ladder.parse(ROOT / "examples" / "bitlinear.lir")
    roundtrip(g)


def test_builder_consts_and_default_names_equal_parsed():
    b = Builder("consts")
    c1 = b.const(np.array([[1, -2], [3, 4]], np.int8))
    c2 = b.const(0.5, "f32[2, 2]")
    c3 = b.const([0, 15, 3], "nf4[3]")
    c4 = b.const([1, -1, 0], "ternary[3]", name="t")
    w = b.param("w", "f32[2, 2]")
    w2 = b.param("w", "f32[2, 2]")  # the same weight again gets a fresh value name
    s = b.add(c2, w)
    g = b.build(c1, s, c3, c4, w2)
    text = """\
graph @consts() -> (i8[2, 2], f32[2, 2], nf4[3], ternary[3], f32[2, 2]) {
  %0 = const [[1, -2], [3, 4]] : i8[2, 2]
  %1 = const 0.5 : f32[2, 2]
  %2 = const [0, 15, 3] : nf4[3]
  %t = const [1, -1, 0] : ternary[3]
  %w = param @w : f32[2, 2]
  %w.1 = param @w : f32[2, 2]
  %3 = add %1, %w : f32[2, 2]
  return %0, %3, %2, %t, %w.1
}
"""
    assert str(g) == text
    assert g == ladder.parse(text)


def test_builder_nan_splat_const_equals_parsed():
    # Regression: at fb21511 a zero-stride NaN splat from the Builder was unequal to the parsed one.
    b = Builder("g")
    c = b.const(np.float32("nan"), "f32[2]", name="c")
    g = b.build(c)
    assert g == ladder.parse("graph @g() -> f32[2] {\n  %c = const nan : f32[2]\n  return %c\n}\n")


# -- hypothesis: random valid graphs from the Builder ---------------------------------------------------------

FLOATS = ["f32", "f16", "bf16"]
UNARY = ["neg", "relu", "relu2", "gelu", "silu", "sigmoid", "tanh", "erf", "exp", "round", "clamp", "sqrt"]
BINARY = ["add", "sub", "mul", "div"]
VALUE_NAMES = st.from_regex(r"[A-Za-z_$.][A-Za-z0-9_.$]{0,6}", fullmatch=True)
finite = st.floats(-6e4, 6e4, allow_nan=False, width=32)  # fits every float type
bound = st.floats(allow_nan=False, width=32)


@st.composite
def random_graphs(draw):
    b = Builder(draw(st.text(max_size=8)))
    used: set[str] = set()

    def fresh():
        if draw(st.booleans()):
            return None  # let the builder number it
        n = f"{draw(VALUE_NAMES)}_{len(used)}"  # unique, and unlike the builder's and the inputs' names
        used.add(n)
        return n

    n_inputs = draw(st.integers(1, 2))
    values = []
    for i in range(n_inputs):
        shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
        values.append(b.input(f"in{i}", TensorType(DTYPES[draw(st.sampled_from(FLOATS))], shape)))
    n_params = 0
    for _ in range(draw(st.integers(1, 8))):
        v = draw(st.sampled_from(values))
        t = v.type
        dt = t.dtype.name
        choices = UNARY + BINARY + ["const_binary", "reshape", "cast", "quantize", "concat"]
        if t.rank >= 1:
            choices += ["softmax", "transpose", "slice", "reduce", "rmsnorm"]
        if t.rank >= 2:
            choices += ["matmul"]
        kind = draw(st.sampled_from(choices))
        name = fresh()
        if kind in UNARY:
            attrs = {}
            if kind == "gelu":
                attrs["approximate"] = draw(st.sampled_from(["none", "tanh"]))
            if kind == "clamp":
                lo, hi = sorted([draw(bound), draw(bound)])
                attrs = {"min": lo, "max": hi}
            out = b.op(kind, v, name=name, **attrs)
        elif kind in BINARY:
            same = [w for w in values if w.type == t]
            out = b.op(kind, v, draw(st.sampled_from(same)), name=name)
        elif kind == "const_binary":
            if draw(st.booleans()) or t.rank == 0:
                c = b.const(draw(finite), TensorType(t.dtype, ()))
            else:
                d = t.shape[-1]
                data = draw(st.lists(finite, min_size=d, max_size=d))
                c = b.const(np.array(data, dtype=t.dtype.np_dtype), TensorType(t.dtype, (d,)))
            out = b.op(draw(st.sampled_from(BINARY)), v, c, name=name)
        elif kind == "reshape":
            size = t.size
            shape = draw(st.sampled_from([[size], [-1], [1, size], [size, 1], [-1, 1], []]))
            if shape == [] and size != 1:
                shape = [size]
            out = b.reshape(v, shape=shape, name=name)
        elif kind == "cast":
            out = b.cast(v, dtype=draw(st.sampled_from(FLOATS)), name=name)
        elif kind == "quantize":
            if t.rank == 0:
                continue
            q, s = b.quantize(v, scheme=draw(st.sampled_from(["absmax", "absmean"])),
                              dtype=draw(st.sampled_from(["i8", "i4", "ternary"])))
            out = b.dequant(q, s, dtype=dt, name=name)
        elif kind == "concat":
            if t.rank == 0:
                continue
            axis = draw(st.integers(-t.rank, t.rank - 1))
            out = b.concat(*([v] * draw(st.integers(1, 3))), axis=axis, name=name)
        elif kind == "softmax":
            out = b.softmax(v, axis=draw(st.integers(-t.rank, t.rank - 1)), name=name)
        elif kind == "transpose":
            out = b.transpose(v, perm=draw(st.permutations(range(t.rank))), name=name)
        elif kind == "slice":
            axis = draw(st.integers(0, t.rank - 1))
            d = t.shape[axis]
            if d == 0:
                continue
            start = draw(st.integers(-d, d - 1))
            step = draw(st.sampled_from([1, 1, 2, -1]))
            end = draw(st.integers(-d - 1, d + 1))
            out = b.slice(v, starts=[start], ends=[end], axes=[axis], steps=[step], name=name)
        elif kind == "reduce":
            axes = draw(st.lists(st.integers(0, t.rank - 1), unique=True, max_size=t.rank))
            kinds = ["sum", "max", "mean"] if t.size else ["sum", "mean"]  # no max over an empty axis
            out = b.reduce(v, kind=draw(st.sampled_from(kinds)), axes=axes,
                           keepdims=draw(st.booleans()), name=name)
        elif kind == "rmsnorm":
            n_params += 1
            w = b.param(f"norm{n_params}", TensorType(t.dtype, (t.shape[-1],)))
            out = b.rmsnorm(v, w, eps=draw(st.floats(0, 1e-2)), name=name)
        elif kind == "matmul":
            n_params += 1
            k, n = t.shape[-1], draw(st.integers(1, 4))
            tb = draw(st.booleans())
            w = b.param(draw(st.text(min_size=1, max_size=6)) + f"#{n_params}",
                        TensorType(t.dtype, (n, k) if tb else (k, n)), name=f"w{n_params}")
            out = b.matmul(v, w, transpose_b=tb, name=name)
        else:  # pragma: no cover
            raise AssertionError(kind)
        values.append(out)
    outs = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3))
    return b.build(*outs)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graphs())
def test_random_builder_graphs_roundtrip(g):
    g2 = roundtrip(g)
    assert [op.kind for op in g2.ops()] == [op.kind for op in g.ops()]
    assert g2.outputs == g.outputs and g2.name == g.name


# -- errors: located, with the line, a caret, and what was expected ------------------------------------------

PROGRAM = """\
graph @g(%x: f32[2, 4], %i: i8[4]) -> f32[2, 4] {
  %w = param @w : f32[4]
  %y = add %x, %w : f32[2, 4]
  %z = relu %y : f32[2, 4]
  return %z
}
"""


def bad(replace_line: int, new_line: str, program: str = PROGRAM) -> str:
    lines = program.split("\n")
    lines[replace_line - 1] = new_line
    return "\n".join(lines)


def parse_err(text: str, filename: str = "model.lir", kind=LadderError) -> LadderError:
    with pytest.raises(kind) as info:
        ladder.parse(text, filename)
    return info.value


def assert_located(e: LadderError, text: str, line: int, token: str, filename: str = "model.lir",
                   occurrence: int = 0):
    """The error is at ``token`` (its ``occurrence``-th appearance) on ``line``: ``file:line:col`` heads the
    message, which shows the line and a caret under the token."""
    src = text.split("\n")[line - 1]
    col = [m.start() for m in re.finditer(re.escape(token), src)][occurrence] + 1
    assert e.loc is not None and (e.loc.file, e.loc.line, e.loc.col) == (filename, line, col), (e.loc, str(e))
    msg = str(e)
    head, *rest = msg.split("\n")
    assert head.startswith(f"{filename}:{line}:{col}: "), msg
    shown = [i for i, ln in enumerate(rest) if ln.strip() and ln.startswith("    ") and "^" not in ln]
    assert shown, msg
    shown_line = rest[shown[0]]
    caret_line = rest[shown[0] + 1]
    assert caret_line.strip() == "^", msg
    caret = caret_line.index("^")
    assert shown_line[caret:].startswith(token), msg
    assert src.strip() in shown_line or len(src) > 100, msg
    return msg


# Each case: a broken program, the error it raises, and where: the line and the token (its ``occurrence``-th
# appearance on the line) the message points at; the message also names the words.
LOCATED_ERRORS = [
    pytest.param(bad(4, "  %z = relu %y f32[2, 4]"), ParseError, 4, "f32", 0, ["parse error", "expected", "':'"],
                 id="missing_colon_before_type"),
    pytest.param(bad(4, "  %z = frobnicate %y : f32[2, 4]"), LadderError, 4, "frobnicate", 0,
                 ["unknown op 'frobnicate'", "relu", "matmul"], id="unknown_op"),  # says which ops exist
    pytest.param(bad(2, "  %w = param @w : f64[4]"), ParseError, 2, "f64", 0,
                 ["unknown element type 'f64'", "f32", "ternary"], id="unknown_type"),
    pytest.param(PROGRAM.replace("%i: i8[4]", "%i: int8[4]"), ParseError, 1, "int8", 0, [],
                 id="unknown_type_in_signature"),
    pytest.param(bad(4, "  %z = relu %nope : f32[2, 4]"), ParseError, 4, "%nope", 0, ["%nope", "not defined"],
                 id="undefined_value"),
    pytest.param(bad(3, "  %y = add %x, %z : f32[2, 4]"), ParseError, 3, "%z", 0, [], id="use_before_definition"),
    pytest.param(bad(4, "  %y = relu %y : f32[2, 4]"), ParseError, 4, "%y", 0, ["already defined"],
                 id="redefined_value"),
    pytest.param(bad(2, "  %x = param @w : f32[4]"), ParseError, 2, "%x", 0, [], id="redefined_input"),
    pytest.param(PROGRAM.replace("%i: i8[4]", "%x: i8[4]"), ParseError, 1, "%x", 1, [], id="input_declared_twice"),
    pytest.param(bad(2, "  %c = const 1.0 : f32[100000, 100000]"), ParseError, 2, "1.0", 0, [],
                 id="literal_too_large"),
    pytest.param(bad(4, "  %z = relu %y : f32[2, 5]", PROGRAM.replace("-> f32[2, 4]", "-> f32[2, 5]")), VerifyError,
                 4, "relu", 0, ["verify error", "'relu'", "%z", "f32[2, 4]", "f32[2, 5]"],
                 id="wrong_result_type_annotation"),
    pytest.param(bad(3, "  %y = add %x, %w : f16[2, 4]"), VerifyError, 3, "add", 0, ["'add'", "%y", "f16[2, 4]"],
                 id="wrong_result_dtype_annotation"),
    pytest.param(PROGRAM.replace("-> f32[2, 4]", "-> f32[4, 2]"), VerifyError, 5, "return", 0,
                 ["f32[4, 2]", "f32[2, 4]", "@g"], id="return_type_mismatch"),
    pytest.param(PROGRAM.replace("-> f32[2, 4]", "-> (f32[2, 4], f32[2, 4])"), VerifyError, 5, "return", 0, [],
                 id="return_count_mismatch"),
    pytest.param(bad(5, "  return %zz"), ParseError, 5, "%zz", 0, [], id="return_of_undefined_value"),
    pytest.param(bad(4, "  %z = softmax %y {axis = 0, axis = 1} : f32[2, 4]"), ParseError, 4, "axis", 1, ["twice"],
                 id="attribute_given_twice"),
    pytest.param(bad(2, "  %w = param %x : f32[4]"), ParseError, 2, "param", 0, ["@"], id="param_of_a_value"),
    pytest.param(bad(2, "  %w = const %x : f32[4]"), ParseError, 2, "const", 0, [], id="const_of_a_value"),
    pytest.param(bad(3, "  %y = add %x, @w : f32[2, 4]"), ParseError, 3, "@w", 0, [], id="weight_as_operand"),
    pytest.param(bad(3, "  %y = param @w : f32[5]").replace("  %z = relu %y : f32[2, 4]", "  %z = relu %x : f32[2, 4]"),
                 VerifyError, 3, "param", 0, ["@w", "f32[5]", "f32[4]"], id="weight_declared_with_two_types"),
    pytest.param(bad(3, "  %y = add %x, %w : f32[2, 4] ?"), ParseError, 3, "?", 0,
                 ["unexpected character '?'", "expected"], id="unexpected_character"),  # what was found, expected
    pytest.param(bad(1, "graph g(%x: f32[2, 4], %i: i8[4]) -> f32[2, 4] {"), ParseError, 1, "g(", 0,
                 ["a name like @w"], id="graph_name_without_at"),
]


@pytest.mark.parametrize("text, kind, line, token, occurrence, words", LOCATED_ERRORS)
def test_error_is_located(text, kind, line, token, occurrence, words):
    e = parse_err(text, kind=kind)
    msg = assert_located(e, text, line, token, occurrence=occurrence)
    for w in words:
        assert w in msg, msg


def test_error_missing_type_after_colon():
    text = bad(4, "  %z = relu %y :")
    e = parse_err(text, kind=ParseError)
    assert e.loc.line == 5 and "expected" in str(e)


def test_error_unknown_op_is_a_parse_error():
    # Regression: at fb21511 an unknown op raised a bare LadderError, not a ParseError.
    text = bad(4, "  %z = frobnicate %y : f32[2, 4]")
    e = parse_err(text)
    assert isinstance(e, (ParseError, VerifyError))


def test_error_result_named_twice():
    text = PROGRAM.replace("  %z = relu %y : f32[2, 4]",
                           '  %q, %q = quantize %y {scheme = "absmax", dtype = i8} : i8[2, 4], f32[2, 1]')
    e = parse_err(text, kind=ParseError)
    assert e.loc.line == 4


@pytest.mark.parametrize("literal,ty,words", [
    ("[1.0, 2.0, 3.0]", "f32[2]", ["shape [3]", "f32[2]"]),
    ("[[1.0, 2.0], [3.0]]", "f32[2, 2]", ["not rectangular"]),
    ("[[1, 2], [3, 4]]", "i8[4]", ["shape [2, 2]", "i8[4]"]),
    ("[1, 2]", "f32[2, 1]", ["shape [2]", "f32[2, 1]"]),
    ("[8, 0]", "i4[2]", ["8", "i4"]),
    ("[0, 16]", "nf4[2]", ["16", "nf4"]),
    ("[0, 2]", "ternary[2]", ["2", "ternary"]),
    ("[1, 0]", "i1[2]", ["0", "i1"]),
    ("0.5", "i8[2]", ["0.5", "i8"]),
    ("300", "u8[]", ["300", "u8"]),
    ("-1", "u4[1]", ["-1", "u4"]),
])
def test_error_bad_literal(literal, ty, words):
    text = bad(2, f"  %c = const {literal} : {ty}")
    e = parse_err(text, kind=ParseError)
    msg = assert_located(e, text, 2, literal)
    for w in words:
        assert w in msg


def test_verify_error_collects_every_bad_op():
    text = bad(3, "  %y = add %x, %w : f32[2, 3]")
    text = bad(4, "  %z = relu %y : f32[2, 4]", text)
    text = bad(4, "  %z = relu %y : f32[2, 9]", text).replace("-> f32[2, 4]", "-> f32[2, 9]")
    e = parse_err(text, kind=VerifyError)
    assert [d.loc.line for d in e.diagnostics] == [3, 4]
    assert str(e).endswith("2 errors")
    assert "'add'" in str(e) and "'relu'" in str(e)


def test_error_graph_returning_nothing():
    text = bad(5, "  return").replace("-> f32[2, 4]", "-> ()")
    e = parse_err(text, kind=VerifyError)
    assert "returns nothing" in str(e)


@pytest.mark.parametrize("line,words", [
    ("  %z = relu %y, %y : f32[2, 4]", ["'relu'", "%z", "operand"]),
    ("  %z = relu %y {alpha = 1} : f32[2, 4]", ["'relu'", "alpha"]),
    ("  %z = softmax %y {axis = true} : f32[2, 4]", ["'softmax'", "axis", "integer"]),
    ("  %z = softmax %y {axis = 2} : f32[2, 4]", ["'softmax'", "axis 2"]),
    ("  %z = gelu %y {approximate = \"fast\"} : f32[2, 4]", ["'gelu'", "fast", "tanh"]),
    ("  %z = cast %y {dtype = f64} : f32[2, 4]", ["'cast'", "f64"]),
    ("  %z = cast %y : f32[2, 4]", ["'cast'", "dtype"]),
    ("  %z, %s = relu %y : f32[2, 4], f32[2, 4]", ["'relu'", "1 result"]),
    ("  %z = matmul %y, %i : f32[2, 4]", ["'matmul'", "%z"]),
])
def test_error_bad_op_is_a_located_verify_error(line, words):
    text = bad(4, line)
    e = parse_err(text, kind=VerifyError)
    msg = assert_located(e, text, 4, line.split("=")[1].split()[0])
    for w in words:
        assert w in msg, msg


def test_syntax_error_on_a_tab_indented_line():
    text = bad(4, "\t%z = relu %nope : f32[2, 4]")
    e = parse_err(text, kind=ParseError)
    msg = assert_located(e, text, 4, "%nope")
    assert "\t" in msg.split("\n")[2]  # the caret line keeps the tab so it lines up in a terminal


def test_error_on_a_long_line_keeps_the_caret_on_the_token():
    long_attr = ", ".join(f"%x{i}: f32[1]" for i in range(30))
    text = PROGRAM.replace("%i: i8[4]", f"%i: i8[4], {long_attr}, %q: f99[1]")
    e = parse_err(text, kind=ParseError)
    assert len(text.split("\n")[0]) > 200
    assert_located(e, text, 1, "f99")


def test_error_unexpected_end_of_text():
    e = parse_err(PROGRAM.rstrip().rstrip("}"), kind=ParseError)
    assert e.loc.file == "model.lir" and e.loc.line >= 5
    assert "expected" in str(e) and "'}'" in str(e)


def test_error_unexpected_end_of_text_names_the_end():
    # (at commit fb21511 this said 'unexpected None')
    for text in ["", "graph", PROGRAM.rstrip().rstrip("}")]:
        e = parse_err(text, kind=ParseError)
        assert "None" not in str(e)
        assert "end of the text" in str(e)


def test_error_empty_text():
    e = parse_err("", kind=ParseError)
    assert "'graph'" in str(e)


def test_parse_missing_file():
    with pytest.raises(ParseError) as info:
        ladder.parse(Path("/nonexistent/dir/model.lir"))
    assert "/nonexistent/dir/model.lir" in str(info.value)
    with pytest.raises(ParseError):
        ladder.parse("definitely-missing-file.lir")


def test_parse_file_error_names_the_file(tmp_path):
    path = tmp_path / "broken.lir"
    text = bad(4, "  %z = relu %undefined : f32[2, 4]")
    path.write_text(text)
    e = parse_err_file(path)
    assert_located(e, text, 4, "%undefined", filename=str(path))
    with pytest.raises(ParseError):
        ladder.parse(str(path))


def parse_err_file(path) -> LadderError:
    with pytest.raises(LadderError) as info:
        ladder.parse(path)
    return info.value


def test_parse_unreadable_file(tmp_path):
    path = tmp_path / "binary.lir"
    path.write_bytes(b"\xff\xfe\x00graph")
    with pytest.raises(ParseError):
        ladder.parse(path)
    with pytest.raises(ParseError):
        ladder.parse(tmp_path)  # a directory


def test_default_filename_is_string():
    e = parse_err_text_default(bad(4, "  %z = relu %nope : f32[2, 4]"))
    assert str(e).startswith("<string>:4:")


def parse_err_text_default(text) -> LadderError:
    with pytest.raises(LadderError) as info:
        ladder.parse(text)
    return info.value


# -- lone surrogates (found by fuzzing: they passed check, then failed in run with a UnicodeEncodeError) --------

@pytest.mark.parametrize("line, token", [
    ('  %w = param @"\\ud800" : f32[2, 4]', '@"\\ud800"'),
    ('  %w = param @"ok\\udfffok" : f32[2, 4]', '@"ok\\udfffok"'),
    ('  %w = param @"\\ude00\\ud83d" : f32[2, 4]', '@"\\ude00\\ud83d"'),  # a pair in the wrong order
    ('  %w = param @"\ud800" : f32[2, 4]', '@"\ud800"'),  # the raw code point, as a Python str may hold
    ('  %w = gelu %x {approximate = "\\udbff"} : f32[2, 4]', '"\\udbff"'),
])
def test_error_lone_surrogate_in_a_quoted_name_or_string(line, token):
    text = "graph @g(%x: f32[2, 4]) -> f32[2, 4] {\n" + line + "\n  %y = add %x, %w : f32[2, 4]\n  return %y\n}\n"
    e = parse_err(text, kind=ParseError)
    assert "lone surrogate" in e.message and "U+D" in e.message
    assert (e.loc.file, e.loc.line, e.loc.col) == ("model.lir", 2, line.index(token) + 1)
    with pytest.raises(ParseError, match="lone surrogate"):
        lir.parse(text, "model.lir", check=False)


def test_error_lone_surrogate_in_the_graph_name():
    text = 'graph @"\\ud800"(%x: f32[2]) -> f32[2] {\n  return %x\n}\n'
    e = parse_err(text, kind=ParseError)
    assert_located(e, text, 1, '@"\\ud800"')


def test_surrogate_pairs_are_characters_and_run():
    text = 'graph @g(%x: f32[2]) -> f32[2] {\n  %w = param @"w \\ud83d\\ude00" : f32[2]\n' \
           '  %y = add %x, %w : f32[2]\n  return %y\n}\n'
    g = ladder.parse(text)
    ref = next(op.attr["ref"] for op in g.ops() if op.kind == "param")
    assert ref == "w \U0001F600"
    roundtrip(g)
    out = ladder.run(g, {"x": np.ones(2, np.float32)}, {ref: np.full(2, 2.0, np.float32)})
    assert out[g.outputs[0]].tolist() == [3.0, 3.0]


@pytest.mark.parametrize("ty, literal", [("f16", "1e10"), ("f16", "[1.0, -70000.0]"), ("fp8e4m3", "[500.0]"),
                                         ("f32", "[1e39]")])
def test_error_float_literal_beyond_its_type(ty, literal):
    # it became inf (or nan) with only a numpy RuntimeWarning
    text = f"graph @g() -> {ty}[1, 2] {{\n  %c = const {literal} : {ty}[1, 2]\n  return %c\n}}\n"
    if literal.startswith("["):
        text = text.replace(f"{ty}[1, 2]", f"{ty}[{literal.count(',') + 1}]")
    e = parse_err(text, kind=ParseError)
    assert "beyond the range of " + ty in e.message
    assert_located(e, text, 2, literal)


def test_float_literal_at_the_edge_of_its_type_parses():
    g = ladder.parse("graph @g() -> (f16[2], fp8e4m3[2]) {\n  %a = const [65504.0, -inf] : f16[2]\n"
                     "  %b = const [448.0, nan] : fp8e4m3[2]\n  return %a, %b\n}\n")
    roundtrip(g)
