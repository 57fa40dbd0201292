"""Matmul kernels side by side, in one run: ladder's LLVM lowerings (compile_graph) of qmatmul_i8 / qmatmul over
packed low-bit weights vs numpy float32 (BLAS) on the same shapes, at 1 and 2 threads.

    python benchmarks/bench_matmul.py [--repeat 10] [--quick]

Each graph holds enough independent copies of the op (different weights, same x) to exceed the last-level
cache, so GEMV figures are memory-bound throughput, not cache hits; the time printed is per op. The integer
path's time excludes quantizing activations to int8 (llama.cpp's figures include it). numpy's BLAS threads are
set with threadpoolctl when it is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

import ladder
from ladder.backends.llvm.compiler import compile_graph
from ladder.packing import from_codes, get_packing
from ladder.target import get_target
from ladder.types import DTYPES

CACHE_BYTES = 64 << 20

CASES = [  # (label, op, weight dtype, layout)
    ("ternary crumb32 i8", "qmatmul_i8", "ternary", "crumb32"),
    ("int2 crumb32 i8", "qmatmul_i8", "i2", "crumb32"),
    ("int4 nib32 i8", "qmatmul_i8", "i4", "nib32"),
    ("ternary crumb32 f32", "qmatmul", "ternary", "crumb32"),
    ("int4 nib32 f32", "qmatmul", "i4", "nib32"),
    ("int4 nib16+f16 f32", "qmatmul", "i4", "nib16+f16"),
]


def timeit(fn, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def blas_threads(n: int):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n)


def build(op, dname, layout, m, n, k, rng):
    dt = DTYPES[dname]
    p = get_packing(layout)
    copies = max(1, CACHE_BYTES // (n * p.row_bytes(k, dt)) + 1)
    xdt = "i8" if op == "qmatmul_i8" else "f32"
    lines, weights, outs = [], {}, []
    for c in range(copies):
        codes = rng.integers(0, 3 if dname == "ternary" else 2 ** dt.bits, (n, k)).astype(np.uint8)
        weights[f"w{c}"] = from_codes(codes, dt)
        lines.append(f"%w{c} = param @w{c} : {dname}[{n}, {k}]")
        if "+" in layout:
            weights[f"bs{c}"] = (rng.random((n, p.blocks(k))) + 0.5).astype(np.float16)
            lines.append(f"%bs{c} = param @bs{c} : f16[{n}, {p.blocks(k)}]")
            lines.append(f"%p{c} = pack %w{c}, %bs{c} {{layout = \"{layout}\"}} : {dname}<{layout}>[{n}, {k}]")
            lines.append(f"%y{c} = qmatmul %x, %p{c} {{transpose_b = true, group = {p.block}}} : f32[{m}, {n}]")
        else:
            lines.append(f"%p{c} = pack %w{c} {{layout = \"{layout}\"}} : {dname}<{layout}>[{n}, {k}]")
            if op == "qmatmul_i8":
                lines.append(f"%y{c} = qmatmul_i8 %x, %p{c}, %s1, %s2 {{transpose_b = true}} : f32[{m}, {n}]")
            else:
                lines.append(f"%y{c} = qmatmul %x, %p{c}, %s2r {{transpose_b = true}} : f32[{m}, {n}]")
        outs.append(f"y{c}")
    weights["s2"] = np.ones(1, np.float32)
    weights["s2r"] = np.ones((n, 1), np.float32)
    head = ["%s2 = param @s2 : f32[1]", f"%s2r = param @s2r : f32[{n}, 1]"]
    text = (f"graph @b(%x: {xdt}[{m}, {k}], %s1: f32[{m}, 1]) -> ({', '.join(f'f32[{m}, {n}]' for _ in outs)}) {{\n  "
            + "\n  ".join(head + lines) + f"\n  return {', '.join('%' + o for o in outs)}\n}}")
    g = ladder.parse(text)
    feeds = {"x": (rng.integers(-127, 128, (m, k)).astype(np.int8) if xdt == "i8"
                   else rng.standard_normal((m, k)).astype(np.float32)),
             "s1": np.ones((m, 1), np.float32)}
    return compile_graph(g, weights, pipeline=""), feeds, copies, n * p.row_bytes(k, dt)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="k = 4096 only, m = 1 and 4")
    args = ap.parse_args(argv)
    target = get_target("cpu")
    rng = np.random.default_rng(0)
    print(f"host {target.cpu_name} ({target.name}; i8-madd {target.supports('i8-madd')}, fma {target.supports('f32-fma')})")
    print(f"{'weights':<22} {'shape':<22} {'thr':>3} {'ladder us':>10} {'GB/s':>6} {'numpy f32 us':>13} {'numpy/ladder':>13}")
    shapes = [(1, 4096, 4096), (4, 4096, 4096)] + ([] if args.quick else [(1, 4096, 14336), (16, 4096, 4096)])
    for m, n, k in shapes:
        wf = [rng.standard_normal((n, k)).astype(np.float32) for _ in range(max(1, CACHE_BYTES // (n * k * 4) + 1))]
        xf = rng.standard_normal((m, k)).astype(np.float32)
        t_np = {}
        for threads in (1, 2):
            it = iter(range(10 ** 9))
            with blas_threads(threads):
                t_np[threads] = timeit(lambda: xf @ wf[next(it) % len(wf)].T, max(3, args.repeat))
        for label, op, dname, layout in CASES:
            cg, feeds, copies, wbytes = build(op, dname, layout, m, n, k, rng)
            for threads in (1, 2):
                t = timeit(lambda: cg.run(feeds, threads=threads), args.repeat) / copies
                print(f"{label:<22} m={m:<3} n={n} k={k:<6} {threads:>3} {t * 1e6:>10.0f} {wbytes / t / 1e9:>6.1f} "
                      f"{t_np[threads] * 1e6:>13.0f} {t_np[threads] / t:>12.1f}x")


if __name__ == "__main__":
    main()
