"""Print the chip-figures tables of docs/asic-figures.md from the shipped configs: every published figure,
fitted or predicted, against ladder's simulation of it, and every fitted constant against its cited reference.

    python scripts/chip_figures.py > /tmp/figures.md
"""

from __future__ import annotations

import sys

from ladder.backends.asic.config import load_config
from ladder.backends.asic.fit import UNIT_METRICS, current_value, figure_rows, fit_specs

CHIPS = ("slim-llama", "pim-llm", "taalas-hc1", "lut-tc")


def condition(spec: dict) -> str:
    parts = [spec.get("model", "")]
    if spec.get("metric") in UNIT_METRICS:
        mac = "FP16 MAC" if spec.get("mac") == "fp16" else "INT MAC"
        parts.append(f"unit vs {mac}, W{spec.get('weight_bits', 1)} A{spec.get('act_bits', 8)}")
    if spec.get("context"):
        parts.append(f"context {spec['context']}")
    if spec.get("point"):
        parts.append(f"point {spec['point']}")
    if spec.get("ops_per_mac"):
        parts.append(f"{spec['ops_per_mac']} op/MAC")
    return ", ".join(p for p in parts if p)


def fmt(x) -> str:
    if isinstance(x, list):
        return "–".join(fmt(v) for v in x)
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:,.4g}" if abs(x) >= 1 else f"{x:.3g}"


def main() -> int:
    out = ["| chip | figure | condition | published | ladder | error | kind |", "|---|---|---|---|---|---|---|"]
    for chip in CHIPS:
        for r in figure_rows(chip):
            f = r.figure
            kind = r.label + (f" (by {', '.join(r.fitted_by)})" if r.fitted_by else "")
            if f.spec.get("compare") == "lower_bound":
                kind += ", a lower bound (units + SRAM only)"
            if f.spec.get("compare") == "at_least":
                kind += ", a floor (the source says over it)"
            if f.spec.get("energy_counts"):
                kind += f", energy of {' + '.join(f.spec['energy_counts'])}"
            if "known_miss" in f.spec:
                kind += " — known miss"
            out.append(f"| {chip} | {f.name} | {condition(f.spec)} | {fmt(f.value)} | {fmt(r.simulated)} | "
                       f"{r.error:+.1%} | {kind} |")
    out += ["", "| chip | fitted constant | value | fitted to | reference | ratio | reference source |",
            "|---|---|---|---|---|---|---|"]
    for chip in CHIPS:
        cfg = load_config(chip)
        for s in fit_specs(cfg):
            v = current_value(cfg, s.key)
            ratio = v / s.reference
            flag = " **outside 3x**" if not 1 / s.bound <= ratio <= s.bound else ""
            out.append(f"| {chip} | `{s.key}` | {fmt(v)} | {s.to} | {fmt(s.reference)} | {ratio:.2f}x{flag} | "
                       f"{s.reference_source} |")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
