"""Printing an ASIC program as assembly text (``asm.py`` parses it back; see there for the syntax).

This module sits below ``isa.py``, whose ``str(program)`` it provides: it reads instructions and records through
their dataclass fields and imports no ISA class at run time (``Instr`` and ``Program`` are named for annotations
only). Tiles come from ``tile.py``, below both.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import TYPE_CHECKING, Any

from ladder.errors import LadderError

from .tile import Tile

if TYPE_CHECKING:
    from .isa import Instr, Program

SIMPLE_NAME = re.compile(r"[A-Za-z0-9_.$/\-]+")

# Declarations: keyword -> the field the positional %name fills (asm.py pairs each with its record class).
DECLARED_NAME = {"buffer": "name", "input": "value", "output": "value", "weight": "buffer"}


def instr_fields(cls: type[Instr]) -> list[dataclasses.Field]:
    """The fields an instruction's text shows (``fn`` of vec is part of the mnemonic, ``vec.<fn>``)."""
    fields = [f for f in dataclasses.fields(cls) if not (getattr(cls, "opcode", "") == "vec" and f.name == "fn")]
    return sorted(fields, key=lambda f: (f.name in ("acc", "op"), f.name == "op"))  # base fields last


def format_value(v: Any, ref: bool = False) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Tile):
        return str(v)
    if isinstance(v, str):
        return f"%{v}" if ref else json.dumps(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, tuple) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in v) \
            and v:
        return "{" + ", ".join(f"{k}={format_value(x)}" for k, x in v) + "}"
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(format_value(x, ref) for x in v) + "]"
    raise LadderError(f"cannot print {v!r} in assembly")


def _fields_text(record, fields, refs=(), skip=()) -> str:
    parts = []
    for f in fields:
        if f.name in skip:
            continue
        v = getattr(record, f.name)
        if f.default is not dataclasses.MISSING and v == f.default:
            continue
        parts.append(f"{f.name}={format_value(v, f.name in refs)}")
    return ", ".join(parts)


def print_instr(ins: Instr) -> str:
    body = _fields_text(ins, instr_fields(type(ins)), type(ins).ref_fields())
    return f"{ins.mnemonic} {body}".rstrip()


def _print_decl(keyword: str, record) -> str:
    key = DECLARED_NAME[keyword]
    refs = ("buffer",) if keyword != "weight" else ()  # a weight image's buffer is its declared name
    body = _fields_text(record, dataclasses.fields(record), refs, skip=(key,))
    return f"{keyword} %{getattr(record, key)} {body}".rstrip()


def print_program(p: Program) -> str:
    name = p.name if SIMPLE_NAME.fullmatch(p.name) else json.dumps(p.name)
    lines = [f"program @{name} config={json.dumps(p.config)}, sram={p.sram_bytes} {{"]
    lines += ["  " + _print_decl("buffer", b) for b in p.buffers]
    lines += ["  " + _print_decl("input", b) for b in p.inputs]
    lines += ["  " + _print_decl("output", b) for b in p.outputs]
    lines += ["  " + _print_decl("weight", w) for w in p.weights]
    lines += ["  " + print_instr(i) for i in p.instrs]
    lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = ["DECLARED_NAME", "format_value", "instr_fields", "print_instr", "print_program"]
