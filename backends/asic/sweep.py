"""Workloads for the cost model and design-space sweeps over hardware config fields.

A **workload** is a graph of one model step and what one run of it means: a built-in model (``MODELS`` of
ladder.models: ``bitnet:2b``, ``bitnet:3b``, ``opt:6.7b``, ``llama:3.1-8b``; a decode step, one token, with
the KV cache sized to ``context``) or a ``.lir`` file (its own shapes: the context is its cache size and a run
yields as many tokens as its ``tokens`` input has, else 1). The graph goes through ladder's default passes
for a LUT target once; each config point re-lowers it (tile sizes depend on the SRAM) and simulates.

A **sweep** is the cross product of ``--set key=v1,v2,...`` axes (dotted config keys: ``sram_kb``,
``clock_mhz``, ``systolic.rows``, ``energy.voltage``, ...). Each point gives one CSV row: the axes' values,
then the report's summary figures, or the reason the point failed (a tile that does not fit the SRAM).
Points run on Dask (a local cluster of one process per core by default, or a cluster by its scheduler's
address), in chunks that share one lowering; within a process, a program's distinct tiles are costed per
point and its timeline re-run only when their cycles change (``costsim.ProgramPlan``), so points that differ
only in energy figures cost milliseconds. Without Dask the sweep runs in this process. A
plot draws a figure (tokens/s by default) against the first axis, one line per value of the others;
matplotlib is imported only then (the ``plots`` extra).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import itertools
import math
import os
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
        return self._names[0]

    def op_labels(self) -> dict[str, str]:
        return self._names[1]

    @functools.cached_property
    def _names(self) -> tuple[dict[str, str], dict[str, str]]:
        """Walked once per workload: a sweep reports thousands of points over the same graph."""
        return {r.name: op.kind for op in self.graph.ops() for r in op.results}, self._labels()

    def _labels(self) -> dict[str, str]:
        """Op result -> a name a person reads: the weight it multiplies (``layers.12.down``), else the layer it
        sits in and its kind (``layers.12.attention``); ops before the first layer keep their ``%name``."""
        params = {op.results[0].name for op in self.graph.ops() if op.kind == "param"}
        labels: dict[str, str] = {}
        block = ""
        for op in self.graph.ops():
            if op.kind in ("param", "const"):
                continue
            weight = next((o for o in op.operands if o in params), None)
            if weight is not None:
                label = re.sub(r"\.(weight|scale|bias)$", "", weight)
                block = label.rsplit(".", 1)[0] if "." in label else block
            elif block:
                label = f"{block}.{op.kind}"
            else:
                continue
            for r in op.results:
                labels[r.name] = label
        return labels


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
    return Report(sim, runs, workload.context, workload.op_labels())


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


def lowering_key(cfg: HwConfig) -> tuple:
    """The config fields the lowering reads (the systolic array's shape sets its tiles): points that agree on
    them share one program."""
    return cfg.sram_kb, cfg.tile_kb, cfg.lut, cfg.systolic, cfg.weight_bits, cfg.weight_placement


def run_points(workload: Workload, base: HwConfig, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a chunk of grid points: each point's config lowered once per distinct lowering (``lowering_key``)
    and simulated; a point that fails (a tile that does not fit the SRAM) gets its reason in ``error``."""
    programs: dict[tuple, Any] = {}
    rows = []
    for point in points:
        row: dict[str, Any] = dict(point)
        try:
            cfg = with_overrides(base, point)
            key = lowering_key(cfg)
            if key not in programs:
                try:
                    programs[key] = lower(workload.graph, cfg)
                except LadderError as e:
                    programs[key] = e
            program = programs[key]
            if isinstance(program, LadderError):
                raise program
            row.update(cost(program, workload, cfg).summary())
            row["error"] = ""
        except LadderError as e:
            row["error"] = e.message
        rows.append(row)
    return rows


def _chunks(base: HwConfig, points: list[dict[str, Any]], parts: int) -> list[list[int]]:
    """Point indices in chunks: points sharing a lowering stay together (one lowering per chunk), and every
    group is cut into about ``parts`` pieces overall so workers stay busy."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault(lowering_key(with_overrides(base, p)), []).append(i)
    size = max(1, -(-len(points) // max(1, parts)))
    return [g[i:i + size] for g in groups.values() for i in range(0, len(g), size)]


LOCAL_MIN_POINTS = 64


def dask_available() -> bool:
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        return False
    return True


def sweep(workload: Workload, cfg: "HwConfig | str", axes: dict[str, list[Any]], progress: bool = True,
          scheduler: str | None = None, workers: int | None = None) -> list[dict[str, Any]]:
    """One row per grid point (in grid order): the axes' values, then the summary figures or an ``error``.

    The grid runs on Dask: a local cluster of ``workers`` processes (default: the usable cores) or, with
    ``scheduler`` (``tcp://host:8786``), the cluster behind that scheduler. ``scheduler="serial"`` runs in
    this process; so does a local sweep of fewer than ``LOCAL_MIN_POINTS`` points, and a local sweep when
    Dask is not installed (with a note on stderr)."""
    import sys

    from tqdm import tqdm

    base = load_config(cfg)
    points = grid(axes)
    for p in points:  # a misspelt key fails before any simulation
        with_overrides(base, p)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers <= 0:
        raise LadderError(f"--workers must be positive, got {workers}")
    bar = tqdm(total=len(points), desc=f"sweep {workload.name} on {base.name}", unit="point",
               disable=not progress, leave=False)
    # a local cluster takes seconds to start: below LOCAL_MIN_POINTS points this process is faster
    serial = scheduler == "serial" or (not scheduler and (workers == 1 or len(points) < LOCAL_MIN_POINTS))
    if not serial and not dask_available():
        if scheduler:
            raise LadderError(f"--scheduler {scheduler} needs Dask: pip install 'dask[distributed]'")
        print("note: Dask is not installed; the sweep runs in this process (pip install 'dask[distributed]' "
              "to use every core)", file=sys.stderr)
        serial = True
    rows: list[dict[str, Any] | None] = [None] * len(points)
    chunks = _chunks(base, points, 1 if serial else 4 * workers)
    with bar:
        if serial:
            for chunk in chunks:
                for i, row in zip(chunk, run_points(workload, base, [points[i] for i in chunk])):
                    rows[i] = row
                bar.update(len(chunk))
        else:
            for chunk, part in _on_dask(workload, base, points, chunks, scheduler, workers):
                for i, row in zip(chunk, part):
                    rows[i] = row
                bar.update(len(chunk))
    return rows  # type: ignore[return-value]


def _on_dask(workload, base, points, chunks, scheduler, workers):
    """Run the chunks on a Dask cluster; yields (chunk, rows) as they finish."""
    import logging

    from dask.distributed import Client, LocalCluster, as_completed

    if scheduler:
        client, cluster = Client(scheduler), None
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        data = client.scatter((workload, base), broadcast=True)
        futures = {client.submit(_run_chunk, data, [points[i] for i in c], pure=False): c for c in chunks}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_chunk(data, points):
    workload, base = data
    return run_points(workload, base, points)


def write_csv(rows: list[dict[str, Any]], path: "str | Path") -> None:
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


MAX_LINES = 12


def plot(rows: list[dict[str, Any]], axes: dict[str, list[Any]], path: "str | Path",
         metrics: Iterable[str] = ("tokens_per_s", "energy_per_token_j")) -> None:
    """One panel per metric against the first axis; one line per combination of the other axes. A grid with
    more than ``MAX_LINES`` such combinations draws a line per value of the second axis, the axes after it
    held at their first values (the title says which): the CSV has every point."""
    try:
        import matplotlib
    except ImportError:
        raise LadderError("--plot needs matplotlib: pip install 'ladder[plots]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(axes)
    x_key, others = keys[0], keys[1:]
    held = {}
    if math.prod(len(axes[k]) for k in others) > MAX_LINES:
        held = {k: axes[k][0] for k in others[1:]}
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:   # one pass: grouping per combination, not a scan of the rows per combination
        if r.get("error") or any(r[k] != v for k, v in held.items()):
            continue
        lines.setdefault(tuple(r[k] for k in others), []).append(r)
    metrics = list(metrics)
    fig, panels = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(panels[0], metrics):
        for combo, pick in lines.items():
            label = ", ".join(f"{k}={v}" for k, v in zip(others, combo) if k not in held) or None
            ax.plot([r[x_key] for r in pick], [r[metric] for r in pick], marker="o", label=label)
        ax.set_xlabel(x_key)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        if others:
            ax.legend(fontsize=8)
    name = rows[0].get("program", "") if rows else ""
    title = f"{name} on {rows[0].get('config', '')}" if rows else ""
    if held:
        title += " (" + ", ".join(f"{k}={v}" for k, v in held.items()) + ")"
    fig.suptitle(title, fontsize=9 if held else None)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["Workload", "at_point", "builtin_models", "dask_available", "grid", "load_workload", "lowering_key",
           "parse_axes", "parse_value", "plot", "run", "run_points", "sweep", "write_csv"]
