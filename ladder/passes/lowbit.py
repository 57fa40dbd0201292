"""The type-transformation passes: legalize-types, fuse, quantize-activations, quantize-weights.

* ``legalize-types{target}`` gives every low-bit weight a storage layout the target prefers: ``%w`` becomes
  ``unpack(pack(%w))``, where ``pack`` runs once on the weights (weight-only values are computed when
  weights are bound) and ``unpack`` is the decode a kernel performs in registers.
* ``fuse`` turns ``matmul(x, dequant(unpack(w), s))`` into one ``qmatmul`` reading the packed weights, the
  BitNet integer chain ``f32(matmul(xq, unpack(w))) * s1 * s2`` into ``qmatmul_i8``, llama.cpp's Q8_0 chain
  ``matmul(dequant(xq, sx), dequant(w, sw), transpose_b)`` (xq from absmax int8 quantization, both grouped
  along K by the same group) into ``qmatmul_q8`` (with ``int8_blocks``, the default; targets without that
  kernel turn it off), and folds unary element-wise ops that follow them into their ``epilogue``.
* ``quantize-activations`` (changes numerics; only when asked for) feeds ``qmatmul``'s float activations
  through BitNet's per-token int8 absmax quantization so the integer path applies.
* ``quantize-weights{dtype,group,...}`` (changes numerics; only when asked for) quantizes float weight
  params of matmuls with a ``quantize`` + ``dequant`` pair, which the passes above then legalize and fuse.

The first two preserve what the graph computes exactly: every new op's semantics is the composition it
replaces.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PipelineError, VerifyError
from ..ir import Graph, Op, Value
from ..ops import OPS, make_op
from ..ops.lowbit import EPILOGUES, block_scales
from ..packing import PACKINGS, get_packing, packings_for
from ..target import get_target
from ..types import DTYPES
from .canonicalize import remove_dead
from .manager import Pass, PatternPass, register_pass
from .patterns import Firing, apply_patterns, pattern


def weight_values(g: Graph) -> set[str]:
    """Values computed from params and consts only (known once the weights are)."""
    out: set[str] = set()
    for op in g.ops():
        if op.kind in ("param", "const") or (op.operands and all(o in out for o in op.operands)):
            out.update(r.name for r in op.results)
    return out


def _add(g: Graph, kind: str, operands, attrs, hint: str, loc) -> Value:
    types = [g.type_of(o) for o in operands]
    op = make_op(kind, operands, types, attrs, [g.fresh_name(hint)], None, loc)
    g.add_op(op)
    return op.result


def _single_use(g: Graph, name: str) -> bool:
    users = g.users(name)
    return name not in g.outputs and len(users) == 1 and g.op(users[0]).operands.count(name) == 1


def _producer_op(g: Graph, name: str) -> Op | None:
    node = g.producer(name)
    return None if node is None else g.op(node)


# -- legalize-types ----------------------------------------------------------------------------------------

@register_pass("legalize-types")
@dataclass(frozen=True)
class LegalizeTypes(Pass):
    """Choose a packing for every low-bit weight from the target's preferences (``prefer`` overrides them:
    ``prefer=ternary:trit5;i4:nib``). With ``block_scales``, a weight whose every use is a dequant by the
    same group-wise scales along its last axis, with a group equal to a packing's block, is packed with
    its scales next to each block (``nib16+f16``).

    A weight its file stores in a block packing the target's kernels take (Q4_0's ``q4+f16``, TQ2_0's
    ``tq2+f16``) keeps the file's bytes. Base-3 digits (TQ1_0's ``tq1+f16``, 1.69 bits a weight) are the
    exception where the target's packings for the type are bit fields (every cpu target): they are repacked
    once into a 2-bit field packing of the same blocks and scales (2.06 bits a weight), the same codes, so the
    same results. A digit costs five vector operations per 32 codes against one or two for a field; a
    BitNet-2B-shaped TQ1_0 model decodes 12.2 -> 26.7 tokens/s at 1 thread on a Zen 4 (ladder generate, bits
    equal). ``keep_digits=true`` keeps the file's digits (less memory, slower)."""

    target: str = "cpu"
    prefer: str = ""
    block_scales: bool = True
    keep_digits: bool = False

    def overrides(self) -> dict[str, str]:
        out = {}
        for item in filter(None, (s.strip() for s in self.prefer.replace(";", " ").split())):
            dt, sep, packing = item.partition(":")
            if not sep or dt not in DTYPES or not packing:
                raise PipelineError(f"legalize-types: prefer expects dtype:packing items, got '{item}'")
            if packing not in PACKINGS or not PACKINGS[packing].accepts(DTYPES[dt]):
                raise PipelineError(f"legalize-types: '{packing}' is not a packing for {dt}; "
                                    f"those are {', '.join(p.name for p in packings_for(DTYPES[dt]))}")
            out[dt] = packing
        return out

    def run(self, graph: Graph) -> Graph:
        target = get_target(self.target)
        overrides = self.overrides()
        g = graph.copy()
        weights = weight_values(g)
        for op in g.ops():
            for r in op.results:
                t = r.type
                if r.name not in weights or t.layout or not t.shape:
                    continue
                wide = not t.dtype.is_low_bit  # packed only as its stored blocks (a Q8_0 file's i8)
                if wide and not (op.kind == "param" and op.attr.get("stored")):
                    continue
                users = [g.op(u).kind for u in g.users(r.name)]
                if all(k == "pack" for k in users) or all(k == "gather" for k in users):
                    continue  # packed already; or only rows are read (an embedding), which the codes give as they are
                layout = overrides.get(t.dtype.name) or (None if wide else target.packing_for(t.dtype).name)
                scales = _shared_block_scales(g, r.name, weights) if self.block_scales else None
                # scales that are themselves quantized (a K-quant's integer sub-scales times an f32 a super-block)
                # stay apart, as the file has them: a kernel reads their codes (qmatmul_q8 {scale_group})
                factored = scales is not None and len(scales[1]) == 1 and _factored_scales(g, scales[1][0]) is not None
                pack_operands = [r.name]
                # only the dequants read the packed copy when their block scales go inside it and other ops
                # (an embedding's gather of the same codes) read the codes too: those keep the plain codes
                dequants_only = factored  # (their codes packed alone: an embedding gathers packed rows)
                base = None
                if scales is not None and not factored:
                    s_t = g.type_of(scales[1][0])
                    base = _stored_base(op, target, t.dtype, scales, s_t, overrides.get(t.dtype.name),
                                        self.keep_digits) or (
                        None if wide else _packing_with_block(target, t.dtype, scales[0], overrides.get(t.dtype.name)))
                    if base is not None:
                        layout = f"{base}+{s_t.dtype.name}{'z' if len(scales[1]) == 2 else ''}"
                        pack_operands += scales[1]
                        dequants_only = True
                if wide and base is None:
                    continue  # not its file's blocks: the weight stays as it is
                if base is None and scales is not None and len(scales[1]) == 1 and 0 < scales[0] <= 32 \
                        and 32 % scales[0] == 0 and (scales[0] < 32 or factored):
                    # scales per 16 (Q3_K's) inside no packing, or quantized scales: blocks of 32 codes, the scales
                    # apart, which the int8 dot product kernels take (two scales a block: qmatmul_q8 {group = 16})
                    layout = _packing_with_block(target, t.dtype, 32, overrides.get(t.dtype.name)) or layout
                packed = _add(g, "pack", pack_operands, {"layout": layout}, f"{r.name}.packed", op.loc)
                logical = None
                for user in g.users(r.name):
                    uop = g.op(user)
                    if uop.kind == "pack":
                        continue
                    if dequants_only and uop.kind == "gather" and _rows_of(g, uop, r.name):
                        _gather_packed(g, user, uop, packed)  # the rows of the packed weight, unpacked after
                        continue
                    if dequants_only and uop.kind != "dequant":
                        continue
                    if logical is None:
                        logical = _add(g, "unpack", [packed.name], {}, f"{r.name}.unpacked", op.loc)
                    g.replace_op(user, uop.with_(operands=tuple(
                        logical.name if o == r.name else o for o in uop.operands)))
        return g


