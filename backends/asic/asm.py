"""The assembly text of an ASIC program: ``print_program`` (asm_print.py) and ``parse_program`` (lark), a round trip.

    program @bitlinear config="lut-tc", sram=1048576 {
      buffer %x space="dram", bytes=1024, dtype="f32", shape=[2, 128], role="input"
      input %x buffer=%x, dtype="f32", shape=[2, 128]
      weight %w.img value="w.packed", format="tiles", tile_rows=64, tile_cols=128, layout="planes"
      dma.load dst=%h.x, src=%x, row_bytes=1024, op="h"
      vec.rmsnorm dst=[%h.y:f32[2, 128]], src=[%h.x:f32[2, 128], %h.n:f32[128]], attrs={eps=1e-05}, op="h"
      lmma dst=%acc:i32[2, 64]/64, table=%tab:i16[2, 32, 16], w=%w.ping:ternary<planes>[64, 128], op="acc"
      sync.barrier
    }

One statement per line: a mnemonic, for declarations the declared name, then ``field=value`` pairs for every
field that differs from its default. Values: integers, floats (``1e-05``, ``inf``), ``"strings"``,
``true``/``false``, buffer references ``%name``, tiles ``%buf+offset:dtype<layout>[shape]/stride``, lists
``[...]`` and attribute dicts ``{key=value}``. ``#`` starts a comment. Every error carries ``file:line:col``
and what was expected.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from functools import lru_cache
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ladder.errors import LadderError, Location, ParseError

from .asm_print import DECLARED_NAME, format_value, print_instr, print_program
from .isa import Binding, Buffer, Program, Tile, WeightImage, lookup_opcode

GRAMMAR = r"""
start: _NL? program _NL?
program: "program" GLOBAL [kv ("," kv)*] "{" _NL (stmt _NL)* "}"
stmt: MNEMONIC [REF] [kv ("," kv)*]
kv: NAME "=" value
?value: INT -> int
      | FLOAT -> float
      | STRING -> string
      | "true" -> true
      | "false" -> false
      | REF -> ref
      | tile
      | "[" [value ("," value)*] "]" -> list
      | "{" [kv ("," kv)*] "}" -> dict
tile: REF [offset] ":" NAME [layout] "[" [INT ("," INT)*] "]" [stride]
offset: "+" INT
layout: "<" NAME ">"
stride: "/" INT

