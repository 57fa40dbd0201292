"""Published figures, fitted constants and the ``ladder fit`` command: fitting kept apart from prediction.

A chip config names its published figures in ``[published]``, each with the condition to simulate and what
it is used for::

    [published]
    power_mw = { value = 82.07, kind = "measured", use = "fit", metric = "power_mw", model = "bitnet:3b",
                 source = "Slim-Llama, ISSCC 2025, ...", note = "..." }
    gops_4096 = { value = 17.6, ..., use = "validate", metric = "gops", ops_per_mac = 1, context = 4096 }

* ``use``: ``fit`` (a constant is fitted to it: reaching it is calibration, not evidence), ``validate`` (no
  fit used it: the simulation predicts it), or ``identity`` (arithmetic of published inputs, e.g. a peak).
* ``metric``: what of a simulation it is (``METRICS``), or of the config's units alone (``UNIT_METRICS``: a
  LUT unit's compute density and energy efficiency over a MAC unit's); ``model``/``context``/``point``: the
  workload (a built-in model, its KV-cache size) and the operating point; ``ops_per_mac``: how the source counts ops
  (ladder counts 2 per MAC; PIM-LLM counts 1), required for ``gops``, ``gops_per_w`` and ``peak_tops``.
* ``tolerance``: the error a validation test accepts (default 0.15).
* ``energy_counts``: for energy figures (``gops_per_w``, ``power_*``), the energy components the source prices
  (default: all of the chip's). A source's tools may price part of a chip only (PIM-LLM: its crossbars by
  MNSIM 2.0 and its systolic array's logic by synthesis, no SRAM); its fitted and predicted figures then
  share that scope, written beside them with the reason.

Each fitted constant has a ``[fit."KEY"]`` table: the figure it is fitted to (``to``), the search range, and
the reference value it should stay near, with where that reference comes from::

    [fit."energy.io_pj_per_byte"]
    to = "power_mw"
    range = [1.0, 500.0]
    reference = 32.0
    reference_source = "..."
    bound = 3.0            # flagged when fitted / reference is outside [1/bound, bound]

``KEY`` is a dotted config key; ``points.NAME.KEY`` fits a value of an operating point. ``fit_config`` finds
every constant fitted to the requested figures by bisection (log scale; the figure must be monotonic in the
constant over its range), in coordinate passes until all reach their targets, and ``write_fitted`` puts
the values back into the TOML file, comments kept.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ladder.errors import LadderError

from .config import ConfigError, HwConfig, load_config, with_overrides
from .area import MAC_BASELINES, lut_vs_mac
from .costsim import COMPONENTS, CostModel, operating_point
from .report import Report

USES = ("fit", "validate", "identity")
OPS_METRICS = ("gops", "gops_per_w", "peak_tops")


def _ops_scale(fig: dict) -> float:
    return fig["ops_per_mac"] / 2.0   # ladder's reports count 2 ops per MAC


def _energy_j(r: Report, fig: dict) -> float:
    """The energy of one run as the source counts it: the chip's (ladder's reports), or only the components a
    figure's ``energy_counts`` names (a source whose tools price some of the chip and not the rest)."""
    counts = fig.get("energy_counts")
    if counts is None:
        return r.energy_j()
    return sum(r.sim.energy_pj[c] for c in counts) * 1e-12


def _gops_per_w(r: Report, fig: dict) -> float:
    e = _energy_j(r, fig)
    return r.sim.ops / e / 1e9 * _ops_scale(fig) if e else 0.0


def _power(r: Report, fig: dict) -> float:
    return _energy_j(r, fig) / r.latency_s if r.latency_s else 0.0


