"""Lowerings: matmul, qmatmul (float activations x low-bit weights) and qmatmul_i8 (BitNet's integer path).

Three tiers, chosen per op at lowering time:

* a **generic** kernel for every shape, dtype, packing, granularity and broadcast the reference accepts: work
  item = one (batch, n) output column; each weight element is decoded from its packed bytes as the packing's
  declaration says (ladder.packing; ``Decoder``), dequantized exactly as ``ladder.quant.dequantize`` does,
  and accumulated (f32 for float matmuls, int32 with wraparound for integer ones);
* a **fast** kernel for ``transpose_b`` with 2-D weights in a SIMD block packing (any whose declaration
  ``_fast_layout`` takes: crumb16/32/64, nib16/32/64, trit5, tq2, with or without ``+f16``-style block scales;
  shifts, masks, XOR constants and code order are read off the declaration) over integer codes (ternary, i2,
  u2, i4, u4): work item = one weight row n; the row is streamed once per 64-row chunk of x (prefetched
  ``PREFETCH`` bytes ahead), each 32-byte piece is decoded in registers (shift + mask; base-3 digits by the
  multiply trick done as two byte adds and two compares per trit) and reused over a tile of 4 rows of x and,
  for several rows of x, 2 weight rows at once (M = 1 streams one row at a time: interleaved rows defeat the
  hardware prefetcher). The whole 32-code groups of a partial last block are decoded as vectors too (rows are
  padded to blocks).

  - ``qmatmul_i8``: codes are made unsigned-offset (``o = code ^ sign bit``, value = o - z), and
    dot = sum(x * o) - z * sum(x); on AVX2 ``vpmaddubsw`` (u8 x i8 pairs -> i16; |sum| <= 4 * 768 for crumb,
    2 * 3840 for nib, 5 * 512 for trit5, no saturation) then ``vpmaddwd`` by ones (-> i32); with VNNI (AVX512-VNNI
    or AVX-VNNI) one ``vpdpbusd`` does both; elsewhere plain i32 vector MACs.
    Then ``(f32(dot) * s1) * s2`` and the epilogue, the reference's order: bit-exact.
  - ``qmatmul`` (x f32): codes -> f32 values, dequantized per element exactly as the reference
    (v*s, (v - z)*s or v*s - z, no contraction), then FMA into 8-lane accumulators (up to 4 independent ones
    per output, so FMA latency does not bound a GEMV: 2.6x faster than one chain); a per-row scale without
    zero multiplies the row's sum once instead. Only the summation order (and rounding) differs from numpy's BLAS.

* the same fast kernel for ``qmatmul_i8`` over **unpacked int8** weights (``_raw_i8_plan``);
* a **dense f32** kernel for float matmuls with 2-D f32 weights (either orientation): vector dot products
  over tiles of rows, or the output rows as accumulators for ``[K, N]`` weights (``_lower_dense_f32``).

The last < 32 codes of K not a multiple of the block are finished by the scalar decode (never reading past a
row); no kernel reads or writes outside its buffers. Epilogues run in f64 (libm) and round to the result type per op, as the
interpreter does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ladder.backends.llvm.codegen import F32, F64, I8, I16, I32, I64, KernelSpec, for_range, lowers, storage_type
from ladder.backends.llvm.codegen import entry_alloca, from_f32, load_f32, to_f32
from ladder.ops import OPS
from ladder.ops.lowbit import block_scales
from ladder.types import TensorType

C64 = lambda v: ir.Constant(I64, int(v))  # noqa: E731
C32 = lambda v: ir.Constant(I32, int(v))  # noqa: E731
C8 = lambda v: ir.Constant(I8, int(v))  # noqa: E731

MCHUNK = 64  # rows of x per pass over a weight row (their sums live on the stack)
MTILE = 4  # rows of x sharing one decoded weight piece
PREFETCH = 2048  # bytes ahead of the weight stream to prefetch (measured best on znver3; 1024: -10%, none: -25%)


# -- static helpers ----------------------------------------------------------------------------------------

def _bstrides(shape, out_shape):
    """Element strides of a tensor of ``shape`` broadcast (numpy rules) to ``out_shape``: 0 on broadcast axes."""
    shape = tuple(shape)
    pad = len(out_shape) - len(shape)
    full = (1,) * pad + shape
    strides, acc = [0] * len(out_shape), 1
    for d in range(len(out_shape) - 1, -1, -1):
        strides[d] = 0 if full[d] == 1 else acc
        acc *= full[d]
    return strides


def _batch_offsets(batch, shape_b, inner):
    """For each flat index of the broadcast batch ``batch``: the element offset into a tensor whose batch dims
    are ``shape_b`` (right-aligned) and whose matrices hold ``inner`` elements."""
    n = math.prod(batch)
    if n == 0:
        return [0]
    idx = np.indices(batch).reshape(len(batch), -1) if batch else np.zeros((0, 1), np.int64)
    st = _bstrides(shape_b, batch)
    off = np.zeros(idx.shape[1], np.int64)
    for d, s in enumerate(st):
        off += idx[d] * s * inner
    return [int(v) for v in off]


def _const_table(ctx, b, values, hint):
    """A constant i64 array (internal global); returns a function index -> loaded value."""
    arr_t = ir.ArrayType(I64, len(values))
    g = ir.GlobalVariable(ctx.module, arr_t, ctx.unique("tab_" + hint))
    g.global_constant = True
    g.linkage = "internal"
    g.initializer = ir.Constant(arr_t, [int(v) for v in values])
    return lambda i: b.load(b.gep(g, [C64(0), i], source_etype=arr_t), typ=I64)


def _offset_of(b, flat, out_shape, strides):
    """Element offset of a broadcast operand at the flat index of the output (constant divisors)."""
    off = C64(0)
    acc = 1
    for d in range(len(out_shape) - 1, -1, -1):
        if strides[d]:
            idx = b.urem(b.udiv(flat, C64(acc)), C64(out_shape[d])) if out_shape[d] > 1 else C64(0)
            off = b.add(off, b.mul(idx, C64(strides[d])))
        acc *= out_shape[d]
    return off


def _int_value(b, ptr, dt):
    """An integer element (as numpy holds it) -> its value as i32."""
    st = storage_type(dt)
    v = b.load(ptr, typ=st)
    if st == I32:
        return v
    if dt.kind == "int" and dt.bits < 8:  # ml_dtypes int4/int2 hold the low bits, not a sign-extended byte
        half = 1 << (dt.bits - 1)
        v = b.and_(b.zext(v, I32), C32((1 << dt.bits) - 1))
        return b.sub(b.xor(v, C32(half)), C32(half))
    return b.zext(v, I32) if dt.kind == "uint" else b.sext(v, I32)


def _gep8(b, p, off):
    return b.gep(p, [off if isinstance(off, ir.Value) else C64(off)], source_etype=I8)


# -- decoding one code of a packed row ---------------------------------------------------------------------

class Decoder:
    """Scalar decode of element k of a packed row (any packing of ladder.packing, block-scaled or not), derived
    from the packing's declaration: the byte and slot of a code (``Packing.place``), its field (shift and mask)
    or base-``radix`` digit, one byte per bit plane, and the stored code's XOR to the type's code."""

    def __init__(self, ctx, t: TensorType):
        self.ctx, self.t, self.dt = ctx, t, t.dtype
        p = t.packing
        self.scaled = block_scales(t)
        self.base = p.base if self.scaled else p
        self.row_bytes = p.row_bytes(t.shape[-1], t.dtype)
        if self.scaled:
            self.sdt = p.scale
            self.packing = p
            self.stride = p.stride
            self.zero = p.zero

    def _place(self, b, k):
        """(byte offset in the row or plane (i64), slot (i32)) of position k, from the declaration."""
        L = self.base
        H, ch = L.slots, L.chunk_bytes
        if L.block_bytes == 1:  # codes in order: byte k / H, slot k mod H
            return b.udiv(k, C64(H)), b.trunc(b.urem(k, C64(H)), I32)
        blk, j = b.udiv(k, C64(L.block)), b.urem(k, C64(L.block))
        byte = b.mul(blk, C64(L.block_bytes))
        if ch != L.block_bytes:  # chunks of ch bytes, ch * H codes each
            byte = b.add(byte, b.mul(b.udiv(j, C64(ch * H)), C64(ch)))
            j = b.urem(j, C64(ch * H))
        return b.add(byte, b.urem(j, C64(ch))), b.trunc(b.udiv(j, C64(ch)), I32)

    def _field(self, b, v, slot):
        """Slot ``slot`` (i32) of byte v (i32): a bit field, or a base-radix digit."""
        L = self.base
        if L.radix:  # digit n of byte v: ((v * radix^n) mod 256) * radix >> 8
            pw = C32(1)
            for n in range(1, L.slots):
                pw = b.select(b.icmp_unsigned("==", slot, C32(n)), C32(L.radix ** n), pw)
            return b.lshr(b.mul(b.and_(b.mul(v, pw), C32(255)), C32(L.radix)), C32(8))
        sh = L.slot_shifts
        a = sh[1] - sh[0] if len(sh) > 1 else 0
        if not a:
            shift = C32(sh[0])
        elif all(s == sh[0] + a * h for h, s in enumerate(sh)):  # shift = sh[0] + a * slot
            mag = abs(a)
            step = slot if mag == 1 else (b.shl(slot, C32(mag.bit_length() - 1)) if mag & (mag - 1) == 0
                                          else b.mul(slot, C32(mag)))
            if a > 0:
                shift = b.add(step, C32(sh[0])) if sh[0] else step
            else:
                shift = b.sub(C32(sh[0]), step)
        else:
            shift = C32(sh[0])
            for h in range(1, len(sh)):
                shift = b.select(b.icmp_unsigned("==", slot, C32(h)), C32(sh[h]), shift)
        return b.and_(b.lshr(v, shift), C32(L.mask))

    def code(self, b, row, k):
        """The type's code (i32) of position k (i64) of the row at ``row``."""
        L = self.base
        if self.scaled:
            blk = b.udiv(k, C64(L.block))
            k = b.urem(k, C64(L.block))
            row = _gep8(b, row, b.add(b.mul(blk, C64(self.stride)), C64(self.packing.codes_offset)))
        byte = lambda off: b.zext(b.load(_gep8(b, row, off), typ=I8), I32)  # noqa: E731
        off, slot = self._place(b, k)
        planes = self.dt.bits if L.planes else 1
        per = self.row_bytes // planes
        code = None
        for p in range(planes):  # plane p holds bits p * L.bits .. of the stored code
            f = self._field(b, byte(b.add(off, C64(p * per)) if p else off), slot)
            code = f if p == 0 else b.or_(code, b.shl(f, C32(p * L.bits)))
        xor = L.stored_xor(self.dt)
        return b.xor(code, C32(xor)) if xor else code

    def int_value(self, b, code):
        dt = self.dt
        if dt.kind == "int":
            half = 1 << (dt.bits - 1)
            return b.sub(b.xor(code, C32(half)), C32(half))
        if dt.kind == "ternary":
            return b.sub(code, C32(1))
        if dt.kind == "binary":
            return b.sub(b.shl(code, C32(1)), C32(1))
        return code

    def f32_value(self, b, code):
        if self.dt.kind == "table" or self.dt.name == "fp4":
            return to_f32(b, b.trunc(code, I8), self.dt)
        return b.sitofp(self.int_value(b, code), F32)

    def block_scale(self, b, row, k, which=0):
        """The f32 scale (which=0) or zero (which=1) of the block holding position k."""
        blk = b.udiv(k, C64(self.base.block))
        ptr = _gep8(b, row, b.add(b.mul(blk, C64(self.stride)), C64(self.packing.scale_offset(which))))
        return to_f32(b, b.load(ptr, typ=storage_type(self.sdt)), self.sdt)


