"""Rewrite patterns (ladder.passes.patterns): the driver; each pattern of canonicalize and fuse firing where it
should and not where it should not; the trace (Pass.run_traced, Snapshot.trace, --print-ir-after-all); and the
graphs the patterns make, equal to those the nested-if passes made before them (tests/fixtures/patterns, written
by those passes; ``python tests/test_patterns.py`` writes them again with the passes as they are)."""

from __future__ import annotations

import difflib
import io
from pathlib import Path

import pytest

import ladder
from ladder import Builder
from ladder.cli import main
from ladder.ir import Graph
from ladder.passes import Canonicalize, Fuse, LegalizeTypes, PassManager, PrintIRAfterAll, Snapshots
from ladder.passes.patterns import Firing, apply_patterns, pattern

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "patterns"
FFN = ROOT / "examples" / "ffn.lir"
CANON_PATTERNS = {"fold-constant", "reshape-to-same-shape", "identity-transpose", "reshape-of-reshape",
                  "double-negation", "single-concat"}
FUSE_PATTERNS = {"fuse-q8-blocks", "fuse-dequant-matmul", "fuse-int-chain", "fold-epilogue"}


def fired(trace) -> list[tuple[str, str]]:
    return [(f.pattern, f.op) for f in trace]


def kinds(g: Graph) -> list[str]:
    return [op.kind for op in g.ops()]


# -- the driver ----------------------------------------------------------------------------------------------

TWO_RELUS = """graph @g(%x: f32[4]) -> f32[4] {
  %a = relu %x : f32[4]
  %b = neg %a : f32[4]
  %c = relu %b : f32[4]
  return %c
}"""


def test_a_pattern_sees_only_its_root_kinds_and_the_trace_says_where_it_fired():
    seen = []

    @pattern("skip-relu", "relu")
    def skip_relu(g, op):
        seen.append(op.kind)
        return op.operands[0]

    g = ladder.parse(TWO_RELUS, "two.lir")
    trace = apply_patterns(g, [skip_relu])
    assert seen == ["relu", "relu"]
    # %c is an output: it keeps its name, so its uses are not replaced and nothing fired there
    assert trace == [Firing("skip-relu", "a", "relu", g.op(g.producer("a")).loc)]
    assert str(trace[0]) == "skip-relu on %a = relu (two.lir:2:8)"
    assert g.op(g.producer("b")).operands == ("x",)


def test_a_value_replacement_ends_the_turn_an_op_replacement_hands_on():
    @pattern("skip-neg", "neg")
    def skip_neg(g, op):
        return op.operands[0]

    @pattern("neg-to-relu", "neg")
    def neg_to_relu(g, op):
        return op.with_(kind="relu")

    @pattern("count-relu", "relu")
    def count_relu(g, op):
        return None

    g = ladder.parse(TWO_RELUS)
    assert fired(apply_patterns(g, [skip_neg, neg_to_relu])) == [("skip-neg", "b")]
    g = ladder.parse(TWO_RELUS)
    assert fired(apply_patterns(g, [neg_to_relu, skip_neg, count_relu])) == [("neg-to-relu", "b")]
    g = ladder.parse(TWO_RELUS)
    # the relu that took the neg's place goes on to the patterns after: skip-relu removes its uses
    skip_relu = pattern("skip-relu", "relu")(lambda g, op: op.operands[0] if op.name == "b" else None)
    assert fired(apply_patterns(g, [neg_to_relu, skip_relu])) == [("neg-to-relu", "b"), ("skip-relu", "b")]
    assert g.op(g.producer("c")).operands == ("a",)


# -- canonicalize's patterns -----------------------------------------------------------------------------------

def _graph(body: str, out_type: str = "f32[2, 3]") -> Graph:
    return ladder.parse(f"graph @r(%x: f32[2, 3]) -> {out_type} {{\n{body}\n}}")


