"""Passes, the pipeline syntax and the pass manager with its instruments.

A pass is a frozen dataclass: its ``name`` is registered with ``@register_pass("name")`` and its options are
its fields, so ``Canonicalize(fold_limit=64)`` in Python is ``canonicalize{fold_limit=64}`` in a pipeline.
``run(graph)`` returns a new graph (it may copy and edit). A pass built from rewrite patterns
(ladder.passes.patterns: canonicalize, fuse) also says which fired: ``run_traced(graph)`` returns the graph and
that trace. The manager verifies after each pass and calls every instrument's ``on_trace(pass, trace)``, then
its ``after_pass(pass, graph, seconds)``.

A manager made with a compile context (``PassManager(pipeline, context=ctx)``, ladder.context: what
``ladder.compile`` was given) hands it to every pass before running: ``Pass.with_context(ctx)`` returns the
pass as it runs in that compile (the ``lut`` pass takes the tuning records ``ladder.compile`` read). A pass's
options stay what the pipeline says; the context only supplies what was read once for the whole compile.
"""

from __future__ import annotations

import dataclasses
import html
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence, TextIO

from ..context import CompileContext
from ..errors import LadderError, Location, PipelineError, VerifyError
from ..ir import Graph
from ..verifier import verify
from .patterns import Firing

PASSES: dict[str, type["Pass"]] = {}


@dataclass(frozen=True)
class Pass:
    name: ClassVar[str] = ""
    # True for passes that change what a graph computes (they are only run when asked for).
    changes_numerics: ClassVar[bool] = False

    def run(self, graph: Graph) -> Graph:
        raise NotImplementedError

    def run_traced(self, graph: Graph) -> tuple[Graph, list[Firing]]:
        """What ``run`` returns, and the rewrites that made it (a pass built from patterns records them)."""
        return self.run(graph), []

    def with_context(self, ctx: CompileContext) -> "Pass":
        """This pass as it runs in a compile with context ``ctx``: a pass that takes something from the context
        returns a copy holding it; the default takes nothing."""
        return self

    def __str__(self) -> str:
        opts = [f"{f.name}={_fmt(getattr(self, f.name))}" for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default]
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


@dataclass(frozen=True)
class PatternPass(Pass):
    """A pass built from rewrite patterns: it defines ``run_traced`` (the graph and the rewrites that fired);
    ``run`` is its graph."""

    def run(self, graph: Graph) -> Graph:
        return self.run_traced(graph)[0]

    def run_traced(self, graph: Graph) -> tuple[Graph, list[Firing]]:
        raise NotImplementedError


