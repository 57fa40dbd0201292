"""Kernel generation: one LLVM function per op, specialised to the op's static shapes and attributes.

A lowering is registered per op kind with ``@lowers("relu", "relu2", ...)``; it receives a ``KernelContext``
and the op with its operand and result types, and returns a ``KernelSpec``: an LLVM function

    void NAME(ptr operand0, ..., ptr result0, ..., i64 begin, i64 end)

that computes work items [begin, end) of ``work`` independent items (rows of a matmul, outer elements of an
element-wise op, ...). Every pointer is the op's tensor in its storage form (``TensorType.storage_shape``,
``storage_np_dtype``: packed tensors are their uint8 bytes; i4/u4/i2/u2/u1/i1/ternary/nf4/fp4/fp8 one byte
per element, as numpy holds them). Calling it over [0, work) in any split computes the op exactly once.

A kernel that can meet bad data at run time (an index out of range, a cache position past the end) is made
with ``status=True``: it gets one more pointer, to an i64 status that starts at 0, and stores a non-zero
code into it (``report``) instead of reading or writing out of bounds; the driver then raises a
RuntimeFailure with the op's location and ``KernelSpec.errors[code]``. Generated code never reads or writes
outside its buffers.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
from llvmlite import ir

from ladder.errors import LadderError
from ladder.ir import Op
from ladder.target import Target
from ladder.types import DType, TensorType

I1, I8, I16, I32, I64 = (ir.IntType(n) for n in (1, 8, 16, 32, 64))
F16, F32, F64 = ir.HalfType(), ir.FloatType(), ir.DoubleType()
PTR = ir.PointerType()
VOID = ir.VoidType()


@dataclass
class KernelSpec:
    fn: ir.Function
    work: int  # independent work items; the kernel computes [begin, end)
    grain: int = 1  # split points are multiples of this
    errors: dict[int, str] | None = None  # status code -> message, for kernels made with status=True

    @property
    def has_status(self) -> bool:
        return self.errors is not None


Lowering = Callable[["KernelContext", Op, Sequence[TensorType], Sequence[TensorType]], KernelSpec]
LOWERINGS: dict[str, Lowering] = {}


def lowers(*kinds: str):
    def deco(fn: Lowering) -> Lowering:
        for k in kinds:
            if k in LOWERINGS:
                raise AssertionError(f"two lowerings for {k}")
            LOWERINGS[k] = fn
        return fn

    return deco


class KernelModule(ir.Module):
    """An LLVM module that knows the vector width its loops are planned for (see ``for_range``)."""

    def __init__(self, name: str, vector_bits: int):
        super().__init__(name=name)
        self.vector_bits = vector_bits


class KernelContext:
    """The module kernels are generated into, the target they are for, and small IR helpers."""

    def __init__(self, target: Target, name: str = "ladder"):
        self.target = target
        self.module = KernelModule(name, target.vector_bits)
        self._names: set[str] = set()

    # -- functions -----------------------------------------------------------------------------------
    def kernel(self, hint: str, n_ptrs: int, status: bool = False
               ) -> tuple[ir.Function, ir.IRBuilder, list, ir.Argument, ir.Argument]:
        """A new kernel function ``void(ptr x n_ptrs [, ptr status], i64 begin, i64 end)``; returns (fn, builder
        at its entry, pointer args (the status pointer last when asked for), begin, end). Pointers are marked
        noalias (results never alias operands)."""
        name = self.unique(hint)
        n_ptrs += 1 if status else 0
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR] * n_ptrs + [I64, I64]), name)
        ptrs = list(fn.args[:n_ptrs])
        for i, p in enumerate(ptrs):
            p.name = f"p{i}"
            p.attributes.add("noalias")
        begin, end = fn.args[n_ptrs:]
        begin.name, end.name = "begin", "end"
        return fn, ir.IRBuilder(fn.append_basic_block("entry")), ptrs, begin, end

    def unique(self, hint: str) -> str:
        base = "k_" + "".join(c if c.isalnum() else "_" for c in hint)
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def declare(self, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
        """An external or intrinsic function, declared once per module."""
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        return ir.Function(self.module, ir.FunctionType(ret, list(args)), name)

    def math_f32(self, name: str) -> ir.Function:
        """A float -> float function of libm (expf, tanhf, erff, ...), resolved from the process at JIT time."""
        return self.declare(name, F32, [F32])


def entry_alloca(b: ir.IRBuilder, typ: ir.Type, size: int | None = None):
    """A stack slot in the function's entry block (so loops do not grow the stack, and mem2reg can promote
    it); ``b`` goes on at the end of the block it was filling."""
    entry = b.function.entry_basic_block
    with b.goto_block(entry):
        b.position_at_start(entry)
        slot = b.alloca(typ, size=None if size is None else ir.Constant(ir.IntType(64), int(size)))
    return slot


def report(b: ir.IRBuilder, status_ptr, code: int) -> None:
    """Record a run-time error (code > 0) for the driver; the kernel goes on without touching memory."""
    b.store(ir.Constant(I64, code), status_ptr)


@contextmanager
def for_range(b: ir.IRBuilder, start, stop, step: int = 1, name: str = "i",
              vectorize: bool = True) -> Iterator[ir.Value]:
    """``for (i = start; i < stop; i += step)``; the body is emitted inside the ``with`` block.

    Every loop ladder emits carries its own vectorisation decision (``plan_loop``), so LLVM's loop vectorizer
    never compares candidate widths by cost: that comparison is where LLVM 22 (built with assertions) aborts
    the process ("VPlan cost model and legacy cost model disagreed"). With ``vectorize=False`` the loop is
    never vectorised: loops over work items whose bodies hold their own loops, and loops of explicit vectors."""
    start = _i64(start)
    stop = _i64(stop)
    fn = b.function
    head = fn.append_basic_block(f"{name}.head")
    body = fn.append_basic_block(f"{name}.body")
    done = fn.append_basic_block(f"{name}.done")
    pre = b.block
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, stop), body, done)
    b.position_at_end(body)
    yield i
    nxt = b.add(i, ir.Constant(I64, step))
    i.add_incoming(nxt, b.block)
    width = 1
    if vectorize:  # planned before the back edge exists: a back edge inside the body means an inner loop
        blocks = [blk for blk in fn.blocks[fn.blocks.index(head):] if blk is not done]
        trips = None
        if isinstance(start, ir.Constant) and isinstance(stop, ir.Constant):
            trips = max(0, -(-(stop.constant - start.constant) // step))
        width = plan_loop(blocks, getattr(b.module, "vector_bits", 128), trips)
    b.branch(head).set_metadata("llvm.loop", loop_md(b.module, width))
    b.position_at_end(done)


_FLOATS = (ir.HalfType, ir.FloatType, ir.DoubleType)


def _bits(t: ir.Type) -> int:
    if isinstance(t, ir.IntType):
        return t.width if t.width > 1 else 0
    return {ir.HalfType: 16, ir.FloatType: 32, ir.DoubleType: 64}.get(type(t), 64)


_ORDER_FREE = ("llvm.maxnum.", "llvm.minnum.", "llvm.maximum.", "llvm.minimum.")


def _order_free(value) -> bool:
    """A float reduction step whose result does not depend on the order of the elements."""
    return isinstance(value, ir.CallInstr) and value.callee.name.startswith(_ORDER_FREE)


def plan_loop(blocks: Sequence[ir.Block], vector_bits: int, trips: int | None = None) -> int:
    """The vector width a scalar loop is forced to (1: not vectorised), from its body's instructions:

    * a body of explicit vectors, or holding a loop of its own (an outer loop), stays as written;
    * a float carried from one iteration to the next (a sum kept in a stack slot) stays scalar: a forced
      width licenses LLVM to reassociate the sum, and ladder sums in numpy's order (a min/max, whose order
      does not matter, is vectorised);
    * a call to a library function (expf, ...) stays scalar: it would only be scalarised again;
    * otherwise one vector register of the widest element the body loads or stores, at most the trip count.
    """
    index = {id(blk): k for k, blk in enumerate(blocks)}
    widest = 0
    for k, blk in enumerate(blocks):
        for ins in blk.instructions:
            if isinstance(ins.type, ir.VectorType) or any(isinstance(getattr(o, "type", None), ir.VectorType)
                                                          for o in ins.operands):
                return 1
            if "llvm.loop" in ins.metadata:
                return 1
            if isinstance(ins, (ir.Branch, ir.ConditionalBranch)) and any(
                    index.get(id(t), len(blocks)) <= k for t in ins.operands if isinstance(t, ir.Block)):
                return 1  # a back edge of a loop built by hand inside this one
            if isinstance(ins, ir.CallInstr) and not ins.callee.name.startswith("llvm."):
                return 1
            if isinstance(ins, ir.StoreInstr):
                value, ptr = ins.operands
                if isinstance(ptr, ir.AllocaInstr):
                    if isinstance(value.type, _FLOATS) and not _order_free(value):
                        return 1
                    continue
                widest = max(widest, _bits(value.type))
            elif isinstance(ins, ir.LoadInstr) and not isinstance(ins.operands[0], ir.AllocaInstr):
                widest = max(widest, _bits(ins.type))
    if not widest:
        return 1
    width = min(64, max(1, vector_bits // widest))
    if trips is not None:
        while width > 1 and width > trips:
            width //= 2
    return width if width >= 2 else 1


def loop_md(module: ir.Module, width: int):
    """A fresh loop ID: ``!{self, vectorize.width = width, vectorize.enable = true}``, or ``!{self,
    vectorize.enable = false}`` for width 1. A loop ID refers to itself; llvmlite has no such node, so a
    unique placeholder operand is replaced after creation."""
    def opt(key, value):
        return module.add_metadata([ir.MetaDataString(module, key), value])

    if width >= 2:
        opts = [opt("llvm.loop.vectorize.width", ir.Constant(I32, width)),
                opt("llvm.loop.vectorize.enable", ir.Constant(I1, 1))]
    else:
        opts = [opt("llvm.loop.vectorize.enable", ir.Constant(I1, 0))]
    node = module.add_metadata([ir.MetaDataString(module, f"ladder.loop.{len(module.metadata)}")])
    node.operands = (node, *opts)
    return node


def seal_loops(module: ir.Module) -> int:
    """Give every loop back edge still without a loop ID (loops built by hand) ``vectorize.enable = false``,
    so that no loop of the module is left to LLVM's width comparison. Returns how many were sealed."""
    sealed = 0
    for fn in module.functions:
        order = {id(blk): k for k, blk in enumerate(fn.blocks)}
        for k, blk in enumerate(fn.blocks):
            term = blk.terminator
            if not isinstance(term, (ir.Branch, ir.ConditionalBranch)) or "llvm.loop" in term.metadata:
                continue
            if any(isinstance(t, ir.Block) and order.get(id(t), k + 1) <= k for t in term.operands):
                term.set_metadata("llvm.loop", loop_md(module, 1))
                sealed += 1
    return sealed