MNEMONIC: /[a-z_][a-z0-9_]*(\.[a-z0-9_]+)?/
REF: /%[A-Za-z0-9_.$\-]+/
GLOBAL: /@[A-Za-z0-9_.$\/\-]+/ | /@"(\\.|[^"\\\n])*"/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
INT: /-?[0-9]+/
FLOAT: /-?(inf|nan)|-?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(?=[eE]))([eE][+-]?[0-9]+)?/
STRING: /"(\\.|[^"\\\n])*"/
COMMENT: /#[^\n]*/
_NL: /(\r?\n[\t ]*)+/
%ignore COMMENT
%ignore /[ \t]+/
"""

# Locations come from tokens (every error points at one), so trees carry no positions: faster.
_PARSER = Lark(GRAMMAR, parser="lalr", maybe_placeholders=False)

# Declarations: keyword -> (record class, name of the field the positional %name fills).
DECLARATIONS = {kw: (cls, DECLARED_NAME[kw]) for kw, cls in
                {"buffer": Buffer, "input": Binding, "output": Binding, "weight": WeightImage}.items()}


# -- parsing ------------------------------------------------------------------------------------------------

class _Where:
    """Locations inside one text."""

    def __init__(self, text: str, filename: str):
        self.lines = text.splitlines()
        self.filename = filename

    def at(self, line: int, col: int) -> Location:
        src = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        return Location(self.filename, line, col, src)

    def of(self, token: Token) -> Location:
        return self.at(token.line, token.column)


_TOKEN_WORDS = {"_NL": "a new line", "MNEMONIC": "a mnemonic", "REF": "a %name", "GLOBAL": "an @name",
                "NAME": "a field name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
                "EQUAL": "'='", "COMMA": "','", "LBRACE": "'{'", "RBRACE": "'}'", "LSQB": "'['",
                "RSQB": "']'", "COLON": "':'", "PLUS": "'+'", "SLASH": "'/'", "LESSTHAN": "'<'",
                "MORETHAN": "'>'", "PROGRAM": "'program'", "TRUE": "true", "FALSE": "false"}


def parse_program(text: str, filename: str = "<asm>") -> Program:
    """Assembly text -> Program. Raises ParseError (a LadderError) located at file:line:col."""
    where = _Where(text, filename)
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, where) from None
    prog = tree.children[0]
    name = prog.children[0][1:]
    name = json.loads(name) if name.startswith('"') else name
    header = dict(_kv(kv, where) for kv in prog.children[1:] if kv.data == "kv")
    unknown = set(header) - {"config", "sram"}
    if unknown:
        raise ParseError(f"unknown program field '{sorted(unknown)[0]}' (known: config, sram)",
                         where.of(prog.children[0]))
    records: dict[str, list] = {"buffer": [], "input": [], "output": [], "weight": [], "instr": []}
    for stmt in (c for c in prog.children if isinstance(c, Tree) and c.data == "stmt"):
        kind, record = _statement(stmt, where)
        records[kind].append(record)
    config = header.get("config", ("", None))[0]
    sram = header.get("sram", (0, None))[0]
    try:
        return Program(name, config, records["buffer"], records["instr"], records["input"], records["output"],
                       records["weight"], sram)
    except LadderError as e:
        raise ParseError(e.message, where.of(prog.children[0])) from None


def _syntax_error(e: UnexpectedInput, where: _Where) -> ParseError:
    loc = where.at(getattr(e, "line", 0) or 0, getattr(e, "column", 0) or 0)
    if isinstance(e, UnexpectedEOF):
        return ParseError("unexpected end of the program text; a program ends with '}'", loc)
    expected = sorted(_TOKEN_WORDS.get(t, t) for t in (getattr(e, "expected", None) or
                                                        getattr(e, "allowed", None) or ()))
    if isinstance(e, UnexpectedToken) and e.token.type == "$END":
        got = "unexpected end of the program text"
    elif isinstance(e, UnexpectedCharacters):
        got = f"unexpected character {e.char!r}"
    elif isinstance(e, UnexpectedToken):
        got = f"unexpected {str(e.token)!r}" if e.token.type != "_NL" else "unexpected end of line"
    else:
        got = "syntax error"
    return ParseError(f"{got}; expected {' or '.join(expected)}" if expected else got, loc)


def _statement(stmt: Tree, where: _Where):
    mnemonic = stmt.children[0]
    rest = stmt.children[1:]
    declared = rest[0] if rest and isinstance(rest[0], Token) and rest[0].type == "REF" else None
    kvs = [_kv(kv, where) for kv in rest if isinstance(kv, Tree)]
    if str(mnemonic) in DECLARATIONS:
        cls, key = DECLARATIONS[str(mnemonic)]
        if declared is None:
            raise ParseError(f"'{mnemonic}' needs a %name after it", where.of(mnemonic))
        fixed = {key: str(declared)[1:]}
        kind = str(mnemonic)
        refs = ("buffer",) if cls is not WeightImage else ()
    else:
        try:
            cls, fixed = lookup_opcode(str(mnemonic))
        except LadderError as e:
            raise ParseError(e.message, where.of(mnemonic)) from None
        if declared is not None:
            raise ParseError(f"'{mnemonic}' takes field=value pairs, not a name", where.of(declared))
        kind, refs = "instr", cls.ref_fields()
    return kind, _build(cls, fixed, kvs, refs, str(mnemonic), where.of(mnemonic), where)


@lru_cache(maxsize=None)
def _schema(cls) -> tuple[dict, dict]:
    """A record class's field types and fields, by name."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def _build(cls, fixed: dict, kvs, refs, what: str, loc: Location, where: _Where):
    hints, fields = _schema(cls)
    args = dict(fixed)
    for key, (value, node) in kvs:
        if key not in fields or key in fixed:
            known = ", ".join(k for k in fields if k not in fixed)
            raise ParseError(f"'{what}' has no field '{key}' (its fields: {known})", where.of(node))
        if key in args:
            raise ParseError(f"field '{key}' is given twice", where.of(node))
        args[key] = _coerce(value, hints[key], key in refs, f"field '{key}' of '{what}'", where.of(node))
    missing = [n for n, f in fields.items() if n not in args and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ParseError(f"'{what}' needs field(s) {', '.join(missing)}", loc)
    try:
        return cls(**args)
    except LadderError as e:
        raise ParseError(e.message, loc) from None


class _Ref(str):
    """A parsed %name (distinct from a "string")."""


def _kv(kv: Tree, where: _Where):
    key, value = kv.children
    return str(key), (_value(value, where), key)


def _value(node, where: _Where):
    if isinstance(node, Token):
        return _Ref(str(node)[1:]) if node.type == "REF" else node
    kind = node.data
    if kind == "int":
        return int(node.children[0])
    if kind == "float":
        return float(node.children[0])
    if kind == "string":
        return json.loads(node.children[0])
    if kind in ("true", "false"):
        return kind == "true"
    if kind == "ref":
        return _Ref(str(node.children[0])[1:])
    if kind == "list":
        return [_value(c, where) for c in node.children]
    if kind == "dict":
        return {k: v for k, (v, _) in (_kv(c, where) for c in node.children)}
    if kind == "tile":
        return _tile(node)
    raise AssertionError(kind)


def _tile(node: Tree) -> Tile:
    ref, *rest = node.children
    parts = {c.data: c.children[0] for c in rest if isinstance(c, Tree)}
    tokens = [c for c in rest if isinstance(c, Token)]
    dtype, dims = str(tokens[0]), tuple(int(t) for t in tokens[1:])
    return Tile(str(ref)[1:], dtype, dims, int(parts.get("offset", 0)), int(parts.get("stride", 0)),
                str(parts.get("layout", "")))


_KIND_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Tile: "a tile"}


