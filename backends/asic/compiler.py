"""The asic backend: ``compile_graph`` lowers a graph for a hardware config and runs it on the functional
simulator, with the same interface as the llvm backend (``ladder.compile(g, target="asic:lut-tc")``).

    cg = compile_graph(graph, weights, target="asic:lut-tc")
    outputs = cg.run({"x": x})          # the functional simulator, outputs like ladder.run's
    print(cg.source("isa"))             # the program's assembly
    cg.write("model.isa")               # the same, to a file
    cg.program                          # the Program (a cost simulator's input)

Weight-only values (packed weights, quantized weights) are computed once by the reference semantics when the
module is built; the program's weight images (tiles in bit planes, raw vectors) are made from them then.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ladder.errors import LadderError
from ladder.interpreter import Session
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


class CompiledProgram:
    """A graph lowered to an ASIC program, bound to its weights."""

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray] | None, target: "str | Target",
                 pipeline: str | None):
        self.target = get_target(target)
        self.config = config_of(self.target)
        if pipeline is None:
            pipeline = default_pipeline(self.target.name)
        self.graph = PassManager(pipeline).run(graph) if pipeline else graph
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

    def run(self, inputs=(), threads: int | None = None) -> dict[str, np.ndarray]:
        """Execute the program on the functional simulator, on the calling thread (``threads``: None or 1;
        any other count is a LadderError, see ``compile_graph``)."""
        check_threads(threads)
        return funcsim.run(self.program, inputs, self.images)

    __call__ = run

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
    * ``cache_dir``: accepted, whatever it is (``ladder.compile`` passes the user's cache folder by default). A
      cache may keep compiled code, it never has to: a program is cheap to lower, so nothing is written there.
    * ``jit``: accepted, True or False. ``jit=False`` asks for a module to write ahead of time (``write``,
      ``source``); every asic module is one, and the weight images a run needs are built on the first run
      only, so nothing is done for a module that is never run either way."""
    check_threads(threads)
    return CompiledProgram(graph, weights, target, pipeline)


__all__ = ["CompiledProgram", "check_threads", "compile_graph", "config_of"]
