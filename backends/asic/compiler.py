"""The asic backend: ``compile_graph`` lowers a graph for a hardware config and runs it on the functional
simulator, with the same interface as the llvm backend (``ladder.compile(g, target="asic:lut-tc")``).

    cg = compile_graph(graph, weights, target="asic:lut-tc")
    outputs = cg.run({"x": x})          # the functional simulator, outputs like ladder.run's
    print(cg.source("isa"))             # the program's assembly
    cg.write("model.isa")               # the same, to a file
    cg.program                          # the Program (a cost simulator's input)

Weight-only values (packed weights, quantized weights) are computed once by the reference semantics when the
module is built; the program's weight images (tiles in bit planes, raw vectors) are made from them then.

``AsicBackend`` is this backend behind ladder.backend's protocol, registered for the ``asic`` target kind:
``ladder.compile`` hands it the compile context (ladder.context), of which the threads (None or 1: the
simulator runs on the calling thread) and the memory budget apply; the cache folder and ``jit`` do not (see
``compile_graph``). State is kept by copying (ladder.backend.HostState).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ladder import budget
from ladder.backend import HostState, register_backend
from ladder.context import CompileContext
from ladder.errors import LadderError
from ladder.interpreter import Session, StateSlot
from ladder.ir import Graph
from ladder.passes import PassManager, default_pipeline
from ladder.target import Target, get_target

from . import funcsim
from .asm import print_program
from .config import HwConfig, load_config
from .lower import lower

EMITS = ("isa",)


def config_of(target: "str | Target") -> HwConfig:
    """The hardware config an ``asic:CONFIG`` target names."""
    name = get_target(target).name
    if not name.startswith("asic:"):
        raise LadderError(f"the asic backend compiles for asic:CONFIG targets, not '{name}'")
    return load_config(name[5:])


class CompiledProgram(HostState):
    """A graph lowered to an ASIC program, bound to its weights (a ladder.backend.Executable)."""

    threads = 1  # the functional simulator runs on the calling thread

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray] | None, target: "str | Target",
                 pipeline: str | None, state: Sequence[StateSlot] = ()):
        self.target = get_target(target)
        self.config = config_of(self.target)
        if pipeline is None:
            pipeline = default_pipeline(self.target.name)
        super().__init__(PassManager(pipeline).run(graph) if pipeline else graph, state, self.target.name)
        self.program = lower(self.graph, self.config)
        self.weights = weights
        self._images: dict[str, np.ndarray] | None = None

    @property
    def images(self) -> dict[str, np.ndarray]:
        """The weight buffers' bytes, made on first use (writing the assembly needs no weights)."""
        if self._images is None:
            fixed = Session(self.graph, self.weights).fixed
            self._images = funcsim.build_images(self.program, self.graph, fixed)
        return self._images

    @property
    def machine(self) -> str:
        """The hardware config the program is for."""
        return self.config.name

    def run_plain(self, inputs=(), threads: int | None = None) -> dict[str, np.ndarray]:
        """Execute the program on the functional simulator, on the calling thread (``threads``: None or 1;
        any other count is a LadderError, see ``compile_graph``). ``run`` (ladder.backend.HostState) is this,
        with state."""
        check_threads(threads)
        return funcsim.run(self.program, inputs, self.images)

    def source(self, kind: str = "isa") -> str:
        if kind not in EMITS:
            raise LadderError(f"the asic backend emits {', '.join(EMITS)}, not '{kind}'")
        return print_program(self.program)

    def write(self, path: "str | os.PathLike", emit: str = "isa") -> list[Path]:
        path = Path(path)
        path.write_text(self.source(emit))
        return [path]

    def report_lines(self) -> list[str]:
        st = self.program.stats()
        units = ", ".join(f"{u} {n}" for u, n in st["per_unit"].items() if n)
        return [f"config {self.config.name}: {st['instructions']:,} instructions ({units}); "
                f"DMA {st['dma_bytes']:,} bytes; {st['macs']:,} MACs; SRAM used "
                f"{st['space_bytes']['sram']:,} of {self.config.sram_bytes:,} bytes"]


def check_threads(threads: int | None) -> None:
    """The functional simulator runs on the calling thread: ``threads`` may be None (the default) or 1."""
    if threads is not None and (isinstance(threads, bool) or threads != 1):
        raise LadderError(f"the asic backend simulates on one thread; threads={threads!r} cannot apply "
                          f"(give none, or 1)")


def compile_graph(graph: Graph, weights: Mapping[str, np.ndarray] | None = None, target: "str | Target" = "asic:lut-tc",
                  pipeline: str | None = None, threads: int | None = None, cache_dir=None,
                  jit: bool = True) -> CompiledProgram:
    """Like the llvm backend's, with the same arguments; what each of the cpu-minded ones means here:

    * ``threads``: the functional simulator runs on the calling thread, so only None (the default) and 1 can
      be honoured; any other value is a LadderError rather than a warning, as ``ladder run --threads`` with an
      asic target is: a caller who asks for threads expects them to act, and a run that silently used one
      would be timed or sized wrongly.
    * ``cache_dir``: accepted, whatever it is (as a compile context's cache folder is, by ``AsicBackend``). A
      cache may keep compiled code, it never has to: a program is cheap to lower, so nothing is written there.
    * ``jit``: accepted, True or False. ``jit=False`` asks for a module to write ahead of time (``write``,
      ``source``); every asic module is one, and the weight images a run needs are built on the first run
      only, so nothing is done for a module that is never run either way."""
    check_threads(threads)
    return CompiledProgram(graph, weights, target, pipeline)


class AsicBackend:
    """The ``asic`` target kind (ladder.backend.Backend)."""

    kind = "asic"
    targets = "asic:CONFIG"
    takes_tuning = False

    def default_pipeline(self, ctx: CompileContext) -> str:
        return default_pipeline(ctx.target_name, ctx.threads, ctx.tuning_file)

    def compile(self, graph: Graph, weights: Mapping[str, np.ndarray] | None, ctx: CompileContext,
                state: Sequence[StateSlot] = ()) -> CompiledProgram:
        """``graph`` (already through the pipeline) lowered for the context's target; the memory budget is
        checked before anything is allocated."""
        budget.check(graph, ctx.memory_budget, f"to run on {ctx.target_name}")
        check_threads(ctx.threads)
        return CompiledProgram(graph, weights, ctx.target, "", state)


register_backend(AsicBackend())

__all__ = ["AsicBackend", "CompiledProgram", "check_threads", "compile_graph", "config_of"]
