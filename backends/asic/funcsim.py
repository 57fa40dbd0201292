"""The functional simulator: executes a Program with numpy and returns the graph's outputs.

Memory is real bytes: one ``uint8`` array per space (``dram``, ``sram``, ``xbar``, ``rom``), sized from the
program's buffer addresses, so SRAM buffers of different ops really share the scratchpad and a wrong
allocation shows up as a wrong answer. A Tile is a numpy view (dtype, shape, byte offset, row stride) of its
buffer's bytes. Every instruction really moves or computes its tile:

* DMA copies rows of bytes (strided, with the runtime offset of an index buffer, bounds-checked);
* ``lut.build`` computes the 16 subset sums of every 4 activations;
* ``lmma`` looks the tables up with the 4-bit indices of each bit plane of the packed weight tile and adds
  the planes with their powers of two, folding the type's offset (value = a * offset_code + b); integer
  tables accumulate exactly, wrapping to int32 like the reference;
* ``xmma`` multiplies bit plane by bit plane (a crossbar with an ideal ADC); ``mma`` is a numpy matmul;
* ``vec.<fn>`` applies the ladder op's reference semantics to the tiles, or an ``EXTRA_VEC_FNS`` function.

So integer paths (quantize -> lut.build -> lmma -> int32) equal the reference interpreter bit for bit; float
results differ only where a tiled sum adds in another order (K tiles of an ``mma``, key chunks of attention).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ladder.errors import RuntimeFailure
from ladder.interpreter import convert_input
from ladder.ir import Graph, Value
from ladder.ops import OPS, InferError
from ladder.ops.lowbit import unpacked
from ladder.ops.nn import softmax
from ladder.packing import PACKINGS, from_codes, get_packing
from ladder.types import DType, TensorType

from .isa import (MIRRORED_ENTRIES, SPACES, TABLE_ENTRIES, Barrier, Dma, DmaGather, Instr, Lmma, LutBuild, Mma,
                  Program, Tile, Vec, WeightImage, Xmma)

# bit t of table index i: the 16 subsets of 4 activations, index bit t = activation t of the group
SUBSETS = ((np.arange(16)[:, None] >> np.arange(4)[None, :]) & 1).astype(np.int64)  # [16, 4]
TABLE_GROUP = 4  # activations per table (16 entries): the index width read from each bit plane
PLANES = PACKINGS["planes"]  # the layout of lmma's and xmma's weight tiles


class Machine:
    """The memories of one program run."""

    def __init__(self, program: Program):
        self.program = program
        self.buffers = program.buffer_map
        sizes = {s: program.space_bytes(s) for s in SPACES}
        sizes["sram"] = max(sizes["sram"], program.sram_bytes)
        self.mem = {s: np.zeros(n, np.uint8) for s, n in sizes.items()}

    def raw(self, name: str) -> np.ndarray:
        """The bytes of a buffer (a view)."""
        b = self.buffers[name]
        return self.mem[b.space][b.addr:b.addr + b.bytes]

    def view(self, tile: Tile) -> np.ndarray:
        """A writable numpy view of a tile (packed tiles: their uint8 storage)."""
        t = tile.type
        dt = t.storage_np_dtype
        shape = t.storage_shape
        data = self.raw(tile.buffer)[tile.offset:tile.offset + tile.span]
        item = dt.itemsize
        strides = [item] * len(shape)
        for i in range(len(shape) - 2, -1, -1):
            strides[i] = (tile.stride * item if i == len(shape) - 2 and tile.stride else strides[i + 1] * shape[i + 1])
        return as_strided(data.view(dt), shape, strides, writeable=True)

    def read(self, tile: Tile) -> np.ndarray:
        return np.array(self.view(tile))

    def write(self, tile: Tile, arr: np.ndarray, what: str) -> None:
        v = self.view(tile)
        arr = np.asarray(arr)
        if arr.shape != v.shape or arr.dtype != v.dtype:
            raise RuntimeFailure(f"internal: {what} produced {arr.dtype}{list(arr.shape)} for tile {tile}")
        v[...] = arr


EXECUTORS: dict[type, Callable[[Machine, Instr], None]] = {}


def executes(cls):
    def deco(fn):
        EXECUTORS[cls] = fn
        return fn
    return deco


def _where(ins: Instr) -> str:
    return f"{ins.mnemonic}" + (f" of %{ins.op}" if ins.op else "")


def _rows(buf: np.ndarray, offset: int, rows: int, row_bytes: int, stride: int, what: str) -> np.ndarray:
    stride = stride or row_bytes
    end = offset + (rows - 1) * stride + row_bytes if rows else offset
    if offset < 0 or end > buf.size:
        raise RuntimeFailure(f"{what}: bytes {offset}..{end} are outside the {buf.size}-byte buffer")
    return as_strided(buf[offset:], (rows, row_bytes), (stride, 1), writeable=True)


@executes(Dma)
def _dma(m: Machine, ins: Dma) -> None:
    src_off, dst_off = ins.src_off, ins.dst_off
    if ins.index:
        idx = int(m.raw(ins.index)[:4].view(np.int32)[0])
        if not 0 <= idx <= ins.index_limit:
            raise RuntimeFailure(f"{_where(ins)}: position {idx} is outside 0 .. {ins.index_limit} "
                                 f"(the destination has room for no more)")
        if ins.index_on == "src":
            src_off += idx * ins.index_scale
        else:
            dst_off += idx * ins.index_scale
    data = np.array(_rows(m.raw(ins.src), src_off, ins.rows, ins.row_bytes, ins.src_stride, _where(ins)))
    _rows(m.raw(ins.dst), dst_off, ins.rows, ins.row_bytes, ins.dst_stride, _where(ins))[...] = data


@executes(DmaGather)
def _gather(m: Machine, ins: DmaGather) -> None:
    idx = m.raw(ins.index)[ins.index_off:ins.index_off + 4 * ins.count].view(np.int32).astype(np.int64)
    n = ins.table_rows
    bad = idx[(idx < -n) | (idx >= n)]
    if bad.size:
        raise RuntimeFailure(f"{_where(ins)}: index {bad[0]} is out of range for axis 0 of size {n}")
    idx = np.where(idx < 0, idx + n, idx)
    table = _rows(m.raw(ins.table), ins.table_off, n, ins.row_bytes, 0, _where(ins))
    _rows(m.raw(ins.dst), ins.dst_off, ins.count, ins.row_bytes, 0, _where(ins))[...] = table[idx]


@executes(LutBuild)
def _lut_build(m: Machine, ins: LutBuild) -> None:
    x = m.read(ins.src)
    rows, groups, entries = ins.dst.shape
    wide = np.int64 if ins.src.type.dtype.is_integer else np.float64
    padded = np.zeros((rows, groups * 4), wide)
    padded[:, :x.shape[1]] = x.astype(wide)
    quads = padded.reshape(rows, groups, 4)
    if entries == MIRRORED_ENTRIES:  # 8 signed sums (bit 3 clear) and the group sum
        signed = quads @ (2 * SUBSETS[:8] - 1).T.astype(wide)
        table = np.concatenate([signed, quads.sum(axis=-1, keepdims=True)], axis=-1)
    elif entries == TABLE_ENTRIES:
        table = quads @ SUBSETS.T.astype(wide)  # [M, G, 16]
    else:
        raise RuntimeFailure(f"{_where(ins)}: a table has {TABLE_ENTRIES} or {MIRRORED_ENTRIES} entries per "
                             f"group, not {entries}")
    m.write(ins.dst, table.astype(m.view(ins.dst).dtype), _where(ins))


def _full_table(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(the 16 entries a 4-bit index selects, the group sums [M, G], mirrored?) of a table tile."""
    if table.shape[-1] == MIRRORED_ENTRIES:
        half = table[..., :8]
        return np.concatenate([half, -half[..., ::-1]], axis=-1), table[..., 8], True  # LUT[15-i] = -LUT[i]
    return table, table[..., 15], False