def _rows_of(g: Graph, op: Op, name: str) -> bool:
    """Whether ``op`` gathers rows of ``name`` (its table, along an axis before the last)."""
    t = g.type_of(name)
    return op.operands[0] == name and int(op.attr.get("axis", 0)) % t.rank < t.rank - 1


def _gather_packed(g: Graph, node: int, op: Op, packed: Value) -> None:
    """gather(codes, i) -> unpack(gather(packed, i)): an embedding reads the rows it needs from the weight as
    packed (a file's blocks as they are), decoded when the step runs, instead of a decoded copy of the table."""
    out = op.results[0]
    rows = _add(g, "gather", [packed.name, op.operands[1]], dict(op.attr), f"{out.name}.packed", op.loc)
    g.replace_op(node, make_op("unpack", [rows.name], [rows.type], {}, [out.name], [out.type], op.loc))


def _shared_block_scales(g: Graph, name: str, weights: set[str]):
    """(group, [scale, zero?]) when every dequant of ``name`` (there is one at least) is along the last axis by
    the same group-wise weight scales of a float type of 16 or 32 bits, and every other reader is a gather of
    rows (an embedding, which keeps reading the plain codes); else None."""
    t = g.type_of(name)
    found = None
    for user in g.users(name):
        op = g.op(user)
        if op.kind == "pack":
            continue  # an explicit pack reads the plain codes as before
        if op.kind == "gather" and op.operands[0] == name:
            continue  # an embedding's rows: read from the plain codes
        if op.kind != "dequant" or op.operands[0] != name:
            return None
        a = OPS["dequant"].full_attrs(op.attr)
        key = (a["group"], list(op.operands[1:]))
        s_t = g.type_of(op.operands[1])
        if (a["axis"] % t.rank != t.rank - 1 or a["group"] <= 0 or s_t.dtype.name not in ("f16", "bf16", "f32")
                or any(o not in weights or g.type_of(o).dtype != s_t.dtype for o in op.operands[1:])
                or (found is not None and found != key)):
            return None
        found = key
    return found


