"""Table lookup (T-MAC) vs decode vs numpy float32, in one run: ladder's ``lut_precompute`` + ``lut_matmul``
kernels against its decode kernels on the cpu target's preferred packing and a numpy float32 GEMM on the
dequantized weights, for 1-, 2- and 4-bit weights (no 3-bit type exists in ladder), GEMV and GEMM, at 1 and 2
threads, as microseconds per op and ratios decode/lookup (> 1: lookup is faster).

    python benchmarks/bench_lut.py [--quick] [--threads 1,2] [--budget 0.5] [--hot] [--sections i8,f32]

Shapes follow llama.cpp's notation: m = 4096 output rows, n = 1 (GEMV) or 32 (GEMM) tokens, k = 4096 or 14336.
Two sections, each f32 in, f32 out:

* ``i8``: activations quantized per token to int8 (absmax, timed in both columns), then ``qmatmul_i8``
  (decode) or exact int16 tables from the int8 codes (lookup): the two are bit-identical;
* ``f32``: float activations, ``qmatmul`` (decode, f32 FMA) against lookup with f32 tables (same numerics up
  to summation order) and with int8 tables (``lut{quantize=true}``, T-MAC's setting, bounded error) with and
  without fast aggregation.

GEMV graphs hold enough copies of the weights to exceed the last-level cache (cold weights, as bench_matmul.py);
GEMM and ``--hot`` use one copy. ``model`` is what the default pipeline picks without tuning data (ladder.tune's
cost model; int8 tables only when asked for): it should be the faster of decode and the default lookup.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the decode side's timing helpers (bench_matmul.py): one way of timing for both
from bench_matmul import blas_threads, n_copies, timeit
from ladder.backends.llvm.compiler import compile_graph

import ladder
from ladder.packing import from_codes
from ladder.target import get_target
from ladder.tune import Problem, cost_model
from ladder.types import DTYPES

CASES = ["i1", "ternary", "i2", "i4"]  # 1, 2 (two kinds) and 4 bits
# section -> (label, lut pass options or None for decode)
VARIANTS = {
    "i8": [("decode", None), ("lookup", "")],
    "f32": [("decode", None), ("lut f32", ""), ("lut i8", "quantize=true"),
            ("lut i8 fast", "quantize=true,fast_aggregation=true")],
}


def graph_text(section: str, dname: str, layout: str, tokens: int, m: int, k: int, copies: int) -> str:
    lines = ["%s = param @s : f32[1]"]
    outs = []
    for c in range(copies):
        lines += [f"%w{c} = param @w{c} : {dname}[{m}, {k}]",
                  f"%p{c} = pack %w{c} {{layout = \"{layout}\"}} : {dname}<{layout}>[{m}, {k}]"]
        if section == "i8":  # each copy quantizes x itself: equal work in both columns
            lines += [(f"%q{c}, %qs{c} = quantize %x {{scheme = \"absmax\", dtype = i8}} : i8[{tokens}, {k}], "
                       f"f32[{tokens}, 1]"),
                      f"%y{c} = qmatmul_i8 %q{c}, %p{c}, %qs{c}, %s {{transpose_b = true}} : f32[{tokens}, {m}]"]
        else:
            lines.append(f"%y{c} = qmatmul %x, %p{c}, %s {{transpose_b = true}} : f32[{tokens}, {m}]")
        outs.append(f"%y{c}")
    return (f"graph @b(%x: f32[{tokens}, {k}]) -> ({', '.join([f'f32[{tokens}, {m}]'] * copies)}) {{\n  "
            + "\n  ".join(lines) + f"\n  return {', '.join(outs)}\n}}")


def build(section: str, dname: str, tokens: int, m: int, k: int, hot: bool, rng):
    """({label: compiled module}, numpy weights, feeds, copies) for one case."""
    target = get_target("cpu")
    dt = DTYPES[dname]
    packing = target.packing_for(dt)
    copies = n_copies(m * packing.row_bytes(k, dt), hot or tokens > 1)
    g = ladder.parse(graph_text(section, dname, packing.name, tokens, m, k, copies))
    n_codes = 3 if dname == "ternary" else 2 ** dt.bits
    weights = {f"w{c}": from_codes(rng.integers(0, n_codes, (m, k)).astype(np.uint8), dt) for c in range(copies)}
    weights["s"] = np.full(1, 0.01, np.float32)
    mods = {label: compile_graph(g, weights, pipeline="" if opts is None else f"lut{{{opts}}},canonicalize")
            for label, opts in VARIANTS[section]}
    feeds = {"x": rng.standard_normal((tokens, k)).astype(np.float32)}
    return mods, [weights[f"w{c}"].astype(np.float32) for c in range(copies)], feeds, copies


def per_call(fn, budget: float) -> float:
    """Seconds per call with bench_matmul's timeit, repeats sized to the budget."""
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-6)
    return timeit(fn, max(1, int(budget / 3 / one)))


