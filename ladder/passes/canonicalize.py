"""canonicalize: fold constants, apply named simplification rules, merge duplicates, remove dead ops.

None of these change what the graph computes: folding runs the reference semantics of the op at compile time.
Folding (``fold-constant``) and the simplifications are rewrite patterns (ladder.passes.patterns), so the
trace names each one that fired; merging duplicates and removing dead ops are whole-graph sweeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir import ConstData, Graph, Op
from ..ops import OPS, InferError
from .manager import PatternPass, register_pass
from .patterns import Firing, RewritePattern, apply_patterns, pattern


@register_pass("canonicalize")
@dataclass(frozen=True)
class Canonicalize(PatternPass):
    fold: bool = True
    fold_limit: int = 65536  # the largest tensor (in elements) folding may create
    cse: bool = True
    dce: bool = True

    def run_traced(self, graph: Graph) -> tuple[Graph, list[Firing]]:
        g = graph.copy()
        trace = apply_patterns(g, [fold_constant(self.fold_limit)]) if self.fold else []
        trace += apply_patterns(g, SIMPLIFICATIONS)
        if self.cse:
            merge_duplicates(g)
        if self.dce:
            remove_dead(g)
        return g, trace


def _const_value(g: Graph, name: str):
    node = g.producer(name)
    if node is None:
        return None
    op = g.op(node)
    return op.attr["value"].array if op.kind == "const" else None


def fold_constant(limit: int) -> RewritePattern:
    """A single-result op whose operands are all consts becomes a const holding its result (of at most
    ``limit`` elements)."""

    @pattern("fold-constant")
    def fold(g: Graph, op: Op):
        if op.kind in ("param", "const") or len(op.results) != 1 or op.result.type.size > limit:
            return None
        if op.result.type.layout:  # packed storage is made by 'pack' when weights are bound, never a const
            return None
        args = [_const_value(g, o) for o in op.operands]
        if any(a is None for a in args):
            return None
        opdef = OPS[op.kind]
        try:
            with np.errstate(all="ignore"):
                (value,) = opdef.compute(args, opdef.full_attrs(op.attr), [op.result.type],
                                         [g.type_of(o) for o in op.operands])
        except InferError:
            return None  # e.g. an index out of range: leave it to fail at run time with its location
        return Op.make("const", (), {"value": ConstData(np.asarray(value))}, op.results, op.loc)

    return fold


# -- named simplifications, applied once over the graph in this order ---------------------------------------

@pattern("reshape-to-same-shape", "reshape")
def reshape_to_same_shape(g: Graph, op: Op):
    return op.operands[0] if g.type_of(op.operands[0]) == op.result.type else None


@pattern("identity-transpose", "transpose")
def identity_transpose(g: Graph, op: Op):
    return op.operands[0] if tuple(op.attr["perm"]) == tuple(range(op.result.type.rank)) else None


@pattern("reshape-of-reshape", "reshape")
def reshape_of_reshape(g: Graph, op: Op):
    src = g.producer(op.operands[0])
    if src is None or g.op(src).kind != "reshape":
        return None
    return op.with_(operands=g.op(src).operands)


@pattern("double-negation", "neg")
def double_negation(g: Graph, op: Op):
    src = g.producer(op.operands[0])
    return g.op(src).operands[0] if src is not None and g.op(src).kind == "neg" else None


@pattern("single-concat", "concat")
def single_concat(g: Graph, op: Op):
    return op.operands[0] if len(op.operands) == 1 else None


SIMPLIFICATIONS = [reshape_to_same_shape, identity_transpose, reshape_of_reshape, double_negation, single_concat]


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