METRICS = {
    "tokens_per_s": lambda r, f: r.tokens_per_s,
    "latency_ms": lambda r, f: r.latency_s * 1e3,
    "power_mw": lambda r, f: _power(r, f) * 1e3,
    "power_w": lambda r, f: _power(r, f),
    "gops": lambda r, f: r.tops * 1e3 * _ops_scale(f),
    "gops_per_w": _gops_per_w,
    "peak_tops": lambda r, f: r.sim.model.peak_tops(("lut",)) * _ops_scale(f),
    "attention_share": lambda r, f: r.latency_share("attention"),
    "area_mm2": lambda r, f: r.area.total_mm2,
}

# Figures of the config's units alone (no workload): a LUT unit against a MAC unit (``area.lut_vs_mac``), at
# the figure's ``weight_bits`` and ``act_bits``, against the MAC PE its ``mac`` names (``area.MAC_BASELINES``:
# "int", the default, multiplies the weights widened to the activations; "fp16" is an fp16 x fp16 PE).


def _lut_vs_mac(m, f: dict):
    return lut_vs_mac(m, f.get("weight_bits", 1), f.get("act_bits", 8), f.get("mac", "int"))


UNIT_METRICS = {
    "density_vs_mac": lambda m, f: _lut_vs_mac(m, f).density,
    "efficiency_vs_mac": lambda m, f: _lut_vs_mac(m, f).efficiency,
}


@dataclass(frozen=True)
class Figure:
    name: str
    value: Any                # a number, or [lo, hi] for a range
    metric: str
    use: str
    spec: dict

    @property
    def target(self) -> float:
        return sum(self.value) / 2 if isinstance(self.value, list) else float(self.value)

    @property
    def tolerance(self) -> float:
        return float(self.spec.get("tolerance", 0.15))

    def error(self, simulated: float) -> float:
        """Relative error; 0 inside a published range, or at or above a published floor (``compare =
        "at_least"``: a source that says "over 10x")."""
        if self.spec.get("compare") == "at_least":
            return 0.0 if simulated >= self.value else (simulated - self.value) / self.value
        if isinstance(self.value, list):
            lo, hi = self.value
            return 0.0 if lo <= simulated <= hi else (simulated - (lo if simulated < lo else hi)) / self.target
        return (simulated - self.value) / self.value


@dataclass(frozen=True)
class FitSpec:
    key: str
    to: str
    range: tuple[float, float]
    reference: float
    reference_source: str
    bound: float = 3.0


def figures(cfg: HwConfig) -> dict[str, Figure]:
    """The config's published figures, checked: each says its use, metric and (for op counts) convention."""
    src = cfg.source or cfg.name
    out = {}
    for name, spec in cfg.section("published").items():
        where = f"{src}: [published] {name}"
        if not isinstance(spec, dict) or "value" not in spec:
            raise ConfigError(f"{where} must be a table with a value")
        use, metric = spec.get("use"), spec.get("metric")
        if use not in USES:
            raise ConfigError(f"{where}: use must be one of {', '.join(USES)}, got {use!r}")
        if metric not in METRICS and metric not in UNIT_METRICS:
            raise ConfigError(f"{where}: metric must be one of {', '.join([*METRICS, *UNIT_METRICS])}, got "
                              f"{metric!r}")
        if metric in OPS_METRICS and spec.get("ops_per_mac") not in (1, 2):
            raise ConfigError(f"{where}: a {metric} figure must say how its source counts ops: ops_per_mac = 1 "
                              f"or 2")
        if "source" not in spec:
            raise ConfigError(f"{where}: a published figure needs its source")
        if metric in UNIT_METRICS and spec.get("mac", "int") not in MAC_BASELINES:
            raise ConfigError(f"{where}: mac must be one of {', '.join(MAC_BASELINES)}, got {spec.get('mac')!r}")
        counts = spec.get("energy_counts")
        if counts is not None and (not isinstance(counts, list) or not set(counts) <= set(COMPONENTS)):
            raise ConfigError(f"{where}: energy_counts must list energy components ({', '.join(COMPONENTS)}), "
                              f"got {counts!r}")
        out[name] = Figure(name, spec["value"], metric, use, spec)
    return out


