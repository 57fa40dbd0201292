"""Compile a graph for the CPU: legalize, lower every op to a kernel, and emit ONE native entry function.

    cg = compile_graph(graph, weights, target="cpu")
    outputs = cg.run({"x": x})            # a dict like ladder.run's

The entry function

    void ladder_main(ptr inputs[], ptr outputs[], ptr weights[], ptr scratch, ptr status[], i32 threads)

calls every op's kernel in order. Intermediates live in the scratch arena at offsets planned once from
liveness (backends/llvm/memory.py); results are written straight into the caller's output buffers; nothing is
allocated per call. A kernel with enough work is split over libgomp's persistent thread pool
(``GOMP_parallel``: no thread is created per call) when libgomp can be loaded, else it runs on the calling
thread; either way each work item is computed by exactly one call, so results do not depend on the thread
count. Weight-only values (packed weights, quantized weights) are computed once, when the module is built,
by the reference semantics, and passed in as weight buffers.

State (``state=``, ladder.interpreter.StateSlot: an input paired with the output that updates it, a decode
step's KV cache) is planned once, at compile time. A state whose update is a ``cache_write`` into that very
input, with no step reading the input after the write, is updated *in place*: the output buffer is the
input's buffer, and the cache_write kernel, seeing the two pointers equal, writes only the new rows. Any
other state (another op makes the new value, or the old value is still read after the write, or returned)
is computed into a buffer of its own and copied into the state after the call: slower, never wrong.

``bind(state)`` gives a ``Call``: the module's buffers bound once, for calling it again and again (a decode
loop) at the cost of one ctypes call of ``ladder_call`` (a wrapper that reads the entry's arguments from one
frame and returns the first failing step); ``run`` is a Call made for one set of inputs.

``LlvmBackend`` is this backend behind ladder.backend's protocol, registered for the ``cpu`` target kind: it
compiles with the compile context ``ladder.compile`` hands it (ladder.context: target, threads, cache folder,
memory budget, jit); ``CompiledGraph`` is its Executable.

The environment: loading libgomp sets ``GOMP_SPINCOUNT=10000`` in this process's environment, unless the user
set ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` (see ``GOMP_SPINCOUNT`` below). It is the one change ladder makes
to the environment, and it cannot be made otherwise: libgomp reads its settings from the environment once,
when it is loaded, and offers no call to set the spin count.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path
from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from ladder import budget
from ladder.backend import register_backend
from ladder.context import CompileContext
from ladder.errors import LadderError, RuntimeFailure
from ladder.interpreter import Session, State, StateSlot, bind_inputs, state_slots
from ladder.ir import Graph, Op
from ladder.passes import PassManager, default_pipeline
from ladder.printer import print_graph
from ladder.target import Target, get_target

from . import lowerings  # noqa: F401  (registration)
from .codegen import I32, I64, LOWERINGS, PTR, VOID, KernelContext, KernelSpec, for_range, seal_loops
from .jit import Module, ObjectCache, compile_in_child
from .worker import CompilerCrash
from .memory import Interval, plan

ENTRY = "ladder_main"
CALL = "ladder_call"  # i64 ladder_call(ptr frame): ladder_main on the frame's six arguments, then the status


class CompilerWarning(UserWarning):
    """LLVM crashed on a module and ladder compiled it again with less optimisation."""


def default_threads() -> int:
    """The cores this process may use."""
    from ladder.tuning import host_threads

    return host_threads()


# Between kernels libgomp's idle threads spin before they sleep (default: 300,000 spins). When the cores are
# shared with other busy processes, the spinning thread takes the core the working one needs: one decode step
# of the small BitNet model took 363 ms at 2 threads against 2.3 ms at 1 on a loaded 2-core machine, and 4.3 ms
# with 10,000 spins (still long enough to catch the next kernel, launched microseconds later). The user's
# GOMP_SPINCOUNT / OMP_WAIT_POLICY win; libgomp reads them once, when it is first loaded.
GOMP_SPINCOUNT = "10000"


def _load_gomp() -> bool:
    """Make libgomp's symbols visible to JIT code. False when the library is not on this machine."""
    name = ctypes.util.find_library("gomp")
    if not name:
        return False
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)
    try:
        ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        llvm.load_library_permanently(name)
        return True
    except OSError:
        return False


_GOMP: bool | None = None


def gomp_available() -> bool:
    global _GOMP
    if _GOMP is None:
        _GOMP = _load_gomp()
    return _GOMP


@dataclass
class _Step:
    op: Op
    spec: KernelSpec
    fn: object = None  # the kernel alone, callable with ctypes (for tests and tools)


