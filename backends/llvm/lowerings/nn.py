"""Lowerings: nn ops (softmax, rmsnorm, layernorm, reduce, rope, attention) and quantize / dequant.

Numerics, against the reference (ladder.ops.nn, ladder.ops.linalg, ladder.quant):

* Sums that numpy computes with its pairwise summation (a reduction along the memory-contiguous axis) call
  ``ladder.pw.*``, a transcription of numpy's ``pairwise_sum`` (blocks of <= 128 with eight accumulators,
  halves split at multiples of 8); sums numpy accumulates element-wise (a strided reduction axis) run
  sequentially in f32. With the same float32 operations in the same order the norms and the absmean scale
  come out as numpy's; the quantize codes are bit-exact.
* softmax / attention use libm ``expf`` (numpy has its own exp), attention sums its dot products in any
  order (``reassoc``, vectorised) and skips masked keys: results agree within float32 rounding.
* rope computes angles, cos/sin and the rotation in float64 like the reference, then rounds once to f32.
"""

from __future__ import annotations

import math
from contextlib import ExitStack

import numpy as np
from llvmlite import ir

from ladder.backends.llvm.codegen import (C32, C64, F32, F32C, F64, I8, I32, I64, PTR, KernelSpec, elem_ptr,
                                          entry_alloca, for_range, from_f32, has_f16c, lowers, report, storage_type,
                                          stored_to_f32, to_f32)
from ladder.ops import OPS
from ladder.ops.base import norm_axis
from ladder.types import dtype as _dtype

EPS = float(np.float32(1e-5))  # ladder.quant.EPS
FAST = ("reassoc", "contract")


# -- small helpers -------------------------------------------------------------------------------------

def _attrs(op):
    return OPS[op.kind].full_attrs(op.attr)


def _split(shape, axis) -> tuple[int, int, int]:
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def _var(b: ir.IRBuilder, ty, init=None, size=None):
    """A stack slot allocated in the entry block (promoted to a register by mem2reg)."""
    slot = entry_alloca(b, ty, size)
    if init is not None:
        b.store(init, slot)
    return slot


def _intr(ctx, name: str, n: int = 1, ty=F32):
    return ctx.declare(name, ty, [ty] * n)


def _load(b, ptr, idx, dt):
    st = storage_type(dt)
    return to_f32(b, b.load(elem_ptr(b, ptr, idx, st), typ=st), dt)


def _load_fast(b, ptr, idx, dt, f16c: bool):
    """``_load`` through ``stored_to_f32``: an f16 element in one instruction where the target has F16C."""
    st = storage_type(dt)
    return stored_to_f32(b, b.load(elem_ptr(b, ptr, idx, st), typ=st), dt, f16c)


def _store(b, v, ptr, idx, dt):
    b.store(from_f32(b, v, dt), elem_ptr(b, ptr, idx, storage_type(dt)))


def _load_int64(b, ptr, idx, dt):
    st = storage_type(dt)
    v = b.load(elem_ptr(b, ptr, idx, st), typ=st)
    if st == I64:
        return v
    return b.zext(v, I64) if dt.kind == "uint" else b.sext(v, I64)


def _is_nan(b, v):
    return b.fcmp_unordered("uno", v, v)


def _max_nan(b, acc, v):
    """np.maximum: NaN wins."""
    return b.select(b.or_(_is_nan(b, v), b.fcmp_ordered(">", v, acc)), v, acc)


def _finite(ctx, b, v):
    return b.fcmp_ordered("<", b.call(_intr(ctx, "llvm.fabs.f32"), [v]), F32C(np.inf))


def _div_count(b, total, n):
    """f32 total / integer count, divided in f64 and rounded once (numpy's mean / nanmean)."""
    nn = n if isinstance(n, ir.Value) else C64(n)
    return b.fptrunc(b.fdiv(b.fpext(total, F64), b.sitofp(nn, F64)), F32)


def _elem(ctx, b, how, x, p):
    """The element transform summed by a row sum."""
    if how == "id":
        return x
    if how == "sq":
        return b.fmul(x, x)
    if how == "dev2":
        d = b.fsub(x, p)
        return b.fmul(d, d)
    if how == "exp":
        return b.call(ctx.math_f32("expf"), [b.fsub(x, p)])
    if how == "absn":  # |x| with NaN read as 0 (nanmean)
        a = b.call(_intr(ctx, "llvm.fabs.f32"), [x])
        return b.select(_is_nan(b, a), F32C(0), a)
    raise AssertionError(how)


