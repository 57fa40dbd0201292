"""Lowering of attention on the systolic arrays, KV heads side by side.

One **work item** is a KV head and a tile of its query rows (the head's ``hq / hkv`` query heads stacked
as rows): ``mma`` for the scores in key chunks (K chunks double buffered), one ``vec.attn_softmax`` (scale,
causal and kv_len mask), ``mma`` for probabilities x values chunk by chunk (V chunks double buffered), a
store of the output rows.

Parallel heads. The cost simulator orders instructions by the buffers they touch, so two work items on the
same SRAM buffers can never overlap. The lowering first picks the tiling of one work item (the largest
query-row tile and key chunk that fit, as before), then gives ``sets`` work items their own copies of every
buffer: the largest ``sets`` in hkv, hkv/2, ... 1 whose copies all fit the SRAM. Items are emitted in waves
of ``sets``, instruction by instruction round robin, so each unit's in-order queue alternates between heads
and a config with several systolic arrays (``[cost] mma_arrays``) runs the heads of a wave at once. When
only one set fits, the heads share it and run one after another (the fallback). Each item computes the same
instructions in the same order as alone, so the functional result does not depend on ``sets``.

Valid length. The scores cover the cache's full capacity, and keys at or past the run-time ``kv_len`` are
masked by ``vec.attn_softmax``: the instruction stream is static (the ISA has no run-time trip count), so
the cost of an attention is the cost at a full cache. That is exact for the cost model's workloads: a
built-in model's cache is sized to the ``context`` it is simulated at (``sweep.load_workload``), and a decode
step at context L is the step whose kv_len = L = the capacity. For a graph whose cache is larger than the
valid length the cost is an upper bound (the cost at the capacity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

from ladder.ir import Op
from ladder.ops import OPS
from ladder.types import TensorType

from .isa import Mma, Tile
from .lowering import Lowering, LoweringError, Placed, halvings, lowers


@dataclass(frozen=True)
class AttentionShape:
    """The sizes of one attention: ``hkv`` KV heads, each with ``rows`` query rows (its ``hq / hkv`` query
    heads x ``sq`` queries) over ``ctx`` cached keys of width ``d`` (values ``dv``)."""

    hkv: int
    rows: int
    sq: int
    ctx: int
    d: int
    dv: int

    def buffers(self, rt: int, ct: int) -> dict[str, int]:
        """Bytes of one work item's SRAM buffers for row tile ``rt`` and key chunk ``ct`` (f32)."""
        return {"q": rt * self.d * 4, "scores": rt * self.ctx * 4, "out": rt * self.dv * 4,
                "k0": ct * self.d * 4, "k1": ct * self.d * 4, "v0": ct * self.dv * 4, "v1": ct * self.dv * 4}


@dataclass(frozen=True)
class HeadBuffers:
    """One set of a work item's SRAM buffers."""

    q: str
    scores: str
    out: str
    k: tuple[str, str]
    v: tuple[str, str]