# (id, body, output type, canonicalize options, what fires)
CANON_CASES = [
    ("reshape-to-same-shape", """  %r = reshape %x {shape = [-1, 3]} : f32[2, 3]
  %y = relu %r : f32[2, 3]
  return %y""", "f32[2, 3]", {}, [("reshape-to-same-shape", "r")]),
    ("reshape-to-other-shape", """  %r = reshape %x {shape = [3, 2]} : f32[3, 2]
  %y = relu %r : f32[3, 2]
  return %y""", "f32[3, 2]", {}, []),
    ("identity-transpose", """  %t = transpose %x {perm = [0, 1]} : f32[2, 3]
  %u = transpose %x {perm = [1, 0]} : f32[3, 2]
  %v = transpose %u {perm = [1, 0]} : f32[2, 3]
  %y = add %t, %v : f32[2, 3]
  return %y""", "f32[2, 3]", {}, [("identity-transpose", "t")]),
    # the rewritten %b is not same-shape; the patterns before reshape-of-reshape are not tried again
    ("reshape-of-reshape", """  %a = reshape %x {shape = [6]} : f32[6]
  %b = reshape %a {shape = [2, 3]} : f32[2, 3]
  %y = relu %b : f32[2, 3]
  return %y""", "f32[2, 3]", {}, [("reshape-of-reshape", "b")]),
    ("double-negation", """  %n1 = neg %x : f32[2, 3]
  %n2 = neg %n1 : f32[2, 3]
  %y = relu %n2 : f32[2, 3]
  return %y""", "f32[2, 3]", {}, [("double-negation", "n2")]),
    ("single-negation", """  %n1 = neg %x : f32[2, 3]
  %y = relu %n1 : f32[2, 3]
  return %y""", "f32[2, 3]", {}, []),
    ("single-concat", """  %c = concat %x {axis = 0} : f32[2, 3]
  %y = relu %c : f32[2, 3]
  return %y""", "f32[2, 3]", {}, [("single-concat", "c")]),
    ("two-concat", """  %c = concat %x, %x {axis = 0} : f32[4, 3]
  %y = relu %c : f32[4, 3]
  return %y""", "f32[4, 3]", {}, []),
    ("fold-constant", """  %k = const 2.0 : f32[2, 3]
  %k2 = neg %k : f32[2, 3]
  %y = mul %x, %k2 : f32[2, 3]
  return %y""", "f32[2, 3]", {}, [("fold-constant", "k2")]),
    ("fold-constant-over-limit", """  %k = const 2.0 : f32[2, 3]
  %k2 = neg %k : f32[2, 3]
  %y = mul %x, %k2 : f32[2, 3]
  return %y""", "f32[2, 3]", {"fold_limit": 5}, []),
    ("fold-off", """  %k = const 2.0 : f32[2, 3]
  %k2 = neg %k : f32[2, 3]
  %y = mul %x, %k2 : f32[2, 3]
  return %y""", "f32[2, 3]", {"fold": False}, []),
    # an output keeps its name: the reshape that defines it stays
    ("output-keeps-its-name", """  %y = reshape %x {shape = [2, 3]} : f32[2, 3]
  return %y""", "f32[2, 3]", {}, []),
]


@pytest.mark.parametrize("body, out_type, options, want", [c[1:] for c in CANON_CASES],
                         ids=[c[0] for c in CANON_CASES])
def test_canonicalize_patterns_fire_where_they_should(body, out_type, options, want):
    g = _graph(body, out_type)
    p = Canonicalize(**options)
    out, trace = p.run_traced(g)
    assert fired(trace) == want
    assert out == p.run(g)
    for name, op in want:  # the root is gone (a fold leaves a const under its name)
        assert name not in [o.name for o in out.ops() if o.kind != "const"]
    if not want:
        assert out == g


# -- fuse's patterns -------------------------------------------------------------------------------------------

def _dequant_matmul(axis: int = 1, scale: str = "f32[1]", epilogue: str | None = None, two_users=False):
    b = Builder("dq")
    x = b.input("x", "f32[2, 16]")
    d = b.dequant(b.param("w", "i4[4, 16]"), b.param("s", scale), axis=axis, group=0, name="d")
    y = b.matmul(x, d, transpose_b=True, name="y")
    if epilogue == "relu2":
        return b.build(b.relu2(y, name="a"))
    if epilogue == "gelu_tanh":
        return b.build(b.gelu(y, approximate="tanh", name="a"))
    if epilogue == "relu2+neg":
        return b.build(b.neg(b.relu2(y, name="a"), name="n"))
    return b.build(b.add(b.relu(y), b.silu(y)) if two_users else y)