def _pairwise_fn(ctx, dt, how):
    """float f(ptr row, i64 off, i64 n, i64 stride, i64 valid, float p): numpy's pairwise_sum of
    elem(row[(off + i) * stride]) for i < n; elements at row index >= valid (a partial group's padding) read
    as 0 and are never loaded."""
    name = f"ladder.pw.{dt.name}.{how}"
    fn = ctx.module.globals.get(name)
    if fn is not None:
        return fn
    fn = ir.Function(ctx.module, ir.FunctionType(F32, [PTR, I64, I64, I64, I64, F32]), name)
    fn.linkage = "internal"
    row, off, n, stride, valid, p = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    def elem(i):
        k = b.add(off, i)
        ok = b.icmp_signed("<", k, valid)
        safe = b.select(ok, k, C64(0))
        x = _load(b, row, b.mul(safe, stride), dt)
        return b.select(ok, _elem(ctx, b, how, x, p), F32C(0))

    small, block, split = (fn.append_basic_block(s) for s in ("small", "block", "split"))
    notsmall = fn.append_basic_block("notsmall")
    b.cbranch(b.icmp_signed("<", n, C64(8)), small, notsmall)
    b.position_at_end(notsmall)
    b.cbranch(b.icmp_signed("<=", n, C64(128)), block, split)

    b.position_at_end(small)
    res = _var(b, F32, F32C(0))
    with for_range(b, 0, n) as i:
        b.store(b.fadd(b.load(res), elem(i)), res)
    b.ret(b.load(res))

    b.position_at_end(block)
    r = [_var(b, F32) for _ in range(8)]
    for j in range(8):
        b.store(elem(C64(j)), r[j])
    full = b.sub(n, b.srem(n, C64(8)))
    with for_range(b, 8, full, 8) as i:
        for j in range(8):
            b.store(b.fadd(b.load(r[j]), elem(b.add(i, C64(j)))), r[j])
    v = [b.load(s) for s in r]
    tree = b.fadd(b.fadd(b.fadd(v[0], v[1]), b.fadd(v[2], v[3])), b.fadd(b.fadd(v[4], v[5]), b.fadd(v[6], v[7])))
    res2 = _var(b, F32, tree)
    with for_range(b, full, n) as i:
        b.store(b.fadd(b.load(res2), elem(i)), res2)
    b.ret(b.load(res2))

    b.position_at_end(split)
    n2 = b.sdiv(n, C64(2))
    n2 = b.sub(n2, b.srem(n2, C64(8)))
    lo = b.call(fn, [row, off, n2, stride, valid, p])
    hi = b.call(fn, [row, b.add(off, n2), b.sub(n, n2), stride, valid, p])
    b.ret(b.fadd(lo, hi))
    return fn


def _row_sum(ctx, b, ptr, base, n, stride, dt, how, p=None, pairwise=True, valid=None):
    """Sum of elem(x[base + i * stride]) for i < n: numpy's pairwise order, or sequential (numpy's order for a
    strided reduction axis). Only pairwise sums support padding (valid < n)."""
    p = p if p is not None else F32C(0)
    row = elem_ptr(b, ptr, base, storage_type(dt))
    n = n if isinstance(n, ir.Value) else C64(n)
    if pairwise:
        valid = n if valid is None else valid
        return b.call(_pairwise_fn(ctx, dt, how), [row, C64(0), n, C64(stride), valid, p])
    acc = _var(b, F32, F32C(0))
    with for_range(b, 0, n, name="s") as i:
        x = _load(b, row, b.mul(i, C64(stride)), dt)
        b.store(b.fadd(b.load(acc), _elem(ctx, b, how, x, p)), acc)
    return b.load(acc)


# -- softmax ---------------------------------------------------------------------------------------------

@lowers("softmax")
def lower_softmax(ctx, op, ins, outs):
    (x,), (y,) = ins, outs
    axis = norm_axis(_attrs(op)["axis"], x.rank)
    outer, d, inner = _split(x.shape, axis)
    fn, b, (px, py), begin, end = ctx.kernel(f"softmax_{op.name}", 2)
    with for_range(b, begin, end, name="w") as w:
        base = b.add(b.mul(b.sdiv(w, C64(inner)), C64(d * inner)), b.srem(w, C64(inner)))
        m = _var(b, F32, F32C(-np.inf))
        with for_range(b, 0, d, name="j") as j:
            b.store(_max_nan(b, b.load(m), _load(b, px, b.add(base, b.mul(j, C64(inner))), x.dtype)), m)
        mv = b.load(m)
        shift = b.select(_finite(ctx, b, mv), mv, F32C(0))
        total = _row_sum(ctx, b, px, base, d, inner, x.dtype, "exp", shift, pairwise=inner == 1)
        with for_range(b, 0, d, name="j") as j:
            idx = b.add(base, b.mul(j, C64(inner)))
            e = _elem(ctx, b, "exp", _load(b, px, idx, x.dtype), shift)
            _store(b, b.fdiv(e, total), py, idx, y.dtype)
    b.ret_void()
    return KernelSpec(fn, outer * inner if d else 0)


# -- norms -----------------------------------------------------------------------------------------------

