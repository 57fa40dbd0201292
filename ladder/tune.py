"""Measuring decode against lookup per matmul shape on this machine, for a tuning file (``ladder tune``).

How the ``lut`` pass uses those measurements — the tuning records, their file format and the cost model it
falls back on — is ``ladder.tuning``; this module compiles and times graphs, so it sits above the passes and
``ladder.compile``, while ``ladder.tuning`` sits below them. The record and cost-model names are re-exported
here, where ``ladder tune``'s users have always found them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

import numpy as np

from .errors import LadderError
from .target import Target, get_target
from .tuning import (KERNEL_UNROLLS, MAX_FILE_BYTES, MAX_ROWS, METHODS, TABLES, VERSION, Choice, Problem,
                     TuningRecords, TuningWarning, _as_record, choose, cost_model, entry_key, host_threads,
                     load_records, machine_key, parse_record, save_records)
from .types import DTYPES

UNROLLS = (1, 2, 4)  # what tune measures

# -- measuring ---------------------------------------------------------------------------------------------

def problem_graph(p: Problem, target: Target, rng: np.random.Generator):
    """(graph, weights, inputs) of the bare matmul, weights packed as the target prefers (the decode path)."""
    import ladder

    from .packing import from_codes

    dt = DTYPES[p.dtype]
    layout = target.packing_for(dt).name
    n_codes = 3 if p.dtype == "ternary" else 2 ** dt.bits
    weights = {"w": from_codes(rng.integers(0, n_codes, (p.n, p.k)).astype(np.uint8), dt),
               "s": np.full(1, 0.5, np.float32)}
    if p.act == "i8":
        head = f"%x: i8[{p.m}, {p.k}], %xs: f32[{p.m}, 1]"
        mm = "qmatmul_i8 %x, %p, %xs, %s {transpose_b = true}"
        inputs = {"x": rng.integers(-127, 128, (p.m, p.k)).astype(np.int8),
                  "xs": rng.random((p.m, 1)).astype(np.float32)}
    elif p.act == "f32":
        head = f"%x: f32[{p.m}, {p.k}]"
        mm = "qmatmul %x, %p, %s {transpose_b = true}"
        inputs = {"x": rng.standard_normal((p.m, p.k)).astype(np.float32)}
    else:
        raise LadderError(f"tune: activations are 'i8' or 'f32', not '{p.act}'")
    text = (f"graph @tune({head}) -> f32[{p.m}, {p.n}] {{\n"
            f"  %w = param @w : {p.dtype}[{p.n}, {p.k}]\n  %s = param @s : f32[1]\n"
            f"  %p = pack %w {{layout = \"{layout}\"}} : {p.dtype}<{layout}>[{p.n}, {p.k}]\n"
            f"  %y = {mm} : f32[{p.m}, {p.n}]\n  return %y\n}}")
    return ladder.parse(text), weights, inputs


def lut_configs(target: Target) -> list[tuple[int, int]]:
    """(rows, unroll) pairs the lookup kernel offers on this target."""
    rows = sorted({16, target.vector_bytes})
    return [(r, u) for r in rows for u in UNROLLS]


def time_call(fn: Callable[[], object], budget: float = 0.25, rounds: int = 3) -> float:
    """Seconds per call: best of ``rounds`` rounds of as many calls as fit in ``budget`` / rounds."""
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    reps = max(1, int(budget / rounds / one))
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def measure(p: Problem, target: Target | str = "cpu", threads: int | None = None, budget: float = 0.25,
            check: bool = True) -> Choice:
    """Time decode and every lookup configuration for ``p``; the fastest wins. With ``check``, every lookup
    configuration's result is compared with the decode kernel's (identical for exact tables; f32 and int8
    tables sum in another order or are quantized, so those are compared with the tolerance of their bound)."""
    import ladder

    target = get_target(target)
    threads = host_threads(threads)
    g, weights, inputs = problem_graph(p, target, np.random.default_rng(0))
    us: dict[str, float] = {}
    decode = ladder.compile(g, target.name, weights, pipeline="canonicalize", threads=threads, cache=False)
    want = decode(inputs)["y"]
    us["decode"] = time_call(lambda: decode(inputs), budget) * 1e6
    for rows, unroll in lut_configs(target):
        pipe = f"lut{{target={target.name},rows={rows},unroll={unroll}{p.lut_options}}},canonicalize"
        m = ladder.compile(g, target.name, weights, pipeline=pipe, threads=threads, cache=False)
        got = m(inputs)["y"]
        if check and not _agrees(got, want, p, inputs):
            raise LadderError(f"tune: the lookup kernel (rows={rows}, unroll={unroll}) disagrees with decode on {p}")
        us[f"lut/{rows}/{unroll}"] = time_call(lambda m=m: m(inputs), budget) * 1e6
    best = min(us, key=us.get)
    if best == "decode":
        return Choice("decode", source="tuned", us=us)
    _, rows, unroll = best.split("/")
    return Choice("lut", int(rows), int(unroll), "tuned", us)


def _agrees(got: np.ndarray, want: np.ndarray, p: Problem, inputs) -> bool:
    if p.tables == "exact":
        return bool(np.array_equal(got, want))
    from .ops.lut import quantization_error_bound

    x = inputs["x"]
    scale = 0.5  # problem_graph's weight scale
    bound = 0.0 if p.tables == "f32" else quantization_error_bound(x, DTYPES[p.dtype], 4, 0, p.tables == "i8-fast")
    slack = 1e-4 * np.abs(x).sum(axis=-1) * (2 ** p.bits)
    return bool((np.abs(got - want) <= (scale * (np.asarray(bound) + slack))[:, None]).all())


def tune(problems: Iterable[Problem], target: Target | str = "cpu", threads: int | None = None,
         path: str | os.PathLike | None = None, budget: float = 0.25, progress: bool = False) -> dict[Problem, Choice]:
    """Measure every problem; with ``path``, merge the choices into that tuning file (``save_records``)."""
    target = get_target(target)
    threads = host_threads(threads)
    problems = list(dict.fromkeys(problems))
    if target.runs_here():
        raise LadderError(f"tune: this machine cannot run code for {target.name} (it lacks "
                          f"{', '.join(target.runs_here())}); tuning measures on this machine")
    it = problems
    if progress:
        from tqdm import tqdm

        it = tqdm(problems, desc="tuning", unit="shape")
    out = {}
    for p in it:
        out[p] = measure(p, target, threads, budget)
    if path is not None:
        save_records({entry_key(p, target, threads): {**_as_record(c), "problem": str(p)} for p, c in out.items()},
                     path)
    return out


def problems_of(graph, target: Target | str = "cpu", tables: str = "f32") -> list[Problem]:
    """The matmuls of ``graph`` the lut pass could rewrite for ``target``, after the passes before it; f32
    activations with ``tables`` ("f32", or "i8"/"i8-fast" for a lut pass that quantizes its tables)."""
    from .passes import PassManager
    from .passes.lowbit import weight_values
    from .passes.lut import find_case

    target = get_target(target)
    g = PassManager(f"canonicalize,legalize-types{{target={target.name}}},fuse").run(graph)
    weights = weight_values(g)
    cases = (find_case(g, op, weights) for op in g.ops())
    return list(dict.fromkeys(c.problem(tables) for c in cases if c is not None))


def format_choices(choices: dict[Problem, Choice]) -> str:
    """The table ``ladder tune`` prints."""
    head = f"{'problem':<34} {'decode us':>10} {'best lut us':>12} {'config':>12}  choice"
    lines = [head, "-" * len(head)]
    for p, c in choices.items():
        luts = {k: v for k, v in c.us.items() if k.startswith("lut/")}
        best = min(luts, key=luts.get) if luts else None
        cfg = "rows {}, x{}".format(*best.split("/")[1:]) if best else "-"
        lines.append(f"{p!s:<34} {c.us.get('decode', float('nan')):>10.1f} "
                     f"{luts[best] if best else float('nan'):>12.1f} {cfg:>12}  {c.method}")
    return "\n".join(lines)


__all__ = ["KERNEL_UNROLLS", "MAX_FILE_BYTES", "MAX_ROWS", "METHODS", "TABLES", "UNROLLS", "VERSION", "Choice",
           "Problem", "TuningRecords", "TuningWarning", "choose", "cost_model", "entry_key", "format_choices",
           "host_threads", "load_records", "lut_configs", "machine_key", "measure", "parse_record", "problem_graph",
           "problems_of", "save_records", "time_call", "tune"]
