"""The ``lut`` pass: low-bit matmuls become T-MAC table lookups (``lut_precompute`` + ``lut_matmul``).

It rewrites

* ``qmatmul_i8 %xq, %w, %s1, %s2`` (xq i8): exact int16 tables, so the result is bit-identical;
* ``qmatmul %x, %w, %s`` (x f32, no zero, one scale per tensor or per output row): f32 tables (only the
  summation order differs), or int8 tables with ``quantize`` (changes numerics by a bounded amount,
  see ladder.ops.lut) and then optionally T-MAC's ``fast_aggregation``;

for 2-D weights of i1, u1, i2, u2, ternary, i4 or u4 (``transpose_b`` or not) that are known at compile time.
The weight is re-laid out for the lookup kernel with ordinary ops that run once, on the weights:
``transpose`` to [N, K] if needed, pad K to a multiple of ``g`` and N to a multiple of ``rows`` (by repeating
columns/rows: padded weights meet zero activations or are never returned), ``reshape`` [NB, rows, G, g],
``transpose`` (0, 2, 1, 3), ``reshape`` [NB, G * rows * g] and ``pack`` into ``planes``. ``rows`` defaults to
the target's vector width in bytes (one index per byte lane of a shuffle).

``choose=always`` rewrites every such op; ``choose=auto`` (the default cpu pipeline) only those for which
ladder.tuning says lookup is faster for ``threads`` and these tables (exact, f32, int8 or int8 with fast
aggregation): the record of the ``tuning`` file (made by ``ladder tune``) if it has this shape, else the cost
model; a tuned choice also sets ``rows`` and ``unroll``. Without ``tuning`` nothing is read: the result
depends on the graph, the target and the options only. ``changes_numerics`` is False: the default options
preserve the result (``quantize=true`` is the one option that does not, by the bound ladder.ops.lut states).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..context import CompileContext
from ..errors import PipelineError
from ..ir import Graph, Op
from ..ops import OPS, make_op
from ..ops.lut import GROUP_SIZES, LUT_DTYPES, interleaved_shape
from ..target import get_target
from ..tuning import Choice, Problem, TuningRecords, choose, entry_key, host_threads, load_records
from ..types import DTYPES, TensorType
from .lowbit import _add, _producer_op, weight_values
from .manager import Pass, register_pass

CHOICES = ("always", "auto")


@dataclass(frozen=True)
class LutCase:
    """One matmul the pass can rewrite, as the tuner sees it."""

    op: Op
    x: str
    weight: str  # the logical (unpacked) weight value
    transpose_b: bool
    m: int  # rows of x (batch dims flattened)
    n: int
    k: int
    dtype: str
    act: str  # "i8" or "f32"
    scales: tuple[str, ...]  # qmatmul_i8's s1, s2; qmatmul's weight scale

    def problem(self, tables: str = "f32"):
        """The tuner's Problem; ``tables`` applies to f32 activations (i8 ones always make exact tables)."""
        return Problem(self.act, self.dtype, self.m, self.n, self.k, "exact" if self.act == "i8" else tables)


def find_case(g: Graph, op: Op, weights: set[str]) -> LutCase | None:
    """The op as a LutCase when the lut pass can rewrite it, else None."""
    if op.kind not in ("qmatmul_i8", "qmatmul"):
        return None
    a = OPS[op.kind].full_attrs(op.attr)
    x_t, w_t = g.type_of(op.operands[0]), g.type_of(op.operands[1])
    if w_t.rank != 2 or w_t.dtype.name not in LUT_DTYPES:
        return None
    weight = _logical_weight(g, op.operands[1])
    if weight is None or weight not in weights:
        return None
    tb = a["transpose_b"]
    n, k = (w_t.shape if tb else w_t.shape[::-1])
    m = x_t.size // max(x_t.shape[-1], 1)
    if min(m, n, k) < 1:
        return None
    if op.kind == "qmatmul_i8":
        if x_t.dtype.name != "i8":
            return None
        return LutCase(op, op.operands[0], weight, tb, m, n, k, w_t.dtype.name, "i8", tuple(op.operands[2:]))
    if x_t.dtype.name != "f32" or len(op.operands) != 3 or a["zero_mode"] != "none":
        return None
    s_t = g.type_of(op.operands[2])
    n_axis = 0 if tb else 1
    per_row = s_t.rank == 2 and s_t.shape[n_axis] == n and s_t.shape[1 - n_axis] == 1 and a["group"] == 0 \
        and a["axis"] % 2 == 1 - n_axis
    if not (s_t.size == 1 or per_row) or s_t.dtype.name != "f32":
        return None
    return LutCase(op, op.operands[0], weight, tb, m, n, k, w_t.dtype.name, "f32", (op.operands[2],))


