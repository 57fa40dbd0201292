"""Workloads for the cost model and design-space sweeps over hardware config fields.

A **workload** is a graph of one model step and what one run of it means: a built-in model (``MODELS`` of
ladder.models: ``bitnet:2b``, ``bitnet:3b``, ``opt:6.7b``, ``llama:3.1-8b``; a decode step, one token, with
the KV cache sized to ``context``) or a ``.lir`` file (its own shapes: the context is its cache size and a run
yields as many tokens as its ``tokens`` input has, else 1). The graph goes through ladder's default passes
for a LUT target once; each config point re-lowers it (tile sizes depend on the SRAM) and simulates.

A **sweep** is the cross product of ``--set key=v1,v2,...`` axes (dotted config keys: ``sram_kb``,
``clock_mhz``, ``systolic.rows``, ``energy.voltage``, ...). Each point gives one CSV row: the axes' values,
then the report's summary figures, or the reason the point failed (a tile that does not fit the SRAM). A
plot draws a figure (tokens/s by default) against the first axis, one line per value of the others;
matplotlib is imported only then (the ``plots`` extra).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from ladder.errors import LadderError
from ladder.ir import Graph

from .config import HwConfig, load_config, with_overrides
from .costsim import CostModel, operating_point, simulate
from .isa import Program
from .lower import lower
from .report import Report


@dataclass(frozen=True)
class Workload:
    name: str
    graph: Graph          # after the default passes
    tokens: int = 1       # tokens one run yields
    context: int = 0      # KV-cache capacity (0: the graph has no cache)

    def op_kinds(self) -> dict[str, str]:
        return {r.name: op.kind for op in self.graph.ops() for r in op.results}


def builtin_models() -> list[str]:
    from ladder.models import MODELS

    return sorted(MODELS)


def load_workload(spec: str, context: int | None = None, layers: int | None = None) -> Workload:
    """A built-in model by name (``context`` / ``layers`` override its cache size / depth) or a .lir file."""
    from ladder.models import MODELS, bitnet_decoder
    from ladder.passes import PassManager, default_pipeline

    if spec in MODELS:
        cfg = MODELS[spec]
        changes = {k: v for k, v in (("context", context), ("layers", layers)) if v is not None}
        for k, v in changes.items():
            if v <= 0:
                raise LadderError(f"--{k} must be positive, got {v}")
        cfg = dataclasses.replace(cfg, **changes)
        graph = bitnet_decoder(cfg, 1, name=re.sub(r"[^A-Za-z0-9_.]", "_", spec))
        return Workload(spec, PassManager(default_pipeline("lut")).run(graph), 1, cfg.context)
    path = Path(spec)
    if not path.exists():
        raise LadderError(f"no file or built-in model '{spec}'; built-in models: {', '.join(builtin_models())}")
    if context is not None or layers is not None:
        raise LadderError(f"--context and --layers size a built-in model; the shapes of {spec} fix its own")
    from ladder.frontends import load

    graph = PassManager(default_pipeline("lut")).run(load(str(path))[0])
    toks = next((v.type.shape for v in graph.inputs if v.name == "tokens"), None)
    caches = [v.type.shape[-2] for v in graph.inputs if v.name.startswith("k_cache") and v.type.rank >= 2]
    return Workload(path.stem, graph, math.prod(toks) if toks else 1, caches[0] if caches else 0)


def run(workload: Workload, cfg: "HwConfig | str", runs: int = 1) -> Report:
    """Lower ``workload`` for ``cfg`` and simulate one run; the report covers ``runs`` runs."""
    cfg = load_config(cfg)
    return cost(lower(workload.graph, cfg), workload, cfg, runs)


def cost(program: Program, workload: Workload, cfg: HwConfig, runs: int = 1) -> Report:
    """Simulate one run of ``program`` (``workload.graph`` lowered for ``cfg``, e.g. by ``ladder.compile``);
    the report covers ``runs`` runs."""
    sim = simulate(program, CostModel.of(cfg), op_kinds=workload.op_kinds(), tokens=workload.tokens)
    return Report(sim, runs, workload.context)


def at_point(cfg: "HwConfig | str", point: str | None) -> HwConfig:
    cfg = load_config(cfg)
    return operating_point(cfg, point) if point else cfg


# -- sweeps --------------------------------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """A grid value as TOML would read it: true/false, an integer, a float, else the string."""
    t = text.strip()
    if t in ("true", "false"):
        return t == "true"
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t


def parse_axes(specs: Sequence[str]) -> dict[str, list[Any]]:
    """``["sram_kb=256,512", "clock_mhz=100"]`` -> ``{"sram_kb": [256, 512], "clock_mhz": [100]}``."""
    axes: dict[str, list[Any]] = {}
    for spec in specs:
        key, eq, values = spec.partition("=")
        vals = [parse_value(v) for v in values.split(",") if v.strip()]
        if not eq or not key.strip() or not vals:
            raise LadderError(f"--set expects KEY=V1,V2,... like sram_kb=256,512,1024, got '{spec}'")
        if key.strip() in axes:
            raise LadderError(f"--set {key.strip()} is given twice")
        axes[key.strip()] = vals
    if not axes:
        raise LadderError("a sweep needs at least one --set KEY=V1,V2,...")
    return axes


def grid(axes: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(axes)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(axes[k] for k in keys))]


def sweep(workload: Workload, cfg: "HwConfig | str", axes: dict[str, list[Any]],
          progress: bool = True) -> list[dict[str, Any]]:
    """One row per grid point: the axes' values, then the summary figures or an ``error``."""
    from tqdm import tqdm

    base = load_config(cfg)
    points = grid(axes)
    for p in points:  # a misspelt key fails before any simulation
        with_overrides(base, p)
    rows = []
    bar = tqdm(points, desc=f"sweep {workload.name} on {base.name}", unit="point", disable=not progress,
               leave=False)
    for point in bar:
        row: dict[str, Any] = dict(point)
        try:
            row.update(run(workload, with_overrides(base, point)).summary())
            row["error"] = ""
        except LadderError as e:
            row["error"] = e.message
        rows.append(row)
    return rows


def write_csv(rows: list[dict[str, Any]], path: "str | Path") -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def plot(rows: list[dict[str, Any]], axes: dict[str, list[Any]], path: "str | Path",
         metrics: Iterable[str] = ("tokens_per_s", "energy_per_token_j")) -> None:
    """One panel per metric against the first axis; one line per combination of the other axes."""
    try:
        import matplotlib
    except ImportError:
        raise LadderError("--plot needs matplotlib: pip install 'ladder[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(axes)
    x_key, others = keys[0], keys[1:]
    metrics = list(metrics)
    fig, panels = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(panels[0], metrics):
        for combo in itertools.product(*(axes[k] for k in others)):
            pick = [r for r in rows if all(r[k] == v for k, v in zip(others, combo)) and not r.get("error")]
            if not pick:
                continue
            label = ", ".join(f"{k}={v}" for k, v in zip(others, combo)) or None
            ax.plot([r[x_key] for r in pick], [r[metric] for r in pick], marker="o", label=label)
        ax.set_xlabel(x_key)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        if others:
            ax.legend(fontsize=8)
    name = rows[0].get("program", "") if rows else ""
    fig.suptitle(f"{name} on {rows[0].get('config', '')}" if rows else "")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["Workload", "at_point", "builtin_models", "grid", "load_workload", "parse_axes", "parse_value", "plot",
           "run", "sweep", "write_csv"]