class CompiledGraph:
    """A graph compiled to one native entry function, bound to its weights (a ladder.backend.Executable)."""

    program = None  # nothing but native code: ``source`` and ``write`` give it
    _run_call: "Call | None" = None  # the Call ``run`` reuses (bound to the state of the last run)

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray] | None, context: CompileContext,
                 pipeline: str | None = None, state: Sequence[StateSlot] = ()):
        self.context = context
        target, threads, jit = get_target(context.target), context.threads, context.jit
        self.target = target
        lacking = target.runs_here() if jit else []
        if lacking:
            raise LadderError(f"this machine's CPU ({get_target('cpu').cpu_name}) cannot run code for {target.name}: "
                              f"it lacks {', '.join(lacking)}; compile it ahead of time instead "
                              f"(ladder compile --target {target.name} --emit obj|so)")
        self.threads = threads or default_threads()
        self.graph = PassManager(default_pipeline(target.name) if pipeline is None else pipeline).run(graph)
        cache_dir = context.cache_dir
        session = Session(self.graph, weights, memory_budget=context.memory_budget,  # refuses before allocating
                          pack_cache=None if cache_dir is None else Path(cache_dir) / "packed")
        ops = session.runtime_ops
        missing = sorted({op.kind for op in ops if op.kind not in LOWERINGS})
        if missing:
            raise LadderError(f"the cpu backend has no kernel yet for: {', '.join(missing)}")
        g = self.graph
        # Buffers: inputs, weights (weight-only values that steps read), outputs, and the arena.
        self.input_names = [v.name for v in g.inputs]
        read = {o for op in ops for o in op.operands}
        self.weight_names = [n for n in session.fixed if n in read]
        self.weights = [np.ascontiguousarray(session.fixed[n]) for n in self.weight_names]
        self.fixed_outputs = {n: session.fixed[n] for n in g.outputs if n in session.fixed}
        computed = {r.name for op in ops for r in op.results}
        self.output_slots = {n: i for i, n in enumerate(dict.fromkeys(n for n in g.outputs if n in computed))}
        last_use: dict[str, int] = {}
        for i, op in enumerate(ops):
            for o in op.operands:
                last_use[o] = i
        intervals = []
        for i, op in enumerate(ops):
            for r in op.results:
                if r.name not in self.output_slots:
                    nbytes = int(np.prod(r.type.storage_shape)) * r.type.storage_np_dtype.itemsize
                    intervals.append(Interval(r.name, nbytes, i, last_use.get(r.name, i)))
        self.plan = plan(intervals)
        self.arena = np.zeros(max(self.plan.size, 64), np.uint8)
        self.status = np.zeros(max(len(ops), 1), np.int64)
        self.state_slots = state_slots(g, {s.name: s.output for s in state})  # checked on the graph we run
        self._state: State | None = None
        self.use_gomp = gomp_available()
        self.module, self.steps = self._build(ops, context.cache_dir, jit)
        self.state_modes = self._plan_state()
        self._weight_ptrs = _pointer_array(self.weights)
        self._lock = threading.Lock()  # one arena: calls from several Python threads take turns
        self.entry = self.call_fn = None
        if not jit:
            return
        self.entry = self.module.function(ENTRY, ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 5), ctypes.c_int32))
        self.call_fn = self.module.function(CALL, ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p))
        for s in self.steps:
            n = len(s.op.operands) + len(s.op.results) + (1 if s.spec.has_status else 0)
            s.fn = self.module.function(s.spec.fn.name, ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * n),
                                                                         ctypes.c_int64, ctypes.c_int64))

    @property
    def machine(self) -> str:
        """The LLVM cpu the code is for."""
        return self.target.cpu_name

    def report_lines(self) -> list[str]:
        wbytes = sum(w.nbytes for w in self.weights)
        return [f"{len(self.steps)} kernels; arena {self.plan.size:,} bytes; weights {wbytes:,} bytes; "
                f"threads {self.threads} ({'libgomp pool' if self.use_gomp else 'calling thread only'})"]

    # -- state -------------------------------------------------------------------------------------------
    def _plan_state(self) -> dict[str, str]:
        """How each state is updated: 'in place' (its output buffer is its input buffer), 'copy' (its new
        value is copied in after the call) or 'unchanged' (the graph returns the input itself).

        In place needs the output to come from a cache_write into the state's own input (whose kernel then
        writes only the new rows), every other reader of the input to run before that write, and neither the
        input nor the output to be returned anywhere else: the old value is then never read once overwritten.
        Steps run one after another (a kernel's threads finish before the next kernel starts)."""
        g = self.graph
        producer = {r.name: i for i, s in enumerate(self.steps) for r in s.op.results}
        last_read: dict[str, int] = {}
        for i, s in enumerate(self.steps):
            for o in s.op.operands:
                last_read[o] = i
        modes = {}
        for slot in self.state_slots:
            out = g.outputs[slot.output]
            at = producer.get(out)
            op = self.steps[at].op if at is not None else None
            if out == slot.name:
                modes[slot.name] = "unchanged"
            elif (op is not None and op.kind == "cache_write" and op.operands[0] == slot.name
                  and slot.name not in op.operands[1:] and last_read[slot.name] <= at
                  and slot.name not in g.outputs and g.outputs.count(out) == 1):
                modes[slot.name] = "in place"
            else:
                modes[slot.name] = "copy"
        return modes

    @property
    def state(self) -> State:
        """The module's own state (made on first use), for calls that name none."""
        if self._state is None:
            self._state = State(self.state_slots)
        return self._state

    def bind(self, state: State | None = None, inputs: Mapping[str, np.ndarray] | None = None) -> "Call":
        """A Call of this module on ``state`` (default: the module's own); ``inputs``: arrays to read the
        inputs from (else the Call owns zeroed input buffers, written by its caller before each call)."""
        if self.entry is None:
            raise LadderError("this module was compiled ahead of time only; it cannot run here")
        state = self.state if state is None else state
        state.check_fits(self.state_slots, f"graph @{self.graph.name}")
        return Call(self, state, inputs)

    def _raise_status(self, at: int) -> None:
        """Raise the error step ``at`` reported (and clear the status for the next call)."""
        s, code = self.steps[at], int(self.status[at])
        self.status[:] = 0
        raise RuntimeFailure(f"{s.op.describe()}: {s.spec.errors.get(code, f'error code {code}')}", s.op.loc)

    @property
    def ir_text(self) -> str:
        """The module's LLVM IR as generated (before optimisation); generated now if the module came from the
        compiled-code cache."""
        return self.module.ir_text

    # -- compiling, from the cache or surviving LLVM ---------------------------------------------------------
    def _build(self, ops: Sequence[Op], cache_dir, jit: bool) -> "tuple[Module, list[_Step]]":
        """The module and its steps. The compiled-code cache is looked up first, on what the code is made from
        (``_code_source``): on a hit no kernel is generated and no IR printed, the entry's kernel table gives
        every step's kernel (name, work, grain, errors) and the IR is generated only if asked for (``ir_text``).
        On a miss the kernels are generated and compiled, and the object is stored with its kernel table."""
        source = self._code_source() if cache_dir is not None else ""
        if cache_dir is not None:
            for vectorize in (True, False):  # an entry made without vectorisation: LLVM crashed on this module
                hit = Module.cached(ObjectCache(cache_dir, source, self.target, vectorize),
                                    lambda: self._generate(ops)[0], jit)
                steps = _cached_steps(ops, hit[1]) if hit is not None else None
                if steps is not None:
                    if hit[1].get("warning"):
                        warnings.warn(hit[1]["warning"], CompilerWarning, stacklevel=5)
                    return hit[0], steps
                if hit is not None:
                    ObjectCache.skip(f"the entry for graph @{self.graph.name} holds a kernel table that does "
                                     f"not fit it")
        ir_text, self.steps = self._generate(ops)  # _compile's search for a crashing kernel reads them
        return self._compile(ir_text, source, cache_dir, jit), self.steps

    def _code_source(self) -> str:
        """What the module's code is made from before any kernel is generated, as the cache's key: the graph as
        printed (every op, type, layout and attribute; constants in full) and whether steps may run on
        libgomp's pool. Weight values are not in it and need not be: a lowering is given an op and its types
        only, and weights reach the code as buffers when it runs. Threads and memory budget are run-time
        arguments (their effect on the pipeline is in the graph). jit.ObjectCache adds the target, the
        versions and a hash of ladder's source."""
        return f"use_gomp={self.use_gomp}\n{print_graph(self.graph)}"

    def _generate(self, ops: Sequence[Op]) -> "tuple[str, list[_Step]]":
        """Every op lowered to its kernel, the entry and the call wrapper: the module's IR text and its steps."""
        g = self.graph
        ctx = KernelContext(self.target, name=f"ladder_{g.name}")
        # ops of one kind, attributes and types get one kernel: a lowering sees only those (its errors too), and
        # a decoder repeats each layer's ops (a 12-layer model: ~580 ops, ~40 kernels)
        kernels: dict = {}
        steps = []
        for op in ops:
            ins, outs = [g.type_of(o) for o in op.operands], [r.type for r in op.results]
            key = (op.kind, op.attrs, tuple(ins), tuple(outs))
            try:
                spec = kernels.get(key)
            except TypeError:  # an unhashable attribute value: this op gets its own kernel
                key, spec = None, None
            if spec is None:
                spec = LOWERINGS[op.kind](ctx, op, ins, outs)
                if key is not None:
                    kernels[key] = spec
            steps.append(_Step(op, spec))
        self._emit_entry(ctx, steps)
        self._emit_call(ctx, len(steps))
        seal_loops(ctx.module)
        return str(ctx.module), steps

    def _compile(self, ir_text: str, source: str, cache_dir, jit: bool) -> Module:
        """The module, compiled in the compiler child. When LLVM aborts there, find the step whose kernel it
        aborts on, then try the module again without loop vectorisation: on success warn (op, kernel, LLVM's
        message), else raise a LadderError naming them. With ``cache_dir`` the object is stored there."""
        meta = {"kernels": _kernel_table(self.steps)}

        def cache(vectorize: bool) -> ObjectCache | None:
            return None if cache_dir is None else ObjectCache(cache_dir, source, self.target, vectorize)

        try:
            return Module.compile(ir_text, self.target, cache(True), jit=jit, meta=meta)
        except CompilerCrash as crash:
            message = crash.message
        step, alone = self._find_crashing_step()
        where = self._describe(step)
        cpu = f"{self.target.name} ({self.target.cpu_name})"
        warning = (f"LLVM crashed compiling {where} for {cpu}: {alone or message}; the module was compiled "
                   f"again without loop vectorisation")
        try:
            module = Module.compile(ir_text, self.target, cache(False), jit=jit, loop_vectorize=False,
                                    meta={**meta, "warning": warning})
        except CompilerCrash as again:
            raise LadderError(f"LLVM crashed compiling {where} for {cpu}, also without loop vectorisation: "
                              f"{again.message}", step.op.loc if step else None) from None
        warnings.warn(warning, CompilerWarning, stacklevel=5)
        return module

    def _find_crashing_step(self) -> "tuple[_Step | None, str | None]":
        """The first step whose kernel alone crashes LLVM, and LLVM's message then; (None, None) if none does."""
        g = self.graph
        for s in self.steps:
            one = KernelContext(self.target, name=f"ladder_{g.name}_{s.op.name}")
            LOWERINGS[s.op.kind](one, s.op, [g.type_of(o) for o in s.op.operands], [r.type for r in s.op.results])
            seal_loops(one.module)
            try:
                compile_in_child(str(one.module), self.target)
            except CompilerCrash as crash:
                return s, crash.message
        return None, None

    @staticmethod
    def _describe(step: "_Step | None") -> str:
        if step is None:
            return "the module (no single kernel crashes alone)"
        loc = f" at {step.op.loc}" if step.op.loc else ""
        return f"{step.op.describe()}{loc} (kernel {step.spec.fn.name})"

    # -- code ------------------------------------------------------------------------------------------
    def _emit_entry(self, ctx: KernelContext, steps: "list[_Step]") -> None:
        mod = ctx.module
        fn = ir.Function(mod, ir.FunctionType(VOID, [PTR] * 5 + [I32]), ENTRY)
        # a call per step, thousands in a large model's graph: not worth LLVM's optimiser (it spent most of a
        # 2B model's compile on it), and nothing is inlined into it
        fn.attributes.add("optnone")
        fn.attributes.add("noinline")
        inputs, outputs, weights, scratch, status, nthreads = fn.args
        for a, n in zip(fn.args, ("inputs", "outputs", "weights", "scratch", "status", "threads")):
            a.name = n
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        index_in = {n: i for i, n in enumerate(self.input_names)}
        index_w = {n: i for i, n in enumerate(self.weight_names)}

        def pointer(name: str):
            if name in self.output_slots:
                return _load_slot(b, outputs, self.output_slots[name])
            if name in index_in:
                return _load_slot(b, inputs, index_in[name])
            if name in index_w:
                return _load_slot(b, weights, index_w[name])
            return b.gep(scratch, [ir.Constant(I64, self.plan.offsets[name])], source_etype=ir.IntType(8))

        for i, s in enumerate(steps):
            ptrs = [pointer(o) for o in s.op.operands] + [pointer(r.name) for r in s.op.results]
            if s.spec.has_status:
                ptrs.append(b.gep(status, [ir.Constant(I64, i)], source_etype=I64))
            if s.spec.work <= 0:
                continue
            if self.use_gomp and s.spec.work >= 2 * s.spec.grain:
                self._emit_parallel_call(ctx, b, s, ptrs, nthreads)
            else:
                b.call(s.spec.fn, ptrs + [ir.Constant(I64, 0), ir.Constant(I64, s.spec.work)])
        b.ret_void()

    def _emit_parallel_call(self, ctx: KernelContext, b: ir.IRBuilder, s: _Step, ptrs, nthreads) -> None:
        """Store the kernel's pointers in a frame and run a trampoline on every thread of libgomp's pool; a
        kernel with less work than ``PARALLEL_MIN_COST`` is called on the calling thread instead."""
        if step_cost(s.op, self.graph) < PARALLEL_MIN_COST:
            b.call(s.spec.fn, ptrs + [ir.Constant(I64, 0), ir.Constant(I64, s.spec.work)])
            return
        gomp = ctx.declare("GOMP_parallel", VOID, [PTR, PTR, I32, I32])
        tramp = self._trampoline(ctx, s, len(ptrs))
        frame_ptr = b.alloca(PTR, size=len(ptrs))
        for j, p in enumerate(ptrs):
            b.store(p, b.gep(frame_ptr, [ir.Constant(I64, j)], source_etype=PTR))
        b.call(gomp, [tramp, frame_ptr, nthreads, ir.Constant(I32, 0)])

    def _trampoline(self, ctx: KernelContext, s: _Step, n_ptrs: int) -> ir.Function:
        """The function each of libgomp's threads runs for a step: its share of the kernel's range, the kernel's
        pointers from the frame. Steps of one kernel and range share it (a decoder's layers: ~40, not ~1,000):
        its name says which, and the module holds it once, as ``declare`` holds a declaration."""
        name = f"k_par_{s.spec.fn.name}_{s.spec.work}_{s.spec.grain}"  # kernel-made names begin k_
        if name in ctx.module.globals:
            return ctx.module.globals[name]
        tid_fn = ctx.declare("omp_get_thread_num", I32, [])
        nth_fn = ctx.declare("omp_get_num_threads", I32, [])
        tramp = ir.Function(ctx.module, ir.FunctionType(VOID, [PTR]), name)
        tb = ir.IRBuilder(tramp.append_basic_block("entry"))
        frame = tramp.args[0]
        args = [tb.load(tb.gep(frame, [ir.Constant(I64, j)], source_etype=PTR), typ=PTR) for j in range(n_ptrs)]
        tid = tb.sext(tb.call(tid_fn, []), I64)
        nth = tb.sext(tb.call(nth_fn, []), I64)
        work, grain = ir.Constant(I64, s.spec.work), ir.Constant(I64, s.spec.grain)
        # chunk = ceil(ceil(work / nth) / grain) * grain; [tid * chunk, min(work, (tid + 1) * chunk))
        one = ir.Constant(I64, 1)
        per = tb.sdiv(tb.add(work, tb.sub(nth, one)), nth)
        chunk = tb.mul(tb.sdiv(tb.add(per, tb.sub(grain, one)), grain), grain)
        lo = tb.mul(tid, chunk)
        hi = tb.add(lo, chunk)
        hi = tb.select(tb.icmp_signed("<", hi, work), hi, work)
        with tb.if_then(tb.icmp_signed("<", lo, hi)):
            tb.call(s.spec.fn, args + [lo, hi])
        tb.ret_void()
        return tramp

    def _emit_call(self, ctx: KernelContext, n_steps: int) -> None:
        """``i64 ladder_call(ptr frame)``: the entry on frame[0..4] (inputs, outputs, weights, scratch, status)
        and frame[5] (threads), then 0 if every status is 0, else 1 + the first failing step's index. One
        pointer to pass and an integer back: the cheapest ctypes call there is."""
        fn = ir.Function(ctx.module, ir.FunctionType(I64, [PTR]), CALL)
        frame = fn.args[0]
        frame.name = "frame"
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        args = [_load_slot(b, frame, j) for j in range(5)]
        threads = b.trunc(b.load(b.gep(frame, [ir.Constant(I64, 5)], source_etype=I64), typ=I64), I32)
        b.call(ctx.module.get_global(ENTRY), args + [threads])
        status = args[4]
        found = b.alloca(I64)
        b.store(ir.Constant(I64, 0), found)
        # backwards, so that the first failing step is the one left in ``found``
        with for_range(b, 0, max(n_steps, 1), name="s") as i:
            j = b.sub(ir.Constant(I64, max(n_steps, 1) - 1), i)
            code = b.load(b.gep(status, [j], source_etype=I64), typ=I64)
            with b.if_then(b.icmp_signed("!=", code, ir.Constant(I64, 0)), likely=False):
                b.store(b.add(j, ir.Constant(I64, 1)), found)
        b.ret(b.load(found, typ=I64))

    # -- running ---------------------------------------------------------------------------------------------
    def run(self, inputs, *, state: State | None = None, threads: int | None = None) -> dict[str, np.ndarray]:
        """The outputs (fresh arrays) by name. With state, ``inputs`` leaves the state out and the result
        holds the other outputs only; the state (default: the module's own) is updated."""
        bound = bind_inputs(self.graph, inputs, [s.name for s in self.state_slots])
        if self.state_slots and len(bound) == len(self.input_names):
            raise LadderError(f"graph @{self.graph.name} holds {', '.join('%' + s.name for s in self.state_slots)} "
                              f"as state: give the other inputs only (ladder.compile calls load a given state)")
        state = self.state if state is None else state
        call = self._run_call
        if call is None or call.state is not state:  # binding costs tens of microseconds: once per state
            call = self._run_call = self.bind(state)
        return call.run(bound, self.threads if threads is None else threads)

    __call__ = run

    def time_steps(self, inputs, repeat: int = 5, threads: int = 1, state: State | None = None
                   ) -> tuple[list[tuple[Op, float]], float]:
        """A profile of one call: (op, seconds) of each step's kernel, called alone over its whole range on this
        thread, in order, on the buffers the entry gives it, less the cost of a ctypes call (the same call over
        an empty range); and the seconds of the entry itself at ``threads`` (through ``ladder_call``). Medians
        of ``repeat`` runs. With state, the calls run on ``state`` (default: the module's own) and change it."""
        bound = bind_inputs(self.graph, inputs, [s.name for s in self.state_slots])
        call = self.bind(state, bound)
        call.set_threads(threads)

        def address(name: str) -> int:  # as _emit_entry's pointer()
            if name in call.address:
                return call.address[name]
            return self.arena.ctypes.data + self.plan.offsets[name]

        calls = []
        for i, s in enumerate(self.steps):
            args = [address(o) for o in s.op.operands] + [address(r.name) for r in s.op.results]
            if s.spec.has_status:
                args.append(self.status.ctypes.data + 8 * i)
            calls.append(args)
        kernel, entry = np.zeros((repeat, len(self.steps))), np.zeros(repeat)
        fn, frame = call.fn, call.frame_address
        with self._lock:
            for r in range(repeat):
                for i, (s, args) in enumerate(zip(self.steps, calls)):
                    if s.spec.work > 0:
                        t0 = time.perf_counter()
                        s.fn(*args, 0, 0)
                        t1 = time.perf_counter()
                        s.fn(*args, 0, s.spec.work)
                        t2 = time.perf_counter()
                        kernel[r, i] = max((t2 - t1) - (t1 - t0), 0.0)
                t0 = time.perf_counter()
                fn(frame)
                entry[r] = time.perf_counter() - t0
            self.status[:] = 0
        return [(s.op, float(t)) for s, t in zip(self.steps, np.median(kernel, axis=0))], float(np.median(entry))

    def source(self, kind: str = "llvm") -> str:
        """The optimised LLVM IR ('llvm') or the assembly ('asm') of the module."""
        return self.module.asm() if kind == "asm" else self.module.ir()

    # -- ahead of time --------------------------------------------------------------------------------------
    def write(self, path: str | os.PathLike, emit: str = "so") -> list[Path]:
        """Write the module ahead of time: 'llvm' (.ll), 'asm' (.s), 'obj' (.o), or 'so': a shared library
        plus a C header (same name, .h) declaring the entry point and every buffer size, and the prepared
        weights (same name, .weights: each weight buffer at the offset the header gives). Returns the files."""
        path = Path(path)
        if emit == "llvm":
            path.write_text(self.source("llvm"))
            return [path]
        if emit == "asm":
            path.write_text(self.source("asm"))
            return [path]
        obj = self.module.obj
        if emit == "obj":
            path.write_bytes(obj)
            return [path]
        if emit != "so":
            raise LadderError(f"--emit takes llvm, asm, obj or so, not '{emit}'")
        cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        if cc is None:
            raise LadderError("writing a shared library needs a C compiler (cc) to link it; use --emit obj")
        with tempfile.TemporaryDirectory() as tmp:
            o = Path(tmp) / "model.o"
            o.write_bytes(obj)
            cmd = [cc, "-shared", "-o", str(path), str(o), "-lm"] + (["-lgomp"] if self.use_gomp else [])
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise LadderError(f"linking {path} failed: {' '.join(cmd)}\n{done.stderr.strip()}")
        header, blob = path.with_suffix(".h"), path.with_suffix(".weights")
        offsets, data = [], bytearray()
        for w in self.weights:
            data.extend(b"\0" * (-len(data) % 64))
            offsets.append(len(data))
            data.extend(w.tobytes())
        blob.write_bytes(bytes(data))
        header.write_text(self._header(path.name, blob.name, offsets))
        return [path, header, blob]

    def _header(self, lib: str, blob: str, offsets: list[int]) -> str:
        g = self.graph

        def nbytes(name):
            t = g.type_of(name)
            return int(np.prod(t.storage_shape)) * t.storage_np_dtype.itemsize

        def array(cname, values):
            return f"static const int64_t {cname}[] = {{{', '.join(str(v) for v in values) or '0'}}};"

        outs = list(self.output_slots)
        lines = [
            f"/* {lib}: graph @{g.name} compiled by ladder for {self.target.name} ({self.target.cpu_name}). */",
            "#ifndef LADDER_MODEL_H", "#define LADDER_MODEL_H", "#include <stdint.h>", "",
            "/* inputs, in order (row-major, storage form):",
            *[f" *   {i}: %{n} : {g.type_of(n)}" for i, n in enumerate(self.input_names)],
            " * outputs, in order:",
            *[f" *   {i}: %{n} : {g.type_of(n)}" for i, n in enumerate(outs)],
            *self._header_state(outs),
            " * weights: in the file " + blob + ", at the offsets below. */",
            f"#define LADDER_NUM_INPUTS {len(self.input_names)}",
            f"#define LADDER_NUM_OUTPUTS {len(outs)}",
            f"#define LADDER_NUM_WEIGHTS {len(self.weights)}",
            f"#define LADDER_SCRATCH_BYTES {max(self.plan.size, 64)}",
            f"#define LADDER_NUM_STATUS {max(len(self.steps), 1)}",
            array("ladder_input_bytes", [nbytes(n) for n in self.input_names]),
            array("ladder_output_bytes", [nbytes(n) for n in outs]),
            array("ladder_weight_offsets", offsets),
            array("ladder_weight_bytes", [w.nbytes for w in self.weights]),
            "",
            "/* Runs the graph. scratch: LADDER_SCRATCH_BYTES bytes, 64-byte aligned; status: LADDER_NUM_STATUS",
            " * zeros, a non-zero entry on return means that step met bad data (an index out of range). */",
            "void ladder_main(void **inputs, void **outputs, void **weights, void *scratch, int64_t *status,",
            "                 int32_t threads);",
            "/* ladder_main on frame = {inputs, outputs, weights, scratch, status, (void *)(intptr_t)threads};",
            " * returns 0, or 1 + the index of the first step whose status is non-zero. */",
            "int64_t ladder_call(void *const frame[6]);",
            "#endif", "",
        ]
        return "\n".join(lines)

    def _header_state(self, outs: list[str]) -> list[str]:
        """The header's lines on state: which input and output may share one buffer."""
        if not self.state_slots:
            return []
        lines = [" * state (an input the caller keeps from one call to the next, updated by an output):"]
        for s in self.state_slots:
            out = self.graph.outputs[s.output]
            mode = self.state_modes[s.name]
            if mode == "in place":
                how = f"output {outs.index(out)} may be the same buffer as the input (updated in place)"
            elif out in outs:
                how = f"copy output {outs.index(out)} into it after each call (not in place: separate buffers)"
            else:
                how = "the graph returns it unchanged" if mode == "unchanged" else "not computed by the entry"
            lines.append(f" *   input {self.input_names.index(s.name)} %{s.name}: {how}")
        return lines


