"""Lowering: a legalized graph (ladder's passes for ``asic:CONFIG``) -> an instruction Program for a config.

``lower(graph, cfg)`` is the entry point. The work is split by concern:

* ``lowering``: the driver (``Lowering``: buffers, placement of values and weights, SRAM fitting, double
  buffering, instruction emission) and the registry ``LOWERINGS`` of per-op lowerings;
* ``lower_rows``: row-parallel vector ops (element-wise, norms, softmax, quantize, rope, ...);
* ``lower_movement``: DMA-only ops (reshape, transpose, slice, concat, gather, cache_write);
* ``lower_matmul``: matmuls with a weight (``lmma`` on the LUT units, ``xmma`` on crossbars, hardwired
  weights in ROM, the systolic fallback) and of two activations;
* ``lower_attention``: attention on the systolic arrays, KV heads side by side when the SRAM allows.

Importing this module registers every lowering.
"""

from __future__ import annotations

from ladder.ir import Graph

from . import lower_attention, lower_matmul, lower_movement, lower_rows  # noqa: F401  (register lowerings)
from .config import HwConfig, load_config
from .isa import Program
from .lowering import LOWERINGS, Lowering, LoweringError, Placed, lowers


def lower(graph: Graph, config: "str | HwConfig") -> Program:
    """Lower a graph that went through ladder's passes for an ``asic`` target to a Program."""
    return Lowering(graph, load_config(config)).run()


__all__ = ["LOWERINGS", "LoweringError", "Lowering", "Placed", "lower", "lowers"]