def _stored_base(op: Op, target, dt, scales, s_t, override: str | None, keep_digits: bool = False) -> str | None:
    """The base packing of a param's ``stored`` block packing when its blocks are these scales' groups (same
    group, scale type and zeros) and no ``prefer`` overrides it: packing the weight in it is then the file's
    own bytes (ladder.weights.Blocks). Every cpu kernel that takes a packing's geometry takes it; a table-lookup
    target keeps its bit planes. Base-3 digits are kept only with ``keep_digits`` or where the target's own
    packings for the type are digits too (LegalizeTypes)."""
    stored = op.attr.get("stored") if op.kind == "param" else None
    if not stored or override or _keeps_planes(target, dt):
        return None
    p = get_packing(stored)
    if p.block != scales[0] or p.scale != s_t.dtype or p.zero != (len(scales[1]) == 2) or not p.accepts(dt):
        return None
    if p.base.radix and not keep_digits and not _prefers_digits(target, dt):
        return None  # repacked into fields (_packing_with_block)
    return p.base.name


def _first_packing(target, dt):
    """The target's first (preferred) packing for ``dt``, or None."""
    prefs = target.preferred_packings(dt)
    return PACKINGS[prefs[0]] if prefs else None


def _prefers_digits(target, dt) -> bool:
    """Whether the target's first packing for ``dt`` holds base-``radix`` digits."""
    first = _first_packing(target, dt)
    return first is not None and bool(first.radix)


def _keeps_planes(target, dt) -> bool:
    """Whether the target's first packing for ``dt`` is bit planes (a table-lookup target), whose scales stay a
    separate tensor: no block packing then."""
    first = _first_packing(target, dt)
    return first is not None and first.planes