def _logical_weight(g: Graph, name: str) -> str | None:
    """The unpacked weight behind a matmul's w operand (the operand of its ``pack``, seeing through
    ``unpack(pack(w))``), or None."""
    t = g.type_of(name)
    p = _producer_op(g, name)
    if not t.layout:
        if p is not None and p.kind == "unpack":
            return _logical_weight(g, p.operands[0]) or name
        return name
    if p is None or p.kind != "pack" or len(p.operands) != 1:
        return None
    return p.operands[0]


@register_pass("lut")
@dataclass(frozen=True)
class Lut(Pass):
    """Options: ``g`` (activations per table), ``act_group`` and ``quantize`` (int8 tables for f32
    activations, one scale per act_group activations, 0 = per row), ``fast_aggregation``, ``rows`` (0: the
    target's vector bytes) and ``unroll`` (the kernel's schedule), ``choose`` (always | auto), ``threads``
    (auto's tuning key; 0: all cores) and ``tuning`` (auto: a tuning file, see ladder.tune)."""

    target: str = "cpu"
    g: int = 4
    act_group: int = 0
    quantize: bool = False
    fast_aggregation: bool = False
    rows: int = 0
    unroll: int = 1
    choose: str = "always"
    threads: int = 0
    tuning: str = ""

    @property
    def tables(self) -> str:
        """The tables this pass builds for f32 activations (see ladder.tuning.TABLES)."""
        return ("i8-fast" if self.fast_aggregation else "i8") if self.quantize else "f32"

    def check(self) -> None:
        if self.g not in GROUP_SIZES:
            raise PipelineError(f"lut: g must be one of {', '.join(map(str, GROUP_SIZES))}, got {self.g}")
        if self.act_group < 0 or self.act_group % self.g or (self.act_group and not self.quantize):
            raise PipelineError(f"lut: act_group must be 0 or a multiple of g = {self.g}, and needs quantize=true; "
                                f"got act_group={self.act_group}")
        if self.fast_aggregation and not self.quantize:
            raise PipelineError("lut: fast_aggregation averages int8 table entries; it needs quantize=true")
        if self.rows < 0 or self.rows % 8:
            raise PipelineError(f"lut: rows must be 0 (the target's vector bytes) or a multiple of 8, got {self.rows}")
        if self.unroll not in (1, 2, 4, 8):
            raise PipelineError(f"lut: unroll must be 1, 2, 4 or 8, got {self.unroll}")
        if self.choose not in CHOICES:
            raise PipelineError(f"lut: choose must be one of {', '.join(CHOICES)}, got '{self.choose}'")
        if self.tuning and self.choose != "auto":
            raise PipelineError("lut: tuning records choose between decode and lookup; they need choose=auto")

    @cached_property
    def records(self) -> TuningRecords | None:
        """The tuning file's valid records, read once per pass object (None without ``tuning``)."""
        return load_records(self.tuning) if self.tuning else None

    def with_context(self, ctx: CompileContext) -> "Lut":
        """In a compile whose context holds the records of this pass's tuning file (``ladder.compile(...,
        tuning=FILE)``), those records: the file is read once per compile, by ladder.context."""
        if ctx.tuning is None or self.tuning != ctx.tuning.path:
            return self
        configured = dataclasses.replace(self)
        configured.__dict__["records"] = ctx.tuning  # the value ``records`` would cache after reading the file
        return configured

    def decide(self, graph: Graph) -> list[tuple[int, LutCase, Choice]]:
        """(node, case, choice) for every matmul this pass can rewrite in ``graph``."""
        self.check()
        target = get_target(self.target)
        weights = weight_values(graph)
        out = []
        for node in graph.nodes():
            case = find_case(graph, graph.op(node), weights)
            if case is None:
                continue
            if self.choose == "auto":
                c = choose(case.problem(self.tables), target, self.threads or None, self.records)
            else:
                c = Choice("lut", self.rows, self.unroll, "always")
            out.append((node, case, c))
        return out

    def records_used(self, graph: Graph) -> dict[str, Choice]:
        """The tuning records (key -> choice) this pass applies to ``graph``."""
        target, threads = get_target(self.target), host_threads(self.threads or None)
        return {entry_key(case.problem(self.tables), target, threads): c for _, case, c in self.decide(graph)
                if c.source == "tuned"}

    def run(self, graph: Graph) -> Graph:
        rows = self.rows or get_target(self.target).vector_bytes
        g = graph.copy()
        for node, case, c in self.decide(g):
            if c.method == "lut":
                self._rewrite(g, node, case, c.rows or rows, c.unroll)
        return g

    def _rewrite(self, g: Graph, node: int, case: LutCase, rows: int, unroll: int) -> None:
        op, loc = case.op, case.op.loc
        packed = _interleave(g, case, rows, self.g)
        quantize = self.quantize and case.act == "f32"
        pre_attrs = {"g": self.g, "quantize": quantize, "act_group": self.act_group if quantize else 0}
        pre_names = [g.fresh_name(f"{case.x}.{s}") for s in ("lut", "sum", "lscale")[:3 if quantize else 2]]
        pre = make_op("lut_precompute", [case.x], [g.type_of(case.x)], pre_attrs, pre_names, None, loc)
        g.add_op(pre)
        table, tsum = pre.results[0].name, pre.results[1].name
        s1, s2 = _scales(g, case)
        operands = [table, tsum, packed, s1, s2] + ([pre.results[2].name] if quantize else [])
        attrs = {"n": case.n, "rows": rows, "g": self.g, "act_group": pre_attrs["act_group"],
                 "fast_aggregation": self.fast_aggregation and quantize,
                 "epilogue": tuple(op.attr.get("epilogue", ())), "unroll": unroll}
        new = make_op("lut_matmul", operands, [g.type_of(o) for o in operands], attrs, [op.name], None, loc)
        g.replace_op(node, new)


