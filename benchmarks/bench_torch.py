"""ladder.torch.Linear against eager torch, side by side: microseconds per forward of one linear layer and the
ratio torch / ladder (> 1: ladder is faster), at each thread count (``torch.set_num_threads``, which both
sides follow: ladder's op reads ``torch.get_num_threads()`` at each call).

    python benchmarks/bench_torch.py [--m 1,32] [--kn 2048,4096] [--dtypes ternary,i4] [--threads 1,2]
                                     [--repeat 20] [--rounds 5] [--quick]

Equal work: both take float32 activations ``[m, k]`` and return float32 ``[m, n]``, under
``torch.inference_mode()``. torch runs ``nn.Linear`` (no bias) on the float32 weight (its BLAS GEMM/GEMV);
ladder runs ``Linear.from_linear`` of the same layer: the ``ladder::linear`` custom op, ladder's fused low-bit
kernel on the packed codes with float activations (no activation quantization), and the op's overhead (the
dispatcher, numpy views, the output tensor). Same weights each call, so what fits the last-level cache stays
there (a 4096 x 4096 float32 weight is 64 MiB, its ternary codes 4 MiB). Each figure is the best over
``--rounds`` of the median of ``--repeat`` calls, torch and ladder in turns in each round: the machine may be
shared. Needs torch (without it the script says so and exits 0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_e2e import cpu_name  # noqa: E402  (a sibling script: the CPU's marketing name)
from timing import call_seconds  # noqa: E402


def median_seconds(fn, repeat: int) -> float:
    return statistics.median(call_seconds(fn, repeat))


def time_pair(a, b, repeat: int, rounds: int) -> tuple[float, float]:
    """Seconds per call of ``a`` and of ``b``: each the best round's median, the two measured in turns within
    each round so that both see the same load."""
    a(), b()
    best_a = best_b = float("inf")
    for _ in range(rounds):
        best_a = min(best_a, median_seconds(a, repeat))
        best_b = min(best_b, median_seconds(b, repeat))
    return best_a, best_b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", default="1,32", help="rows (tokens) per call")
    ap.add_argument("--kn", default="2048,4096", help="square layers k = n")
    ap.add_argument("--dtypes", default="ternary,i4", help="ladder weight types (ladder.torch.RECIPES)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="k = n = 2048 only, fewer repeats")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench_torch: torch is not installed (pip install 'ladder[torch]'); nothing to measure")
        return 0
    from torch import nn

    import ladder.torch as lt
    from ladder.target import get_target

    ms = [int(v) for v in args.m.split(",")]
    kns = [2048] if args.quick else [int(v) for v in args.kn.split(",")]
    dtypes = args.dtypes.split(",")
    threads = [int(v) for v in args.threads.split(",")]
    repeat, rounds = (5, 2) if args.quick else (args.repeat, args.rounds)

    print(f"CPU: {cpu_name()} (ladder target {get_target('cpu').name}, LLVM cpu {get_target('cpu').cpu_name}); "
          f"torch {torch.__version__}")
    head = f"{'k = n':>6} {'m':>4} {'dtype':>8} {'thr':>4} {'torch f32 us':>13} {'ladder us':>10} {'torch/ladder':>13}"
    print(head)
    print("-" * len(head))
    torch.manual_seed(0)
    with torch.inference_mode():
        for kn in kns:
            lin = nn.Linear(kn, kn, bias=False).eval()
            for dt in dtypes:
                t0 = time.perf_counter()
                q = lt.Linear.from_linear(lin, dtype=dt)
                quantize_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                for m in ms:
                    x = torch.randn(m, kn)
                    err = (q(x) - nn.functional.linear(x, q.dequantized_weight())).abs().max().item()
                    if err > 1e-3 * max(1.0, x.abs().max().item()) * kn ** 0.5:
                        print(f"k = n = {kn}, m = {m}, {dt}: ladder differs from torch by {err}", file=sys.stderr)
                        return 1
                compile_s = time.perf_counter() - t0
                for m in ms:
                    x = torch.randn(m, kn)
                    for t in threads:
                        torch.set_num_threads(t)
                        eager, ours = time_pair(lambda: lin(x), lambda: q(x), repeat, rounds)
                        print(f"{kn:>6} {m:>4} {dt:>8} {t:>4} {eager * 1e6:>13,.0f} {ours * 1e6:>10,.0f} "
                              f"{eager / ours:>12.2f}x", flush=True)
                print(f"{'':>6} ({dt}: quantized in {quantize_s:.1f} s, kernels for m = {args.m} compiled and "
                      f"checked in {compile_s:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
