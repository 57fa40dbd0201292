"""canonicalize: fold constants, apply named simplification rules, merge duplicates, remove dead ops.

None of these change what the graph computes: folding runs the reference semantics of the op at compile time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..ir import ConstData, Graph, Op
from ..ops import OPS, InferError
from .manager import Pass, register_pass


@register_pass("canonicalize")
@dataclass(frozen=True)
class Canonicalize(Pass):
    fold: bool = True
    fold_limit: int = 65536  # the largest tensor (in elements) folding may create
    cse: bool = True
    dce: bool = True

    def run(self, graph: Graph) -> Graph:
        g = graph.copy()
        if self.fold:
            fold_constants(g, self.fold_limit)
        simplify(g)
        if self.cse:
            merge_duplicates(g)
        if self.dce:
            remove_dead(g)
        return g


def _const_value(g: Graph, name: str):
    node = g.producer(name)
    if node is None:
        return None
    op = g.op(node)
    return op.attr["value"].array if op.kind == "const" else None


def fold_constants(g: Graph, limit: int) -> int:
    """Replace single-result ops whose operands are all consts by a const holding their result."""
    folded = 0
    for node in g.nodes():
        op = g.op(node)
        if op.kind in ("param", "const") or len(op.results) != 1 or op.result.type.size > limit:
            continue
        if op.result.type.layout:  # packed storage is made by 'pack' when weights are bound, never a const
            continue
        args = [_const_value(g, o) for o in op.operands]
        if any(a is None for a in args):
            continue
        opdef = OPS[op.kind]
        try:
            with np.errstate(all="ignore"):
                (value,) = opdef.compute(args, opdef.full_attrs(op.attr), [op.result.type],
                                         [g.type_of(o) for o in op.operands])
        except InferError:
            continue  # e.g. an index out of range: leave it to fail at run time with its location
        g.replace_op(node, Op.make("const", (), {"value": ConstData(np.asarray(value))}, op.results, op.loc))
        folded += 1
    return folded


# -- named simplification rules: each returns the value that replaces the op's result, or None ----------

Rule = Callable[[Graph, Op], "str | None"]


def _same_shape_reshape(g: Graph, op: Op):
    if op.kind == "reshape" and g.type_of(op.operands[0]) == op.result.type:
        return op.operands[0]
    return None


def _identity_transpose(g: Graph, op: Op):
    if op.kind == "transpose" and tuple(op.attr["perm"]) == tuple(range(op.result.type.rank)):
        return op.operands[0]
    return None


def _reshape_of_reshape(g: Graph, op: Op):
    if op.kind != "reshape":
        return None
    src = g.producer(op.operands[0])
    if src is None or g.op(src).kind != "reshape":
        return None
    inner = g.op(src)
    g.replace_op(g.producer(op.name), op.with_(operands=inner.operands))
    return None


def _double_negation(g: Graph, op: Op):
    if op.kind != "neg":
        return None
    src = g.producer(op.operands[0])
    if src is not None and g.op(src).kind == "neg":
        return g.op(src).operands[0]
    return None


def _single_concat(g: Graph, op: Op):
    return op.operands[0] if op.kind == "concat" and len(op.operands) == 1 else None


RULES: dict[str, Rule] = {
    "reshape-to-same-shape": _same_shape_reshape,
    "identity-transpose": _identity_transpose,
    "reshape-of-reshape": _reshape_of_reshape,
    "double-negation": _double_negation,
    "single-concat": _single_concat,
}


def simplify(g: Graph) -> list[tuple[str, str]]:
    """Apply RULES once over the graph in order; returns (rule, value) for each rule that fired."""
    fired = []
    for node in g.nodes():
        if node not in g.nx:
            continue
        for rule_name, rule in RULES.items():
            op = g.op(node)
            before = op
            repl = rule(g, op)
            if repl is not None and op.name not in g.outputs:
                g.replace_uses(op.name, repl)
                fired.append((rule_name, op.name))
                break
            if g.op(node) is not before:
                fired.append((rule_name, op.name))
    return fired


def merge_duplicates(g: Graph) -> int:
    """Common subexpressions: ops with the same kind, operands, attributes and result types are merged."""
    seen: dict[tuple, Op] = {}
    merged = 0
    for node in g.nodes():
        op = g.op(node)
        key = (op.kind, op.operands, op.attrs, tuple(r.type for r in op.results))
        first = seen.get(key)
        if first is None:
            seen[key] = op
            continue
        for mine, theirs in zip(op.results, first.results):
            g.replace_uses(mine.name, theirs.name)
        if not any(r.name in g.outputs for r in op.results):  # outputs keep their names
            g.remove_op(node)
            merged += 1
    return merged


def remove_dead(g: Graph) -> int:
    """Remove ops none of whose results reach an output."""
    live = set(g.outputs)
    dead = []
    for node in reversed(g.nodes()):
        op = g.op(node)
        if any(r.name in live for r in op.results):
            live.update(op.operands)
        else:
            dead.append(node)
    for node in dead:  # users come before producers in this list
        g.remove_op(node)
    return len(dead)
