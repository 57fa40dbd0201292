"""The verifier on graphs built directly with ladder.ir (bypassing the parser's and builder's checks)."""

from __future__ import annotations

import numpy as np
import pytest

import ladder
from ladder.errors import Location
from ladder.ir import Graph, Op, Value
from ladder.types import tensor_type


def V(name: str, t: str) -> Value:
    return Value(name, tensor_type(t))


def graph(*ops: Op, inputs=("x:f32[2, 3]",), outputs=None, name="g") -> Graph:
    ins = [V(*spec.split(":")) for spec in inputs]
    g = Graph(name, ins)
    for op in ops:
        g.add_op(op)
    if outputs is None:
        outputs = [ops[-1].results[0].name] if ops else []
    g.set_outputs(outputs)
    return g


def verify_error(g: Graph) -> ladder.VerifyError:
    with pytest.raises(ladder.VerifyError) as ei:
        ladder.verify(g)
    return ei.value


def test_valid_graph_verifies_and_is_returned():
    g = graph(Op.make("relu", ["x"], {}, [V("y", "f32[2, 3]")]),
              Op.make("reshape", ["y"], {"shape": [3, 2]}, [V("z", "f32[3, 2]")]))
    assert ladder.verify(g) is g


# Each case: (ops, op kind the message must name, value the message must name, a word about the problem)
BAD = {
    "wrong result type": (
        [Op.make("relu", ["x"], {}, [V("y", "f32[3, 2]")])], "relu", "%y", "f32[2, 3]"),
    "wrong result dtype": (
        [Op.make("add", ["x", "x"], {}, [V("s", "f16[2, 3]")])], "add", "%s", "f16[2, 3]"),
    "too many operands": (
        [Op.make("relu", ["x", "x"], {}, [V("y", "f32[2, 3]")])], "relu", "%y", "operand"),
    "too few operands": (
        [Op.make("matmul", ["x"], {}, [V("m", "f32[2, 2]")])], "matmul", "%m", "operand"),
    "unknown attribute": (
        [Op.make("relu", ["x"], {"alpha": 0.1}, [V("y", "f32[2, 3]")])], "relu", "%y", "alpha"),
    "missing required attribute": (
        [Op.make("reshape", ["x"], {}, [V("r", "f32[6]")])], "reshape", "%r", "shape"),
    "attribute of the wrong kind (str for ints)": (
        [Op.make("transpose", ["x"], {"perm": "1,0"}, [V("t", "f32[3, 2]")])], "transpose", "%t", "perm"),
    "attribute of the wrong kind (float for int)": (
        [Op.make("softmax", ["x"], {"axis": 1.5}, [V("sm", "f32[2, 3]")])], "softmax", "%sm", "axis"),
    "attribute of the wrong kind (int for bool)": (
        [Op.make("matmul", ["x", "x"], {"transpose_b": 1}, [V("m", "f32[2, 2]")])], "matmul", "%m",
        "transpose_b"),
    "attribute of the wrong kind (bad dtype name)": (
        [Op.make("cast", ["x"], {"dtype": "f99"}, [V("c", "f32[2, 3]")])], "cast", "%c", "f99"),
    "attribute with a value not among its choices": (
        [Op.make("reduce", ["x"], {"kind": "median"}, [V("red", "f32[]")])], "reduce", "%red", "median"),
    "unknown op kind": (
        [Op.make("frobnicate", ["x"], {}, [V("f", "f32[2, 3]")])], "frobnicate", "%f", "unknown"),
    "wrong number of results": (
        [Op.make("relu", ["x"], {}, [V("y", "f32[2, 3]"), V("y2", "f32[2, 3]")])], "relu", "%y", "result"),
    "too few results for a multi-result op": (
        [Op.make("quantize", ["x"], {"scheme": "absmax", "dtype": "i8"}, [V("q", "i8[2, 3]")])],
        "quantize", "%q", "result"),
    "param with an empty name": (
        [Op.make("param", [], {"ref": ""}, [V("p", "f32[2]")])], "param", "%p", "name"),
    "param with a non-string name": (
        [Op.make("param", [], {"ref": 5}, [V("p", "f32[2]")])], "param", "%p", "ref"),
    "param without a name": (
        [Op.make("param", [], {}, [V("p", "f32[2]")])], "param", "%p", "ref"),
    "const whose literal has another shape": (
        [Op.make("const", [], {"value": np.zeros(3, np.float32)}, [V("k", "f32[2]")])], "const", "%k", "shape"),
    "const without a value": (
        [Op.make("const", [], {}, [V("k", "f32[2]")])], "const", "%k", "value"),
    "const holding a value its type cannot encode": (
        [Op.make("const", [], {"value": np.array([2, 0], np.int8)}, [V("k", "ternary[2]")])], "const", "%k", "2"),
    "operand types that do not fit": (
        [Op.make("matmul", ["x", "x"], {}, [V("m", "f32[2, 2]")])], "matmul", "%m", "[2, 3]"),
    "low-bit operand to add": (
        [Op.make("param", [], {"ref": "w"}, [V("w", "ternary[2, 3]")]),
         Op.make("add", ["w", "w"], {}, [V("s", "ternary[2, 3]")])], "add", "%s", "ternary"),
}