# -- epilogues ---------------------------------------------------------------------------------------------

def _round_to(b, v32, dt):
    """f32 -> the value of dt (rounded), back as f32."""
    if dt.name == "f32":
        return v32
    return to_f32(b, from_f32(b, v32, dt), dt)


def _epilogue(ctx, b, v32, kinds, dt):
    """v32 (f32, already a value of dt) through the epilogue ops, each computed in f64 then rounded to dt."""
    for kind in kinds:
        x = b.fpext(v32, F64)
        one = ir.Constant(F64, 1.0)
        if kind == "relu":
            r = b.select(b.fcmp_ordered(">", x, ir.Constant(F64, 0.0)), x, ir.Constant(F64, 0.0))
            r = b.select(b.fcmp_unordered("uno", x, x), x, r)
        elif kind == "neg":
            r = b.fneg(x)
        elif kind == "relu2":
            m = b.select(b.fcmp_ordered(">", x, ir.Constant(F64, 0.0)), x, ir.Constant(F64, 0.0))
            m = b.select(b.fcmp_unordered("uno", x, x), x, m)
            r = b.fmul(m, m)
        elif kind == "exp":
            r = b.call(ctx.declare("exp", F64, [F64]), [x])
        elif kind == "tanh":
            r = b.call(ctx.declare("tanh", F64, [F64]), [x])
        elif kind in ("sigmoid", "silu"):
            e = b.call(ctx.declare("exp", F64, [F64]), [b.fneg(x)])
            den = b.fadd(one, e)
            r = b.fdiv(one, den) if kind == "sigmoid" else b.fdiv(x, den)
        elif kind == "gelu":
            erf = b.call(ctx.declare("erf", F64, [F64]), [b.fdiv(x, ir.Constant(F64, math.sqrt(2.0)))])
            r = b.fmul(b.fmul(ir.Constant(F64, 0.5), x), b.fadd(one, erf))
        else:
            raise NotImplementedError(kind)
        v32 = _round_to(b, b.fptrunc(r, F32), dt)
    return v32


# -- the op, read once -------------------------------------------------------------------------------------

class _MM:
    def __init__(self, op, ins, outs):
        self.kind = op.kind
        self.attrs = OPS[op.kind].full_attrs(op.attr)
        self.x, self.w = ins[0], ins[1]
        self.extra = list(ins[2:])
        self.out = outs[0]
        self.tb = bool(self.attrs.get("transpose_b", False))
        self.M, self.K = self.x.shape[-2], self.x.shape[-1]
        self.N = self.out.shape[-1]
        self.batch = self.out.shape[:-2]
        self.B = math.prod(self.batch)
        self.epi = tuple(self.attrs.get("epilogue", ()))
        self.int_acc = self.kind == "qmatmul_i8" or (self.kind == "matmul" and self.out.dtype.name == "i32")
        self.packed = self.w.layout is not None
        self.bscaled = block_scales(self.w)


