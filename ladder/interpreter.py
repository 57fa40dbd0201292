"""The reference interpreter: runs a graph op by op with each op's numpy semantics.

It is the living definition of what a graph means; every backend is tested against it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from . import budget as budget_mod
from . import weights as weights_mod
from .errors import RuntimeFailure
from .ir import Graph, Value
from .ops import OPS, InferError


def run(graph: Graph, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray] = (),
        weights: Mapping[str, np.ndarray] | None = None, *, keep: bool = False,
        memory_budget: int | float | str | None = None) -> dict[str, np.ndarray]:
    """Run ``graph``. ``inputs`` by name (without %) or in order; ``weights`` by param name.

    Returns the outputs by value name, in the graph's output order; with ``keep``, every value."""
    return Session(graph, weights, memory_budget=memory_budget).run(inputs, keep=keep)


class Session:
    """A graph bound to its weights. Everything computed from params and consts alone (packing weights,
    quantizing them) is computed once, here; ``run`` computes the rest for each set of inputs, dropping each
    value after its last use.

    ``memory_budget`` (ladder.budget; default: a share of this machine's memory): a graph that needs more is
    refused with a MemoryBudgetError before anything is allocated."""

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray] | None = None, *,
                 memory_budget: int | float | str | None = None):
        self.graph = graph
        self.memory = budget_mod.check(graph, memory_budget, "to run in the reference interpreter")
        bound = weights_mod.bind(graph, weights or {})
        self.fixed: dict[str, np.ndarray] = {}
        self._rest = []
        for op in graph.ops():
            if op.kind == "param":
                self._store(self.fixed, op, [bound[op.attr["ref"]]])
            elif op.operands and all(o in self.fixed for o in op.operands) or op.kind == "const":
                self._store(self.fixed, op, _compute(op, graph, self.fixed))
            else:
                self._rest.append(op)
        # what run may drop after each op: values read for the last time (outputs and fixed values stay)
        last_use = {o: i for i, op in enumerate(self._rest) for o in op.operands}
        stay = set(graph.outputs) | set(self.fixed)
        self._drop: list[list[str]] = [[] for _ in self._rest]
        for i, op in enumerate(self._rest):
            self._drop[i] += [r.name for r in op.results if r.name not in last_use and r.name not in stay]
        for name, i in last_use.items():
            if name not in stay:
                self._drop[i].append(name)

    def run(self, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray] = (), *,
            keep: bool = False) -> dict[str, np.ndarray]:
        env = dict(self.fixed)
        env.update(bind_inputs(self.graph, inputs))
        for op, drop in zip(self._rest, self._drop):
            self._store(env, op, _compute(op, self.graph, env))
            if not keep:
                for name in drop:
                    env.pop(name, None)
        if keep:
            return env
        return {name: env[name] for name in self.graph.outputs}

    @staticmethod
    def _store(env: dict, op, results) -> None:
        for r, arr in zip(op.results, results):
            arr = np.asarray(arr)
            if arr.shape != r.type.storage_shape or arr.dtype != r.type.storage_np_dtype:
                raise RuntimeFailure(  # a bug in an op's semantics, not in the user's graph
                    f"internal: {op.describe()} produced {arr.dtype}{list(arr.shape)} for %{r.name} : {r.type}",
                    op.loc)
            env[r.name] = arr


def _compute(op, graph: Graph, env: dict) -> list[np.ndarray]:
    opdef = OPS[op.kind]
    ins = [graph.type_of(o) for o in op.operands]
    try:
        with np.errstate(all="ignore"):
            return opdef.compute([env[o] for o in op.operands], opdef.full_attrs(op.attr),
                                 [r.type for r in op.results], ins)
    except InferError as e:
        raise RuntimeFailure(f"{op.describe()}: {e}", op.loc) from None


def bind_inputs(graph: Graph, inputs) -> dict[str, np.ndarray]:
    if not isinstance(inputs, Mapping):
        inputs = list(inputs)
        if len(inputs) != len(graph.inputs):
            raise RuntimeFailure(f"graph @{graph.name} takes {len(graph.inputs)} input(s) "
                                 f"({_sig(graph.inputs)}), got {len(inputs)}", graph.loc)
        inputs = {v.name: a for v, a in zip(graph.inputs, inputs)}
    unknown = [k for k in inputs if k.lstrip("%") not in {v.name for v in graph.inputs}]
    if unknown:
        raise RuntimeFailure(f"graph @{graph.name} has no input {', '.join('%' + k.lstrip('%') for k in unknown)}; "
                             f"its inputs: {_sig(graph.inputs)}", graph.loc)
    given = {k.lstrip("%"): v for k, v in inputs.items()}
    env = {}
    for v in graph.inputs:
        if v.name not in given:
            raise RuntimeFailure(f"input %{v.name} : {v.type} is missing", graph.loc)
        env[v.name] = convert_input(v, given[v.name])
    return env


def convert_input(v: Value, arr) -> np.ndarray:
    arr = np.asarray(arr)
    t = v.type
    if t.layout:
        if arr.dtype != np.uint8 or arr.shape != t.storage_shape:
            raise RuntimeFailure(f"input %{v.name} : {t} should be its packed storage "
                                 f"uint8{list(t.storage_shape)}, got {arr.dtype}{list(arr.shape)}")
        return arr
    if arr.shape != t.shape:
        raise RuntimeFailure(f"input %{v.name} should be {t} but has shape {list(arr.shape)}")
    dt = t.dtype
    if arr.dtype == dt.np_dtype:
        dt.check(arr, f"input %{v.name}")
        return arr
    if dt.is_float and arr.dtype.kind in "fiu":
        return arr.astype(dt.np_dtype)
    if dt.is_integer and arr.dtype.kind in "iub":
        dt.check(arr, f"input %{v.name}")
        return arr.astype(dt.np_dtype)
    raise RuntimeFailure(f"input %{v.name} should be {t} but is {arr.dtype}")


def _sig(values) -> str:
    return ", ".join(f"%{v.name} : {v.type}" for v in values) or "none"