@lowers("rmsnorm", "layernorm")
def lower_norm(ctx, op, ins, outs):
    x, y = ins[0], outs[0]
    eps = F32C(_attrs(op)["eps"])
    n = x.shape[-1]
    rows = x.size // n if n else 0
    fn, b, ptrs, begin, end = ctx.kernel(f"{op.kind}_{op.name}", len(ins) + 1)
    px, extra, py = ptrs[0], ptrs[1:-1], ptrs[-1]
    sqrt = _intr(ctx, "llvm.sqrt.f32")
    with for_range(b, begin, end, name="r") as r:
        base = b.mul(r, C64(n))
        if op.kind == "rmsnorm":
            mu = None
            ms = _div_count(b, _row_sum(ctx, b, px, base, n, 1, x.dtype, "sq"), n)
        else:
            mu = _div_count(b, _row_sum(ctx, b, px, base, n, 1, x.dtype, "id"), n)
            ms = _div_count(b, _row_sum(ctx, b, px, base, n, 1, x.dtype, "dev2", mu), n)
        denom = b.call(sqrt, [b.fadd(ms, eps)])
        with for_range(b, 0, n, name="j") as j:
            idx = b.add(base, j)
            v = _load(b, px, idx, x.dtype)
            v = b.fdiv(v if mu is None else b.fsub(v, mu), denom)
            if len(extra) > 0:
                v = b.fmul(v, _load(b, extra[0], j, ins[1].dtype))
            if len(extra) > 1:
                v = b.fadd(v, _load(b, extra[1], j, ins[2].dtype))
            _store(b, v, py, idx, y.dtype)
    b.ret_void()
    return KernelSpec(fn, rows)


# -- reduce ----------------------------------------------------------------------------------------------

def _coalesce(shape, reduced):
    """[(size, stride, reduced)] with size-1 dims dropped and neighbours of one kind merged."""
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    dims = []
    for size, stride, red in zip(shape, strides, reduced):
        if size == 1:
            continue
        if dims and dims[-1][2] == red and dims[-1][1] == size * stride:
            dims[-1] = (dims[-1][0] * size, stride, red)
        else:
            dims.append((size, stride, red))
    return dims


def _offset(b, idx, dims):
    """Flat index over dims [(size, stride)] (row-major) -> sum of index_i * stride_i."""
    off = C64(0)
    for size, stride in reversed(dims):
        off = b.add(off, b.mul(b.srem(idx, C64(size)), C64(stride)))
        idx = b.sdiv(idx, C64(size))
    return off


@lowers("reduce")
def lower_reduce(ctx, op, ins, outs):
    (x,), (y,) = ins, outs
    a = _attrs(op)
    kind = a["kind"]
    axes = tuple(norm_axis(ax, x.rank) for ax in a["axes"]) or tuple(range(x.rank))
    dims = _coalesce(x.shape, [i in axes for i in range(x.rank)])
    kept = [(s, st) for s, st, r in dims if not r]
    red = [(s, st) for s, st, r in dims if r]
    count = math.prod(x.shape[i] for i in axes)
    dt = x.dtype
    st = storage_type(dt)
    fn, b, (px, py), begin, end = ctx.kernel(f"reduce_{kind}_{op.name}", 2)
    pairwise = acc64 = False
    if dt.is_float:
        pairwise = kind != "max" and len(red) == 1 and red[0][1] == 1  # numpy's pairwise case
        acc64 = kind != "max" and not pairwise
        init = F32C(-np.inf) if kind == "max" else (ir.Constant(F64, 0.0) if acc64 else F32C(0))
    else:
        signed = dt.kind == "int"
        if kind == "max":
            init = ir.Constant(st, -(1 << (dt.bits - 1)) if signed else 0)
        else:
            init = ir.Constant(st, 0)
    with for_range(b, begin, end, name="o") as o:
        base = _offset(b, o, kept)
        if dt.is_float and kind != "max" and pairwise:
            r = _row_sum(ctx, b, px, base, red[0][0], 1, dt, "id")
        else:
            acc = _var(b, init.type, init)
            with ExitStack() as stack:
                off = base
                for k, (size, stride) in enumerate(red):
                    i = stack.enter_context(for_range(b, 0, size, name=f"r{k}"))
                    off = b.add(off, b.mul(i, C64(stride)))
                cur = b.load(acc)
                if dt.is_float:
                    v = _load(b, px, off, dt)
                    if kind == "max":
                        nv = _max_nan(b, cur, v)
                    else:
                        nv = b.fadd(cur, b.fpext(v, F64))
                else:
                    v = b.load(elem_ptr(b, px, off, st), typ=st)
                    if kind == "max":
                        nv = b.select(b.icmp_signed(">", v, cur) if signed else b.icmp_unsigned(">", v, cur), v, cur)
                    else:
                        nv = b.add(cur, v)  # wraps like the reference's int64 sum cast back
                b.store(nv, acc)
            r = b.load(acc)
            if acc64:
                r = b.fptrunc(r, F32) if kind == "sum" else b.fptrunc(b.fdiv(r, b.sitofp(C64(count), F64)), F32)
        if dt.is_float:
            if kind == "mean" and not acc64:
                r = _div_count(b, r, count)
            _store(b, r, py, o, y.dtype)
        else:
            b.store(r, elem_ptr(b, py, o, st))
    b.ret_void()
    return KernelSpec(fn, y.size)


# -- rope ------------------------------------------------------------------------------------------------

def _const_table(ctx, hint, ty, values):
    arr_t = ir.ArrayType(ty, len(values))
    g = ir.GlobalVariable(ctx.module, arr_t, ctx.unique(hint))
    g.global_constant = True
    g.linkage = "internal"
    g.initializer = ir.Constant(arr_t, [float(v) for v in values])
    return g, arr_t


