"""LLVM through the current llvmlite API: target machine for a ladder Target, the new pass manager, MCJIT.

    module = Module.compile(ir_text, target)     # parse, verify, optimise (O3) for the target's CPU
    fn = module.function("kernel", ctypes.CFUNCTYPE(...))    # callable; keeps the module alive

A Module owns its execution engine; functions stay valid while it lives. No global mutable state beyond
LLVM's one-time target initialisation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

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

    @staticmethod
    def compile(ir_text: str, target: Target) -> "Module":
        _init()
        try:
            mod = llvm.parse_assembly(ir_text)
            mod.verify()
        except RuntimeError as e:  # generated IR that LLVM rejects is a bug in a kernel generator
            raise LadderError(f"internal: LLVM rejected generated IR: {e}") from None
        tm = target_machine(target)
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
        optimise(mod, tm)
        engine = llvm.create_mcjit_compiler(mod, tm)
        engine.finalize_object()
        engine.run_static_constructors()
        return Module(target, tm, mod, engine)

    def function(self, name: str, ctype) -> "Function":
        addr = self.engine.get_function_address(name)
        if not addr:
            raise LadderError(f"internal: no function '{name}' in the compiled module")
        return Function(self, name, ctype(addr))

    def ir(self) -> str:
        return str(self.ref)

    def asm(self) -> str:
        return self.tm.emit_assembly(self.ref)


@dataclass(frozen=True)
class Function:
    """A compiled function. It holds its Module: the machine code lives as long as the engine does."""

    module: Module
    name: str
    cfunc: object

    def __call__(self, *args):
        return self.cfunc(*args)
