"""Silicon area of a hardware config: mm² per unit and per SRAM byte, for a process node.

The model counts what the config declares (LUT units, systolic arrays, vector lanes, crossbars, hardwired
multipliers, SRAM) and nothing else: no I/O ring, PLL, control, DMA engines, interconnect or whitespace. It is
a lower bound on a die, and the reports say so. References:

* **Logic at 45 nm**: Horowitz, "Computing's energy problem", ISSCC 2014, Fig. 1.1.9, the area column
  (µm² at 45 nm): 8-bit add 36, 32-bit add 137, 8-bit multiply 282, 32-bit multiply 3495, fp16 add 1360,
  fp16 multiply 1640, fp32 add 4184, fp32 multiply 7700. Widths in between interpolate (adders linearly,
  multipliers quadratically, as in ``energy.py``).
* **Logic scaling**: area ~ 1 / logic density. Densities in million transistors per mm² (WikiChip's figures
  for the densest standard cells of each node): Intel 45 nm 3.33, 32 nm 7.11, 22 nm 15.3, 14 nm 37.5;
  TSMC 16 nm 28.9, 10 nm 52.5, 7 nm 91.2, 6 nm 107.6 (TSMC: N6 has 18% more logic density than N7),
  5 nm 171.3. Nodes in between interpolate log-log.
* **SRAM**: the 6T high-density bitcell of each node (µm²; ISSCC/IEDM disclosures): 45 nm 0.346 (Intel),
  32 nm 0.171 (Intel), 28 nm 0.127 (TSMC), 22 nm 0.092 (Intel), 16 nm 0.074 (TSMC), 14 nm 0.0588 (Intel),
  10 nm 0.042 (TSMC), 7 nm 0.027 (TSMC; N6 uses the same cell), 5 nm 0.021 (TSMC). A macro is
  ``SRAM_ARRAY_EFFICIENCY`` bitcells (assumed 0.6: sense amplifiers, decoders and I/O take the rest; published
  compiled macros range 0.5-0.75).
* **Crossbars**: ISAAC (Shafiee et al., ISCA 2016, Table 6, 32 nm): a 128x128 memristor crossbar 25 µm², an
  8-bit 1.28 GS/s ADC 1200 µm². A 256x256 crossbar is 4x the cells; both scale with logic density.
* **Assumed**: a systolic PE is its multiplier and accumulator times ``PE_OVERHEAD`` = 1.5 (operand and
  partial-sum pipeline registers); a LUT unit's lookup is its multiplexer tree and mirror negation
  (``cells.LookupPath``, NanGate 45 nm cell areas) and a 32-bit accumulator; its table entries are latches
  of ``LATCH_BITCELLS`` = 4 SRAM bitcells per bit; a hardwired weight is a ``mult_bits`` x ``input_bits`` array multiplier (Horowitz's
  multiply area, quadratic in width) plus its share of the adder tree (one 32-bit add).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .cells import LookupPath
from .energy import by_node

HOROWITZ_45NM_UM2 = {"int8_add": 36.0, "int32_add": 137.0, "int8_mult": 282.0, "int32_mult": 3495.0,
                     "fp16_add": 1360.0, "fp16_mult": 1640.0, "fp32_add": 4184.0, "fp32_mult": 7700.0}
LOGIC_DENSITY_MTR_MM2 = {45: 3.33, 32: 7.11, 22: 15.3, 16: 28.9, 14: 37.5, 10: 52.5, 7: 91.2, 6: 107.6, 5: 171.3}
SRAM_BITCELL_UM2 = {45: 0.346, 32: 0.171, 28: 0.127, 22: 0.092, 16: 0.074, 14: 0.0588, 10: 0.042, 7: 0.027,
                    6: 0.027, 5: 0.021}
SRAM_ARRAY_EFFICIENCY = 0.6
# The MAC PE ``lut_vs_mac`` compares a LUT unit with: "int" multiplies the weights widened to the activations
# (an act_bits x act_bits integer multiply, a 32-bit integer accumulate); "fp16" is a W_FP16 A_FP16 tensor
# core's PE (Horowitz's fp16 multiply and fp32 add: the 32-bit accumulator every MAC PE here has).
MAC_BASELINES = {"int": None, "fp16": ("fp16_mult", "fp32_add")}
PE_OVERHEAD = 1.5
LATCH_BITCELLS = 4.0
ISAAC_NODE_NM = 32
ISAAC_XBAR_128_UM2 = 25.0
ISAAC_ADC8_UM2 = 1200.0


def logic_scale(node_nm: float) -> float:
    """Area of a logic block at ``node_nm`` relative to 45 nm."""
    return LOGIC_DENSITY_MTR_MM2[45] / by_node(LOGIC_DENSITY_MTR_MM2, node_nm, "logic density")


def sram_mm2_per_byte(node_nm: float) -> float:
    return 8 * by_node(SRAM_BITCELL_UM2, node_nm, "SRAM bitcell") / SRAM_ARRAY_EFFICIENCY * 1e-6


def add_um2(bits: int, node_nm: float) -> float:
    a8, a32 = HOROWITZ_45NM_UM2["int8_add"], HOROWITZ_45NM_UM2["int32_add"]
    return (a8 + (a32 - a8) * (bits - 8) / 24 if bits >= 8 else a8 * bits / 8) * logic_scale(node_nm)


def mult_um2(bits_a: int, bits_b: int, node_nm: float) -> float:
    """An array multiplier of bits_a x bits_b: Horowitz's 8x8 area times (a*b / 64)."""
    return HOROWITZ_45NM_UM2["int8_mult"] * bits_a * bits_b / 64 * logic_scale(node_nm)