def _fmt(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def register_pass(name: str):
    def deco(cls):
        if name in PASSES:
            raise AssertionError(f"pass {name} registered twice")
        cls.name = name
        PASSES[name] = cls
        return cls

    return deco


# -- pipeline strings -----------------------------------------------------------------------------------

_ITEM = re.compile(r"\s*([A-Za-z][A-Za-z0-9_\-]*)\s*(\{([^{}]*)\})?\s*(,|$)")


def parse_pipeline(text: str) -> list[Pass]:
    """``"canonicalize,legalize-types{target=cpu}"`` -> pass objects. Errors point into the string."""
    passes: list[Pass] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _ITEM.match(text, pos)
        if not m:
            raise _pipe_error(text, pos, "expected a pass name, optionally followed by {option=value,...}")
        name = m.group(1)
        cls = PASSES.get(name)
        if cls is None:
            raise _pipe_error(text, m.start(1), f"unknown pass '{name}'; known: {', '.join(sorted(PASSES))}")
        opts = _parse_options(text, m.start(3) if m.group(2) else pos, m.group(3) or "", cls)
        passes.append(cls(**opts))
        pos = m.end()
        if m.group(4) == "," and pos >= len(text):
            raise _pipe_error(text, pos, "expected a pass name after ','")
    return passes


def _parse_options(text: str, start: int, body: str, cls) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    offset = start
    for part in body.split(",") if body.strip() else []:
        key, eq, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        at = offset + len(part) - len(part.lstrip())
        offset += len(part) + 1
        if not eq:
            raise _pipe_error(text, at, f"expected option=value in '{cls.name}', got '{part.strip()}'")
        key = key.replace("-", "_")
        if key in out:
            raise _pipe_error(text, at, f"option '{key}' of '{cls.name}' is given twice")
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise _pipe_error(text, at, f"pass '{cls.name}' has no option '{key}' (its options: {known})")
        out[key] = _convert_option(text, at, cls.name, key, raw, fields[key].default)
    return out


def _convert_option(text, at, pname, key, raw, default):
    kind = type(default)
    try:
        if kind is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return raw.lower() in ("true", "1")
        if kind in (int, float):
            return kind(raw)
        return raw
    except ValueError:
        raise _pipe_error(text, at, f"option '{key}' of '{pname}' expects {kind.__name__}, got '{raw}'") from None


def _pipe_error(text: str, col0: int, msg: str) -> PipelineError:
    return PipelineError(msg, Location("<pipeline>", 1, col0 + 1, text))


# -- instruments ---------------------------------------------------------------------------------------

class Instrument:
    def before_pipeline(self, graph: Graph) -> None:
        pass

    def on_trace(self, p: Pass, trace: Sequence[Firing]) -> None:
        """The rewrites pass ``p`` made (empty for a pass not built from patterns), just before its after_pass."""

    def after_pass(self, p: Pass, graph: Graph, seconds: float) -> None:
        pass

    def after_pipeline(self, graph: Graph) -> None:
        pass


class PrintIRAfterAll(Instrument):
    """The IR after each pass, then the rewrites that made it as comments (``# fuse: fuse-dequant-matmul on %y =
    matmul (examples/ffn.lir:11:10)``), so the text between two headers parses back to the graph."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream
        self._trace: Sequence[Firing] = ()

    def on_trace(self, p, trace):
        self._trace = trace

    def after_pass(self, p, graph, seconds):
        out = self.stream or sys.stdout
        trace = "".join(f"# {p}: {f}\n" for f in self._trace)
        self._trace = ()
        out.write(f"// ----- IR after {p} -----\n{graph}{trace}\n")


class TimePasses(Instrument):
    """Collects (pass, seconds); ``table()`` renders them, as ``--time-passes`` prints."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream
        self.rows: list[tuple[str, float]] = []

    def after_pass(self, p, graph, seconds):
        self.rows.append((str(p), seconds))

    def table(self) -> str:
        total = sum(s for _, s in self.rows) or 1e-12
        width = max([len(n) for n, _ in self.rows] + [4])
        lines = [f"{'pass':<{width}}  {'ms':>10}  {'%':>6}"]
        lines += [f"{n:<{width}}  {s * 1e3:>10.3f}  {100 * s / total:>6.1f}" for n, s in self.rows]
        lines.append(f"{'total':<{width}}  {total * 1e3:>10.3f}  {100.0:>6.1f}")
        return "\n".join(lines)

    def after_pipeline(self, graph):
        if self.stream is not None:
            self.stream.write(self.table() + "\n")


class DumpToDir(Instrument):
    """Writes ``00-input.lir``, ``01-<pass>.lir``, ... into a folder."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.count = 0

    def _write(self, label: str, graph: Graph) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
        (self.folder / f"{self.count:02d}-{safe}.lir").write_text(str(graph))
        self.count += 1

    def before_pipeline(self, graph):
        self._write("input", graph)

    def after_pass(self, p, graph, seconds):
        self._write(str(p), graph)


@dataclass(frozen=True)
class Snapshot:
    label: str
    graph: Graph
    seconds: float
    trace: tuple[Firing, ...] = ()  # the rewrites the pass made

    @property
    def text(self) -> str:
        return str(self.graph)

    def _repr_html_(self) -> str:
        fired = "".join(f"<br><code>{html.escape(str(f))}</code>" for f in self.trace)
        return f"<b>after {self.label}</b> ({self.seconds * 1e3:.2f} ms){fired}" + self.graph._repr_html_()


class Snapshots(Instrument):
    """Keeps a copy of the graph before the pipeline and after every pass (for notebooks)."""

    def __init__(self):
        self.items: list[Snapshot] = []
        self._trace: tuple[Firing, ...] = ()

    def before_pipeline(self, graph):
        self.items.append(Snapshot("input", graph.copy(), 0.0))

    def on_trace(self, p, trace):
        self._trace = tuple(trace)

    def after_pass(self, p, graph, seconds):
        self.items.append(Snapshot(str(p), graph.copy(), seconds, self._trace))
        self._trace = ()

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self):
        return len(self.items)

    def diff(self, i: int) -> str:
        """Unified diff of the IR from snapshot i-1 to snapshot i."""
        import difflib

        a, b = self.items[i - 1], self.items[i]
        return "".join(difflib.unified_diff(a.text.splitlines(True), b.text.splitlines(True),
                                            f"before {b.label}", f"after {b.label}"))


# -- the manager -------------------------------------------------------------------------------------

class PassManager:
    """Runs a pipeline (a string or pass objects), verifying after each pass; with ``context`` (a
    ladder.context.CompileContext), each pass as ``Pass.with_context`` makes it for that compile."""

    def __init__(self, pipeline: str | Pass | Iterable[Pass] = (), instruments: Sequence[Instrument] = (),
                 verify_each: bool = True, context: CompileContext | None = None):
        if isinstance(pipeline, str):
            passes = parse_pipeline(pipeline)
        elif isinstance(pipeline, Pass):
            passes = [pipeline]
        else:
            passes = list(pipeline)
        self.context = context
        self.passes = passes if context is None else [p.with_context(context) for p in passes]
        self.instruments = list(instruments)
        self.verify_each = verify_each

    def __str__(self) -> str:
        return ",".join(str(p) for p in self.passes)

    def run(self, graph: Graph) -> Graph:
        if self.verify_each and not self.instruments and len(self.passes) > 1:
            return self._run_verifying_once(graph)
        return self._run(graph, self.verify_each)

    def _run_verifying_once(self, graph: Graph) -> Graph:
        """The pipeline verified once, at its end; where that fails (or a pass raises), run again from the
        input verifying after each pass, for the error that names the pass. Nothing watches the passes (no
        instruments), so the two ways differ in time only: a 2B model's step graph verified once instead of
        after each of its 6 passes, 0.1 s less a compile."""
        given = graph.copy()
        try:
            out = self._run(graph, verify_each=False)
            verify(out)
            return out
        except Exception as first:
            self._run(given, verify_each=True)  # raises the error that names the pass, where there is one
            if isinstance(first, VerifyError):
                raise PipelineError(f"the graph does not verify after the pipeline '{self}':\n{first}") from None
            raise

    def _run(self, graph: Graph, verify_each: bool) -> Graph:
        for ins in self.instruments:
            ins.before_pipeline(graph)
        for p in self.passes:
            t0 = time.perf_counter()
            try:
                graph, trace = p.run_traced(graph)
            except LadderError:
                raise
            except Exception as e:  # a bug in a pass must still say which pass
                raise PipelineError(f"pass '{p}' failed: {type(e).__name__}: {e}") from e
            seconds = time.perf_counter() - t0
            if verify_each:
                try:
                    verify(graph)
                except VerifyError as e:
                    raise PipelineError(f"the graph does not verify after pass '{p}':\n{e}") from None
            for ins in self.instruments:
                ins.on_trace(p, trace)
                ins.after_pass(p, graph, seconds)
        for ins in self.instruments:
            ins.after_pipeline(graph)
        return graph
