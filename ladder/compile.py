"""``ladder.compile``: a graph (and its weights) -> a module callable with numpy arrays.

    m = ladder.compile(graph, target="cpu", weights=w)     # or "cpu:generic", "cpu:avx2", "ref", "asic:lut-tc"
    out = m({"x": x})
    m.ir_after("fuse"); m.source("asm"); print(m.report())

A compile depends on its arguments only. They make one ladder.context.CompileContext (target, threads, tuning
records, cache folder, memory budget, jit), handed to the pass manager and to the backend: tuning records
(``ladder tune``) are used when ``tuning=`` names their file, and a graph that needs more memory than
``memory_budget`` (ladder.budget) is refused before anything is allocated. The one thing read besides the
arguments is the user's cache folder, for ``cache=True`` (the default; see ladder.context).

The core names no backend: the target's kind picks one from ladder.backend's registry (``ref`` is the
interpreter, ``cpu*`` the LLVM backend in ladder.backends.llvm, ``asic:*`` the ASIC one), imported when it is
first used, and ``CompiledModule`` uses it through ladder.backend's protocol only (``m.backend`` is that
Executable). ``BACKENDS`` (ladder.backend) lists the kinds, shipped and registered.

State: ``state={"k_cache0": 1, ...}`` pairs graph inputs with the outputs that update them (by output index or
value name, ladder.interpreter.state_slots). The module then holds those inputs (``m.state``, a
ladder.interpreter.State: zeroed buffers at fixed addresses) and a call takes and returns everything else:

    m = ladder.compile(step, "cpu", w, state={"k_cache0": 1, "v_cache0": 2})
    logits = m({"tokens": ..., "pos": ..., "start": ..., "kv_len": ...})["logits"]   # the cache stays inside
    m.state["k_cache0"]; m.reset()                                                 # read it, zero it

A call that does give every state input is the graph's plain call (it loads the given values into the state
first and returns every output, the state's included: code written for the stateless module keeps working).
``state=`` on a call runs it on another State (``m.new_state()``; one State can serve every module of the
same slots: a prefill and a decode step share a KV cache). ``m.bind()`` gives a Call with every buffer bound
once, the fast path of a loop: write ``call.inputs[name]``, call ``call()``, read the outputs it returns (the
same arrays each call). The cpu backend updates a state in place where the graph allows it (``m.state_updates``
says which); the ref and asic targets copy the new values into the state after each call.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from .backend import BACKENDS, Backend, Executable, check_executable, get_backend
from .context import CompileContext, default_cache_dir
from .errors import LadderError
from .interpreter import State, StateError, bind_inputs, state_slots
from .ir import Graph, Op
from .passes import PassManager, Snapshots
from .passes.manager import Instrument
from .passes.lut import Lut


class _LutInputs(Instrument):
    """The graph each lut pass with tuning records was given (for ``tuning_records``), and no other copy: a
    compile without snapshots (``ladder.compile(..., snapshots=False)``) copies its graph only for those."""

    def __init__(self, passes):
        self.want = {i for i, p in enumerate(passes) if isinstance(p, Lut) and p.records is not None}
        self.graphs: dict[int, Graph] = {}
        self._done = 0

    def before_pipeline(self, graph):
        if 0 in self.want:
            self.graphs[0] = graph.copy()

    def after_pass(self, p, graph, seconds):
        self._done += 1
        if self._done in self.want:
            self.graphs[self._done] = graph.copy()


class CompiledModule:
    """What ``ladder.compile`` returns, whatever the target: ``graph`` compiled with ``context``."""

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray] | None, context: CompileContext,
                 pipeline: str | None = None, state: Mapping[str, int | str] | None = None,
                 backend: Backend | None = None, snapshots: bool = True):
        backend = backend or get_backend(context.target_name)
        self.context = context
        self.target = context.target_name
        slots = state_slots(graph, state)  # checked (and output names resolved) before compiling
        self.pipeline = backend.default_pipeline(context) if pipeline is None else pipeline
        self.memory_budget = context.memory_budget
        self.snapshots = Snapshots()
        manager = PassManager(self.pipeline, context=context)
        self.passes = manager.passes
        self._lut_inputs = _LutInputs(self.passes)  # what the tuning report needs, when there are no snapshots
        if snapshots or self._lut_inputs.want:
            manager.instruments.append(self.snapshots if snapshots else self._lut_inputs)
        self.graph = manager.run(graph)
        self.tuning, self.tuning_records = self._tuning_used()
        self.state_slots = state_slots(self.graph, {s.name: s.output for s in slots})  # passes keep interfaces
        self._backend = check_executable(backend.compile(self.graph, weights, context, self.state_slots), backend)

    @property
    def backend(self) -> Executable:
        """The backend's compiled module (ladder.backend.Executable): its ``machine``, ``threads``, ``program``."""
        return self._backend

    def _tuning_used(self) -> tuple[list[str], dict[str, object]]:
        """The tuning files the pipeline's lut passes read, and the records (key -> ladder.tuning.Choice) they
        applied: each pass decides again on the graph it was given (a snapshot), from the records it read."""
        files, used = [], {}
        for i, p in enumerate(self.passes):
            if isinstance(p, Lut) and p.records is not None:
                files.append(p.records.path)
                given = self.snapshots.items[i].graph if self.snapshots.items else self._lut_inputs.graphs[i]
                used.update(p.records_used(given))
        return files, used

    # -- state -------------------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        """The module's own state (see the module docstring): used by calls that name no other."""
        return self._backend.state

    def new_state(self) -> State:
        """A fresh, zeroed state for this module's slots (for a second, independent sequence)."""
        return State(self.state_slots)

    def reset(self, values=None) -> None:
        """Zero the module's own state, then load ``values`` (by state name) if given."""
        self.state.reset(values)

    @property
    def state_updates(self) -> dict[str, str]:
        """How each state input is updated: 'in place', 'copy' (into the state after the call), 'unchanged'."""
        return dict(self._backend.state_modes)

    def _state_of(self, state: State | None) -> State:
        if state is None:
            return self.state
        state.check_fits(self.state_slots, f"graph @{self.graph.name}")
        return state

    # -- running ----------------------------------------------------------------------------------------
    def __call__(self, inputs=(), *, state: State | None = None, threads: int | None = None
                 ) -> dict[str, np.ndarray]:
        """The outputs by name. With state: ``inputs`` without the state gives the other outputs (the state
        is updated); ``inputs`` with every state input loads those into the state first and gives every
        output (the state's new values as copies)."""
        if not self.state_slots:
            if state is not None:
                raise StateError(f"graph @{self.graph.name} was compiled without state; compile it with state=")
            return self._backend.run(inputs, threads=threads)
        st = self._state_of(state)
        held = [s.name for s in self.state_slots]
        bound = bind_inputs(self.graph, inputs, held)
        given = [n for n in held if n in bound]
        if given and len(given) != len(held):
            missing = [n for n in held if n not in bound]
            raise StateError(f"graph @{self.graph.name} holds {', '.join('%' + n for n in held)} as state: give "
                             f"none of them, or all (to load them); %{missing[0]} is missing")
        if given:
            st.load({n: bound.pop(n) for n in held})
        outs = self._backend.run(bound, state=st, threads=threads)
        if not given:
            return outs
        news = {self.graph.outputs[s.output]: st.buffers[s.name].copy() for s in self.state_slots}
        return {n: news[n] if n in news else outs[n] for n in self.graph.outputs}

    run = __call__

    def bind(self, state: State | None = None):
        """A Call of this module on ``state`` (default: its own): ``call.inputs`` holds an array per input that
        is not state (write into it), ``call(threads=None)`` runs the module and returns the other outputs by
        name, in arrays the next call may overwrite; ``call.set_threads(n)`` sets the threads of later calls.
        On cpu every buffer is bound once (one ctypes call a step)."""
        return self._backend.bind(self._state_of(state))

    def time_steps(self, inputs=(), repeat: int = 5, threads: int = 1, state: State | None = None
                   ) -> tuple[list[tuple[Op, float]], float]:
        """Per-op seconds of one call at 1 thread, and the whole call's at ``threads`` (cpu targets; see
        ``ladder.profile``). A module with state runs on ``state`` (default: its own), which changes."""
        return self._backend.time_steps(inputs, repeat, threads,
                                        state=self._state_of(state) if self.state_slots else None)

    def ir_after(self, pass_name: str) -> Graph:
        """The graph after the first pass of the pipeline whose name (or printed form) is ``pass_name``."""
        if not self.snapshots.items:
            raise LadderError(f"graph @{self.graph.name} was compiled with snapshots=False: no graph after a pass "
                              f"was kept (compile it with snapshots=True)")
        for snap in self.snapshots.items[1:]:
            if snap.label == pass_name or snap.label.split("{")[0] == pass_name:
                return snap.graph
        raise LadderError(f"no pass '{pass_name}' in the pipeline '{self.pipeline}'")

    def write(self, path, emit: str | None = None):
        """Write the module ahead of time: the backend's forms (cpu targets: 'so' by default, 'obj', 'asm',
        'llvm'; asic targets: 'isa'); the files written."""
        return self._backend.write(path, *([emit] if emit else []))

    def source(self, kind: str | None = None) -> str:
        """The module's LLVM IR ('llvm', the default) or assembly ('asm'), an asic program's assembly ('isa',
        its default); the graph's .lir text for the ref target."""
        return self._backend.source(*([kind] if kind else []))

    def report(self) -> str:
        lines = [f"target {self.target}, pipeline {self.pipeline}",
                 f"graph @{self.graph.name}: {len(self.graph)} ops"]
        kinds: dict[str, int] = {}
        for op in self.graph.ops():
            kinds[op.kind] = kinds.get(op.kind, 0) + 1
        lines.append("ops: " + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())))
        if self.tuning:
            lines.append(f"tuning: {', '.join(self.tuning)}: {len(self.tuning_records)} record(s) used")
            lines += [f"  {key}: {c.method}" + (f" (rows {c.rows or 'default'}, unroll {c.unroll})"
                                                if c.method == "lut" else "")
                      for key, c in sorted(self.tuning_records.items())]
        elif any(isinstance(p, Lut) and p.choose == "auto" for p in self.passes):
            lines.append("tuning: none (the cost model chose decode or lookup)")
        lines += self._backend.report_lines()
        if self.state_slots:
            lines.append("state: " + ", ".join(f"%{n} ({how})" for n, how in self.state_updates.items()))
        return "\n".join(lines)


