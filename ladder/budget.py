"""The memory budget: a graph whose buffers do not fit is refused before anything is allocated.

``memory_estimate(graph)`` adds up what running the graph holds at once, as the reference interpreter runs it
(and as the cpu backend's arena plan reuses memory): the values computed from weights and constants alone
(kept for every run), the inputs, and the most intermediates alive at any one op in graph order (a value is
freed after its last use; outputs live to the end). Temporaries inside an op's numpy code are not counted,
so the figure is a lower bound of the process's peak: a graph over it cannot run.

The budget: ``memory_budget=`` on ``ladder.compile``, ``Session`` and ``check``, ``--memory-budget`` on the
command line. It is a number of bytes, a size string ("512M", "8GiB", "1.5T": powers of 1024), a share of
this machine's memory ("50%") or "unlimited". The default, ``DEFAULT_SHARE`` of this machine's memory (the
smaller of its physical memory and its cgroup limit), refuses what would only swap or die with MemoryError.

Every size is a Python int: a broadcast to 2^62 elements times 4 bytes must not wrap around as numpy's int64
would.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import LadderError, Location
from .ir import Graph
from .types import TensorType

DEFAULT_SHARE = 0.75  # of this machine's memory: room for the OS, Python and the ops' numpy temporaries
UNKNOWN_MEMORY = 16 << 30  # assumed when the machine's memory cannot be read (not Linux, macOS or BSD)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)


class MemoryBudgetError(LadderError):
    """A graph needs more memory than the budget allows, or a budget is malformed."""

    kind = "memory error"


def machine_memory() -> int:
    """Bytes of memory this process may use: physical memory, or the cgroup limit when it is smaller."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = UNKNOWN_MEMORY
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
        break
    return total


def default_budget() -> int:
    return int(machine_memory() * DEFAULT_SHARE)


def resolve(budget: int | float | str | None) -> float:
    """A budget in bytes (``math.inf`` for unlimited) from what a user may give (see the module docstring)."""
    if budget is None:
        return default_budget()
    if isinstance(budget, bool):
        raise MemoryBudgetError(f"memory budget must be a size like 8G, 4096M or 50%, not {budget!r}")
    if isinstance(budget, (int, float)):
        if budget == math.inf:
            return math.inf
        if not budget > 0 or not math.isfinite(budget):
            raise MemoryBudgetError(f"memory budget must be a positive number of bytes, got {budget!r}")
        return int(budget)
    if isinstance(budget, str):
        text = budget.strip().lower()
        if text in ("unlimited", "inf", "none"):
            return math.inf
        if text.endswith("%"):
            try:
                share = float(text[:-1])
            except ValueError:
                share = -1.0
            if not 0 < share <= 100:
                raise MemoryBudgetError(f"memory budget {budget!r}: a share of memory is in (0%, 100%]")
            return int(machine_memory() * share / 100)
        m = _SIZE.match(text)
        if m:
            value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
            if value > 0:
                return value
    raise MemoryBudgetError(f"memory budget must be a size like 8G, 4096M, 1.5GiB, 1000000 (bytes), 50% (of this "
                            f"machine's memory) or unlimited, not {budget!r}")


def value_bytes(t: TensorType) -> int:
    """Bytes of the numpy array holding a value of type ``t`` (Python ints: never wraps around)."""
    return math.prod(int(d) for d in t.storage_shape) * t.storage_np_dtype.itemsize