class Call:
    """The module's buffers bound once, for calling it again and again (``CompiledGraph.bind``).

    Write the inputs into ``inputs[name]`` (the Call's own arrays, or the arrays it was given), call it, and
    read the outputs from the dict it returns: the same arrays every call, overwritten by the next one. State
    inputs are not among ``inputs`` nor state outputs among the results: they live in ``state``. A call is one
    ctypes call of ``ladder_call`` on a frame of pointers built here; only a state updated by copy, or an
    output that is not computed (a weight, an input), costs a copy more."""

    def __init__(self, cg: CompiledGraph, state: State, inputs: Mapping[str, np.ndarray] | None = None):
        g = cg.graph
        self.cg, self.state = cg, state
        held = {s.name for s in cg.state_slots}
        self.inputs: dict[str, np.ndarray] = {}
        ins = []
        for n in cg.input_names:
            if n in held:
                ins.append(state.buffers[n])
                continue
            t = g.type_of(n)
            buf = np.ascontiguousarray(inputs[n]) if inputs is not None else np.zeros(t.storage_shape,
                                                                                        t.storage_np_dtype)
            self.inputs[n] = buf
            ins.append(buf)
        in_place = {g.outputs[s.output]: s.name for s in cg.state_slots if cg.state_modes[s.name] == "in place"}
        outs = {n: state.buffers[in_place[n]] if n in in_place else
                np.empty(g.type_of(n).storage_shape, g.type_of(n).storage_np_dtype) for n in cg.output_slots}
        self.address = {n: a.ctypes.data for n, a in zip(cg.input_names, ins)}
        self.address.update({n: a.ctypes.data for n, a in outs.items()})
        self.address.update({n: w.ctypes.data for n, w in zip(cg.weight_names, cg.weights)})

        def value(name: str) -> np.ndarray:  # an output's array after the call
            if name in outs:
                return outs[name]
            if name in cg.fixed_outputs:
                return cg.fixed_outputs[name]
            return ins[cg.input_names.index(name)]

        buffers = [b for b in state.buffers.values()]
        # (state buffer, new value, whether that value is itself a state buffer and must be read first)
        self._copies = [(state.buffers[s.name], value(g.outputs[s.output]),
                         any(value(g.outputs[s.output]) is b for b in buffers))
                        for s in cg.state_slots if cg.state_modes[s.name] == "copy"]
        stateful = {g.outputs[s.output] for s in cg.state_slots}
        plain = [n for i, n in enumerate(g.outputs) if i not in {s.output for s in cg.state_slots}]
        self.outputs = {n: outs[n] for n in plain if n in outs and n not in stateful}
        self._fresh = [(n, value(n)) for n in plain if n not in self.outputs]  # copied out on every call
        self._after = bool(self._fresh or self._copies)
        # inputs that are also read after the entry (an output or a state's new value): ``run`` copies these into
        # the Call's own buffers instead of pointing the entry at the caller's arrays
        read_after = [src for _, src in self._fresh] + [src for _, src, _ in self._copies]
        self._echoed = {n for n, buf in self.inputs.items() if any(src is buf for src in read_after)}
        # the pointer arrays and the frame must outlive every call: the Call holds them
        self._ptrs = (_pointer_array(ins), _pointer_array(list(outs.values())))
        self._frame = np.array([self._ptrs[0].ctypes.data, self._ptrs[1].ctypes.data, cg._weight_ptrs.ctypes.data,
                                cg.arena.ctypes.data, cg.status.ctypes.data, cg.threads], np.uint64)
        self._threads = cg.threads
        self.fn = cg.call_fn.cfunc
        self.frame_address = self._frame.ctypes.data
        self._lock = cg._lock  # one arena: calls from several Python threads take turns

    def set_threads(self, threads: int) -> None:
        self._threads = int(threads)
        self._frame[5] = self._threads

    def __call__(self, threads: int | None = None) -> dict[str, np.ndarray]:
        if threads is not None and threads != self._threads:
            self.set_threads(threads)
        with self._lock:
            failed = self.fn(self.frame_address)
            if failed:
                self.cg._raise_status(failed - 1)
            if self._after:
                self._finish()
        return self.outputs

    def run(self, inputs: Mapping[str, np.ndarray], threads: int) -> dict[str, np.ndarray]:
        """``CompiledGraph.run`` on this Call's buffers: the entry reads ``inputs`` (every input that is not
        state, by name) where they lie and writes the outputs into fresh arrays, which the result holds."""
        cg = self.cg
        ins = {n: np.ascontiguousarray(a) for n, a in inputs.items()}  # alive until the entry returns
        outs = {n: np.empty_like(a) for n, a in self.outputs.items() if n in cg.output_slots}
        with self._lock:
            for n, a in ins.items():
                if n in self._echoed:
                    np.copyto(self.inputs[n], a)
                else:
                    self._ptrs[0][cg.input_names.index(n)] = a.ctypes.data
            for n, a in outs.items():
                self._ptrs[1][cg.output_slots[n]] = a.ctypes.data
            self._frame[5] = self._threads = int(threads)
            failed = self.fn(self.frame_address)
            if failed:
                cg._raise_status(failed - 1)
            if self._after:
                self._finish()
                outs.update((n, self.outputs[n]) for n, _ in self._fresh)
        return outs

    def _finish(self) -> None:
        """After the entry: the outputs it does not write, then the states updated by copy (every new value
        read before any state buffer is written)."""
        for name, src in self._fresh:
            self.outputs[name] = src.copy()
        new = [src.copy() if first else src for _, src, first in self._copies]
        for (dst, _, _), src in zip(self._copies, new):
            if src is not dst:
                np.copyto(dst, src)


