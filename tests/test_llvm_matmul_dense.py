"""The dense f32 matmul kernels (matmul_dense.py) at edge shapes, on guarded buffers, over every split of their
work: rows of x, columns and K not multiples of the register tiles, K = 1, N = 1, batch dims, a weight large
enough to be swept in chunks of rows. Within |y - ref| <= 1e-4 * sum_k |x||w| (the summation order differs from
numpy's BLAS; see test_llvm_matmul.py)."""

from __future__ import annotations

import numpy as np
import pytest
from test_llvm_matmul import TARGETS, G, Guarded

import ladder
from ladder.backends.llvm.compiler import compile_graph
from ladder.backends.llvm.lowerings import matmul_dense

# (x shape, N): small transformer shapes, tails of every tile, K = 1, N = 1, batch dims, no rows or columns,
# a chunked weight (the last two)
SHAPES = [((8, 64), 32), ((8, 64), 192), ((1, 8, 256), 64), ((7, 37), 45), ((13, 5), 23), ((1, 1), 1),
          ((3, 1), 17), ((1, 129), 1), ((2, 3, 11), 9), ((0, 7), 5), ((4, 9), 0), ((1, 300), 450), ((5, 300), 450)]


def _graph(rng, xshape, N):
    """Both orientations of w against one x."""
    gb = G()
    x = rng.standard_normal(xshape).astype(np.float32)
    xn = gb.input(x, "f32")
    K = xshape[-1]
    out = f"f32[{', '.join(map(str, xshape[:-1] + (N,)))}]"
    for tb in (True, False):
        w = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        wt = w if tb else w.T
        gb.op(f"matmul %{xn}, %{gb.param(w, 'f32')} {{transpose_b = {str(tb).lower()}}}", out,
              tol=1e-4 * (np.abs(x) @ np.abs(wt).T) + 1e-30)
    return gb


@pytest.mark.parametrize("target", TARGETS)
def test_dense_f32_edges_guarded_every_split(target):
    rng = np.random.default_rng(15)
    assert 450 * 300 * 4 > matmul_dense.CHUNK_BYTES  # the last shapes take the chunked sweep
    for xshape, N in SHAPES:
        gb = _graph(rng, xshape, N)
        g = gb.graph()
        cg = compile_graph(g, gb.weights, target=target, pipeline="")
        ref = ladder.run(g, gb.feeds, weights=gb.weights)
        steps = [s for s in cg.steps if s.op.kind == "matmul"]
        assert len(steps) == 2
        for step in steps:
            r = step.op.results[0]
            x, w = (Guarded(gb.feeds[o] if o in gb.feeds else gb.weights[o]) for o in step.op.operands)
            work, grain = step.spec.work, step.spec.grain
            splits = sorted({0, work} | set(range(grain, work, grain)))
            for a in splits[:-1]:  # [0, a) then [a, work): every split point the runtime may choose
                out = Guarded(np.full(r.type.storage_shape, np.nan, np.float32))
                for lo, hi in ((0, a), (a, work)):
                    step.fn(x.ptr, w.ptr, out.ptr, lo, hi)
                assert x.canary_ok() and w.canary_ok() and out.canary_ok(), (xshape, N, step.op.describe())
                err = np.abs(out.arr - ref[r.name])
                assert np.all(err <= gb.meta[r.name]), (xshape, N, a, step.op.describe())


def test_dense_f32_threads_match_one_thread():
    """The compiled module, at 1 and 2 threads, on a shape big enough to be split."""
    rng = np.random.default_rng(16)
    gb = _graph(rng, (64, 96), 200)
    g = gb.graph()
    ref = ladder.run(g, gb.feeds, weights=gb.weights)
    m = ladder.compile(g, "cpu", gb.weights, pipeline="")
    for threads in (1, 2):
        got = m(list(gb.feeds.values()), threads=threads)
        for n in ref:
            assert np.all(np.abs(got[n] - ref[n]) <= gb.meta[n]), (threads, n)


@pytest.mark.parametrize("cpu", ["skylake-avx512", "x86-64"])
def test_dense_f32_edges_compile_for(cpu):
    """AVX-512 (16 lanes, 32 registers: taller tiles) and SSE, compiled ahead of time whatever the host."""
    rng = np.random.default_rng(17)
    for xshape, N in SHAPES[:6]:
        gb = _graph(rng, xshape, N)
        cg = compile_graph(gb.graph(), gb.weights, target=f"cpu:{cpu}", pipeline="", jit=False)
        assert sum(s.op.kind == "matmul" for s in cg.steps) == 2
