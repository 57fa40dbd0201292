"""The row loops of the matmul-family kernels: tiles of rows (``in_tiles``) and passes of rows of x over the
weight rows (``passes_over_weights``), shared by the fast (matmul_fast.py) and block (q8dot.py, q8k.py)
kernels."""

from __future__ import annotations

from ladder.backends.llvm.codegen import C64, I64, entry_alloca, for_range


PREFETCH = 2048  # bytes ahead of the weight stream to prefetch (measured best on znver3; 1024: -10%, none: -25%)


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