@pytest.mark.parametrize("case", list(BAD))
def test_bad_op_is_verify_error_naming_op_and_value(case):
    ops, kind, value, word = BAD[case]
    e = verify_error(graph(*ops))
    assert isinstance(e, ladder.LadderError)
    assert len(e.diagnostics) == 1, str(e)
    msg = str(e)
    assert f"'{kind}'" in msg, msg
    assert value in msg, msg
    assert word in msg, msg
    assert "verify error" in msg


@pytest.mark.parametrize("value", [3, [1.0, 2.0]])
def test_const_value_of_the_wrong_kind_is_verify_error(value):
    g = graph(Op.make("const", [], {"value": value}, [V("k", "f32[2]")]))
    e = verify_error(g)
    assert "'const'" in str(e) and "%k" in str(e)


def test_param_declared_with_two_types():
    g = graph(Op.make("param", [], {"ref": "w"}, [V("a", "f32[2, 3]")]),
              Op.make("param", [], {"ref": "w"}, [V("b", "f32[3, 2]")]),
              Op.make("add", ["x", "a"], {}, [V("s", "f32[2, 3]")]),
              outputs=["s", "b"])
    e = verify_error(g)
    assert len(e.diagnostics) == 1
    msg = str(e)
    assert "@w" in msg and "f32[2, 3]" in msg and "f32[3, 2]" in msg


def test_param_declared_twice_with_the_same_type_is_fine():
    g = graph(Op.make("param", [], {"ref": "w"}, [V("a", "f32[2, 3]")]),
              Op.make("param", [], {"ref": "w"}, [V("b", "f32[2, 3]")]),
              Op.make("add", ["a", "b"], {}, [V("s", "f32[2, 3]")]))
    assert ladder.verify(g) is g


def test_param_declared_with_two_types_names_op_and_value():
    g = graph(Op.make("param", [], {"ref": "w"}, [V("a", "f32[2, 3]")]),
              Op.make("param", [], {"ref": "w"}, [V("b", "f32[3, 2]")]),
              outputs=["a", "b"])
    msg = str(verify_error(g))
    assert "'param'" in msg and "%b" in msg


def test_graph_with_no_outputs():
    g = graph(Op.make("relu", ["x"], {}, [V("y", "f32[2, 3]")]), outputs=[], name="empty_out")
    e = verify_error(g)
    assert len(e.diagnostics) == 1
    assert "@empty_out" in str(e)
    assert "return" in str(e)


def test_every_error_is_collected():
    g = graph(
        Op.make("relu", ["x"], {}, [V("a", "f32[9]")]),                       # wrong result type
        Op.make("frobnicate", ["x"], {}, [V("b", "f32[2, 3]")]),             # unknown op
        Op.make("reshape", ["x"], {}, [V("c", "f32[6]")]),                    # missing attribute
        Op.make("relu", ["x"], {"alpha": 1.0}, [V("d", "f32[2, 3]")]),        # unknown attribute
        Op.make("add", ["x"], {}, [V("e", "f32[2, 3]")]),                     # wrong operand count
        Op.make("relu", ["a"], {}, [V("f", "f32[7]")]),                       # uses %a's declared type f32[9]
        outputs=[],
    )
    e = verify_error(g)
    assert len(e.diagnostics) == 7, str(e)
    assert all(isinstance(d, ladder.LadderError) for d in e.diagnostics)
    joined = [d.message for d in e.diagnostics]
    for kind, value in [("relu", "%a"), ("frobnicate", "%b"), ("reshape", "%c"), ("relu", "%d"),
                        ("add", "%e"), ("relu", "%f")]:
        assert any(f"'{kind}'" in m and value in m for m in joined), (kind, value, joined)
    assert any("returns nothing" in m or "return" in m for m in joined)
    # the rendered error lists them all and says how many
    assert str(e).count("verify error") == 7
    assert "7 errors" in str(e)
    # %f is checked against %a's declared type (f32[9]) so the problem is reported once, at %f
    f_msg = next(m for m in joined if "%f" in m)
    assert "f32[9]" in f_msg and "f32[7]" in f_msg


def test_diagnostics_keep_op_locations():
    l1, l2 = Location("m.lir", 3, 5, "  %a = relu %x : f32[9]"), Location("m.lir", 4, 7, "  %b = oops %x")
    g = graph(Op.make("relu", ["x"], {}, [V("a", "f32[9]")], l1),
              Op.make("oops", ["x"], {}, [V("b", "f32[2, 3]")], l2))
    e = verify_error(g)
    assert [d.loc for d in e.diagnostics] == [l1, l2]
    assert e.loc == l1
    s = str(e)
    assert "m.lir:3:5" in s and "m.lir:4:7" in s