def fit_specs(cfg: HwConfig) -> list[FitSpec]:
    src = cfg.source or cfg.name
    figs = figures(cfg)
    out = []
    for key, spec in cfg.section("fit").items():
        where = f"{src}: [fit.\"{key}\"]"
        missing = [k for k in ("to", "range", "reference", "reference_source") if k not in spec]
        if missing:
            raise ConfigError(f"{where} needs {', '.join(missing)}")
        if spec["to"] not in figs:
            raise ConfigError(f"{where}: fitted to '{spec['to']}', which [published] does not name")
        if figs[spec["to"]].use != "fit":
            raise ConfigError(f"{where}: figure '{spec['to']}' has use = \"{figs[spec['to']].use}\"; a fit may only "
                              f"use figures marked use = \"fit\"")
        lo, hi = spec["range"]
        out.append(FitSpec(key, spec["to"], (float(lo), float(hi)), float(spec["reference"]),
                           spec["reference_source"], float(spec.get("bound", 3.0))))
    return out


# -- evaluating figures ------------------------------------------------------------------------------------

class Evaluator:
    """Simulates figures of one config under changed constants, reusing workloads and lowered programs."""

    def __init__(self, cfg: HwConfig):
        self.base = cfg
        self.workloads: dict[tuple, Any] = {}
        self.programs: dict[tuple, Any] = {}

    def config(self, values: dict[str, float], point: str | None) -> HwConfig:
        values = {k: round(v) if isinstance(raw_value(self.base, k), int) else v for k, v in values.items()}
        top = {k: v for k, v in values.items() if not k.startswith("points.")}
        cfg = with_overrides(self.base, top) if top else self.base
        if point:
            cfg = operating_point(cfg, point)
            inner = {k.split(".", 2)[2]: v for k, v in values.items() if k.startswith(f"points.{point}.")}
            if inner:
                cfg = with_overrides(cfg, inner)
        return cfg

    def report(self, fig: Figure, values: dict[str, float]) -> Report:
        from .lower import lower
        from .sweep import cost, load_workload, lowering_key

        spec = fig.spec
        model = spec.get("model")
        if not model:
            raise ConfigError(f"{self.base.source or self.base.name}: [published] {fig.name} needs the model to "
                              f"simulate (model = \"bitnet:3b\", ...)")
        wkey = (model, spec.get("context"), spec.get("layers"))
        if wkey not in self.workloads:
            self.workloads[wkey] = load_workload(model, spec.get("context"), spec.get("layers"))
        workload = self.workloads[wkey]
        cfg = self.config(values, spec.get("point"))
        pkey = (wkey, lowering_key(cfg))
        if pkey not in self.programs:
            self.programs[pkey] = lower(workload.graph, cfg)
        return cost(self.programs[pkey], workload, cfg)

    def simulate(self, fig: Figure, values: dict[str, float]) -> float:
        if fig.metric in UNIT_METRICS:
            return UNIT_METRICS[fig.metric](CostModel.of(self.config(values, fig.spec.get("point"))), fig.spec)
        return METRICS[fig.metric](self.report(fig, values), fig.spec)


# -- fitting ------------------------------------------------------------------------------------------------

@dataclass
class FitResult:
    spec: FitSpec
    value: float
    target: float
    achieved: float
    integer: bool = False   # the config holds an integer (e.g. a count): the value is rounded

    @property
    def ratio(self) -> float:
        return self.value / self.spec.reference

    @property
    def flagged(self) -> bool:
        return not 1 / self.spec.bound <= self.ratio <= self.spec.bound


