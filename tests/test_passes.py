"""Pipeline strings, the pass manager and its instruments, and the canonicalize pass."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import ladder
from ladder import weights
from ladder.ir import Graph, Value
from ladder.passes import (PASSES, Canonicalize, DumpToDir, Pass, PassManager, PrintIRAfterAll, Snapshots,
                           TimePasses, parse_pipeline, register_pass)
from ladder.types import tensor_type
from small_programs import SMALL

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.lir"))


def kinds(g: Graph) -> list[str]:
    return [op.kind for op in g.ops()]


def canon(g: Graph, pipeline: str = "canonicalize") -> Graph:
    return PassManager(pipeline).run(g)


def random_inputs(g: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Floats for float inputs, small non-negative ids/positions for integer ones (as ``ladder run`` draws)."""
    from ladder.cli import _random_inputs

    return _random_inputs(g, {}, seed)


def same_results(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def same_results_on_random_inputs(g: Graph, out: Graph, w: dict | None = None) -> None:
    """``out`` gives exactly ``g``'s results on ``random_inputs(g)`` (and weights ``w``)."""
    x = random_inputs(g)
    same_results(ladder.run(g, x, w), ladder.run(out, x, w))


# -- pipeline strings -------------------------------------------------------------------------------

def test_parse_plain_pass():
    (p,) = parse_pipeline("canonicalize")
    assert isinstance(p, Canonicalize)
    assert p == Canonicalize()
    assert (p.fold, p.fold_limit, p.cse, p.dce) == (True, 65536, True, True)


def test_parse_options():
    (p,) = parse_pipeline("canonicalize{fold_limit=10,cse=false}")
    assert p == Canonicalize(fold_limit=10, cse=False)
    assert p.fold_limit == 10 and isinstance(p.fold_limit, int)
    assert p.cse is False and p.dce is True and p.fold is True


def test_parse_options_with_spaces_dashes_and_several_passes():
    ps = parse_pipeline("  canonicalize { fold-limit = 7 , dce = 0 } , canonicalize{fold=true}  ")
    assert ps == [Canonicalize(fold_limit=7, dce=False), Canonicalize(fold=True)]


def test_empty_pipeline_has_no_passes():
    assert parse_pipeline("") == []
    g = ladder.parse(SMALL)
    assert PassManager("").run(g) == g


@pytest.mark.parametrize("text, col, words", [
    ("frobnicate", 1, ["unknown pass", "frobnicate", "canonicalize"]),
    ("canonicalize,frobnicate", 14, ["unknown pass", "frobnicate"]),
    ("canonicalize{foo=1}", 14, ["foo", "fold_limit"]),
    ("canonicalize{cse=false,bar=2}", 24, ["bar"]),
    ("canonicalize,", 14, ["after ','"]),
    ("canonicalize,,canonicalize", 14, []),
    ("canonicalize canonicalize", None, []),
    ("canonicalize{fold_limit}", 14, ["option=value"]),
])
def test_pipeline_errors_have_a_column(text, col, words):
    with pytest.raises(ladder.PipelineError) as ei:
        parse_pipeline(text)
    e = ei.value
    assert e.loc is not None and e.loc.line == 1
    assert 1 <= e.loc.col <= len(text) + 1
    if col is not None:
        assert e.loc.col == col, str(e)
    for w in words:
        assert w in str(e), str(e)
    s = str(e)
    assert f":1:{e.loc.col}" in s
    assert text.strip() in s and "^" in s
    # the caret sits under the column
    caret_line = s.splitlines()[2]
    src_line = s.splitlines()[1]
    assert caret_line.index("^") - (len(src_line) - len(src_line.lstrip())) == e.loc.col - 1


@pytest.mark.parametrize("text, word", [
    ("canonicalize{fold_limit=abc}", "abc"),
    ("canonicalize{fold_limit=1.5}", "1.5"),
    ("canonicalize{cse=maybe}", "maybe"),
    ("canonicalize{fold=2}", "2"),
])
def test_pipeline_bad_option_value(text, word):
    with pytest.raises(ladder.PipelineError) as ei:
        parse_pipeline(text)
    e = ei.value
    assert word in str(e)
    assert 14 <= e.loc.col <= len(text)  # inside the braces


def test_pipeline_error_from_pass_manager_constructor():
    with pytest.raises(ladder.PipelineError):
        PassManager("canonicalize{nope=1}")


def test_python_pass_equals_parsed_pass():
    p = Canonicalize(fold_limit=10)
    assert parse_pipeline("canonicalize{fold_limit=10}") == [p]
    assert str(p) == "canonicalize{fold_limit=10}"
    assert str(Canonicalize()) == "canonicalize"
    q = Canonicalize(fold_limit=3, cse=False, dce=False, fold=False)
    assert parse_pipeline(str(q)) == [q]
    assert str(PassManager([p, q])) == f"{p},{q}"
    g = ladder.parse(SMALL)
    assert PassManager(p).run(g) == PassManager("canonicalize{fold_limit=10}").run(g)


def test_pass_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Canonicalize().fold = False  # type: ignore[misc]


@pytest.fixture
def scratch_passes():
    """Registers passes for one test and removes them afterwards."""
    added = []

    def reg(name):
        def deco(cls):
            added.append(name)
            return register_pass(name)(cls)
        return deco

    yield reg
    for n in added:
        PASSES.pop(n, None)


def test_register_pass_works_from_pipeline_string(scratch_passes):
    seen = []

    @scratch_passes("test-rename-graph")
    @dataclass(frozen=True)
    class Rename(Pass):
        suffix: str = "_x"
        times: int = 1

        def run(self, graph):
            seen.append(self)
            g = graph.copy()
            g.name = graph.name + self.suffix * self.times
            return g

    assert PASSES["test-rename-graph"] is Rename
    assert Rename.name == "test-rename-graph"
    ps = parse_pipeline("test-rename-graph{suffix=_y,times=2},canonicalize")
    assert ps == [Rename(suffix="_y", times=2), Canonicalize()]
    g = PassManager("test-rename-graph{times=3}").run(ladder.parse(SMALL))
    assert g.name == "small_x_x_x"
    assert seen == [Rename(times=3)]
    assert str(Rename(times=3)) == "test-rename-graph{times=3}"
    with pytest.raises(ladder.PipelineError, match="times"):
        parse_pipeline("test-rename-graph{times=many}")
    # registering the same name twice is refused
    with pytest.raises(AssertionError):
        register_pass("test-rename-graph")(Rename)


def _break_graph(graph: Graph) -> Graph:
    g = graph.copy()
    node = g.producer("a")
    op = g.op(node)
    g.replace_op(node, op.with_(results=(Value("a", tensor_type("f32[9, 9]")),)))
    return g


def test_manager_verifies_after_each_pass(scratch_passes):
    @scratch_passes("test-breaker")
    @dataclass(frozen=True)
    class Breaker(Pass):
        def run(self, graph):
            return _break_graph(graph)

    after = []

    class Spy(ladder.passes.Instrument):
        def after_pass(self, p, graph, seconds):
            after.append(str(p))

    g = ladder.parse(SMALL)
    with pytest.raises(ladder.PipelineError) as ei:
        PassManager("canonicalize{cse=false},test-breaker,canonicalize", [Spy()]).run(g)
    msg = str(ei.value)
    assert "test-breaker" in msg
    assert "'relu'" in msg and "%a" in msg  # the verify error is included
    assert after == ["canonicalize{cse=false}"]  # instruments do not see the broken graph
    # without verification the broken graph goes through
    out = PassManager([Breaker()], verify_each=False).run(g)
    assert out.type_of("a") == tensor_type("f32[9, 9]")
    # without instruments the pipeline is verified once at its end, and a failure still names the pass (the
    # pipeline run again from its input, verifying after each pass), whether a later pass trips over the
    # broken graph or not
    for pipeline in ("canonicalize{cse=false},test-breaker,canonicalize", "canonicalize,test-breaker"):
        with pytest.raises(ladder.PipelineError, match="does not verify after pass 'test-breaker'") as ei:
            PassManager(pipeline).run(g)
        assert "'relu'" in str(ei.value) and "%a" in str(ei.value)
    good = PassManager("canonicalize{cse=false},canonicalize").run(g)
    assert str(good) == str(PassManager("canonicalize{cse=false},canonicalize", [Spy()]).run(g))


def test_pass_that_crashes_is_pipeline_error_naming_it(scratch_passes):
    @scratch_passes("test-crasher")
    @dataclass(frozen=True)
    class Crasher(Pass):
        def run(self, graph):
            raise ZeroDivisionError("boom")

    with pytest.raises(ladder.PipelineError) as ei:
        PassManager("test-crasher").run(ladder.parse(SMALL))
    assert "test-crasher" in str(ei.value) and "boom" in str(ei.value)


def test_pass_manager_does_not_mutate_its_input():
    g = ladder.parse(SMALL)
    before = str(g)
    g2 = canon(g)
    assert str(g) == before
    assert len(g2) < len(g)


# -- instruments ------------------------------------------------------------------------------------

def test_print_ir_after_all():
    buf = io.StringIO()
    g = ladder.parse(SMALL)
    out = PassManager("canonicalize{cse=false},canonicalize", [PrintIRAfterAll(buf)]).run(g)
    text = buf.getvalue()
    assert text.count("IR after") == 2
    assert "IR after canonicalize{cse=false}" in text
    first, second = text.split("// ----- IR after canonicalize -----")
    assert "%b = relu" in first          # cse off: both relus survive the first pass
    assert "%b = relu" not in second     # merged by the second
    assert "exp" not in first            # dce was on
    assert str(out).strip() in second
    # what is printed parses back to the graph
    assert ladder.parse(second.strip()) == out


def test_time_passes_table():
    buf = io.StringIO()
    timer = TimePasses(buf)
    PassManager("canonicalize,canonicalize{dce=false}", [timer]).run(ladder.parse(SMALL))
    assert [n for n, _ in timer.rows] == ["canonicalize", "canonicalize{dce=false}"]
    assert all(s >= 0 for _, s in timer.rows)
    table = buf.getvalue()
    assert table == timer.table() + "\n"
    lines = table.strip().splitlines()
    assert lines[0].split() == ["pass", "ms", "%"]
    assert lines[1].split()[0] == "canonicalize"
    assert lines[2].split()[0] == "canonicalize{dce=false}"
    assert lines[-1].split()[0] == "total"
    assert len(lines) == 4
    pct = [float(l.split()[-1]) for l in lines[1:3]]
    assert abs(sum(pct) - 100.0) < 0.5


def test_time_passes_without_stream_prints_nothing(capsys):
    timer = TimePasses()
    PassManager("canonicalize", [timer]).run(ladder.parse(SMALL))
    assert capsys.readouterr().out == ""
    assert len(timer.rows) == 1


def test_dump_to_dir(tmp_path):
    d = tmp_path / "dump" / "nested"
    g = ladder.parse(SMALL)
    out = PassManager("canonicalize{cse=false},canonicalize", [DumpToDir(d)]).run(g)
    files = sorted(p.name for p in d.iterdir())
    assert len(files) == 3
    assert files[0] == "00-input.lir"
    assert files[1].startswith("01-canonicalize")
    assert files[2] == "02-canonicalize.lir"
    assert ladder.parse(d / files[0]) == g
    assert ladder.parse(d / files[2]) == out
    mid = ladder.parse(d / files[1])
    assert kinds(mid).count("relu") == 2 and "exp" not in kinds(mid)


def test_graph_copy_is_independent_and_keeps_the_order():
    g = ladder.parse(SMALL)
    c = g.copy()
    assert c == g and str(c) == str(g) and c.nodes() == g.nodes()
    node = c.producer(c.outputs[0])
    op = c.op(node)
    new = c.add_op(op.with_(results=tuple(dataclasses.replace(r, name=r.name + "_2") for r in op.results)))
    assert new not in g.nodes() and new not in set(c.nodes()) - {new}  # a fresh id in the copy
    c.set_outputs([op.results[0].name + "_2"])
    assert str(g) == str(ladder.parse(SMALL)) and g.outputs != c.outputs and len(c) == len(g) + 1
    ladder.verifier.verify(c)


def test_snapshots():
    snaps = Snapshots()
    g = ladder.parse(SMALL)
    out = PassManager("canonicalize{cse=false,dce=false},canonicalize", [snaps]).run(g)
    assert len(snaps) == 3
    assert [s.label for s in snaps.items] == ["input", "canonicalize{cse=false,dce=false}", "canonicalize"]
    assert snaps[0].graph == g and snaps[0].graph is not g
    assert snaps[-1].graph == out
    assert snaps[0].text == str(g)
    assert all(s.seconds >= 0 for s in snaps.items)
    d1 = snaps.diff(1)
    assert d1 == ""  # nothing to fold, merge or remove with cse and dce off
    d2 = snaps.diff(2)
    assert "-  %b = relu %x" in d2 and "-  %dead = exp %x" in d2
    assert "+  %s = add %a, %a" in d2
    assert "after canonicalize" in d2
    assert "<b>after canonicalize</b>" in snaps[2]._repr_html_()


# -- canonicalize: folding, CSE, DCE ------------------------------------------------------------------

FOLD = """graph @f(%x: f32[2]) -> f32[2] {
  %a = const 1.5 : f32[2]
  %b = const [2.0, -3.0] : f32[2]
  %c = add %a, %b : f32[2]
  %d = mul %c, %c : f32[2]
  %y = add %x, %d : f32[2]
  return %y
}
"""


def test_constant_folding():
    g = ladder.parse(FOLD)
    out = canon(g)
    assert kinds(out) == ["const", "add"]
    const = next(op for op in out.ops() if op.kind == "const")
    np.testing.assert_array_equal(const.attr["value"].array, np.array([3.5 ** 2, 1.5 ** 2], np.float32))
    (add,) = [op for op in out.ops() if op.kind == "add"]
    assert add.operands == ("x", const.name)
    x = np.array([1.0, -1.0], np.float32)
    same_results(ladder.run(g, {"x": x}), ladder.run(out, {"x": x}))


def test_folding_integer_and_low_bit_ops():
    src = """graph @f(%x: i32[3]) -> i32[3] {
  %a = const [100, -100, 7] : i8[3]
  %b = const [100, -100, 1] : i8[3]
  %c = add %a, %b : i8[3]
  %w = const [1, 0, -1] : ternary[3]
  %wc = cast %c {dtype = i32} : i32[3]
  %y = add %x, %wc : i32[3]
  return %y
}"""
    g = ladder.parse(src)
    out = canon(g)
    assert "cast" not in kinds(out) and kinds(out).count("add") == 1
    x = np.array([1, 2, 3], np.int32)
    same_results(ladder.run(g, {"x": x}), ladder.run(out, {"x": x}))


def test_fold_limit_and_fold_off():
    g = ladder.parse(FOLD)
    assert kinds(canon(g, "canonicalize{fold_limit=1}")) == ["const", "const", "add", "mul", "add"]
    assert kinds(canon(g, "canonicalize{fold=false}")) == ["const", "const", "add", "mul", "add"]
    assert kinds(canon(g, "canonicalize{fold_limit=2}")) == ["const", "add"]


def test_folding_leaves_runtime_errors_alone():
    src = """graph @f(%x: f32[2]) -> f32[2, 2] {
  %t = const [[1.0, 2.0], [3.0, 4.0]] : f32[2, 2]
  %i = const [0, 5] : i32[2]
  %y = gather %t, %i : f32[2, 2]
  return %y
}"""
    g = ladder.parse(src)
    out = canon(g)
    assert "gather" in kinds(out)
    with pytest.raises(ladder.RuntimeFailure, match="5"):
        ladder.run(out, {"x": np.zeros(2, np.float32)})


def test_cse_merges_duplicates():
    g = ladder.parse(SMALL)
    out = canon(g, "canonicalize{dce=false}")
    assert kinds(out).count("relu") == 1
    (add,) = [op for op in out.ops() if op.kind == "add"]
    assert add.operands == ("a", "a")
    no_cse = canon(g, "canonicalize{cse=false,dce=false}")
    assert kinds(no_cse).count("relu") == 2
    same_results_on_random_inputs(g, out)


def test_cse_keeps_ops_that_differ():
    src = """graph @c(%x: f32[2, 3]) -> f32[2, 3] {
  %a = softmax %x {axis = 0} : f32[2, 3]
  %b = softmax %x {axis = 1} : f32[2, 3]
  %k1 = const 1.0 : f32[2, 3]
  %k2 = const 2.0 : f32[2, 3]
  %p = param @w : f32[2, 3]
  %q = param @v : f32[2, 3]
  %s1 = add %a, %b : f32[2, 3]
  %s2 = add %k1, %k2 : f32[2, 3]
  %s3 = add %p, %q : f32[2, 3]
  %s4 = add %s1, %s2 : f32[2, 3]
  %y = add %s4, %s3 : f32[2, 3]
  return %y
}"""
    g = ladder.parse(src)
    out = canon(g, "canonicalize{fold=false}")
    assert kinds(out).count("softmax") == 2
    assert kinds(out).count("const") == 2
    assert kinds(out).count("param") == 2


def test_cse_merges_same_params_and_consts():
    src = """graph @c(%x: f32[4]) -> f32[4] {
  %p = param @w : f32[4]
  %q = param @w : f32[4]
  %k1 = const [1.0, 2.0, 3.0, 4.0] : f32[4]
  %k2 = const [1.0, 2.0, 3.0, 4.0] : f32[4]
  %a = mul %x, %p : f32[4]
  %b = mul %x, %q : f32[4]
  %c = add %a, %k1 : f32[4]
  %d = add %b, %k2 : f32[4]
  %y = sub %c, %d : f32[4]
  return %y
}"""
    g = ladder.parse(src)
    out = canon(g)
    assert sorted(kinds(out)) == ["add", "const", "mul", "param", "sub"]
    w = {"w": np.arange(4, dtype=np.float32)}
    same_results_on_random_inputs(g, out, w)


def test_dce_removes_unused_ops_and_params():
    src = """graph @d(%x: f32[4]) -> f32[4] {
  %unused = param @unused_w : ternary[4]
  %e = exp %x : f32[4]
  %e2 = tanh %e : f32[4]
  %q, %s = quantize %x {dtype = i8, scheme = "absmax"} : i8[4], f32[1]
  %y = relu %x : f32[4]
  return %y
}"""
    g = ladder.parse(src)
    out = canon(g)
    assert kinds(out) == ["relu"]
    kept = canon(g, "canonicalize{dce=false}")
    assert len(kept) == len(g)
    # the unused weight is no longer needed to run the graph
    x = random_inputs(g)
    with pytest.raises(ladder.WeightsError, match="unused_w"):
        ladder.run(g, x)
    same_results(ladder.run(g, x, {"unused_w": np.zeros(4, np.int8)}), ladder.run(out, x))


def test_dce_keeps_multi_result_op_if_one_result_is_used():
    src = """graph @d(%x: f32[2, 4]) -> f32[2, 1] {
  %q, %s = quantize %x {dtype = i8, scheme = "absmax"} : i8[2, 4], f32[2, 1]
  return %s
}"""
    out = canon(ladder.parse(src))
    assert kinds(out) == ["quantize"]


# -- canonicalize: named rules -------------------------------------------------------------------------

def _rule_graph(body: str, out_type: str = "f32[2, 3]") -> Graph:
    return ladder.parse(f"graph @r(%x: f32[2, 3]) -> {out_type} {{\n{body}\n}}")


@pytest.mark.parametrize("body", [
    """  %r = reshape %x {shape = [2, 3]} : f32[2, 3]
  %y = relu %r : f32[2, 3]
  return %y""",
    """  %n1 = neg %x : f32[2, 3]
  %n2 = neg %n1 : f32[2, 3]
  %y = relu %n2 : f32[2, 3]
  return %y""",
], ids=["reshape_to_same_shape", "double_negation"])
def test_rule_removes_ops_between_input_and_relu(body):
    g = _rule_graph(body)
    out = canon(g)
    assert kinds(out) == ["relu"]
    assert out.ops()[0].operands == ("x",)
    same_results_on_random_inputs(g, out)


def test_rule_reshape_with_inferred_dim_to_same_shape():
    g = _rule_graph("""  %r = reshape %x {shape = [-1, 3]} : f32[2, 3]
  %y = relu %r : f32[2, 3]
  return %y""")
    assert kinds(canon(g)) == ["relu"]


def test_rule_identity_transpose():
    g = _rule_graph("""  %t = transpose %x {perm = [0, 1]} : f32[2, 3]
  %u = transpose %x {perm = [1, 0]} : f32[3, 2]
  %v = transpose %u {perm = [1, 0]} : f32[2, 3]
  %y = add %t, %v : f32[2, 3]
  return %y""")
    out = canon(g)
    assert kinds(out) == ["transpose", "transpose", "add"]
    add = out.ops()[-1]
    assert add.operands[0] == "x"
    same_results_on_random_inputs(g, out)


def test_rule_reshape_of_reshape():
    g = _rule_graph("""  %a = reshape %x {shape = [6]} : f32[6]
  %b = reshape %a {shape = [3, 2]} : f32[3, 2]
  %y = relu %b : f32[3, 2]
  return %y""", "f32[3, 2]")
    out = canon(g)
    assert kinds(out) == ["reshape", "relu"]
    (r,) = [op for op in out.ops() if op.kind == "reshape"]
    assert r.operands == ("x",) and tuple(r.attr["shape"]) == (3, 2)
    same_results_on_random_inputs(g, out)


def test_rule_reshape_of_reshape_keeps_inner_when_used():
    g = _rule_graph("""  %a = reshape %x {shape = [6]} : f32[6]
  %b = reshape %a {shape = [3, 2]} : f32[3, 2]
  %c = reshape %a {shape = [1, 6]} : f32[1, 6]
  %y = reshape %c {shape = [3, 2]} : f32[3, 2]
  %z = add %b, %y : f32[3, 2]
  return %z""", "f32[3, 2]")
    out = canon(g)
    for op in out.ops():
        if op.kind == "reshape":
            assert op.operands == ("x",)
    same_results_on_random_inputs(g, out)


def test_rule_single_negation_stays():
    g = _rule_graph("""  %n1 = neg %x : f32[2, 3]
  %y = relu %n1 : f32[2, 3]
  return %y""")
    assert kinds(canon(g)) == ["neg", "relu"]


def test_rule_double_negation_integer():
    src = """graph @n(%x: i8[4]) -> i8[4] {
  %n1 = neg %x : i8[4]
  %n2 = neg %n1 : i8[4]
  %y = add %n2, %x : i8[4]
  return %y
}"""
    g = ladder.parse(src)
    out = canon(g)
    assert "neg" not in kinds(out)
    x = np.array([-128, -1, 0, 127], np.int8)
    same_results(ladder.run(g, {"x": x}), ladder.run(out, {"x": x}))


def test_rule_single_operand_concat():
    g = _rule_graph("""  %c = concat %x {axis = 0} : f32[2, 3]
  %y = relu %c : f32[2, 3]
  return %y""")
    assert kinds(canon(g)) == ["relu"]


def test_rules_off_nothing_else_changes():
    # a graph with nothing to simplify comes out equal
    g = ladder.parse(EXAMPLES[0])
    assert canon(g) == g
    assert canon(canon(g)) == canon(g)


# -- canonicalize keeps results -------------------------------------------------------------------------

@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_canonicalize_preserves_examples(path):
    g = ladder.parse(path)
    w = weights.random(g, 0)
    x = random_inputs(g, 1)
    out = canon(g)
    ladder.verify(out)
    same_results(ladder.run(g, x, w), ladder.run(out, x, w))
    assert ladder.parse(str(out)) == out


def test_canonicalize_preserves_bitnet_tiny():
    from ladder import models

    g = models.bitnet_decoder(models.SIZES["tiny"], 2)
    w = weights.random(g, 0)
    rng = np.random.default_rng(0)
    inputs = {"tokens": np.array([3, 200], np.int32), "pos": np.array([5, 6], np.int32),
              "start": np.array([5], np.int32), "kv_len": np.array([7], np.int32)}
    for v in g.inputs:
        if v.name not in inputs:
            inputs[v.name] = rng.standard_normal(v.type.shape).astype(np.float32)
    out = canon(g)
    assert len(out) < len(g)
    assert out.outputs == g.outputs
    before, after = ladder.run(g, inputs, w), ladder.run(out, inputs, w)
    same_results(before, after)
    assert before["logits"].shape == (2, models.SIZES["tiny"].vocab)
    assert np.all(np.isfinite(before["logits"]))


def test_canonicalize_preserves_folded_and_simplified_mix():
    src = """graph @m(%x: f32[2, 3]) -> f32[3, 2] {
  %k = const 2.0 : f32[2, 3]
  %k2 = neg %k : f32[2, 3]
  %k3 = neg %k2 : f32[2, 3]
  %a = mul %x, %k3 : f32[2, 3]
  %b = mul %x, %k3 : f32[2, 3]
  %r = reshape %a {shape = [6]} : f32[6]
  %r2 = reshape %r {shape = [3, 2]} : f32[3, 2]
  %t = transpose %b {perm = [1, 0]} : f32[3, 2]
  %y = add %r2, %t : f32[3, 2]
  return %y
}"""
    g = ladder.parse(src)
    out = canon(g)
    assert "neg" not in kinds(out)
    assert kinds(out).count("mul") == 1
    same_results_on_random_inputs(g, out)


def test_canonicalize_keeps_output_names_when_output_is_simplified():
    g = _rule_graph("""  %y = reshape %x {shape = [2, 3]} : f32[2, 3]
  return %y""")
    same_results_on_random_inputs(g, canon(g))


def test_canonicalize_keeps_every_output_when_outputs_are_duplicates():
    g = ladder.parse("""graph @g(%x: f32[2, 2]) -> (f32[2, 2], f32[2, 2]) {
  %a = relu %x : f32[2, 2]
  %b = relu %x : f32[2, 2]
  return %a, %b
}""")
    x = random_inputs(g)
    before = ladder.run(g, x)
    assert list(before) == ["a", "b"]
    same_results(before, ladder.run(canon(g), x))


def test_default_pipeline_reads_tuning_records_only_when_given():
    from ladder.passes import default_pipeline
    from ladder.passes.lut import Lut

    plain = default_pipeline("cpu:avx2", 2)
    assert "tuning" not in plain and plain == default_pipeline("cpu:avx2", 2)
    (lut,) = [p for p in PassManager(plain).passes if isinstance(p, Lut)]
    assert (lut.choose, lut.tuning, lut.records) == ("auto", "", None)
    tuned = default_pipeline("cpu:avx2", 2, "/data/tune.json")
    (lut,) = [p for p in PassManager(tuned).passes if isinstance(p, Lut)]
    assert lut.tuning == "/data/tune.json" and str(lut).endswith("tuning=/data/tune.json}")
    with pytest.raises(ladder.LadderError, match="cannot hold ','"):
        default_pipeline("cpu", None, "/data/a,b.json")
    with pytest.raises(ladder.LadderError, match="has none to choose"):
        default_pipeline("asic:lut-tc", None, "/data/tune.json")


def test_the_graphs_op_order_is_kept_up_to_date_through_rewrites():
    """Graph.nodes() keeps its topological order between changes: equal to a fresh sort after appends,
    replacements and removals (a pipeline asks for it many times)."""
    import networkx as nx

    from ladder.ir import Op

    rng = np.random.default_rng(0)
    for _ in range(20):
        g = ladder.parse(SMALL)
        for step in range(30):
            ops = g.ops()
            kind = rng.integers(3)
            if kind == 0:  # append a relu of a random value
                src = ops[rng.integers(len(ops))].results[0]
                if src.type.dtype.name == "f32":
                    g.add_op(Op("relu", (src.name,), (), (type(src)(g.fresh_name("r"), src.type),)))
            elif kind == 1:  # rewire an op of one operand to read another value of its type
                relus = [n for n in g.nodes() if len(g.op(n).operands) == 1]
                if relus:
                    n = relus[rng.integers(len(relus))]
                    op = g.op(n)
                    after = nx.descendants(g.nx, n) | {n}  # any other value, later ones too (no cycle)
                    same = [v for v in [g.op(m).results[0] for m in g.nodes() if m not in after] + list(g.inputs)
                            if v.type == g.type_of(op.operands[0])]
                    if same:
                        g.replace_op(n, op.with_(operands=(same[rng.integers(len(same))].name,)))
            else:  # remove an unused op
                dead = [n for n in g.nodes() if not any(g.users(r.name) or r.name in g.outputs
                                                        for r in g.op(n).results)]
                if dead:
                    g.remove_op(dead[rng.integers(len(dead))])
            assert g.nodes() == list(nx.lexicographical_topological_sort(g.nx)), step
