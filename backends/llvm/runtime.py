"""The runtime kernels run on: a persistent thread pool that splits a kernel's rows.

ctypes releases the GIL while a compiled kernel runs, so Python threads calling the same kernel on
disjoint row ranges run in parallel; the pool is created once per thread count, never per call.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Sequence


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@lru_cache(maxsize=8)
def pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ladder")


def split(n: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """[0, n) in at most ``parts`` contiguous ranges whose starts are multiples of ``align``."""
    if n <= 0:
        return []
    chunk = -(-n // max(1, parts))
    chunk = -(-chunk // align) * align
    return [(lo, min(n, lo + chunk)) for lo in range(0, n, chunk)]


def parallel_rows(kernel: Callable, args: Sequence, n: int, threads: int | None = None, align: int = 1) -> None:
    """Call ``kernel(*args, lo, hi)`` over [0, n) split across ``threads`` (default: the usable cores).
    The result does not depend on the thread count: each row is computed by exactly one call."""
    threads = threads or default_threads()
    ranges = split(n, threads, align)
    if len(ranges) <= 1:
        for lo, hi in ranges:
            kernel(*args, lo, hi)
        return
    futures = [pool(threads).submit(kernel, *args, lo, hi) for lo, hi in ranges[1:]]
    kernel(*args, *ranges[0])
    for f in futures:
        f.result()