def _i64(v):
    return ir.Constant(I64, v) if isinstance(v, int) else v


def const_i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def elem_ptr(b: ir.IRBuilder, base, index, etype: ir.Type):
    return b.gep(base, [_i64(index)], source_etype=etype)


# -- element types --------------------------------------------------------------------------------------

def storage_type(dt: DType) -> ir.Type:
    """The LLVM type of one element as numpy holds it (sub-byte types take a byte). f16 is handled as its
    16 bits: LLVM's fpext/fptrunc on half become calls to __extendhfsf2/__truncsfhf2 on targets without
    F16C (cpu:generic), which the JIT cannot resolve, so conversions are done in integer arithmetic."""
    if dt.name == "f32":
        return F32
    if dt.name in ("f16", "bf16", "i16"):
        return I16
    if dt.name == "i32":
        return I32
    return I8


def load_f32(b: ir.IRBuilder, ptr, dt: DType, ctx: KernelContext | None = None) -> ir.Value:
    """Load one element of type dt and convert its value to f32 (exactly, for every type but i32 beyond 2^24,
    which rounds to nearest as numpy does)."""
    v = b.load(ptr, typ=storage_type(dt))
    return to_f32(b, v, dt)


def has_f16c(target: Target) -> bool:
    """Whether the target converts f16 <-> f32 in one instruction (F16C; every AVX-512 CPU has it)."""
    feats = target.features()
    return "f16c" in feats or "avx512f" in feats