def human(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    if n == math.inf:
        return "unlimited"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Tensor:
    """One value of the estimate: its name, type, bytes and the op that makes it (None for inputs)."""

    name: str
    type: TensorType
    nbytes: int
    op: object = None

    def describe(self) -> str:
        where = f"made by {self.op.describe()}" if self.op is not None else "an input of the graph"
        return f"%{self.name} : {self.type} ({human(self.nbytes)}, {where})"


@dataclass(frozen=True)
class Estimate:
    """What running a graph holds at once (see the module docstring)."""

    fixed: int  # weights, constants and what is computed from them alone
    inputs: int
    intermediates: int  # the most alive at once (outputs included)
    biggest: Tensor | None

    @property
    def total(self) -> int:
        return self.fixed + self.inputs + self.intermediates


def memory_estimate(graph: Graph) -> Estimate:
    ops = list(graph.ops())
    fixed_names: set[str] = set()
    rest = []
    for op in ops:  # the interpreter's split: what runs once (weights) and what runs per call
        if op.kind in ("param", "const") or op.operands and all(o in fixed_names for o in op.operands):
            fixed_names.update(r.name for r in op.results)
        else:
            rest.append(op)
    tensors = [Tensor(v.name, v.type, value_bytes(v.type)) for v in graph.inputs]
    tensors += [Tensor(r.name, r.type, value_bytes(r.type), op) for op in ops for r in op.results]
    by_name = {t.name: t for t in tensors}
    fixed = sum(by_name[n].nbytes for n in fixed_names)
    inputs = sum(by_name[v.name].nbytes for v in graph.inputs)
    last_use = {}
    for i, op in enumerate(rest):
        for o in op.operands:
            last_use[o] = i
    keep = set(graph.outputs) | fixed_names | {v.name for v in graph.inputs}
    live = peak = 0
    for i, op in enumerate(rest):
        made = [by_name[r.name] for r in op.results]
        live += sum(t.nbytes for t in made)
        peak = max(peak, live)
        for r in op.results:  # a result nobody reads is dropped at once
            if r.name not in keep and r.name not in last_use:
                live -= by_name[r.name].nbytes
        for o in dict.fromkeys(op.operands):
            if last_use.get(o) == i and o not in keep:
                live -= by_name[o].nbytes
    biggest = max(tensors, key=lambda t: t.nbytes, default=None)
    return Estimate(fixed, inputs, peak, biggest)


def check(graph: Graph, budget: int | float | str | None = None, what: str = "to run") -> Estimate:
    """Raise MemoryBudgetError, naming the biggest tensor and its op, when ``graph`` needs more than
    ``budget`` (see ``resolve``) ``what`` ("to run", "to run on cpu", ...); else the estimate."""
    limit = resolve(budget)
    est = memory_estimate(graph)
    if est.total <= limit:
        return est
    raise budget_error(f"graph @{graph.name}", what, est.total, limit, budget,
                       f"weights and constants {human(est.fixed)}, inputs {human(est.inputs)}, intermediates "
                       f"{human(est.intermediates)} at once", est.biggest, graph.loc)


def check_tensors(tensors: list[Tensor], budget: int | float | str | None, who: str, what: str,
                  loc: Location | None = None) -> None:
    """The same check for tensors about to be allocated (e.g. random inputs): ``who`` needs them ``what``."""
    limit = resolve(budget)
    total = sum(t.nbytes for t in tensors)
    if total > limit:
        raise budget_error(who, what, total, limit, budget, f"{len(tensors)} tensor(s)",
                           max(tensors, key=lambda t: t.nbytes), loc)


def budget_error(who: str, what: str, total: int, limit: float, given, parts: str, biggest: Tensor | None,
                 loc: Location | None) -> MemoryBudgetError:
    if given is None:
        source = f"the default, {DEFAULT_SHARE:.0%} of this machine's {human(machine_memory())}"
    else:
        source = f"memory_budget={given!r}"
    big = f"; the biggest tensor is {biggest.describe()}" if biggest is not None else ""
    if biggest is not None and biggest.op is not None:
        loc = biggest.op.loc
    return MemoryBudgetError(
        f"{who} needs at least {human(total)} {what} ({parts}), more than the memory budget of {human(limit)} "
        f"({source}){big}", loc if loc is not None and str(loc) != "<unknown>" else None,
        notes=("nothing was allocated; give a larger budget with memory_budget= or --memory-budget if this "
               "machine has the memory",))


__all__ = ["DEFAULT_SHARE", "Estimate", "MemoryBudgetError", "Tensor", "check", "check_tensors", "default_budget",
           "human", "machine_memory", "memory_estimate", "resolve", "value_bytes"]