@lowers("matmul", "qmatmul", "qmatmul_i8")
def lower_matmul(ctx, op, ins, outs):
    mm = _MM(op, ins, outs)
    fast = _fast_plan(ctx, mm)
    if fast is not None:
        return _lower_fast(ctx, op, mm, fast)
    if _dense_f32(mm):
        return _lower_dense_f32(ctx, op, mm)
    return _lower_generic(ctx, op, mm)


# -- generic ----------------------------------------------------------------------------------------------

def _scale_index_fn(mm):
    """For qmatmul with a scale operand: (batch offsets per output batch index, fn(b, r, c) -> in-matrix
    offset) where (r, c) index the weight matrix as stored ([N, K] or [K, N])."""
    w, s = mm.w, mm.extra[0]
    rank = w.rank
    axis = mm.attrs["axis"] % rank
    group = mm.attrs["group"] if s.size != 1 else -1
    if s.size == 1:
        return [0] * max(mm.B, 1), (lambda b, r, c: C64(0))
    st = _bstrides(s.shape, s.shape)  # contiguous strides with 0 on size-1 dims

    # batch part: offsets of the scale for every output batch index (w's batch dims broadcast to out's)
    nb = rank - 2
    offs = []
    for flat in range(max(mm.B, 1)):
        idx = np.unravel_index(flat, mm.batch) if mm.batch else ()
        wb = list(idx)[len(mm.batch) - nb:] if nb else []
        o = 0
        for d in range(nb):
            i = wb[d] if w.shape[d] != 1 else 0
            if s.shape[d] != 1:
                o += (i // group if (d == axis and group > 0) else i) * st[d]
        offs.append(o)

    def inner(b, r, c):
        o = C64(0)
        for d, i in ((rank - 2, r), (rank - 1, c)):
            if s.shape[d] == 1:
                continue
            if d == axis and group > 0:
                i = b.udiv(i, C64(group))
            o = b.add(o, b.mul(i, C64(st[d])))
        return o

    return offs, inner


def _lower_generic(ctx, op, mm: _MM):
    x, w = mm.x, mm.w
    M, K, N = mm.M, mm.K, mm.N
    n_ops = len(op.operands)
    fn, b, ptrs, begin, end = ctx.kernel(f"{op.kind}_{op.name}", n_ops + 1)
    px, pw = ptrs[0], ptrs[1]
    xoffs = _batch_offsets(mm.batch, x.shape[:-2], M * K)
    wb_inner = math.prod(w.storage_shape[-2:]) if w.rank >= 2 else 0
    woffs = _batch_offsets(mm.batch, w.shape[:-2], wb_inner)
    xtab = _const_table(ctx, b, xoffs, "x")
    wtab = _const_table(ctx, b, woffs, "w")
    R0, R1 = (N, K) if mm.tb else (K, N)
    dec = Decoder(ctx, w) if mm.packed else None
    row_bytes = w.storage_shape[-1]
    if mm.kind == "qmatmul" and not mm.bscaled:
        soffs, sinner = _scale_index_fn(mm)
        stab = _const_table(ctx, b, soffs, "s")
        ps = ptrs[2]
        pz = ptrs[3] if len(mm.extra) > 1 else None
        sdt = mm.extra[0].dtype
    zm = mm.attrs.get("zero_mode", "none")
    xst = storage_type(x.dtype)
    acc_t = I32 if mm.int_acc else F32
    fma = ctx.declare("llvm.fma.f32", F32, [F32, F32, F32])
    with for_range(b, begin, end, name="item") as item:
        bi = b.udiv(item, C64(N))
        n = b.urem(item, C64(N))
        xbase = xtab(bi)
        wbase = wtab(bi)
        if mm.kind == "qmatmul" and not mm.bscaled:
            sbase = stab(bi)
        with for_range(b, 0, M, name="m") as m:
            xrow = b.add(xbase, b.mul(m, C64(K)))
            acc_slot = entry_alloca(b, acc_t)
            b.store(ir.Constant(acc_t, 0 if mm.int_acc else 0.0), acc_slot)
            with for_range(b, 0, K, name="k") as k:
                r, c = (n, k) if mm.tb else (k, n)
                xptr = b.gep(px, [b.add(xrow, k)], source_etype=xst)
                if mm.packed:
                    rowp = _gep8(b, pw, b.add(wbase, b.mul(r, C64(row_bytes))))
                    code = dec.code(b, rowp, c)
                if mm.int_acc:
                    xv = _int_value(b, xptr, x.dtype)
                    wv = dec.int_value(b, code) if mm.packed else _int_value(
                        b, b.gep(pw, [b.add(wbase, b.add(b.mul(r, C64(R1)), c))], source_etype=storage_type(w.dtype)),
                        w.dtype)
                    acc = b.add(b.load(acc_slot, typ=I32), b.mul(xv, wv))
                else:
                    xv = load_f32(b, xptr, x.dtype)
                    if mm.packed:
                        v = dec.f32_value(b, code)
                    else:
                        v = load_f32(b, b.gep(pw, [b.add(wbase, b.add(b.mul(r, C64(R1)), c))],
                                               source_etype=storage_type(w.dtype)), w.dtype)
                    if mm.kind == "qmatmul":
                        if mm.bscaled:
                            s = dec.block_scale(b, rowp, c, 0)
                            z = dec.block_scale(b, rowp, c, 1) if dec.zero else None
                        else:
                            off = b.add(sbase, sinner(b, r, c))
                            s = to_f32(b, b.load(b.gep(ps, [off], source_etype=storage_type(sdt)),
                                                 typ=storage_type(sdt)), sdt)
                            z = to_f32(b, b.load(b.gep(pz, [off], source_etype=storage_type(sdt)),
                                                 typ=storage_type(sdt)), sdt) if pz is not None else None
                        if zm == "original" and z is not None:
                            v = b.fmul(b.fsub(v, z), s)
                        elif zm == "rescale" and z is not None:
                            v = b.fsub(b.fmul(v, s), z)
                        else:
                            v = b.fmul(v, s)
                        v = _round_to(b, v, x.dtype)  # dequant's result type is x's
                    acc = b.call(fma, [xv, v, b.load(acc_slot, typ=F32)])
                b.store(acc, acc_slot)
            acc = b.load(acc_slot, typ=acc_t)
            oidx = b.add(b.mul(b.add(b.mul(bi, C64(M)), m), C64(N)), n)
            _store_result(ctx, b, mm, ptrs, acc, oidx)
    b.ret_void()
    return KernelSpec(fn, mm.B * N, 1)


def in_tiles(b, start, end, T: int, tile, name: str = "t") -> None:
    """[start, end) as ``tile(b, i0, T)`` on whole tiles of T, then ``tile(b, i, 1)`` on each one left (the
    kernels' row loops: T rows of x share each decoded weight block, or T weight rows each row of x)."""
    if T > 1:
        slot = entry_alloca(b, I64)
        b.store(start, slot)
        head = b.function.append_basic_block(f"{name}.head")
        body = b.function.append_basic_block(f"{name}.body")
        done = b.function.append_basic_block(f"{name}.done")
        b.branch(head)
        b.position_at_end(head)
        i0 = b.load(slot, typ=I64)
        b.cbranch(b.icmp_signed("<=", b.add(i0, C64(T)), end), body, done)
        b.position_at_end(body)
        tile(b, i0, T)
        b.store(b.add(i0, C64(T)), slot)
        b.branch(head)
        b.position_at_end(done)
        start = b.load(slot, typ=I64)
    with for_range(b, start, end, name=f"{name}1", vectorize=False) as i:
        tile(b, i, 1)


def passes_over_weights(b, R: int, CH: int, begin, end, T: int, fill, tile) -> None:
    """The block kernels' driver: rows of x in passes of CH (``fill(b, mc, mend)`` copies a pass to the
    scratch), and per pass every weight row n of this thread's range against the pass's rows, T at a time
    (``tile(b, n, m0, mc, T)``)."""
    with for_range(b, 0, R, step=CH, name="mc", vectorize=False) as mc:
        mend = b.select(b.icmp_signed("<", b.add(mc, C64(CH)), C64(R)), b.add(mc, C64(CH)), C64(R))
        fill(b, mc, mend)
        with for_range(b, begin, end, name="n", vectorize=False) as n:
            in_tiles(b, mc, mend, T, lambda b, m0, t: tile(b, n, m0, mc, t))


def scale_to_f32(b, v, dt, f16c: bool):
    """A loaded block scale (its storage) -> f32: one conversion instruction for f16 where the target has F16C,
    else ``to_f32``."""
    if dt.name == "f16" and f16c:
        return b.fpext(b.bitcast(v, ir.HalfType()), F32)
    return to_f32(b, v, dt)


def store_epilogue(ctx, b, op, out, py, v, idx):
    """An f32 result of ``op`` at flat index ``idx`` of its output: the op's epilogue, then stored as ``out``'s
    dtype (the block kernels' store)."""
    v = _epilogue(ctx, b, v, tuple(OPS[op.kind].full_attrs(op.attr)["epilogue"]), out.dtype)
    b.store(from_f32(b, v, out.dtype), b.gep(py, [idx], source_etype=storage_type(out.dtype)))


def _store_result(ctx, b, mm, ptrs, acc, oidx):
    """acc (i32 or f32) at output flat index oidx -> scales, cast, epilogue, store."""
    out = mm.out
    py = ptrs[len(ptrs) - 1]
    if mm.kind == "matmul" and mm.int_acc:
        b.store(acc, b.gep(py, [oidx], source_etype=I32))
        return
    if mm.kind == "qmatmul_i8":
        v = b.sitofp(acc, F32)
        for p, t in ((ptrs[2], mm.extra[0]), (ptrs[3], mm.extra[1])):
            off = _offset_of(b, oidx, out.shape, _bstrides(t.shape, out.shape))
            v = b.fmul(v, b.load(b.gep(p, [off], source_etype=F32), typ=F32))
    else:
        v = _round_to(b, acc, out.dtype)
    v = _epilogue(ctx, b, v, mm.epi, out.dtype)
    b.store(from_f32(b, v, out.dtype), b.gep(py, [oidx], source_etype=storage_type(out.dtype)))


# -- dense f32: float matmul with 2-D f32 weights -------------------------------------------------------------

DTILE = (3, 4)  # (rows of x, weight rows) per step of the transpose_b kernel: 12 vector accumulators
GEMV_ROWS = 4  # weight rows streamed at once by an f32 GEMV (4: 22-35% faster than 1, k = 4096 and 14336)
DCOLS = 1024  # columns of w per pass of the [K, N] kernel: 4 KiB of each w row, reused over every row of x


def _dense_f32(mm: _MM) -> bool:
    return (mm.kind == "matmul" and mm.w.rank == 2 and mm.x.dtype.name == "f32" and mm.w.dtype.name == "f32"
            and mm.out.dtype.name == "f32" and mm.K > 0)


def _lower_dense_f32(ctx, op, mm: _MM):
    """``x f32[..., M, K] @ w f32[K, N]`` (or ``w[N, K]`` with transpose_b), vectorised for the target's width.

    * transpose_b: work item = weight row n. A step takes T rows of x against U weight rows (U * T vector
      accumulators over K, each x vector loaded once per U rows and each w vector once per T rows); a single
      row of x (GEMV) streams GEMV_ROWS weight rows at once (more memory-level parallelism) with K unrolled so
      that each output has 4 / GEMV_ROWS (at least 1) independent accumulators. Lanes are summed once per output, the K tail one element at a time.
    * [K, N]: work item = output column n; per DCOLS columns, the output rows themselves are the accumulators:
      for each k and each row m, ``y[m, n] += x[m, k] * w[k, n]``, a unit-stride loop LLVM vectorises; each
      4 KiB piece of a w row is read once from memory and reused over all rows of x.

    ``llvm.fmuladd`` lets LLVM fuse where the target has FMA. Only the summation order (and one rounding per
    product) differs from numpy's BLAS."""
    K, N = mm.K, mm.N
    R = math.prod(mm.x.shape[:-1])
    fn, b, ptrs, begin, end = ctx.kernel(f"{op.kind}_{op.name}", 3)
    px, pw, py = ptrs
    muladd = ctx.declare("llvm.fmuladd.f32", F32, [F32, F32, F32])
    if not mm.tb:
        with for_range(b, begin, end, step=DCOLS, name="nc", vectorize=False) as n0:
            n1 = b.select(b.icmp_signed("<", b.add(n0, C64(DCOLS)), end), b.add(n0, C64(DCOLS)), end)
            with for_range(b, 0, R, name="mz", vectorize=False) as m:
                with for_range(b, n0, n1, name="z") as n:
                    b.store(ir.Constant(F32, 0.0), b.gep(py, [b.add(b.mul(m, C64(N)), n)], source_etype=F32))
            with for_range(b, 0, K, name="k", vectorize=False) as k:
                wrow = b.mul(k, C64(N))
                with for_range(b, 0, R, name="m", vectorize=False) as m:
                    xk = b.load(b.gep(px, [b.add(b.mul(m, C64(K)), k)], source_etype=F32), typ=F32)
                    yrow = b.mul(m, C64(N))
                    with for_range(b, n0, n1, name="n") as n:
                        yp = b.gep(py, [b.add(yrow, n)], source_etype=F32)
                        wv = b.load(b.gep(pw, [b.add(wrow, n)], source_etype=F32), typ=F32)
                        b.store(b.call(muladd, [xk, wv, b.load(yp, typ=F32)]), yp)
        b.ret_void()
        return KernelSpec(fn, N, 1)

    VW = max(4, min(16, ctx.target.vector_bits // 32))
    vt = ir.VectorType(F32, VW)
    vmuladd = ctx.declare(f"llvm.fmuladd.v{VW}f32", vt, [vt, vt, vt])
    vsum = ctx.declare(f"llvm.vector.reduce.fadd.v{VW}f32", F32, [F32, vt])
    T, U = DTILE
    T, U = min(T, R), min(U if R > 1 else GEMV_ROWS, N)
    nvec = K // VW

    def step(b, ms, ns, depth):
        """y[ms, ns] for rows ms of x and rows ns of w: vectors of K `depth` deep, then the tail."""
        accs = {(t, u, d): entry_alloca(b, vt) for t in range(len(ms)) for u in range(len(ns))
                for d in range(depth)}
        tails = {(t, u): entry_alloca(b, F32) for t in range(len(ms)) for u in range(len(ns))}
        for a in accs.values():
            b.store(ir.Constant(vt, None), a)
        for a in tails.values():
            b.store(ir.Constant(F32, 0.0), a)
        xrows = [b.mul(m, C64(K)) for m in ms]
        wrows = [b.mul(n, C64(K)) for n in ns]

        def vectors(b, k0, d_count):
            for d in range(d_count):
                k = b.add(k0, C64(d * VW))
                xv = [b.load(b.gep(px, [b.add(r, k)], source_etype=F32), typ=vt, align=4) for r in xrows]
                for u, r in enumerate(wrows):
                    wv = b.load(b.gep(pw, [b.add(r, k)], source_etype=F32), typ=vt, align=4)
                    for t in range(len(ms)):
                        a = accs[t, u, d]
                        b.store(b.call(vmuladd, [xv[t], wv, b.load(a, typ=vt)]), a)

        deep = nvec // depth * depth
        if deep:
            with for_range(b, 0, deep * VW, step=depth * VW, name="kv", vectorize=False) as k0:
                vectors(b, k0, depth)
        if deep < nvec:
            with for_range(b, deep * VW, nvec * VW, step=VW, name="kr", vectorize=False) as k0:
                vectors(b, k0, 1)
        if nvec * VW < K:
            with for_range(b, nvec * VW, K, name="kt", vectorize=False) as k:
                xs = [b.load(b.gep(px, [b.add(r, k)], source_etype=F32), typ=F32) for r in xrows]
                for u, r in enumerate(wrows):
                    wv = b.load(b.gep(pw, [b.add(r, k)], source_etype=F32), typ=F32)
                    for t in range(len(ms)):
                        b.store(b.call(muladd, [xs[t], wv, b.load(tails[t, u], typ=F32)]), tails[t, u])
        for t, m in enumerate(ms):
            for u, n in enumerate(ns):
                v = b.load(accs[t, u, 0], typ=vt)
                for d in range(1, depth):
                    v = b.fadd(v, b.load(accs[t, u, d], typ=vt))
                dot = b.fadd(b.call(vsum, [ir.Constant(F32, -0.0), v]), b.load(tails[t, u], typ=F32))
                b.store(dot, b.gep(py, [b.add(b.mul(m, C64(N)), n)], source_etype=F32))

    def rows(b, ns):
        """Every row of x against weight rows ns: tiles of T rows, then the rest one by one."""
        depth = max(1, 4 // len(ns)) if R == 1 else 1
        full = R // T * T
        if T > 1 and full:
            with for_range(b, 0, full, step=T, name="mt", vectorize=False) as m0:
                step(b, [b.add(m0, C64(t)) for t in range(T)], ns, depth)
        with for_range(b, full if T > 1 else 0, R, name="m1", vectorize=False) as m:
            step(b, [m], ns, depth)

    u_end = b.sub(end, b.urem(b.sub(end, begin), C64(U)))
    if U > 1:
        with for_range(b, begin, u_end, step=U, name="nu", vectorize=False) as n0:
            rows(b, [b.add(n0, C64(u)) for u in range(U)])
        tail_start = u_end
    else:
        tail_start = begin
    with for_range(b, tail_start, end, name="n", vectorize=False) as n:
        rows(b, [n])
    b.ret_void()
    return KernelSpec(fn, N, U)


# -- fast: transpose_b, 2-D weights in a SIMD block packing ------------------------------------------------

Piece = tuple[list[tuple[int, int]], list[list[tuple[int, int]]]]


@dataclass(frozen=True)
class FastPlan:
    """What the fast kernel (``_lower_fast``) decodes and how it multiplies, decided once per op by one planner
    (``_fast_plan``) from the op, the packing's declaration and the target."""

    raw: bool  # unpacked int8 weights (the bytes are the codes)
    radix: int  # 3: base-3 digits (decoded by the multiply trick); 0: bit fields
    shifts: tuple[int, ...]  # the bit field of slot q: (byte >> shifts[q]) & mask
    mask: int
    B: int  # bytes of a block's codes
    block: int  # codes per block
    stride: int  # bytes from one block to the next (codes and inline scales)
    hb: int  # bytes from a block's start to its codes
    xor: int  # value = (code ^ xor) - zero, code ^ xor unsigned
    zero: int
    xor_byte: int  # the XOR making every code of a packed byte its offset code (0: none)
    subs: int  # codes per byte: 32-code groups per 32-byte piece
    sb_codes: int  # codes of a superblock (the whole blocks that fill 32-byte pieces)
    sb_bytes: int
    chunks: tuple[Piece, ...]  # per 32-byte piece: its (byte offset, length) parts, and per sub q the k ranges
    madd: bool  # vpmaddubsw + vpmaddwd (AVX2)
    vnni: bool  # vpdpbusd (AVX512-VNNI or AVX-VNNI)
    wd: bool  # i16 products by vpmaddwd (raw int8 weights without VNNI)
    s_row: bool = False  # qmatmul: one scale per weight row, no zero: applied once to the row's sum
    s_n: int = 0  # separate scale: elements per weight row of scales (0: one row for all)
    s_n_group: int = 0  # separate scale: weight rows per scale row (0: one each)
    s_k_group: int = 0  # separate scale: k per scale along a row (0: one per row)


def _fast_layout(L) -> bool:
    """Whether the fast kernel decodes this layout (ladder.packing.Packing): 32-byte vectors of bit fields of at
    most 4 bits (shift + AND each) or base-3 digits, in blocks of 16 bytes (two blocks a vector) or in chunks
    (and blocks) of whole 32-byte vectors."""
    if L.planes or L.radix not in (0, 3) or (not L.radix and L.bits > 4):
        return False
    return (L.block_bytes == L.chunk_bytes == 16) or (L.chunk_bytes % 32 == 0 and L.block_bytes % 32 == 0)


def _fast_plan(ctx, mm: _MM) -> FastPlan | None:
    """The fast kernel's plan for ``transpose_b`` with 2-D weights (packed in a layout ``_fast_layout`` takes, or
    unpacked int8 for qmatmul_i8), or None where another kernel is needed."""
    w = mm.w
    if (mm.kind == "qmatmul_i8" and mm.tb and w.rank == 2 and not mm.packed and w.dtype.name == "i8"
            and mm.K > 0 and mm.x.dtype.name in ("i8", "i1", "ternary")):
        return _raw_i8_plan(ctx)
    if mm.kind not in ("qmatmul", "qmatmul_i8") or not mm.tb or w.rank != 2 or not mm.packed:
        return None
    base = w.packing.base if mm.bscaled else w.packing
    if not _fast_layout(base) or base.value_offset(w.dtype) is None or mm.K == 0:
        return None
    scales = {}
    if mm.kind == "qmatmul_i8":
        if mm.x.dtype.name not in ("i8", "i1", "ternary"):  # held as sign-extended bytes
            return None
    else:
        if mm.x.dtype.name != "f32":
            return None
        if not mm.bscaled:
            scales = _separate_scales(mm)
            if scales is None:
                return None
    hb = w.packing.codes_offset if mm.bscaled else 0
    stride = w.packing.stride if mm.bscaled else base.block_bytes
    # a superblock: the codes of whole blocks that fill 32-byte pieces
    per = 2 if base.block_bytes == 16 else 1  # blocks per superblock
    madd = mm.kind == "qmatmul_i8" and ctx.target.supports("i8-madd")
    xor, zero = base.value_offset(w.dtype)
    return FastPlan(
        raw=False, radix=base.radix, shifts=base.slot_shifts, mask=base.mask, B=base.block_bytes,
        block=base.block, stride=stride, hb=hb, xor=xor, zero=zero, xor_byte=base.byte_xor(w.dtype),
        subs=base.slots, sb_codes=base.block * per, sb_bytes=stride * per, chunks=_pieces(base, hb, stride),
        # VNNI: one vpdpbusd (u8 x i8, groups of 4 summed into i32 lanes, no saturation) replaces maddubs + maddwd
        madd=madd, vnni=madd and ctx.target.supports("i8-dot"), wd=False, **scales)


def _raw_i8_plan(ctx) -> FastPlan:
    """qmatmul_i8 over unpacked int8 weights (llama.cpp's Q8_0 work): rows of plain bytes, 32 per step. VNNI:
    vpdpbusd on offset codes (w ^ 0x80, zero 128); AVX2: both sides sign-extended to i16 and vpmaddwd (exact:
    vpmaddubsw would saturate on 255 * -128 pairs); elsewhere i32 MACs."""
    vnni = ctx.target.supports("i8-madd") and ctx.target.supports("i8-dot")
    wd = not vnni and ctx.target.supports("i8-madd")
    xor, zero = (0, 0) if wd else (0x80, 128)  # unsigned offset codes where the product wants u8
    return FastPlan(raw=True, radix=0, shifts=(0,), mask=0xFF, B=32, block=32, stride=32, hb=0, xor=xor, zero=zero,
                    xor_byte=xor, subs=1, sb_codes=32, sb_bytes=32, chunks=(([(0, 32)], [[(0, 32)]]),),
                    madd=vnni, vnni=vnni, wd=wd)


def _separate_scales(mm: _MM) -> dict | None:
    """qmatmul's scale operand as the fast kernel reads it (FastPlan.s_*), or None when it is not constant over
    8 consecutive k."""
    s = mm.extra[0]
    axis = mm.attrs["axis"] % 2
    group = mm.attrs["group"] if s.size != 1 else -1
    out = {"s_n": 0, "s_n_group": 0, "s_k_group": 0}
    if s.size != 1:
        if s.shape[1] != 1 and not (axis == 1 and group > 0 and group % 8 == 0):
            return None  # the scale must be constant over 8 consecutive k
        out["s_n"] = 0 if s.shape[0] == 1 else s.shape[1]
        out["s_n_group"] = group if (axis == 0 and group > 0) else 0
        out["s_k_group"] = group if (axis == 1 and group > 0 and s.shape[1] != 1) else 0
    zm = mm.attrs.get("zero_mode", "none")
    out["s_row"] = not out["s_k_group"] and (zm == "none" or len(mm.extra) < 2)
    return out


def _pieces(base, hb: int, stride: int) -> tuple[Piece, ...]:
    """The 32-byte pieces of a superblock: for each, its (byte offset in the superblock, length) parts and, for
    each sub q, the k offsets (relative to the superblock) of each part: slot q of byte j of a layout chunk of C
    bytes is code C q + j of the chunk (Packing.place)."""
    subs, B = base.slots, base.block_bytes
    if B == 16:  # two blocks
        return (([(hb, 16), (stride + hb, 16)], [[(q * 16, 16), (base.block + q * 16, 16)] for q in range(subs)]),)
    out = []
    for v in range(B // 32):
        c, o = divmod(32 * v, base.chunk_bytes)
        out.append(([(hb + 32 * v, 32)],
                    [[(c * base.chunk_bytes * subs + q * base.chunk_bytes + o, 32)] for q in range(subs)]))
    return tuple(out)


def _lower_fast(ctx, op, mm: _MM, p: FastPlan):
    """Work item = one weight row n. Rows are taken U at a time (U weight rows decoded per 32-byte step, their
    accumulators independent) against tiles of T rows of x: each decoded piece is used T times. Thread splits
    are multiples of U, so every thread streams whole contiguous groups of rows."""
    x, w = mm.x, mm.w
    K, N = mm.K, mm.N
    R = math.prod(x.shape[:-1])  # rows of x (batch dims flattened; w is 2-D)
    n_ops = len(op.operands)
    fn, b, ptrs, begin, end = ctx.kernel(f"{op.kind}_{op.name}", n_ops + 1)
    px, pw = ptrs[0], ptrs[1]
    dec = None if p.raw else Decoder(ctx, w)
    row_bytes = w.storage_shape[-1]
    w_bytes = N * row_bytes
    nsb = K // p.sb_codes  # full superblocks
    k_tail = nsb * p.sb_codes
    # a partial last block: its 32-code groups that lie wholly below K are decoded as vectors too (rows are
    # padded to whole blocks, so the full block is read in bounds); the rest one code at a time
    part_groups, k_vec = set(), k_tail
    if k_tail < K and p.B >= 32 and not p.raw:  # raw rows are not padded to whole blocks
        rem = (K - k_tail) // 32 * 32
        for ci, (_, xk) in enumerate(p.chunks):
            for q in range(p.subs):
                if all(o + n_ <= rem for o, n_ in xk[q]):
                    part_groups.add((ci, q))
        k_vec = k_tail + rem
    is_int = mm.kind == "qmatmul_i8"
    # U weight rows x T rows of x per step (accumulators: U * T registers)
    if is_int and not p.madd and not p.wd:
        U, T = 1, MTILE
    elif R == 1:
        U, T = 1, 1  # several rows at once make the hardware prefetcher see a scattered stream: 2x slower
    else:
        U, T = 2, MTILE
    U = max(1, min(U, N))
    v32i8 = ir.VectorType(I8, 32)
    v16i16 = ir.VectorType(I16, 16)
    v8i32 = ir.VectorType(I32, 8)
    v32i32 = ir.VectorType(I32, 32)
    v8f = ir.VectorType(F32, 8)
    if is_int:
        acc_t = v8i32 if (p.madd or p.wd) else v32i32
    else:
        acc_t = v8f
    red_i = ctx.declare(f"llvm.vector.reduce.add.v{acc_t.count}i32", I32, [acc_t]) if is_int else None
    red_f = ctx.declare("llvm.vector.reduce.fadd.v8f32", F32, [F32, v8f]) if not is_int else None
    fma_v = ctx.declare("llvm.fma.v8f32", v8f, [v8f, v8f, v8f])
    fma_s = ctx.declare("llvm.fma.f32", F32, [F32, F32, F32])
    if p.madd:
        maddubs = ctx.declare("llvm.x86.avx2.pmadd.ub.sw", v16i16, [v32i8, v32i8])
    if p.madd or p.wd:
        maddwd = ctx.declare("llvm.x86.avx2.pmadd.wd", v8i32, [v16i16, v16i16])
        ones16 = ir.Constant(v16i16, [1] * 16)
    if p.vnni:  # _mm256_dpbusd_epi32(src, a: u8, b: i8) (AVX512-VNNI + VL, or AVX-VNNI)
        dpbusd = ctx.declare("llvm.x86.avx512.vpdpbusd.256", v8i32, [v8i32, v8i32, v8i32])
    mask = ir.Constant(v32i8, [p.mask] * 32)
    xorc = ir.Constant(v32i8, [p.xor_byte] * 32)
    zero_i8 = ir.Constant(v32i8, [p.zero] * 32)
    xsum_slot = entry_alloca(b, I32, MCHUNK)
    # float: NF independent accumulators per output (FMA latency, not bandwidth, bounds one chain)
    NF = 1 if is_int else max(1, min(4, 8 // (U * T)))
    acc_slots = [[[entry_alloca(b, acc_t) for _ in range(NF)] for _ in range(U)] for _ in range(T)]
    tail_slots = [[entry_alloca(b, I32 if is_int else F32) for _ in range(U)] for _ in range(T)]

    avx2 = ctx.target.supports("i8-madd")
    prefetch = ctx.declare("llvm.prefetch.p0", ir.VoidType(), [ir.PointerType(), I32, I32, I32])

    def barrier(b, v):
        """v unchanged, opaque to the optimizer (an empty asm): keeps 3 * (3 * v) as two byte adds rather than
        a byte multiply by 9, 27, 81, which x86 emulates in 16-bit lanes."""
        if not avx2:
            return v
        return b.asm(ir.FunctionType(v.type, [v.type]), "", "=x,0", [v], False)

    def codes_of(b, packed, nq):
        """The first nq sub-vectors of unsigned codes of a 32-byte piece (one per group of 32 k)."""
        if p.raw:
            return [packed]  # int8 weights: the bytes themselves (offset by 0x80 for VNNI)
        if p.radix:  # base 3 (the only radix _fast_layout takes)
            # trit q of byte v: ((v * 3^q) mod 256) * 3 >> 8 = [v_q > 85] + [v_q > 170], v_q = v * 3^q mod 256
            # = 3 v_(q-1) (two byte adds). Kept biased by 0x80 ((v ^ 0x80) * 3 = 3 v ^ 0x80 mod 256) for signed
            # compares: t = 0 - (v'_q > -43) - (v'_q > 42) as masks
            out, v = [], b.xor(packed, ir.Constant(v32i8, [0x80] * 32))
            for q in range(nq):
                if q:
                    v = barrier(b, b.add(b.add(v, v), v))
                m1 = b.sext(b.icmp_signed(">", v, ir.Constant(v32i8, [85 - 128] * 32)), v32i8)
                m2 = b.sext(b.icmp_signed(">", v, ir.Constant(v32i8, [170 - 128] * 32)), v32i8)
                out.append(b.sub(b.sub(ir.Constant(v32i8, [0] * 32), m1), m2))
            return out
        out = []
        for q in range(nq):  # slot q: its field, by the layout's shift and mask
            sh = p.shifts[q]
            v = b.lshr(packed, ir.Constant(v32i8, [sh] * 32)) if sh else packed
            out.append(b.and_(v, mask))
        return out

    def x_vec(b, xrow, sb_k, pieces):
        vecs = [b.load(b.gep(px, [b.add(xrow, b.add(sb_k, C64(o)))], source_etype=I8),
                       typ=ir.VectorType(I8, n), align=1) for o, n in pieces]
        if len(vecs) == 1:
            return vecs[0]
        return b.shuffle_vector(vecs[0], vecs[1], ir.Constant(ir.VectorType(I32, 32), list(range(32))))

    def x_f32(b, xrow, k):
        return b.load(b.gep(px, [b.add(xrow, k)], source_etype=F32), typ=v8f, align=4)

    def scale_at(b, n, wrow, k, which):
        """f32 scale (or zero) for weight row n at position k (constant over 8 consecutive k)."""
        if mm.bscaled:
            return dec.block_scale(b, wrow, k, which)
        pt = ptrs[2 + which]
        sdt = mm.extra[which].dtype
        off = C64(0)
        if p.s_n:
            ni = b.udiv(n, C64(p.s_n_group)) if p.s_n_group else n
            off = b.mul(ni, C64(p.s_n))
        if p.s_k_group:
            off = b.add(off, b.udiv(k, C64(p.s_k_group)))
        return to_f32(b, b.load(b.gep(pt, [off], source_etype=storage_type(sdt)), typ=storage_type(sdt)), sdt)

    zm = mm.attrs.get("zero_mode", "none")
    has_zero = zm != "none" and (len(mm.extra) > 1 or (mm.bscaled and dec.zero))

    def dequant(b, vals, s, z):
        if p.s_row:
            return vals  # the row's scale multiplies its sum
        if has_zero and zm == "original":
            return b.fmul(b.fsub(vals, z), s)
        if has_zero and zm == "rescale":
            return b.fsub(b.fmul(vals, s), z)
        return b.fmul(vals, s)

    def splat(b, v):
        vec = b.insert_element(ir.Constant(v8f, None), v, C32(0))
        return b.shuffle_vector(vec, ir.Constant(v8f, None), ir.Constant(v8i32, [0] * 8))

    def tile(b, m0, T, ns, mchunk0):
        """Rows m0 .. m0+T-1 of x against weight rows ns (consecutive)."""
        U = len(ns)
        wrows = [_gep8(b, pw, b.mul(n, C64(row_bytes))) for n in ns]
        xrows = [b.mul(b.add(m0, C64(t)), C64(K)) for t in range(T)]
        for t in range(T):
            for u in range(U):
                for slot in acc_slots[t][u]:
                    b.store(ir.Constant(acc_t, None), slot)
        def step(b, sb, allowed=None):
            """One superblock (allowed: the (chunk, sub) pairs to use, for the partial last one)."""
            sb_k = b.mul(sb, C64(p.sb_codes))
            sb_off = b.mul(sb, C64(p.sb_bytes))
            accs = [[[b.load(a, typ=acc_t) for a in acc_slots[t][u]] for u in range(U)] for t in range(T)]
            for ci, (parts, xk) in enumerate(p.chunks):
                qs = [q for q in range(p.subs) if allowed is None or (ci, q) in allowed]
                if not qs:
                    continue
                def decode(u):
                    sb_w = _gep8(b, wrows[u], sb_off)
                    if ci == 0:  # a hint, never a read; kept inside the weights all the same
                        off = b.add(b.add(b.mul(ns[u], C64(row_bytes)), sb_off), C64(PREFETCH))
                        off = b.select(b.icmp_signed("<", off, C64(w_bytes)), off, C64(w_bytes - 1))
                        b.call(prefetch, [_gep8(b, pw, off), C32(0), C32(3), C32(1)])
                    pv = [b.load(_gep8(b, sb_w, o), typ=ir.VectorType(I8, n_), align=1) for o, n_ in parts]
                    packed = pv[0] if len(pv) == 1 else b.shuffle_vector(
                        pv[0], pv[1], ir.Constant(ir.VectorType(I32, 32), list(range(32))))
                    if p.xor_byte:
                        packed = b.xor(packed, xorc)
                    return codes_of(b, packed, max(qs) + 1)

                if is_int:
                    # one weight row at a time: its codes, then every row of x (x stays in L1; loads are cheap,
                    # registers are not)
                    for u in range(U):
                        cu = decode(u)
                        for t in range(T):
                            xvs = {q: x_vec(b, xrows[t], sb_k, xk[q]) for q in qs}
                            if p.vnni:
                                a = accs[t][u][0]
                                for q in qs:
                                    a = b.call(dpbusd, [a, b.bitcast(cu[q], v8i32), b.bitcast(xvs[q], v8i32)])
                                accs[t][u][0] = a
                            elif p.wd:  # i16 lanes: exact pairwise products summed to i32
                                a = accs[t][u][0]
                                for half in (range(16), range(16, 32)):
                                    sel = ir.Constant(ir.VectorType(I32, 16), list(half))
                                    wh = b.sext(b.shuffle_vector(cu[0], ir.Constant(v32i8, None), sel), v16i16)
                                    xh = b.sext(b.shuffle_vector(xvs[0], ir.Constant(v32i8, None), sel), v16i16)
                                    a = b.add(a, b.call(maddwd, [wh, xh]))
                                accs[t][u][0] = a
                            elif p.madd:
                                part = None
                                for q in qs:
                                    pr = b.call(maddubs, [cu[q], xvs[q]])
                                    part = pr if part is None else b.add(part, pr)
                                accs[t][u][0] = b.add(accs[t][u][0], b.call(maddwd, [part, ones16]))
                            else:
                                for q in qs:
                                    accs[t][u][0] = b.add(accs[t][u][0], b.mul(b.zext(cu[q], v32i32),
                                                                               b.sext(xvs[q], v32i32)))
                else:
                    codes = [decode(u) for u in range(U)]
                    for q in qs:
                        # each 8-lane group is 8 consecutive k
                        lanes = []
                        for o, n_ in xk[q]:
                            lanes += [o + i for i in range(n_)]
                        vals = [b.sub(codes[u][q], zero_i8) if p.zero else codes[u][q] for u in range(U)]
                        for g8 in range(4):
                            sel = ir.Constant(v8i32, list(range(8 * g8, 8 * g8 + 8)))
                            kk = b.add(sb_k, C64(lanes[8 * g8]))
                            wvs = []
                            for u in range(U):
                                v8 = b.shuffle_vector(vals[u], ir.Constant(v32i8, None), sel)
                                vf = b.sitofp(b.sext(v8, v8i32), v8f)
                                if p.s_row:
                                    wvs.append(vf)
                                    continue
                                s = splat(b, scale_at(b, ns[u], wrows[u], kk, 0))
                                z = splat(b, scale_at(b, ns[u], wrows[u], kk, 1)) if has_zero else None
                                wvs.append(dequant(b, vf, s, z))
                            for t in range(T):
                                xv = x_f32(b, xrows[t], kk)
                                for u in range(U):
                                    a = accs[t][u]
                                    a[g8 % NF] = b.call(fma_v, [xv, wvs[u], a[g8 % NF]])
            for t in range(T):
                for u in range(U):
                    for a, slot in zip(accs[t][u], acc_slots[t][u]):
                        b.store(a, slot)

        with for_range(b, 0, nsb, name="sb", vectorize=False) as sb:
            step(b, sb)
        if part_groups:
            step(b, C64(nsb), part_groups)
        # tail: scalar decode of k in [k_vec, K)
        for t in range(T):
            for u in range(U):
                b.store(ir.Constant(I32 if is_int else F32, 0 if is_int else 0.0), tail_slots[t][u])
        if k_vec < K:
            with for_range(b, k_vec, K, name="kt", vectorize=False) as k:
                for u in range(U):
                    code = None if p.raw else dec.code(b, wrows[u], k)
                    if is_int:
                        wv = b.sext(b.load(_gep8(b, wrows[u], k), typ=I8), I32) if p.raw else dec.int_value(b, code)
                        for t in range(T):
                            xv = b.sext(b.load(b.gep(px, [b.add(xrows[t], k)], source_etype=I8), typ=I8), I32)
                            sl = tail_slots[t][u]
                            b.store(b.add(b.load(sl, typ=I32), b.mul(xv, wv)), sl)
                    else:
                        v = dec.f32_value(b, code)
                        if p.s_row:
                            wv = v
                        else:
                            s = scale_at(b, ns[u], wrows[u], k, 0)
                            z = scale_at(b, ns[u], wrows[u], k, 1) if has_zero else None
                            wv = dequant(b, v, s, z)
                        for t in range(T):
                            xv = b.load(b.gep(px, [b.add(xrows[t], k)], source_etype=F32), typ=F32)
                            sl = tail_slots[t][u]
                            b.store(b.call(fma_s, [xv, wv, b.load(sl, typ=F32)]), sl)
        for u in range(U):
            srow = scale_at(b, ns[u], wrows[u], C64(0), 0) if (not is_int and p.s_row) else None
            for t in range(T):
                accv = b.load(acc_slots[t][u][0], typ=acc_t)
                for slot in acc_slots[t][u][1:]:
                    accv = b.fadd(accv, b.load(slot, typ=acc_t))
                if is_int:
                    dot = b.add(b.call(red_i, [accv]), b.load(tail_slots[t][u], typ=I32))
                    if p.zero:
                        mi = b.sub(b.add(m0, C64(t)), mchunk0)
                        xs = b.load(b.gep(xsum_slot, [mi], source_etype=I32), typ=I32)
                        dot = b.sub(dot, b.mul(C32(p.zero), xs))
                else:
                    dot = b.fadd(b.call(red_f, [ir.Constant(F32, -0.0), accv]), b.load(tail_slots[t][u], typ=F32))
                    if srow is not None:
                        dot = b.fmul(dot, srow)
                oidx = b.add(b.mul(b.add(m0, C64(t)), C64(N)), ns[u])
                _store_result(ctx, b, mm, ptrs, dot, oidx)

    def rows_loop(b, ns, mc, mend):
        """All rows of x in [mc, mend) against weight rows ns: tiles of T rows, then single rows."""
        in_tiles(b, mc, mend, T, lambda b, m0, t: tile(b, m0, t, ns, mc))

    with for_range(b, 0, R, step=MCHUNK, name="mc", vectorize=False) as mc:
        mend = b.select(b.icmp_signed("<", b.add(mc, C64(MCHUNK)), C64(R)), b.add(mc, C64(MCHUNK)), C64(R))
        if is_int and p.zero:
            with for_range(b, mc, mend, name="xs", vectorize=False) as m:
                xrow = _gep8(b, px, b.mul(m, C64(K)))
                # the tail decodes values directly: sum x over [0, k_vec), 32 at a time (i16 lanes: 256 * 128
                # fits), then one by one
                nv = k_vec // 32
                xsv = C32(0)
                if nv:
                    v16s = ir.VectorType(I16, 32)
                    red16 = ctx.declare("llvm.vector.reduce.add.v32i32", I32, [v32i32])
                    vs = entry_alloca(b, v32i32)
                    b.store(ir.Constant(v32i32, None), vs)
                    with for_range(b, 0, nv, step=256, name="xo", vectorize=False) as xo:
                        hi = b.select(b.icmp_signed("<", b.add(xo, C64(256)), C64(nv)), b.add(xo, C64(256)), C64(nv))
                        s16 = entry_alloca(b, v16s)
                        b.store(ir.Constant(v16s, None), s16)
                        with for_range(b, xo, hi, name="xv", vectorize=False) as j:
                            xv = b.load(_gep8(b, xrow, b.mul(j, C64(32))), typ=v32i8, align=1)
                            b.store(b.add(b.load(s16, typ=v16s), b.sext(xv, v16s)), s16)
                        b.store(b.add(b.load(vs, typ=v32i32), b.sext(b.load(s16, typ=v16s), v32i32)), vs)
                    xsv = b.call(red16, [b.load(vs, typ=v32i32)])
                sl = entry_alloca(b, I32)
                b.store(xsv, sl)
                if nv * 32 < k_vec:
                    with for_range(b, nv * 32, k_vec, name="xk", vectorize=False) as k:
                        xv = b.sext(b.load(_gep8(b, xrow, k), typ=I8), I32)
                        b.store(b.add(b.load(sl, typ=I32), xv), sl)
                b.store(b.load(sl, typ=I32), b.gep(xsum_slot, [b.sub(m, mc)], source_etype=I32))
        # groups of U consecutive weight rows, then the rest one by one
        in_tiles(b, begin, end, U, lambda b, n0, u: rows_loop(b, [b.add(n0, C64(i)) for i in range(u)], mc, mend),
                 name="nu")
    b.ret_void()
    return KernelSpec(fn, N, U)
