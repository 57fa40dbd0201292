"""Lowering of data movement: ops that are DMA only (no compute unit touches the data). ``reshape`` is an
alias (same bytes, new shape); ``transpose`` (keeping the last axis), ``slice`` and ``concat`` are strided
DRAM-to-DRAM copies of whole rows; ``gather`` is a row gather by an SRAM index; ``cache_write`` writes the
new keys/values at the run-time position (a bounds-checked run-time offset), in place when nothing else
reads the old cache.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

from ladder.ir import Op
from ladder.ops import OPS

from .isa import Buffer, DmaCopy, DmaGather
from .lowering import Lowering, LoweringError, Placed, lowers, storage_bytes


@lowers("reshape")
def lower_reshape(low: Lowering, op: Op) -> None:
    p = low.value(op.operands[0])
    if op.name in low.g.outputs or op.operands[0] in low.g.outputs:
        out = low.result(op.name)  # an output keeps its own buffer
        low.emit(DmaCopy, dst=out.buffer, src=p.buffer, row_bytes=storage_bytes(p.type), src_off=p.offset)
        return
    low.placed[op.name] = Placed(p.buffer, op.result.type, p.offset)


def _strides(shape: Sequence[int], item: int) -> list[int]:
    """Row-major byte strides."""
    return [math.prod(shape[i + 1:]) * item for i in range(len(shape))]


def copy_view(low: Lowering, src: Placed, src_view: tuple[int, list[int]], dst: Placed,
              dst_view: tuple[int, list[int]], shape: Sequence[int], item: int) -> None:
    """DRAM -> DRAM copy of a strided view of ``shape`` (views as (byte offset, byte strides per axis)); the
    last axis is contiguous on both sides. One 2-D DMA per index of the axes before the last two."""
    (s0, ss), (d0, ds) = src_view, dst_view
    shape = list(shape) or [1]
    ss, ds = (ss or [item]), (ds or [item])
    if len(shape) == 1:
        shape, ss, ds = [1] + shape, [0] + ss, [0] + ds
    for idx in itertools.product(*(range(d) for d in shape[:-2])):
        so = s0 + sum(i * st for i, st in zip(idx, ss))
        do = d0 + sum(i * st for i, st in zip(idx, ds))
        low.emit(DmaCopy, dst=dst.buffer, src=src.buffer, rows=shape[-2], row_bytes=shape[-1] * item,
                 src_off=src.offset + so, dst_off=dst.offset + do, src_stride=ss[-2], dst_stride=ds[-2])


@lowers("transpose")
def lower_transpose(low: Lowering, op: Op) -> None:
    perm = OPS["transpose"].full_attrs(op.attr)["perm"]
    t = low.g.type_of(op.operands[0])
    if t.rank < 2 or perm[-1] != t.rank - 1:
        raise LoweringError(f"{op.describe()}: the asic target moves whole rows; a transpose must keep the last "
                            f"axis (perm {list(perm)})", op.loc)
    item = t.storage_np_dtype.itemsize
    xs, oshape = _strides(t.shape, item), op.result.type.shape
    copy_view(low, low.value(op.operands[0]), (0, [xs[p] for p in perm]), low.result(op.name),
              (0, _strides(oshape, item)), oshape, item)


@lowers("slice")
def lower_slice(low: Lowering, op: Op) -> None:
    t = low.g.type_of(op.operands[0])
    slices = OPS["slice"].slices(t, OPS["slice"].full_attrs(op.attr))
    ranges = [sl.indices(d) for sl, d in zip(slices, t.shape)]
    if any(step <= 0 for _, _, step in ranges) or ranges[-1][2] != 1:
        raise LoweringError(f"{op.describe()}: the asic target slices with positive steps and step 1 along the "
                            f"last axis", op.loc)
    item = t.storage_np_dtype.itemsize
    xs, oshape = _strides(t.shape, item), op.result.type.shape
    out = low.result(op.name)
    if math.prod(oshape):
        base = sum(start * st for (start, _, _), st in zip(ranges, xs))
        copy_view(low, low.value(op.operands[0]), (base, [st * step for (_, _, step), st in zip(ranges, xs)]), out,
                  (0, _strides(oshape, item)), oshape, item)


@lowers("concat")
def lower_concat(low: Lowering, op: Op) -> None:
    ot = op.result.type
    axis = OPS["concat"].full_attrs(op.attr)["axis"] % ot.rank
    item = ot.storage_np_dtype.itemsize
    out, os_ = low.result(op.name), _strides(ot.shape, item)
    at = 0
    for name in op.operands:
        shape = low.g.type_of(name).shape
        if math.prod(shape):
            copy_view(low, low.value(name), (0, _strides(shape, item)), out, (at * os_[axis], os_), shape, item)
        at += shape[axis]


@lowers("gather")
def lower_gather(low: Lowering, op: Op) -> None:
    axis = OPS["gather"].full_attrs(op.attr)["axis"]
    table, idx = op.operands
    tt, it = low.g.type_of(table), low.g.type_of(idx)
    if axis % tt.rank != 0 or it.dtype.name != "i32" or tt.layout:
        raise LoweringError(f"{op.describe()}: the asic target gathers rows (axis 0) of an unpacked table with "
                            f"i32 indices, got {tt} and {it} along axis {axis}", op.loc)
    index = low.load_whole("idx", idx)
    tp, out = low.value(table), low.result(op.name)
    row = math.prod(tt.shape[1:]) * tt.storage_np_dtype.itemsize
    low.emit(DmaGather, dst=out.buffer, table=tp.buffer, index=index.buffer, count=it.size, row_bytes=row,
             table_rows=tt.shape[0], table_off=tp.offset)


@lowers("cache_write")
def lower_cache_write(low: Lowering, op: Op) -> None:
    cache, new, pos = op.operands
    ct, nt = low.g.type_of(cache), low.g.type_of(new)
    axis = OPS["cache_write"].full_attrs(op.attr)["axis"] % ct.rank
    cp = low.value(cache)
    in_place = low.uses[cache] == 1 and cache not in low.g.outputs
    if in_place:
        low.placed[op.name] = Placed(cp.buffer, ct, cp.offset)
        b = low.buffers[cp.buffer]
        low.buffers[cp.buffer] = Buffer(b.name, b.space, b.bytes, b.addr, b.dtype, b.shape, "state")
        dst = low.placed[op.name]
    else:
        dst = low.result(op.name)
        low.emit(DmaCopy, dst=dst.buffer, src=cp.buffer, row_bytes=storage_bytes(ct), src_off=cp.offset)
    index = low.load_whole("pos", pos)
    item = ct.storage_np_dtype.itemsize
    inner = math.prod(ct.shape[axis + 1:]) * item
    outer = math.prod(ct.shape[:axis])
    n, cap = nt.shape[axis], ct.shape[axis]
    src = low.value(new)
    low.emit(DmaCopy, dst=dst.buffer, src=src.buffer, rows=outer, row_bytes=n * inner, src_off=src.offset,
             dst_off=dst.offset, dst_stride=cap * inner, src_stride=n * inner, index=index.buffer,
             index_scale=inner, index_limit=cap - n)



__all__ = ["copy_view", "lower_cache_write", "lower_concat", "lower_gather", "lower_reshape", "lower_slice",
           "lower_transpose"]