# Starting and joining a parallel region costs microseconds on an idle pool (libgomp wakes its threads, they
# meet at a barrier), and up to a time slice when another process holds the cores the pool needs: a tiny
# transformer's 130 kernels took 45 ms at 2 threads on a loaded 2-core machine against 0.3 ms at 1. Below this
# cost (step_cost's units, about 10-30 us of kernel time) a kernel runs on the calling thread.
PARALLEL_MIN_COST = 1 << 18
_CONTRACTIONS = ("matmul", "qmatmul", "qmatmul_i8", "qmatmul_q8")


def step_cost(op: Op, graph: Graph) -> int:
    """A step's work, decided at compile time: the bytes it reads and writes, plus its multiply-adds (matmuls:
    result elements x the reduced length; attention: two products over the keys)."""
    types = [graph.type_of(o) for o in op.operands] + [r.type for r in op.results]
    cost = sum(int(np.prod(t.storage_shape)) * t.storage_np_dtype.itemsize for t in types)
    out = int(np.prod(op.results[0].type.shape)) if op.results else 0
    if op.kind in _CONTRACTIONS:
        cost += out * types[0].shape[-1]
    elif op.kind == "attention":
        cost += 2 * out * types[1].shape[-2]
    return cost


def _kernel_table(steps: "Sequence[_Step]") -> list[dict]:
    """Each step's KernelSpec as JSON (the function by name), stored beside the object in the cache."""
    table = []
    for s in steps:
        row = {f.name: getattr(s.spec, f.name) for f in fields(KernelSpec)}
        row["fn"] = s.spec.fn.name
        if row["errors"] is not None:
            row["errors"] = {str(k): v for k, v in row["errors"].items()}
        table.append(row)
    return table


