"""The seconds each of ``repeat`` calls of a function takes, for a benchmark to take their min or median."""

from __future__ import annotations

import time


def call_seconds(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times
