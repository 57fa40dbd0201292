"""Lowering of row-parallel ops (element-wise, cast, rmsnorm, softmax, quantize, rope, dequant, unpack, reduce
over trailing axes): the leading axes are rows, tiles are whole rows, one ``vec.<op>`` per tile with the op's
own semantics. An operand whose leading axes broadcast (all 1) is loaded whole once; row tiles are double
buffered when there is more than one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ladder.ir import Graph, Op
from ladder.ops import OPS
from ladder.types import TensorType

from .isa import Tile
from .lowering import Lowering, halvings, lowers, storage_bytes

UNARY = ("neg", "relu", "relu2", "gelu", "erf", "silu", "sigmoid", "tanh", "exp", "round", "clamp", "cast")
BINARY = ("add", "sub", "mul", "div")
ROW_OPS = UNARY + BINARY + ("rmsnorm", "layernorm", "softmax", "quantize", "reduce", "dequant", "rope", "unpack")


@dataclass(frozen=True)
class RowPart:
    """One operand or result of a row-parallel op: tiled by rows (``inner`` = shape of one row) or whole."""

    name: str
    t: TensorType
    inner: tuple[int, ...] | None  # None: loaded whole

    @property
    def row_bytes(self) -> int:
        return math.prod(self.inner) * self.t.storage_np_dtype.itemsize


def _row_split(op: Op, g: Graph) -> tuple[int, dict]:
    """How many leading axes are rows, and the op's attributes with axes made negative (relative to the
    first operand), so a tile of rows means the same thing."""
    x = g.type_of(op.operands[0])
    res = op.results[0].type
    ref = res if res.rank >= x.rank else x
    lead = max(0, ref.rank - (2 if op.kind == "rope" else 1))
    attrs = OPS[op.kind].full_attrs(op.attr)
    for key in ("axis", "axes"):
        if key in attrs:
            axes = attrs[key] if isinstance(attrs[key], tuple) else (attrs[key],)
            if key == "axes" and not axes:
                axes = tuple(range(x.rank))
            norm = [a % max(x.rank, 1) for a in axes]
            lead = min([lead] + norm)
            neg = tuple(a - x.rank for a in norm)
            attrs[key] = neg if key == "axes" else neg[0]
    return lead, attrs


def classify_operand(name: str, t: TensorType, ref_rank: int, lead: tuple[int, ...],
                     whole_only: bool) -> RowPart | None:
    """Per row when the operand's leading axes are the rows', whole when they broadcast (all 1), else None."""
    padded = (1,) * (ref_rank - t.rank) + t.shape
    nlead = len(lead)
    if whole_only or not lead or all(d == 1 for d in padded[:nlead]):
        keep = ref_rank - nlead
        return RowPart(name, t, None) if t.rank <= keep else RowPart(name, t.with_shape(t.shape[t.rank - keep:]), None)
    if padded[:nlead] == lead:
        return RowPart(name, t, padded[nlead:])
    return None


@lowers(*ROW_OPS)
def lower_rows(low: Lowering, op: Op) -> None:
    g = low.g
    nlead, attrs = _row_split(op, g)
    x = g.type_of(op.operands[0])
    ref = op.results[0].type if op.results[0].type.rank >= x.rank else x
    lead = ref.shape[:nlead]
    ops_in = [classify_operand(o, g.type_of(o), ref.rank, lead, op.kind == "rope" and i == 1)
              for i, o in enumerate(op.operands)]
    if any(p is None for p in ops_in):  # an operand neither per row nor broadcast: one tile of everything
        lead = ()
        ops_in = [classify_operand(o, g.type_of(o), ref.rank, (), True) for o in op.operands]
    outs = [RowPart(r.name, r.type, r.type.shape[len(lead):]) for r in op.results]
    rows = math.prod(lead)
    rowed = [p for p in ops_in if p.inner is not None] + outs
    whole = {f"in{i}": storage_bytes(low.value(p.name).type) for i, p in enumerate(ops_in) if p.inner is None}

    def plan(rt: int):
        slots = 2 if rt < rows else 1
        return rt, {**whole, **{f"r{j}": slots * rt * p.row_bytes for j, p in enumerate(rowed)}}

    rt = low.fit(plan(r) for r in halvings(max(rows, 1)))
    ntiles = -(-rows // rt) if rows else 1
    slots = 2 if ntiles > 1 else 1
    wtiles = {i: low.load_whole(f"in{i}", p.name, p.t.shape) for i, p in enumerate(ops_in) if p.inner is None}
    bufs = [[low.sram(f"{'in' if j < len(rowed) - len(outs) else 'out'}{j}.{s}", rt * p.row_bytes, p.t)
             for s in range(slots)] for j, p in enumerate(rowed)]
    placed_in = [low.value(p.name) for p in rowed[:len(rowed) - len(outs)]]
    placed_out = [low.result(p.name) for p in outs]

    def span(i: int) -> tuple[int, int]:
        return i * rt, min(rows, (i + 1) * rt) if rows else 1

    def load(i: int, s: int) -> None:
        r0, r1 = span(i)
        for j, p in enumerate(placed_in):
            low.load(bufs[j][s], p, r0 * rowed[j].row_bytes, (r1 - r0) * rowed[j].row_bytes)

    def compute(i: int, s: int) -> None:
        r0, r1 = span(i)
        n = r1 - r0
        tiles, k = [], 0
        for idx, p in enumerate(ops_in):
            if p.inner is None:
                tiles.append(wtiles[idx])
            else:
                tiles.append(Tile(bufs[k][s], p.t.dtype.name, (n,) * bool(lead) + p.inner, layout=p.t.layout or ""))
                k += 1
        first_out = len(rowed) - len(outs)
        dsts = [Tile(bufs[first_out + j][s], p.t.dtype.name, (n,) * bool(lead) + p.inner)
                for j, p in enumerate(outs)]
        low.vec(op.kind, dsts, tiles, attrs)
        for j, p in enumerate(outs):
            low.store(placed_out[j], bufs[first_out + j][s], r0 * p.row_bytes, n * p.row_bytes)

    low.stream(ntiles, load, compute)



__all__ = ["ROW_OPS", "RowPart", "classify_operand", "lower_rows"]