def _cached_steps(ops: Sequence[Op], meta: dict) -> "list[_Step] | None":
    """The steps of a module from the cache: KernelSpecs from its kernel table, each function a declaration of
    the compiled kernel (its code is in the object). None when the table does not fit the ops."""
    table = meta.get("kernels")
    if not isinstance(table, list) or len(table) != len(ops):
        return None
    declared = ir.Module("cached")
    steps = []
    try:
        for op, row in zip(ops, table):
            errors = None if row["errors"] is None else {int(k): str(v) for k, v in row["errors"].items()}
            n = len(op.operands) + len(op.results) + (errors is not None)
            fn = declared.globals.get(str(row["fn"])) or ir.Function(  # steps may share a kernel
                declared, ir.FunctionType(VOID, [PTR] * n + [I64, I64]), str(row["fn"]))
            spec = KernelSpec(**{**row, "fn": fn, "errors": errors})
            steps.append(_Step(op, spec))
    except (KeyError, NameError, TypeError, ValueError, AttributeError):
        return None
    return steps


def _load_slot(b: ir.IRBuilder, array, index: int):
    return b.load(b.gep(array, [ir.Constant(I64, index)], source_etype=PTR), typ=PTR)


def _pointer_array(arrays) -> np.ndarray:
    out = np.zeros(max(len(arrays), 1), np.uintp)
    for i, a in enumerate(arrays):
        out[i] = a.ctypes.data
    return out


