"""How fast the ASIC cost simulator is: lowering + cost simulation of one decode token of a 3B-parameter,
30-layer ternary model (ladder.models ``bitnet:3b``), on each shipped config that streams or holds its
weights. Prints seconds per phase, the instruction count and what a sweep pays per point after lowering;
``--chips`` also prints each chip config's published figures, fitted or predicted, next to the simulation.

    python benchmarks/bench_sim.py [--config slim-llama] [--repeat 3] [--chips]
"""

from __future__ import annotations

import argparse
import time

from ladder.backends.asic.config import load_config, with_overrides
from ladder.backends.asic.costsim import CostModel, simulate
from ladder.backends.asic.fit import figure_rows
from ladder.backends.asic.lower import lower
from ladder.backends.asic.sweep import cost, load_workload


def bench(config: str, repeat: int) -> None:
    t0 = time.perf_counter()
    workload = load_workload("bitnet:3b")
    build = time.perf_counter() - t0
    cfg = load_config(config)
    params = sum(p.type.size for p in [workload.graph.value(n) for n in _weight_names(workload)])
    best_lower = best_sim = float("inf")
    for _ in range(repeat):
        t1 = time.perf_counter()
        program = lower(workload.graph, cfg)
        t2 = time.perf_counter()
        sim = simulate(program, CostModel.of(cfg), op_kinds=workload.op_kinds())
        t3 = time.perf_counter()
        best_lower, best_sim = min(best_lower, t2 - t1), min(best_sim, t3 - t2)
    print(f"bitnet:3b ({params / 1e9:.2f} B ternary weights, 30 layers) on {config}: "
          f"{len(program.instrs):,} instructions")
    print(f"  build graph + passes {build:6.2f} s")
    print(f"  lowering             {best_lower:6.2f} s   (best of {repeat})")
    print(f"  cost simulation      {best_sim:6.2f} s   ({len(program.instrs) / best_sim:,.0f} instructions/s)")
    print(f"  lowering + sim       {best_lower + best_sim:6.2f} s   -> simulated {sim.seconds * 1e3:.1f} ms per token")


def _weight_names(workload) -> list[str]:
    """The ternary weight params of the graph (its matmul weights)."""
    return [op.name for op in workload.graph.ops() if op.kind == "param" and op.result.type.dtype.name == "ternary"]


def chips() -> None:
    """Every published figure of the chip configs, fitted or predicted, against the simulation."""
    print(f"{'config':<12} {'figure':<22} {'simulated':>12} {'published':>14} {'error':>8}  use")
    for config in ("slim-llama", "pim-llm", "taalas-hc1"):
        for row in figure_rows(config):
            f = row.figure
            shown = f"{f.value[0]:g}-{f.value[1]:g}" if isinstance(f.value, list) else f"{f.value:g}"
            print(f"{config:<12} {f.name:<22} {row.simulated:>12.4g} {shown:>14} {row.error:>+8.1%}  {row.label}")


def recost(config: str) -> None:
    """What a sweep pays per point once a program is lowered: a change of energy figures only (the timeline
    is reused) and a change of bandwidth (the timeline re-runs)."""
    workload = load_workload("bitnet:3b")
    cfg = load_config(config)
    program = lower(workload.graph, cfg)
    cost(program, workload, cfg).summary()
    for label, key, values in (("energy only", "energy.leakage_mw", [0.5, 1.5, 2.5, 3.5, 4.5]),
                               ("new timeline", "dram_gbps", [1.1, 1.3, 1.7, 1.9, 2.1])):
        t = time.perf_counter()
        for v in values:
            cost(program, workload, with_overrides(cfg, {key: v})).summary()
        print(f"  re-cost per point, {label:<13} {(time.perf_counter() - t) / len(values) * 1e3:8.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", help="configs to time (default: slim-llama and lut-tc)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chips", action="store_true", help="also print simulated vs published chip figures")
    args = ap.parse_args()
    for config in args.config or ["slim-llama", "lut-tc"]:
        bench(config, args.repeat)
        recost(config)
    if args.chips:
        print()
        chips()


if __name__ == "__main__":
    main()