def check(section: str, mods, feeds) -> None:
    """The i8 section's two columns compute the same bits; a benchmark of wrong code is worthless."""
    if section == "i8":
        outs = [m.run(feeds) for m in mods.values()]
        if any(not np.array_equal(outs[0][n], o[n]) for o in outs[1:] for n in outs[0]):
            raise SystemExit("lookup and decode disagree")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="GEMV k = 4096, i1 and i4, one thread, hot weights")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma separated")
    ap.add_argument("--budget", type=float, default=0.5, help="seconds of timing per figure")
    ap.add_argument("--hot", action="store_true", help="one copy of the weights (cache-hot)")
    ap.add_argument("--sections", default="i8,f32", help="i8 (int8 activations) and/or f32 (float activations)")
    args = ap.parse_args(argv)
    threads = [1] if args.quick else [int(t) for t in args.threads.split(",")]
    shapes = [(1, 4096, 4096)] if args.quick else [(1, 4096, 4096), (1, 4096, 14336), (32, 4096, 4096),
                                                   (32, 4096, 14336)]
    cases = ["i1", "i4"] if args.quick else CASES
    target = get_target("cpu")
    rng = np.random.default_rng(0)
    print(f"host {target.cpu_name} ({target.name}, table-lookup {target.supports('table-lookup')}); "
          f"m = outputs, n = tokens; us per op; ratios decode/lookup and numpy/lookup (> 1: lookup faster)")
    for section in args.sections.split(","):
        labels = [label for label, _ in VARIANTS[section]]
        head = (f"{section + ' act':<8} {'n':>3} {'m':>5} {'k':>6} {'thr':>3} "
                + " ".join(f"{lab + ' us':>13}" for lab in labels) + f" {'numpy us':>9} "
                + " ".join(f"{'d/' + lab:>13}" for lab in labels[1:]) + f" {'np/lut':>7} {'fastest':>11} {'model':>6}")
        print()
        print(head)
        print("-" * len(head))
        for tokens, m, k in shapes:
            for dname in cases:
                mods, wf, feeds, copies = build(section, dname, tokens, m, k, args.hot or args.quick, rng)
                check(section, mods, feeds)
                model = cost_model(Problem(section, dname, tokens, m, k), target).method
                for t in threads:
                    us = {lab: per_call(lambda mod=mod, feeds=feeds, t=t: mod.run(feeds, threads=t), args.budget)
                          / copies * 1e6 for lab, mod in mods.items()}
                    with blas_threads(t):
                        it = iter(range(10 ** 9))
                        npy = per_call(lambda x=feeds["x"], wf=wf, it=it: x @ wf[next(it) % len(wf)].T,
                                       args.budget) * 1e6
                    d = us["decode"]
                    print(f"{dname:<8} {tokens:>3} {m:>5} {k:>6} {t:>3} "
                          + " ".join(f"{us[lab]:>13.0f}" for lab in labels) + f" {npy:>9.0f} "
                          + " ".join(f"{d / us[lab]:>12.2f}x" for lab in labels[1:])
                          + f" {npy / us[labels[1]]:>6.2f}x {min(us, key=us.get):>11} {model:>6}", flush=True)


if __name__ == "__main__":
    main()
