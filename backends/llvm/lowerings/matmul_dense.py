"""The dense f32 kernel: float matmul with 2-D f32 weights (either orientation), vectorised for the target.

* transpose_b (``_RowsKernel``): work item = weight row n. A step takes T rows of x against U weight rows (U * T
  vector accumulators over K, each x vector loaded once per U rows and each w vector once per T rows); a single
  row of x (GEMV) streams GEMV_ROWS weight rows at once (more memory-level parallelism) with K unrolled so that
  each output has 4 / GEMV_ROWS (at least 1) independent accumulators. Lanes are summed once per output, the K
  tail one element at a time.
* [K, N] (``_columns_kernel``): work item = output column n; per DCOLS columns, the output rows themselves are
  the accumulators: for each k and each row m, ``y[m, n] += x[m, k] * w[k, n]``, a unit-stride loop LLVM
  vectorises; each 4 KiB piece of a w row is read once from memory and reused over all rows of x.

``llvm.fmuladd`` lets LLVM fuse where the target has FMA. Only the summation order (and one rounding per
product) differs from numpy's BLAS.
"""

from __future__ import annotations

import math

from llvmlite import ir

from ladder.backends.llvm.codegen import C64, F32, KernelSpec, entry_alloca, for_range

from .matmul_plan import MatmulOp

DTILE = (3, 4)  # (rows of x, weight rows) per step of the transpose_b kernel: 12 vector accumulators
GEMV_ROWS = 4  # weight rows streamed at once by an f32 GEMV (4: 22-35% faster than 1, k = 4096 and 14336)
DCOLS = 1024  # columns of w per pass of the [K, N] kernel: 4 KiB of each w row, reused over every row of x


def is_dense_f32(mm: MatmulOp) -> bool:
    return (mm.kind == "matmul" and mm.w.rank == 2 and mm.x.dtype.name == "f32" and mm.w.dtype.name == "f32"
            and mm.out.dtype.name == "f32" and mm.K > 0)


def lower_dense_f32(ctx, op, mm: MatmulOp):
    """``x f32[..., M, K] @ w f32[K, N]`` (or ``w[N, K]`` with transpose_b)."""
    R = math.prod(mm.x.shape[:-1])
    fn, b, ptrs, begin, end = ctx.kernel(f"{op.kind}_{op.name}", 3)
    muladd = ctx.declare("llvm.fmuladd.f32", F32, [F32, F32, F32])
    if not mm.tb:
        _columns_kernel(b, ptrs, begin, end, muladd, R, mm.K, mm.N)
        b.ret_void()
        return KernelSpec(fn, mm.N, 1)
    rows = _RowsKernel(ctx, b, ptrs, muladd, R, mm.K, mm.N)
    rows.emit(begin, end)
    b.ret_void()
    return KernelSpec(fn, mm.N, rows.U)


def _columns_kernel(b, ptrs, begin, end, muladd, R: int, K: int, N: int) -> None:
    """w[K, N]: output columns [begin, end) in passes of DCOLS, the output rows as accumulators."""
    px, pw, py = ptrs
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


class _RowsKernel:
    """w[N, K] (transpose_b): weight rows U at a time against tiles of T rows of x, dot products of VW lanes."""

    def __init__(self, ctx, b, ptrs, muladd, R: int, K: int, N: int):
        self.b, self.muladd, self.R, self.K, self.N = b, muladd, R, K, N
        self.px, self.pw, self.py = ptrs
        self.VW = VW = max(4, min(16, ctx.target.vector_bits // 32))
        self.vt = vt = ir.VectorType(F32, VW)
        self.vmuladd = ctx.declare(f"llvm.fmuladd.v{VW}f32", vt, [vt, vt, vt])
        self.vsum = ctx.declare(f"llvm.vector.reduce.fadd.v{VW}f32", F32, [F32, vt])
        T, U = DTILE
        self.T, self.U = min(T, R), min(U if R > 1 else GEMV_ROWS, N)
        self.nvec = K // VW

    def emit(self, begin, end) -> None:
        """Weight rows [begin, end): groups of U, then the rest one by one."""
        b, U = self.b, self.U
        u_end = b.sub(end, b.urem(b.sub(end, begin), C64(U)))
        if U > 1:
            with for_range(b, begin, u_end, step=U, name="nu", vectorize=False) as n0:
                self.rows([b.add(n0, C64(u)) for u in range(U)])
            tail_start = u_end
        else:
            tail_start = begin
        with for_range(b, tail_start, end, name="n", vectorize=False) as n:
            self.rows([n])

    def rows(self, ns) -> None:
        """Every row of x against weight rows ns: tiles of T rows, then the rest one by one."""
        b, R, T = self.b, self.R, self.T
        depth = max(1, 4 // len(ns)) if R == 1 else 1
        full = R // T * T
        if T > 1 and full:
            with for_range(b, 0, full, step=T, name="mt", vectorize=False) as m0:
                self.step([b.add(m0, C64(t)) for t in range(T)], ns, depth)
        with for_range(b, full if T > 1 else 0, R, name="m1", vectorize=False) as m:
            self.step([m], ns, depth)

    def step(self, ms, ns, depth: int) -> None:
        """y[ms, ns] for rows ms of x and rows ns of w: vectors of K `depth` deep, then the tail."""
        b, K, N, VW, vt, nvec = self.b, self.K, self.N, self.VW, self.vt, self.nvec
        px, pw, py = self.px, self.pw, self.py
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
                        b.store(b.call(self.vmuladd, [xv[t], wv, b.load(a, typ=vt)]), a)

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
                        b.store(b.call(self.muladd, [xs[t], wv, b.load(tails[t, u], typ=F32)]), tails[t, u])
        for t, m in enumerate(ms):
            for u, n in enumerate(ns):
                v = b.load(accs[t, u, 0], typ=vt)
                for d in range(1, depth):
                    v = b.fadd(v, b.load(accs[t, u, d], typ=vt))
                dot = b.fadd(b.call(self.vsum, [ir.Constant(F32, -0.0), v]), b.load(tails[t, u], typ=F32))
                b.store(dot, b.gep(py, [b.add(b.mul(m, C64(N)), n)], source_etype=F32))
