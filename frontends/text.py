"""The .lir text format, parsed with lark.

    graph @name(%x: f32[1, 2560]) -> f32[1, 2560] {
      %w = param @w_up : ternary[6912, 2560]           # a weight, by name
      %c = const [[1, 2], [3, 4]] : i8[2, 2]            # a literal (a bare number fills the shape)
      %q, %s = quantize %x {scheme = "absmax", dtype = i8} : i8[1, 2560], f32[1, 1]
      return %y
    }

Errors carry ``file:line:col``, the line with a caret and what was expected. Anything wrong with the text
raises a ParseError or VerifyError (both LadderError), never another exception.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ladder.errors import LadderError, Location, ParseError, VerifyError
from ladder.ir import ConstData, Graph, Value
from ladder.ops import get_op, make_op
from ladder.types import DTYPES, MAX_RANK, TensorType
from ladder.verifier import verify

GRAMMAR = r"""
start: graph
graph: "graph" GLOBAL "(" [arg ("," arg)*] ")" "->" rettypes "{" stmt* ret "}"
arg: LOCAL ":" ttype
rettypes: ttype | "(" [ttype ("," ttype)*] ")"
stmt: LOCAL ("," LOCAL)* "=" NAME [operand ("," operand)*] [attrs] ":" ttype ("," ttype)*
?operand: LOCAL | GLOBAL | literal
ret: "return" [LOCAL ("," LOCAL)*]
attrs: "{" [attr ("," attr)*] "}"
attr: NAME "=" value
?value: literal | NAME -> word | STRING -> string
?literal: number | list
list: "[" [item ("," item)*] "]"
?item: literal | STRING -> string
number: NUMBER
ttype: NAME ["<" LAYOUT ">"] "[" [INT ("," INT)*] "]"