def _bisect(f, lo: float, hi: float, target: float, what: str, iters: int = 40, rtol: float = 2e-4,
            strict: bool = True) -> float:
    """x in [lo, hi] with f(x) = target, f monotonic; on a log scale."""
    a, b = math.log(lo), math.log(hi)
    fa, fb = f(lo) - target, f(hi) - target
    if fa == 0:
        return lo
    if fa * fb > 0 and not strict:   # out of reach for now (other constants still move): the nearer end
        return lo if abs(fa) < abs(fb) else hi
    if fa * fb > 0:
        raise LadderError(f"{what}: the figure goes from {fa + target:.4g} to {fb + target:.4g} over the range "
                          f"[{lo:g}, {hi:g}] and never reaches {target:.4g}; widen the range in [fit]")
    for _ in range(iters):
        m = (a + b) / 2
        fm = f(math.exp(m)) - target
        if abs(fm) <= rtol * abs(target):
            return math.exp(m)
        if (fm > 0) == (fa > 0):
            a, fa = m, fm
        else:
            b = m
    return math.exp((a + b) / 2)


def raw_value(cfg: HwConfig, key: str) -> Any:
    """A config value by dotted key (``points.NAME.KEY`` for an operating point's)."""
    data: Any = cfg.to_dict()
    try:
        if key.startswith("points."):
            _, point, inner = key.split(".", 2)
            return data["points"][point][inner]
        for part in key.split("."):
            data = data[part]
    except (KeyError, TypeError):
        raise ConfigError(f"{cfg.source or cfg.name}: [fit] names '{key}', which the config does not set") from None
    return data


def current_value(cfg: HwConfig, key: str) -> float:
    return float(raw_value(cfg, key))


def fit_config(cfg: "HwConfig | str", to: list[str] | None = None, passes: int = 4,
               progress=None) -> list[FitResult]:
    """Fit the constants whose figures are in ``to`` (default: every ``[fit]`` constant)."""
    cfg = load_config(cfg)
    figs = figures(cfg)
    specs = fit_specs(cfg)
    for name in to or []:
        if name not in figs:
            raise LadderError(f"config {cfg.name} has no published figure '{name}'; it has: {', '.join(figs)}")
        if not any(s.to == name for s in specs):
            raise LadderError(f"no constant of {cfg.name} is fitted to '{name}' (use = \"{figs[name].use}\"); "
                              f"fitted figures: {', '.join(s.to for s in specs)}")
    chosen = [s for s in specs if not to or s.to in to]
    if not chosen:
        raise LadderError(f"config {cfg.name} has no fitted constant ([fit.\"KEY\"] tables): nothing to fit")
    ev = Evaluator(cfg)
    values = {s.key: current_value(cfg, s.key) for s in specs}
    for n in range(passes):
        for s in chosen:
            fig = figs[s.to]
            f = lambda x, s=s, fig=fig: ev.simulate(fig, {**values, s.key: x})  # noqa: E731
            values[s.key] = _bisect(f, *s.range, fig.target, f"fitting {s.key} of {cfg.name} to {s.to}",
                                    strict=n == passes - 1)
            if progress:
                progress(f"{s.key} = {values[s.key]:.5g} (to {s.to})")
        if all(abs(figs[s.to].error(ev.simulate(figs[s.to], values))) < 1e-3 for s in chosen):
            break
    out = []
    for s in chosen:
        integer = isinstance(raw_value(cfg, s.key), int)
        value = round(values[s.key]) if integer else values[s.key]
        out.append(FitResult(s, value, figs[s.to].target, ev.simulate(figs[s.to], values), integer))
    return out


def write_fitted(path: "str | Path", results: list[FitResult]) -> None:
    """Put fitted values into the TOML file in place, keeping its comments and layout."""
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True)
    for r in results:
        key = r.spec.key
        if key.startswith("points."):
            _, point, inner = key.split(".", 2)
            section, name = f"points.{point}", f'"{inner}"'
        else:
            section, _, name = key.rpartition(".")
        if r.integer:
            value = str(round(r.value))
        else:
            value = f"{r.value:.4g}" if "e" not in f"{r.value:.4g}" else repr(r.value)
            value += "" if "." in value or "e" in value else ".0"
        current = ""
        for i, line in enumerate(lines):
            head = re.match(r"\s*\[([^\]]+)\]", line)
            if head:
                current = head.group(1).strip()
                continue
            if current == section and re.match(rf"\s*{re.escape(name)}\s*=", line):
                lines[i] = re.sub(r"=\s*[-+0-9.eE]+", f"= {value}", line, count=1)
                break
        else:
            raise ConfigError(f"{path}: cannot find '{key}' to write its fitted value")
    path.write_text("".join(lines))


