"""Compile a graph for the CPU: legalize, lower every op to a kernel, JIT the module, run it on numpy arrays.

    cg = compile_graph(graph, weights, target="cpu")
    outputs = cg.run({"x": x})            # a dict like ladder.run's

Weight-only values (packed weights, quantized weights) are computed once, when the module is built, by the
reference semantics; every other op runs as generated native code. Kernels are split over the runtime's
thread pool by their work items; results do not depend on the thread count.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ladder.errors import LadderError, RuntimeFailure
from ladder.interpreter import Session, bind_inputs
from ladder.ir import Graph, Op
from ladder.passes import PassManager, default_pipeline
from ladder.target import Target, get_target

from . import lowerings  # noqa: F401  (registration)
from .codegen import LOWERINGS, KernelContext, KernelSpec
from .jit import Function, Module
from .runtime import default_threads, parallel_rows


@dataclass
class _Step:
    op: Op
    spec: KernelSpec
    fn: Function | None = None


class CompiledGraph:
    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray] | None, target: Target,
                 pipeline: str | None, threads: int | None):
        self.target = target
        self.threads = threads or default_threads()
        self.graph = PassManager(default_pipeline(target.name) if pipeline is None else pipeline).run(graph)
        session = Session(self.graph, weights)
        self.fixed = session.fixed
        ops = session._rest
        missing = sorted({op.kind for op in ops if op.kind not in LOWERINGS})
        if missing:
            raise LadderError(f"the cpu backend has no kernel yet for: {', '.join(missing)}")
        ctx = KernelContext(target, name=f"ladder_{self.graph.name}")
        self.steps = []
        for op in ops:
            ins = [self.graph.type_of(o) for o in op.operands]
            outs = [r.type for r in op.results]
            self.steps.append(_Step(op, LOWERINGS[op.kind](ctx, op, ins, outs)))
        self.module = Module.compile(str(ctx.module), target)
        for s in self.steps:
            n = len(s.op.operands) + len(s.op.results) + (1 if s.spec.has_status else 0)
            s.fn = self.module.function(s.spec.fn.name, ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * n),
                                                                         ctypes.c_int64, ctypes.c_int64))

    def run(self, inputs, *, threads: int | None = None) -> dict[str, np.ndarray]:
        env = dict(self.fixed)
        env.update(bind_inputs(self.graph, inputs))
        threads = threads or self.threads
        for s in self.steps:
            args = [np.ascontiguousarray(env[o]) for o in s.op.operands]
            outs = [np.empty(r.type.storage_shape, r.type.storage_np_dtype) for r in s.op.results]
            status = np.zeros(1, np.int64) if s.spec.has_status else None
            ptrs = [a.ctypes.data for a in args + outs] + ([status.ctypes.data] if status is not None else [])
            parallel_rows(s.fn, ptrs, s.spec.work, threads, s.spec.grain)
            if status is not None and status[0]:
                msg = s.spec.errors.get(int(status[0]), f"error code {int(status[0])}")
                raise RuntimeFailure(f"{s.op.describe()}: {msg}", s.op.loc)
            for r, arr in zip(s.op.results, outs):
                env[r.name] = arr
        return {name: env[name] for name in self.graph.outputs}

    __call__ = run

    def source(self, kind: str = "llvm") -> str:
        """The optimised LLVM IR ('llvm') or the assembly ('asm') of the module."""
        return self.module.asm() if kind == "asm" else self.module.ir()


def compile_graph(graph: Graph, weights: Mapping[str, np.ndarray] | None = None, target: str | Target = "cpu",
                  pipeline: str | None = None, threads: int | None = None) -> CompiledGraph:
    return CompiledGraph(graph, weights, get_target(target), pipeline, threads)
