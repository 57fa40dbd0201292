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
from dataclasses import dataclass
from typing import Mapping

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from ladder.errors import LadderError, RuntimeFailure
from ladder.interpreter import Session, bind_inputs
from ladder.ir import Graph, Op
from ladder.passes import PassManager, default_pipeline
from ladder.target import Target, get_target

from . import lowerings  # noqa: F401  (registration)
from .codegen import I32, I64, LOWERINGS, PTR, VOID, KernelContext, KernelSpec, seal_loops
from .jit import Module, compile_in_child
from .worker import CompilerCrash
from .memory import Interval, plan

ENTRY = "ladder_main"


class CompilerWarning(UserWarning):
    """LLVM crashed on a module and ladder compiled it again with less optimisation."""


def default_threads() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


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
    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray] | None, target: Target,
                 pipeline: str | None, threads: int | None, cache_dir=None, jit: bool = True,
                 memory_budget=None):
        self.target = target
        lacking = target.runs_here() if jit else []
        if lacking:
            raise LadderError(f"this machine's CPU ({get_target('cpu').cpu_name}) cannot run code for {target.name}: "
                              f"it lacks {', '.join(lacking)}; compile it ahead of time instead "
                              f"(ladder compile --target {target.name} --emit obj|so)")
        self.threads = threads or default_threads()
        self.graph = PassManager(default_pipeline(target.name) if pipeline is None else pipeline).run(graph)
        session = Session(self.graph, weights, memory_budget=memory_budget)  # refuses before allocating
        ops = session._rest
        missing = sorted({op.kind for op in ops if op.kind not in LOWERINGS})
        if missing:
            raise LadderError(f"the cpu backend has no kernel yet for: {', '.join(missing)}")
        g = self.graph
        ctx = KernelContext(target, name=f"ladder_{g.name}")
        self.steps = [_Step(op, LOWERINGS[op.kind](ctx, op, [g.type_of(o) for o in op.operands],
                                                   [r.type for r in op.results])) for op in ops]
        # Buffers: inputs, weights (weight-only values that steps read), outputs, and the arena.
        self.input_names = [v.name for v in g.inputs]
        read = {o for s in self.steps for o in s.op.operands}
        self.weight_names = [n for n in session.fixed if n in read]
        self.weights = [np.ascontiguousarray(session.fixed[n]) for n in self.weight_names]
        self.fixed_outputs = {n: session.fixed[n] for n in g.outputs if n in session.fixed}
        computed = {r.name for s in self.steps for r in s.op.results}
        self.output_slots = {n: i for i, n in enumerate(dict.fromkeys(n for n in g.outputs if n in computed))}
        last_use: dict[str, int] = {}
        for i, s in enumerate(self.steps):
            for o in s.op.operands:
                last_use[o] = i
        intervals = []
        for i, s in enumerate(self.steps):
            for r in s.op.results:
                if r.name not in self.output_slots:
                    nbytes = int(np.prod(r.type.storage_shape)) * r.type.storage_np_dtype.itemsize
                    intervals.append(Interval(r.name, nbytes, i, last_use.get(r.name, i)))
        self.plan = plan(intervals)
        self.arena = np.zeros(max(self.plan.size, 64), np.uint8)
        self.status = np.zeros(max(len(self.steps), 1), np.int64)
        self.use_gomp = gomp_available()
        self._emit_entry(ctx)
        seal_loops(ctx.module)
        self.ir_text = str(ctx.module)
        self.module = self._compile(cache_dir, jit)
        self._weight_ptrs = _pointer_array(self.weights)
        self._lock = threading.Lock()  # one arena: calls from several Python threads take turns
        if not jit:
            return
        self.entry = self.module.function(ENTRY, ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * 5), ctypes.c_int32))
        for s in self.steps:
            n = len(s.op.operands) + len(s.op.results) + (1 if s.spec.has_status else 0)
            s.fn = self.module.function(s.spec.fn.name, ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * n),
                                                                         ctypes.c_int64, ctypes.c_int64))

    # -- compiling, and surviving LLVM ---------------------------------------------------------------------
    def _compile(self, cache_dir, jit: bool) -> Module:
        """The module, compiled in the compiler child. When LLVM aborts there, find the step whose kernel it
        aborts on, then try the module again without loop vectorisation: on success warn (op, kernel, LLVM's
        message), else raise a LadderError naming them."""
        try:
            return Module.compile(self.ir_text, self.target, cache_dir, jit=jit)
        except CompilerCrash as crash:
            message = crash.message
        step, alone = self._find_crashing_step()
        where = self._describe(step)
        cpu = f"{self.target.name} ({self.target.cpu_name})"
        try:
            module = Module.compile(self.ir_text, self.target, cache_dir, jit=jit, loop_vectorize=False)
        except CompilerCrash as again:
            raise LadderError(f"LLVM crashed compiling {where} for {cpu}, also without loop vectorisation: "
                              f"{again.message}", step.op.loc if step else None) from None
        warnings.warn(f"LLVM crashed compiling {where} for {cpu}: {alone or message}; the module was compiled "
                      f"again without loop vectorisation", CompilerWarning, stacklevel=4)
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
    def _emit_entry(self, ctx: KernelContext) -> None:
        mod = ctx.module
        fn = ir.Function(mod, ir.FunctionType(VOID, [PTR] * 5 + [I32]), ENTRY)
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

        for i, s in enumerate(self.steps):
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
        """Store the kernel's pointers in a frame and run a trampoline on every thread of libgomp's pool."""
        mod = ctx.module
        gomp = ctx.declare("GOMP_parallel", VOID, [PTR, PTR, I32, I32])
        tid_fn = ctx.declare("omp_get_thread_num", I32, [])
        nth_fn = ctx.declare("omp_get_num_threads", I32, [])
        tramp = ir.Function(mod, ir.FunctionType(VOID, [PTR]), ctx.unique(f"par_{s.spec.fn.name}"))
        tb = ir.IRBuilder(tramp.append_basic_block("entry"))
        frame = tramp.args[0]
        args = [tb.load(tb.gep(frame, [ir.Constant(I64, j)], source_etype=PTR), typ=PTR) for j in range(len(ptrs))]
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
        frame_ptr = b.alloca(PTR, size=len(ptrs))
        for j, p in enumerate(ptrs):
            b.store(p, b.gep(frame_ptr, [ir.Constant(I64, j)], source_etype=PTR))
        b.call(gomp, [tramp, frame_ptr, nthreads, ir.Constant(I32, 0)])

    # -- running ---------------------------------------------------------------------------------------------
    def run(self, inputs, *, threads: int | None = None) -> dict[str, np.ndarray]:
        with self._lock:
            return self._run(inputs, threads)

    def _run(self, inputs, threads: int | None) -> dict[str, np.ndarray]:
        bound = bind_inputs(self.graph, inputs)
        ins = [np.ascontiguousarray(bound[n]) for n in self.input_names]
        outs = {n: np.empty(self.graph.type_of(n).storage_shape, self.graph.type_of(n).storage_np_dtype)
                for n in self.output_slots}
        self.status[:] = 0
        # the pointer arrays must outlive the call: keep them in locals, never as temporaries
        in_ptrs, out_ptrs = _pointer_array(ins), _pointer_array(list(outs.values()))
        self.entry(in_ptrs.ctypes.data, out_ptrs.ctypes.data, self._weight_ptrs.ctypes.data,
                   self.arena.ctypes.data, self.status.ctypes.data, int(threads or self.threads))
        bad = np.flatnonzero(self.status)
        if bad.size:
            s = self.steps[int(bad[0])]
            code = int(self.status[bad[0]])
            raise RuntimeFailure(f"{s.op.describe()}: {s.spec.errors.get(code, f'error code {code}')}", s.op.loc)
        result = {}
        for n in self.graph.outputs:
            if n in outs:
                result[n] = outs[n]
            elif n in self.fixed_outputs:
                result[n] = self.fixed_outputs[n].copy()
            else:
                result[n] = bound[n].copy()
        return result

    __call__ = run

    def time_steps(self, inputs, repeat: int = 5, threads: int = 1) -> tuple[list[float], float]:
        """A profile of one call: the seconds of each step's kernel, called alone over its whole range on this
        thread, in order, on the buffers the entry gives it, less the cost of a ctypes call (the same call over
        an empty range); and the seconds of the entry itself at ``threads``. Medians of ``repeat`` runs."""
        bound = bind_inputs(self.graph, inputs)
        ins = {n: np.ascontiguousarray(bound[n]) for n in self.input_names}
        outs = {n: np.empty(self.graph.type_of(n).storage_shape, self.graph.type_of(n).storage_np_dtype)
                for n in self.output_slots}
        index_w = {n: i for i, n in enumerate(self.weight_names)}

        def address(name: str) -> int:  # as _emit_entry's pointer()
            if name in outs:
                return outs[name].ctypes.data
            if name in ins:
                return ins[name].ctypes.data
            if name in index_w:
                return self.weights[index_w[name]].ctypes.data
            return self.arena.ctypes.data + self.plan.offsets[name]

        calls = []
        for i, s in enumerate(self.steps):
            args = [address(o) for o in s.op.operands] + [address(r.name) for r in s.op.results]
            if s.spec.has_status:
                args.append(self.status.ctypes.data + 8 * i)
            calls.append(args)
        in_ptrs, out_ptrs = _pointer_array(list(ins.values())), _pointer_array(list(outs.values()))
        kernel, entry = np.zeros((repeat, len(self.steps))), np.zeros(repeat)
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
                self.entry(in_ptrs.ctypes.data, out_ptrs.ctypes.data, self._weight_ptrs.ctypes.data,
                           self.arena.ctypes.data, self.status.ctypes.data, threads)
                entry[r] = time.perf_counter() - t0
            self.status[:] = 0
        return [float(t) for t in np.median(kernel, axis=0)], float(np.median(entry))

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
            "#endif", "",
        ]
        return "\n".join(lines)


def _load_slot(b: ir.IRBuilder, array, index: int):
    return b.load(b.gep(array, [ir.Constant(I64, index)], source_etype=PTR), typ=PTR)


def _pointer_array(arrays) -> np.ndarray:
    out = np.zeros(max(len(arrays), 1), np.uintp)
    for i, a in enumerate(arrays):
        out[i] = a.ctypes.data
    return out


def compile_graph(graph: Graph, weights: Mapping[str, np.ndarray] | None = None, target: str | Target = "cpu",
                  pipeline: str | None = None, threads: int | None = None, cache_dir=None,
                  jit: bool = True, memory_budget=None) -> CompiledGraph:
    """``cache_dir``: where compiled machine code is kept between runs (None: not kept). ``jit=False``
    builds the module for writing ahead of time only (any cpu level, not necessarily this machine's).
    ``memory_budget``: see ladder.budget."""
    return CompiledGraph(graph, weights, get_target(target), pipeline, threads, cache_dir, jit, memory_budget)