def compile_graph(graph: Graph, weights: Mapping[str, np.ndarray] | None = None, target: str | Target = "cpu",
                  pipeline: str | None = None, threads: int | None = None, cache_dir=None,
                  jit: bool = True, memory_budget=None, state: Sequence[StateSlot] = ()) -> CompiledGraph:
    """``cache_dir``: where compiled machine code is kept between runs (None: not kept). ``jit=False``
    builds the module for writing ahead of time only (any cpu level, not necessarily this machine's).
    ``memory_budget``: see ladder.budget. ``state``: the inputs the module holds (ladder.interpreter.state_slots
    of the graph after ``pipeline``). The arguments make the CompileContext ``ladder.compile`` would pass."""
    ctx = CompileContext(target, threads=threads, cache=None if cache_dir is None else Path(cache_dir),
                         memory_budget=memory_budget, jit=jit)
    return CompiledGraph(graph, weights, ctx, pipeline, state)


class LlvmBackend:
    """The ``cpu`` target kind (ladder.backend.Backend)."""

    kind = "cpu"
    targets = "cpu, cpu:native, cpu:generic, cpu:avx2, cpu:avx512"  # and cpu:NAME, any LLVM x86 cpu
    takes_tuning = True

    def default_pipeline(self, ctx: CompileContext) -> str:
        return default_pipeline(ctx.target_name, ctx.threads, ctx.tuning_file)

    def compile(self, graph: Graph, weights: Mapping[str, np.ndarray] | None, ctx: CompileContext,
                state: Sequence[StateSlot] = ()) -> CompiledGraph:
        """``graph`` (already through the pipeline) compiled for the context's target; the memory budget is
        checked before anything is allocated (packed weights, the arena)."""
        budget.check(graph, ctx.memory_budget, f"to run on {ctx.target_name}")
        return CompiledGraph(graph, weights, ctx, "", state)


register_backend(LlvmBackend())
