"""Build graphs from Python. Makes the same graphs the parser makes (same ops, names and attributes).

    b = Builder("ffn")
    x = b.input("x", "f32[1, 2560]")
    w = b.param("w_up", "ternary[6912, 2560]")
    s = b.param("s_up", "f32[1]")
    h = b.matmul(x, b.dequant(w, s), transpose_b=True)
    g = b.build(b.relu2(h))

Every registered op is a method (``b.<kind>(*operands, name=..., **attrs)``); ops with several results
return a tuple. Each op's location is the Python line that built it.
"""

from __future__ import annotations

import itertools
import re
from typing import Sequence

import numpy as np

from .errors import LadderError, Location
from .ir import ConstData, Graph, Value
from .ops import OPS, make_op
from .types import TensorType, dtype_of_numpy, tensor_type
from .verifier import verify


class Builder:
    def __init__(self, name: str = "main"):
        self.graph = Graph(name, loc=Location.of_caller())
        self._counter = itertools.count()

    # -- naming ----------------------------------------------------------------------------------
    def _name(self, name: str | None) -> str:
        if name is not None:
            return name.lstrip("%")
        while True:
            cand = str(next(self._counter))
            if not self.graph.defines(cand):
                return cand

    # -- graph inputs, sources and outputs ----------------------------------------------------------
    def input(self, name: str, type: str | TensorType, shape: Sequence[int] | None = None) -> Value:
        v = Value(name.lstrip("%"), tensor_type(type, shape))
        g = self.graph
        if g.nx.number_of_nodes():
            raise LadderError("declare all inputs before the first op", Location.of_caller())
        g.inputs.append(v)
        g._define(v.name, None, len(g.inputs) - 1, Location.of_caller())
        return v

    def param(self, ref: str, type: str | TensorType, shape: Sequence[int] | None = None, *,
              name: str | None = None, stored: str = "") -> Value:
        t = tensor_type(type, shape)
        ref = ref.lstrip("@")
        if name is None:  # name the value after the weight, made unique if the weight is used twice
            base = re.sub(r"[^A-Za-z0-9_.$]", "_", ref) or "w"
            candidates = itertools.chain([base], (f"{base}.{k}" for k in itertools.count(1)))
            name = next(n for n in candidates if not self.graph.defines(n))
        attrs = {"ref": ref, **({"stored": stored} if stored else {})}
        return self._add("param", [], attrs, [self._name(name)], [t])[0]

    def const(self, array, type: str | TensorType | None = None, *, name: str | None = None) -> Value:
        arr = np.asarray(array)
        t = tensor_type(type) if type is not None else TensorType(dtype_of_numpy(arr.dtype), arr.shape)
        if arr.ndim == 0 and t.rank:
            arr = np.broadcast_to(arr, t.shape)
        t.dtype.check(arr, "const literal", Location.of_caller())
        arr = arr.astype(t.dtype.np_dtype) if arr.dtype != t.dtype.np_dtype else arr
        return self._add("const", [], {"value": ConstData(arr)}, [self._name(name)], [t])[0]

    def output(self, *values: Value) -> None:
        self.graph.set_outputs([_name_of(v) for v in values])

    def build(self, *outputs: Value) -> Graph:
        """Set the outputs (if given) and return the verified graph."""
        if outputs:
            self.output(*outputs)
        return verify(self.graph)

    # -- ops -------------------------------------------------------------------------------------------
    def op(self, kind: str, /, *operands: Value, name: str | Sequence[str] | None = None, **attrs):
        if kind in ("param", "const"):
            raise LadderError(f"use Builder.{kind}() for {kind} ops", Location.of_caller())
        names = [name] if isinstance(name, str) else list(name) if name is not None else None
        opnames = [_name_of(o) for o in operands]
        loc = Location.of_caller()
        types = [self.graph.type_of(n) if self.graph.defines(n) else _undefined(n, loc) for n in opnames]
        opdef = OPS.get(kind)
        count = opdef.result_count(opdef.full_attrs(attrs)) if opdef else 1
        names = names or [None] * count
        results = self._add(kind, opnames, attrs, [self._name(n) for n in names], None, types, loc)
        return results[0] if len(results) == 1 else tuple(results)

    def _add(self, kind, operands, attrs, names, types, operand_types=(), loc=None):
        loc = loc or Location.of_caller()
        op = make_op(kind, operands, operand_types, attrs, names, types, loc)
        self.graph.add_op(op)
        return list(op.results)

    def __getattr__(self, kind: str):
        if kind.startswith("_") or kind not in OPS:
            raise AttributeError(kind)

        def build_op(*operands, name=None, **attrs):
            return self.op(kind, *operands, name=name, **attrs)

        build_op.__doc__ = (OPS[kind].__doc__ or "").strip()
        return build_op


def _name_of(v) -> str:
    if isinstance(v, Value):
        return v.name
    if isinstance(v, str):
        return v.lstrip("%")
    raise LadderError(f"expected a value from this builder, got {v!r}")


def _undefined(name: str, loc: Location):
    raise LadderError(f"%{name} is not a value of this graph", loc)