@dataclass(frozen=True)
class AreaBreakdown:
    node_nm: int
    mm2: dict[str, float] = field(default_factory=dict)   # by block: sram, lut, mma, vec, xbar, hardwired

    @property
    def total_mm2(self) -> float:
        return sum(self.mm2.values())


def chip_area(model, hardwired_weights: int = 0, xbar_weight_bits: int = 0) -> AreaBreakdown:
    """The area of a ``costsim.CostModel``'s config: its units and SRAM at its node. Crossbars and hardwired
    multipliers are sized by what a program keeps in them (``xbar_weight_bits`` cells, ``hardwired_weights``)."""
    cfg, node = model.cfg, model.energy.node_nm
    bits = min(model.cost.float_bits, 16)
    out = {"sram": cfg.sram_bytes * sram_mm2_per_byte(node)}
    if cfg.weight_placement == "stream":
        lut = cfg.lut
        entries = 2 ** (lut.group - 1) if lut.mirror else 2 ** lut.group
        table = entries * lut.table_bits * LATCH_BITCELLS * by_node(SRAM_BITCELL_UM2, node, "SRAM bitcell")
        macs = model.cost.lut_macs_per_cycle or lut.tile.m * lut.tile.n * lut.tile.k
        lookups = max(1, macs // lut.group)   # one table read and one accumulate per group of weights
        read = LookupPath.of(lut).um2_45nm * logic_scale(node)   # the multiplexer tree (+ mirror negation)
        out["lut"] = lut.units * (table + lookups * (read + add_um2(32, node))) * 1e-6
    s = cfg.systolic
    pe = (mult_um2(bits, bits, node) + add_um2(32, node)) * PE_OVERHEAD
    out["mma"] = s.rows * s.cols * model.cost.mma_arrays * pe * 1e-6
    lane = (HOROWITZ_45NM_UM2["fp16_add"] + HOROWITZ_45NM_UM2["fp16_mult"]) * logic_scale(node)
    out["vec"] = cfg.vector.lanes * lane * 1e-6
    if xbar_weight_bits:
        x = model.xbar
        cells = x.rows * x.columns
        count = math.ceil(xbar_weight_bits / (cells * x.cell_bits))
        per = (ISAAC_XBAR_128_UM2 * cells / 128 ** 2 + x.adcs * ISAAC_ADC8_UM2 * 2 ** (x.adc_bits - 8)) \
            * logic_scale(node) / logic_scale(ISAAC_NODE_NM)
        out["xbar"] = count * per * 1e-6
    if hardwired_weights:
        h = model.hardwired
        per = mult_um2(h.mult_bits, h.input_bits, node) + add_um2(32, node)
        out["hardwired"] = hardwired_weights * per * 1e-6
    return AreaBreakdown(node, out)


@dataclass(frozen=True)
class LutVsMac:
    """A config's LUT unit against a MAC unit doing the same matmul at the same node, per MAC of
    ``weight_bits``-bit weights and ``act_bits``-bit activations on the LUT side, the MAC unit's operands being
    ``mac`` (a key of ``MAC_BASELINES``): the comparison LUT Tensor Core publishes (compute density and energy
    efficiency of its LUT-based tensor core over a MAC-based one)."""

    weight_bits: int
    act_bits: int
    mac: str
    lut_um2_per_mac: float
    mac_um2_per_mac: float
    lut_pj_per_mac: float
    mac_pj_per_mac: float

    @property
    def density(self) -> float:
        """Compute density (MACs per cycle per mm²) of the LUT unit over the MAC unit."""
        return self.mac_um2_per_mac / self.lut_um2_per_mac

    @property
    def efficiency(self) -> float:
        """Energy efficiency (MACs per joule) of the LUT unit over the MAC unit."""
        return self.mac_pj_per_mac / self.lut_pj_per_mac


def lut_vs_mac(model, weight_bits: int = 1, act_bits: int = 8, mac: str = "int") -> LutVsMac:
    """The model's own units, nothing added for the comparison: the LUT unit as ``chip_area`` sizes it and
    the cost simulator prices it, against a MAC-array PE as ``chip_area`` sizes it (multiplier + 32-bit
    accumulator, times ``PE_OVERHEAD``) and the simulator prices an mma (a multiply and a 32-bit add).

    ``mac`` says what the MAC PE multiplies (``MAC_BASELINES``): ``"int"``, the weights widened to the
    activations' ``act_bits`` (dequantized) and an integer multiply; ``"fp16"``, an fp16 x fp16 multiply into
    an fp32 accumulator (a W_FP16 A_FP16 tensor core's PE), priced from Horowitz's fp16 multiply and fp32 add
    (area ``HOROWITZ_45NM_UM2``, energy ``energy.HOROWITZ_45NM_PJ``) like every other unit of the model.

    The LUT side per MAC: a lookup (``cells.LookupPath``) and a 32-bit accumulate per ``group`` MACs and weight
    bit plane, plus the table's build (its adds, as the simulator prices a ``lut.build``) shared by the
    ``tile.n`` columns the table is broadcast to in one lmma tile. A layer reuses a table across all its
    columns, so the build's share is smaller still; per tile it is the most it can be."""
    from .costsim import lookup_pj   # costsim does not import this module; report does
    from .units import lut_precompute

    if mac not in MAC_BASELINES:
        raise ValueError(f"unknown MAC baseline '{mac}'; known: {', '.join(MAC_BASELINES)}")
    cfg, node, table = model.cfg, model.energy.node_nm, model.table
    lut = cfg.lut
    planes = weight_bits if model.cost.bit_serial else 1
    unit_um2 = chip_area(model).mm2["lut"] * 1e6 / max(1, lut.units)
    macs = model.cost.lut_macs_per_cycle or lut.tile.m * lut.tile.n * lut.tile.k
    lut_um2 = unit_um2 / macs * planes
    build = lut_precompute(1, lut.group, lut.group, 1, act_bits=act_bits).actions
    build_pj = build[f"add{act_bits + lut.group}"] * table.add(act_bits + lut.group)
    lut_pj = (lookup_pj(model) + table.add(32)) / lut.group * planes + build_pj / (lut.group * lut.tile.n)
    if mac == "int":
        mac_um2 = (mult_um2(act_bits, act_bits, node) + add_um2(32, node)) * PE_OVERHEAD
        mac_pj = table.mult(act_bits) + table.add(32)
    else:
        mult, acc = MAC_BASELINES[mac]
        mac_um2 = (HOROWITZ_45NM_UM2[mult] + HOROWITZ_45NM_UM2[acc]) * logic_scale(node) * PE_OVERHEAD
        mac_pj = table.op(mult) + table.op(acc)
    return LutVsMac(weight_bits, act_bits, mac, lut_um2, mac_um2, lut_pj, mac_pj)


__all__ = ["AreaBreakdown", "LutVsMac", "MAC_BASELINES", "chip_area", "logic_scale", "lut_vs_mac",
           "sram_mm2_per_byte", "add_um2", "mult_um2"]
