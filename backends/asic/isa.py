"""The ISA of the LUT accelerator: buffers, tiles, instructions and the Program that holds them.

The machine has named memories (``SPACES``): ``dram`` (off-chip, byte addressed), ``sram`` (the on-chip
scratchpad of ``sram_kb``), ``xbar`` (weights resident in analog crossbars, PIM-LLM) and ``rom`` (weights
hardwired into the logic, Taalas). A **Buffer** is a named, byte-sized region of one space at an address;
SRAM buffers of different ops may share addresses (the lowering reuses the scratchpad op by op).

Instructions work on **SRAM-sized tiles**, not on hardware tiles or elements: one ``lmma`` multiplies a
whole weight tile (say 64 x 2560) by a table tile, and its cost follows analytically from its shape
(``Instr.work()``). A **Tile** is a typed view of a buffer: element type (a ladder dtype, optionally packed,
e.g. ``ternary<planes>``), logical shape, byte offset and a row stride (in elements, 0 = packed rows), so an
instruction can address a column block of a wider row-major buffer.

Every instruction class declares

* ``opcode`` (its assembly name) and ``unit``: ``dma``, ``lut``, ``mma`` (systolic array), ``vec``, ``xbar``
  (crossbar MVM) or ``sync``;
* ``reads()`` / ``writes()``: the buffers it reads and writes (a cost simulator builds dependencies from
  them; an instruction that accumulates into its destination also reads it);
* ``work()``: the sizes that cost it: bytes moved, M/N/K of matrix work, elements of vector work, weight bits;
* ``op``: the graph value whose op it implements (per-op breakdowns).

=================  ======  =========================================================================
opcode             unit    semantics
=================  ======  =========================================================================
dma.load/.store    dma     copy ``rows`` x ``row_bytes`` between buffers (strided; optional dynamic
/.copy                     offset: ``index`` buffer's first i32 x ``index_scale`` bytes)
dma.gather         dma     dst row i = table row index[i] (embedding lookup)
lut.build          lut     activation tables: for every 4 activations, the 16 sums of their subsets
lmma               lut     table-lookup matmul over the bit planes of a weight tile (LUT Tensor Core)
xmma               xbar    crossbar matrix-vector product with resident weights (PIM)
mma                mma     systolic matmul, activation x activation or float weights
vec.<fn>           vec     a vector function on whole tiles: a ladder op's semantics (rmsnorm, softmax,
                           quantize, rope, mul, ...) or one of ``EXTRA_VEC_FNS``
sync.barrier       sync    wait until every unit is idle
=================  ======  =========================================================================

The assembly text lives in ``asm_print.py`` (printing, below this module: ``str(program)``) and ``asm.py``
(parsing, above it); ``Tile`` lives in ``tile.py``, below both. docs/asic-isa.md documents every field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Iterable

from ladder.errors import LadderError
from ladder.types import TensorType, dtype as lookup_dtype

from .asm_print import instr_fields, print_program
from .tile import Tile

UNITS = ("dma", "lut", "mma", "vec", "xbar", "sync")
# Entries per group of 4 activations in a table: all 16 subset sums, or 8 mirrored ones plus the group sum.
TABLE_ENTRIES = 16
MIRRORED_ENTRIES = 9
SPACES = ("dram", "sram", "xbar", "rom")
ROLES = ("input", "output", "weight", "temp", "state")

# Vector functions that are not ladder ops (their semantics live in funcsim.VEC_FNS).
EXTRA_VEC_FNS = ("attn_softmax", "copy")


class IsaError(LadderError):
    """An instruction or program is malformed (unknown buffer, tile outside its buffer, ...)."""

    kind = "isa error"


# -- operands -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Work:
    """What an instruction costs, as sizes: a cost model turns these into cycles and energy."""

    bytes: int = 0  # bytes moved (DMA) or read from tables
    m: int = 0
    n: int = 0
    k: int = 0
    elems: int = 0  # elements produced by vector / table work
    bits: int = 0   # weight bits (bit planes) of lmma / xmma

    @property
    def macs(self) -> int:
        return self.m * self.n * self.k


# -- instructions ---------------------------------------------------------------------------------------

INSTRUCTIONS: dict[str, type["Instr"]] = {}


def instruction(cls: type["Instr"]) -> type["Instr"]:
    """Register an instruction class under its opcode."""
    if cls.opcode in INSTRUCTIONS:
        raise AssertionError(f"opcode {cls.opcode} registered twice")
    INSTRUCTIONS[cls.opcode] = cls
    return cls


@dataclass(frozen=True, kw_only=True)
class Instr:
    opcode: ClassVar[str]
    unit: ClassVar[str]
    # Fields naming buffers (a str buffer name, a Tile, or a tuple of Tiles), split by direction.
    READS: ClassVar[tuple[str, ...]] = ()
    WRITES: ClassVar[tuple[str, ...]] = ()

    op: str = ""  # the graph value whose op this implements

    @classmethod
    def ref_fields(cls) -> tuple[str, ...]:
        return cls.READS + cls.WRITES

    def _buffers(self, names: Iterable[str]) -> tuple[str, ...]:
        out: list[str] = []
        for n in names:
            v = getattr(self, n)
            for item in (v if isinstance(v, tuple) else (v,)):
                b = item.buffer if isinstance(item, Tile) else item
                if b and b not in out:
                    out.append(b)
        return tuple(out)

    def reads(self) -> tuple[str, ...]:
        return self._buffers(self.READS)

    def writes(self) -> tuple[str, ...]:
        return self._buffers(self.WRITES)

    def tiles(self) -> list[Tile]:
        out = []
        for n in self.ref_fields():
            v = getattr(self, n)
            out.extend(t for t in (v if isinstance(v, tuple) else (v,)) if isinstance(t, Tile))
        return out

    def work(self) -> Work:
        return Work()

    @property
    def mnemonic(self) -> str:
        return self.opcode


@dataclass(frozen=True, kw_only=True)
class Dma(Instr):
    """Copy ``rows`` rows of ``row_bytes`` bytes from ``src`` (at ``src_off``, rows ``src_stride`` bytes apart)
    to ``dst`` (``dst_off``, ``dst_stride``); a stride of 0 means packed rows. With ``index``, the first i32 of
    that buffer times ``index_scale`` bytes is added to the ``index_on`` side's offset (a KV-cache write at a
    runtime position; it must lie in ``0 .. index_limit``)."""

    unit: ClassVar[str] = "dma"
    READS: ClassVar[tuple[str, ...]] = ("src", "index")
    WRITES: ClassVar[tuple[str, ...]] = ("dst",)

    dst: str
    src: str
    row_bytes: int
    rows: int = 1
    dst_off: int = 0
    src_off: int = 0
    dst_stride: int = 0
    src_stride: int = 0
    index: str = ""
    index_scale: int = 0
    index_on: str = "dst"
    index_limit: int = 0  # the largest index allowed (a larger or negative one is a runtime error)

    def __post_init__(self):
        if self.index_on not in ("src", "dst"):
            raise IsaError(f"{self.opcode}: index_on must be \"src\" or \"dst\", got {self.index_on!r}")
        if min(self.rows, self.row_bytes, self.src_off, self.dst_off, self.src_stride, self.dst_stride) < 0:
            raise IsaError(f"{self.opcode}: sizes, offsets and strides must be >= 0")

    def work(self) -> Work:
        return Work(bytes=self.rows * self.row_bytes)


@instruction
@dataclass(frozen=True, kw_only=True)
class DmaLoad(Dma):
    """DRAM (or crossbar/ROM) -> SRAM."""

    opcode: ClassVar[str] = "dma.load"


@instruction
@dataclass(frozen=True, kw_only=True)
class DmaStore(Dma):
    """SRAM -> DRAM."""

    opcode: ClassVar[str] = "dma.store"


@instruction
@dataclass(frozen=True, kw_only=True)
class DmaCopy(Dma):
    """DRAM -> DRAM (transposes, KV-cache updates of a value that stays in DRAM)."""

    opcode: ClassVar[str] = "dma.copy"


@instruction
@dataclass(frozen=True, kw_only=True)
class DmaGather(Instr):
    """``count`` rows of ``row_bytes``: dst row i = ``table`` row ``index[i]`` (i32 indices at
    ``index_off`` of the index buffer); an index outside ``0 .. table_rows - 1`` is a runtime error."""

    opcode: ClassVar[str] = "dma.gather"
    unit: ClassVar[str] = "dma"
    READS: ClassVar[tuple[str, ...]] = ("table", "index")
    WRITES: ClassVar[tuple[str, ...]] = ("dst",)

    dst: str
    table: str
    index: str
    count: int
    row_bytes: int
    table_rows: int
    dst_off: int = 0
    table_off: int = 0
    index_off: int = 0

    def work(self) -> Work:
        return Work(bytes=self.count * self.row_bytes + 4 * self.count)


@instruction
@dataclass(frozen=True, kw_only=True)
class LutBuild(Instr):
    """Activation tables: ``src`` [M, K] (integer codes or float) -> ``dst`` [M, G, E] with
    G = 2 * ceil(K / 8) groups of 4 activations (positions past K count as 0). With E = 16 entry i of group
    j is ``sum_t bit_t(i) * src[4j + t]``. With E = 9 (mirror consolidation, T-MAC / LUT Tensor Core) entries
    0..7 are the signed sums ``sum_t (2 bit_t(i) - 1) * src[4j + t]`` (the other 8 are their negatives,
    LUT[15 - i] = -LUT[i]) and entry 8 is the group's sum. Integer activations give int16 entries, float
    ones f32."""

    opcode: ClassVar[str] = "lut.build"
    unit: ClassVar[str] = "lut"
    READS: ClassVar[tuple[str, ...]] = ("src",)
    WRITES: ClassVar[tuple[str, ...]] = ("dst",)

    dst: Tile
    src: Tile

    def work(self) -> Work:
        m, k = self.src.shape
        return Work(m=m, k=k, elems=self.dst.elems, bytes=self.dst.nbytes)


@dataclass(frozen=True, kw_only=True)
class Accumulating(Instr):
    """A matrix instruction writing ``dst``; with ``acc`` it adds to ``dst`` instead (so it also reads it)."""

    acc: bool = False

    def reads(self) -> tuple[str, ...]:
        return self._buffers(self.READS + (("dst",) if self.acc else ()))


@instruction
@dataclass(frozen=True, kw_only=True)
class Lmma(Accumulating):
    """Table-lookup matmul: ``dst [M, N] (+)= x [M, K] . W[N, K]^T`` where x is given by its tables and
    W by its bit planes (``w``: a ``<planes>`` tile of logical shape [N, K]). For each plane b and group j
    the 4-bit index of W's bits b selects ``table[m, j, index]`` (a mirrored table: ``+-table[m, j, i]``,
    turned back into the subset sum with the group sum); value = a * offset_code + b0 folds the type's
    offset (ternary: code - 1, i1: 2 code - 1). Integer tables accumulate exactly in int32 (wrapping).
    ``acc``: add to dst instead of overwriting it."""

    opcode: ClassVar[str] = "lmma"
    unit: ClassVar[str] = "lut"
    READS: ClassVar[tuple[str, ...]] = ("table", "w")
    WRITES: ClassVar[tuple[str, ...]] = ("dst",)

    dst: Tile
    table: Tile
    w: Tile

    def work(self) -> Work:
        n, k = self.w.shape
        return Work(m=self.dst.shape[0], n=n, k=k, bits=self.w.type.dtype.bits, bytes=self.w.nbytes)


@instruction
@dataclass(frozen=True, kw_only=True)
class Xmma(Accumulating):
    """Crossbar matmul with resident weights: ``dst [M, N] (+)= x [M, K] . W[N, K]^T``, x integer codes driven
    through the DACs bit-serially, W's bit planes held in the crossbar (``w`` a ``<planes>`` tile in an
    ``xbar`` buffer). Functionally exact (an ideal ADC); converter bits are a cost-model matter."""

    opcode: ClassVar[str] = "xmma"
    unit: ClassVar[str] = "xbar"
    READS: ClassVar[tuple[str, ...]] = ("x", "w")
    WRITES: ClassVar[tuple[str, ...]] = ("dst",)

    dst: Tile
    x: Tile
    w: Tile

    def work(self) -> Work:
        n, k = self.w.shape
        return Work(m=self.dst.shape[0], n=n, k=k, bits=self.w.type.dtype.bits)


@instruction
@dataclass(frozen=True, kw_only=True)
class Mma(Accumulating):
    """Systolic matmul ``dst [M, N] (+)= a [M, K] . b`` (b [K, N], or [N, K] with ``transpose_b``); float
    tiles accumulate in f32, integer ones in int32 (wrapping)."""

    opcode: ClassVar[str] = "mma"
    unit: ClassVar[str] = "mma"
    READS: ClassVar[tuple[str, ...]] = ("a", "b")
    WRITES: ClassVar[tuple[str, ...]] = ("dst",)

    dst: Tile
    a: Tile
    b: Tile
    transpose_b: bool = False

    def work(self) -> Work:
        m, k = self.a.shape
        return Work(m=m, n=self.dst.shape[1], k=k)


@instruction
@dataclass(frozen=True, kw_only=True)
class Vec(Instr):
    """``dst = fn(src...)`` on whole tiles, printed ``vec.<fn>``. ``fn`` is a ladder op (its numpy reference
    semantics applied to the tiles, ``attrs`` its attributes) or one of ``EXTRA_VEC_FNS``."""

    opcode: ClassVar[str] = "vec"
    unit: ClassVar[str] = "vec"
    READS: ClassVar[tuple[str, ...]] = ("src",)
    WRITES: ClassVar[tuple[str, ...]] = ("dst",)

    fn: str
    dst: tuple[Tile, ...]
    src: tuple[Tile, ...] = ()
    attrs: tuple[tuple[str, Any], ...] = ()

    @property
    def mnemonic(self) -> str:
        return f"vec.{self.fn}"

    @property
    def attr(self) -> dict[str, Any]:
        return dict(self.attrs)

    def work(self) -> Work:
        return Work(elems=max([t.elems for t in self.dst + self.src] or [0]))


@instruction
@dataclass(frozen=True, kw_only=True)
class Barrier(Instr):
    """Wait until every unit has finished all earlier instructions."""

    opcode: ClassVar[str] = "sync.barrier"
    unit: ClassVar[str] = "sync"


@lru_cache(maxsize=1)
def vec_fns() -> tuple[str, ...]:
    """Every function a ``vec`` instruction may name."""
    from ladder.ops import OPS

    return tuple(sorted(set(OPS) - {"param", "const"})) + EXTRA_VEC_FNS


def lookup_opcode(mnemonic: str) -> tuple[type[Instr], dict[str, Any]]:
    """``vec.rmsnorm`` -> (Vec, {"fn": "rmsnorm"}); ``lmma`` -> (Lmma, {})."""
    if mnemonic in INSTRUCTIONS and mnemonic != "vec":
        return INSTRUCTIONS[mnemonic], {}
    head, _, fn = mnemonic.partition(".")
    if head == "vec" and fn:
        if fn not in vec_fns():
            raise IsaError(f"unknown vector function '{fn}'")
        return Vec, {"fn": fn}
    known = sorted(k for k in INSTRUCTIONS if k != "vec") + ["vec.<fn>"]
    raise IsaError(f"unknown opcode '{mnemonic}'; known: {', '.join(known)}")


# -- program --------------------------------------------------------------------------------------------

def _as_tuples(record, *fields: str) -> None:
    """Hold a frozen record's sequence fields as tuples, whatever sequence it was built with (lists from
    JSON or a parser), so records compare and hash by value."""
    for f in fields:
        object.__setattr__(record, f, tuple(getattr(record, f)))


@dataclass(frozen=True)
class Buffer:
    """A region of one memory space. ``dtype``/``shape`` describe what it holds (for reading programs)."""

    name: str
    space: str
    bytes: int
    addr: int = 0
    dtype: str = "u8"
    shape: tuple[int, ...] = ()
    role: str = "temp"

    def __post_init__(self):
        _as_tuples(self, "shape")
        if self.space not in SPACES:
            raise IsaError(f"buffer %{self.name}: space '{self.space}' is not one of {', '.join(SPACES)}")
        if self.role not in ROLES:
            raise IsaError(f"buffer %{self.name}: role '{self.role}' is not one of {', '.join(ROLES)}")
        if self.bytes < 0 or self.addr < 0:
            raise IsaError(f"buffer %{self.name}: negative size or address")


@dataclass(frozen=True)
class Binding:
    """A graph input or output held in a buffer: its value name, type and the buffer (at a byte offset)."""

    value: str
    buffer: str
    dtype: str
    shape: tuple[int, ...]
    offset: int = 0

    def __post_init__(self):
        _as_tuples(self, "shape")

    @property
    def type(self) -> TensorType:
        return TensorType(lookup_dtype(self.dtype), self.shape)


@dataclass(frozen=True)
class WeightImage:
    """How a weight buffer's bytes are made from a weight-only graph value (done when weights are bound,
    never by the lowering): ``raw`` = the value's storage bytes, row-major (``transpose`` swaps a 2-D value
    first); ``tiles`` = the logical 2-D value (transposed first if asked) cut into ``tile_rows`` x ``tile_cols``
    tiles, row-major over tiles, each packed on its own in ``layout`` (e.g. planes) so one DMA moves one
    tile."""

    buffer: str
    value: str
    format: str  # raw | tiles
    dtype: str = ""               # the value's logical type (element type and shape, without layout)
    shape: tuple[int, ...] = ()
    transpose: bool = False
    tile_rows: int = 0
    tile_cols: int = 0
    layout: str = ""

    def __post_init__(self):
        _as_tuples(self, "shape")

    def tiles(self) -> list[tuple[int, int, int, int, int, int]]:
        """``(r0, r1, c0, c1, offset, nbytes)`` of every tile, in image order (tiles format)."""
        rows, cols = (self.shape[::-1] if self.transpose else self.shape)
        dt = lookup_dtype(self.dtype)
        sizes: dict[tuple[int, int], int] = {}  # bytes of a tile, by shape (edge tiles are smaller)
        out, offset = [], 0
        for r0 in range(0, rows, self.tile_rows):
            for c0 in range(0, cols, self.tile_cols):
                r1, c1 = min(rows, r0 + self.tile_rows), min(cols, c0 + self.tile_cols)
                shape = (r1 - r0, c1 - c0)
                if shape not in sizes:
                    t = TensorType(dt, shape, self.layout or None)
                    sizes[shape] = math.prod(t.storage_shape) * t.storage_np_dtype.itemsize
                nbytes = sizes[shape]
                out.append((r0, r1, c0, c1, offset, nbytes))
                offset += nbytes
        return out


@dataclass(frozen=True)
class Program:
    name: str
    config: str
    buffers: tuple[Buffer, ...]
    instrs: tuple[Instr, ...]
    inputs: tuple[Binding, ...] = ()
    outputs: tuple[Binding, ...] = ()
    weights: tuple[WeightImage, ...] = ()
    sram_bytes: int = 0

    def __post_init__(self):
        _as_tuples(self, "buffers", "instrs", "inputs", "outputs", "weights")

    @property
    def buffer_map(self) -> dict[str, Buffer]:
        return {b.name: b for b in self.buffers}

    def buffer(self, name: str) -> Buffer:
        try:
            return self.buffer_map[name]
        except KeyError:
            raise IsaError(f"program @{self.name} has no buffer %{name}") from None

    def space_bytes(self, space: str) -> int:
        """Bytes a space needs: the end of its last buffer."""
        return max((b.addr + b.bytes for b in self.buffers if b.space == space), default=0)

    def stats(self) -> dict[str, Any]:
        """Instruction counts per mnemonic and per unit, DMA bytes and MACs: a quick look at a program."""
        per_op: dict[str, int] = {}
        per_unit: dict[str, int] = {u: 0 for u in UNITS}
        dma_bytes = macs = 0
        for ins in self.instrs:
            per_op[ins.mnemonic] = per_op.get(ins.mnemonic, 0) + 1
            per_unit[ins.unit] += 1
            w = ins.work()
            macs += w.macs
            if ins.unit == "dma":
                dma_bytes += w.bytes
        return {"instructions": len(self.instrs), "per_mnemonic": per_op, "per_unit": per_unit,
                "dma_bytes": dma_bytes, "macs": macs,
                "space_bytes": {s: self.space_bytes(s) for s in SPACES}}

    def check(self) -> None:
        """Every referenced buffer exists and every tile or DMA row lies inside its buffer; SRAM buffers fit
        the scratchpad. Raises IsaError naming the instruction."""
        bufs = self.buffer_map
        if self.sram_bytes:
            for b in self.buffers:
                if b.space == "sram" and b.addr + b.bytes > self.sram_bytes:
                    raise IsaError(f"buffer %{b.name} ({b.bytes} bytes at {b.addr}) does not fit the "
                                   f"{self.sram_bytes}-byte SRAM")
        spans: dict[tuple, int] = {}  # tile span by (dtype, layout, shape, stride): most tiles repeat

        def where(i: int, ins: Instr) -> str:
            return f"instruction {i} ({ins.mnemonic}{', op %' + ins.op if ins.op else ''})"

        for i, ins in enumerate(self.instrs):
            for field_name in ins.ref_fields():
                v = getattr(ins, field_name)
                for item in (v if type(v) is tuple else (v,)):
                    name = item.buffer if type(item) is Tile else item
                    if not name:
                        continue
                    if name not in bufs:
                        raise IsaError(f"{where(i, ins)} uses %{name}, which is not a declared buffer")
                    if type(item) is Tile:
                        key = (item.dtype, item.layout, item.shape, item.stride)
                        span = spans[key] if key in spans else spans.setdefault(key, item.span)
                        if item.offset + span > bufs[name].bytes:
                            raise IsaError(f"{where(i, ins)}: tile {item} ends at byte {item.offset + span}, past "
                                           f"the {bufs[name].bytes}-byte buffer %{name}")
            if isinstance(ins, Dma) and not ins.index:
                for side in ("src", "dst"):
                    name, off = getattr(ins, side), getattr(ins, f"{side}_off")
                    stride = getattr(ins, f"{side}_stride") or ins.row_bytes
                    end = off + (ins.rows - 1) * stride + ins.row_bytes if ins.rows else off
                    if end > bufs[name].bytes:
                        raise IsaError(f"{where(i, ins)}: {side} rows end at byte {end}, past the "
                                       f"{bufs[name].bytes}-byte buffer %{name}")

    def __str__(self) -> str:
        return print_program(self)


__all__ = ["MIRRORED_ENTRIES", "TABLE_ENTRIES", "Accumulating", "Barrier", "Binding", "Buffer", "Dma", "DmaCopy",
           "DmaGather", "DmaLoad", "DmaStore", "EXTRA_VEC_FNS", "INSTRUCTIONS", "Instr", "IsaError", "Lmma",
           "LutBuild", "Mma", "Program", "ROLES", "SPACES", "Tile", "UNITS", "Vec", "WeightImage", "Work", "Xmma",
           "instr_fields", "instruction", "lookup_opcode", "vec_fns"]
