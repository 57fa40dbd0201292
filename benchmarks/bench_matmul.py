"""Matmul kernels side by side, in one run: ladder's LLVM qmatmul_i8 over ternary crumb32 weights vs numpy
float32 (BLAS) on the same shapes. One thread (the kernel has no thread pool yet; numpy's BLAS is pinned to
one thread through threadpoolctl when installed, else its own default, which the table states).

    python benchmarks/bench_matmul.py [--repeat 20]

Weights rotate through enough copies to exceed the last-level cache, so GEMV figures are memory-bound
throughput, not cache hits. The kernel's time excludes quantizing activations to int8 (llama.cpp's
figures include it); the note states which is which.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ladder.backends.llvm.jit import Module
from ladder.backends.llvm.kernels import QMATMUL_I8_CTYPE, qmatmul_i8_ternary_crumb
from ladder.packing import get_packing
from ladder.target import get_target
from ladder.types import DTYPES

CACHE_BYTES = 64 << 20


def timeit(fn, repeat: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    target = get_target("cpu")
    madd = target.supports("i8-madd")
    text, name = qmatmul_i8_ternary_crumb(32, madd=madd)
    kernel = Module.compile(text, target).function(name, QMATMUL_I8_CTYPE)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)  # for the rest of this process
        blas = "numpy f32 (1 thread)"
    except ImportError:
        blas = "numpy f32 (BLAS default threads)"
    rng = np.random.default_rng(0)
    packing, dt = get_packing("crumb32"), DTYPES["ternary"]
    print(f"host {target.cpu_name} ({target.name}, {'vpmaddubsw' if madd else 'generic'} path), 1 thread")
    print(f"{'shape':<22} {'ladder us':>10} {'GB/s':>6} {blas + ' us':>34} {'numpy/ladder':>13}")
    for m, n, k in [(1, 4096, 4096), (1, 4096, 14336), (32, 4096, 4096)]:
        w = rng.integers(-1, 2, (n, k)).astype(np.int8)
        wp = packing.pack(w, dt)
        copies = max(1, CACHE_BYTES // wp.nbytes + 1)
        wps = [wp.copy() for _ in range(copies)]
        kp = wp.shape[1] * 4
        x = rng.integers(-127, 128, (m, kp)).astype(np.int8)
        s1, s2 = np.ones(m, np.float32), np.ones(1, np.float32)
        y = np.zeros((m, n), np.float32)
        state = {"i": 0}

        def run_ladder():
            state["i"] = (state["i"] + 1) % copies
            kernel(x.ctypes.data, wps[state["i"]].ctypes.data, s1.ctypes.data, s2.ctypes.data, y.ctypes.data,
                   m, n, kp, 0, n)

        wf = w.astype(np.float32)
        fcopies = max(1, CACHE_BYTES // wf.nbytes + 1)
        wfs = [wf.copy() for _ in range(fcopies)]
        xf = rng.standard_normal((m, k)).astype(np.float32)

        def run_numpy():
            state["i"] = (state["i"] + 1) % fcopies
            return xf @ wfs[state["i"]].T

        t_l = timeit(run_ladder, args.repeat)
        t_n = timeit(run_numpy, max(3, args.repeat // 4))
        print(f"m={m:<3} n={n} k={k:<6} {t_l * 1e6:>10.0f} {wp.nbytes / t_l / 1e9:>6.1f} {t_n * 1e6:>34.0f} "
              f"{t_n / t_l:>12.1f}x")
        del wps, wfs


if __name__ == "__main__":
    main()