# -- what the figures say ---------------------------------------------------------------------------------

@dataclass
class FigureRow:
    config: str
    figure: Figure
    simulated: float
    fitted_by: list[str] = field(default_factory=list)

    @property
    def error(self) -> float:
        return self.figure.error(self.simulated)

    @property
    def label(self) -> str:
        return {"fit": "fitted", "validate": "predicted", "identity": "identity"}[self.figure.use]


def figure_rows(cfg: "HwConfig | str", ev: Evaluator | None = None) -> list[FigureRow]:
    """Every published figure of ``cfg`` against ladder's simulation of it, labelled fitted / predicted
    (``ev``: an evaluator of ``cfg`` whose workloads and programs to reuse)."""
    cfg = load_config(cfg)
    ev = ev or Evaluator(cfg)
    specs = fit_specs(cfg)
    return [FigureRow(cfg.name, f, ev.simulate(f, {}), [s.key for s in specs if s.to == f.name])
            for f in figures(cfg).values()]


def fit_table(results: list[FitResult]) -> str:
    out = [f"  {'constant':<34} {'fitted':>10} {'to':<20} {'reached':>10} {'reference':>10} {'ratio':>7}"]
    for r in results:
        flag = "  OUTSIDE BOUND" if r.flagged else ""
        out.append(f"  {r.spec.key:<34} {r.value:>10.4g} {r.spec.to:<20} {r.achieved:>10.4g} "
                   f"{r.spec.reference:>10.4g} {r.ratio:>6.2f}x{flag}")
    return "\n".join(out)


# -- the command --------------------------------------------------------------------------------------------

def add_fit_parser(sub) -> None:
    s = sub.add_parser("fit", help="derive a config's fitted constants from the published figures it names")
    s.add_argument("config", help="a shipped config name or a .toml path")
    s.add_argument("--to", nargs="+", metavar="FIGURE",
                   help="the published figures to fit to (default: every figure a [fit] constant names)")
    s.add_argument("--write", action="store_true", help="write the fitted values into the config file")
    s.add_argument("--check", action="store_true",
                   help="only simulate every published figure: fitted / predicted, with errors")
    s.set_defaults(fn=fit_command)


def fit_command(args) -> int:
    import sys

    cfg = load_config(args.config)
    if not figures(cfg):
        raise LadderError(f"config {cfg.name} names no published figures ([published]): nothing to fit or check")
    if args.check:
        if args.to or args.write:
            raise LadderError("--check simulates the figures as they are; it takes neither --to nor --write")
        for row in figure_rows(cfg):
            f = row.figure
            print(f"  {f.name:<22} {row.label:<9} published {f.value!s:<14} simulated {row.simulated:<10.4g} "
                  f"error {row.error:+.1%}")
        return 0
    results = fit_config(cfg, args.to, progress=lambda m: print(f"  ... {m}", file=sys.stderr))
    print(f"{cfg.name}: fitted constants (reference = the cited value each should stay near)")
    print(fit_table(results))
    flagged = [r.spec.key for r in results if r.flagged]
    if flagged:
        print(f"flagged: {', '.join(flagged)} outside their bound of the cited reference")
    if args.write:
        write_fitted(cfg.source, results)
        print(f"wrote {len(results)} value(s) to {cfg.source}")
    return 0


__all__ = ["Evaluator", "Figure", "FigureRow", "FitResult", "FitSpec", "METRICS", "UNIT_METRICS", "add_fit_parser",
           "figure_rows", "figures", "fit_command", "fit_config", "fit_specs", "fit_table", "write_fitted"]
