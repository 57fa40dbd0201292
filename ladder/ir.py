"""The graph IR: SSA values, immutable ops, and a Graph that keeps them in a networkx DiGraph.

* A **Value** is a name (without ``%``) and a TensorType. Graph inputs are values; every other value is a
  result of exactly one op.
* An **Op** is immutable: kind, operand names, attributes, result values and a source location. Rewrites
  replace ops; they never change one.
* The **Graph** holds ops as nodes of a ``networkx.DiGraph`` keyed by an integer id; an edge producer ->
  consumer carries the operand slots (``slots``) through which the consumer uses the producer's results.
  Node insertion order is a valid topological order only for freshly parsed graphs, so ordered walks use a
  topological sort that breaks ties by insertion order (stable printing after rewrites).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Mapping

import networkx as nx
import numpy as np

from .constdata import ConstData
from .errors import LadderError, Location, UNKNOWN
from .printer import graph_html, print_graph
from .types import TensorType


# What may follow % in a value name (and @ in a graph name without quotes).
VALUE_NAME = re.compile(r"[A-Za-z0-9_.$]+\Z")


@dataclass(frozen=True)
class Value:
    name: str
    type: TensorType

    def __str__(self) -> str:
        return f"%{self.name}"


def freeze_attr(value: Any) -> Any:
    """Attribute values are hashable: lists become tuples, arrays become ConstData."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze_attr(v) for v in value)
    if isinstance(value, np.ndarray):
        return ConstData(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class Op:
    kind: str
    operands: tuple[str, ...]
    attrs: tuple[tuple[str, Any], ...]
    results: tuple[Value, ...]
    loc: Location = field(default=UNKNOWN, compare=False)

    @staticmethod
    def make(kind: str, operands: Iterable[str], attrs: Mapping[str, Any], results: Iterable[Value],
             loc: Location = UNKNOWN) -> "Op":
        frozen = tuple(sorted((k, freeze_attr(v)) for k, v in attrs.items()))
        return Op(kind, tuple(operands), frozen, tuple(results), loc)

    @property
    def attr(self) -> dict[str, Any]:
        return dict(self.attrs)

    @property
    def result(self) -> Value:
        """The single result (most ops have one)."""
        if len(self.results) != 1:
            raise LadderError(f"'{self.kind}' has {len(self.results)} results", self.loc)
        return self.results[0]

    @property
    def name(self) -> str:
        """The name of the first result; identifies the op in messages."""
        return self.results[0].name if self.results else "?"

    def with_(self, **changes) -> "Op":
        if "attrs" in changes and isinstance(changes["attrs"], Mapping):
            changes["attrs"] = tuple(sorted((k, freeze_attr(v)) for k, v in changes["attrs"].items()))
        return replace(self, **changes)

    def describe(self) -> str:
        return f"'{self.kind}' defining {', '.join(str(r) for r in self.results)}"


class Graph:
    """A dataflow graph: named inputs, ops in a networkx DiGraph, and an ordered list of outputs."""

    def __init__(self, name: str, inputs: Iterable[Value] = (), loc: Location = UNKNOWN):
        self.name = name
        self.loc = loc
        self.inputs: list[Value] = list(inputs)
        self.outputs: list[str] = []
        self.nx = nx.DiGraph()
        self._ids = itertools.count()
        # value name -> (node id or None for graph inputs, result index)
        self._defs: dict[str, tuple[int | None, int]] = {}
        self._order: list[int] | None = []  # nodes() of the graph as it is (None: to sort again)
        for i, v in enumerate(self.inputs):
            self._define(v.name, None, i, loc)

    # -- building ---------------------------------------------------------------------------------
    def _define(self, name: str, node: int | None, index: int, loc: Location) -> None:
        if not isinstance(name, str) or not VALUE_NAME.match(name):
            raise LadderError(f"{name!r} is not a value name (letters, digits, '_', '.', '$')", loc)
        if name in self._defs:
            raise LadderError(f"value %{name} is defined twice", loc)
        self._defs[name] = (node, index)

    def add_op(self, op: Op) -> int:
        """Append an op whose operands are already defined; returns its node id."""
        for name in op.operands:
            if name not in self._defs:
                raise LadderError(f"{op.describe()} uses %{name}, which is not defined before it", op.loc)
        node = next(self._ids)
        for i, r in enumerate(op.results):
            self._define(r.name, node, i, op.loc)
        self.nx.add_node(node, op=op)
        self._connect(node, op)
        if self._order is not None:  # appended after every op it reads: still a topological order, ties kept
            self._order.append(node)
        return node

    def _connect(self, node: int, op: Op) -> None:
        for slot, name in enumerate(op.operands):
            src = self._defs[name][0]
            if src is None:
                continue
            if self.nx.has_edge(src, node):
                self.nx.edges[src, node]["slots"] += (slot,)
            else:
                self.nx.add_edge(src, node, slots=(slot,))

    def set_outputs(self, names: Iterable[str]) -> None:
        names = list(names)
        for n in names:
            if n not in self._defs:
                raise LadderError(f"graph @{self.name} returns %{n}, which is not defined", self.loc)
        self.outputs = names

    # -- queries ------------------------------------------------------------------------------------
    def op(self, node: int) -> Op:
        return self.nx.nodes[node]["op"]

    def ops(self) -> list[Op]:
        """Ops in a topological order, ties broken by insertion order."""
        return [self.op(n) for n in self.nodes()]

    def nodes(self) -> list[int]:
        if self._order is None:
            self._order = list(nx.lexicographical_topological_sort(self.nx))
        return list(self._order)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops())

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def defines(self, name: str) -> bool:
        return name in self._defs

    def producer(self, name: str) -> int | None:
        """Node id of the op defining ``name``; None for a graph input."""
        try:
            return self._defs[name][0]
        except KeyError:
            raise LadderError(f"no value %{name} in graph @{self.name}") from None

    def value(self, name: str) -> Value:
        node, index = self._defs[name]
        if node is None:
            return self.inputs[index]
        return self.op(node).results[index]

    def type_of(self, name: str):
        return self.value(name).type

    def users(self, name: str) -> list[int]:
        """Node ids of ops that use value ``name``."""
        node = self.producer(name)
        if node is None:
            return [n for n in self.nx.nodes if name in self.op(n).operands]
        return [n for n in self.nx.successors(node) if name in self.op(n).operands]

    def output_types(self) -> list[TensorType]:
        return [self.type_of(n) for n in self.outputs]

    def fresh_name(self, hint: str = "t") -> str:
        for i in itertools.count():
            cand = f"{hint}{i}" if i or hint[-1:].isdigit() else hint
            if cand not in self._defs:
                return cand
        raise AssertionError("unreachable")

    # -- rewriting ------------------------------------------------------------------------------
    def replace_op(self, node: int, new: Op) -> None:
        """Swap the op of ``node`` for ``new``, which must define the same result names."""
        old = self.op(node)
        if [r.name for r in old.results] != [r.name for r in new.results]:
            raise LadderError(f"replacement of {old.describe()} must keep its result names", new.loc)
        for src in list(self.nx.predecessors(node)):
            self.nx.remove_edge(src, node)
        self.nx.nodes[node]["op"] = new
        self._connect(node, new)
        self._order = None

    def replace_uses(self, old: str, new: str) -> None:
        """Make every op that uses value ``old`` use ``new`` instead. Graph outputs are the graph's
        interface and keep their names: an op defining an output stays."""
        if old == new:
            return
        for user in self.users(old):
            op = self.op(user)
            self.replace_op(user, op.with_(operands=tuple(new if o == old else o for o in op.operands)))

    def remove_op(self, node: int) -> None:
        op = self.op(node)
        for r in op.results:
            if self.users(r.name) or r.name in self.outputs:
                raise LadderError(f"cannot remove {op.describe()}: %{r.name} is still used", op.loc)
        for r in op.results:
            del self._defs[r.name]
        self.nx.remove_node(node)
        if self._order is not None:
            self._order.remove(node)

    def copy(self) -> "Graph":
        """An independent graph of the same ops (ops and values are immutable, so shared), node ids and order
        kept: the structures copied as they are, none of the checks of building it again (a 2,400-op model's
        graph, copied after every pass of a compile: ~32 -> ~10-13 ms a copy, Zen 4)."""
        g = Graph.__new__(Graph)
        g.name, g.loc = self.name, self.loc
        g.inputs, g.outputs = list(self.inputs), list(self.outputs)
        order = self.nodes()
        g.nx = self.nx.copy()
        g._defs = dict(self._defs)
        g._order = order  # nodes() gave a fresh list
        g._ids = itertools.count(max(order, default=-1) + 1)
        return g

    # -- comparison and display -------------------------------------------------------------------
    def signature(self) -> tuple:
        """Everything that defines what the graph computes, without source locations."""
        return (self.name, tuple(self.inputs), tuple(self.ops()), tuple(self.outputs))

    def __eq__(self, other) -> bool:
        return isinstance(other, Graph) and self.signature() == other.signature()

    __hash__ = None  # mutable

    def __str__(self) -> str:
        return print_graph(self)

    def __repr__(self) -> str:
        return f"<Graph @{self.name}: {len(self.inputs)} inputs, {len(self)} ops, {len(self.outputs)} outputs>"

    def _repr_html_(self) -> str:
        return graph_html(self)
