"""The standard cells of a LUT unit's lookup: what reading one table entry switches, in area and energy at 45 nm.

A LUT Tensor Core-style unit keeps its tables in registers beside the datapath and broadcasts them to a row of
columns; each column picks its entry with a multiplexer tree driven by its weight bits. With mirror consolidation
(LUT[~i] = -LUT[i]) a table holds 2^(g-1) entries and the top weight bit negates the pick: an XOR per entry bit,
the +1 of the two's complement entering the accumulator as its carry-in. So one lookup is a tree of
``entries - 1`` 2:1 multiplexers per entry bit, plus ``bits`` XORs when mirrored; reading a register is the
multiplexer, nothing more (its bits sit still while the lookups run).

* **Cell areas**: the NanGate FreePDK45 Open Cell Library (v1.3), X1 drive, µm²: FA_X1 4.256, MUX2_X1 1.862,
  XOR2_X1 1.596 (cells 1.4 µm tall on a 0.19 µm site: 16, 7 and 6 sites). Eight FA_X1 are 34 µm², Horowitz's
  8-bit adder 36 µm² (``area.py``): the two sources agree on what an adder is.
* **Cell energies**: dynamic energy is the switched capacitance times V², and within one library a cell's
  capacitance grows with its area. Horowitz's own 45 nm table (ISSCC 2014, Fig. 1.1.9) shows it for integer
  logic: 8-bit add 0.03 pJ / 36 µm², 32-bit add 0.1 pJ / 137 µm², 8-bit multiply 0.2 pJ / 282 µm², i.e.
  0.71-0.83 fJ per µm². A cell's energy here is its area times the pooled ratio of those three (0.33 pJ over
  455 µm² = 0.725 fJ/µm²), at the same data activity as his arithmetic. No figure of a chip this models enters it.
"""

from __future__ import annotations

from dataclasses import dataclass

NANGATE45_UM2 = {"FA": 4.256, "MUX2": 1.862, "XOR2": 1.596}
# Horowitz ISSCC 2014, 45 nm: (pJ, µm²) of his integer arithmetic, the energy-per-area anchor.
HOROWITZ_45NM_INT_PJ_UM2 = {"int8_add": (0.03, 36.0), "int32_add": (0.1, 137.0), "int8_mult": (0.2, 282.0)}
FJ_PER_UM2_45NM = (1e3 * sum(pj for pj, _ in HOROWITZ_45NM_INT_PJ_UM2.values())
                   / sum(um2 for _, um2 in HOROWITZ_45NM_INT_PJ_UM2.values()))


@dataclass(frozen=True)
class LookupPath:
    """The cells one table lookup switches: a multiplexer tree choosing one of ``entries`` entries of ``bits``
    bits, and with ``mirror`` the conditional negation."""

    entries: int
    bits: int
    mirror: bool

    @staticmethod
    def of(lut) -> "LookupPath":
        """The lookup of a config's ``[lut]`` table (``config.LutConfig``)."""
        entries = 2 ** (lut.group - 1) if lut.mirror else 2 ** lut.group
        return LookupPath(entries, lut.table_bits, lut.mirror)

    @property
    def cells(self) -> dict[str, int]:
        return {"MUX2": (self.entries - 1) * self.bits, "XOR2": self.bits if self.mirror else 0}

    @property
    def um2_45nm(self) -> float:
        return sum(n * NANGATE45_UM2[c] for c, n in self.cells.items())

    @property
    def pj_45nm(self) -> float:
        return self.um2_45nm * FJ_PER_UM2_45NM / 1e3


__all__ = ["FJ_PER_UM2_45NM", "LookupPath", "NANGATE45_UM2"]
