"""The dense f32 kernel: float matmul with 2-D f32 weights (either orientation), vectorised for the target.

* transpose_b (``_RowsKernel``): work item = weight row n. A step takes T rows of x against U weight rows (U * T
  vector accumulators over K, each x vector loaded once per U rows and each w vector once per T rows); a single
  row of x (GEMV) streams GEMV_ROWS weight rows at once (more memory-level parallelism) with K unrolled so that
  each output has 4 / GEMV_ROWS (at least 1) independent accumulators. Lanes are summed once per output, the K
  tail one element at a time.
* [K, N] (``_ColumnsKernel``): work item = a block of CTILE[1] vectors of output columns (CTILE_GEMV for a
  single row of x); the classic outer-product micro-kernel: a register tile of up to CTILE[0] rows of x (twice
  that with 32 vector registers; the rows split into near-equal tiles) x the block's vectors, each step one
  vector load of w per column vector and one broadcast of x per row, FMAs into rows x vectors accumulators
  kept in registers, stored once. A block narrower than a whole one (N not a multiple) ends in a masked
  vector (``llvm.masked.load`` / ``store``: no lane past the row is touched). A weight larger than
  CHUNK_BYTES is swept in chunks of CHUNK_ROWS rows of w (the tiles then start from y): each row of a chunk
  is read in order across the blocks, where whole columns of blocks would jump a page per k.
  Per output the products are summed in k order, as before: the same bits as the earlier kernel.

``llvm.fmuladd`` lets LLVM fuse where the target has FMA. Only the summation order (and one rounding per
product) differs from numpy's BLAS.
"""

from __future__ import annotations

import math

from llvmlite import ir

from ladder.backends.llvm.codegen import C32, C64, F32, I1, I32, PTR, VOID, KernelSpec, entry_alloca, for_range

from .decode import gep8
from .matmul_plan import MatmulOp
from .tiling import GEMV_LOCALITY, GEMV_PREFETCH

DTILE = (3, 4)  # (rows of x, weight rows) per step of the transpose_b kernel: 12 vector accumulators
GEMV_ROWS = 4  # weight rows streamed at once by an f32 GEMV (4: 22-35% faster than 1, k = 4096 and 14336)
CTILE = (6, 2)  # (rows of x, vectors of columns) per register tile of the [K, N] kernel, 16 vector registers
CTILE_GEMV = 4  # vectors of columns per tile for a single row of x (4 independent accumulators)
CHUNK_BYTES = 1 << 19  # a [K, N] weight larger than this is swept in chunks of rows of w, the outputs in memory
CHUNK_ROWS = (16, 8)  # rows of w per chunk, for several rows of x or one (each row of a chunk is read as a stream)


def is_dense_f32(mm: MatmulOp) -> bool:
    return (mm.kind == "matmul" and mm.w.rank == 2 and mm.x.dtype.name == "f32" and mm.w.dtype.name == "f32"
            and mm.out.dtype.name == "f32" and mm.K > 0)


def lower_dense_f32(ctx, op, mm: MatmulOp):
    """``x f32[..., M, K] @ w f32[K, N]`` (or ``w[N, K]`` with transpose_b)."""
    R = math.prod(mm.x.shape[:-1])
    fn, b, ptrs, begin, end = ctx.kernel(f"{op.kind}_{op.name}", 3)
    muladd = ctx.declare("llvm.fmuladd.f32", F32, [F32, F32, F32])
    if not mm.tb:
        cols = _ColumnsKernel(ctx, b, ptrs, R, mm.K, mm.N)
        cols.emit(begin, end)
        b.ret_void()
        return KernelSpec(fn, cols.blocks, 1)
    rows = _RowsKernel(ctx, b, ptrs, muladd, R, mm.K, mm.N)
    rows.emit(begin, end)
    b.ret_void()
    return KernelSpec(fn, mm.N, rows.U)


