"""The fast matmul kernel's code, from its plan (matmul_plan.FastPlan): ``transpose_b`` with 2-D weights in a
SIMD block packing, or unpacked int8 weights for qmatmul_i8.

Work item = one weight row n; the row is streamed once per MCHUNK rows of x (prefetched ``PREFETCH`` bytes ahead),
each 32-byte piece is decoded in registers (shift + mask; base-3 digits by the multiply trick done as two byte adds
and two compares per trit) and reused over a tile of MTILE rows of x and, for several rows of x, 2 weight rows at
once (M = 1 streams one row at a time: interleaved rows defeat the hardware prefetcher). The whole 32-code groups
of a partial last block are decoded as vectors too (rows are padded to blocks); the last codes of K are finished
by the scalar decode (never reading past a row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llvmlite import ir

from ladder.backends.llvm.codegen import (C32, C64, F32, I8, I16, I32, KernelSpec, entry_alloca, for_range,
                                          storage_type, to_f32)

from .decode import Decoder, gep8

from .epilogue import store_result
from .matmul_plan import FastPlan, MatmulOp
from .tiling import PREFETCH, in_tiles

MCHUNK = 64  # rows of x per pass over a weight row (their sums live on the stack)
MTILE = 4  # rows of x sharing one decoded weight piece

V32I8 = ir.VectorType(I8, 32)
V16I16 = ir.VectorType(I16, 16)
V8I32 = ir.VectorType(I32, 8)
V32I32 = ir.VectorType(I32, 32)
V8F = ir.VectorType(F32, 8)
FIRST_32 = ir.Constant(ir.VectorType(I32, 32), list(range(32)))  # joins two 16-byte halves


def lower_fast(ctx, op, mm: MatmulOp, p: FastPlan) -> KernelSpec:
    """Work item = one weight row n. Rows are taken U at a time (U weight rows decoded per 32-byte step, their
    accumulators independent) against tiles of T rows of x: each decoded piece is used T times. Thread splits
    are multiples of U, so every thread streams whole contiguous groups of rows."""
    return _FastKernel(ctx, op, mm, p).emit()


def _partial_block(p: FastPlan, K: int) -> tuple[set[tuple[int, int]], int]:
    """The (piece, sub) groups of a partial last superblock that lie wholly below K, and the k up to which codes
    are decoded as vectors. Rows are padded to whole blocks, so the full block is read in bounds; the rest is
    decoded one code at a time."""
    k_tail = K // p.sb_codes * p.sb_codes
    part_groups, k_vec = set(), k_tail
    if k_tail < K and p.B >= 32 and not p.raw:  # raw rows are not padded to whole blocks
        rem = (K - k_tail) // 32 * 32
        for ci, (_, xk) in enumerate(p.chunks):
            for q in range(p.subs):
                if all(o + n_ <= rem for o, n_ in xk[q]):
                    part_groups.add((ci, q))
        k_vec = k_tail + rem
    return part_groups, k_vec


@dataclass(frozen=True)
class _Tile:
    """One step's rows: rows ``m0`` .. of x (their element offsets ``xrows``) against consecutive weight rows
    ``ns`` (their addresses ``wrows``); ``mchunk0`` is the first row of x of this pass."""

    ns: list
    wrows: list
    xrows: list
    m0: ir.Value
    mchunk0: ir.Value


class _FastKernel:
    """The kernel of one op: its sizes, intrinsics and stack slots on ``self``; one method per part of the loop."""

    def __init__(self, ctx, op, mm: MatmulOp, p: FastPlan):
        self.ctx, self.mm, self.p = ctx, mm, p
        self.K, self.N = mm.K, mm.N
        self.R = math.prod(mm.x.shape[:-1])  # rows of x (batch dims flattened; w is 2-D)
        self.fn, self.b, self.ptrs, self.begin, self.end = ctx.kernel(f"{op.kind}_{op.name}", len(op.operands) + 1)
        self.px, self.pw = self.ptrs[0], self.ptrs[1]
        self.dec = None if p.raw else Decoder(ctx, mm.w)
        self.row_bytes = mm.w.storage_shape[-1]
        self.w_bytes = self.N * self.row_bytes
        self.nsb = self.K // p.sb_codes  # full superblocks
        self.part_groups, self.k_vec = _partial_block(p, self.K)
        self.is_int = is_int = mm.kind == "qmatmul_i8"
        # U weight rows x T rows of x per step (accumulators: U * T registers)
        if is_int and not p.madd and not p.wd:
            U, T = 1, MTILE
        elif self.R == 1:
            U, T = 1, 1  # several rows at once make the hardware prefetcher see a scattered stream: 2x slower
        else:
            U, T = 2, MTILE
        self.U, self.T = max(1, min(U, self.N)), T
        self.acc_t = (V8I32 if (p.madd or p.wd) else V32I32) if is_int else V8F
        self._declare_intrinsics()
        self.mask = ir.Constant(V32I8, [p.mask] * 32)
        self.xorc = ir.Constant(V32I8, [p.xor_byte] * 32)
        self.zero_i8 = ir.Constant(V32I8, [p.zero] * 32)
        b = self.b
        self.xsum_slot = entry_alloca(b, I32, MCHUNK)
        # float: NF independent accumulators per output (FMA latency, not bandwidth, bounds one chain)
        NF = 1 if is_int else max(1, min(4, 8 // (self.U * T)))
        self.acc_slots = [[[entry_alloca(b, self.acc_t) for _ in range(NF)] for _ in range(self.U)] for _ in range(T)]
        self.tail_slots = [[entry_alloca(b, I32 if is_int else F32) for _ in range(self.U)] for _ in range(T)]
        self.avx2 = ctx.target.supports("i8-madd")
        self.prefetch = ctx.declare("llvm.prefetch.p0", ir.VoidType(), [ir.PointerType(), I32, I32, I32])
        self.zm = mm.attrs.get("zero_mode", "none")
        self.has_zero = self.zm != "none" and (len(mm.extra) > 1 or (mm.bscaled and self.dec.zero))

    def _declare_intrinsics(self) -> None:
        ctx, p, acc_t = self.ctx, self.p, self.acc_t
        self.red_i = ctx.declare(f"llvm.vector.reduce.add.v{acc_t.count}i32", I32, [acc_t]) if self.is_int else None
        self.red_f = ctx.declare("llvm.vector.reduce.fadd.v8f32", F32, [F32, V8F]) if not self.is_int else None
        self.fma_v = ctx.declare("llvm.fma.v8f32", V8F, [V8F, V8F, V8F])
        self.fma_s = ctx.declare("llvm.fma.f32", F32, [F32, F32, F32])
        if p.madd:
            self.maddubs = ctx.declare("llvm.x86.avx2.pmadd.ub.sw", V16I16, [V32I8, V32I8])
        if p.madd or p.wd:
            self.maddwd = ctx.declare("llvm.x86.avx2.pmadd.wd", V8I32, [V16I16, V16I16])
            self.ones16 = ir.Constant(V16I16, [1] * 16)
        if p.vnni:  # _mm256_dpbusd_epi32(src, a: u8, b: i8) (AVX512-VNNI + VL, or AVX-VNNI)
            self.dpbusd = ctx.declare("llvm.x86.avx512.vpdpbusd.256", V8I32, [V8I32, V8I32, V8I32])

    # -- the loops ---------------------------------------------------------------------------------------------

    def emit(self) -> KernelSpec:
        """Rows of x in passes of MCHUNK (their sums first, where the codes are offset); per pass, groups of U
        consecutive weight rows, then the rest one by one."""
        b, R = self.b, self.R
        with for_range(b, 0, R, step=MCHUNK, name="mc", vectorize=False) as mc:
            mend = b.select(b.icmp_signed("<", b.add(mc, C64(MCHUNK)), C64(R)), b.add(mc, C64(MCHUNK)), C64(R))
            if self.is_int and self.p.zero:
                self._x_sums(b, mc, mend)
            in_tiles(b, self.begin, self.end, self.U,
                     lambda b, n0, u: self._rows_loop(b, [b.add(n0, C64(i)) for i in range(u)], mc, mend), name="nu")
        b.ret_void()
        return KernelSpec(self.fn, self.N, self.U)

    def _x_sums(self, b, mc, mend) -> None:
        """sum_k x[m, k] over [0, k_vec) for the rows of the pass (the tail decodes values directly): 32 at a time
        (i16 lanes: 256 * 128 fits), then one by one."""
        K, k_vec = self.K, self.k_vec
        with for_range(b, mc, mend, name="xs", vectorize=False) as m:
            xrow = gep8(b, self.px, b.mul(m, C64(K)))
            nv = k_vec // 32
            xsv = C32(0)
            if nv:
                v16s = ir.VectorType(I16, 32)
                red16 = self.ctx.declare("llvm.vector.reduce.add.v32i32", I32, [V32I32])
                vs = entry_alloca(b, V32I32)
                b.store(ir.Constant(V32I32, None), vs)
                with for_range(b, 0, nv, step=256, name="xo", vectorize=False) as xo:
                    hi = b.select(b.icmp_signed("<", b.add(xo, C64(256)), C64(nv)), b.add(xo, C64(256)), C64(nv))
                    s16 = entry_alloca(b, v16s)
                    b.store(ir.Constant(v16s, None), s16)
                    with for_range(b, xo, hi, name="xv", vectorize=False) as j:
                        xv = b.load(gep8(b, xrow, b.mul(j, C64(32))), typ=V32I8, align=1)
                        b.store(b.add(b.load(s16, typ=v16s), b.sext(xv, v16s)), s16)
                    b.store(b.add(b.load(vs, typ=V32I32), b.sext(b.load(s16, typ=v16s), V32I32)), vs)
                xsv = b.call(red16, [b.load(vs, typ=V32I32)])
            sl = entry_alloca(b, I32)
            b.store(xsv, sl)
            if nv * 32 < k_vec:
                with for_range(b, nv * 32, k_vec, name="xk", vectorize=False) as k:
                    xv = b.sext(b.load(gep8(b, xrow, k), typ=I8), I32)
                    b.store(b.add(b.load(sl, typ=I32), xv), sl)
            b.store(b.load(sl, typ=I32), b.gep(self.xsum_slot, [b.sub(m, mc)], source_etype=I32))

    def _rows_loop(self, b, ns, mc, mend) -> None:
        """All rows of x in [mc, mend) against weight rows ns: tiles of T rows, then single rows."""
        in_tiles(b, mc, mend, self.T, lambda b, m0, t: self._tile(b, m0, t, ns, mc))

    def _tile(self, b, m0, T: int, ns, mchunk0) -> None:
        """Rows m0 .. m0+T-1 of x against weight rows ns (consecutive)."""
        U = len(ns)
        tile = _Tile(ns=ns, wrows=[gep8(b, self.pw, b.mul(n, C64(self.row_bytes))) for n in ns],
                     xrows=[b.mul(b.add(m0, C64(t)), C64(self.K)) for t in range(T)], m0=m0, mchunk0=mchunk0)
        for t in range(T):
            for u in range(U):
                for slot in self.acc_slots[t][u]:
                    b.store(ir.Constant(self.acc_t, None), slot)
        with for_range(b, 0, self.nsb, name="sb", vectorize=False) as sb:
            self._step(b, tile, sb)
        if self.part_groups:
            self._step(b, tile, C64(self.nsb), self.part_groups)
        self._tail(b, tile)
        self._finish(b, tile)

    def _step(self, b, tile: _Tile, sb, allowed=None) -> None:
        """One superblock (allowed: the (chunk, sub) pairs to use, for the partial last one)."""
        p, T, U = self.p, len(tile.xrows), len(tile.ns)
        sb_k = b.mul(sb, C64(p.sb_codes))
        sb_off = b.mul(sb, C64(p.sb_bytes))
        accs = [[[b.load(a, typ=self.acc_t) for a in self.acc_slots[t][u]] for u in range(U)] for t in range(T)]
        for ci, (parts, xk) in enumerate(p.chunks):
            qs = [q for q in range(p.subs) if allowed is None or (ci, q) in allowed]
            if not qs:
                continue
            decode = lambda u: self._decode(b, tile, u, ci, parts, sb_off, max(qs) + 1)  # noqa: E731
            if self.is_int:
                self._int_products(b, tile, accs, decode, qs, sb_k, xk)
            else:
                self._float_products(b, tile, accs, decode, qs, sb_k, xk)
        for t in range(T):
            for u in range(U):
                for a, slot in zip(accs[t][u], self.acc_slots[t][u]):
                    b.store(a, slot)

    # -- one 32-byte piece -------------------------------------------------------------------------------------

    def _decode(self, b, tile: _Tile, u: int, ci: int, parts, sb_off, nq: int):
        """The codes of piece ci of weight row u of the tile (the first piece also prefetches ahead)."""
        p = self.p
        sb_w = gep8(b, tile.wrows[u], sb_off)
        if ci == 0:  # a hint, never a read; kept inside the weights all the same
            off = b.add(b.add(b.mul(tile.ns[u], C64(self.row_bytes)), sb_off), C64(PREFETCH))
            off = b.select(b.icmp_signed("<", off, C64(self.w_bytes)), off, C64(self.w_bytes - 1))
            b.call(self.prefetch, [gep8(b, self.pw, off), C32(0), C32(3), C32(1)])
        pv = [b.load(gep8(b, sb_w, o), typ=ir.VectorType(I8, n_), align=1) for o, n_ in parts]
        packed = pv[0] if len(pv) == 1 else b.shuffle_vector(pv[0], pv[1], FIRST_32)
        if p.xor_byte:
            packed = b.xor(packed, self.xorc)
        return self._codes_of(b, packed, nq)

    def _barrier(self, b, v):
        """v unchanged, opaque to the optimizer (an empty asm): keeps 3 * (3 * v) as two byte adds rather than
        a byte multiply by 9, 27, 81, which x86 emulates in 16-bit lanes."""
        if not self.avx2:
            return v
        return b.asm(ir.FunctionType(v.type, [v.type]), "", "=x,0", [v], False)

    def _codes_of(self, b, packed, nq: int):
        """The first nq sub-vectors of unsigned codes of a 32-byte piece (one per group of 32 k)."""
        p = self.p
        if p.raw:
            return [packed]  # int8 weights: the bytes themselves (offset by 0x80 for VNNI)
        if p.radix:  # base 3 (the only radix fast_layout takes)
            # trit q of byte v: ((v * 3^q) mod 256) * 3 >> 8 = [v_q > 85] + [v_q > 170], v_q = v * 3^q mod 256
            # = 3 v_(q-1) (two byte adds). Kept biased by 0x80 ((v ^ 0x80) * 3 = 3 v ^ 0x80 mod 256) for signed
            # compares: t = 0 - (v'_q > -43) - (v'_q > 42) as masks
            out, v = [], b.xor(packed, ir.Constant(V32I8, [0x80] * 32))
            for q in range(nq):
                if q:
                    v = self._barrier(b, b.add(b.add(v, v), v))
                m1 = b.sext(b.icmp_signed(">", v, ir.Constant(V32I8, [85 - 128] * 32)), V32I8)
                m2 = b.sext(b.icmp_signed(">", v, ir.Constant(V32I8, [170 - 128] * 32)), V32I8)
                out.append(b.sub(b.sub(ir.Constant(V32I8, [0] * 32), m1), m2))
            return out
        out = []
        for q in range(nq):  # slot q: its field, by the layout's shift and mask
            sh = p.shifts[q]
            v = b.lshr(packed, ir.Constant(V32I8, [sh] * 32)) if sh else packed
            out.append(b.and_(v, self.mask))
        return out

    def _int_products(self, b, tile: _Tile, accs, decode, qs, sb_k, xk) -> None:
        """qmatmul_i8: one weight row at a time, its codes, then every row of x (x stays in L1; loads are cheap,
        registers are not)."""
        p = self.p
        for u in range(len(tile.ns)):
            cu = decode(u)
            for t in range(len(tile.xrows)):
                xvs = {q: self._x_vec(b, tile.xrows[t], sb_k, xk[q]) for q in qs}
                a = accs[t][u][0]
                if p.vnni:
                    for q in qs:
                        a = b.call(self.dpbusd, [a, b.bitcast(cu[q], V8I32), b.bitcast(xvs[q], V8I32)])
                elif p.wd:  # i16 lanes: exact pairwise products summed to i32
                    for half in (range(16), range(16, 32)):
                        sel = ir.Constant(ir.VectorType(I32, 16), list(half))
                        wh = b.sext(b.shuffle_vector(cu[0], ir.Constant(V32I8, None), sel), V16I16)
                        xh = b.sext(b.shuffle_vector(xvs[0], ir.Constant(V32I8, None), sel), V16I16)
                        a = b.add(a, b.call(self.maddwd, [wh, xh]))
                elif p.madd:
                    part = None
                    for q in qs:
                        pr = b.call(self.maddubs, [cu[q], xvs[q]])
                        part = pr if part is None else b.add(part, pr)
                    a = b.add(a, b.call(self.maddwd, [part, self.ones16]))
                else:
                    for q in qs:
                        a = b.add(a, b.mul(b.zext(cu[q], V32I32), b.sext(xvs[q], V32I32)))
                accs[t][u][0] = a

    def _float_products(self, b, tile: _Tile, accs, decode, qs, sb_k, xk) -> None:
        """qmatmul: every weight row's codes -> dequantized f32 values, 8 consecutive k a vector, FMA'd with x into
        NF accumulators per output."""
        p, U = self.p, len(tile.ns)
        codes = [decode(u) for u in range(U)]
        for q in qs:
            # each 8-lane group is 8 consecutive k
            lanes = []
            for o, n_ in xk[q]:
                lanes += [o + i for i in range(n_)]
            vals = [b.sub(codes[u][q], self.zero_i8) if p.zero else codes[u][q] for u in range(U)]
            for g8 in range(4):
                sel = ir.Constant(V8I32, list(range(8 * g8, 8 * g8 + 8)))
                kk = b.add(sb_k, C64(lanes[8 * g8]))
                wvs = []
                for u in range(U):
                    v8 = b.shuffle_vector(vals[u], ir.Constant(V32I8, None), sel)
                    vf = b.sitofp(b.sext(v8, V8I32), V8F)
                    if p.scales.row:
                        wvs.append(vf)
                        continue
                    s = self._splat(b, self._scale_at(b, tile.ns[u], tile.wrows[u], kk, 0))
                    z = self._splat(b, self._scale_at(b, tile.ns[u], tile.wrows[u], kk, 1)) if self.has_zero else None
                    wvs.append(self._dequant(b, vf, s, z))
                for t in range(len(tile.xrows)):
                    xv = b.load(b.gep(self.px, [b.add(tile.xrows[t], kk)], source_etype=F32), typ=V8F, align=4)
                    for u in range(U):
                        a = accs[t][u]
                        a[g8 % len(a)] = b.call(self.fma_v, [xv, wvs[u], a[g8 % len(a)]])

    def _x_vec(self, b, xrow, sb_k, pieces):
        vecs = [b.load(b.gep(self.px, [b.add(xrow, b.add(sb_k, C64(o)))], source_etype=I8),
                       typ=ir.VectorType(I8, n), align=1) for o, n in pieces]
        if len(vecs) == 1:
            return vecs[0]
        return b.shuffle_vector(vecs[0], vecs[1], FIRST_32)

    # -- scales --------------------------------------------------------------------------------------------------

    def _scale_at(self, b, n, wrow, k, which):
        """f32 scale (or zero) for weight row n at position k (constant over 8 consecutive k)."""
        mm, s = self.mm, self.p.scales
        if mm.bscaled:
            return self.dec.block_scale(b, wrow, k, which)
        pt = self.ptrs[2 + which]
        sdt = mm.extra[which].dtype
        off = C64(0)
        if s.n:
            ni = b.udiv(n, C64(s.n_group)) if s.n_group else n
            off = b.mul(ni, C64(s.n))
        if s.k_group:
            off = b.add(off, b.udiv(k, C64(s.k_group)))
        return to_f32(b, b.load(b.gep(pt, [off], source_etype=storage_type(sdt)), typ=storage_type(sdt)), sdt)

    def _dequant(self, b, vals, s, z):
        if self.p.scales.row:
            return vals  # the row's scale multiplies its sum
        if self.has_zero and self.zm == "original":
            return b.fmul(b.fsub(vals, z), s)
        if self.has_zero and self.zm == "rescale":
            return b.fsub(b.fmul(vals, s), z)
        return b.fmul(vals, s)

    @staticmethod
    def _splat(b, v):
        vec = b.insert_element(ir.Constant(V8F, None), v, C32(0))
        return b.shuffle_vector(vec, ir.Constant(V8F, None), ir.Constant(V8I32, [0] * 8))

    # -- the last codes of K, and the results -------------------------------------------------------------------

    def _tail(self, b, tile: _Tile) -> None:
        """Scalar decode of k in [k_vec, K), into the tile's tail sums."""
        p, dec, px, is_int = self.p, self.dec, self.px, self.is_int
        T, U = len(tile.xrows), len(tile.ns)
        for t in range(T):
            for u in range(U):
                b.store(ir.Constant(I32 if is_int else F32, 0 if is_int else 0.0), self.tail_slots[t][u])
        if self.k_vec >= self.K:
            return
        with for_range(b, self.k_vec, self.K, name="kt", vectorize=False) as k:
            for u in range(U):
                wrow = tile.wrows[u]
                code = None if p.raw else dec.code(b, wrow, k)
                if is_int:
                    wv = b.sext(b.load(gep8(b, wrow, k), typ=I8), I32) if p.raw else dec.int_value(b, code)
                    for t in range(T):
                        xv = b.sext(b.load(b.gep(px, [b.add(tile.xrows[t], k)], source_etype=I8), typ=I8), I32)
                        sl = self.tail_slots[t][u]
                        b.store(b.add(b.load(sl, typ=I32), b.mul(xv, wv)), sl)
                    continue
                v = dec.f32_value(b, code)
                if p.scales.row:
                    wv = v
                else:
                    s = self._scale_at(b, tile.ns[u], wrow, k, 0)
                    z = self._scale_at(b, tile.ns[u], wrow, k, 1) if self.has_zero else None
                    wv = self._dequant(b, v, s, z)
                for t in range(T):
                    xv = b.load(b.gep(px, [b.add(tile.xrows[t], k)], source_etype=F32), typ=F32)
                    sl = self.tail_slots[t][u]
                    b.store(b.call(self.fma_s, [xv, wv, b.load(sl, typ=F32)]), sl)

    def _finish(self, b, tile: _Tile) -> None:
        """Each output of the tile: lanes and tail summed, the offset's x sum off (integer) or the row's scale on
        (float), then stored (store_result)."""
        p, acc_t, is_int = self.p, self.acc_t, self.is_int
        for u, n in enumerate(tile.ns):
            srow = self._scale_at(b, n, tile.wrows[u], C64(0), 0) if (not is_int and p.scales.row) else None
            for t in range(len(tile.xrows)):
                slots = self.acc_slots[t][u]
                accv = b.load(slots[0], typ=acc_t)
                for slot in slots[1:]:
                    accv = b.fadd(accv, b.load(slot, typ=acc_t))
                if is_int:
                    dot = b.add(b.call(self.red_i, [accv]), b.load(self.tail_slots[t][u], typ=I32))
                    if p.zero:
                        mi = b.sub(b.add(tile.m0, C64(t)), tile.mchunk0)
                        xs = b.load(b.gep(self.xsum_slot, [mi], source_etype=I32), typ=I32)
                        dot = b.sub(dot, b.mul(C32(p.zero), xs))
                else:
                    dot = b.fadd(b.call(self.red_f, [ir.Constant(F32, -0.0), accv]),
                                 b.load(self.tail_slots[t][u], typ=F32))
                    if srow is not None:
                        dot = b.fmul(dot, srow)
                oidx = b.add(b.mul(b.add(tile.m0, C64(t)), C64(self.N)), n)
                store_result(self.ctx, b, self.mm, self.ptrs, dot, oidx)