@lowers("rope")
def lower_rope(ctx, op, ins, outs):
    """Work item = one position s: its cos and sin (float64, libm, as the reference) computed once into a stack
    table, then every row at that position (each head, each batch entry) rotated by a loop over the table."""
    (x, pos), (y,) = ins, outs
    a = _attrs(op)
    s_len, d = x.shape[-2], x.shape[-1]
    half = d // 2
    rows = x.size // d if d else 0
    inv_freq = a["theta"] ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # the reference's float64 values
    fn, b, (px, pp, py), begin, end = ctx.kernel(f"rope_{op.name}", 3)
    if rows == 0 or half == 0:
        b.ret_void()
        return KernelSpec(fn, 0)
    table, arr_t = _const_table(ctx, "rope_inv_freq", F64, inv_freq)
    cos, sin = ctx.declare("cos", F64, [F64]), ctx.declare("sin", F64, [F64])
    cs, sn = _var(b, F64, size=half), _var(b, F64, size=half)
    with for_range(b, begin, end, name="s", vectorize=False) as s:
        pf = b.sitofp(_load_int64(b, pp, s, pos.dtype), F64)
        with for_range(b, 0, half, name="i", vectorize=False) as i:
            ang = b.fmul(pf, b.load(b.gep(table, [C64(0), i], source_etype=arr_t), typ=F64))
            b.store(b.call(cos, [ang]), b.gep(cs, [i], source_etype=F64))
            b.store(b.call(sin, [ang]), b.gep(sn, [i], source_etype=F64))
        with for_range(b, 0, rows // s_len, name="l", vectorize=False) as lead:
            base = b.mul(b.add(b.mul(lead, C64(s_len)), s), C64(d))
            with for_range(b, 0, half, name="i") as i:
                c = b.load(b.gep(cs, [i], source_etype=F64), typ=F64)
                sv = b.load(b.gep(sn, [i], source_etype=F64), typ=F64)
                if a["style"] == "half":
                    i1, i2 = b.add(base, i), b.add(base, b.add(i, C64(half)))
                else:
                    i1 = b.add(base, b.mul(i, C64(2)))
                    i2 = b.add(i1, C64(1))
                x1 = b.fpext(_load(b, px, i1, x.dtype), F64)
                x2 = b.fpext(_load(b, px, i2, x.dtype), F64)
                y1 = b.fsub(b.fmul(x1, c), b.fmul(x2, sv))
                y2 = b.fadd(b.fmul(x2, c), b.fmul(x1, sv))
                _store(b, b.fptrunc(y1, F32), py, i1, y.dtype)
                _store(b, b.fptrunc(y2, F32), py, i2, y.dtype)
    b.ret_void()
    return KernelSpec(fn, s_len)


# -- attention -------------------------------------------------------------------------------------------

def _bcast_index(b, idx, out_batch, in_batch):
    """Flat index into the broadcast batch shape -> flat index into an operand's batch shape."""
    in_batch = (1,) * (len(out_batch) - len(in_batch)) + tuple(in_batch)
    dims, stride = [], 1
    for so, si in reversed(list(zip(out_batch, in_batch))):
        dims.append((so, stride if si != 1 else 0))
        stride *= si
    return _offset(b, idx, list(reversed(dims)))


SCORES_MAX = 16384  # keys whose scores an attention row keeps on the stack (64 KiB); longer caches recompute


def exp_f32(ctx, b, x):
    """exp(x) in f32 without a libm call, so that a loop of it vectorises: Cephes' expf (x = n ln2 + r,
    |r| <= ln2 / 2, a degree-6 polynomial, 2^n by the exponent bits), within 2 ulp of expf. Below -87.3 it is 0
    (expf's result there is subnormal or 0, at most 1.2e-38), above 88.7 +inf, NaN stays NaN. ``x`` is a f32
    or a vector of them (the same operations, lane by lane)."""
    ty = x.type
    lanes = ty.count if isinstance(ty, ir.VectorType) else 0
    ity = ir.VectorType(I32, lanes) if lanes else I32

    def f(v):
        return ir.Constant(ty, [float(v)] * lanes) if lanes else F32C(v)

    def i(v):
        return ir.Constant(ity, [int(v)] * lanes) if lanes else C32(v)

    fl = ctx.declare(f"llvm.floor.v{lanes}f32" if lanes else "llvm.floor.f32", ty, [ty])
    xc = b.select(b.fcmp_ordered(">", x, f(88.7)), f(88.7), x)
    xc = b.select(b.fcmp_ordered("<", xc, f(-87.3)), f(-87.3), xc)
    n = b.call(fl, [b.fadd(b.fmul(xc, f(1.44269504088896341)), f(0.5))])
    r = b.fsub(b.fsub(xc, b.fmul(n, f(0.693359375))), b.fmul(n, f(-2.12194440e-4)))
    y = f(1.9875691500e-4)
    for cst in (1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1):
        y = b.fadd(b.fmul(y, r), f(cst))
    y = b.fadd(b.fadd(b.fmul(b.fmul(y, r), r), r), f(1.0))
    ni = b.fptosi(n, ity)
    up = b.select(b.icmp_signed(">", ni, i(0)), i(1), i(0))  # 2^n as 2^(n - up) 2^up: n = 128 fits
    two_n = b.bitcast(b.shl(b.add(b.sub(ni, up), i(127)), i(23)), ty)
    out = b.fmul(b.fmul(y, two_n), b.bitcast(b.shl(b.add(up, i(127)), i(23)), ty))
    out = b.select(b.fcmp_ordered("<", x, f(-87.3)), f(0.0), out)
    out = b.select(b.fcmp_ordered(">", x, f(88.7)), f(np.inf), out)
    return b.select(_is_nan(b, x), x, out)


class _VectorRow:
    """Dot products of a D-long f32 row held in vector registers (``load_row``) with rows of a cache, VW lanes at
    a time (one multiply-add a vector, one reassociated reduction a dot product, the D % VW tail in scalars).
    ``ok``: every type involved loads as whole vectors (f32, bf16, and f16 where the target has F16C)."""

    def __init__(self, ctx, b, d: int, dtypes, f16c: bool):
        self.b, self.d, self.f16c = b, d, f16c
        self.vw = vw = max(4, min(16, ctx.target.vector_bits // 32))
        self.nv = d // vw
        self.ok = self.nv > 0 and all(t.name in ("f32", "bf16") or (t.name == "f16" and f16c) for t in dtypes)
        self.vt = vt = ir.VectorType(F32, vw)
        if self.ok:
            self.fma = ctx.declare(f"llvm.fmuladd.v{vw}f32", vt, [vt, vt, vt])
            self.sum = self.sum_decl(ctx)

    def sum_decl(self, ctx):
        """llvm.vector.reduce.fadd of VW lanes (called with reassoc: a tree of shuffles and adds)."""
        return ctx.declare(f"llvm.vector.reduce.fadd.v{self.vw}f32", F32, [F32, self.vt])

    def load(self, ptr, idx, dt):
        """VW elements from ptr[idx] as f32 (a f16 vector by one conversion, a bf16 by a shift)."""
        b, vw = self.b, self.vw
        if dt.name == "f32":
            return b.load(elem_ptr(b, ptr, idx, F32), typ=self.vt, align=4)
        raw = b.load(elem_ptr(b, ptr, idx, ir.IntType(16)), typ=ir.VectorType(ir.IntType(16), vw), align=2)
        if dt.name == "f16":
            return b.fpext(b.bitcast(raw, ir.VectorType(ir.HalfType(), vw)), self.vt)
        wide = b.shl(b.zext(raw, ir.VectorType(I32, vw)), ir.Constant(ir.VectorType(I32, vw), [16] * vw))
        return b.bitcast(wide, self.vt)

    def load_row(self, ptr, base, dt):
        """The row at ptr[base:base + D]: its whole vectors and its tail's scalars."""
        b = self.b
        vecs = [self.load(ptr, b.add(base, C64(c * self.vw)), dt) for c in range(self.nv)]
        tail = [_load(b, ptr, b.add(base, C64(t)), dt) for t in range(self.nv * self.vw, self.d)]
        return vecs, tail

    def dot(self, row, ptr, base, dt):
        b = self.b
        vecs, tail = row
        acc = None
        for c, qv in enumerate(vecs):
            kv = self.load(ptr, b.add(base, C64(c * self.vw)), dt)
            acc = b.fmul(qv, kv) if acc is None else b.call(self.fma, [qv, kv, acc])
        s = b.call(self.sum, [F32C(-0.0), acc], fastmath=("reassoc",))
        for t, qs in enumerate(tail, start=self.nv * self.vw):
            s = b.fadd(s, b.fmul(qs, _load(b, ptr, b.add(base, C64(t)), dt)))
        return s


@lowers("attention")
def lower_attention(ctx, op, ins, outs):
    q, k, v = ins[:3]
    (y,) = outs
    a = _attrs(op)
    has_len = len(ins) == 4
    hq, sq, d = q.shape[-3:]
    hkv, skv, dv = v.shape[-3:]
    rep = hq // hkv
    out_batch = y.shape[:-3]
    nb = math.prod(out_batch)
    scale = F32C(a["scale"] or 1.0 / math.sqrt(d))
    fn, b, ptrs, begin, end = ctx.kernel(f"attention_{op.name}", len(ins) + 1, status=True)
    pq, pk, pv = ptrs[:3]
    plen = ptrs[3] if has_len else None
    py, pstat = ptrs[-2], ptrs[-1]
    errors = {1: f"kv_len must be between the {sq} queries and the cache size {skv}"}
    work = nb * hq * sq
    if work == 0:
        b.ret_void()
        return KernelSpec(fn, 0, errors=errors)
    if has_len:
        length = _load_int64(b, plen, 0, ins[3].dtype)
        bad = b.or_(b.icmp_signed("<", length, C64(sq)), b.icmp_signed(">", length, C64(skv)))
        with b.if_then(bad, likely=False):
            report(b, pstat, 1)
            b.ret_void()
    else:
        length = C64(skv)
    accp = _var(b, F32, size=max(dv, 1))  # the row's sum of e_j * v_j (Dv is a static head size)
    # the row's scores, kept (each dot product computed once) where the cache fits a stack scratch
    keep = skv <= SCORES_MAX
    exp = None if keep else ctx.math_f32("expf")
    scores = _var(b, F32, size=max(skv, 1)) if keep else None
    dt = q.dtype
    f16c = has_f16c(ctx.target)  # a f16 KV cache read by one conversion per vector

    vec = _VectorRow(ctx, b, d, (dt, k.dtype), f16c)
    vvec = _VectorRow(ctx, b, dv, (v.dtype,), f16c)
    vacc = [entry_alloca(b, vvec.vt) for _ in range(vvec.nv)] if vvec.ok else None

    def dot(qbase, kbase, qv=None):
        if vec.ok:  # vectors of the row, one reduction a key (the scalar chain was 1 add a lane, in order)
            return b.fmul(vec.dot(qv, pk, kbase, k.dtype), scale)
        s = _var(b, F32, F32C(0))
        with for_range(b, 0, d, name="t") as t:
            prod = b.fmul(_load(b, pq, b.add(qbase, t), dt), _load_fast(b, pk, b.add(kbase, t), k.dtype, f16c))
            b.store(b.fadd(b.load(s), prod, flags=FAST), s)
        return b.fmul(b.load(s), scale)

    with for_range(b, begin, end, name="w", vectorize=False) as w:
        i = b.srem(w, C64(sq))
        h = b.srem(b.sdiv(w, C64(sq)), C64(hq))
        bi = b.sdiv(w, C64(sq * hq))
        hk = b.sdiv(h, C64(rep))
        qrow = b.mul(b.add(b.mul(b.add(b.mul(_bcast_index(b, bi, out_batch, q.shape[:-3]), C64(hq)), h), C64(sq)), i),
                     C64(d))
        kvh = b.add(b.mul(_bcast_index(b, bi, out_batch, k.shape[:-3]), C64(hkv)), hk)
        vvh = b.add(b.mul(_bcast_index(b, bi, out_batch, v.shape[:-3]), C64(hkv)), hk)
        limit = length
        if a["causal"]:
            limit = b.add(b.sub(length, C64(sq)), b.add(i, C64(1)))  # keys j <= L - Sq + i (always < L)
        qv = vec.load_row(pq, qrow, dt) if vec.ok else None  # the query row, held in registers
        m = _var(b, F32, F32C(-np.inf))
        with for_range(b, 0, limit, name="j", vectorize=False) as j:
            sc = dot(qrow, b.mul(b.add(b.mul(kvh, C64(skv)), j), C64(d)), qv)
            if keep:
                b.store(sc, b.gep(scores, [j], source_etype=F32))
            b.store(_max_nan(b, b.load(m), sc), m)
        mv = b.load(m)
        shift = b.select(_finite(ctx, b, mv), mv, F32C(0))
        with for_range(b, 0, dv, name="c") as c:
            b.store(F32C(0), b.gep(accp, [c], source_etype=F32))
        for slot in vacc or ():
            b.store(ir.Constant(vvec.vt, [0.0] * vvec.vw), slot)
        total = _var(b, F32, F32C(0))
        if keep:  # e_j = exp(s_j - shift) in place, vectors of lanes (a polynomial exp, no libm call a key)
            vt, vw = vec.vt, vec.vw
            vtot = _var(b, vt, ir.Constant(vt, [0.0] * vw))
            vshift = b.shuffle_vector(b.insert_element(ir.Constant(vt, None), shift, C32(0)), ir.Constant(vt, None),
                                      ir.Constant(ir.VectorType(I32, vw), [0] * vw))
            whole = b.sub(limit, b.srem(limit, C64(vw)))
            with for_range(b, 0, whole, step=vw, name="ev", vectorize=False) as j:
                slot = b.bitcast(b.gep(scores, [j], source_etype=F32), vt.as_pointer())
                e = exp_f32(ctx, b, b.fsub(b.load(slot, typ=vt, align=4), vshift))
                b.store(e, slot, align=4)
                b.store(b.fadd(b.load(vtot, typ=vt), e), vtot)
            b.store(b.call(vec.sum_decl(ctx), [F32C(-0.0), b.load(vtot, typ=vt)], fastmath=("reassoc",)), total)
            with for_range(b, whole, limit, name="e", vectorize=False) as j:
                slot = b.gep(scores, [j], source_etype=F32)
                e = exp_f32(ctx, b, b.fsub(b.load(slot, typ=F32), shift))
                b.store(e, slot)
                b.store(b.fadd(b.load(total), e, flags=FAST), total)
        with for_range(b, 0, limit, name="j", vectorize=False) as j:
            if keep:
                e = b.load(b.gep(scores, [j], source_etype=F32), typ=F32)
            else:
                e = b.call(exp, [b.fsub(dot(qrow, b.mul(b.add(b.mul(kvh, C64(skv)), j), C64(d)), qv), shift)])
                b.store(b.fadd(b.load(total), e), total)
            vrow = b.mul(b.add(b.mul(vvh, C64(skv)), j), C64(dv))
            if vacc is not None:  # the row's sums in registers: e_j * v_j a vector at a time (same rounding)
                es = b.shuffle_vector(b.insert_element(ir.Constant(vvec.vt, None), e, C32(0)),
                                      ir.Constant(vvec.vt, None), ir.Constant(ir.VectorType(I32, vvec.vw), [0] * vvec.vw))
                for ci, slot in enumerate(vacc):
                    vc = vvec.load(pv, b.add(vrow, C64(ci * vvec.vw)), v.dtype)
                    b.store(b.fadd(b.load(slot, typ=vvec.vt), b.fmul(es, vc)), slot)
                c_from = len(vacc) * vvec.vw
            else:
                c_from = 0
            with for_range(b, c_from, dv, name="c") as c:
                slot = b.gep(accp, [c], source_etype=F32)
                vc = _load_fast(b, pv, b.add(vrow, c), v.dtype, f16c)
                b.store(b.fadd(b.load(slot, typ=F32), b.fmul(e, vc)), slot)
        for ci, slot in enumerate(vacc or ()):
            at = b.bitcast(b.gep(accp, [C64(ci * vvec.vw)], source_etype=F32), vvec.vt.as_pointer())
            b.store(b.load(slot, typ=vvec.vt), at, align=4)
        tot = b.load(total)
        orow = b.mul(w, C64(dv))
        with for_range(b, 0, dv, name="c") as c:
            val = b.fdiv(b.load(b.gep(accp, [c], source_etype=F32), typ=F32), tot)
            _store(b, val, py, b.add(orow, c), y.dtype)
    b.ret_void()
    return KernelSpec(fn, work, errors=errors)


# -- quantize --------------------------------------------------------------------------------------------

def _rint(ctx, b, v):
    return b.call(_intr(ctx, "llvm.rint.f32"), [v])


def _clip(b, v, lo, hi):
    """np.clip: NaN stays NaN."""
    v = b.select(b.fcmp_ordered("<", v, lo), lo, v)
    return b.select(b.fcmp_ordered(">", v, hi), hi, v)


def _store_code(b, q, ptr, idx, dt):
    """A clipped, integral f32 (or NaN -> 0, as nan_to_num) -> the code as numpy holds it."""
    iv = b.select(_is_nan(b, q), ir.Constant(I32, 0), b.fptosi(b.select(_is_nan(b, q), F32C(0), q), I32))
    if dt.kind in ("int", "uint") and dt.bits < 8:
        iv = b.and_(iv, ir.Constant(I32, (1 << dt.bits) - 1))
    b.store(b.trunc(iv, I8), elem_ptr(b, ptr, idx, I8))


@lowers("quantize")
def lower_quantize(ctx, op, ins, outs):
    (x,) = ins
    a = _attrs(op)
    dt = _dtype(a["dtype"])
    scheme, zm, group = a["scheme"], a["zero_mode"], a["group"]
    axis = norm_axis(a["axis"], x.rank)
    qmin, qmax = (F32C(v) for v in dt.value_range)
    if group < 0:
        outer, d, inner, g = 1, x.size, 1, x.size
    else:
        outer, d, inner = _split(x.shape, axis)
        g = d if group == 0 else group
    ng = -(-d // g) if g else (1 if group < 0 else 0)
    work = outer * ng * inner
    # the reference pads a partial group into a copy, except when one group holds the whole axis (quant._grouped)
    padded = group > 0 and d % group != 0 and d > group
    # numpy sums a granule pairwise when its axis is contiguous in memory (a padded group is a fresh copy)
    pairwise = inner == 1 or padded
    fn, b, ptrs, begin, end = ctx.kernel(f"quantize_{scheme}_{op.name}", 1 + len(outs))
    px, pc, ps = ptrs[:3]
    pz = ptrs[3] if zm != "none" else None
    fabs = _intr(ctx, "llvm.fabs.f32")
    maxnum, minnum = _intr(ctx, "llvm.maxnum.f32", 2), _intr(ctx, "llvm.minnum.f32", 2)
    nan = F32C(np.nan)
    with for_range(b, begin, end, name="w") as w:
        i = b.srem(w, C64(inner))
        k = b.srem(b.sdiv(w, C64(inner)), C64(ng))
        o = b.sdiv(w, C64(inner * ng))
        start = b.mul(k, C64(g))
        cnt = b.select(b.icmp_signed("<", b.sub(C64(d), start), C64(g)), b.sub(C64(d), start), C64(g))
        base = b.add(b.mul(b.add(b.mul(o, C64(d)), start), C64(inner)), i)

        def each(body):
            with for_range(b, 0, cnt, name="j") as j:
                idx = b.add(base, b.mul(j, C64(inner)))
                body(idx, _load(b, px, idx, x.dtype))

        def reduce_(init, step):
            acc = _var(b, F32, init)
            each(lambda idx, v: b.store(step(b.load(acc), v), acc))
            return b.load(acc)

        zero = None
        if scheme in ("absmax", "absmean"):
            if scheme == "absmax":  # nanmax |x|
                m = reduce_(nan, lambda acc, v: b.call(maxnum, [acc, b.call(fabs, [v])]))
            else:  # nanmean |x|: NaN -> 0 in the sum, not counted
                total = _row_sum(ctx, b, px, base, g, inner, x.dtype, "absn", pairwise=pairwise, valid=cnt) \
                    if pairwise else _row_sum(ctx, b, px, base, cnt, inner, x.dtype, "absn", pairwise=False)
                nvalid = _var(b, I64, C64(0))
                each(lambda idx, v: b.store(b.add(b.load(nvalid), b.zext(b.not_(_is_nan(b, v)), I64)), nvalid))
                m = _div_count(b, total, b.load(nvalid))
            m = b.select(b.or_(_is_nan(b, m), b.fcmp_ordered(">", m, F32C(EPS))), m, F32C(EPS))
            mult = b.fdiv(qmax, m) if scheme == "absmax" else b.fdiv(F32C(1), m)
            scale = b.fdiv(m, qmax) if scheme == "absmax" else m
            each(lambda idx, v: _store_code(b, _clip(b, _rint(ctx, b, b.fmul(v, mult)), qmin, qmax), pc, idx, dt))
        elif zm == "none":
            best = _var(b, F32, F32C(0))  # the first element of largest magnitude (NaN read as 0), signed

            def pick(idx, v):
                cur = b.load(best)
                filled = b.select(_is_nan(b, v), F32C(0), v)
                take = b.fcmp_ordered(">", b.call(fabs, [filled]), b.call(fabs, [cur]))
                b.store(b.select(take, filled, cur), best)
            each(pick)
            scale = b.fdiv(b.load(best), qmin)
            inv = b.select(b.fcmp_unordered("une", scale, F32C(0)), b.fdiv(F32C(1), scale), F32C(0))
            each(lambda idx, v: _store_code(b, _clip(b, _rint(ctx, b, b.fmul(v, inv)), qmin, qmax), pc, idx, dt))
        else:
            lo = reduce_(nan, lambda acc, v: b.call(minnum, [acc, v]))
            hi = reduce_(nan, lambda acc, v: b.call(maxnum, [acc, v]))
            if zm == "original":  # np.minimum / np.maximum with 0: NaN stays
                lo = b.select(b.or_(_is_nan(b, lo), b.fcmp_ordered("<", lo, F32C(0))), lo, F32C(0))
                hi = b.select(b.or_(_is_nan(b, hi), b.fcmp_ordered(">", hi, F32C(0))), hi, F32C(0))
            scale = b.fdiv(b.fsub(hi, lo), qmax)
            inv = b.select(b.fcmp_unordered("une", scale, F32C(0)), b.fdiv(F32C(1), scale), F32C(0))
            if zm == "original":
                zero = _clip(b, _rint(ctx, b, b.fmul(b.fneg(lo), inv)), F32C(0), qmax)
                each(lambda idx, v: _store_code(
                    b, _clip(b, b.fadd(_rint(ctx, b, b.fmul(v, inv)), zero), F32C(0), qmax), pc, idx, dt))
            else:
                zero = b.fneg(lo)
                each(lambda idx, v: _store_code(
                    b, _clip(b, _rint(ctx, b, b.fmul(b.fsub(v, lo), inv)), F32C(0), qmax), pc, idx, dt))
        b.store(scale, elem_ptr(b, ps, w, F32))
        if zero is not None:
            b.store(zero, elem_ptr(b, pz, w, F32))
    b.ret_void()
    return KernelSpec(fn, work)


# -- dequant ---------------------------------------------------------------------------------------------

@lowers("dequant")
def lower_dequant(ctx, op, ins, outs):
    codes, scale = ins[0], ins[1]
    (y,) = outs
    a = _attrs(op)
    zm = a["zero_mode"]
    has_zero = len(ins) == 3
    axis = norm_axis(a["axis"], codes.rank)
    group = a["group"] if scale.size != 1 else -1
    shape = codes.shape
    n = shape[-1] if shape else 1
    rows = codes.size // n if n else 0
    fn, b, ptrs, begin, end = ctx.kernel(f"dequant_{op.name}", len(ins) + 1)
    pc, ps = ptrs[:2]
    pz = ptrs[2] if has_zero else None
    py = ptrs[-1]
    # the scale element of codes index (i_0, ..., i_last): sum over dims of scale_index_d * scale_stride_d
    if group < 0:
        sdims = [0] * len(shape)
        sshape = (1,) * len(shape)
    else:
        sshape = scale.shape
        sdims = [math.prod(sshape[d + 1:]) if sshape[d] != 1 else 0 for d in range(len(shape))]

    def sidx(dim, i):
        if sdims[dim] == 0:
            return C64(0)
        if dim == axis and group > 0:
            i = b.sdiv(i, C64(group))
        return b.mul(i, C64(sdims[dim]))

    with for_range(b, begin, end, name="r") as r:
        srow, rest = C64(0), r
        for dim in range(len(shape) - 2, -1, -1):
            srow = b.add(srow, sidx(dim, b.srem(rest, C64(shape[dim]))))
            rest = b.sdiv(rest, C64(shape[dim]))
        with for_range(b, 0, n, name="j") as j:
            idx = b.add(b.mul(r, C64(n)), j)
            si = b.add(srow, sidx(len(shape) - 1, j)) if shape else srow
            v = _load(b, pc, idx, codes.dtype)
            s = _load(b, ps, si, scale.dtype)
            if has_zero and zm != "none":
                z = _load(b, pz, si, ins[2].dtype)
                val = b.fmul(b.fsub(v, z), s) if zm == "original" else b.fsub(b.fmul(v, s), z)
            else:
                val = b.fmul(v, s)
            _store(b, val, py, idx, y.dtype)
    b.ret_void()
    return KernelSpec(fn, rows)