def _bitlinear(extra_use: bool = False):
    b = Builder("bitlinear")
    x = b.input("x", "f32[3, 32]")
    xq, xsc = b.quantize(x, scheme="absmax", dtype="i8", name=["xq", "xs"])
    acc = b.matmul(xq, b.param("w", "ternary[6, 32]"), transpose_b=True, name="acc")
    c = b.cast(acc, dtype="f32", name="c")
    y = b.mul(b.mul(c, xsc), b.param("ws", "f32[1]"), name="y")
    return b.build(b.add(y, c) if extra_use else y)


def _q8(scheme: str = "absmax", wgroup: int = 32):
    """The GGUF importer's Q8_0 projection: x through absmax int8 blocks of 32, w int8 codes with f16 scales."""
    b = Builder("q8")
    x = b.input("x", "f32[3, 64]")
    dtype = "i8" if scheme == "absmax" else "ternary"
    xq, xs = b.quantize(x, scheme=scheme, dtype=dtype, axis=-1, group=32, name=["xq", "xs"])
    xd = b.dequant(xq, xs, axis=-1, group=32, name="xd")
    wd = b.dequant(b.param("w", "i8[5, 64]"), b.param("s", f"f16[5, {64 // wgroup}]"), axis=-1, group=wgroup,
                   name="wd")
    return b.build(b.matmul(xd, wd, transpose_b=True, name="y"))


# (id, graph maker, fuse options, what fires (pattern, root), the op kinds that result besides params)
FUSE_CASES = [
    ("dequant-matmul", lambda: _dequant_matmul(), {}, [("fuse-dequant-matmul", "y")], ["qmatmul"]),
    ("dequant-not-along-k", lambda: _dequant_matmul(axis=0, scale="f32[1, 16]"), {}, [], ["dequant", "matmul"]),
    ("epilogue", lambda: _dequant_matmul(epilogue="relu2"), {},
     [("fuse-dequant-matmul", "y"), ("fold-epilogue", "y")], ["qmatmul"]),
    ("epilogue-chain", lambda: _dequant_matmul(epilogue="relu2+neg"), {},
     [("fuse-dequant-matmul", "y"), ("fold-epilogue", "y"), ("fold-epilogue", "a")], ["qmatmul"]),
    ("epilogues-off", lambda: _dequant_matmul(epilogue="relu2"), {"epilogues": False},
     [("fuse-dequant-matmul", "y")], ["qmatmul", "relu2"]),
    ("epilogue-with-attributes", lambda: _dequant_matmul(epilogue="gelu_tanh"), {},
     [("fuse-dequant-matmul", "y")], ["qmatmul", "gelu"]),
    ("epilogue-two-users", lambda: _dequant_matmul(two_users=True), {},
     [("fuse-dequant-matmul", "y")], ["qmatmul", "relu", "silu", "add"]),
    ("int-chain", lambda: _bitlinear(), {}, [("fuse-int-chain", "acc")], ["quantize", "qmatmul_i8"]),
    ("int-chain-cast-used-twice", lambda: _bitlinear(extra_use=True), {}, [],
     ["quantize", "matmul", "cast", "mul", "mul", "add"]),
    ("q8-blocks", lambda: _q8(), {}, [("fuse-q8-blocks", "y")], ["quantize", "qmatmul_q8"]),
    ("q8-blocks-off", lambda: _q8(), {"int8_blocks": False}, [("fuse-dequant-matmul", "y")],
     ["quantize", "dequant", "qmatmul"]),
    ("q8-groups-differ", lambda: _q8(wgroup=16), {}, [("fuse-dequant-matmul", "y")],
     ["quantize", "dequant", "qmatmul"]),
    ("q8-not-absmax", lambda: _q8(scheme="absmean"), {}, [("fuse-dequant-matmul", "y")],
     ["quantize", "dequant", "qmatmul"]),
]


@pytest.mark.parametrize("make, options, want, want_kinds", [c[1:] for c in FUSE_CASES],
                         ids=[c[0] for c in FUSE_CASES])
