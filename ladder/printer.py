"""Print a graph in the .lir text format (the parser in ladder.frontends.text reads it back).

The printer sits below ``ladder.ir``, whose ``str(graph)`` it provides: it reads graphs and ops through their
fields and never imports the IR at run time (``Graph`` and ``Op`` are named for annotations only).
"""

from __future__ import annotations

import html
import json
import math
import re
from typing import TYPE_CHECKING

import numpy as np

from .constdata import ConstData
from .types import DType

if TYPE_CHECKING:
    from .ir import Graph, Op

SIMPLE_REF = re.compile(r"[A-Za-z0-9_.$/\-]+\Z")


def local(name: str) -> str:
    return f"%{name}"


def global_ref(name: str) -> str:
    return f"@{name}" if SIMPLE_REF.match(name) else "@" + json.dumps(name)


def number(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = float(v)
    if math.isnan(f):
        return "-nan" if math.copysign(1.0, f) < 0 else "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(f)


def literal(data: ConstData) -> str:
    arr = data.array
    # ml_dtypes' types have kind 'V': tell floats (bfloat16, float8_*, float4_*) from ints by name.
    as_float = arr.dtype.kind == "f" or arr.dtype.name.startswith(("float", "bfloat"))
    if arr.size == 0 and arr.ndim > 0:
        return "0"  # a bare number fills the (empty) shape; "[]" would say shape [0]
    if data.is_splat and arr.ndim > 0:
        return _scalar(arr.reshape(-1)[0], as_float)
    return _nested(arr, as_float)


def _scalar(v, as_float: bool) -> str:
    return number(float(v) if as_float else int(v))


def _nested(arr: np.ndarray, as_float: bool) -> str:
    if arr.ndim == 0:
        return _scalar(arr[()], as_float)
    return "[" + ", ".join(_nested(a, as_float) for a in arr) + "]"


def attr_value(v) -> str:
    if isinstance(v, DType):
        return v.name
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(attr_value(x) for x in v) + "]"
    if isinstance(v, ConstData):
        return literal(v)
    return number(v)


def print_op(op: Op) -> str:
    names = ", ".join(local(r.name) for r in op.results)
    attrs = dict(op.attrs)
    if op.kind == "param":
        args = [global_ref(attrs.pop("ref"))]
    elif op.kind == "const":
        args = [literal(attrs.pop("value"))]
    else:
        args = [local(o) for o in op.operands]
    text = f"{names} = {op.kind}"
    if args:
        text += " " + ", ".join(args)
    if attrs:
        text += " {" + ", ".join(f"{k} = {attr_value(v)}" for k, v in sorted(attrs.items())) + "}"
    text += " : " + ", ".join(str(r.type) for r in op.results)
    notes = [r.type.storage_note() for r in op.results if r.type.layout]
    return text + ("  # " + "; ".join(notes) if notes else "")


def print_graph(graph: Graph) -> str:
    args = ", ".join(f"{local(v.name)}: {v.type}" for v in graph.inputs)
    types = [str(t) for t in graph.output_types()]
    ret = types[0] if len(types) == 1 else "(" + ", ".join(types) + ")"
    lines = [f"graph {global_ref(graph.name)}({args}) -> {ret} {{"]
    lines += [f"  {print_op(op)}" for op in graph.ops()]
    lines.append("  return " + ", ".join(local(o) for o in graph.outputs) if graph.outputs else "  return")
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph_html(graph: Graph) -> str:
    """A notebook view: the IR with op kinds and types highlighted, and a one-line summary."""
    body = []
    for line in print_graph(graph).splitlines():
        esc = html.escape(line)
        esc = re.sub(r"(= )([a-z_0-9]+)", r'\1<b style="color:#005cc5">\2</b>', esc, count=1)
        esc = re.sub(r"(: )([a-z0-9]+\[[0-9, ]*\])", r'\1<span style="color:#6f42c1">\2</span>', esc)
        body.append(esc)
    n_params = sum(1 for op in graph.ops() if op.kind == "param")
    summary = html.escape(f"@{graph.name}: {len(graph.inputs)} inputs, {len(graph)} ops "
                          f"({n_params} params), {len(graph.outputs)} outputs")
    return f"<div><i>{summary}</i><pre style='line-height:1.3'>{chr(10).join(body)}</pre></div>"
