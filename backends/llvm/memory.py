"""The arena: one scratch buffer for every intermediate value, offsets planned once from liveness.

A value lives from the step that defines it to the last step that reads it; two values whose lifetimes do
not overlap may share bytes. Offsets are chosen first-fit over the blocks live at the definition, in order
of definition, aligned to 64 bytes (a cache line, and the widest vector). Planning happens at compile
time; running allocates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class Interval:
    name: str
    size: int
    start: int  # the step that writes it
    end: int  # the last step that reads it (>= start)


@dataclass
class Plan:
    offsets: dict[str, int]
    size: int

    def overlaps(self, a: Interval, b: Interval) -> bool:
        """True when a and b share bytes (used by tests to check a plan)."""
        oa, ob = self.offsets[a.name], self.offsets[b.name]
        return oa < ob + _align(b.size) and ob < oa + _align(a.size)


def plan(intervals: Sequence[Interval]) -> Plan:
    """First-fit offsets such that values alive at the same time never share bytes."""
    placed: list[tuple[int, int, Interval]] = []  # (offset, aligned size, interval) of those still alive
    offsets: dict[str, int] = {}
    top = 0
    for iv in sorted(intervals, key=lambda v: (v.start, -v.size)):
        need = _align(max(iv.size, 1))
        # intervals come by start: one that ended before this start overlaps no later one either (a 2B
        # model's step, ~5,000 values: 0.18 s of a cached compile when every placed value was scanned)
        placed = [p for p in placed if p[2].end >= iv.start]
        live = sorted((o, s) for o, s, other in placed if other.start <= iv.end)
        offset = 0
        for o, s in live:
            if offset + need <= o:
                break
            offset = max(offset, o + s)
        offsets[iv.name] = offset
        placed.append((offset, need, iv))
        top = max(top, offset + need)
    return Plan(offsets, top)
