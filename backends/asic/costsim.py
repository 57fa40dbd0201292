"""The cost simulator: cycles, traffic and energy of an ASIC ``Program`` on a hardware config.

It works per instruction, and an instruction is an SRAM tile, so a model's decode step costs a few hundred
thousand analytic evaluations, never a walk over elements:

1. **Cost each instruction** (``cost_instr``): a registry maps the instruction class to a function that turns
   its ``work()`` (bytes, M/N/K, elements, weight bits) into a ``units.UnitCost`` on its unit, then prices
   the actions with the config's ``energy.EnergyTable`` into energy by component, and counts the SRAM and
   DRAM bytes it moves. Identical tiles are costed once per config (``cost_key``: class, shapes, types and
   memory spaces, not buffer names or offsets; ``ProgramPlan`` keeps them per program).
2. **Schedule** (``Timeline``): every unit (dma, lut, mma, vec, xbar, hardwired) runs its instructions in
   program order; across units an instruction waits for the buffers it reads (the last writer's end), and
   before it writes a buffer, for the earlier readers and writer of that buffer to finish; a buffer's first
   write also waits for earlier ops' accesses to the SRAM addresses it reuses. So DMA into a pong buffer
   overlaps the lmma reading ping, exactly as far as the program's buffers allow. A load of weights or
   constants (nothing the program computes) is a prefetch: it may start ahead of the DMA queue's order, in a
   gap of the engine's recent schedule, as soon as its addresses are free, so an op's first tiles load while
   the previous op computes. ``sync.barrier`` waits for all.
3. **Attribute**: each instruction's *exposed* cycles (how far it pushes the end of the whole program) add
   up to the total exactly, giving a latency breakdown per graph op; busy cycles per unit give utilization.
4. **Static energy**: leakage (at the supply voltage) and the clock tree/control energy per cycle, over the
   program's latency.

A matmul on hardwired weights (``rom``) is booked to the ``hardwired`` unit and energy component, whichever
instruction reached it. ``xbar.active`` = 0 means every crossbar the program holds, and a budget is capped
there, so more active crossbars never convert slower.

Capacity: a program whose SRAM buffers exceed the config's SRAM, or whose resident weights need more
crossbars than ``[xbar] count``, is an error naming the buffer or the count.

The config's own tables (``lut``, ``systolic``, ``vector``) give the unit shapes. The cost model reads its
sections from the config's pass-through tables, checked strictly here:

``[energy]``  node_nm, voltage, nominal_voltage, leakage_mw (at nominal_voltage), dram ("lpddr4", ..., or
              "onchip": the DRAM space is an on-chip SRAM of onchip_bank_kb banks, priced as chip energy),
              io_pj_per_byte (the chip's side of the external interface), sram_bank_kb, clock_pj_per_cycle
              (at nominal_voltage), xbar_cell_pj, hardwired_mult_pj (pJ at nominal_voltage; 0 = derived from
              the tables), adc_fj_per_step. A table lookup is priced from its cells (``cells.LookupPath``).
``[cost]``    sram_bytes_per_cycle (what the SRAM banks feed the systolic array's edges per cycle; a tile
              whose operand traffic needs more waits: cycles = max(compute, bytes / this); 0 = no limit),
              lut_macs_per_cycle, zero_fraction, skip_zeros, output_reuse, float_bits (width the chip
              holds float activations and KV entries at; DMA bytes and MACs of float tiles are costed at
              it), dma_latency_cycles, bus_clock_mhz (> 0: the external bus runs on the core clock and
              ``dram_gbps`` is its bandwidth at this clock), vec_latency, bit_serial, mma_arrays, dma_engines
              (engines share the bandwidth: more of them overlap latency-bound transfers, not big ones)
``[xbar]``    rows, columns, count, adc_bits, dac_bits, adcs, adc_cycles, cell_bits, input_bits, active
``[hardwired]`` mult_bits, input_bits, weight_bits
``[points.NAME]`` operating points: overrides such as ``clock_mhz = 25`` and ``"energy.voltage" = 0.68``
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from dataclasses import dataclass, field
from typing import Callable

from ladder.errors import LadderError
from ladder.types import dtype as lookup_dtype

from .config import ConfigError, HwConfig, load_config, read_table, with_overrides
from .cells import LookupPath
from .energy import EnergyTable, leakage_power
from .isa import (Barrier, Buffer, Dma, DmaGather, Instr, IsaError, Lmma, LutBuild, Mma, Program, Tile, Vec, Xmma)
from . import units as U

COMPUTE_UNITS = ("dma", "lut", "mma", "vec", "xbar", "hardwired")
# Energy components; "dram" is off-chip (the DRAM devices), everything else is the chip.
COMPONENTS = ("lut", "mma", "xbar", "hardwired", "vec", "sram", "io", "dram", "clock", "leakage")
OFF_CHIP = ("dram",)


# -- the cost model's config sections ------------------------------------------------------------------

@dataclass(frozen=True)
class EnergyParams:
    node_nm: int = 28
    voltage: float = 0.9
    nominal_voltage: float = 0.9
    leakage_mw: float = 0.0
    dram: str = "lpddr4"
    io_pj_per_byte: float = 0.0
    sram_bank_kb: float = 32.0
    clock_pj_per_cycle: float = 0.0
    xbar_cell_pj: float = 0.0
    hardwired_mult_pj: float = 0.0
    adc_fj_per_step: float = 0.0
    onchip_bank_kb: float = 256.0   # with dram = "onchip": the bank size of that on-chip store


@dataclass(frozen=True)
class CostParams:
    lut_macs_per_cycle: int = 0  # per LUT unit; 0: one lmma tile ([lut] tile) per unit per cycle
    bit_serial: bool = True     # lookups per weight bit plane (T-MAC, LUT Tensor Core); False: whole weights
    zero_fraction: float = -1.0  # expected zero weights; -1: 1/3 for ternary (uniform), 0 for the others
    skip_zeros: bool = False
    output_reuse: int = 1
    float_bits: int = 32
    dma_latency_cycles: int = 0
    bus_clock_mhz: float = 0.0   # > 0: the external bus runs on the core clock; dram_gbps holds at this clock
    vec_latency: int = 4
    mma_arrays: int = 1          # independent systolic arrays of [systolic]'s shape
    dma_engines: int = 1         # independent DMA engines sharing dram_gbps (each moves at 1/dma_engines of it)
    sram_bytes_per_cycle: float = 0.0   # SRAM -> systolic array edge bandwidth; 0: never stalls the array


@dataclass(frozen=True)
class XbarParams:
    rows: int = 256
    columns: int = 256
    count: int = 0          # crossbars on the chip (0: as many as the resident weights need)
    adc_bits: int = 8
    dac_bits: int = 1
    adcs: int = 1
    adc_cycles: int = 1
    cell_bits: int = 1
    input_bits: int = 8
    active: int = 0         # crossbars converting at once; 0: every crossbar the program holds


@dataclass(frozen=True)
class HardwiredParams:
    mult_bits: int = 4
    input_bits: int = 8
    weight_bits: int = 0    # 0: the weight type's width


SECTIONS = {"energy": EnergyParams, "cost": CostParams, "xbar": XbarParams, "hardwired": HardwiredParams}


def read_section(cfg: HwConfig, name: str):
    """A cost section of ``cfg`` as its dataclass; unknown keys and mistyped values are ConfigErrors (checked by
    config.read_table, the validator of the config's own tables too)."""
    return read_table(SECTIONS[name], cfg.section(name), f"[{name}]", cfg.source or cfg.name)


def operating_point(cfg: HwConfig, point: str) -> HwConfig:
    """``cfg`` at a named operating point of its ``[points]`` table (e.g. slim-llama's ``low-power``)."""
    points = cfg.section("points")
    if point not in points:
        raise ConfigError(f"config {cfg.name} has no operating point '{point}'; it has: "
                          f"{', '.join(points) or 'none'}")
    return with_overrides(cfg, points[point])


@dataclass(frozen=True)
class CostModel:
    """Everything the simulator needs from a config, parsed once."""

    cfg: HwConfig
    energy: EnergyParams
    cost: CostParams
    xbar: XbarParams
    hardwired: HardwiredParams
    table: EnergyTable

    @staticmethod
    def of(cfg: "HwConfig | str") -> "CostModel":
        cfg = load_config(cfg)
        e = read_section(cfg, "energy")
        kw = {"adc_fj_per_step": e.adc_fj_per_step} if e.adc_fj_per_step else {}
        table = EnergyTable(e.node_nm, e.voltage, e.dram, **kw)
        model = CostModel(cfg, e, read_section(cfg, "cost"), read_section(cfg, "xbar"),
                          read_section(cfg, "hardwired"), table)
        model.validate()
        return model

    def validate(self) -> None:
        src = self.cfg.source or self.cfg.name
        if not (0.0 <= self.cost.zero_fraction < 1.0 or self.cost.zero_fraction == -1.0):
            raise ConfigError(f"{src}: [cost] zero_fraction must be in [0, 1) (or -1: by weight type), got "
                              f"{self.cost.zero_fraction}")
        positive = {"energy.voltage": self.energy.voltage, "energy.nominal_voltage": self.energy.nominal_voltage,
                    "cost.float_bits": self.cost.float_bits, "cost.output_reuse": self.cost.output_reuse,
                    "cost.mma_arrays": self.cost.mma_arrays, "cost.dma_engines": self.cost.dma_engines,
                    "xbar.rows": self.xbar.rows,
                    "xbar.columns": self.xbar.columns, "xbar.adcs": self.xbar.adcs,
                    "hardwired.mult_bits": self.hardwired.mult_bits}
        for key, v in positive.items():
            if v <= 0:
                raise ConfigError(f"{src}: '{key}' must be > 0, got {v}")
        if self.cost.lut_macs_per_cycle < 0:
            raise ConfigError(f"{src}: 'cost.lut_macs_per_cycle' must be >= 0, got {self.cost.lut_macs_per_cycle}")
        try:
            self.table.sram_byte(self.energy.sram_bank_kb)
            if self.energy.dram != "onchip":
                self.table.dram_byte()
        except LadderError as e:
            raise ConfigError(f"{src}: [energy] {e.message}") from None

    # -- derived unit parameters ------------------------------------------------------------------
    @property
    def v2(self) -> float:
        """(V / V_nominal)^2: scales every calibrated per-action figure given at the nominal supply."""
        return (self.energy.voltage / self.energy.nominal_voltage) ** 2

    def zero_fraction(self, weight_dtype: str) -> float:
        """Expected fraction of zero weights: the config's, or by default 1/3 for ternary weights (uniform
        over -1, 0, +1) and none for the others."""
        if self.cost.zero_fraction >= 0:
            return self.cost.zero_fraction
        return 1 / 3 if weight_dtype == "ternary" else 0.0

    def lut(self, weight_dtype: str) -> U.LutParams:
        c, lut = self.cost, self.cfg.lut
        tile = None if c.lut_macs_per_cycle else (lut.tile.m, lut.tile.n, lut.tile.k)
        return U.LutParams(lut.units, c.lut_macs_per_cycle or lut.group, self.zero_fraction(weight_dtype),
                           c.skip_zeros, c.output_reuse, tile)

    @property
    def crossbar(self) -> U.CrossbarParams:
        x = self.xbar
        return U.CrossbarParams(x.rows, x.columns, x.count, x.adc_bits, x.dac_bits, x.adcs, x.adc_cycles, x.cell_bits,
                                x.active)

    @property
    def unit_copies(self) -> dict[str, int]:
        """Units the config has several independent copies of (the timeline runs an instruction on the copy
        that frees first)."""
        return {"mma": self.cost.mma_arrays, "dma": self.cost.dma_engines}

    @property
    def bandwidth_gbs(self) -> float:
        """External bandwidth at this clock: ``dram_gbps``, or for a bus on the core clock, ``dram_gbps`` scaled
        from ``bus_clock_mhz`` (where it was given) to ``clock_mhz``."""
        if self.cost.bus_clock_mhz > 0:
            return self.cfg.dram_gbps * self.cfg.clock_mhz / self.cost.bus_clock_mhz
        return self.cfg.dram_gbps

    def peak_macs_per_cycle(self, hardwired_weights: int = 0) -> dict[str, float]:
        """MACs per cycle of the LUT units, systolic arrays and hardwired multipliers (vector: element-ops).
        Hardwired multipliers scale with the weights a program holds in them (``hardwired_weights``): each
        weight does one MAC per ceil(input_bits / mult_bits) passes. Crossbars have no fixed peak here."""
        s = self.cfg.systolic
        t = self.cfg.lut.tile
        per_unit = self.cost.lut_macs_per_cycle or t.m * t.n * t.k
        lut = self.cfg.lut.units * per_unit if self.cfg.weight_placement == "stream" else 0
        passes = -(-self.hardwired.input_bits // self.hardwired.mult_bits)
        return {"lut": lut, "mma": s.rows * s.cols * self.cost.mma_arrays, "hardwired": hardwired_weights / passes,
                "vec": self.cfg.vector.lanes}

    def peak_tops(self, units: tuple[str, ...] = ("lut", "mma", "hardwired"), hardwired_weights: int = 0) -> float:
        """Peak throughput of matrix units (default: LUT + systolic + hardwired), 2 ops per MAC, at the
        config's clock."""
        p = self.peak_macs_per_cycle(hardwired_weights)
        return 2 * sum(p[u] for u in units) * self.cfg.clock_mhz * 1e6 / 1e12

    def static_power_mw(self) -> float:
        return leakage_power(self.energy.leakage_mw, self.energy.voltage, self.energy.nominal_voltage)


# -- per-instruction costs -----------------------------------------------------------------------------

@dataclass(frozen=True)
class InstrCost:
    unit: str
    cycles: int
    energy: dict[str, float]         # pJ by component
    ops: float = 0.0                 # arithmetic ops (2 per MAC) of matrix work
    dram_bytes: int = 0
    sram_bytes: int = 0              # read + written


Buffers = dict[str, Buffer]
Coster = Callable[[Instr, Buffers, CostModel], InstrCost]
COSTERS: dict[type, Coster] = {}


def costs(*classes: type) -> Callable[[Coster], Coster]:
    """Register a cost function for instruction classes (subclasses inherit it)."""
    def deco(fn: Coster) -> Coster:
        for c in classes:
            COSTERS[c] = fn
        return fn
    return deco


def _coster(cls: type) -> Coster:
    for klass in cls.__mro__:
        if klass in COSTERS:
            return COSTERS[klass]
    raise IsaError(f"the cost simulator has no model for '{getattr(cls, 'opcode', cls.__name__)}'")


def _space(bufs: Buffers, buf: str) -> str:
    return bufs[buf].space


def _tile_bits(t: Tile, m: CostModel) -> int:
    """Bits per element the chip moves for a tile: float tiles at the chip's ``float_bits``."""
    dt = lookup_dtype(t.dtype)
    return min(dt.bits, m.cost.float_bits) if dt.is_float else dt.bits


def _tile_bytes(t: Tile, m: CostModel) -> float:
    return t.elems * _tile_bits(t, m) / 8 if lookup_dtype(t.dtype).is_float and not t.layout else t.nbytes


def _sram(m: CostModel, nbytes: float) -> float:
    return nbytes * m.table.sram_byte(m.energy.sram_bank_kb)


@costs(Dma, DmaGather)
def _cost_dma(ins: Instr, bufs: Buffers, m: CostModel) -> InstrCost:
    ends = (ins.src, ins.dst) if isinstance(ins, Dma) else (ins.table, ins.dst)
    nbytes = ins.work().bytes
    dt = lookup_dtype(bufs[ends[0]].dtype.split("<")[0])
    if dt.is_float and dt.bits > m.cost.float_bits:
        nbytes = nbytes * m.cost.float_bits // dt.bits
    spaces = [bufs[b].space for b in ends]
    dram = nbytes * spaces.count("dram")      # a DRAM-to-DRAM copy reads and writes it
    sram = nbytes * spaces.count("sram")
    if dram:
        cycles = U.dma(dram, m.bandwidth_gbs / m.cost.dma_engines, m.cfg.clock_mhz, m.cost.dma_latency_cycles).cycles
    else:  # SRAM to SRAM (or out of crossbars / ROM into SRAM): an on-chip move at the vector width
        cycles = -(-nbytes // (m.cfg.vector.lanes * 4))
    if m.energy.dram == "onchip":   # the "DRAM" space is a big on-chip SRAM (Taalas: KV cache on chip)
        energy = {"sram": dram * m.table.sram_byte(m.energy.onchip_bank_kb) + _sram(m, sram)}
    else:
        energy = {"dram": dram * m.table.dram_byte(), "io": dram * m.energy.io_pj_per_byte * m.v2,
                  "sram": _sram(m, sram)}
    return InstrCost("dma", cycles, energy, dram_bytes=dram, sram_bytes=sram)


@costs(LutBuild)
def _cost_lut_build(ins: LutBuild, bufs: Buffers, m: CostModel) -> InstrCost:
    if m.cfg.weight_placement == "hardwired":  # hardwired multipliers take the activations themselves
        return InstrCost("hardwired", 0, {})
    w = ins.work()
    act_bits = _tile_bits(ins.src, m)
    # the tables serve weights of any type: only an explicit zero fraction thins them
    c = U.lut_precompute(w.m, w.k, m.cfg.lut.group, max(1, m.cfg.lut.units), max(m.cost.zero_fraction, 0.0),
                         m.cost.skip_zeros, act_bits)
    adds = sum(v for k, v in c.actions.items() if k.startswith("add"))
    sram = _tile_bytes(ins.src, m) + c.actions["table_bytes"]
    return InstrCost("lut", c.cycles, {"lut": adds * m.table.add(act_bits + m.cfg.lut.group),
                                       "sram": _sram(m, sram)}, sram_bytes=int(sram))


def lookup_pj(m: CostModel) -> float:
    """One table lookup: the multiplexer tree (and mirror negation) that reads an entry out of the unit's table
    registers, priced from its cells (``cells.LookupPath``) at the config's node and supply."""
    return LookupPath.of(m.cfg.lut).pj_45nm * m.table.scale


@costs(Lmma)
def _cost_lmma(ins: Lmma, bufs: Buffers, m: CostModel) -> InstrCost:
    w = ins.work()
    if _space(bufs, ins.w.buffer) == "rom":
        return _cost_hardwired(w.m, w.n, w.k, w.bits, _tile_bits(ins.table, m), m)
    planes = w.bits if m.cost.bit_serial else 1
    c = U.lut_matmul(w.m, w.n, w.k * planes, m.lut(ins.w.dtype))
    sram = w.bytes + c.actions["psum_bytes"]
    energy = {"lut": c.actions["lut_lookup"] * (lookup_pj(m) + m.table.add(32)), "sram": _sram(m, sram)}
    return InstrCost("lut", c.cycles, energy, ops=2 * w.macs, sram_bytes=int(sram))


def _cost_hardwired(mm: int, n: int, k: int, bits: int, act_bits: int, m: CostModel) -> InstrCost:
    """A matmul on weights hardwired as multipliers (a ``rom`` weight): its own unit and energy component,
    whichever instruction (lmma or mma) the lowering used to reach it."""
    h = m.hardwired
    wbits = h.weight_bits or bits
    c = U.hardwired_matmul(mm, n, k, h.input_bits or act_bits, h.mult_bits, wbits)
    mult_pj = m.energy.hardwired_mult_pj * m.v2 if m.energy.hardwired_mult_pj else m.table.mult(h.mult_bits)
    energy = {"hardwired": c.actions[f"mult{h.mult_bits}"] * mult_pj + c.actions["add32"] * m.table.add(32)}
    return InstrCost("hardwired", c.cycles, energy, ops=2 * mm * n * k)


@costs(Xmma)
def _cost_xmma(ins: Xmma, bufs: Buffers, m: CostModel) -> InstrCost:
    w = ins.work()
    p = m.crossbar
    c = U.crossbar_mvm(w.m, w.n, w.k, m.xbar.input_bits, w.bits, p)
    a = c.actions
    xbar = (a[f"adc{p.adc_bits}"] * m.table.adc_conversion(p.adc_bits)
            + a[f"dac{p.dac_bits}"] * m.table.dac_conversion(p.dac_bits)
            + a["shift_add"] * m.table.add(16) + a["xbar_cell_reads"] * m.energy.xbar_cell_pj * m.v2)
    sram = _tile_bytes(ins.x, m) + ins.dst.nbytes
    return InstrCost("xbar", c.cycles, {"xbar": xbar, "sram": _sram(m, sram)}, ops=2 * w.macs, sram_bytes=int(sram))


@costs(Mma)
def _cost_mma(ins: Mma, bufs: Buffers, m: CostModel) -> InstrCost:
    w = ins.work()
    if _space(bufs, ins.b.buffer) == "rom":
        return _cost_hardwired(w.m, w.n, w.k, ins.b.type.dtype.bits, _tile_bits(ins.a, m), m)
    s = m.cfg.systolic
    bits = max(_tile_bits(ins.a, m), _tile_bits(ins.b, m))
    c = U.systolic(w.m, w.n, w.k, s.rows, s.cols, s.dataflow, bits)
    mac = m.table.mult(bits) + m.table.add(32) if bits <= 16 else m.table.op("fp32_mult") + m.table.op("fp32_add")
    a = c.actions
    sram = (a["a_reads"] * _tile_bits(ins.a, m) + a["b_reads"] * _tile_bits(ins.b, m)) / 8 + a["out_writes"] * 4
    cycles = c.cycles
    if m.cost.sram_bytes_per_cycle > 0:   # the banks cannot feed the edges fast enough: the array stalls
        cycles = max(cycles, math.ceil(sram / m.cost.sram_bytes_per_cycle))
    return InstrCost("mma", cycles, {"mma": a[f"mac{bits}"] * mac, "sram": _sram(m, sram)}, ops=2 * w.macs,
                     sram_bytes=int(sram))


@costs(Vec)
def _cost_vec(ins: Vec, bufs: Buffers, m: CostModel) -> InstrCost:
    elems = ins.work().elems
    tiles = ins.dst + ins.src
    bits = max((_tile_bits(t, m) for t in tiles), default=16)
    kind = "softmax" if ins.fn == "attn_softmax" else ins.fn
    c = U.vector_op(elems, kind, m.cfg.vector.lanes, m.cost.vec_latency, bits)
    width = "fp32" if bits > 16 else "fp16"
    vop = m.table.op(f"{width}_add") + m.table.op(f"{width}_mult")
    sram = sum(_tile_bytes(t, m) for t in tiles)
    return InstrCost("vec", c.cycles, {"vec": c.actions[f"vop{bits}"] * vop / 2, "sram": _sram(m, sram)},
                     sram_bytes=int(sram))


@costs(Barrier)
def _cost_barrier(ins: Barrier, bufs: Buffers, m: CostModel) -> InstrCost:
    return InstrCost("sync", 0, {})


def cost_instr(ins: Instr, prog: "Program | Buffers", model: CostModel) -> InstrCost:
    """The cost of one instruction of ``prog`` (or of a program with these buffers by name)."""
    bufs = prog.buffer_map if isinstance(prog, Program) else prog
    return _coster(type(ins))(ins, bufs, model)


# -- the timeline ----------------------------------------------------------------------------------------

class Timeline:
    """In-order units with dependencies between them: a scoreboard over buffer names, plus SRAM address reuse.

    Buffers of one op never overlap, so within an op names are exact. Ops reuse the same SRAM addresses, so
    the first write to an SRAM buffer (its lifetime starts) also waits for every access of earlier ops to
    the address blocks it covers (``regions``: buffer -> block numbers; 1/``SRAM_BLOCKS`` of the SRAM each):
    the next op's weights cannot be prefetched into addresses the current op still uses.

    **First loads overlap earlier work** (a prefetch, as SCALE-Sim's double-buffered scratchpads prefetch the
    next operand set while the array computes): a load that depends on nothing the program computes (it reads
    only weights or constants, ``hoist``) leaves the DMA queue's program order. It starts as soon as its SRAM
    addresses are free, in the first gap of the DMA engine's recent schedule (the last ``HOIST_WINDOW``
    transfers) long enough for it. So the first weight tiles of the next op load while the current op
    computes its last tiles, wherever double buffering leaves their addresses free, instead of after the
    current op's last store. A load that reads what the program computes (activations, the KV cache, gather
    indices) keeps its place in the queue."""

    HOIST_WINDOW = 32

    def __init__(self, regions: dict[str, tuple[int, ...]] | None = None, copies: dict[str, int] | None = None):
        # A unit with several copies (e.g. one systolic array per KV head) runs each instruction on the copy
        # that frees first.
        self.copies = {u: [0] * max(1, (copies or {}).get(u, 1)) for u in COMPUTE_UNITS}
        # Recent busy intervals of each DMA engine (oldest first), where a hoisted load may find a gap; the
        # floor is the end of the last interval that left the window (nothing is placed before it).
        self.recent: list[list[tuple[int, int]]] = [[] for _ in self.copies["dma"]]
        self.floor: list[int] = [0] * len(self.copies["dma"])
        self.busy: dict[str, int] = {u: 0 for u in COMPUTE_UNITS}
        self.written: dict[str, int] = {}   # buffer -> end of its last writer
        self.read: dict[str, int] = {}      # buffer -> latest end among its readers since that write
        self.end = 0
        self.regions = regions or {}
        self.history: dict[int, int] = {}   # SRAM block -> latest end of an access by an earlier op
        self.group = None                   # the op whose instructions are being placed
        self.touched: dict[str, int] = {}   # SRAM buffers of that op -> latest end of an access

    def _next_group(self, group) -> None:
        hist = self.history
        for b, t in self.touched.items():
            for blk in self.regions[b]:
                if hist.get(blk, 0) < t:
                    hist[blk] = t
        self.touched = {}
        self.group = group

    def _gap(self, lane: int, ready: int, cycles: int) -> int | None:
        """The earliest start >= ``ready`` of a gap of ``cycles`` among the DMA engine's recent transfers, or
        None when the first free time is at the end of its queue."""
        t = max(ready, self.floor[lane])
        for s, e in self.recent[lane]:
            if t + cycles <= s:
                return t
            t = max(t, e)
        return None

    def _book_dma(self, lane: int, start: int, stop: int) -> None:
        recent = self.recent[lane]
        i = len(recent)
        while i and recent[i - 1][0] > start:
            i -= 1
        recent.insert(i, (start, stop))
        if len(recent) > self.HOIST_WINDOW:
            self.floor[lane] = max(self.floor[lane], recent.pop(0)[1])

    def schedule(self, unit: str, cycles: int, reads: tuple[str, ...], writes: tuple[str, ...],
                 group=None, hoist: bool = False) -> int:
        """Place one instruction of op ``group``; returns the cycles by which it moved the program's end
        (its exposed time). ``hoist``: a load of weights or constants, which may start ahead of the DMA queue's
        program order (see the class docstring)."""
        if unit == "sync":
            for u, lanes in self.copies.items():
                lanes[:] = [self.end] * len(lanes)
            for lane in range(len(self.recent)):
                self.recent[lane], self.floor[lane] = [], self.end
            return 0
        if group != self.group:
            self._next_group(group)
        lanes = self.copies[unit]
        lane = lanes.index(min(lanes)) if len(lanes) > 1 else 0
        written, read, regions = self.written, self.read, self.regions
        ready = 0
        for b in reads:
            ready = max(ready, written.get(b, 0))
        for b in writes:
            ready = max(ready, written.get(b, 0), read.get(b, 0))
            if b in regions and b not in written:
                ready = max([ready] + [self.history.get(blk, 0) for blk in regions[b]])
        start = max(lanes[lane], ready)
        if unit == "dma":
            if hoist and cycles and ready < lanes[lane]:
                gaps = [(g, n) for n in range(len(lanes)) if (g := self._gap(n, ready, cycles)) is not None]
                if gaps:
                    start, lane = min(gaps)
            self._book_dma(lane, start, start + cycles)
        stop = start + cycles
        lanes[lane] = max(lanes[lane], stop)
        self.busy[unit] = self.busy.get(unit, 0) + cycles
        for b in reads:
            if read.get(b, 0) < stop:
                read[b] = stop
        for b in writes:
            written[b] = stop
            read[b] = 0
        for b in reads + writes:
            if b in regions and self.touched.get(b, 0) < stop:
                self.touched[b] = stop
        exposed = max(0, stop - self.end)
        self.end = max(self.end, stop)
        return exposed


SRAM_BLOCKS = 256


def sram_regions(program: Program) -> dict[str, tuple[int, ...]]:
    """SRAM buffer -> the address blocks (1/SRAM_BLOCKS of the SRAM) it covers."""
    size = max(program.sram_bytes, program.space_bytes("sram"), 1)
    block = -(-size // SRAM_BLOCKS)
    return {b.name: tuple(range(b.addr // block, -(-(b.addr + b.bytes) // block)))
            for b in program.buffers if b.space == "sram" and b.bytes}


# -- simulation ---------------------------------------------------------------------------------------

@dataclass
class OpCost:
    """What one graph op (by its result name) cost: exposed cycles, busy cycles per unit, energy, traffic."""

    name: str
    kind: str = ""
    exposed_cycles: int = 0
    busy: dict[str, int] = field(default_factory=dict)
    energy_pj: float = 0.0
    ops: float = 0.0
    dram_bytes: int = 0
    instructions: int = 0


@dataclass
class SimResult:
    """The simulated cost of one run of a program (one model step)."""

    program: str
    config: HwConfig
    model: CostModel
    cycles: int
    busy: dict[str, int]
    energy_pj: dict[str, float]
    ops: float
    dram_bytes: int
    sram_bytes: int
    instructions: int
    per_op: dict[str, OpCost]
    sram_used: int
    tokens: int = 1                  # tokens one run produces (a decode step: 1)
    hardwired_weights: int = 0       # weights the program holds as hardwired multipliers (rom space)
    xbar_bits: int = 0               # weight bits the program keeps in crossbars

    @property
    def seconds(self) -> float:
        return self.cycles / (self.config.clock_mhz * 1e6)


def cost_key(ins: Instr, bufs: Buffers) -> tuple:
    """What an instruction's cost depends on: its class, shapes, types and memory spaces, not its buffer
    names or offsets (so the many identical tiles of a model are costed once)."""
    if isinstance(ins, Dma):
        src = bufs[ins.src]
        return type(ins), ins.rows * ins.row_bytes, src.space, bufs[ins.dst].space, src.dtype
    if isinstance(ins, DmaGather):
        table = bufs[ins.table]
        return type(ins), ins.count, ins.row_bytes, table.space, bufs[ins.dst].space, table.dtype
    tiles = tuple((t.dtype, t.shape, t.layout, bufs[t.buffer].space) for t in ins.tiles())
    return type(ins), getattr(ins, "fn", ""), tiles


def crossbars_held(program: Program, model: CostModel) -> int:
    """Crossbars the program's resident weights occupy (each ``xbar`` buffer in whole crossbars)."""
    x = model.xbar
    plan = plan_of(program)
    shape = (x.rows, x.columns, x.cell_bits)
    if shape not in plan.xbar_held:
        cells = x.rows * x.columns * x.cell_bits
        plan.xbar_held[shape] = sum(-(-b.bytes * 8 // cells) for b in program.buffers if b.space == "xbar")
    return plan.xbar_held[shape]


def with_active_crossbars(program: Program, model: CostModel) -> CostModel:
    """``xbar.active`` resolved for this program: 0 ("all") is every crossbar it holds (or the chip's count),
    and no budget exceeds that, so converting throughput never falls as the budget grows."""
    held = model.xbar.count or crossbars_held(program, model)
    if not held:
        return model
    active = min(model.xbar.active, held) if model.xbar.active else held
    if active == model.xbar.active:
        return model
    return dataclasses.replace(model, xbar=dataclasses.replace(model.xbar, active=active))


def check_crossbars(program: Program, model: CostModel) -> None:
    """Resident weights must fit the crossbars: each ``xbar`` buffer holds its bits in whole crossbars."""
    x = model.xbar
    if not x.count:
        return
    need = crossbars_held(program, model)
    if need > x.count:
        raise IsaError(f"program @{program.name} keeps {program.space_bytes('xbar'):,} bytes of weights in "
                       f"crossbars: {need:,} crossbars of {x.rows}x{x.columns}, but config {model.cfg.name} has "
                       f"{x.count:,}")


class ProgramPlan:
    """What simulating a program needs that no config changes: each instruction's cost key, one instruction per
    key, how often each key occurs per graph op. Kept per program (``plan_of``), it lets a sweep or a fit
    re-cost a program on many configs by costing only its distinct tiles; the timeline, the one walk over
    every instruction, is re-run only when the tiles' (unit, cycles) change, and reused when only energy does."""

    def __init__(self, program: Program):
        bufs = program.buffer_map
        index: dict[tuple, int] = {}
        self.reps: list[Instr] = []
        self.keys: list[int] = []
        self.op_counts: dict[str, dict[int, int]] = {}
        for ins in program.instrs:
            key = cost_key(ins, bufs)
            k = index.get(key)
            if k is None:
                k = index[key] = len(self.reps)
                self.reps.append(ins)
            self.keys.append(k)
            counts = self.op_counts.setdefault(ins.op, {})
            counts[k] = counts.get(k, 0) + 1
        self.accesses = [(ins.reads(), ins.writes(), ins.op) for ins in program.instrs]
        # Loads that depend on nothing the program computes (weights, constants): the timeline may start them
        # ahead of the DMA queue's order, as prefetches (Timeline).
        computed = {b for _, writes, _ in self.accesses for b in writes}
        self.hoist = [isinstance(ins, (Dma, DmaGather)) and not computed.intersection(ins.reads())
                      and all(bufs[b].space == "sram" for b in ins.writes()) for ins in program.instrs]
        self.regions = sram_regions(program)
        self.buffers = bufs
        self.sram_used = program.space_bytes("sram")
        self.xbar_bits = 8 * program.space_bytes("xbar")
        self.hardwired_weights = hardwired_weights(program)
        self.xbar_held: dict[tuple, int] = {}   # crossbar shape -> crossbars the resident weights occupy
        self.timings: dict[tuple, tuple] = {}   # (units, cycles, copies) -> (end, busy, exposed per op)


_PLANS: dict[int, ProgramPlan] = {}


def plan_of(program: Program) -> ProgramPlan:
    """The program's plan, built once while the program lives."""
    plan = _PLANS.get(id(program))
    if plan is None:
        plan = _PLANS[id(program)] = ProgramPlan(program)
        weakref.finalize(program, _PLANS.pop, id(program), None)
    return plan


def _timeline(plan: ProgramPlan, costs: list[InstrCost], copies: dict[str, int]) -> tuple:
    sig = (tuple((c.unit, c.cycles) for c in costs), tuple(sorted(copies.items())))
    hit = plan.timings.get(sig)
    if hit is not None:
        return hit
    timeline = Timeline(plan.regions, copies)
    exposed: dict[str, int] = {}
    for k, (reads, writes, op), hoist in zip(plan.keys, plan.accesses, plan.hoist):
        c = costs[k]
        e = timeline.schedule(c.unit, c.cycles, reads, writes, op, hoist)
        if c.unit != "sync":
            exposed[op] = exposed.get(op, 0) + e
    if len(plan.timings) > 256:   # a sweep over many clocks: keep the memory bounded
        plan.timings.clear()
    out = plan.timings[sig] = (timeline.end, dict(timeline.busy), exposed)
    return out


def simulate(program: Program, cfg: "HwConfig | str | CostModel", *, op_kinds: dict[str, str] | None = None,
             tokens: int = 1) -> SimResult:
    """Cost one run of ``program`` on ``cfg``. ``op_kinds`` (value name -> op kind) labels the per-op
    breakdown; ``tokens`` is how many tokens one run produces."""
    model = cfg if isinstance(cfg, CostModel) else CostModel.of(cfg)
    plan = plan_of(program)
    sram_used = plan.sram_used
    if sram_used > model.cfg.sram_bytes:
        big = max((b for b in program.buffers if b.space == "sram"), key=lambda b: b.addr + b.bytes)
        raise IsaError(f"program @{program.name} needs {sram_used} bytes of SRAM (buffer %{big.name} ends at "
                       f"{big.addr + big.bytes}) but config {model.cfg.name} has {model.cfg.sram_bytes}")
    check_crossbars(program, model)
    model = with_active_crossbars(program, model)
    bufs = plan.buffers
    costs = [cost_instr(ins, bufs, model) for ins in plan.reps]
    cycles, busy, exposed = _timeline(plan, costs, model.unit_copies)
    energy = dict.fromkeys(COMPONENTS, 0.0)
    per_op: dict[str, OpCost] = {}
    kinds = op_kinds or {}
    ops = 0.0
    dram = sram = 0
    for op, counts in plan.op_counts.items():
        oc = OpCost(op or "(none)", kinds.get(op, ""), exposed.get(op, 0))
        for k, n in counts.items():
            c = costs[k]
            for comp, pj in c.energy.items():
                energy[comp] += pj * n
            ops += c.ops * n
            dram += c.dram_bytes * n
            sram += c.sram_bytes * n
            if c.unit == "sync":
                continue
            oc.busy[c.unit] = oc.busy.get(c.unit, 0) + c.cycles * n
            oc.energy_pj += sum(c.energy.values()) * n
            oc.ops += c.ops * n
            oc.dram_bytes += c.dram_bytes * n
            oc.instructions += n
        if oc.instructions:
            per_op[op] = oc
    seconds = cycles / (model.cfg.clock_mhz * 1e6)
    energy["clock"] = model.energy.clock_pj_per_cycle * model.v2 * cycles
    energy["leakage"] = model.static_power_mw() * 1e-3 * seconds * 1e12
    return SimResult(program.name, model.cfg, model, cycles, busy, energy, ops, dram, sram,
                     len(program.instrs), per_op, sram_used, tokens, plan.hardwired_weights, plan.xbar_bits)


def hardwired_weights(program: Program) -> int:
    """Weights held in the ``rom`` space (hardwired multipliers), counted from their images' shapes."""
    rom = {b.name for b in program.buffers if b.space == "rom"}
    return sum(math.prod(im.shape) for im in program.weights if im.buffer in rom)
