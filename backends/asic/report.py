"""What a simulation says, as figures a hardware designer reads: a ``Report`` over one or more runs of a
program (``cost.SimResult``), printed as a text table, JSON or CSV.

Figures (per token unless named otherwise; "chip" excludes the DRAM devices' energy, "system" includes it —
published chips quote chip power):

* cycles, latency (s per run), tokens/s;
* energy per token (chip, system), average power (chip, system), energy by component;
* ops (2 per MAC of matrix work, zero weights included, as chip papers count them), achieved TOPS, peak TOPS
  of the LUT units, systolic arrays and the hardwired multipliers a program holds weights in (crossbars have
  no fixed peak), TOPS/W (chip);
* utilization per unit (busy cycles / total cycles), DRAM traffic, SRAM traffic and SRAM used;
* area of the units and SRAM (``area.py``; no I/O ring, control or wiring) and peak TOPS per mm²;
* per-op (named by source: ``layers.12.down``, where the graph has one) and per-op-kind breakdown: exposed
  cycles (their share of the latency; they add up to the total),
  busy cycles per unit, dynamic energy (DRAM included; leakage and clock are not per op), ops, DRAM bytes.

CSV is long-format, one figure per line: ``scope,name,metric,value`` with scope ``summary``, ``unit``,
``energy``, ``area``, ``kind`` or ``op`` — one file holds everything and loads as a table.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .area import AreaBreakdown, chip_area
from .costsim import COMPONENTS, COMPUTE_UNITS, OFF_CHIP, OpCost, SimResult


@dataclass(frozen=True)
class Report:
    sim: SimResult
    runs: int = 1          # decode steps simulated (each run is the same program)
    context: int = 0       # cache capacity the program was built for (0: unknown)
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)   # op -> source name (blk.3.ffn_down)

    # -- headline figures --------------------------------------------------------------------------
    @property
    def tokens(self) -> int:
        return self.sim.tokens * self.runs

    @property
    def latency_s(self) -> float:
        """Seconds per run of the program (one decode step)."""
        return self.sim.seconds

    @property
    def tokens_per_s(self) -> float:
        return self.sim.tokens / self.latency_s if self.latency_s else 0.0

    def energy_j(self, chip_only: bool = True) -> float:
        """Energy of one run, in joules."""
        return sum(v for k, v in self.sim.energy_pj.items() if not (chip_only and k in OFF_CHIP)) * 1e-12

    @property
    def energy_per_token_j(self) -> float:
        return self.energy_j() / self.sim.tokens

    @property
    def system_energy_per_token_j(self) -> float:
        return self.energy_j(chip_only=False) / self.sim.tokens

    @property
    def power_w(self) -> float:
        return self.energy_j() / self.latency_s if self.latency_s else 0.0

    @property
    def system_power_w(self) -> float:
        return self.energy_j(chip_only=False) / self.latency_s if self.latency_s else 0.0

    @property
    def tops(self) -> float:
        return self.sim.ops / self.latency_s / 1e12 if self.latency_s else 0.0

    @property
    def tops_per_w(self) -> float:
        e = self.energy_j()
        return self.sim.ops / e / 1e12 if e else 0.0

    @property
    def peak_tops(self) -> float:
        """LUT units + systolic arrays + the hardwired multipliers the program holds weights in."""
        return self.sim.model.peak_tops(hardwired_weights=self.sim.hardwired_weights)

    @property
    def area(self) -> AreaBreakdown:
        """Units and SRAM only (see ``area.py``): a lower bound on the die."""
        return chip_area(self.sim.model, self.sim.hardwired_weights, self.sim.xbar_bits)

    @property
    def peak_tops_per_mm2(self) -> float:
        a = self.area.total_mm2
        return self.peak_tops / a if a else 0.0

    def label(self, op: str) -> str:
        """An op by its source name where the graph has one (``layers.12.down``), else ``%name``."""
        return self.labels.get(op) or f"%{op}"

    def utilization(self) -> dict[str, float]:
        c = self.sim.cycles or 1
        copies = self.sim.model.unit_copies
        return {u: self.sim.busy.get(u, 0) / c / copies.get(u, 1) for u in COMPUTE_UNITS}

    def kinds(self) -> dict[str, OpCost]:
        """The per-op breakdown summed by op kind."""
        out: dict[str, OpCost] = {}
        for oc in self.sim.per_op.values():
            k = oc.kind or "(unlabelled)"
            agg = out.setdefault(k, OpCost(k, k))
            agg.exposed_cycles += oc.exposed_cycles
            agg.energy_pj += oc.energy_pj
            agg.ops += oc.ops
            agg.dram_bytes += oc.dram_bytes
            agg.instructions += oc.instructions
            for u, b in oc.busy.items():
                agg.busy[u] = agg.busy.get(u, 0) + b
        return out

    def latency_share(self, kinds: "str | tuple[str, ...]") -> float:
        """Fraction of the latency exposed by ops of these kinds (e.g. ``"attention"``)."""
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        part = sum(oc.exposed_cycles for k, oc in self.kinds().items() if k in kinds)
        return part / self.sim.cycles if self.sim.cycles else 0.0

    # -- serialisation -------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        s = self.sim
        out = {
            "program": s.program, "config": s.config.name, "clock_mhz": s.config.clock_mhz,
            "context": self.context, "tokens": self.tokens, "instructions": s.instructions,
            "cycles": s.cycles, "latency_s": self.latency_s, "total_s": self.latency_s * self.runs,
            "tokens_per_s": self.tokens_per_s, "energy_per_token_j": self.energy_per_token_j,
            "system_energy_per_token_j": self.system_energy_per_token_j, "power_w": self.power_w,
            "system_power_w": self.system_power_w, "ops": s.ops, "tops": self.tops, "peak_tops": self.peak_tops,
            "peak_tops_lut": self.sim.model.peak_tops(("lut",)), "peak_tops_mma": self.sim.model.peak_tops(("mma",)),
            "peak_tops_hardwired": self.sim.model.peak_tops(("hardwired",), self.sim.hardwired_weights),
            "area_mm2": self.area.total_mm2, "peak_tops_per_mm2": self.peak_tops_per_mm2,
            "tops_per_w": self.tops_per_w, "dram_bytes": s.dram_bytes, "sram_bytes": s.sram_bytes,
            "sram_used_bytes": s.sram_used,
        }
        out.update({f"util_{u}": v for u, v in self.utilization().items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "energy_pj": dict(self.sim.energy_pj),
            "busy_cycles": dict(self.sim.busy),
            "kinds": {k: _op_dict(oc, self.sim.cycles) for k, oc in sorted(self.kinds().items())},
            "ops": {n: {"label": self.label(n), **_op_dict(oc, self.sim.cycles)} for n, oc in self.sim.per_op.items()},
            "area_mm2": dict(self.area.mm2),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["scope", "name", "metric", "value"])
        d = self.to_dict()
        for k, v in d["summary"].items():
            w.writerow(["summary", "", k, v])
        for k, v in d["busy_cycles"].items():
            w.writerow(["unit", k, "busy_cycles", v])
        for k, v in d["energy_pj"].items():
            w.writerow(["energy", k, "pj", v])
        for k, v in d["area_mm2"].items():
            w.writerow(["area", k, "mm2", v])
        for scope in ("kinds", "ops"):
            for name, row in d[scope].items():
                for k, v in row.items():
                    w.writerow([scope.rstrip("s"), name, k, v])
        return buf.getvalue()

    def to_text(self, top: int = 12) -> str:
        s = self.sim
        lines = [f"@{s.program} on {s.config.name} ({s.config.clock_mhz:g} MHz"
                 + (f", context {self.context}" if self.context else "") + f"): {s.instructions} instructions"]
        rows = [
            ("cycles per token", f"{s.cycles / s.tokens:,.0f}"),
            ("latency per token", _si(self.latency_s / s.tokens, "s")),
            ("tokens/s", f"{self.tokens_per_s:,.2f}"),
            ("energy per token (chip)", _si(self.energy_per_token_j, "J")),
            ("energy per token (+DRAM)", _si(self.system_energy_per_token_j, "J")),
            ("average power (chip)", _si(self.power_w, "W")),
            ("average power (+DRAM)", _si(self.system_power_w, "W")),
            ("TOPS achieved / peak", f"{self.tops:.4g} / {self.peak_tops:.4g} (LUT + systolic + hardwired, "
                                     f"2 ops per MAC)"),
            ("TOPS/W (chip)", f"{self.tops_per_w:.4g}"),
            ("area (units + SRAM)", f"{self.area.total_mm2:.4g} mm^2 at {self.area.node_nm} nm, "
                                    f"{self.peak_tops_per_mm2:.4g} peak TOPS/mm^2 (no I/O, control or wiring)"),
            ("DRAM traffic", _si(s.dram_bytes, "B")),
            ("SRAM traffic / used", f"{_si(s.sram_bytes, 'B')} / {_si(s.sram_used, 'B')}"),
        ]
        if self.runs > 1:
            rows.append((f"{self.tokens} tokens", f"{_si(self.latency_s * self.runs, 's')}, "
                                                  f"{_si(self.energy_j() * self.runs, 'J')}"))
        width = max(len(r[0]) for r in rows)
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        lines.append("  utilization: " + ", ".join(f"{u} {v:.1%}" for u, v in self.utilization().items()))
        total = sum(s.energy_pj.values()) or 1.0
        lines.append("  energy: " + ", ".join(f"{k} {v / total:.1%}" for k, v in s.energy_pj.items() if v))
        lines.append("")
        lines.append(_table(sorted(self.kinds().values(), key=lambda o: -o.exposed_cycles), s.cycles, "op kind"))
        ranked = sorted(s.per_op.values(), key=lambda o: -o.exposed_cycles)[:top]
        lines.append("")
        lines.append(_table(ranked, s.cycles, f"top {len(ranked)} ops", self.label))
        return "\n".join(lines)


def _op_dict(oc: OpCost, cycles: int) -> dict[str, Any]:
    d = {"kind": oc.kind, "exposed_cycles": oc.exposed_cycles,
         "latency_share": oc.exposed_cycles / cycles if cycles else 0.0, "energy_pj": oc.energy_pj, "ops": oc.ops,
         "dram_bytes": oc.dram_bytes, "instructions": oc.instructions}
    d.update({f"busy_{u}": oc.busy.get(u, 0) for u in COMPUTE_UNITS})
    return d


def _table(rows: list[OpCost], cycles: int, title: str, label=None) -> str:
    head = f"  {title:<34} {'latency':>8} {'cycles':>14} {'energy':>10} {'DRAM':>10} {'instrs':>8}  busiest unit"
    out = [head]
    for oc in rows:
        unit = max(oc.busy, key=oc.busy.get) if oc.busy else "-"
        share = oc.exposed_cycles / cycles if cycles else 0.0
        name = oc.name if label is None else f"{label(oc.name)} ({oc.kind or '?'})"
        out.append(f"  {name[:34]:<34} {share:>8.1%} {oc.exposed_cycles:>14,} {_si(oc.energy_pj * 1e-12, 'J'):>10} "
                   f"{_si(oc.dram_bytes, 'B'):>10} {oc.instructions:>8}  {unit}")
    return "\n".join(out)


def _si(x: float, unit: str) -> str:
    """3 significant digits with an SI prefix: 0.000482 s -> '482 us'."""
    if x == 0:
        return f"0 {unit}"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "u"),
                           (1e-9, "n"), (1e-12, "p")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


__all__ = ["Report", "COMPONENTS"]
