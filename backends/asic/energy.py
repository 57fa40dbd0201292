"""Energy per action, by component, for a technology node and supply voltage.

The cost simulator counts *actions* (an 8-bit add, a 64-bit SRAM read, a byte over the DRAM interface, an ADC
conversion, ...) and multiplies each count by an energy from this module. Every figure starts at a published
reference point and is scaled to the config's node and voltage:

* **Arithmetic** and **SRAM**: Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC
  2014, keynote, Fig. 1.1.9 — 45 nm at 0.9 V. SRAM energy per 64-bit read grows like the square root of the
  bank size (the CACTI wire-dominated regime): Horowitz's 8 KB -> 10 pJ and 32 KB -> 20 pJ are exactly
  sqrt-proportional, and 1 MB gives 113 pJ against his 100 pJ.
* **DRAM**: per bit on the interface, by kind (DDR3 from Horowitz's 1.3-2.6 nJ per 64 bits; LPDDR4 and HBM2
  per-bit figures as used by Accelergy's and Timeloop's published tables, O'Connor et al. MICRO 2017 for HBM2).
  Off-chip energy scales with neither node nor core voltage.
* **ADC/DAC**: the Walden figure of merit E = FOM * 2^bits (Murmann's ADC survey); the default FOM is ISAAC's
  8-bit 1.28 GS/s ADC (Shafiee et al., ISCA 2016: 2 mW each -> 1.56 pJ/conversion -> 6.1 fJ/step at 32 nm).
* **Node scaling**: dynamic energy ~ C V^2 with C shrinking with the node. The capacitance factors below are
  approximate ratios after Stillmaker & Baas, "Scaling equations for the accurate prediction of CMOS device
  performance from 180 nm to 7 nm", Integration 2017 (energy at each node's nominal voltage, divided by that
  voltage squared so the V^2 term is applied once, from the config's actual supply).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ladder.errors import LadderError

REFERENCE_NODE_NM = 45
REFERENCE_VOLTAGE = 0.9

# Horowitz ISSCC 2014, 45 nm, 0.9 V: pJ per operation.
HOROWITZ_45NM_PJ = {
    "int8_add": 0.03,
    "int16_add": 0.05,   # interpolated between his 8- and 32-bit adds (linear in width)
    "int32_add": 0.1,
    "fp16_add": 0.4,
    "fp32_add": 0.9,
    "int8_mult": 0.2,
    "int32_mult": 3.1,
    "fp16_mult": 1.1,
    "fp32_mult": 3.7,
    "sram_64b_8kb": 10.0,
}

# Node -> (capacitance factor relative to 45 nm, nominal supply in volts). Approximate, after Stillmaker &
# Baas 2017 (their energy ratios at nominal supply, divided by (V_nom / 0.9)^2).
NODES = {
    90: (2.3, 1.2),
    65: (1.6, 1.1),
    45: (1.0, 0.9),
    40: (0.9, 0.9),
    32: (0.75, 0.9),
    28: (0.62, 0.9),
    22: (0.5, 0.85),
    16: (0.34, 0.8),
    14: (0.31, 0.8),
    12: (0.28, 0.8),
    10: (0.24, 0.75),
    7: (0.17, 0.75),
    6: (0.15, 0.75),
    5: (0.12, 0.7),
}

# DRAM interface energy per bit (pJ), by kind. Not scaled with the logic node.
DRAM_PJ_PER_BIT = {
    "ddr3": 20.0,    # Horowitz 2014: 1.3 nJ per 64-bit access (the low end of his 1.3-2.6 nJ)
    "ddr4": 15.0,    # Accelergy/Timeloop DRAM table (DDR4: ~15 pJ/bit)
    "lpddr4": 8.0,   # Accelergy/Timeloop DRAM table (LPDDR4: ~8 pJ/bit)
    "hbm2": 3.9,     # O'Connor et al., "Fine-grained DRAM", MICRO 2017 (HBM2 ~3.9 pJ/bit)
}

# ISAAC's 8-bit ADC (32 nm): 2 mW at 1.28 GS/s = 1.5625 pJ per conversion; / 2^8 steps.
ISAAC_ADC_FJ_PER_STEP = 1.5625e3 / 256
# ISAAC's 1-bit DACs: 4 mW for 8 x 128 of them at 1.28 GHz -> ~3 fJ per conversion.
ISAAC_DAC_PJ_PER_BIT = 4.0 / (8 * 128) / 1.28


@dataclass(frozen=True)
class EnergyTable:
    """Energies (pJ) for one node and supply. ``scale`` multiplies every on-chip dynamic figure; it is the
    node's capacitance factor times (V / 0.9)^2."""

    node_nm: int
    voltage: float
    dram_kind: str = "lpddr4"
    adc_fj_per_step: float = ISAAC_ADC_FJ_PER_STEP

    @property
    def capacitance(self) -> float:
        return node_factor(self.node_nm)

    @property
    def scale(self) -> float:
        return self.capacitance * (self.voltage / REFERENCE_VOLTAGE) ** 2

    def op(self, name: str) -> float:
        """An arithmetic op's energy in pJ, e.g. ``op("int8_add")``."""
        try:
            return HOROWITZ_45NM_PJ[name] * self.scale
        except KeyError:
            raise LadderError(f"no energy figure for '{name}'; known: {', '.join(HOROWITZ_45NM_PJ)}") from None

    def add(self, bits: int) -> float:
        """An integer add of ``bits`` width: linear in width (Horowitz: 8 bit 0.03 pJ, 32 bit 0.1 pJ)."""
        return (0.03 + (0.1 - 0.03) * (bits - 8) / 24) * self.scale if bits >= 8 else 0.03 * bits / 8 * self.scale

    def mult(self, bits: int) -> float:
        """An integer multiply: quadratic in width (array multiplier; 8 bit 0.2 pJ -> 32 bit 3.1 pJ is ~x16)."""
        return 0.2 * (bits / 8) ** 2 * self.scale

    def sram_byte(self, bank_kb: float) -> float:
        """One byte read or written in an SRAM bank of ``bank_kb`` KB (sqrt-of-size, see the docstring)."""
        e64 = HOROWITZ_45NM_PJ["sram_64b_8kb"] * math.sqrt(max(bank_kb, 1.0) / 8.0)
        return e64 / 8.0 * self.scale

    def dram_byte(self) -> float:
        try:
            return DRAM_PJ_PER_BIT[self.dram_kind] * 8.0
        except KeyError:
            raise LadderError(f"unknown DRAM kind '{self.dram_kind}'; known: {', '.join(DRAM_PJ_PER_BIT)}") from None

    def adc_conversion(self, bits: int) -> float:
        """One ADC conversion at ``bits`` resolution (Walden FOM x 2^bits), in pJ, scaled by the node."""
        return self.adc_fj_per_step * 2.0 ** bits / 1e3 * self.scale / node_factor(32)

    def dac_conversion(self, bits: int) -> float:
        """One DAC conversion: ISAAC's 1-bit DAC, doubling per extra bit."""
        return ISAAC_DAC_PJ_PER_BIT * 2.0 ** (bits - 1) * self.scale / node_factor(32)


