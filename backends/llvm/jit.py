"""LLVM through the current llvmlite API: target machine for a ladder Target, the new pass manager, MCJIT.

    module = Module.compile(ir_text, target)     # parse, verify, optimise (O3) for the target's CPU
    fn = module.function("kernel", ctypes.CFUNCTYPE(...))    # callable; keeps the module alive

A Module owns its execution engine; functions stay valid while it lives. No global mutable state beyond
LLVM's one-time target initialisation.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import llvmlite.binding as llvm

from ladder.errors import LadderError
from ladder.target import Target

_INIT_LOCK = threading.Lock()
_INITIALISED = False


def _init() -> None:
    global _INITIALISED
    with _INIT_LOCK:
        if not _INITIALISED:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _INITIALISED = True


def target_machine(target: Target, opt: int = 3) -> "llvm.TargetMachine":
    """A TargetMachine for the host triple with the target's CPU name and features."""
    _init()
    triple = llvm.get_process_triple()
    t = llvm.Target.from_triple(triple)
    return t.create_target_machine(cpu=target.cpu_name, features=target.cpu_features, opt=opt,
                                   reloc="pic", codemodel="jitdefault")


def optimise(mod: "llvm.ModuleRef", tm: "llvm.TargetMachine", speed: int = 3) -> None:
    """The new pass manager's default O<speed> pipeline, with loop and SLP vectorisation."""
    pto = llvm.create_pipeline_tuning_options(speed_level=speed)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    mpm = pb.getModulePassManager()
    mpm.run(mod, pb)


@dataclass
class Module:
    """A compiled LLVM module: its optimised IR, the engine that runs it, and the target it was built for."""

    target: Target
    tm: "llvm.TargetMachine"
    ref: "llvm.ModuleRef"
    engine: "llvm.ExecutionEngine"
    from_cache: bool = False

    @staticmethod
    def compile(ir_text: str, target: Target, cache_dir: str | os.PathLike | None = None,
                jit: bool = True) -> "Module":
        """Parse, optimise and JIT ``ir_text``. With ``cache_dir``, the machine code is kept on disk keyed by
        a hash of the IR, the target and the ladder and llvmlite versions, and reused (no optimisation or
        code generation) when the same module is compiled again. Without ``jit`` the module is only optimised
        (for writing it ahead of time, possibly for a CPU other than this one)."""
        _init()
        try:
            mod = llvm.parse_assembly(ir_text)
            mod.verify()
        except RuntimeError as e:  # generated IR that LLVM rejects is a bug in a kernel generator
            raise LadderError(f"internal: LLVM rejected generated IR: {e}") from None
        tm = target_machine(target)
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
        if not jit:
            optimise(mod, tm)
            return Module(target, tm, mod, None)
        cache = ObjectCache(cache_dir, ir_text, target) if cache_dir is not None else None
        cached = cache.load() if cache is not None else None
        if cached is None:
            optimise(mod, tm)
        engine = llvm.create_mcjit_compiler(mod, tm)
        if cache is not None:
            engine.set_object_cache(notify_func=lambda m, data: cache.store(data) if cached is None else None,
                                    getbuffer_func=lambda m: cached)
        engine.finalize_object()
        engine.run_static_constructors()
        return Module(target, tm, mod, engine, from_cache=cached is not None)

    def function(self, name: str, ctype) -> "Function":
        if self.engine is None:
            raise LadderError("this module was compiled ahead of time only; it cannot run here")
        addr = self.engine.get_function_address(name)
        if not addr:
            raise LadderError(f"internal: no function '{name}' in the compiled module")
        return Function(self, name, ctype(addr))

    def ir(self) -> str:
        return str(self.ref)

    def asm(self) -> str:
        return self.tm.emit_assembly(self.ref)


class ObjectCache:
    """One compiled object on disk: ``<key>.o`` holding a header (magic, length, sha256 of the payload) and
    the payload. Written to a temporary file and renamed into place, so a crash mid-write never leaves an
    entry that loads; an entry whose length or checksum does not match is ignored (and recompiled)."""

    MAGIC = b"LADDEROBJ1"

    def __init__(self, folder, ir_text: str, target: Target):
        import llvmlite

        from ladder import __version__

        h = hashlib.sha256()
        for part in (ir_text, target.name, target.cpu_name, target.cpu_features, __version__, llvmlite.__version__):
            h.update(part.encode())
            h.update(b"\0")
        self.folder = Path(folder)
        self.path = self.folder / f"{h.hexdigest()}.o"

    def load(self) -> bytes | None:
        try:
            blob = self.path.read_bytes()
        except OSError:
            return None
        head = len(self.MAGIC) + 8 + 32
        if len(blob) < head or not blob.startswith(self.MAGIC):
            return None
        n = int.from_bytes(blob[len(self.MAGIC):len(self.MAGIC) + 8], "little")
        digest, payload = blob[len(self.MAGIC) + 8:head], blob[head:]
        if len(payload) != n or hashlib.sha256(payload).digest() != digest:
            return None
        return payload

    def store(self, data: bytes) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            blob = self.MAGIC + len(data).to_bytes(8, "little") + hashlib.sha256(data).digest() + data
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, self.path)
        except OSError:
            pass  # a cache that cannot be written only costs the next compile its time


@dataclass(frozen=True)
class Function:
    """A compiled function. It holds its Module: the machine code lives as long as the engine does."""

    module: Module
    name: str
    cfunc: object

    def __call__(self, *args):
        return self.cfunc(*args)