# -- parsed graphs -------------------------------------------------------------------------------------

def test_parsed_verify_error_has_file_line_col_and_caret():
    src = ("graph @g(%x: f32[2, 3]) -> f32[3, 3] {\n"
           "  %y = relu %x : f32[2, 3]\n"
           "  %z = matmul %y, %y : f32[3, 3]\n"
           "  return %z\n"
           "}\n")
    with pytest.raises(ladder.VerifyError) as ei:
        ladder.parse(src, filename="model.lir")
    e = ei.value
    assert e.loc is not None
    assert (e.loc.file, e.loc.line) == ("model.lir", 3)
    assert e.loc.col > 0
    s = str(e)
    assert f"model.lir:3:{e.loc.col}" in s
    assert "'matmul'" in s and "%z" in s
    assert "^" in s and "matmul %y, %y" in s


def test_parsed_verify_error_declared_type_mismatch(tmp_path):
    p = tmp_path / "bad.lir"
    p.write_text("graph @g(%x: f32[2]) -> f32[3] {\n"
                 "  %y = relu %x : f32[3]\n"
                 "  return %y\n"
                 "}\n")
    with pytest.raises(ladder.VerifyError) as ei:
        ladder.parse(p)
    e = ei.value
    assert e.loc.file == str(p)
    assert e.loc.line == 2
    assert e.loc.col == 8  # at the op kind
    assert "'relu'" in str(e) and "%y" in str(e)
    assert f"{p}:2:8" in str(e)


def test_parsed_unknown_attribute_is_located():
    src = ("graph @g(%x: f32[4]) -> f32[4] {\n"
           "  %y = softmax %x {axis = 0, temperature = 2.0} : f32[4]\n"
           "  return %y\n"
           "}\n")
    with pytest.raises(ladder.LadderError) as ei:
        ladder.parse(src, filename="a.lir")
    s = str(ei.value)
    assert "a.lir:2:" in s and "temperature" in s and "^" in s


def test_verify_after_builder_edit():
    # A graph that was fine stops verifying once an op is replaced by a wrong one.
    b = ladder.Builder("g")
    x = b.input("x", "f32[4]")
    y = b.relu(x, name="y")
    g = b.build(b.neg(y, name="n"))
    node = g.producer("y")
    g.replace_op(node, g.op(node).with_(results=(V("y", "f32[5]"),)))
    e = verify_error(g)
    msgs = [d.message for d in e.diagnostics]
    assert any("'relu'" in m and "%y" in m for m in msgs)


def test_const_out_of_range_is_still_a_verify_error():
    # Whatever its wording, it must be a VerifyError and not pass.
    g = graph(Op.make("const", [], {"value": np.array([2, 0], np.int8)}, [V("k", "ternary[2]")]))
    e = verify_error(g)
    assert "2" in str(e) and "ternary" in str(e)


def test_const_out_of_range_keeps_location():
    loc = Location("c.lir", 2, 8, "  %k = const [2, 0] : ternary[2]")
    g = graph(Op.make("const", [], {"value": np.array([2, 0], np.int8)}, [V("k", "ternary[2]")], loc))
    assert verify_error(g).loc == loc


@pytest.mark.parametrize("src_type,layout,msg", [
    ("f32[2, 32]", "q8", "only low-bit tensors (and i8 in q8 blocks) are packed"),
    ("i8[2, 32]", "nib16", "packing nib16 cannot hold i8"),
])
def test_pack_refuses_what_its_layout_cannot_hold_at_its_line(src_type, layout, msg):
    """i8 is packed only in q8 (a Q8_0 file's blocks); every other wide type is refused, and a layout is refused
    for a type it cannot hold, each at the op's line in the text."""
    src = (f"graph @g(%w: {src_type}) -> i8<q8>[2, 32] {{\n"
           f'  %p = pack %w {{layout = "{layout}"}} : i8<q8>[2, 32]\n'
           "  return %p\n"
           "}\n")
    with pytest.raises(ladder.LadderError) as ei:
        ladder.parse(src, filename="p.lir")
    s = str(ei.value)
    assert "p.lir:2:" in s and msg in s, s


def test_pack_takes_i8_in_q8_blocks():
    src = ('graph @g(%w: i8[2, 40]) -> i8<q8>[2, 40] {\n'
           '  %p = pack %w {layout = "q8"} : i8<q8>[2, 40]\n'
           "  return %p\n"
           "}\n")
    g = ladder.parse(src)
    assert g.type_of("p").storage_shape == (2, 64)  # 40 codes padded to two blocks of 32
