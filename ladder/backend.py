"""Backends behind one protocol, registered by target kind.

A **backend** compiles a graph for the targets of one kind (the part of a target's name before ``:``: ``ref``,
``cpu``, ``asic``) into an **executable**; ``ladder.compile`` (ladder.compile.CompiledModule) uses the two
through the protocols below and nothing else:

    backend = get_backend("cpu")                          # imports ladder.backends.llvm on first use
    pipeline = backend.default_pipeline(ctx)              # ctx: ladder.context.CompileContext
    exe = backend.compile(graph, weights, ctx, state)    # an Executable
    exe.run({"x": x}); exe.source("asm"); exe.report_lines()

A backend registers itself when its module is imported (``register_backend(MyBackend())``, into ``REGISTRY``).
The core imports no backend: ``SHIPPED`` says which module holds each kind shipped with ladder, and
``get_backend`` imports it the first time that kind is asked for; ``BACKENDS`` views both, by kind. Another
backend (a test's, a plug-in's) registers the same way, after which ``ladder.compile(graph, "mykind:...")``
compiles with it.

``HostState`` is the state half of the protocol for executables that keep no state themselves (ref, asic):
a call with state is the plain call on the state's buffers, whose new values are then copied in
(ladder.interpreter.run_with_state).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping as MappingABC
from pathlib import Path
from typing import Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from .context import CompileContext
from .errors import LadderError
from .interpreter import State, StateError, StateSlot, bind_inputs, run_with_state
from .ir import Graph, Op


@runtime_checkable
class Call(Protocol):
    """An executable bound to a state (``Executable.bind``), for calling it again and again: write the inputs
    into ``inputs[name]`` (every input that is not state), call it, read the outputs it returns (the outputs
    that are not state; arrays the next call may overwrite)."""

    inputs: dict[str, np.ndarray]

    def set_threads(self, threads: int) -> None: ...

    def __call__(self, threads: int | None = None) -> dict[str, np.ndarray]: ...


@runtime_checkable
class Executable(Protocol):
    """What a backend's ``compile`` returns: a graph bound to its weights, runnable (or writable) as is.

    State (ladder.interpreter: inputs held between calls, each updated by an output): an executable compiled
    with state slots owns a ``state`` (zeroed buffers) and takes the inputs that are not state; ``run`` and
    ``bind`` take another State of the same slots too."""

    machine: str  # what runs it, for reports: the LLVM cpu name, the hardware config, "numpy"
    threads: int  # the threads a call uses unless it is given others
    program: object  # what a tool may read of the lowered module (an asic Program); None when there is nothing

    @property
    def state(self) -> State: ...  # its own state (made on first use), for calls that name none

    @property
    def state_modes(self) -> Mapping[str, str]: ...  # state name -> 'in place', 'copy' or 'unchanged'

    def run(self, inputs, *, state: State | None = None, threads: int | None = None
            ) -> dict[str, np.ndarray]: ...  # the outputs (fresh arrays) that are not state, by name

    def bind(self, state: State | None = None) -> Call: ...

    def time_steps(self, inputs, repeat: int = 5, threads: int = 1, state: State | None = None
                   ) -> tuple[list[tuple[Op, float]], float]: ...  # per-op seconds at 1 thread, the whole call's

    def source(self, kind: str | None = None) -> str: ...  # its code as text, in a form it names

    def write(self, path: str | os.PathLike, emit: str | None = None) -> list[Path]: ...  # ahead of time

    def report_lines(self) -> list[str]: ...  # what ``CompiledModule.report`` adds for this backend


@runtime_checkable
class Backend(Protocol):
    """A way out of a ladder Graph for one target kind."""

    kind: str  # the target kind it compiles for: "cpu" compiles for cpu, cpu:avx2, ...
    targets: str  # the target names it takes, for messages: "cpu, cpu:native, ..."
    takes_tuning: bool  # whether tuning records (ladder tune) choose anything in its default pipeline

    def default_pipeline(self, ctx: CompileContext) -> str: ...

    def compile(self, graph: Graph, weights: Mapping[str, np.ndarray] | None, ctx: CompileContext,
                state: Sequence[StateSlot] = ()) -> Executable: ...


REGISTRY: dict[str, Backend] = {}  # kind -> the registered backend

# The backends shipped with ladder: kind -> (the module that registers it, the target names it takes).
SHIPPED: dict[str, tuple[str, str]] = {
    "ref": ("ladder.reference", "ref"),
    "cpu": ("ladder.backends.llvm.compiler", "cpu, cpu:native, cpu:generic, cpu:avx2, cpu:avx512"),
    "asic": ("ladder.backends.asic.compiler", "asic:CONFIG"),
}


def protocol_members(protocol: type) -> list[str]:
    """The names a protocol (Backend, Executable, Call) asks for: what its class bodies annotate or define."""
    names: set[str] = set()
    for base in protocol.__mro__:
        if base is object or base.__module__ == "typing":
            continue
        names |= set(vars(base).get("__annotations__", {}))
        names |= {n for n in vars(base) if not n.startswith("_") or n == "__call__"}
    return sorted(names)


def missing_members(obj: object, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks (looked up without running properties)."""
    return [n for n in protocol_members(protocol) if not _has(obj, n)]


def _has(obj: object, name: str) -> bool:
    try:
        inspect.getattr_static(obj, name)
        return True
    except AttributeError:
        return False