def _shape(op: Op, qt: TensorType, kt: TensorType, vt: TensorType) -> AttentionShape:
    if qt.rank != 3 or kt.rank != 3 or vt.rank != 3:
        raise LoweringError(f"{op.describe()}: the asic target lowers attention on [heads, seq, dim] tensors, "
                            f"got {qt}, {kt}, {vt}", op.loc)
    if qt.dtype.name != "f32":
        raise LoweringError(f"{op.describe()}: the asic target lowers f32 attention, got {qt}", op.loc)
    if kt.dtype.name != "f32":
        raise LoweringError(f"{op.describe()}: the asic target reads an f32 KV cache, got {kt} (import the model "
                            f"with kv_cache='f32', --kv-cache f32)", op.loc)
    hq, sq, d = qt.shape
    hkv, ctx, dv = vt.shape
    return AttentionShape(hkv, hq // hkv * sq, sq, ctx, d, dv)


def _parallel_sets(low: Lowering, s: AttentionShape, rt: int, ct: int) -> int:
    """How many work items get their own buffers: the largest of hkv, hkv/2, ... 1 that fits the SRAM."""
    one = s.buffers(rt, ct)
    for sets in halvings(s.hkv):
        if low.fits({f"{key}.{i}": v for i in range(sets) for key, v in one.items()}):
            return sets
    return 1


def _head_buffers(low: Lowering, s: AttentionShape, rt: int, ct: int, i: int) -> HeadBuffers:
    b = {key: low.sram(f"{key}.h{i}", v) for key, v in s.buffers(rt, ct).items()}
    return HeadBuffers(b["q"], b["scores"], b["out"], (b["k0"], b["k1"]), (b["v0"], b["v1"]))


_DONE = object()


def _round_robin(items: list[Iterator[None]]) -> None:
    """Run emission generators one step each in turn until all are done."""
    while items:
        items = [it for it in items if next(it, _DONE) is not _DONE]


@lowers("attention")
def lower_attention(low: Lowering, op: Op) -> None:
    g = low.g
    q, k, v = op.operands[:3]
    qt, kt, vt = (g.type_of(o) for o in (q, k, v))
    s = _shape(op, qt, kt, vt)
    attrs = OPS["attention"].full_attrs(op.attr)
    scale = float(attrs["scale"] or 1.0 / math.sqrt(s.d))
    rt, ct = low.fit(((r, c), s.buffers(r, c)) for c in halvings(s.ctx) for r in halvings(s.rows))
    kv_len = low.load_whole("kvlen", op.operands[3]) if len(op.operands) == 4 else None
    sets = _parallel_sets(low, s, rt, ct)
    bufs = [_head_buffers(low, s, rt, ct, i) for i in range(sets)]
    qp, kp, vp, out = low.value(q), low.value(k), low.value(v), low.result(op.name)
    chunks = [(c0, min(s.ctx, c0 + ct)) for c0 in range(0, s.ctx, ct)]
    dt = qt.dtype.name

    def scores_tile(b: HeadBuffers, n: int, c0: int, c1: int) -> Tile:
        return Tile(b.scores, dt, (n, c1 - c0), c0 * 4, s.ctx if c1 - c0 < s.ctx else 0)

    def load_chunk(slots: tuple[str, str], src: Placed, width: int, h: int, i: int) -> None:
        """Key (or value) chunk i of KV head h into slot i % 2."""
        c0, c1 = chunks[i]
        low.load(slots[i % 2], src, (h * s.ctx + c0) * width * 4, (c1 - c0) * width * 4)

    def item(h: int, r0: int, b: HeadBuffers) -> Iterator[None]:
        """The instructions of KV head ``h``, query rows r0.., on buffer set ``b``; yields after each step."""
        n = min(s.rows, r0 + rt) - r0
        low.load(b.q, qp, (h * s.rows + r0) * s.d * 4, n * s.d * 4)
        load_chunk(b.k, kp, s.d, h, 0)
        yield
        for i, (c0, c1) in enumerate(chunks):
            if i + 1 < len(chunks):
                load_chunk(b.k, kp, s.d, h, i + 1)
            low.emit(Mma, dst=scores_tile(b, n, c0, c1), a=Tile(b.q, dt, (n, s.d)),
                     b=Tile(b.k[i % 2], dt, (c1 - c0, s.d)), transpose_b=True)
            yield
        whole = Tile(b.scores, dt, (n, s.ctx))
        low.vec("attn_softmax", [whole], [whole] + ([kv_len] if kv_len else []),
                {"scale": scale, "causal": attrs["causal"], "queries": s.sq, "row0": r0})
        load_chunk(b.v, vp, s.dv, h, 0)
        yield
        for i, (c0, c1) in enumerate(chunks):
            if i + 1 < len(chunks):
                load_chunk(b.v, vp, s.dv, h, i + 1)
            low.emit(Mma, dst=Tile(b.out, dt, (n, s.dv)), a=scores_tile(b, n, c0, c1),
                     b=Tile(b.v[i % 2], dt, (c1 - c0, s.dv)), acc=i > 0)
            yield
        low.store(out, b.out, (h * s.rows + r0) * s.dv * 4, n * s.dv * 4)

    work = [(h, r0) for h in range(s.hkv) for r0 in range(0, s.rows, rt)]
    for w0 in range(0, len(work), sets):
        _round_robin([item(h, r0, bufs[j]) for j, (h, r0) in enumerate(work[w0:w0 + sets])])


__all__ = ["AttentionShape", "lower_attention"]
