"""Analytical timing (cycles) and action counts of the accelerator's units, one SRAM tile at a time.

Each model takes the shape of one instruction's work and the unit's parameters and returns a ``UnitCost``:
the cycles the unit is busy and the counts of energy-bearing actions (``actions``: name -> count) that the
cost simulator prices with ``energy.EnergyTable``. Nothing here walks elements: a tile of any size costs a
handful of integer operations.

* **Systolic array** — SCALE-Sim's analytical model (Samajdar et al., "A Systematic Methodology for
  Characterizing Scalability of DNN Accelerators using SCALE-Sim", ISPASS 2020, Sec. III). A GEMM
  M x N (reduction K) maps to spatial dimensions S_R, S_C and a temporal one T by dataflow:
  output-stationary (os): S_R = M, S_C = N, T = K; weight-stationary (ws): S_R = K, S_C = N, T = M;
  input-stationary (is): S_R = K, S_C = M, T = N. There are ceil(S_R / R) * ceil(S_C / C) folds on an R x C
  array. A ws or is fold takes 2R + C + T - 2 cycles (R to load the stationary operand, then T steps skewed
  over R + C - 2); an os fold has nothing to preload: R + C + T - 2 (T steps skewed in, outputs drained).
  These are SCALE-Sim 3.0.0's compute cycles exactly (the rows of its demand matrices; checked against a
  golden grid in tests/fixtures/scalesim). An SRAM that feeds the array's edges fewer bytes per cycle than
  the array consumes stalls it: the cost simulator takes the longer of the two.
* **LUT unit** (T-MAC / LUT Tensor Core / Slim-Llama): ``units`` lookup units each take ``group`` weights per
  cycle (one table lookup covers ``group`` MACs), or, given a hardware ``tile`` (M, N, K), one such tile per
  cycle (LUT Tensor Core's elongated M2N64K4 lmma: a decode step's single row leaves half of it idle).
  With zero-weight skipping, a group whose weights are all zero issues no lookup (probability z^group for a
  zero fraction z, the sparsity-aware LUT of Slim-Llama); a group with some zeros indexes a smaller table
  (table entries for it are cheaper: the adds for zero weights are skipped, (1 - z) of them remain). With output reuse, a partial sum stays in the unit's
  accumulator across ``reuse`` consecutive K-groups instead of a read-modify-write of SRAM per group.
* **Table precompute**: one table of 2^(group-1) entries per ``group`` activations (mirror consolidation,
  LUT[~i] = -LUT[i]), one add per entry, ``lanes`` adds per cycle.
* **Analog crossbar** (ISAAC-style, Shafiee et al. ISCA 2016): inputs enter bit-serially ``dac_bits`` at a
  time (ceil(input_bits / dac_bits) input cycles); in each input cycle every column of every active
  crossbar is converted by an ADC shared by ``columns / adcs`` columns, ``adc_cycles`` cycles each.
  Crossbars work in parallel, ``active`` of them at a time (the ADC count and power bound it; 0 = all that
  a tile needs), so a tile of x crossbars takes x / active MVM periods.
* **Hardwired matrix** (Taalas): every weight has its own multiplier; a row of activations goes through in
  ceil(input_bits / mult_bits) passes, then an adder tree of depth ceil(log2 K).
* **Vector unit**: ``lanes`` element-ops per cycle, each element costing ``ops`` element-ops (a table per
  kind), plus a pipeline latency.
* **DMA**: bytes at the external bandwidth (bytes per cycle = bandwidth / clock) plus a fixed latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ladder.errors import LadderError

DATAFLOWS = ("os", "ws", "is")


@dataclass(frozen=True)
class UnitCost:
    cycles: int
    actions: dict[str, float] = field(default_factory=dict)


def _ceil(a: float, b: float) -> int:
    return int(math.ceil(a / b)) if a > 0 else 0


# -- systolic array ----------------------------------------------------------------------------------

def systolic_mapping(m: int, n: int, k: int, dataflow: str) -> tuple[int, int, int]:
    """(S_R, S_C, T) of an M x N x K GEMM under ``dataflow`` (SCALE-Sim, ISPASS 2020, Table II)."""
    if dataflow == "os":
        return m, n, k
    if dataflow == "ws":
        return k, n, m
    if dataflow == "is":
        return k, m, n
    raise LadderError(f"unknown systolic dataflow '{dataflow}'; known: {', '.join(DATAFLOWS)}")


def systolic_cycles(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> int:
    """SCALE-Sim 3.0.0's compute cycles: (preload + R + C + T - 2) * ceil(S_R/R) * ceil(S_C/C), preload = R for
    ws and is (the stationary operand enters the array first) and 0 for os."""
    sr, sc, t = systolic_mapping(m, n, k, dataflow)
    if min(sr, sc, t) <= 0:
        return 0
    preload = 0 if dataflow == "os" else rows
    return (preload + rows + cols + t - 2) * _ceil(sr, rows) * _ceil(sc, cols)


def systolic(m: int, n: int, k: int, rows: int, cols: int, dataflow: str, bits: int) -> UnitCost:
    """A GEMM tile on the systolic array: cycles, MACs, and the elements the array's edges read and write
    (SCALE-Sim's SRAM traffic): the stationary operand once, a streamed operand once per fold of the other
    spatial dimension; outputs once (os) or once per fold of the reduction (ws, is: partial sums leave)."""
    cycles = systolic_cycles(m, n, k, rows, cols, dataflow)
    if dataflow == "os":
        a, b, out = m * k * _ceil(n, cols), k * n * _ceil(m, rows), m * n
    elif dataflow == "ws":
        a, b, out = m * k * _ceil(n, cols), k * n, m * n * _ceil(k, rows)
    else:
        a, b, out = m * k, k * n * _ceil(m, cols), m * n * _ceil(k, rows)
    return UnitCost(cycles, {f"mac{bits}": m * n * k, "a_reads": a, "b_reads": b, "out_writes": out})


# -- LUT unit --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LutParams:
    units: int
    group: int              # weights per lookup (= MACs per unit per cycle without a tile)
    zero_fraction: float = 0.0   # expected fraction of zero weights (skipping on when > 0 and skip_zeros)
    skip_zeros: bool = False
    output_reuse: int = 1   # K-groups accumulated in the unit before a partial sum goes back to SRAM
    tile: tuple[int, int, int] | None = None   # (M, N, K) a unit covers per cycle (LUT Tensor Core's lmma)


def lut_lookups(macs: int, p: LutParams) -> float:
    """Lookups issued for ``macs`` MACs: one per group, minus all-zero groups when skipping."""
    groups = macs / p.group
    if p.skip_zeros:
        groups *= 1.0 - p.zero_fraction ** p.group
    return groups


def lut_matmul(m: int, n: int, k: int, p: LutParams, acc_bits: int = 32) -> UnitCost:
    """An ``lmma`` tile: M x N outputs reduced over K weights, on ``p.units`` lookup units."""
    macs = m * n * k
    lookups = lut_lookups(macs, p)
    if p.tile:  # one hardware tile per unit per cycle: a partial tile costs a whole one
        tm, tn, tk = p.tile
        cycles = _ceil(_ceil(m, tm) * _ceil(n, tn) * _ceil(k, tk), p.units)
    else:
        cycles = _ceil(lookups, p.units)
    k_groups = _ceil(k, p.group)
    # Partial sums leave the unit once per ``output_reuse`` groups (read-modify-write of SRAM).
    spills = m * n * _ceil(k_groups, max(1, p.output_reuse))
    return UnitCost(cycles, {"lut_lookup": lookups, f"add{acc_bits}": lookups, "psum_bytes": 2 * spills * acc_bits / 8})


def lut_precompute(m: int, k: int, group: int, lanes: int, zero_fraction: float = 0.0,
                   skip_zeros: bool = False, act_bits: int = 8) -> UnitCost:
    """Tables for M rows of K activations: K/group tables each of 2^(group-1) entries (mirror consolidation).
    A sparsity-aware table leaves out the entries' adds for zero weights: (1 - z) of them remain."""
    tables = m * _ceil(k, group)
    entries = tables * 2 ** (group - 1)
    adds = entries * (group - 1) / group * ((1.0 - zero_fraction) if skip_zeros else 1.0)
    entry_bits = act_bits + group
    return UnitCost(_ceil(entries, lanes), {f"add{entry_bits}": adds, "table_bytes": entries * entry_bits / 8})


# -- analog crossbars -------------------------------------------------------------------------------

@dataclass(frozen=True)
class CrossbarParams:
    rows: int
    columns: int
    count: int
    adc_bits: int
    dac_bits: int = 1
    adcs: int = 1            # ADCs per crossbar, each shared by columns / adcs columns
    adc_cycles: int = 1      # clock cycles per conversion
    cell_bits: int = 1       # weight bits one cell holds
    active: int = 0          # crossbars converting at once (the ADC/power budget); 0: all a tile needs


def crossbars_needed(n: int, k: int, weight_bits: int, p: CrossbarParams) -> int:
    """Crossbars holding an N x K weight matrix of ``weight_bits``-bit weights (bit-sliced over cells)."""
    slices = _ceil(weight_bits, p.cell_bits)
    return _ceil(k, p.rows) * _ceil(n * slices, p.columns)


def crossbar_mvm(m: int, n: int, k: int, input_bits: int, weight_bits: int, p: CrossbarParams) -> UnitCost:
    """M input vectors through the crossbars holding an N x K matrix. Only columns holding weights are
    converted; the ADC of a crossbar walks its used columns once per input cycle."""
    xbars = crossbars_needed(n, k, weight_bits, p)
    row_blocks = _ceil(k, p.rows)
    used_columns = n * _ceil(weight_bits, p.cell_bits)          # over all column blocks
    per_xbar = min(used_columns, p.columns)
    input_cycles = _ceil(input_bits, p.dac_bits)
    period = input_cycles * _ceil(per_xbar, p.adcs) * p.adc_cycles    # one MVM of one crossbar
    # With an ``active`` budget the chip converts ``active`` crossbars per period: a tile of x crossbars takes
    # x / active periods (fractional: the rest of the budget serves the next tiles). The cost simulator
    # resolves ``active`` = 0 ("all") to every crossbar the program holds and caps a budget at that, so a
    # bigger budget is never slower; here 0 means one period per tile.
    waves = xbars / p.active if p.active else 1
    cycles = math.ceil(m * period * waves)
    conversions = m * input_cycles * used_columns * row_blocks
    return UnitCost(cycles, {
        f"adc{p.adc_bits}": conversions,
        f"dac{p.dac_bits}": m * input_cycles * xbars * p.rows,
        "shift_add": conversions,
        "xbar_cell_reads": m * input_cycles * k * used_columns,
    })


# -- hardwired weights ------------------------------------------------------------------------------

def hardwired_matmul(m: int, n: int, k: int, input_bits: int, mult_bits: int, weight_bits: int) -> UnitCost:
    """M activation rows through N x K hardwired multipliers: ceil(input_bits / mult_bits) passes (the
    weights of ``weight_bits`` use ceil(weight_bits / mult_bits) multipliers each, in parallel), then an adder
    tree of depth ceil(log2 K) (pipelined: it adds its depth once)."""
    passes = _ceil(input_bits, mult_bits)
    w_slices = _ceil(weight_bits, mult_bits)
    depth = max(1, math.ceil(math.log2(max(k, 2))))
    cycles = m * passes + depth
    mults = m * n * k * passes * w_slices
    return UnitCost(cycles, {f"mult{mult_bits}": mults, "add32": m * n * k * passes})


# -- vector unit -----------------------------------------------------------------------------------

# Element-ops per element of a vector instruction, by kind (a transcendental counts as a few FMAs: exp by a
# range reduction and a degree-4 polynomial; a norm reads twice, squares, sums and scales).
VECTOR_OPS_PER_ELEMENT = {
    "exp": 6, "softmax": 10, "rmsnorm": 5, "layernorm": 7, "gelu": 8, "silu": 8, "sigmoid": 7,
    "rope": 4, "quantize": 4, "dequant": 2, "reduce": 1, "copy": 1,
}


def vector_op(elements: int, kind: str, lanes: int, latency: int = 4, bits: int = 16) -> UnitCost:
    ops = VECTOR_OPS_PER_ELEMENT.get(kind, 1) * elements
    return UnitCost(_ceil(ops, lanes) + (latency if elements else 0), {f"vop{bits}": ops})


# -- DMA -------------------------------------------------------------------------------------------

def dma(nbytes: int, bandwidth_gbs: float, clock_mhz: float, latency_cycles: int = 0) -> UnitCost:
    """A transfer of ``nbytes`` over the external interface."""
    if bandwidth_gbs <= 0:
        raise LadderError(f"the external bandwidth must be positive, got {bandwidth_gbs} GB/s")
    bytes_per_cycle = bandwidth_gbs * 1e9 / (clock_mhz * 1e6)
    return UnitCost(_ceil(nbytes, bytes_per_cycle) + (latency_cycles if nbytes else 0), {"dram_bytes": nbytes})