def _affine(dt: DType) -> tuple[int, int]:
    """value = a * offset_code + b for the bit-plane codes of an integer low-bit type."""
    codes = np.arange(1 << dt.bits, dtype=np.uint8)
    type_codes = codes ^ np.uint8(PLANES.stored_xor(dt))  # the planes' stored codes -> the type's
    values = from_codes(type_codes, dt).astype(np.int64)
    if dt.kind == "ternary":
        values, codes = values[:3], codes[:3]
    a, b = int(values[1] - values[0]), int(values[0])
    assert np.array_equal(values, a * codes.astype(np.int64) + b), dt
    return a, b


def _plane_indices(storage: np.ndarray, dt: DType) -> np.ndarray:
    """Planes storage [N, bits * K8] -> the 4-bit indices of each group of 4 positions [bits, N, 2 * K8], as the
    planes packing declares them (ladder.packing)."""
    return PLANES.plane_indices(storage, dt, TABLE_GROUP)


def _accumulate(m: Machine, dst: Tile, y: np.ndarray, acc: bool, what: str) -> None:
    out_dt = m.view(dst).dtype
    if acc:
        y = y + m.read(dst).astype(y.dtype)
    if out_dt.kind == "i":
        m.write(dst, y.astype(np.int64).astype(out_dt), what)  # int32 wrap-around, like the reference
    else:
        m.write(dst, y.astype(out_dt), what)