def _coerce(value, hint, is_ref: bool, what: str, loc: Location):
    origin = typing.get_origin(hint)
    if hint is Tile:
        if isinstance(value, Tile):
            return value
        raise ParseError(f"{what} must be a tile %buf:dtype[shape], got {_show(value)}", loc)
    if hint is str:
        if is_ref:
            if isinstance(value, _Ref):
                return str(value)
            raise ParseError(f"{what} must be a buffer %name, got {_show(value)}", loc)
        if isinstance(value, str) and not isinstance(value, _Ref):
            return value
        raise ParseError(f"{what} must be a \"string\", got {_show(value)}", loc)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif origin is tuple:
        args = typing.get_args(hint)
        if args and typing.get_origin(args[0]) is tuple:  # attrs: tuple[tuple[str, Any], ...]
            if isinstance(value, dict):
                return tuple(sorted((k, _attr_value(v)) for k, v in value.items()))
            raise ParseError(f"{what} must be {{key=value, ...}}, got {_show(value)}", loc)
        if isinstance(value, list):
            return tuple(_coerce(v, args[0], is_ref, what, loc) for v in value)
        raise ParseError(f"{what} must be a list [...], got {_show(value)}", loc)
    elif hint is Any:
        return value
    raise ParseError(f"{what} must be {_KIND_WORDS.get(hint, str(hint))}, got {_show(value)}", loc)


def _attr_value(v):
    return tuple(_attr_value(x) for x in v) if isinstance(v, list) else v


def _show(value) -> str:
    if isinstance(value, _Ref):
        return f"%{value}"
    if isinstance(value, Tile):
        return f"tile {value}"
    return json.dumps(value) if isinstance(value, str) else repr(value)


__all__ = ["GRAMMAR", "format_value", "parse_program", "print_instr", "print_program"]