def _scales(g: Graph, case: LutCase) -> tuple[str, str]:
    """lut_matmul's s1, s2: qmatmul_i8's own, or qmatmul's weight scale (per row as [N]) and 1."""
    if case.act == "i8":
        return case.scales[0], case.scales[1]
    s, loc = case.scales[0], case.op.loc
    if g.type_of(s).size != 1:
        s = _add(g, "reshape", [s], {"shape": [case.n]}, f"{s}.row", loc).name
    one = make_op("const", [], [], {"value": np.ones(1, np.float32)}, [g.fresh_name("one")],
                  [TensorType(DTYPES["f32"], (1,))], loc)
    g.add_op(one)
    return s, one.result.name


def _interleave(g: Graph, case: LutCase, rows: int, group: int) -> str:
    """The weight as lut_matmul's ``planes``-packed w (ops on weights only: computed at compile time)."""
    loc, w = case.op.loc, case.weight
    if not case.transpose_b:
        w = _add(g, "transpose", [w], {"perm": [1, 0]}, f"{w}.t", loc).name
    nb, width = interleaved_shape(case.n, case.k, rows, group)
    n_groups = width // (rows * group)
    w = _pad_axis(g, w, 1, n_groups * group, loc)
    w = _pad_axis(g, w, 0, nb * rows, loc)
    w = _add(g, "reshape", [w], {"shape": [nb, rows, n_groups, group]}, f"{case.weight}.blocks", loc).name
    w = _add(g, "transpose", [w], {"perm": [0, 2, 1, 3]}, f"{case.weight}.il", loc).name
    w = _add(g, "reshape", [w], {"shape": [nb, width]}, f"{case.weight}.ilflat", loc).name
    return _add(g, "pack", [w], {"layout": "planes"}, f"{case.weight}.lut", loc).name


def _pad_axis(g: Graph, name: str, axis: int, size: int, loc) -> str:
    """``name`` extended along ``axis`` to ``size`` by repeating it (the values padded in do not matter)."""
    have = g.type_of(name).shape[axis]
    if have == size:
        return name
    reps = -(-size // have)
    cat = _add(g, "concat", [name] * reps, {"axis": axis}, f"{name}.rep", loc).name
    return _add(g, "slice", [cat], {"starts": [0], "ends": [size], "axes": [axis]}, f"{name}.pad", loc).name


__all__ = ["Lut", "LutCase", "find_case"]
