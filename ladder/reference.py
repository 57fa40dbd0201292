"""The reference interpreter as a backend: target ``ref`` (ladder.backend's protocol, like cpu and asic).

``ladder.compile(graph, "ref", weights)`` runs the canonicalize pipeline and binds the graph to its weights in
a ladder.interpreter.Session: weight-only values are computed once, and each call runs the rest op by op with
numpy, on the calling thread. ``threads``, ``cache`` and ``jit`` do not apply (there is no machine code); the
memory budget does (the Session checks it). State is kept by copying (ladder.backend.HostState).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .backend import HostState, register_backend
from .context import CompileContext
from .errors import LadderError
from .interpreter import Session, StateSlot
from .ir import Graph


class ReferenceModule(HostState):
    """A graph bound to its weights in the reference interpreter."""

    machine = "numpy"
    threads = 1
    program = None

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray] | None, ctx: CompileContext,
                 state: Sequence[StateSlot] = ()):
        super().__init__(graph, state, ctx.target_name)
        self.session = Session(graph, weights, memory_budget=ctx.memory_budget)

    def run_plain(self, inputs, threads: int | None) -> dict[str, np.ndarray]:
        return self.session.run(inputs)

    def source(self, kind: str | None = None) -> str:
        """The graph's .lir text (whatever ``kind``: the graph is all there is)."""
        return str(self.graph)

    def write(self, path: str | os.PathLike, emit: str | None = None) -> list[Path]:
        raise LadderError(f"target {self.target_name} has nothing to write ahead of time")

    def report_lines(self) -> list[str]:
        return []


class ReferenceBackend:
    kind = "ref"
    targets = "ref"
    takes_tuning = False

    def default_pipeline(self, ctx: CompileContext) -> str:
        return "canonicalize"

    def compile(self, graph: Graph, weights: Mapping[str, np.ndarray] | None, ctx: CompileContext,
                state: Sequence[StateSlot] = ()) -> ReferenceModule:
        return ReferenceModule(graph, weights, ctx, state)


register_backend(ReferenceBackend())

__all__ = ["ReferenceBackend", "ReferenceModule"]