def _lanes(target) -> int:
    return max(4, min(16, target.vector_bits // 32))


def _row_tiles(R: int, most: int) -> list[tuple[int, int]]:
    """R rows in as few tiles of at most ``most`` rows as can be, near-equal: [(rows, how many tiles)]."""
    tiles = -(-R // most) if R else 0
    return [(R // tiles + 1, R % tiles), (R // tiles, tiles - R % tiles)] if tiles else []


def _tile_loops(b, tiles):
    """A loop per tile height over rows of x: yields (first row of the tile, its rows) inside each loop."""
    m0 = 0
    for rows, count in tiles:
        if count:
            with for_range(b, m0, m0 + rows * count, step=rows, name="mt", vectorize=False) as m:
                yield m, rows
            m0 += rows * count


class _ColumnsKernel:
    """w[K, N]: work item = a block of NR vectors of output columns; register tiles of rows of x x that block."""

    def __init__(self, ctx, b, ptrs, R: int, K: int, N: int):
        self.b, self.R, self.K, self.N = b, R, K, N
        self.px, self.pw, self.py = ptrs
        self.VW = VW = _lanes(ctx.target)
        self.vt = vt = ir.VectorType(F32, VW)
        self.mt = ir.VectorType(I1, VW)
        self.vmuladd = ctx.declare(f"llvm.fmuladd.v{VW}f32", vt, [vt, vt, vt])
        self.mload = ctx.declare(f"llvm.masked.load.v{VW}f32.p0", vt, [PTR, I32, self.mt, vt])
        self.mstore = ctx.declare(f"llvm.masked.store.v{VW}f32.p0", VOID, [vt, PTR, I32, self.mt])
        regs = 32 if ctx.target.vector_bits >= 512 else 16
        self.NR = NR = CTILE[1] if R > 1 else CTILE_GEMV
        self.NB = NR * VW
        self.blocks = -(-N // self.NB)
        # rows per tile: as many as the registers hold (NR vectors of w, one broadcast x), in near-equal tiles
        most = max(1, min(CTILE[0] * regs // 16, (regs - NR - 1) // NR))
        self.tiles = _row_tiles(R, most)
        # a large w from memory: rows of w in chunks, so each chunk is read along its rows (pages in order)
        self.kc = K if K * N * 4 <= CHUNK_BYTES else min(K, CHUNK_ROWS[R == 1])

    def emit(self, begin, end) -> None:
        """Column blocks [begin, end), all of K at once, or chunk by chunk of kc rows of w (the first from 0)."""
        K, kc = self.K, self.kc
        self.blocks_of(begin, end, C64(0), kc, True)
        if 2 * kc <= K:
            with for_range(self.b, kc, K // kc * kc, step=kc, name="kc", vectorize=False) as k0:
                self.blocks_of(begin, end, k0, kc, False)
        if K % kc:
            self.blocks_of(begin, end, C64(K // kc * kc), K % kc, False)

    def blocks_of(self, begin, end, k0, kc: int, first: bool) -> None:
        """Rows k0 .. k0 + kc of w for column blocks [begin, end): the whole ones, then the last, narrower one."""
        b, N, NB, VW = self.b, self.N, self.NB, self.VW
        whole = N // NB
        last = b.select(b.icmp_signed("<", end, C64(whole)), end, C64(whole))
        with for_range(b, begin, last, name="nb", vectorize=False) as j:
            self.block(b.mul(j, C64(NB)), [(v * VW, VW) for v in range(self.NR)], k0, kc, first)
        if whole < self.blocks:
            width = N - whole * NB
            pieces = [(v * VW, VW) for v in range(width // VW)] + ([(width // VW * VW, width % VW)]
                                                                     if width % VW else [])
            inside = b.and_(b.icmp_signed("<=", begin, C64(whole)), b.icmp_signed(">", end, C64(whole)))
            with b.if_then(inside):
                self.block(C64(whole * NB), pieces, k0, kc, first)

    def block(self, n0, pieces, k0, kc: int, first: bool) -> None:
        """Every row of x against columns n0 + pieces ((offset, lanes): a vector, masked when lanes < VW)."""
        for m, rows in _tile_loops(self.b, self.tiles):
            self.tile(m, rows, n0, pieces, k0, kc, first)

    def tile(self, m0, rows: int, n0, pieces, k0, kc: int, first: bool) -> None:
        """y[m0 : m0 + rows, n0 + pieces] = (0 if first, else y) + sum over k in [k0, k0 + kc) of x[m, k]
        (broadcast) * w[k, n0 + pieces] (vectors): the accumulators in registers."""
        b, K, N, vt, VW = self.b, self.K, self.N, self.vt, self.VW
        masks = [None if lanes == VW else ir.Constant(self.mt, [i < lanes for i in range(VW)])
                 for _, lanes in pieces]
        accs = [[entry_alloca(b, vt) for _ in pieces] for _ in range(rows)]
        xrows = [b.mul(b.add(m0, C64(t)), C64(K)) for t in range(rows)]
        cols = [b.add(n0, C64(off)) for off, _ in pieces]
        ys = [[b.gep(self.py, [b.add(b.mul(b.add(m0, C64(t)), C64(N)), c)], source_etype=F32) for c in cols]
              for t in range(rows)]
        for t in range(rows):
            for a, p, mask in zip(accs[t], ys[t], masks):
                b.store(ir.Constant(vt, None) if first else self.load(p, mask), a)
        with for_range(b, k0, b.add(k0, C64(kc)), name="k", vectorize=False) as k:
            wrow = b.mul(k, C64(N))
            ws = [self.load(b.gep(self.pw, [b.add(wrow, c)], source_etype=F32), mask)
                  for c, mask in zip(cols, masks)]
            for t, r in enumerate(xrows):
                xk = b.load(b.gep(self.px, [b.add(r, k)], source_etype=F32), typ=F32)
                xv = b.shuffle_vector(b.insert_element(ir.Constant(vt, None), xk, C32(0)), ir.Constant(vt, None),
                                      ir.Constant(ir.VectorType(I32, VW), [0] * VW))
                for a, wv in zip(accs[t], ws):
                    b.store(b.call(self.vmuladd, [xv, wv, b.load(a, typ=vt)]), a)
        for t in range(rows):
            for a, p, mask in zip(accs[t], ys[t], masks):
                v = b.load(a, typ=vt)
                if mask is None:
                    b.store(v, p, align=4)
                else:
                    b.call(self.mstore, [v, p, C32(4), mask])

    def load(self, p, mask):
        if mask is None:
            return self.b.load(p, typ=self.vt, align=4)
        return self.b.call(self.mload, [p, C32(4), mask, ir.Constant(self.vt, None)])


class _RowsKernel:
    """w[N, K] (transpose_b): weight rows U at a time against tiles of T rows of x, dot products of VW lanes."""

    def __init__(self, ctx, b, ptrs, muladd, R: int, K: int, N: int):
        self.b, self.muladd, self.R, self.K, self.N = b, muladd, R, K, N
        self.px, self.pw, self.py = ptrs
        self.VW = VW = _lanes(ctx.target)
        self.vt = vt = ir.VectorType(F32, VW)
        self.vmuladd = ctx.declare(f"llvm.fmuladd.v{VW}f32", vt, [vt, vt, vt])
        self.vsum = ctx.declare(f"llvm.vector.reduce.fadd.v{VW}f32", F32, [F32, vt])
        T, U = DTILE
        self.T, self.U = min(T, R), max(1, min(U if R > 1 else GEMV_ROWS, N))  # N = 0: no urem by 0
        self.nvec = K // VW
        self.prefetch = ctx.declare("llvm.prefetch.p0", ir.VoidType(), [ir.PointerType(), I32, I32, I32])

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
        """Every row of x against weight rows ns, in near-equal tiles of at most T rows."""
        b = self.b
        depth = max(1, 4 // len(ns)) if self.R == 1 else 1
        for m0, rows in _tile_loops(b, _row_tiles(self.R, self.T)):
            self.step([b.add(m0, C64(t)) for t in range(rows)], ns, depth)

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
        if self.R == 1 and N * K * 4 > GEMV_PREFETCH:
            # a GEMV streams its rows (consecutive in memory) once: hints GEMV_PREFETCH bytes ahead into L2, a
            # cache line at a time, over the bytes of this step's rows (clipped to the weight's last byte)
            last = C64(N * K * 4 - 1)
            start = b.add(b.mul(wrows[0], C64(4)), C64(GEMV_PREFETCH))
            with for_range(b, 0, len(ns) * K * 4, step=64, name="pf", vectorize=False) as off:
                at = b.add(start, off)
                at = b.select(b.icmp_signed("<", at, last), at, last)
                b.call(self.prefetch, [gep8(b, pw, at), C32(0), C32(GEMV_LOCALITY), C32(1)])

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
