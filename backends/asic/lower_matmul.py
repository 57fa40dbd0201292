"""Lowering of matmuls.

With a 2-D weight (``_WeightMatmul``): ``lut.build`` on the int8 activations once per row tile, then one
``lmma`` per weight tile (``xmma`` for crossbar-resident weights; a ROM-resident, hardwired weight is read in
place), accumulating over K tiles into an int32 row, then the epilogue (cast, scales, relu2, ...) as vector
ops. f32 activations of a ``qmatmul`` with a per-tensor or per-channel scale use f32 tables the same way;
other ``qmatmul``s (group-wise scales, zero points, crossbar weights) and weights the LUT units do not take
go to the systolic array (the fallback): ``vec.unpack``/``vec.dequant`` decode the tile, ``mma`` multiplies;
a row of outputs too wide for the SRAM is done in chunks. Weight tiles stream through two SRAM slots.

Of two computed values (``lower_act_matmul``): batch entry by batch entry on the systolic array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ladder.ir import Op
from ladder.ops import OPS
from ladder.ops.lowbit import block_scales
from ladder.packing import PACKINGS
from ladder.types import DTYPES, TensorType

from .config import HwConfig
from .isa import MIRRORED_ENTRIES, TABLE_ENTRIES, DmaLoad, DmaStore, Lmma, LutBuild, Mma, Tile, Xmma
from .lower_rows import RowPart, classify_operand
from .lowering import LUT_TYPES, WEIGHT_SPACE, Lowering, LoweringError, halvings, lowers, storage_bytes


@dataclass(frozen=True)
class MatmulPlan:
    mt: int  # activation rows per row tile
    nt: int  # weight rows (outputs) per weight tile
    kt: int  # K per weight tile
    nc: int  # outputs per accumulator chunk (a multiple of nt, or N)


@lowers("matmul", "qmatmul", "qmatmul_i8")
def lower_matmul(low: Lowering, op: Op) -> None:
    x, w = op.operands[:2]
    wt = low.g.type_of(w)
    if w not in low.weights or wt.rank != 2:
        if op.kind != "matmul":
            raise LoweringError(f"{op.describe()}: the asic target needs the weight of a {op.kind} to be a "
                                f"2-D weight (param), got %{w} : {wt}", op.loc)
        return lower_act_matmul(low, op)
    if block_scales(wt):
        raise LoweringError(f"{op.describe()}: weights with block scales ({wt}) are not lowered for asic", op.loc)
    _WeightMatmul(low, op).lower()


class _WeightMatmul:
    """``y [M, N] = epilogue(x [M, K] . W^T)`` with W a 2-D weight, on the LUT units, crossbars or the
    systolic array."""

    def __init__(self, low: Lowering, op: Op):
        self.low, self.op, g = low, op, low.g
        attrs = OPS[op.kind].full_attrs(op.attr)
        self.attrs = attrs
        self.x, self.w = op.operands[:2]
        xt, wt = g.type_of(self.x), g.type_of(self.w)
        self.xt, self.wt = xt, wt.logical
        self.transpose = not attrs["transpose_b"]  # the image holds W as [N, K]
        self.n, self.k = (wt.shape[1], wt.shape[0]) if self.transpose else wt.shape
        self.m = xt.size // xt.shape[-1]
        self.out_t = op.result.type
        cfg = low.cfg
        dt = wt.dtype
        # a unit that takes b-bit weights takes narrower ones too (fewer bit planes)
        lut_ok = dt.name in LUT_TYPES and dt.bits <= max(cfg.weight_bits)
        float_lut = lut_ok and self._float_tables_apply(op, xt, attrs, cfg)
        if lut_ok and xt.dtype.is_integer:
            self.mode = "xmma" if cfg.weight_placement == "resident" else "lmma"
        else:
            self.mode = "lmma" if float_lut else "mma"
        self.table_dtype = "i16" if xt.dtype.is_integer else "f32"
        self.entries = MIRRORED_ENTRIES if cfg.lut.mirror else TABLE_ENTRIES  # per group of 4 activations
        self.table_bytes = 2 if xt.dtype.is_integer else 4
        self.space = WEIGHT_SPACE[cfg.weight_placement]
        if self.mode == "mma":
            self.layout = (PACKINGS["planes"].name if PACKINGS["planes"].accepts(dt)
                           else "nib" if dt.bits == 4 else "") if dt.is_low_bit else ""
        else:
            self.layout = "planes"
        self.acc_dtype = "i32" if xt.dtype.is_integer and dt.is_integer else "f32"
        self.scales = list(op.operands[2:]) if op.kind == "qmatmul" and self.mode == "mma" else []
        self._whole_scales: dict[str, Tile] = {}  # per-tensor dequant scales, loaded on first use
        self.group = attrs.get("group", 0)
        if op.kind == "qmatmul":
            k_axis = 0 if self.transpose else 1
            if attrs["axis"] % 2 != k_axis:
                raise LoweringError(f"{op.describe()}: dequant scales must run along K (axis {k_axis})", op.loc)

    def _float_tables_apply(self, op: Op, xt: TensorType, attrs, cfg: HwConfig) -> bool:
        """f32 activations on the LUT units (f32 tables, as LUT Tensor Core does for float activations): a
        ``qmatmul`` whose scale is per tensor or per output channel, without zero points, with weights
        streamed or hardwired (crossbars take integer inputs)."""
        if op.kind != "qmatmul" or xt.dtype.name != "f32" or cfg.weight_placement == "resident":
            return False
        if attrs["zero_mode"] != "none" or attrs["group"] != 0 or len(op.operands) != 3:
            return False
        st = self.low.g.type_of(op.operands[2])
        return st.size == 1 or st.rank == 2 and st.size == self.n and st.shape[0 if self.transpose else 1] == 1

    # sizes -----------------------------------------------------------------------------------------
    def tile_row_bytes(self, kt: int) -> int:
        t = TensorType(self.wt.dtype, (1, kt), self.layout or None)
        return storage_bytes(t)

    def k_quantum(self) -> int:
        q = 8
        if self.group > 0:
            q = q * self.group // math.gcd(q, self.group)
        return q

    def plans(self):
        if self.mode == "mma":
            yield from self.array_plans()
            return
        cfg = self.low.cfg
        xi = self.xt.storage_np_dtype.itemsize
        for tile_bytes in [b for b in halvings(cfg.tile_bytes) if b >= 256] or [cfg.tile_bytes]:
            kt = self.k
            if self.tile_row_bytes(kt) > tile_bytes:
                q = self.k_quantum()
                kt = max(q, (tile_bytes // max(self.tile_row_bytes(q), 1)) * q)
                kt = min(kt, self.k)
            nt = max(1, min(self.n, tile_bytes // max(self.tile_row_bytes(kt), 1)))
            if nt >= cfg.lut.tile.n:
                nt -= nt % cfg.lut.tile.n
            # rows first: every row tile streams the weights again, an output chunk does not
            for mt in halvings(max(self.m, 1)):
                for nc in [min(self.n, c * nt) for c in halvings(-(-self.n // nt))]:
                    yield MatmulPlan(mt, nt, kt, nc), self.sizes(mt, nt, kt, nc, xi)

    def array_plans(self):
        """Tiles for the systolic array, cheapest first: every (M, N, K) tile whose buffers might fit, ranked by
        the array's cycles over the whole product (SCALE-Sim's fold model: a tile narrower than the array
        wastes its folds, a short K pays fill and drain per tile), then by the bytes DMA moves (x again per
        column tile, W again per row tile). Activations stream in K tiles beside the weights, so an array-
        sized tile fits a small SRAM."""
        from .units import systolic_cycles

        cfg = self.low.cfg
        s = cfg.systolic
        xi = self.xt.storage_np_dtype.itemsize
        q = self.k_quantum()
        kts = sorted({self.k} | {max(q, k - k % q) for k in halvings(self.k) if k >= q})
        nts = sorted(set(halvings(self.n)) | {min(self.n, c * s.cols) for c in halvings(-(-self.n // s.cols))}
                     | {min(self.n, c * s.rows) for c in halvings(-(-self.n // s.rows))})
        mts = sorted(set(halvings(max(self.m, 1))) | {min(self.m, c * s.rows) for c in halvings(-(-self.m // s.rows))})
        ranked = []
        for mt in mts:
            for nt in nts:
                for kt in kts:
                    full = (self.m // mt, self.n // nt, self.k // kt)
                    cycles = 0
                    for mm, mc in ((mt, full[0]), (self.m % mt, 1)):
                        for nn, nc_ in ((nt, full[1]), (self.n % nt, 1)):
                            for kk, kc in ((kt, full[2]), (self.k % kt, 1)):
                                if mm and nn and kk:
                                    cycles += mc * nc_ * kc * systolic_cycles(mm, nn, kk, s.rows, s.cols, s.dataflow)
                    traffic = self.m * self.k * xi * -(-self.n // nt) + self.n * self.tile_row_bytes(self.k) * \
                        -(-self.m // mt)
                    plan = MatmulPlan(mt, nt, kt, nt)
                    ranked.append((cycles, traffic, -mt * nt * kt, plan))
        ranked.sort(key=lambda r: r[:3])
        for *_, plan in ranked:
            yield plan, self.sizes(plan.mt, plan.nt, plan.kt, plan.nc, xi)

    def sizes(self, mt: int, nt: int, kt: int, nc: int, xi: int) -> dict[str, int]:
        streamed = self.space == "dram"
        # the systolic path streams activations in K tiles (two slots); the others keep whole rows
        x = 2 * mt * kt * xi if self.mode == "mma" else mt * self.k * xi
        s = {"x": x, "acc": mt * nc * 4}
        if streamed:
            s["w"] = 2 * self.tile_row_bytes(kt) * nt
        if self.mode == "lmma":
            s["lut"] = mt * sum(2 * -(-min(kt, self.k - k0) // 8) for k0 in range(0, self.k, kt)) * self.entries * \
                self.table_bytes
        if self.mode == "mma" and self.layout:
            s["codes"] = nt * kt
            s["deq"] = nt * kt * 4 if self.scales else 0
            s["scales"] = 2 * sum(self._scale_tile_bytes(name, nt, kt) for name in self.scales)
            for j, name in enumerate(self.scales):
                t = self.low.g.type_of(name)
                s[f"sw{j}"] = storage_bytes(t) if t.size == 1 else 0  # a per-tensor scale, loaded whole
        if self._needs_res():
            s["res"] = mt * nc * 4
        for i, part in enumerate(self._epilogue_parts()):
            rows = 1 if part.inner is None else mt
            s[f"sc{i}"] = rows * (nc if self._per_column(part) else 1) * part.t.storage_np_dtype.itemsize
        return s

    def _per_column(self, part: RowPart) -> bool:
        shape = part.t.shape if part.inner is None else part.inner
        return bool(shape) and shape[-1] == self.n and self.n > 1

    # emission --------------------------------------------------------------------------------------
    def lower(self) -> None:
        low = self.low
        plan = low.fit(self.plans())
        image = low.weight_tiles(self.w, self.transpose, plan.nt, plan.kt, self.layout, self.space)
        self.image_buffer = image.buffer
        tiles = image.tiles()
        self.xp, self.out = low.value(self.x), low.result(self.op.name)
        self.plan, self.image_tiles = plan, tiles
        self.xi = self.xt.storage_np_dtype.itemsize
        mt = plan.mt
        self.split_x = self.mode == "mma"
        if self.split_x:   # K tiles of the activations, streamed beside the weight tiles
            self.xbufs = [low.sram(f"x{s}", mt * plan.kt * self.xi, self.xt) for s in range(2)]
        else:
            self.xbuf = low.sram("x", mt * self.k * self.xi, self.xt)
        self.accbuf = low.sram("acc", mt * plan.nc * 4)
        slots = 2 if len(tiles) > 1 or self.split_x else 1
        self.wbufs = [low.sram(f"w{s}", max(t[5] for t in tiles)) for s in range(slots)] if self.space == "dram" else []
        k_tiles = sorted({(c0, c1) for _, _, c0, c1, _, _ in tiles})
        self.k_tiles = k_tiles
        if self.mode == "lmma":
            groups = [2 * -(-(c1 - c0) // 8) for c0, c1 in k_tiles]
            self.lut_offsets = [sum(groups[:i]) * mt * self.entries * self.table_bytes for i in range(len(groups))]
            self.groups = groups
            self.lutbuf = low.sram("lut", sum(groups) * mt * self.entries * self.table_bytes)
        if self.mode == "mma" and self.layout:
            self.codebuf = low.sram("codes", plan.nt * plan.kt * self.wt.dtype.np_dtype.itemsize)
            if self.scales:
                self.deqbuf = low.sram("deq", plan.nt * plan.kt * 4)
                self.scalebufs = [[low.sram(f"s{j}.{s}", self._scale_tile_bytes(name, plan.nt, plan.kt))
                                   for s in range(2)] for j, name in enumerate(self.scales)]
        self.resbuf = low.sram("res", mt * plan.nc * 4) if self._needs_res() else self.accbuf
        self.epi_whole = self._epilogue_operands()
        for m0 in range(0, self.m, mt):
            self.m_tile(m0, min(self.m, m0 + mt))

    def _needs_res(self) -> bool:
        return self.op.kind == "qmatmul_i8" or self.out_t.dtype.name not in (self.acc_dtype,)

    def _scale_tile_bytes(self, name: str, nt: int, kt: int) -> int:
        """The largest tile of a scale (or zero) that goes with an nt x kt weight tile (0 when it is whole)."""
        st = self.low.g.type_of(name)
        if st.size == 1:
            return 0
        a, b = (st.shape[::-1] if self.transpose else st.shape)
        rows = nt if a == self.n else 1
        cols = 1 if b == 1 else (-(-kt // self.group) + 1 if self.group else kt)
        return rows * cols * st.storage_np_dtype.itemsize

    def _epilogue_parts(self) -> list[RowPart]:
        """qmatmul_i8's scales s1, s2: per row of the output (``inner`` (1,) or (N,)) or broadcast (whole)."""
        if self.op.kind == "qmatmul" and self.mode == "lmma":  # float tables: W's scale after the lookup
            st = self.low.g.type_of(self.op.operands[2])
            return [RowPart(self.op.operands[2], st if st.size == 1 else st.with_shape((self.n,)), None)]
        if self.op.kind != "qmatmul_i8":
            return []
        lead, parts = self.out_t.shape[:-1], []
        for name in self.op.operands[2:]:
            part = classify_operand(name, self.low.g.type_of(name), self.out_t.rank, lead, False)
            if part is None:
                raise LoweringError(f"{self.op.describe()}: scale %{name} must be per row or broadcast", self.op.loc)
            parts.append(part)
        return parts

    def _epilogue_operands(self) -> list:
        """Whole scales loaded once (their tile), per-row ones a buffer filled per row tile and chunk."""
        out = []
        for i, part in enumerate(self._epilogue_parts()):
            if part.inner is None and not self._per_column(part):
                out.append(("whole", self.low.load_whole(f"sc{i}", part.name, part.t.shape)))
            else:
                rows = 1 if part.inner is None else self.plan.mt
                cols = self.plan.nc if self._per_column(part) else 1
                nbytes = rows * cols * part.t.storage_np_dtype.itemsize
                out.append(("rows" if part.inner else "columns", (self.low.sram(f"sc{i}", nbytes, part.t), part)))
        return out

    def m_tile(self, m0: int, m1: int) -> None:
        low, mt, k = self.low, m1 - m0, self.k
        self.m0 = m0
        if not self.split_x:
            low.load(self.xbuf, self.xp, m0 * k * self.xi, mt * k * self.xi)
        xname = self.xt.dtype.name
        if self.mode == "lmma":
            for (c0, c1), off, groups in zip(self.k_tiles, self.lut_offsets, self.groups):
                src = Tile(self.xbuf, xname, (mt, c1 - c0), c0 * self.xi, k if c1 - c0 < k else 0)
                low.emit(LutBuild, dst=Tile(self.lutbuf, self.table_dtype, (mt, groups, self.entries), off),
                         src=src)
        for n0 in range(0, self.n, self.plan.nc):
            n1 = min(self.n, n0 + self.plan.nc)
            self.chunk([t for t in self.image_tiles if n0 <= t[0] < n1], mt, n0, n1)
            self._epilogue(m0, m1, n0, n1)

    def chunk(self, tiles: list, mt: int, n0: int, n1: int) -> None:
        """The weight tiles of outputs n0.. into the accumulator, streamed through the ping/pong slots."""
        low, streamed = self.low, bool(self.wbufs)

        def load(i: int, s: int) -> None:
            if self.split_x:
                c0, c1 = tiles[i][2], tiles[i][3]
                low.emit(DmaLoad, dst=self.xbufs[s], src=self.xp.buffer, rows=mt, row_bytes=(c1 - c0) * self.xi,
                         src_off=self.xp.offset + (self.m0 * self.k + c0) * self.xi,
                         src_stride=self.k * self.xi if c1 - c0 < self.k else 0)
            if streamed:
                off, nbytes = tiles[i][4], tiles[i][5]
                low.emit(DmaLoad, dst=self.wbufs[s], src=self.image_buffer, row_bytes=nbytes, src_off=off)
            for j, name in enumerate(self.scales):
                self._load_scale(j, name, tiles[i], s)

        def compute(i: int, s: int) -> None:
            self._tile_product(tiles[i], s, mt, n0, n1)

        if streamed or self.scales or self.split_x:
            low.stream(len(tiles), load, compute)
        else:
            for i in range(len(tiles)):
                compute(i, 0)

    def _tile_product(self, tile, s: int, mt: int, n0: int, n1: int) -> None:
        """One weight tile times the activations into columns of the accumulator chunk n0..n1 (its rows are
        n1 - n0 wide)."""
        low, nc = self.low, n1 - n0
        r0, r1, c0, c1, off, _ = tile
        dst = Tile(self.accbuf, self.acc_dtype, (mt, r1 - r0), (r0 - n0) * 4, nc if r1 - r0 < nc else 0)
        wbuf, woff = (self.wbufs[s], 0) if self.wbufs else (self.image_buffer, off)
        w = Tile(wbuf, self.wt.dtype.name, (r1 - r0, c1 - c0), woff, layout=self.layout)
        first = c0 == 0
        if self.split_x:
            xs = Tile(self.xbufs[s], self.xt.dtype.name, (mt, c1 - c0))
        else:
            xs = Tile(self.xbuf, self.xt.dtype.name, (mt, c1 - c0), c0 * self.xi, self.k if c1 - c0 < self.k else 0)
        if self.mode == "lmma":
            ki = self.k_tiles.index((c0, c1))
            table = Tile(self.lutbuf, self.table_dtype, (mt, self.groups[ki], self.entries), self.lut_offsets[ki])
            low.emit(Lmma, dst=dst, table=table, w=w, acc=not first)
        elif self.mode == "xmma":
            low.emit(Xmma, dst=dst, x=xs, w=w, acc=not first)
        else:
            b = w
            if self.layout:
                b = Tile(self.codebuf, self.wt.dtype.name, (r1 - r0, c1 - c0))
                low.vec("unpack", [b], [w])
                if self.scales:
                    deq = Tile(self.deqbuf, self.xt.dtype.name, (r1 - r0, c1 - c0))
                    low.vec("dequant", [deq], [b] + self._scale_tiles(tile, s),
                            {"axis": -1, "group": self.group, "zero_mode": self.attrs["zero_mode"],
                             "dtype": self.xt.dtype})
                    b = deq
            low.emit(Mma, dst=dst, a=xs, b=b, transpose_b=True, acc=not first)

    # qmatmul scales: oriented [N, K/g] (or broadcast), cut per weight tile
    def _scale_region(self, name: str, tile):
        r0, r1, c0, c1, _, _ = tile
        st = self.low.g.type_of(name)
        if st.size == 1:
            return None
        a, b = (st.shape[::-1] if self.transpose else st.shape)
        rows = (r0, r1) if a == self.n else (0, 1)
        if b == 1:
            cols = (0, 1)
        elif self.group > 0:
            cols = (c0 // self.group, -(-c1 // self.group))
        else:
            cols = (c0, c1)
        return rows, cols, b

    def _load_scale(self, j: int, name: str, tile, s: int) -> None:
        region = self._scale_region(name, tile)
        if region is None:
            return
        (q0, q1), (p0, p1), b = region
        src = self.low.weight_raw_oriented(name, self.transpose)
        item = src.type.storage_np_dtype.itemsize
        self.low.emit(DmaLoad, dst=self.scalebufs[j][s], src=src.buffer, rows=q1 - q0, row_bytes=(p1 - p0) * item,
                      src_off=src.offset + (q0 * b + p0) * item, src_stride=b * item)

    def _scale_tiles(self, tile, s: int) -> list[Tile]:
        out = []
        for j, name in enumerate(self.scales):
            region = self._scale_region(name, tile)
            st = self.low.g.type_of(name)
            if region is None:
                if name not in self._whole_scales:
                    self._whole_scales[name] = self.low.load_whole(f"sw{j}", name)
                out.append(self._whole_scales[name])
            else:
                (q0, q1), (p0, p1), _ = region
                out.append(Tile(self.scalebufs[j][s], st.dtype.name, (q1 - q0, p1 - p0)))
        return out

    def _epilogue(self, m0: int, m1: int, n0: int, n1: int) -> None:
        """Scales and epilogue functions on the accumulator of rows m0..m1, outputs n0..n1; store it."""
        low, mt, nc, n = self.low, m1 - m0, n1 - n0, self.n
        acc = Tile(self.accbuf, self.acc_dtype, (mt, nc))
        res = Tile(self.resbuf, self.out_t.dtype.name, (mt, nc))
        if self.op.kind == "qmatmul_i8":
            low.vec("cast", [res], [acc], {"dtype": DTYPES["f32"]})
        elif res.buffer != acc.buffer:
            low.vec("cast", [res], [acc], {"dtype": self.out_t.dtype})
        for kind, item in self.epi_whole:
            low.vec("mul", [res], [res, self._scale_chunk(kind, item, m0, m1, n0, n1)])
        for e in self.attrs.get("epilogue", ()):
            low.vec(e, [res], [res])
        item = self.out_t.storage_np_dtype.itemsize
        low.emit(DmaStore, dst=self.out.buffer, src=res.buffer, rows=mt, row_bytes=nc * item,
                 dst_off=self.out.offset + (m0 * n + n0) * item, dst_stride=n * item if nc < n else 0)

    def _scale_chunk(self, kind: str, item, m0: int, m1: int, n0: int, n1: int) -> Tile:
        """The part of a scale that multiplies output rows m0..m1, columns n0..n1."""
        if kind == "whole":
            return item
        buf, part = item
        p, esize = self.low.value(part.name), part.t.storage_np_dtype.itemsize
        if kind == "columns":  # one scale per output column, broadcast over the rows
            self.low.load(buf, p, n0 * esize, (n1 - n0) * esize)
            return Tile(buf, part.t.dtype.name, part.t.shape[:-1] + (n1 - n0,))
        if self._per_column(part):  # a full [M, N] scale
            self.low.emit(DmaLoad, dst=buf, src=p.buffer, rows=m1 - m0, row_bytes=(n1 - n0) * esize,
                          src_off=p.offset + (m0 * self.n + n0) * esize, src_stride=self.n * esize)
            return Tile(buf, part.t.dtype.name, (m1 - m0, n1 - n0))
        self.low.load(buf, p, m0 * esize, (m1 - m0) * esize)
        return Tile(buf, part.t.dtype.name, (m1 - m0, 1))


# -- activation x activation ------------------------------------------------------------------------------

def lower_act_matmul(low: Lowering, op: Op) -> None:
    """Batched ``matmul`` of two computed values on the systolic array, one batch entry at a time (each entry's
    matrices must fit the SRAM together)."""
    a, b = op.operands
    at, bt, ot = low.g.type_of(a), low.g.type_of(b), op.result.type
    tb = OPS["matmul"].full_attrs(op.attr)["transpose_b"]
    batch = ot.shape[:-2]
    if bt.rank > 2 and bt.shape[:-2] != batch or at.shape[:-2] != batch:
        raise LoweringError(f"{op.describe()}: the asic target multiplies batches of equal shape (or a 2-D right "
                            f"operand), got {at} and {bt}", op.loc)
    m, k = at.shape[-2:]
    n = ot.shape[-1]
    ai, bi = at.storage_np_dtype.itemsize, bt.storage_np_dtype.itemsize
    acc_t = "i32" if ot.dtype.is_integer else "f32"
    sizes = {"a": m * k * ai, "b": k * n * bi, "acc": m * n * 4, "res": m * n * ot.storage_np_dtype.itemsize}
    low.fit([(None, sizes)])
    bufs = {key: low.sram(key, v) for key, v in sizes.items()}
    ap, bp, out = low.value(a), low.value(b), low.result(op.name)
    bshape = (n, k) if tb else (k, n)
    for i in range(max(1, math.prod(batch))):
        low.load(bufs["a"], ap, i * sizes["a"], sizes["a"])
        low.load(bufs["b"], bp, (i if bt.rank > 2 else 0) * sizes["b"], sizes["b"])
        acc = Tile(bufs["acc"], acc_t, (m, n))
        low.emit(Mma, dst=acc, a=Tile(bufs["a"], at.dtype.name, (m, k)), b=Tile(bufs["b"], bt.dtype.name, bshape),
                 transpose_b=tb)
        res = acc
        if ot.dtype.name != acc_t:
            res = Tile(bufs["res"], ot.dtype.name, (m, n))
            low.vec("cast", [res], [acc], {"dtype": ot.dtype})
        low.store(out, res.buffer, i * sizes["res"], sizes["res"])



__all__ = ["MatmulPlan", "lower_act_matmul", "lower_matmul"]