def compile(graph: Graph, target: str = "cpu", weights: Mapping[str, np.ndarray] | None = None, *,
            pipeline: str | None = None, threads: int | None = None,
            cache: bool | str | os.PathLike = True, jit: bool = True, tuning: str | os.PathLike | None = None,
            memory_budget: int | float | str | None = None,
            state: Mapping[str, int | str] | None = None, snapshots: bool = True) -> CompiledModule:
    """Compile ``graph`` for ``target`` with ``weights`` (by param name). ``pipeline`` defaults to the
    target's default passes, none of which changes what the graph computes. ``cache``: keep compiled
    machine code on disk (True: in the user's cache folder; a path: there; False: not at all). ``jit=False``:
    build for writing ahead of time only (``module.write``), for any cpu level.

    ``tuning``: a tuning file written by ``ladder tune`` (cpu targets, default pipeline): its records choose
    between decode and table lookup where they have the shape; without it the cost model does. The module's
    ``tuning_records`` (and ``report()``) say which records were used. ``memory_budget``: bytes, "8G", "50%"
    or "unlimited" (default: ladder.budget.DEFAULT_SHARE of this machine's memory); a graph needing more is
    refused with a MemoryBudgetError before anything is allocated. ``state``: graph inputs the module holds
    between calls, each paired with the output that updates it (see the module docstring). ``snapshots``:
    keep the graph before the pipeline and after each pass (``module.snapshots``, ``ir_after``; a copy of the
    graph a pass); False for a runtime that never shows them (ladder.generate: a 2B model's two step graphs
    from the cache, 0.29 -> 0.12 s of copying).

    The arguments make the module's ``context`` (ladder.context.CompileContext)."""
    state_slots(graph, state)  # a state that does not fit the graph is the first thing said
    if tuning is not None and pipeline is not None:
        raise LadderError("tuning= applies to the default pipeline; with your own pipeline, give the file to its "
                          "lut pass: lut{choose=auto,tuning=FILE}")
    backend = get_backend(target)
    if tuning is not None and not backend.takes_tuning:
        raise LadderError(f"tuning records choose cpu kernels; target '{target}' has none to choose")
    context = CompileContext.create(target, threads=threads, tuning=tuning, cache=cache,
                                    memory_budget=memory_budget, jit=jit)
    return CompiledModule(graph, weights, context, pipeline, state, backend, snapshots)


__all__ = ["BACKENDS", "CompiledModule", "compile", "default_cache_dir"]
