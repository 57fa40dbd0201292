"""The lowering driver: the state of one graph's lowering (``Lowering``), the registry of per-op lowerings
(``LOWERINGS``, filled by ``lower_rows``, ``lower_movement``, ``lower_matmul`` and ``lower_attention``) and the
memory rules they share. ``lower.lower(graph, cfg)`` is the public entry.

Memory. Graph inputs, outputs and intermediates live in DRAM, one buffer per value (a ``reshape`` is an alias:
same bytes, new shape; a ``cache_write`` whose cache is used by nothing else updates it in place, so the KV
cache is ``state``). Weight-only values (params, packed weights) are placed per the config's
``weight_placement``: matrix weights in ``dram`` (streamed tile by tile), ``xbar`` (resident in crossbars) or
``rom`` (hardwired); vectors and embedding tables stay in DRAM. Weights are described by ``WeightImage``
recipes (matrix weights pre-cut into tiles, each tile packed in bit planes, so one DMA moves one tile); the
lowering never needs weight data, only types.

SRAM. Each op is lowered on its own with the SRAM to itself: its buffers start at SRAM address 0 and the
tile sizes are the largest that fit (``fit``), halving until they do; an op whose smallest tiling does not fit
is an error naming the largest buffer, its size and the SRAM size.

Double buffering: weight tiles, row tiles and key/value chunks alternate between two SRAM slots, and the
load of tile i+1 is issued before the compute of tile i (``stream``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from ladder.errors import LadderError
from ladder.ir import Graph, Op
from ladder.passes.lowbit import weight_values
from ladder.types import DType, TensorType

from .config import HwConfig
from .isa import Barrier, Binding, Buffer, DmaLoad, DmaStore, Instr, Program, Tile, Vec, WeightImage

ALIGN = 64
WEIGHT_SPACE = {"stream": "dram", "resident": "xbar", "hardwired": "rom"}
LUT_TYPES = ("i1", "u1", "i2", "u2", "ternary", "i4", "u4")


class LoweringError(LadderError):
    """The graph cannot become a program for this config: an unsupported op, or a tile that cannot fit."""

    kind = "lowering error"


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def storage_bytes(t: TensorType) -> int:
    return math.prod(t.storage_shape) * t.storage_np_dtype.itemsize


def halvings(n: int) -> list[int]:
    """n, ceil(n/2), ... 1."""
    out = [n]
    while out[-1] > 1:
        out.append(-(-out[-1] // 2))
    return out


@dataclass(frozen=True)
class Placed:
    """Where a graph value lives: a buffer (DRAM, crossbar or ROM) at a byte offset, with its type."""

    buffer: str
    type: TensorType
    offset: int = 0


LOWERINGS: dict[str, Callable[["Lowering", Op], None]] = {}


def lowers(*kinds: str):
    def deco(fn):
        for k in kinds:
            LOWERINGS[k] = fn
        return fn
    return deco


class Lowering:
    """The state of one graph's lowering: buffers, instructions and where each value lives."""

    def __init__(self, graph: Graph, cfg: HwConfig):
        self.g, self.cfg = graph, cfg
        self.buffers: dict[str, Buffer] = {}
        self.instrs: list[Instr] = []
        self.placed: dict[str, Placed] = {}
        self.images: dict[str, WeightImage] = {}
        self.tops = {"dram": 0, "xbar": 0, "rom": 0}
        self.weights = weight_values(graph)
        self.uses: dict[str, int] = {}  # value -> number of operand slots reading it
        for op in graph.ops():
            for o in op.operands:
                self.uses[o] = self.uses.get(o, 0) + 1
        self.op: Op | None = None
        self.sram_top = 0

    # -- buffers -------------------------------------------------------------------------------------
    def declare(self, name: str, space: str, nbytes: int, t: TensorType | None = None, role: str = "temp") -> str:
        base, i = name, 1
        while name in self.buffers:
            name, i = f"{base}.{i}", i + 1
        if space == "sram":
            addr = self.sram_top
            if addr + nbytes > self.cfg.sram_bytes:
                raise self.no_fit(name, nbytes, addr + nbytes)
            self.sram_top = _align(addr + nbytes)
        else:
            addr = self.tops[space]
            self.tops[space] = _align(addr + nbytes)
        dtype, shape = (t.dtype.name + (f"<{t.layout}>" if t.layout else ""), t.shape) if t else ("u8", (nbytes,))
        self.buffers[name] = Buffer(name, space, nbytes, addr, dtype, shape, role)
        return name

    def sram(self, label: str, nbytes: int, t: TensorType | None = None) -> str:
        return self.declare(f"{self.op.name}.{label}", "sram", nbytes, t)

    def no_fit(self, name: str, nbytes: int, total: int) -> LoweringError:
        op = self.op
        return LoweringError(f"{op.describe() if op else 'the program'} does not fit the SRAM: buffer %{name} needs "
                             f"{nbytes:,} bytes ({total:,} bytes for the op's buffers in all) but the SRAM of "
                             f"config {self.cfg.name} has {self.cfg.sram_bytes:,} bytes", op.loc if op else None)

    def fits(self, sizes: dict[str, int]) -> bool:
        """Whether buffers of these sizes fit the SRAM after the op's buffers declared so far."""
        return self.sram_top + sum(_align(b) for b in sizes.values()) <= self.cfg.sram_bytes

    def fit(self, plans: Iterable[tuple[object, dict[str, int]]]):
        """The first plan (params, {label: bytes}) whose buffers fit the SRAM; else an error naming the largest
        buffer of the last (smallest) plan."""
        last = None
        for params, sizes in plans:
            if self.fits(sizes):
                return params
            last = sizes
        label = max(last, key=last.get)
        raise self.no_fit(f"{self.op.name}.{label}", last[label], sum(_align(b) for b in last.values()))

    # -- values --------------------------------------------------------------------------------------
    def value(self, name: str) -> Placed:
        """Where a value the program reads lives (a weight-only value gets a raw image on first use)."""
        if name not in self.placed:
            if name not in self.weights:
                raise LoweringError(f"internal: %{name} is read before it is computed")
            t = self.g.type_of(name)
            buf = self.declare(name, "dram", storage_bytes(t), t, "weight")
            self.images[buf] = WeightImage(buf, name, "raw", t.dtype.name, t.shape, layout=t.layout or "")
            self.placed[name] = Placed(buf, t)
        return self.placed[name]

    def result(self, name: str) -> Placed:
        t = self.g.type_of(name)
        role = "output" if name in self.g.outputs else "temp"
        self.placed[name] = Placed(self.declare(name, "dram", storage_bytes(t), t, role), t)
        return self.placed[name]

    def weight_tiles(self, name: str, transpose: bool, rows: int, cols: int, layout: str, space: str) -> WeightImage:
        t = self.g.type_of(name)
        logical = t.logical
        shape = logical.shape[::-1] if transpose else logical.shape
        probe = WeightImage("", name, "tiles", t.dtype.name, logical.shape, transpose, rows, cols, layout)
        if space == "dram" and not layout and not t.layout and not transpose and cols >= shape[1]:
            # whole rows of an unpacked weight: its tiles are its row-major bytes, the raw image serves
            return dataclasses.replace(probe, buffer=self.value(name).buffer)
        nbytes = sum(tile[5] for tile in probe.tiles())
        buf = self.declare(f"{name}.tiles", space, nbytes, TensorType(t.dtype, shape, layout or None), "weight")
        self.images[buf] = dataclasses.replace(probe, buffer=buf)
        return self.images[buf]

    def weight_raw_oriented(self, name: str, transpose: bool) -> Placed:
        key = f"{name}.T" if transpose else name
        if transpose and self.g.type_of(name).rank == 2 and key not in self.placed:
            t = self.g.type_of(name)
            tt = t.with_shape(t.shape[::-1])
            buf = self.declare(key, "dram", storage_bytes(t), tt, "weight")
            self.images[buf] = WeightImage(buf, name, "raw", t.dtype.name, t.shape, True)
            self.placed[key] = Placed(buf, tt)
        return self.placed[key] if key in self.placed else self.value(name)

    # -- instructions ----------------------------------------------------------------------------------
    def emit(self, cls: type[Instr], **fields) -> None:
        self.instrs.append(cls(op=self.op.name if self.op else "", **fields))

    def load(self, dst: str, src: Placed, offset: int, nbytes: int, dst_off: int = 0) -> None:
        """A contiguous block of a value into SRAM."""
        self.emit(DmaLoad, dst=dst, src=src.buffer, row_bytes=nbytes, src_off=src.offset + offset, dst_off=dst_off)

    def store(self, dst: Placed, src: str, offset: int, nbytes: int) -> None:
        self.emit(DmaStore, dst=dst.buffer, src=src, row_bytes=nbytes, dst_off=dst.offset + offset)

    def load_whole(self, label: str, name: str, shape: Sequence[int] | None = None) -> Tile:
        """A small value loaded whole into SRAM; its tile (with ``shape`` if given)."""
        p = self.value(name)
        buf = self.sram(label, storage_bytes(p.type), p.type)
        self.load(buf, p, 0, storage_bytes(p.type))
        return Tile(buf, p.type.dtype.name, tuple(shape if shape is not None else p.type.shape))

    @staticmethod
    def stream(n: int, load: Callable[[int, int], None], compute: Callable[[int, int], None]) -> None:
        """Double buffering: item i+1 is loaded (into slot (i+1) % 2) before item i is computed."""
        if n:
            load(0, 0)
        for i in range(n):
            if i + 1 < n:
                load(i + 1, (i + 1) % 2)
            compute(i, i % 2)

    def vec(self, fn: str, dst: Sequence[Tile], src: Sequence[Tile], attrs: dict | None = None) -> None:
        items = tuple(sorted((k, _attr(v)) for k, v in (attrs or {}).items()))
        self.emit(Vec, fn=fn, dst=tuple(dst), src=tuple(src), attrs=items)

    # -- driver ----------------------------------------------------------------------------------------
    def run(self) -> Program:
        for v in self.g.inputs:
            self.placed[v.name] = Placed(self.declare(v.name, "dram", storage_bytes(v.type), v.type, "input"), v.type)
        for op in self.g.ops():
            if op.kind in ("param", "const") or all(r.name in self.weights for r in op.results):
                continue
            fn = LOWERINGS.get(op.kind)
            if fn is None:
                raise LoweringError(f"{op.describe()}: the asic target does not lower '{op.kind}' ops (it lowers "
                                    f"{', '.join(sorted(LOWERINGS))})", op.loc)
            self.op, self.sram_top = op, 0
            fn(self, op)
        self.op = None
        self.emit(Barrier)
        outputs = []
        for name in self.g.outputs:
            p = self.value(name)
            outputs.append(Binding(name, p.buffer, p.type.dtype.name, p.type.shape, p.offset))
        inputs = [Binding(v.name, self.placed[v.name].buffer, v.type.dtype.name, v.type.shape) for v in self.g.inputs]
        prog = Program(self.g.name, self.cfg.name, tuple(self.buffers.values()), self.instrs, inputs, outputs,
                       tuple(self.images.values()), self.cfg.sram_bytes)
        prog.check()
        return prog


def _attr(v):
    """Attribute values as the assembly holds them: dtypes by name, tuples kept."""
    if isinstance(v, DType):
        return v.name
    return tuple(_attr(x) for x in v) if isinstance(v, tuple) else v



__all__ = ["ALIGN", "LOWERINGS", "LUT_TYPES", "WEIGHT_SPACE", "LoweringError", "Lowering", "Placed", "halvings",
           "lowers", "storage_bytes"]