def register_backend(backend: Backend) -> Backend:
    """Make ``backend`` compile the targets of its kind. A kind has one backend."""
    lacking = missing_members(backend, Backend)
    if lacking:
        raise LadderError(f"{type(backend).__name__} is no backend: it lacks {', '.join(lacking)} "
                          f"(see ladder.backend.Backend)")
    kind = backend.kind
    if not kind or ":" in kind:
        raise LadderError(f"a backend's kind is a target name's part before ':', got {kind!r}")
    if kind in REGISTRY:
        raise LadderError(f"a backend for target kind '{kind}' is registered already "
                          f"({type(REGISTRY[kind]).__name__})")
    REGISTRY[kind] = backend
    return backend


def known_targets() -> str:
    """The target names the shipped and the registered backends take, for messages."""
    names = {kind: targets for kind, (_, targets) in SHIPPED.items()}
    names.update({kind: b.targets for kind, b in REGISTRY.items()})
    return ", ".join(names.values())


def get_backend(target: str) -> Backend:
    """The backend for ``target`` (a name, ``kind`` or ``kind:...``), importing a shipped one on first use."""
    kind = target.split(":")[0]
    if kind not in REGISTRY and kind in SHIPPED:
        module = SHIPPED[kind][0]
        importlib.import_module(module)
        if kind not in REGISTRY:
            raise LadderError(f"internal: {module} registers no backend for target kind '{kind}'")
    if kind not in REGISTRY:
        raise LadderError(f"unknown target '{target}'; known: {known_targets()}")
    return REGISTRY[kind]


class _Backends(MappingABC):
    """Every backend ``ladder.compile`` can use, by target kind: the registered ones and the shipped ones. Asking
    whether a kind is here imports nothing; looking a shipped one up imports it (``get_backend``)."""

    def __getitem__(self, kind: str) -> Backend:
        if kind not in self:
            raise KeyError(kind)
        return get_backend(kind)

    def __contains__(self, kind: object) -> bool:
        return kind in SHIPPED or kind in REGISTRY

    def __iter__(self):
        return iter(dict.fromkeys([*SHIPPED, *REGISTRY]))

    def __len__(self) -> int:
        return len(set(SHIPPED) | set(REGISTRY))


BACKENDS = _Backends()


def check_executable(exe: object, backend: Backend) -> Executable:
    """``exe``, when it has every member of the Executable protocol; else a LadderError naming what it lacks."""
    lacking = missing_members(exe, Executable)
    if lacking:
        raise LadderError(f"the {backend.kind} backend's compile returned a {type(exe).__name__}, which lacks "
                          f"{', '.join(lacking)} (see ladder.backend.Executable)")
    return exe


# -- state, for executables that keep none ------------------------------------------------------------

class HostState:
    """The state half of the Executable protocol for an executable that runs the graph's plain call only
    (every input in, every output out: ``run_plain``): it keeps the state's buffers in Python and copies the
    new values into them after each call. ``state_modes`` says 'copy' (or 'unchanged', for a graph that
    returns the state input itself)."""

    def __init__(self, graph: Graph, state: Sequence[StateSlot], target: str):
        self.graph = graph
        self.state_slots = tuple(state)
        self.target_name = target
        self._state: State | None = None

    def run_plain(self, inputs, threads: int | None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @property
    def state(self) -> State:
        if self._state is None:
            self._state = State(self.state_slots)
        return self._state

    @property
    def state_modes(self) -> dict[str, str]:
        return {s.name: "unchanged" if self.graph.outputs[s.output] == s.name else "copy" for s in self.state_slots}

    def run(self, inputs=(), threads: int | None = None, *, state: State | None = None) -> dict[str, np.ndarray]:
        """The outputs by name. With state, ``inputs`` leaves the state out and the result holds the other
        outputs only; the state (default: the executable's own) is updated."""
        if not self.state_slots:
            if state is not None:
                raise StateError(f"graph @{self.graph.name} was compiled without state; compile it with state=")
            return self.run_plain(inputs, threads)
        st = self.state if state is None else state
        st.check_fits(self.state_slots, f"graph @{self.graph.name}")
        held = [s.name for s in self.state_slots]
        bound = bind_inputs(self.graph, inputs, held)
        if any(n in bound for n in held):
            raise StateError(f"graph @{self.graph.name} holds {', '.join('%' + n for n in held)} as state: give "
                             f"the other inputs only (ladder.compile calls load a given state)")
        return run_with_state(lambda ins: self.run_plain(ins, threads), self.graph, self.state_slots, st, bound)

    __call__ = run

    def bind(self, state: State | None = None) -> "HostCall":
        st = self.state if state is None else state
        st.check_fits(self.state_slots, f"graph @{self.graph.name}")
        return HostCall(self, st)

    def time_steps(self, inputs, repeat: int = 5, threads: int = 1, state: State | None = None
                   ) -> tuple[list[tuple[Op, float]], float]:
        raise LadderError(f"a per-op profile times cpu kernels; target '{self.target_name}' has none")


class HostCall:
    """``HostState.bind``: the same interface as the cpu backend's Call, each call an ordinary ``run`` on the
    bound state."""

    def __init__(self, exe: HostState, state: State):
        held = {s.name for s in exe.state_slots}
        self.exe, self.state = exe, state
        self.inputs = {v.name: np.zeros(v.type.storage_shape, v.type.storage_np_dtype)
                       for v in exe.graph.inputs if v.name not in held}
        self.threads: int | None = None

    def set_threads(self, threads: int) -> None:
        self.threads = threads

    def __call__(self, threads: int | None = None) -> dict[str, np.ndarray]:
        return self.exe.run(self.inputs, threads=threads or self.threads,
                            state=self.state if self.exe.state_slots else None)


__all__ = ["BACKENDS", "REGISTRY", "SHIPPED", "Backend", "Call", "Executable", "HostCall", "HostState",
           "check_executable", "get_backend", "known_targets", "missing_members", "protocol_members",
           "register_backend"]
