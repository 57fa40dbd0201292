"""Lowerings of the T-MAC ops (ladder.ops.lut): ``lut_precompute`` and ``lut_matmul``.

``lut_precompute``: work item = one row of x. Per group of g activations the 2^(g-1) entries with top bit 0 are
summed left to right and the rest mirrored (T[~i] = -T[i]); exact tables are stored byte-split (low, high),
quantized ones in two sweeps (max |T| of a group is its sum of |x|, so the scale comes first without a buffer).
Scalar code, the same operations in the same order as the reference: bit-exact.

``lut_matmul``: work item = one block of ``rows`` weight rows (R). For every row of x, every group j and plane b
the R/q bytes (q = 8 / g indices per byte) of the block's indices are loaded, split into an R-lane index
vector (field f of byte i is row q i + f; lanes are field-major) and looked up in group j's table broadcast
to every 16-byte lane:

* ``pshufb`` (``llvm.x86.ssse3.pshuf.b.128`` / ``llvm.x86.avx2.pshuf.b`` / ``llvm.x86.avx512.pshuf.b.512``)
  when R is 16, 32 or 64 and the target has SSSE3 / AVX2 / AVX-512BW;
* otherwise a portable lookup: one scalar load per lane (any R, SSE2-only x86, any CPU); also used for f32
  tables, whose entries are not bytes.

Exact tables take two shuffles (low and high bytes, interleaved into i16 the way ``punpcklbw``/``punpckhbw``
do, so accumulator lanes follow ``_Plan.lane_order``); quantized ones one, two groups
averaged first with ``fast_aggregation``. Entries add into one i16 vector per plane for at most ``CH`` groups
(63 exact, 258 int8: no overflow), then into i32 as ``sum_b acc_b << b``; a quantized table's
activation group is then scaled into an f32 accumulator; f32 entries add into one f32 vector per plane, in
order. Finally ``(a U + beta S) / 2``, the scales and the epilogue, lane by lane, storing only rows < n (the
padded rows of the last block are computed, never written). ``unroll`` groups per loop step. Every load
is inside its buffer: weights are padded to whole blocks by the lut pass, tables hold whole groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ladder.backends.llvm.codegen import (
    C32,
    C64,
    F32,
    I8,
    I16,
    I32,
    I64,
    KernelSpec,
    entry_alloca,
    for_range,
    lowers,
)
from ladder.backends.llvm.lowerings.broadcast import bstrides, offset_of
from ladder.backends.llvm.lowerings.epilogue import apply_epilogue
from llvmlite import ir

from ladder.errors import LadderError
from ladder.ops import OPS
from ladder.ops.lut import (
    EXACT_LIMIT,
    LutMatMul,
    beta,
    groups_per_scale,
    sign_matrix,
    weight_form,
)

# groups per i16 accumulation before widening: no overflow (63 x 512, 258 x 127 < 2^15); even, for pairs
CH = {"exact": 32767 // EXACT_LIMIT, "quantized": 32767 // 127 // 2 * 2}
SHUFFLES = {16: ("llvm.x86.ssse3.pshuf.b.128", ("ssse3", "avx2", "avx512bw")),
            32: ("llvm.x86.avx2.pshuf.b", ("avx2",)), 64: ("llvm.x86.avx512.pshuf.b.512", ("avx512bw",))}


def _gep(b, ptr, off, etype=I8):
    return b.gep(ptr, [off if isinstance(off, ir.Value) else C64(off)], source_etype=etype)


def _vec(t, n):
    return ir.VectorType(t, n)


def _splat(b, v, n):
    vec = b.insert_element(ir.Constant(_vec(v.type, n), None), v, C32(0))
    return b.shuffle_vector(vec, ir.Constant(_vec(v.type, n), None), ir.Constant(_vec(I32, n), [0] * n))


# -- lut_precompute ------------------------------------------------------------------------------------------

@lowers("lut_precompute")
def lower_lut_precompute(ctx, op, ins, outs):
    a = OPS[op.kind].full_attrs(op.attr)
    g, x = a["g"], ins[0]
    k, e, half = x.shape[-1], 1 << g, 1 << (g - 1)
    n_groups = -(-k // g)
    rows = math.prod(x.shape[:-1])
    mode = "exact" if x.dtype.name == "i8" else ("quantized" if a["quantize"] else "float")
    fn, b, ptrs, begin, end = ctx.kernel(f"{op.kind}_{op.results[0].name}", 1 + len(outs))
    px, ptab, psum = ptrs[0], ptrs[1], ptrs[2]
    signs = sign_matrix(g)[:half]
    is_int = mode == "exact"
    xt = I8 if is_int else F32
    acc_t = I32 if is_int else F32
    zero = ir.Constant(acc_t, 0 if is_int else 0.0)

    def x_at(b, row, kk):
        v = b.load(_gep(b, px, b.add(b.mul(row, C64(k)), kk), xt), typ=xt)
        return b.sext(v, I32) if is_int else v

    def group_xs(b, row, j, count):
        return [x_at(b, row, b.add(b.mul(j, C64(g)), C64(t))) for t in range(count)]

    def add(b, u, v, sign):
        if is_int:
            return b.add(u, v) if sign > 0 else b.sub(u, v)
        return b.fadd(u, v) if sign > 0 else b.fsub(u, v)

    def entries(b, xs):
        """The 2^(g-1) low entries: ((s0 x0 + s1 x1) + ...) in order; missing x are 0 (the padded group)."""
        xs = xs + [zero] * (g - len(xs))
        out = []
        for i in range(half):
            acc = xs[0] if signs[i, 0] > 0 else (b.neg(xs[0]) if is_int else b.fneg(xs[0]))
            for t in range(1, g):
                acc = add(b, acc, xs[t], signs[i, t])
            out.append(acc)
        return out

    def for_groups(b, row, emit):
        """emit(b, j, xs) for every group: the full ones in a loop, the partial last one after it."""
        full = k // g
        if full:
            with for_range(b, 0, full, name="j", vectorize=False) as j:
                emit(b, j, group_xs(b, row, j, g))
        if full < n_groups:
            emit(b, C64(full), group_xs(b, row, C64(full), k - full * g))

    scale_slot = entry_alloca(b, F32)
    sum_slot = entry_alloca(b, acc_t)
    gps = groups_per_scale(a["act_group"], g, n_groups)
    rint = ctx.declare("llvm.rint.f32", F32, [F32])
    fabs = ctx.declare("llvm.fabs.f32", F32, [F32])

    def store_exact(b, row, j, xs):
        base = b.mul(b.add(b.mul(row, C64(n_groups)), j), C64(2 * e))
        for i, v in enumerate(entries(b, xs)):
            for idx, val in ((i, v), (e - 1 - i, b.neg(v))):
                b.store(b.trunc(val, I8), _gep(b, ptab, b.add(base, C64(idx))))
                b.store(b.trunc(b.ashr(val, C32(8)), I8), _gep(b, ptab, b.add(base, C64(e + idx))))

    def store_float(b, row, j, xs):
        base = b.mul(b.add(b.mul(row, C64(n_groups)), j), C64(e))
        for i, v in enumerate(entries(b, xs)):
            b.store(v, _gep(b, ptab, b.add(base, C64(i)), F32))
            b.store(b.fneg(v), _gep(b, ptab, b.add(base, C64(e - 1 - i)), F32))

    def quantized(v, s):
        q = b.call(rint, [b.fdiv(v, s)])
        q = b.select(b.fcmp_ordered(">", q, ir.Constant(F32, 127.0)), ir.Constant(F32, 127.0), q)
        q = b.select(b.fcmp_ordered("<", q, ir.Constant(F32, -127.0)), ir.Constant(F32, -127.0), q)
        return b.select(b.fcmp_ordered(">", s, ir.Constant(F32, 0.0)), b.fptosi(q, I8), ir.Constant(I8, 0))

    def store_quantized(b, row, j, xs):
        s = b.load(_gep(b, ptrs[3], b.add(b.mul(row, C64(-(-n_groups // gps))), b.udiv(j, C64(gps))), F32), typ=F32)
        base = b.mul(b.add(b.mul(row, C64(n_groups)), j), C64(e))
        for i, v in enumerate(entries(b, xs)):
            b.store(quantized(v, s), _gep(b, ptab, b.add(base, C64(i))))
            b.store(quantized(b.fneg(v), s), _gep(b, ptab, b.add(base, C64(e - 1 - i))))

    def max_abs(b, row, j, xs):
        """Per activation group: the largest |T| (= the group's sum of |x|, in order), stored as max / 127 when
        the activation group ends."""
        m = b.call(fabs, [xs[0]])
        for v in xs[1:]:
            m = b.fadd(m, b.call(fabs, [v]))
        first = b.icmp_unsigned("==", b.urem(j, C64(gps)), C64(0))
        cur = b.select(first, ir.Constant(F32, 0.0), b.load(scale_slot, typ=F32))
        cur = b.select(b.fcmp_ordered(">", m, cur), m, cur)
        b.store(cur, scale_slot)
        last = b.or_(b.icmp_unsigned("==", b.urem(j, C64(gps)), C64(gps - 1)),
                     b.icmp_unsigned("==", j, C64(n_groups - 1)))
        with b.if_then(last):
            ns = -(-n_groups // gps)
            b.store(b.fdiv(cur, ir.Constant(F32, 127.0)),
                    _gep(b, ptrs[3], b.add(b.mul(row, C64(ns)), b.udiv(j, C64(gps))), F32))

    with for_range(b, begin, end, name="row", vectorize=False) as row:
        b.store(zero, sum_slot)
        with for_range(b, 0, k, name="k", vectorize=False) as kk:
            b.store(add(b, b.load(sum_slot, typ=acc_t), x_at(b, row, kk), 1), sum_slot)
        b.store(b.load(sum_slot, typ=acc_t), _gep(b, psum, row, acc_t))
        if mode == "exact":
            for_groups(b, row, lambda b, j, xs: store_exact(b, row, j, xs))
        elif mode == "float":
            for_groups(b, row, lambda b, j, xs: store_float(b, row, j, xs))
        else:
            for_groups(b, row, lambda b, j, xs: max_abs(b, row, j, xs))
            for_groups(b, row, lambda b, j, xs: store_quantized(b, row, j, xs))
    b.ret_void()
    return KernelSpec(fn, rows, 1)


# -- lut_matmul ---------------------------------------------------------------------------------------------

@dataclass
class _Plan:
    mode: str
    g: int
    e: int  # table entries
    q: int  # indices per byte
    rows: int
    planes: int
    n_groups: int
    n: int
    blocks: int
    batch_rows: int
    row_bytes: int
    plane_bytes: int
    block_bytes: int  # bytes of one group's indices for a block
    index_shifts: tuple[int, ...]  # shift of each g-bit index in a plane byte (the planes packing's declaration)
    gps: int  # groups per activation group (scale)
    fast: bool
    unroll: int
    a: int
    beta: int

    @classmethod
    def of(cls, op, ins, outs) -> _Plan:
        at = OPS[op.kind].full_attrs(op.attr)
        g, rows, w = at["g"], at["rows"], ins[2]
        mode = LutMatMul.mode(ins)
        tdims = 3 if mode == "exact" else 2
        n_groups = ins[0].shape[-tdims]
        if not w.layout or not w.packing.planes:
            raise LadderError(f"internal: lut_matmul reached the cpu backend with weights not in bit planes ({w})")
        planes = w.packing
        row_bytes = w.storage_shape[-1]
        return cls(mode, g, 1 << g, 8 // g, rows, w.dtype.bits, n_groups, at["n"], w.shape[0],
                   math.prod(ins[0].shape[:-tdims]), row_bytes, planes.plane_bytes(w.shape[-1]), rows * g // 8,
                   planes.index_shifts(g),
                   groups_per_scale(at["act_group"], g, n_groups), at["fast_aggregation"], at["unroll"],
                   weight_form(w.dtype)[0], beta(w.dtype))

    def lane_row(self, lane: int) -> int:
        """The row (within the block) of index-vector lane ``lane``."""
        per = self.rows // self.q
        return self.q * (lane % per) + lane // per

    def unpack_masks(self) -> tuple[list[int], list[int]]:
        """Byte shuffles interleaving low bytes (lanes < R) with high bytes (R + lane) into i16 values the way
        x86's in-lane ``punpcklbw`` / ``punpckhbw`` do (per 16-byte lane: its first half, then its second)."""
        width = min(16, self.rows)
        halves = ([], [])
        for c in range(0, self.rows, width):
            for h, part in enumerate((range(width // 2), range(width // 2, width))):
                for i in part:
                    halves[h].extend((c + i, self.rows + c + i))
        return halves

    def lane_order(self) -> list[int]:
        """Index-vector lane held by each accumulator lane: exact tables interleave (``unpack_masks``)."""
        if self.mode != "exact":
            return list(range(self.rows))
        lo, hi = self.unpack_masks()
        return lo[0::2] + hi[0::2]


def _shuffle(ctx, rows: int):
    """The byte-shuffle intrinsic for ``rows`` lanes on this target, or None (portable lookup)."""
    spec = SHUFFLES.get(rows)
    if spec is None or not ctx.target.features() & set(spec[1]):
        return None
    v = _vec(I8, rows)
    return ctx.declare(spec[0], v, [v, v])


@lowers("lut_matmul")
def lower_lut_matmul(ctx, op, ins, outs):
    p = _Plan.of(op, ins, outs)
    at = OPS[op.kind].full_attrs(op.attr)
    fn, b, ptrs, begin, end = ctx.kernel(f"{op.kind}_{op.results[0].name}", len(ins) + 1)
    ptab, psum, pw, ps1, ps2 = ptrs[:5]
    pscale = ptrs[5] if p.mode == "quantized" else None
    R = p.rows
    v8, v16, v32, vf = _vec(I8, R), _vec(I16, R), _vec(I32, R), _vec(F32, R)
    shuffle = _shuffle(ctx, R) if p.mode != "float" else None
    per_entry = 2 * p.e if p.mode == "exact" else p.e
    out_t = outs[0]

    def table_ptr(b, m, j):
        return _gep(b, ptab, b.mul(b.add(b.mul(m, C64(p.n_groups)), j), C64(per_entry)),
                    F32 if p.mode == "float" else I8)

    def indices(b, nb, plane, j):
        """The block's g-bit indices of group j in plane ``plane``: an R x i8 vector, field-major lanes."""
        off = b.add(b.add(b.mul(nb, C64(p.row_bytes)), C64(plane * p.plane_bytes)), b.mul(j, C64(p.block_bytes)))
        raw = b.load(_gep(b, pw, off), typ=_vec(I8, p.block_bytes), align=1)
        mask = ir.Constant(_vec(I8, p.block_bytes), [p.e - 1] * p.block_bytes)
        fields = [b.and_(b.lshr(raw, ir.Constant(_vec(I8, p.block_bytes), [sh] * p.block_bytes))
                         if sh else raw, mask) for sh in p.index_shifts]
        while len(fields) > 1:  # concatenate pairwise: lanes stay field-major
            nxt = []
            for u, v in zip(fields[0::2], fields[1::2]):
                n_ = u.type.count
                nxt.append(b.shuffle_vector(u, v, ir.Constant(_vec(I32, 2 * n_), list(range(2 * n_)))))
            fields = nxt
        return fields[0]

    def lookup_bytes(b, tptr, idx):
        """R x i8 entries tptr[idx] of a byte table of E entries."""
        if shuffle is not None:
            t = b.load(tptr, typ=_vec(I8, p.e), align=1)
            tv = b.shuffle_vector(t, ir.Constant(_vec(I8, p.e), None),
                                  ir.Constant(_vec(I32, R), [lane % p.e for lane in range(R)]))
            return b.call(shuffle, [tv, idx])
        out = ir.Constant(v8, None)
        for lane in range(R):
            i = b.zext(b.extract_element(idx, C32(lane)), I64)
            out = b.insert_element(out, b.load(_gep(b, tptr, i), typ=I8), C32(lane))
        return out

    def lookup_f32(b, tptr, idx):
        out = ir.Constant(vf, None)
        for lane in range(R):
            i = b.zext(b.extract_element(idx, C32(lane)), I64)
            out = b.insert_element(out, b.load(_gep(b, tptr, i, F32), typ=F32), C32(lane))
        return out

    def entries16(b, m, nb, plane, j):
        """One group's entries for the block as R x i16 (integer tables)."""
        idx = indices(b, nb, plane, j)
        tptr = table_ptr(b, m, j)
        if p.mode == "exact":  # low and high bytes interleaved are the i16 entries (lanes in lane_order)
            lo = lookup_bytes(b, tptr, idx)
            hi = lookup_bytes(b, _gep(b, tptr, p.e), idx)
            halves = [b.bitcast(b.shuffle_vector(lo, hi, ir.Constant(_vec(I32, R), mask)), _vec(I16, R // 2))
                      for mask in p.unpack_masks()]
            return b.shuffle_vector(halves[0], halves[1], ir.Constant(_vec(I32, R), list(range(R))))
        return b.sext(lookup_bytes(b, tptr, idx), v16)

    def pair16(b, m, nb, plane, j):
        """fast_aggregation: floor((e_j + e_j+1 + 1) / 2) as a byte average, R x i16 (counts twice)."""
        bias = ir.Constant(v8, [0x80] * R)
        e0 = b.xor(lookup_bytes(b, table_ptr(b, m, j), indices(b, nb, plane, j)), bias)
        j1 = b.add(j, C64(1))
        e1 = b.xor(lookup_bytes(b, table_ptr(b, m, j1), indices(b, nb, plane, j1)), bias)
        s = b.add(b.add(b.zext(e0, v16), b.zext(e1, v16)), ir.Constant(v16, [1] * R))
        avg = b.trunc(b.lshr(s, ir.Constant(v16, [1] * R)), v8)  # pavgb
        return b.sext(b.xor(avg, bias), v16)

    acc16 = [entry_alloca(b, v16) for _ in range(p.planes)]
    acc32 = entry_alloca(b, v32)
    accf = entry_alloca(b, vf)
    accp = [entry_alloca(b, vf) for _ in range(p.planes)]
    lanes = entry_alloca(b, F32, R) if p.mode != "exact" else entry_alloca(b, I32, R)

    def steps(b, j0, j1, step, body):
        """body(b, j) for j = j0, j0 + step, ... < j1 (j1 - j0 a multiple of step), ``unroll`` bodies per
        iteration of the main loop, then the rest one by one."""
        span = p.unroll * step
        main_end = b.sub(j1, b.urem(b.sub(j1, j0), C64(span)))
        with for_range(b, j0, main_end, step=span, name="gu", vectorize=False) as j:
            for u in range(p.unroll):
                body(b, b.add(j, C64(u * step)))
        with for_range(b, main_end, j1, step=step, name="g", vectorize=False) as j:
            body(b, j)

    def widen_into_acc32(b, vecs16, extra_shift):
        acc = b.load(acc32, typ=v32)
        for plane, v in enumerate(vecs16):
            sh = plane + extra_shift
            w = b.sext(v, v32)
            acc = b.add(acc, b.shl(w, ir.Constant(v32, [sh] * R)) if sh else w)
        b.store(acc, acc32)

    def int_chunk(b, m, nb, c0, c1):
        """Groups [c0, c1) (at most CH) into acc32; pairs with fast aggregation (c0 even from its sg start)."""
        for a16 in acc16:
            b.store(ir.Constant(v16, None), a16)
        if p.fast:
            c_pairs = b.sub(c1, b.urem(b.sub(c1, c0), C64(2)))

            def body(b, j):
                for plane in range(p.planes):
                    b.store(b.add(b.load(acc16[plane], typ=v16), pair16(b, m, nb, plane, j)), acc16[plane])

            steps(b, c0, c_pairs, 2, body)
            widen_into_acc32(b, [b.load(a16, typ=v16) for a16 in acc16], 1)
            with b.if_then(b.icmp_signed("<", c_pairs, c1)):  # the unpaired last group
                widen_into_acc32(b, [entries16(b, m, nb, plane, c_pairs) for plane in range(p.planes)], 0)
            return

        def body(b, j):
            for plane in range(p.planes):
                b.store(b.add(b.load(acc16[plane], typ=v16), entries16(b, m, nb, plane, j)), acc16[plane])

        steps(b, c0, c1, 1, body)
        widen_into_acc32(b, [b.load(a16, typ=v16) for a16 in acc16], 0)

    def int_groups(b, m, nb, s0, s1):
        """acc32 = the integer U over groups [s0, s1), CH groups at a time."""
        b.store(ir.Constant(v32, None), acc32)
        ch = CH[p.mode]
        with for_range(b, s0, s1, step=ch, name="c", vectorize=False) as c0:
            c1 = b.select(b.icmp_signed("<", b.add(c0, C64(ch)), s1), b.add(c0, C64(ch)), s1)
            int_chunk(b, m, nb, c0, c1)

    def float_groups(b, m, nb):
        for a in accp:
            b.store(ir.Constant(vf, None), a)

        def body(b, j):
            tptr = table_ptr(b, m, j)
            for plane in range(p.planes):
                e = lookup_f32(b, tptr, indices(b, nb, plane, j))
                b.store(b.fadd(b.load(accp[plane], typ=vf), e), accp[plane])

        steps(b, C64(0), C64(p.n_groups), 1, body)
        u = b.load(accp[0], typ=vf)
        for plane in range(1, p.planes):
            u = b.fadd(u, b.fmul(b.load(accp[plane], typ=vf), ir.Constant(vf, [float(1 << plane)] * R)))
        return u

    def finish(b, m, nb):
        """The block's dots for row m of x -> lanes[]: i32 (exact) or f32."""
        if p.mode == "exact":
            int_groups(b, m, nb, C64(0), C64(p.n_groups))
            s = _splat(b, b.load(_gep(b, psum, m, I32), typ=I32), R)
            u = b.load(acc32, typ=v32)
            dot = b.ashr(b.add(b.mul(u, ir.Constant(v32, [p.a] * R)), b.mul(s, ir.Constant(v32, [p.beta] * R))),
                         ir.Constant(v32, [1] * R))
            return dot
        if p.mode == "float":
            u = float_groups(b, m, nb)
        else:
            b.store(ir.Constant(vf, None), accf)
            ns = -(-p.n_groups // p.gps)
            with for_range(b, 0, ns, name="sg", vectorize=False) as sg:
                s0 = b.mul(sg, C64(p.gps))
                s1 = b.select(b.icmp_signed("<", b.add(s0, C64(p.gps)), C64(p.n_groups)),
                              b.add(s0, C64(p.gps)), C64(p.n_groups))
                int_groups(b, m, nb, s0, s1)
                sc = b.load(_gep(b, pscale, b.add(b.mul(m, C64(ns)), sg), F32), typ=F32)
                prod = b.fmul(b.sitofp(b.load(acc32, typ=v32), vf), _splat(b, sc, R))
                b.store(b.fadd(b.load(accf, typ=vf), prod), accf)
            u = b.load(accf, typ=vf)
        s = _splat(b, b.load(_gep(b, psum, m, F32), typ=F32), R)
        v = b.fadd(b.fmul(u, ir.Constant(vf, [float(p.a)] * R)), b.fmul(ir.Constant(vf, [float(p.beta)] * R), s))
        return b.fmul(v, ir.Constant(vf, [0.5] * R))

    s_strides = [bstrides(t.shape, out_t.shape) for t in (ins[3], ins[4])]
    row_of_lane = ir.GlobalVariable(ctx.module, ir.ArrayType(I64, R), ctx.unique("lut_rows"))
    row_of_lane.global_constant = True
    row_of_lane.linkage = "internal"
    row_of_lane.initializer = ir.Constant(ir.ArrayType(I64, R), [p.lane_row(lane) for lane in p.lane_order()])
    py = ptrs[len(ins)]

    with for_range(b, begin, end, name="nb", vectorize=False) as nb, \
            for_range(b, 0, p.batch_rows, name="m", vectorize=False) as m:
        dots = finish(b, m, nb)
        lane_t = I32 if p.mode == "exact" else F32
        for lane in range(R):  # a vector store into the lane buffer
            b.store(b.extract_element(dots, C32(lane)), _gep(b, lanes, lane, lane_t))
        with for_range(b, 0, R, name="lane", vectorize=False) as lane:
            row = b.add(b.mul(nb, C64(R)), b.load(b.gep(row_of_lane, [C64(0), lane],
                                                        source_etype=row_of_lane.value_type), typ=I64))
            with b.if_then(b.icmp_signed("<", row, C64(p.n))):
                v = b.load(_gep(b, lanes, lane, lane_t), typ=lane_t)
                if p.mode == "exact":
                    v = b.sitofp(v, F32)
                oidx = b.add(b.mul(m, C64(p.n)), row)
                for ptr, st in ((ps1, s_strides[0]), (ps2, s_strides[1])):
                    v = b.fmul(v, b.load(_gep(b, ptr, offset_of(b, oidx, out_t.shape, st), F32), typ=F32))
                v = apply_epilogue(ctx, b, v, tuple(at["epilogue"]), out_t.dtype)
                b.store(v, _gep(b, py, oidx, F32))
    b.ret_void()
    return KernelSpec(fn, p.blocks, 1)