LOCAL: /%[A-Za-z0-9_.$]+/
GLOBAL: /@[A-Za-z0-9_.$\/\-]+/ | /@"(\\.|[^"\\\n])*"/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
LAYOUT: /[A-Za-z_][A-Za-z0-9_]*(\+[A-Za-z0-9_]+)?/
INT: /[0-9]+/
NUMBER.2: /[+-]?((inf|nan)(?![A-Za-z0-9_])|([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?)/
STRING: /"(\\.|[^"\\\n])*"/
COMMENT: /#[^\n]*/
%ignore COMMENT
%ignore /[ \t\r\n]+/
"""

# Literals are for small tensors; weights belong in params.
MAX_LITERAL_ELEMENTS = 1 << 24

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=True)

_WORDS = {
    "LOCAL": "a value like %x", "GLOBAL": "a name like @w", "NAME": "a name", "INT": "a dimension",
    "NUMBER": "a number", "STRING": "a string", "$END": "the end of the text",
}


def parse(text: str, filename: str = "<string>", *, check: bool = True) -> Graph:
    """Parse .lir text into a Graph (verified unless ``check`` is False)."""
    lines = text.splitlines()
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, lines, filename) from None
    except LarkError as e:  # any other lark failure still names the file
        raise ParseError(str(e).splitlines()[0], Location(filename)) from None
    except RecursionError:
        raise ParseError("the text nests too deeply", Location(filename)) from None
    try:
        graph, return_problem = _Builder(filename, lines).graph(tree.children[0])
    except RecursionError:
        raise ParseError("the text nests too deeply", Location(filename)) from None
    diags = []
    if check:
        try:
            verify(graph)
        except VerifyError as e:
            diags.extend(e.diagnostics)
    if return_problem is not None:
        diags.append(return_problem)
    if diags:
        raise VerifyError(diags)
    return graph


def parse_file(path: str | os.PathLike, *, check: bool = True) -> Graph:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParseError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ParseError(f"cannot read {path}: {e}") from None
    return parse(text, str(path), check=check)


def _loc(filename: str, lines: list[str], line: int, col: int) -> Location:
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    return Location(filename, line, col, text)


def _syntax_error(e: UnexpectedInput, text: str, lines: list[str], filename: str) -> ParseError:
    if isinstance(e, UnexpectedEOF) or getattr(e, "line", -1) in (None, -1):
        line = len(lines) or 1
        col = len(lines[-1]) + 1 if lines else 1
        found = "the end of the text"
    else:
        line, col = e.line, e.column
        found = None
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream is not None and e.pos_in_stream < len(text) else "?"
        found = f"character {ch!r}"
        expected = e.allowed
    elif isinstance(e, UnexpectedToken):
        tok = e.token
        if tok.type == "$END":
            found = "the end of the text"
        else:
            shown = str(tok) if len(str(tok)) <= 40 else str(tok)[:37] + "..."
            found = f"{tok.type.lower() if tok.type in _WORDS else 'token'} {shown!r}"
        expected = e.accepts or e.expected
    else:
        expected = getattr(e, "expected", set())
    want = sorted({_describe_terminal(t) for t in (expected or ())})
    msg = f"unexpected {found}"
    if want:
        msg += "; expected " + (", ".join(want[:-1]) + " or " + want[-1] if len(want) > 1 else want[0])
    return ParseError(msg, _loc(filename, lines, line, col))


def _describe_terminal(name: str) -> str:
    if name in _WORDS:
        return _WORDS[name]
    try:
        pattern = _PARSER.get_terminal(name).pattern
    except (KeyError, AttributeError):
        return name.lower()
    return f"'{pattern.value}'" if pattern.type == "str" else name.lower()


class _Builder:
    """Turns the parse tree into a Graph, checking names and literals as it goes."""

    def __init__(self, filename: str, lines: list[str]):
        self.filename = filename
        self.lines = lines

    def loc(self, node) -> Location:
        if isinstance(node, Token):
            return _loc(self.filename, self.lines, node.line, node.column)
        meta = node.meta
        return _loc(self.filename, self.lines, getattr(meta, "line", 0), getattr(meta, "column", 0))

    def error(self, msg: str, node) -> ParseError:
        return ParseError(msg, self.loc(node))

    def graph(self, tree: Tree) -> tuple[Graph, LadderError | None]:
        """The graph, and the problem with its declared return types if any (reported with the
        verifier's findings, so a wrong type at an op is reported there too)."""
        name_tok, *rest = tree.children
        args = [c for c in rest if isinstance(c, Tree) and c.data == "arg"]
        rettypes = next(c for c in rest if isinstance(c, Tree) and c.data == "rettypes")
        stmts = [c for c in rest if isinstance(c, Tree) and c.data == "stmt"]
        ret = next(c for c in rest if isinstance(c, Tree) and c.data == "ret")
        inputs = []
        seen = set()
        for a in args:
            tok, tt = a.children
            name = tok[1:]
            if name in seen:
                raise self.error(f"input %{name} is declared twice", tok)
            seen.add(name)
            inputs.append(Value(name, self.ttype(tt)))
        graph = Graph(self.global_name(name_tok), inputs, self.loc(tree))
        for s in stmts:
            self.stmt(graph, s)
        outs = [t for t in ret.children if t is not None]
        for t in outs:
            if not graph.defines(t[1:]):
                raise self.error(f"return uses %{t[1:]}, which is not defined", t)
        graph.set_outputs([t[1:] for t in outs])
        declared = [self.ttype(t) for t in rettypes.children if t is not None]
        actual = graph.output_types()
        if declared != actual:
            return graph, LadderError(
                f"graph @{graph.name} declares it returns ({', '.join(map(str, declared))}) but returns "
                f"({', '.join(map(str, actual))})", self.loc(ret))
        return graph, None

    def global_name(self, tok: Token) -> str:
        body = str(tok)[1:]
        if body.startswith('"'):
            return self.quoted(body, tok, "quoted name")
        return body

    def quoted(self, body: str, tok: Token, what: str) -> str:
        """A JSON-quoted string that is valid Unicode: a lone surrogate (``\\ud800``) is no character, and
        would fail later, when a name is encoded to look up or write a weight."""
        try:
            value = json.loads(body)
        except ValueError:
            raise self.error(f"bad {what} {body}", tok) from None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise self.error(f"{what} {body} holds a lone surrogate {value[e.start]!r} (code point "
                             f"U+{ord(value[e.start]):04X}), which is not a character", tok) from None
        return value

    def ttype(self, tree: Tree) -> TensorType:
        name_tok, layout_tok, *dims = tree.children
        dt = DTYPES.get(str(name_tok))
        if dt is None:
            raise self.error(f"unknown element type '{name_tok}'; expected one of {', '.join(DTYPES)}", name_tok)
        shape = []
        if len(dims) > MAX_RANK:
            raise self.error(f"a tensor of rank {len(dims)} has too many dimensions (at most {MAX_RANK})", name_tok)
        for d in dims:
            if d is None:
                continue
            if len(d) > 18:
                raise self.error(f"dimension {str(d)[:20]}... is too large", d)
            shape.append(int(d))
        try:
            return TensorType(dt, tuple(shape), None if layout_tok is None else str(layout_tok))
        except LadderError as e:
            raise self.error(e.message, layout_tok or name_tok) from None

    def stmt(self, graph: Graph, tree: Tree) -> None:
        children = tree.children
        i = 0
        names = []
        while isinstance(children[i], Token) and children[i].type == "LOCAL":
            names.append(children[i])
            i += 1
        kind_tok = children[i]
        i += 1
        loc = self.loc(kind_tok)
        try:
            opdef = get_op(str(kind_tok), loc)
        except LadderError as e:
            raise ParseError(e.message, loc, notes=e.notes) from None
        operands, attrs_tree, types = [], None, []
        for c in children[i:]:
            if isinstance(c, Tree) and c.data == "attrs":
                attrs_tree = c
            elif isinstance(c, Tree) and c.data == "ttype":
                types.append(self.ttype(c))
            elif c is not None:
                operands.append(c)
        attrs = self.attrs(attrs_tree, opdef) if attrs_tree is not None else {}
        refs = self.source_operands(opdef.name, operands, types, attrs, kind_tok)
        for tok in refs:
            if not graph.defines(tok[1:]):
                raise self.error(f"%{tok[1:]} is not defined before this use", tok)
        for tok in names:
            if graph.defines(tok[1:]):
                raise self.error(f"%{tok[1:]} is already defined", tok)
        if len(set(names)) != len(names):
            raise self.error("a statement names the same result twice", names[0])
        op = make_op(opdef.name, [t[1:] for t in refs], [graph.type_of(t[1:]) for t in refs], attrs,
                     [t[1:] for t in names], types, loc)
        graph.add_op(op)

    def source_operands(self, kind, operands, types, attrs, kind_tok) -> list[Token]:
        """Move a param's @name and a const's literal into attributes; return the %value operands."""
        if kind == "param":
            if len(operands) != 1 or not (isinstance(operands[0], Token) and operands[0].type == "GLOBAL"):
                raise self.error("param takes one weight name, like: param @w : f32[4]", kind_tok)
            attrs["ref"] = self.global_name(operands[0])
            return []
        if kind == "const":
            if len(operands) != 1 or isinstance(operands[0], Token):
                raise self.error("const takes one literal, like: const [1.0, 2.0] : f32[2]", kind_tok)
            if len(types) != 1:
                raise self.error("const has one result type", kind_tok)
            attrs["value"] = ConstData(self.const_array(operands[0], types[0]))
            return []
        for o in operands:
            if not (isinstance(o, Token) and o.type == "LOCAL"):
                raise self.error(f"'{kind}' takes values like %x as operands", o if isinstance(o, Token) else kind_tok)
        return operands

    def attrs(self, tree: Tree, opdef) -> dict:
        out = {}
        for a in tree.children:
            if a is None:
                continue
            key, val = a.children
            if str(key) in out:
                raise self.error(f"attribute '{key}' is given twice", key)
            out[str(key)] = self.attr_value(val)
        return out

    def attr_value(self, v):
        if isinstance(v, Tree) and v.data == "word":
            w = str(v.children[0])
            return {"true": True, "false": False}.get(w, w)
        if isinstance(v, Tree) and v.data == "string":
            return self.quoted(str(v.children[0]), v.children[0], "string")
        return self.literal_value(v)

    def literal_value(self, v):
        if isinstance(v, Tree) and v.data == "number":
            try:
                return _number(str(v.children[0]))
            except ValueError:
                raise self.error(f"number {str(v.children[0])[:20]}... is too long", v.children[0]) from None
        if isinstance(v, Tree) and v.data == "list":
            return [self.literal_value(c) for c in v.children if c is not None]
        if isinstance(v, Tree) and v.data == "string":
            return self.attr_value(v)
        raise self.error("expected a literal", v)

    def const_array(self, lit, t: TensorType) -> np.ndarray:
        if t.size > MAX_LITERAL_ELEMENTS:
            raise self.error(f"a literal of {t.size} elements is too large; use a param for big tensors", lit)
        value = self.literal_value(lit)
        if _holds_string(value):
            raise self.error("a tensor literal holds numbers, not strings", lit)
        try:
            arr = np.array(value, dtype=np.float64)
        except (ValueError, OverflowError):
            raise self.error("the literal is not rectangular", lit) from None
        if arr.dtype == object or (arr.ndim and arr.size == 0 and arr.shape != t.shape):
            raise self.error("the literal is not rectangular", lit)
        if arr.ndim == 0 and t.rank > 0:
            arr = np.broadcast_to(arr, t.shape)
        if arr.shape != t.shape:
            raise self.error(f"literal has shape {list(arr.shape)} but the type is {t}", lit)
        dt = t.dtype
        if dt.is_float and dt.kind != "table":
            with np.errstate(over="ignore", invalid="ignore"):
                out = arr.astype(dt.np_dtype)
            # a finite number the type cannot hold would become inf (or nan): say so rather than change it
            lost = np.isfinite(arr) & ~np.isfinite(out.astype(np.float64))
            if lost.any():
                raise self.error(f"the literal holds {float(arr[lost].flat[0])!r}, beyond the range of {dt.name}",
                                 lit)
            return out
        try:
            dt.check(arr, "the literal", self.loc(lit))
        except LadderError as e:
            raise ParseError(e.message, self.loc(lit)) from None
        return arr.astype(np.int64).astype(dt.np_dtype)


def _number(s: str):
    body = s.lstrip("+-")
    if body in ("inf", "nan"):
        return float(s)
    if any(c in body for c in ".eE"):
        return float(s)
    return int(s)


def _holds_string(value) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and any(_holds_string(v) for v in value)