def test_fuse_patterns_fire_where_they_should(make, options, want, want_kinds):
    g = make()
    p = Fuse(**options)
    out, trace = p.run_traced(g)
    assert fired(trace) == want
    assert out == p.run(g)
    assert [k for k in kinds(out) if k != "param"] == want_kinds
    for f in trace:  # the root: a matmul as written, or the qmatmul fused from it (with its location)
        assert f.kind == ("qmatmul" if f.pattern == "fold-epilogue" else "matmul")
        assert f.loc == g.op(g.producer("y" if f.kind == "qmatmul" else f.op)).loc and f.loc.file == __file__


# -- the trace: the pass manager, the instruments and the CLI ----------------------------------------------

FFN_FUSE_TRACE = ["fuse: fuse-dequant-matmul on %h = matmul (examples/ffn.lir:8:10)",
                  "fuse: fuse-dequant-matmul on %y = matmul (examples/ffn.lir:11:10)",
                  "fuse: fold-epilogue on %h = qmatmul (examples/ffn.lir:8:10)"]


def test_snapshots_keep_each_pass_trace():
    snaps = Snapshots()
    g = ladder.parse(FFN.read_text(), "examples/ffn.lir")
    PassManager("canonicalize,legalize-types{target=cpu:avx2},fuse", [snaps]).run(g)
    assert [s.label for s in snaps] == ["input", "canonicalize", "legalize-types{target=cpu:avx2}", "fuse"]
    assert [s.trace for s in snaps.items[:3]] == [(), (), ()]  # nothing to simplify; legalize-types has none
    assert [f"fuse: {f}" for f in snaps[3].trace] == FFN_FUSE_TRACE


def test_print_ir_after_all_prints_the_trace_as_comments_after_the_ir():
    buf = io.StringIO()
    snaps = Snapshots()
    g = ladder.parse(FFN.read_text(), "examples/ffn.lir")
    PassManager("canonicalize,legalize-types{target=cpu:avx2},fuse", [PrintIRAfterAll(buf), snaps]).run(g)
    parts = buf.getvalue().split("// ----- IR after ")[1:]
    assert len(parts) == 3
    fuse_part = parts[2].split("-----\n", 1)[1]
    comments = fuse_part.rpartition("}\n")[2]
    assert comments.strip().splitlines() == ["# " + t for t in FFN_FUSE_TRACE]
    for part, snap in zip(parts, snaps.items[1:]):  # the text of each pass, trace included, parses back
        assert ladder.parse(part.split("-----\n", 1)[1]) == snap.graph


def test_cli_opt_print_ir_after_all_shows_the_trace(capsys):
    code = main(["opt", str(FFN), "-p", "legalize-types{target=cpu:avx2},fuse", "--print-ir-after-all"])
    out, err = capsys.readouterr()
    assert code == 0, err
    after_legal, after_fuse = out.split("// ----- IR after ")[1:]
    assert "# fuse:" not in after_legal
    lines = [ln for ln in after_fuse.splitlines() if ln.startswith("#")]
    assert lines == ["# " + t.replace("examples/ffn.lir", str(FFN)) for t in FFN_FUSE_TRACE]
    want = PassManager("legalize-types{target=cpu:avx2},fuse").run(ladder.parse(FFN))
    assert ladder.parse(after_fuse.split("-----\n", 1)[1]) == want