def _packing_with_block(target, dt, group: int, override: str | None):
    prefs = list(target.preferred_packings(dt))
    if not override and _keeps_planes(target, dt):
        return None  # a table-lookup target keeps bit planes; their scales stay a separate tensor
    names = [override] if override else prefs + list(PACKINGS)  # an explicit choice is kept as it is
    if not override and not _prefers_digits(target, dt):  # bit fields before base-3 digits: faster to decode
        names = sorted(names, key=lambda n: bool(PACKINGS[n].radix) if n in PACKINGS else False)
    for n in names:
        p = PACKINGS.get(n)
        if p is not None and p.accepts(dt) and not p.planes and p.block == group:
            return p.name
    return None


# -- fuse ------------------------------------------------------------------------------------------------

@register_pass("fuse")
@dataclass(frozen=True)
class Fuse(PatternPass):
    """Rewrite patterns: with ``int8_blocks`` first ``fuse-q8-blocks`` at each matmul and ``fuse-q8-zeros`` at
    each sub (a K-quant's mins' term, before its matmul becomes a qmatmul); then ``fuse-qdq-matmul``,
    ``fuse-dequant-matmul`` and ``fuse-int-chain`` at each matmul (the first that fires wins), then, in a last
    sweep, ``fold-epilogue`` (with ``epilogues``)."""

    epilogues: bool = True
    int8_blocks: bool = True

    def run_traced(self, graph: Graph) -> tuple[Graph, list[Firing]]:
        g = graph.copy()
        trace = apply_patterns(g, [fuse_q8_blocks, fuse_q8_zeros]) if self.int8_blocks else []
        trace += apply_patterns(g, [fuse_qdq_matmul, fuse_dequant_matmul, fuse_int_chain])
        if self.epilogues:
            trace += apply_patterns(g, [fold_epilogue])
        remove_dead(g)
        return g, trace


def _weight_operand(g: Graph, name: str) -> str:
    """The packed tensor behind ``unpack`` (kernels read it directly), or the value itself."""
    p = _producer_op(g, name)
    return p.operands[0] if p is not None and p.kind == "unpack" else name


def _fused(g: Graph, old: Op, kind: str, operands, attrs) -> Op | None:
    """The fused op that takes ``old``'s place (and name), its operands all defined before ``old``; None when
    it does not take these operands (e.g. i16 activations)."""
    try:
        return make_op(kind, operands, [g.type_of(o) for o in operands], attrs, [old.name], None, old.loc)
    except VerifyError:
        return None


@pattern("fuse-dequant-matmul", "matmul")
def fuse_dequant_matmul(g: Graph, mm: Op):
    """matmul(x, dequant(w, scales...)) along K -> qmatmul(x, w, scales...) (w the packed tensor behind an
    unpack; no scales when they are inside w's blocks)."""
    b = _producer_op(g, mm.operands[1])
    x_t = g.type_of(mm.operands[0])
    if b is None or b.kind != "dequant" or not x_t.dtype.is_float:
        return None
    w_t = g.type_of(b.operands[0])
    k_axis = w_t.rank - 1 if mm.attr.get("transpose_b", False) else w_t.rank - 2
    d = OPS["dequant"].full_attrs(b.attr)
    if w_t.rank != 2 or d["axis"] % w_t.rank != k_axis or d["dtype"] != x_t.dtype:
        return None
    attrs = {"transpose_b": mm.attr.get("transpose_b", False), "axis": d["axis"], "group": d["group"],
             "zero_mode": d["zero_mode"]}
    w = _weight_operand(g, b.operands[0])
    scales = list(b.operands[1:])
    if block_scales(g.type_of(w)):
        packer = _producer_op(g, w)
        if packer is None or list(packer.operands[1:]) != scales:
            return None  # the scales inside w are not this dequant's
        scales = []
    return _fused(g, mm, "qmatmul", [mm.operands[0], w] + scales, attrs)