@executes(Lmma)
def _lmma(m: Machine, ins: Lmma) -> None:
    table = m.read(ins.table)
    table = table.astype(np.int64 if table.dtype.kind in "iu" else np.float64)
    dt = ins.w.type.dtype
    idx = _plane_indices(m.read(ins.w), dt)  # [P, N, G]
    if idx.shape[2] != table.shape[1]:
        raise RuntimeFailure(f"internal: {_where(ins)} has {table.shape[1]} table groups for {idx.shape[2]}")
    rows, n, g = table.shape[0], idx.shape[1], idx.shape[2]
    full, group_sums, mirrored = _full_table(table)
    total = group_sums.sum(axis=1)[:, None]  # sum of the activations of each row
    groups = np.arange(g)[None, :]
    planes = np.zeros((rows, n), table.dtype)
    step = max(1, (1 << 22) // max(1, rows * g))  # outputs per lookup, to bound the [M, outputs, G] gather
    for n0 in range(0, n, step):
        for b in range(dt.bits):
            q = full[:, groups, idx[b, n0:n0 + step]].sum(axis=-1)
            if mirrored:  # a signed sum s = 2 * subset - total: the subset sum is (s + total) / 2, exactly
                q = (q + total) // 2 if q.dtype.kind == "i" else (q + total) / 2
            planes[:, n0:n0 + step] += (1 << b) * q
    a, b = _affine(dt)
    y = a * planes + b * total
    _accumulate(m, ins.dst, y, ins.acc, _where(ins))


@executes(Xmma)
def _xmma(m: Machine, ins: Xmma) -> None:
    x = m.read(ins.x).astype(np.int64)
    dt = ins.w.type.dtype
    n, k = ins.w.shape
    storage = m.read(ins.w)
    bits = PLANES.plane_indices(storage.reshape(n, -1), dt, 1)[..., :k].transpose(1, 0, 2).astype(np.int64)
    planes = sum((1 << b) * (x @ bits[:, b, :].T) for b in range(dt.bits))  # bit-serial crossbar reads
    a, b0 = _affine(dt)
    _accumulate(m, ins.dst, a * planes + b0 * x.sum(axis=1, keepdims=True), ins.acc, _where(ins))


@executes(Mma)
def _mma(m: Machine, ins: Mma) -> None:
    a, b = m.read(ins.a), m.read(ins.b)
    if ins.transpose_b:
        b = b.T
    if np.dtype(a.dtype).kind in "iu" and np.dtype(b.dtype).kind in "iu":
        y = a.astype(np.int64) @ b.astype(np.int64)
    else:
        y = np.matmul(a.astype(np.float32), b.astype(np.float32))
    _accumulate(m, ins.dst, y, ins.acc, _where(ins))


def _attn_softmax(args, attrs, ins: Vec) -> list[np.ndarray]:
    """Scale, mask (keys past kv_len; with ``causal``, keys after the query's position) and softmax rows of
    attention scores; row r is query (row0 + r) % queries."""
    scores = args[0].astype(np.float32) * np.float32(attrs["scale"])
    sq, keys = attrs["queries"], scores.shape[-1]
    length = int(np.asarray(args[1]).reshape(-1)[0]) if len(args) > 1 else keys
    if not sq <= length <= keys:
        raise RuntimeFailure(f"{_where(ins)}: kv_len {length} must be between the {sq} queries and the cache "
                             f"size {keys}")
    qi = (attrs["row0"] + np.arange(scores.shape[0])) % sq
    key = np.arange(keys)[None, :]
    allowed = key < length
    if attrs["causal"]:
        allowed = allowed & (key <= (length - sq + qi)[:, None])
    return [softmax(np.where(allowed, scores, -np.inf), -1).astype(np.float32)]


EXTRA_FNS: dict[str, Callable] = {
    "attn_softmax": _attn_softmax,
    "copy": lambda args, attrs, ins: [args[0]],
}


@executes(Vec)
def _vec(m: Machine, ins: Vec) -> None:
    args = [m.read(t) for t in ins.src]
    if ins.fn in EXTRA_FNS:
        outs = EXTRA_FNS[ins.fn](args, ins.attr, ins)
    else:
        opdef = OPS[ins.fn]
        try:
            attrs = opdef.full_attrs(opdef.normalize_attrs(ins.attr))
            with np.errstate(all="ignore"):
                outs = opdef.compute(args, attrs, [t.type for t in ins.dst], [t.type for t in ins.src])
        except InferError as e:
            raise RuntimeFailure(f"{_where(ins)}: {e}") from None
    for t, arr in zip(ins.dst, outs):
        m.write(t, np.asarray(arr).astype(m.view(t).dtype, copy=False).reshape(m.view(t).shape), _where(ins))


@executes(Barrier)
def _barrier(m: Machine, ins: Barrier) -> None:
    """Functionally nothing: instructions already run one after another."""


def execute(m: Machine, ins: Instr) -> None:
    for cls in type(ins).__mro__:
        if cls in EXECUTORS:
            return EXECUTORS[cls](m, ins)
    raise RuntimeFailure(f"internal: no executor for {ins.mnemonic}")


# -- images, inputs and a whole run ---------------------------------------------------------------------

def build_images(program: Program, graph: Graph, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The bytes of every weight buffer, from the weight-only values (``Session.fixed``) by their recipes."""
    return {im.buffer: build_image(im, graph.type_of(im.value), values[im.value]) for im in program.weights}


def build_image(im: WeightImage, t: TensorType, arr: np.ndarray) -> np.ndarray:
    if im.format == "raw":
        a = np.asarray(arr)
        if im.transpose:
            a = a.T
        return np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    logical = unpacked(np.asarray(arr), t)
    if im.transpose:
        logical = logical.T
    parts = []
    for r0, r1, c0, c1, offset, nbytes in im.tiles():
        tile = np.ascontiguousarray(logical[r0:r1, c0:c1])
        data = get_packing(im.layout).pack(tile, t.dtype) if im.layout else tile
        parts.append(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
        assert parts[-1].size == nbytes, (im.buffer, r0, c0)
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def bind(program: Program, inputs) -> dict[str, np.ndarray]:
    """Inputs by name (or in order) -> checked arrays, like the interpreter's binding."""
    if not isinstance(inputs, Mapping):
        inputs = list(inputs)
        if len(inputs) != len(program.inputs):
            raise RuntimeFailure(f"program @{program.name} takes {len(program.inputs)} input(s), got {len(inputs)}")
        inputs = {b.value: a for b, a in zip(program.inputs, inputs)}
    given = {k.lstrip("%"): v for k, v in inputs.items()}
    known = {b.value for b in program.inputs}
    unknown = sorted(set(given) - known)
    if unknown:
        raise RuntimeFailure(f"program @{program.name} has no input %{unknown[0]}; its inputs: "
                             f"{', '.join('%' + b.value for b in program.inputs) or 'none'}")
    out = {}
    for b in program.inputs:
        if b.value not in given:
            raise RuntimeFailure(f"input %{b.value} : {b.type} is missing")
        out[b.value] = convert_input(Value(b.value, b.type), given[b.value])
    return out


def run(program: Program, inputs=(), images: Mapping[str, np.ndarray] | None = None,
        machine: Machine | None = None) -> dict[str, np.ndarray]:
    """Run a program on its inputs with the weight images; the outputs by value name."""
    m = machine or Machine(program)
    for name, data in (images or {}).items():
        m.raw(name)[...] = data
    bound = bind(program, inputs)
    for b in program.inputs:
        arr = bound[b.value]
        m.raw(b.buffer)[b.offset:b.offset + arr.nbytes] = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    for ins in program.instrs:
        execute(m, ins)
    out = {}
    for b in program.outputs:
        t = b.type
        dt = t.storage_np_dtype
        n = math.prod(t.shape) * dt.itemsize
        out[b.value] = np.array(m.raw(b.buffer)[b.offset:b.offset + n].view(dt).reshape(t.shape))
    return out


__all__ = ["EXECUTORS", "EXTRA_FNS", "Machine", "bind", "build_image", "build_images", "execute", "run"]