def stored_to_f32(b: ir.IRBuilder, v: ir.Value, dt: DType, f16c: bool) -> ir.Value:
    """``to_f32``, with an f16 converted by one instruction where the target has F16C (``has_f16c``): exact
    either way; only a signalling NaN comes out quieted."""
    if dt.name == "f16" and f16c:
        return b.fpext(b.bitcast(v, ir.HalfType()), F32)
    return to_f32(b, v, dt)


def to_f32(b: ir.IRBuilder, v: ir.Value, dt: DType) -> ir.Value:
    name = dt.name
    if name == "f32":
        return v
    if name == "f16":
        return half_to_f32(b, v)
    if name == "bf16":
        return b.bitcast(b.shl(b.zext(v, I32), ir.Constant(I32, 16)), F32)
    if name in ("fp8e4m3", "fp4", "nf4"):
        return _table_lookup_f32(b, v, dt)
    if dt.kind == "int" and dt.bits < 8:
        # ml_dtypes keeps an int4/int2 in the low bits of its byte (-3 as 0x0D): sign-extend from there
        sh = ir.Constant(I8, 8 - dt.bits)
        return b.sitofp(b.ashr(b.shl(v, sh), sh), F32)
    if dt.kind == "uint":
        if dt.bits < 8:
            v = b.and_(v, ir.Constant(I8, (1 << dt.bits) - 1))
        return b.uitofp(v, F32)
    return b.sitofp(v, F32)  # i32 i16 i8, and i1/ternary held as int8 values