@pattern("fuse-q8-blocks", "matmul")
def fuse_q8_blocks(g: Graph, mm: Op):
    """matmul(dequant(xq, sx), dequant(w, sw), transpose_b) -> qmatmul_q8(xq, sx, w, sw): both dequants along K
    by one group (or x's by a super-block of w's factored scales: ``scale_group``), without zeros, to f32; xq
    int8 codes from absmax quantization (never -128, so the op's clip of x at -127 changes nothing); w 2-D
    integer codes, packed or not."""
    if not mm.attr.get("transpose_b", False):
        return None
    a, bq = _producer_op(g, mm.operands[0]), _producer_op(g, mm.operands[1])
    if a is None or bq is None or a.kind != "dequant" or bq.kind != "dequant" or len(a.operands) != 2:
        return None
    q = _producer_op(g, a.operands[0])
    if q is None or q.kind != "quantize" or q.results[0].name != a.operands[0]:
        return None
    qa = OPS["quantize"].full_attrs(q.attr)
    if qa["scheme"] != "absmax" or qa["dtype"] != DTYPES["i8"]:
        return None
    da, db = OPS["dequant"].full_attrs(a.attr), OPS["dequant"].full_attrs(bq.attr)
    x_t, w_t = g.type_of(a.operands[0]), g.type_of(bq.operands[0])
    f32 = DTYPES["f32"]
    if (w_t.rank != 2 or len(bq.operands) != 2 or da["dtype"] != f32 or db["dtype"] != f32
            or da["group"] <= 0 or db["group"] <= 0
            or da["axis"] % x_t.rank != x_t.rank - 1 or db["axis"] % 2 != 1):
        return None
    w = _weight_operand(g, bq.operands[0])
    scales = [bq.operands[1]]
    attrs = {"group": db["group"]}
    factored = None
    if block_scales(g.type_of(w)):
        packer = _producer_op(g, w)
        if packer is None or list(packer.operands[1:]) != scales:
            return None  # the scales inside w are not this dequant's
        scales = []
    else:
        factored = _factored_scales(g, scales[0])
        if factored is not None:  # a K-quant's integer sub-scales and their f32 scales, read as they are
            scales, attrs["scale_group"] = factored
    # x's scale per group as w's, or (w's scales factored) one per super-block of them: Q8_K's per 256
    if da["group"] != db["group"] and (factored is None or da["group"] != db["group"] * factored[1]):
        return None
    return _fused(g, mm, "qmatmul_q8", [a.operands[0], a.operands[1], w] + scales, attrs)