def by_node(table: dict[int, float], node_nm: float, what: str) -> float:
    """``table``'s value at ``node_nm``; nodes between its entries interpolate log-log (the figures scale as
    powers of the feature size between neighbouring nodes)."""
    if node_nm in table:
        return table[node_nm]
    known = sorted(table)
    if not known[0] <= node_nm <= known[-1]:
        raise LadderError(f"technology node {node_nm} nm is outside the {what} tables ({known[0]}-{known[-1]} nm)")
    lo = max(n for n in known if n < node_nm)
    hi = min(n for n in known if n > node_nm)
    t = (math.log(node_nm) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return math.exp(math.log(table[lo]) * (1 - t) + math.log(table[hi]) * t)


def node_factor(node_nm: int) -> float:
    """The capacitance factor of ``node_nm`` relative to 45 nm."""
    return by_node({n: c for n, (c, _) in NODES.items()}, node_nm, "energy")


def nominal_voltage(node_nm: int) -> float:
    """The node's nominal supply (nearest table entry)."""
    return NODES[min(NODES, key=lambda n: abs(n - node_nm))][1]


def leakage_power(leakage_mw_nominal: float, voltage: float, nominal: float) -> float:
    """Leakage in mW at ``voltage`` given its value at ``nominal``. Subthreshold current grows with the supply
    through drain-induced barrier lowering; over the usual DVFS range P_leak ~ V^3 is a fair fit (V times a
    current roughly quadratic in V), the common first-order model in DVFS studies."""
    return leakage_mw_nominal * (voltage / nominal) ** 3