def _table_lookup_f32(b: ir.IRBuilder, code: ir.Value, dt: DType) -> ir.Value:
    """Types decoded through their code table: a constant array indexed by the byte (fp4 uses its low 4 bits)."""
    module = b.module
    gname = f"ladder.table.{dt.name}"
    table = module.globals.get(gname)
    if table is None:
        vals = [float(v) for v in dt.table]
        arr_t = ir.ArrayType(F32, len(vals))
        table = ir.GlobalVariable(module, arr_t, gname)
        table.global_constant = True
        table.linkage = "internal"
        table.initializer = ir.Constant(arr_t, vals)
    idx = b.zext(b.and_(code, ir.Constant(I8, len(dt.table) - 1)) if len(dt.table) < 256 else code, I64)
    return b.load(b.gep(table, [ir.Constant(I64, 0), idx], source_etype=table.value_type), typ=F32)


def from_f32(b: ir.IRBuilder, v: ir.Value, dt: DType) -> ir.Value:
    """f32 -> the storage of a float type dt (round to nearest even). Integer results go through cast."""
    if dt.name == "f32":
        return v
    if dt.name == "f16":
        return f32_to_half(b, v)
    if dt.name == "bf16":
        bits = b.bitcast(v, I32)
        # round to nearest even on the upper 16 bits; a NaN becomes sign | 0x7fc0, as ml_dtypes does
        lsb = b.and_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 1))
        rounded = b.add(bits, b.add(ir.Constant(I32, 0x7FFF), lsb))
        is_nan = b.fcmp_unordered("uno", v, v)
        nan = b.or_(b.and_(bits, ir.Constant(I32, -0x80000000)), ir.Constant(I32, 0x7FC00000))  # as ml_dtypes
        return b.trunc(b.lshr(b.select(is_nan, nan, rounded), ir.Constant(I32, 16)), I16)
    raise LadderError(f"internal: no f32 -> {dt} conversion in the LLVM backend")


def C64(v) -> ir.Constant:
    """An i64 constant (the lowerings' one set of constant helpers)."""
    return ir.Constant(I64, int(v))


def C32(v) -> ir.Constant:
    """An i32 constant."""
    return ir.Constant(I32, int(v))


def F32C(v) -> ir.Constant:
    """An f32 constant, rounded to f32 first as numpy would."""
    return ir.Constant(F32, float(np.float32(v)))


def half_to_f32(b: ir.IRBuilder, h: ir.Value) -> ir.Value:
    """f16 bits (i16) -> f32, exactly as numpy's npy_halfbits_to_floatbits: subnormals exact, a NaN's payload
    kept (not quieted), in integer arithmetic."""
    h = b.zext(h, I32)
    sign = b.shl(b.and_(h, C32(0x8000)), C32(16))
    e = b.and_(h, C32(0x7C00))
    m = b.and_(h, C32(0x3FF))
    normal = b.add(b.shl(b.and_(h, C32(0x7FFF)), C32(13)), C32(112 << 23))
    special = b.or_(b.shl(m, C32(13)), C32(0x7F800000))
    sub = b.bitcast(b.fmul(b.uitofp(m, F32), ir.Constant(F32, 2.0 ** -24)), I32)
    mag = b.select(b.icmp_unsigned("==", e, C32(0)), sub,
                   b.select(b.icmp_unsigned("==", e, C32(0x7C00)), special, normal))
    return b.bitcast(b.or_(sign, mag), F32)


def f32_to_half(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """f32 -> f16 bits (i16), round to nearest even (NaN -> quiet NaN, overflow -> inf)."""
    u = b.bitcast(v, I32)
    sign = b.and_(u, C32(0x80000000 - (1 << 32)))
    u = b.xor(u, sign)
    big = b.select(b.icmp_unsigned(">", u, C32(255 << 23)), C32(0x7E00), C32(0x7C00))
    magic = b.bitcast(C32(((127 - 15) + (23 - 10) + 1) << 23), F32)
    small = b.sub(b.bitcast(b.fadd(b.bitcast(u, F32), magic), I32), C32(((127 - 15) + (23 - 10) + 1) << 23))
    odd = b.and_(b.lshr(u, C32(13)), C32(1))
    norm = b.lshr(b.add(b.add(u, C32(((15 - 127) << 23) + 0xFFF)), odd), C32(13))
    o = b.select(b.icmp_unsigned(">=", u, C32((127 + 16) << 23)), big,
                 b.select(b.icmp_unsigned("<", u, C32(113 << 23)), small, norm))
    return b.trunc(b.or_(o, b.lshr(sign, C32(16))), I16)


def store_f32(b: ir.IRBuilder, v: ir.Value, ptr, dt: DType) -> None:
    b.store(from_f32(b, v, dt), ptr)