@pattern("fuse-q8-zeros", "sub")
def fuse_q8_zeros(g: Graph, op: Op):
    """qmatmul_q8(xq, sx, w, sw, sd {scale_group}) - matmul(reduce_sum(reshape(dequant(xq, sx), [..., K/g, g])),
    dequant(zw, zd), transpose_b) -> qmatmul_q8(xq, sx, w, sw, sd, zw, zd): a K-quant's mins' term (x's sums per
    group times the zeros, the zeros as the file holds them) taken in the kernel that reads the codes, from x's
    code sums (exact) times sx, instead of a float matmul over f32 zeros (4 bytes a group) and x's dequantized
    sums; the same up to float rounding."""
    q, mm = _producer_op(g, op.operands[0]), _producer_op(g, op.operands[1])
    if (q is None or mm is None or q.kind != "qmatmul_q8" or mm.kind != "matmul" or len(q.operands) != 5
            or q.attr.get("epilogue") or not mm.attr.get("transpose_b", False)
            or not _single_use(g, q.name) or not _single_use(g, mm.name)):
        return None
    qa = OPS["qmatmul_q8"].full_attrs(q.attr)
    r = _producer_op(g, mm.operands[0])
    if r is None or r.kind != "reduce":
        return None
    ra = OPS["reduce"].full_attrs(r.attr)
    if ra["kind"] != "sum" or ra["keepdims"]:
        return None
    rs = _producer_op(g, r.operands[0])
    if rs is None or rs.kind != "reshape":
        return None
    dq = _producer_op(g, rs.operands[0])
    if dq is None or dq.kind != "dequant" or list(dq.operands) != list(q.operands[:2]):
        return None
    x_t, rs_t = g.type_of(dq.results[0].name), g.type_of(rs.results[0].name)
    gsz = qa["group"]
    da = OPS["dequant"].full_attrs(dq.attr)
    if (da["group"] not in (gsz, gsz * qa["scale_group"]) or da["axis"] % x_t.rank != x_t.rank - 1
            or da["dtype"].name != "f32"
            or x_t.shape[-1] % gsz or tuple(rs_t.shape) != tuple(x_t.shape[:-1]) + (x_t.shape[-1] // gsz, gsz)
            or OPS["reduce"].axes(rs_t, ra) != (rs_t.rank - 1,)):
        return None
    zeros = _factored_scales(g, mm.operands[1])
    if zeros is None or zeros[1] != qa["scale_group"]:
        return None
    return _fused(g, op, "qmatmul_q8", list(q.operands) + zeros[0], dict(q.attr))


def _factored_scales(g: Graph, name: str):
    """([codes, scale], group) when ``name`` is ``dequant(codes, scale)`` of i8 codes by f32 scales along the last
    axis, without zeros, to f32 (a K-quant's sub-scales and their super-block scale); else None."""
    dq = _producer_op(g, name)
    if dq is None or dq.kind != "dequant" or len(dq.operands) != 2:
        return None
    a = OPS["dequant"].full_attrs(dq.attr)
    c_t, s_t = g.type_of(dq.operands[0]), g.type_of(dq.operands[1])
    if (c_t.dtype.name != "i8" or c_t.layout or s_t.dtype.name != "f32" or a["dtype"].name != "f32"
            or a["group"] <= 0 or a["axis"] % c_t.rank != c_t.rank - 1 or c_t.rank != 2):
        return None
    return list(dq.operands), a["group"]


def _one_scale(g: Graph, dq: Op, rank: int) -> bool:
    """``dq`` dequantizes rank-``rank`` int8 codes to f32 with one scale (and at most one zero, 'original')."""
    d = OPS["dequant"].full_attrs(dq.attr)
    t = g.type_of(dq.operands[0])
    return (t.dtype == DTYPES["i8"] and not t.layout and t.rank == rank and d["dtype"] == DTYPES["f32"]
            and all(g.type_of(o).size == 1 for o in dq.operands[1:])
            and (len(dq.operands) == 2 or d["zero_mode"] == "original"))


@pattern("fuse-qdq-matmul", "matmul")
def fuse_qdq_matmul(g: Graph, mm: Op):
    """matmul(dequant(xq, sx[, zx]), dequant(w, sw)) -> qmatmul_i8(xq, transpose(w), sx, sw) [- zx * sx * sw *
    colsum(w)]: onnxruntime's QDQ MatMul as an int8 dot product. xq int8 codes with one scale and zero (an
    activation after QuantizeLinear), w 2-D int8 weight codes with one scale and no zero; the weight-only
    transpose and column sums are computed once, with the weights. Equal to the composition up to float
    rounding (the integer dot product is exact; the zero's term is subtracted after scaling)."""
    a, bq = _producer_op(g, mm.operands[0]), _producer_op(g, mm.operands[1])
    if a is None or bq is None or a.kind != "dequant" or bq.kind != "dequant":
        return None
    x_t = g.type_of(a.operands[0])
    if x_t.rank < 2 or not _one_scale(g, a, x_t.rank) or not _one_scale(g, bq, 2) or len(bq.operands) != 2:
        return None
    w = bq.operands[0]
    if w not in weight_values(g):
        return None
    tb = mm.attr.get("transpose_b", False)
    wt = w if tb else _add(g, "transpose", [w], {"perm": [1, 0]}, f"{w}.t", mm.loc).name
    xq, sx, sw = a.operands[0], a.operands[1], bq.operands[1]
    if len(a.operands) == 2:
        return _fused(g, mm, "qmatmul_i8", [xq, wt, sx, sw], {"transpose_b": True})
    y = _fused(g, mm, "qmatmul_i8", [xq, wt, sx, sw], {"transpose_b": True})
    if y is None:
        return None
    y = y.with_(results=[Value(g.fresh_name(f"{mm.name}.int"), y.result.type)])
    g.add_op(y)
    wf = _add(g, "cast", [wt], {"dtype": DTYPES["f32"]}, f"{w}.f32", mm.loc)
    corr = _add(g, "reduce", [wf.name], {"kind": "sum", "axes": [1]}, f"{w}.colsum", mm.loc)
    for s in (a.operands[2], sx, sw):
        corr = _add(g, "mul", [corr.name, s], {}, f"{mm.name}.zero", mm.loc)
    return _fused(g, mm, "sub", [y.result.name, corr.name], {})


@pattern("fuse-int-chain", "matmul")
def fuse_int_chain(g: Graph, mm: Op):
    """f32(matmul(xq, w)) * s1 * s2 -> qmatmul_i8(xq, w, s1, s2), in the place of the last mul."""
    if mm.result.type.dtype != DTYPES["i32"] or not _single_use(g, mm.name):
        return None
    cast = g.op(g.users(mm.name)[0])
    if cast.kind != "cast" or cast.result.type.dtype != DTYPES["f32"] or not _single_use(g, cast.name):
        return None
    m1 = g.op(g.users(cast.name)[0])
    if m1.kind != "mul" or m1.operands[0] != cast.name or not _single_use(g, m1.name):
        return None
    m2 = g.op(g.users(m1.name)[0])
    if m2.kind != "mul" or m2.operands[0] != m1.name or m2.result.type != cast.result.type:
        return None
    if m1.result.type != cast.result.type:
        return None
    operands = [mm.operands[0], _weight_operand(g, mm.operands[1]), m1.operands[1], m2.operands[1]]
    return _fused(g, m2, "qmatmul_i8", operands, {"transpose_b": mm.attr.get("transpose_b", False)})


@pattern("fold-epilogue", "qmatmul", "qmatmul_i8")
def fold_epilogue(g: Graph, op: Op):
    """A unary element-wise op without attributes, the only user of a qmatmul, joins its epilogue: the fused op
    takes the user's place (and name; its result type is the same). A chain of them folds one by one, as the
    sweep reaches each user."""
    if not _single_use(g, op.name):
        return None
    user = g.op(g.users(op.name)[0])
    if user.kind not in EPILOGUES or OPS[user.kind].normalize_attrs(user.attr):
        return None
    return op.with_(results=user.results,
                    attrs={**op.attr, "epilogue": tuple(op.attr.get("epilogue", ())) + (user.kind,)})


# -- quantize-activations and quantize-weights -----------------------------------------------------------

@register_pass("quantize-activations")
@dataclass(frozen=True)
class QuantizeActivations(Pass):
    """qmatmul(x f32, w integer, scale) -> qmatmul_i8(quantize(x, absmax i8), w, x_scale, scale) when the weight
    scale is per tensor or per output channel, so the target's int8 dot product applies."""

    changes_numerics = True

    def run(self, graph: Graph) -> Graph:
        g = graph.copy()
        for node in g.nodes():
            op = g.op(node)
            if op.kind != "qmatmul" or len(op.operands) != 3:
                continue
            x, w, s = op.operands
            x_t, w_t, s_t = (g.type_of(v) for v in (x, w, s))
            a = OPS["qmatmul"].full_attrs(op.attr)
            if x_t.dtype != DTYPES["f32"] or s_t.dtype != DTYPES["f32"] or not w_t.dtype.is_integer:
                continue
            n_axis = 0 if a["transpose_b"] else 1  # the weight's output-channel axis
            per_channel = s_t.rank == 2 and s_t.shape[1 - n_axis] == 1 and a["group"] == 0 and \
                a["axis"] % 2 == 1 - n_axis
            if not (s_t.size == 1 or per_channel):
                continue
            quant = make_op("quantize", [x], [x_t], {"scheme": "absmax", "dtype": "i8"},
                            [g.fresh_name(f"{x}.q"), g.fresh_name(f"{x}.qscale")], None, op.loc)
            g.add_op(quant)
            xq, xs = quant.results
            ws = s
            if per_channel:
                ws = _add(g, "reshape", [s], {"shape": [w_t.shape[n_axis]]}, f"{s}.row", op.loc).name
            new = make_op("qmatmul_i8", [xq.name, w, xs.name, ws],
                          [xq.type, w_t, xs.type, g.type_of(ws)],
                          {"transpose_b": a["transpose_b"], "epilogue": a["epilogue"]}, [op.name], None, op.loc)
            g.replace_op(node, new)
        return g


@register_pass("quantize-weights")
@dataclass(frozen=True)
class QuantizeWeights(Pass):
    """Quantize the float weight params of matmuls: ``quantize`` + ``dequant`` along K."""

    changes_numerics = True
    dtype: str = "i4"
    group: int = 128
    scheme: str = "rtn"
    zero_mode: str = "none"

    def run(self, graph: Graph) -> Graph:
        if self.dtype not in DTYPES:
            raise PipelineError(f"quantize-weights: unknown dtype '{self.dtype}'")
        g = graph.copy()
        weights = weight_values(g)
        for node in g.nodes():
            op = g.op(node)
            if op.kind != "matmul" or op.operands[1] not in weights:
                continue
            w = op.operands[1]
            w_t = g.type_of(w)
            if w_t.rank != 2 or not w_t.dtype.is_float:
                continue
            axis = 1 if op.attr.get("transpose_b", False) else 0
            qattrs = {"scheme": self.scheme, "dtype": self.dtype, "axis": axis, "group": self.group,
                      "zero_mode": self.zero_mode}
            try:
                types = OPS["quantize"].infer([w_t], OPS["quantize"].full_attrs(
                    OPS["quantize"].normalize_attrs(qattrs)))
            except Exception as e:  # InferError: options that do not fit this weight
                raise PipelineError(f"quantize-weights cannot quantize %{w} ({w_t}): {e}", op.loc) from None
            names = [g.fresh_name(f"{w}.{s}") for s in ("codes", "scale", "zero")[:len(types)]]
            q = make_op("quantize", [w], [w_t], qattrs, names, None, op.loc)
            g.add_op(q)
            deq = _add(g, "dequant", [r.name for r in q.results],
                       {"axis": axis, "group": self.group, "zero_mode": self.zero_mode, "dtype": w_t.dtype},
                       f"{w}.dq", op.loc)
            g.replace_op(node, op.with_(operands=(op.operands[0], deq.name)))
        return g


def default_pipeline(target: str = "cpu", threads: int | None = None, tuning: str | None = None) -> str:
    """The passes ``ladder.compile`` runs by default: none of them changes what the graph computes. On cpu
    targets, ``lut{choose=auto}`` turns a low-bit matmul into table lookups where ladder.tuning says they are
    faster for ``threads`` (default: all cores) (exact for int8 activations; f32 ones only sum in another
    order): its cost model, or the records of the ``tuning`` file when one is given. Nothing else is read, so
    the pipeline computes the same graph for the same target every time."""
    opts = f"target={target},choose=auto" + (f",threads={threads}" if threads else "")
    if tuning:
        if target.split(":")[0] != "cpu":
            raise PipelineError(f"tuning records choose cpu kernels; target '{target}' has none to choose")
        if any(c in str(tuning) for c in ",{}"):
            raise PipelineError(f"a tuning file's path cannot hold ',', '{{' or '}}' (it goes in a pipeline "
                                f"string): '{tuning}'")
        opts += f",tuning={tuning}"
    cpu = target.split(":")[0] == "cpu"
    lut = f",lut{{{opts}}}" if cpu else ""
    fuse = "fuse" if cpu else "fuse{int8_blocks=false}"  # qmatmul_q8 is a cpu kernel
    return f"canonicalize,legalize-types{{target={target}}},{fuse}{lut},canonicalize"


__all__ = ["Fuse", "LegalizeTypes", "QuantizeActivations", "QuantizeWeights", "default_pipeline", "weight_values"]
