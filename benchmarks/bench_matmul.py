"""Matmul kernels side by side, in one run: ladder's LLVM qmatmul_i8 over ternary crumb32 weights vs numpy
float32 (BLAS) on the same shapes, at 1 and 2 threads.

    python benchmarks/bench_matmul.py [--repeat 20]

Weights rotate through enough copies to exceed the last-level cache, so GEMV figures are memory-bound
throughput, not cache hits. The kernel's time excludes quantizing activations to int8 (llama.cpp's
figures include it). numpy's BLAS threads are set with threadpoolctl when it is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from ladder.backends.llvm.jit import Module
from ladder.backends.llvm.kernels import QMATMUL_I8_CTYPE, qmatmul_i8_ternary_crumb
from ladder.backends.llvm.runtime import parallel_rows
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


def blas_threads(n: int):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n)


class Rotating:
    """Copies of an array, handed out in turn so that no two consecutive calls hit the same cache lines."""

    def __init__(self, arr: np.ndarray):
        self.copies = [arr.copy() for _ in range(max(1, CACHE_BYTES // arr.nbytes + 1))]
        self.i = 0

    def next(self) -> np.ndarray:
        self.i = (self.i + 1) % len(self.copies)
        return self.copies[self.i]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args(argv)
    target = get_target("cpu")
    madd = target.supports("i8-madd")
    text, name = qmatmul_i8_ternary_crumb(32, madd=madd)
    kernel = Module.compile(text, target).function(name, QMATMUL_I8_CTYPE)
    rng = np.random.default_rng(0)
    packing, dt = get_packing("crumb32"), DTYPES["ternary"]
    print(f"host {target.cpu_name} ({target.name}, {'vpmaddubsw' if madd else 'generic'} path)")
    print(f"{'shape':<24} {'thr':>3} {'ladder us':>10} {'GB/s':>6} {'numpy f32 us':>13} {'numpy/ladder':>13}")
    for m, n, k in [(1, 4096, 4096), (1, 4096, 14336), (32, 4096, 4096)]:
        w = rng.integers(-1, 2, (n, k)).astype(np.int8)
        wp = Rotating(packing.pack(w, dt))
        wf = Rotating(w.astype(np.float32))
        kp = wp.copies[0].shape[1] * 4
        x = rng.integers(-127, 128, (m, kp)).astype(np.int8)
        xf = rng.standard_normal((m, k)).astype(np.float32)
        s1, s2 = np.ones(m, np.float32), np.ones(1, np.float32)
        xsum = x.sum(axis=1, dtype=np.int32)
        y = np.zeros((m, n), np.float32)
        for threads in (1, 2):
            def run_ladder():
                parallel_rows(kernel, [x.ctypes.data, wp.next().ctypes.data, s1.ctypes.data, s2.ctypes.data,
                                       xsum.ctypes.data, y.ctypes.data, m, n, kp], n, threads)

            t_l = timeit(run_ladder, args.repeat)
            with blas_threads(threads):
                t_n = timeit(lambda: xf @ wf.next().T, max(3, args.repeat // 4))
            print(f"m={m:<3} n={n} k={k:<6} {threads:>5} {t_l * 1e6:>10.0f} {wp.copies[0].nbytes / t_l / 1e9:>6.1f} "
                  f"{t_n * 1e6:>13.0f} {t_n / t_l:>12.1f}x")


if __name__ == "__main__":
    main()