def test_cli_run_replays_the_trace_of_the_targets_pipeline(capsys, tmp_path):
    src = tmp_path / "negs.lir"
    src.write_text("""graph @negs(%x: f32[4]) -> f32[4] {
  %n1 = neg %x : f32[4]
  %n2 = neg %n1 : f32[4]
  %y = relu %n2 : f32[4]
  return %y
}
""")
    code = main(["run", str(src), "--random-inputs", "0", "--print-ir-after-all"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"# canonicalize: double-negation on %n2 = neg ({src}:3:9)" in out


# -- the graphs are those the passes made before they were patterns --------------------------------------------

FUSES = {"fuse": Fuse(), "fuse-no-int8-blocks": Fuse(int8_blocks=False), "fuse-no-epilogues": Fuse(epilogues=False)}
LEGALIZE = LegalizeTypes(target="cpu:avx2")
CASES = sorted(p.name for p in FIXTURES.iterdir()) if FIXTURES.is_dir() else []


def assert_same_graph(got: Graph, want: Graph, what: str) -> None:
    if got != want:
        diff = difflib.unified_diff(str(want).splitlines(), str(got).splitlines(), "want", "got", lineterm="", n=1)
        pytest.fail(f"{what} differs:\n" + "\n".join(list(diff)[:20]))


def test_fixtures_are_there():
    assert {"ffn", "bitnet_layer", "gguf-llama-q8_0", "gguf-llama-mixed", "gguf-bitnet", "simplify"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_graphs_equal_those_before_patterns(case):
    d = FIXTURES / case
    g = ladder.parse(d / "input.lir")
    assert_same_graph(Canonicalize().run(g), ladder.parse(d / "canonicalize.lir"), f"{case}: canonicalize")
    legal = ladder.parse(d / "legalized.lir")
    for name, p in FUSES.items():
        assert_same_graph(p.run(legal), ladder.parse(d / f"{name}.lir"), f"{case}: {name}")


def test_the_fixtures_fire_every_pattern():
    seen = set()
    for case in CASES:
        d = FIXTURES / case
        seen.update(f.pattern for f in Canonicalize().run_traced(ladder.parse(d / "input.lir"))[1])
        legal = ladder.parse(d / "legalized.lir")
        for p in FUSES.values():
            seen.update(f.pattern for f in p.run_traced(legal)[1])
    assert seen == CANON_PATTERNS | FUSE_PATTERNS


# every canonicalize pattern, for the fixtures (%h: reshape-of-reshape makes a same-shape reshape, which stays)
SIMPLIFY = """graph @simplify(%x: f32[2, 3], %v: f32[6]) -> (f32[2, 3], f32[3, 2], f32[6], f32[2, 3], f32[2, 3]) {
  %c = const [1.0, 2.0, 3.0] : f32[3]
  %c2 = neg %c : f32[3]
  %r = reshape %x {shape = [2, 3]} : f32[2, 3]
  %t = transpose %r {perm = [0, 1]} : f32[2, 3]
  %a = add %t, %c2 : f32[2, 3]
  %f = reshape %a {shape = [6]} : f32[6]
  %g = reshape %f {shape = [3, 2]} : f32[3, 2]
  %n1 = neg %v : f32[6]
  %n2 = neg %n1 : f32[6]
  %k = concat %n2 {axis = 0} : f32[6]
  %o = relu %k : f32[6]
  %y = reshape %x {shape = [2, 3]} : f32[2, 3]
  %h = reshape %f {shape = [2, 3]} : f32[2, 3]
  %e = exp %h : f32[2, 3]
  return %a, %g, %o, %y, %e
}
"""


def fixture_graphs(folder: Path) -> dict[str, Graph]:
    """The inputs of the fixtures: examples, SIMPLIFY and three GGUF-imported decoders (made in ``folder``)."""
    import sys

    sys.path[:0] = [str(ROOT / "examples"), str(ROOT / "tests")]
    import make_gguf
    import test_gguf as tg
    from ladder.frontends import load

    graphs = {p.stem: load(p)[0] for p in sorted((ROOT / "examples").glob("*.lir")) if p.stem != "bitnet_small"}
    graphs["simplify"] = ladder.parse(SIMPLIFY)
    make_gguf.write_tiny_llama(str(folder / "tiny.gguf"))
    graphs["gguf-llama-q8_0"] = load(folder / "tiny.gguf")[0]
    graphs["gguf-llama-mixed"] = load(tg.model_file(folder / "llama.gguf", "llama", tg.LLAMA_TYPES))[0]
    graphs["gguf-bitnet"] = load(tg.model_file(folder / "bitnet.gguf", "bitnet", tg.BITNET_TYPES, tied=True))[0]
    return graphs


def write_fixtures(canonicalize=Canonicalize(), fuses=FUSES) -> None:
    """Each case: its input, what ``canonicalize`` makes of it, that legalized, and what each fuse makes of the
    legalized graph."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        graphs = fixture_graphs(Path(tmp))
    for case, g in graphs.items():
        d = FIXTURES / case
        d.mkdir(parents=True, exist_ok=True)
        canon = canonicalize.run(g)
        legal = LEGALIZE.run(canon)
        texts = {"input": g, "canonicalize": canon, "legalized": legal, **{n: p.run(legal) for n, p in fuses.items()}}
        for name, graph in texts.items():
            (d / f"{name}.lir").write_text(str(graph))


if __name__ == "__main__":
    write_fixtures()
