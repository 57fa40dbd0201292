"""Progress and timing for long work on the command line.

``Task`` shows a tqdm bar on stderr while the work runs (only when stderr is a terminal, so logs and tests stay
clean) and measures how long it took; the caller prints that time, which is wanted on every run. Work whose
steps ladder cannot count from outside (one ``ladder.compile`` call) still gets a live elapsed-time display: a
small thread refreshes the bar twice a second.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Task:
    """``with Task("compiling @ffn for cpu") as t: ...``; then ``t.seconds``. ``total`` counts steps (``t.update()``
    after each); without it the bar shows the elapsed time only."""

    def __init__(self, what: str, total: int | None = None, unit: str = "step", stream: TextIO | None = None):
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream or sys.stderr
        self.seconds = 0.0
        self._bar = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> "Task":
        from tqdm import tqdm

        fmt = None if self.total else "{desc}: {elapsed}"
        self._bar = tqdm(total=self.total, desc=self.what, unit=self.unit, file=self.stream, leave=False,
                         disable=None if hasattr(self.stream, "isatty") else True, bar_format=fmt)
        self._t0 = time.perf_counter()
        if not self._bar.disable and not self.total:
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()
        return self

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self._bar.refresh()

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def stage(self, text: str) -> None:
        """Say which part of the work runs now."""
        self._bar.set_description_str(f"{self.what}: {text}")

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self._bar.close()


def seconds_text(s: float) -> str:
    """A duration as people read it: 850 ms, 3.42 s, 2 min 05 s."""
    if s < 1:
        return f"{s * 1e3:.0f} ms" if s >= 0.01 else f"{s * 1e3:.2f} ms"
    if s < 120:
        return f"{s:.2f} s"
    return f"{int(s // 60)} min {int(s % 60):02d} s"
