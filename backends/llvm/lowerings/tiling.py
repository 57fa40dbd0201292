"""The row loops of the matmul-family kernels: tiles of rows (``in_tiles``) and passes of rows of x over the
weight rows (``passes_over_weights``), shared by the fast (matmul_fast.py) and block (q8dot.py, q8k.py)
kernels."""

from __future__ import annotations

from ladder.backends.llvm.codegen import C64, I64, entry_alloca, for_range


PREFETCH = 2048  # bytes ahead of the weight stream to prefetch (measured best on znver3; 1024: -10%, none: -25%)
# A GEMV (decode: one row of x) reads each weight byte once, so nothing it fetches early is wasted: its hints
# go GEMV_PREFETCH bytes ahead into L2 (llvm.prefetch locality 2: prefetcht1), not PREFETCH ahead into L1
# (locality 3: prefetcht0). Zen 4, Q4_0 1 x 32768 x 2560 from DRAM at 1 thread, A/B in turns: 2048 B into L1
# 18.6-20.7 GB/s, 4096 B into L2 21.9-22.1, 8192 B 24.9-25.2, 16384 B 25.6-25.8, 8192 B into L1 13.3 (the
# lines ahead evict x's blocks from L1); the 2B Q4_0 decode at 1 thread 12.5-12.7 -> 13.8-14.7 tokens/s
GEMV_PREFETCH = 8192
GEMV_LOCALITY = 2


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


def passes_over_weights(b, R: int, CH: int, begin, end, T: int, fill, tile, row=None) -> None:
    """The block kernels' driver: rows of x in passes of CH (``fill(b, mc, mend)`` copies a pass to the
    scratch), and per pass every weight row n of this thread's range (``row(b, n)`` first, when given: a
    kernel that decodes the row once a pass) against the pass's rows, T at a time (``tile(b, n, m0, mc, T)``)."""
    with for_range(b, 0, R, step=CH, name="mc", vectorize=False) as mc:
        mend = b.select(b.icmp_signed("<", b.add(mc, C64(CH)), C64(R)), b.add(mc, C64(CH)), C64(R))
        fill(b, mc, mend)
        with for_range(b, begin, end, name="n", vectorize=False) as n:
            if row is not None:
                row(b, n)
            in_tiles(b, mc, mend, T, lambda b, m0, t: tile(b, n, m0, mc, t))
