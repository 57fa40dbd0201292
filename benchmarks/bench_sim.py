"""How fast the ASIC cost simulator is: lowering + cost simulation of one decode token of a 3B-parameter,
30-layer ternary model (ladder.models ``bitnet:3b``), on each shipped config that streams or holds its
weights. Prints seconds per phase and the instruction count; ``--chips`` also prints each chip config's
simulated headline figures next to the published ones.

    python benchmarks/bench_sim.py [--config slim-llama] [--repeat 3] [--chips]
"""

from __future__ import annotations

import argparse
import time

from ladder.backends.asic.config import load_config
from ladder.backends.asic.costsim import CostModel, simulate
from ladder.backends.asic.lower import lower
from ladder.backends.asic.sweep import at_point, load_workload, run


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


CHIPS = [
    # (config, point, model, context, figure, published key, how to read the report)
    ("slim-llama", None, "bitnet:3b", None, "latency per token (ms)", "latency_ms", lambda r: r.latency_s * 1e3),
    ("slim-llama", None, "bitnet:3b", None, "power at 200 MHz (mW)", "power_mw", lambda r: r.power_w * 1e3),
    ("slim-llama", "low-power", "bitnet:3b", None, "power at 25 MHz (mW)", "power_mw_low", lambda r: r.power_w * 1e3),
    ("slim-llama", None, "bitnet:3b", None, "peak TOPS of the LUT units", "peak_tops",
     lambda r: r.summary()["peak_tops_lut"]),
    ("pim-llm", None, "opt:6.7b", 1024, "GOPS, context 1024", "gops_1024", lambda r: r.tops * 1e3),
    ("pim-llm", None, "opt:6.7b", 1024, "GOPS/W, context 1024", "gops_per_w_1024", lambda r: r.tops_per_w * 1e3),
    ("pim-llm", None, "opt:6.7b", 4096, "GOPS, context 4096", "gops_4096", lambda r: r.tops * 1e3),
    ("pim-llm", None, "opt:6.7b", 4096, "GOPS/W, context 4096", "gops_per_w_4096", lambda r: r.tops_per_w * 1e3),
    ("pim-llm", None, "opt:6.7b", 128, "attention share, context 128", "attention_share_128",
     lambda r: r.latency_share("attention")),
    ("pim-llm", None, "opt:6.7b", 4096, "attention share, context 4096", "attention_share_4096",
     lambda r: r.latency_share("attention")),
    ("taalas-hc1", None, "llama:3.1-8b", 128, "tokens/s per user", "tokens_per_s", lambda r: r.tokens_per_s),
    ("taalas-hc1", None, "llama:3.1-8b", 128, "power (W)", "power_w", lambda r: r.power_w),
]


def chips() -> None:
    reports: dict = {}
    print(f"{'config':<12} {'figure':<36} {'simulated':>12} {'published':>14}  kind")
    for config, point, model, ctx, figure, key, read in CHIPS:
        if (config, point, model, ctx) not in reports:
            reports[config, point, model, ctx] = run(load_workload(model, context=ctx), at_point(config, point))
        pub = load_config(config).section("published")[key]
        value = read(reports[config, point, model, ctx])
        target = pub["value"]
        shown = f"{target[0]:g}-{target[1]:g}" if isinstance(target, list) else f"{target:g}"
        print(f"{config:<12} {figure:<36} {value:>12.4g} {shown:>14}  {pub['kind']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", action="append", help="configs to time (default: slim-llama and lut-tc)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chips", action="store_true", help="also print simulated vs published chip figures")
    args = ap.parse_args()
    for config in args.config or ["slim-llama", "lut-tc"]:
        bench(config, args.repeat)
    if args.chips:
        print()
        chips()


if __name__ == "__main__":
    main()
