"""Rewrite patterns: named rules, a driver that applies a list of them to a graph, and a trace of what fired.

After tinygrad's PatternMatcher and xDSL's RewritePattern. A pattern has a ``name``, the op kinds it roots at
(``roots``; None: every kind) and ``match_and_rewrite(graph, op)``, which looks at the root ``op`` and its
neighbours without changing the graph and returns

* None: no match;
* a value name: every use of the root's result reads that value instead (the root is left for dead-code
  removal);
* an Op: it takes the place of the op that defines its results (the root itself, or a user of it that the
  match took in); ops the match took in are left for dead-code removal.

``apply_patterns`` makes the change and records a ``Firing``: the pattern, the root's name, kind and source
location. Passes built from patterns return their firings from ``Pass.run_traced``; the pass manager hands
them to its instruments (``--print-ir-after-all`` prints them, ``Snapshot.trace`` keeps them).

Write a pattern as a function under ``@pattern("name", "kind", ...)``: canonicalize.py and lowbit.py (fuse)
hold ladder's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

from ..errors import Location
from ..ir import Graph, Op

Replacement = Union[str, Op, None]


@dataclass(frozen=True)
class Firing:
    """One rewrite: ``pattern`` fired on the op defining ``%op`` (of kind ``kind``, written at ``loc``)."""

    pattern: str
    op: str
    kind: str
    loc: Location

    def __str__(self) -> str:
        return f"{self.pattern} on %{self.op} = {self.kind} ({self.loc})"


@dataclass(frozen=True)
class RewritePattern:
    name: str
    roots: frozenset[str] | None  # the op kinds the pattern looks at; None: every kind
    rewrite: Callable[[Graph, Op], Replacement]

    def matches_kind(self, kind: str) -> bool:
        return self.roots is None or kind in self.roots

    def match_and_rewrite(self, graph: Graph, op: Op) -> Replacement:
        return self.rewrite(graph, op)


def pattern(name: str, *roots: str):
    """Decorator: ``fn(graph, op) -> replacement`` becomes a RewritePattern rooted at ops of kinds ``roots``
    (none given: every kind)."""

    def deco(fn: Callable[[Graph, Op], Replacement]) -> RewritePattern:
        return RewritePattern(name, frozenset(roots) or None, fn)

    return deco


def apply_patterns(g: Graph, patterns: Sequence[RewritePattern]) -> list[Firing]:
    """Apply ``patterns`` to ``g`` in place in one sweep, and return what fired, in order.

    The sweep visits the ops in the topological order ``g`` has before it starts; an op a rewrite puts in
    another's place is visited where that one stood, so a rewrite that hands its root's role to a user (folding
    an epilogue) goes on when the sweep reaches that user. At each op the patterns rooted at its kind are tried
    in list order: one that replaces the root's uses ends the op's turn, one that replaces an op hands the op
    now at this place to the patterns after it. Graph outputs keep their names: a value replacing an output's
    uses is not made."""
    fired: list[Firing] = []
    for node in g.nodes():
        for p in patterns:
            op = g.op(node)
            if not p.matches_kind(op.kind):
                continue
            repl = p.match_and_rewrite(g, op)
            if repl is None or (isinstance(repl, str) and op.name in g.outputs):
                continue
            fired.append(Firing(p.name, op.name, op.kind, op.loc))
            if isinstance(repl, str):
                g.replace_uses(op.name, repl)
                break
            g.replace_op(g.producer(repl.name), repl)
    return fired


__all__ = ["Firing", "Replacement", "RewritePattern", "apply_patterns", "pattern"]
