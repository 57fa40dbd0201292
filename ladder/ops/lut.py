"""Table-lookup matmul (T-MAC): ``lut_precompute`` on the activations, ``lut_matmul`` over bit-plane weights.

A low-bit weight value is ``w = a * o + c`` where ``o = sum_b 2^b bit_b`` is its offset-binary code over
``P = bits`` planes (``weight_form``: a = 2, c = -1 for i1's {-1, +1}; a = 1 and c = the type's minimum for
ternary, i2, i4, u*). For a group of ``g`` activations x_0 .. x_{g-1} the *symmetric* table holds, for every
index i < 2^g, ``T[i] = sum_t (2 bit_t(i) - 1) x_t``; only the 2^(g-1) entries whose top bit is 0 are summed,
the others come from mirror consolidation ``T[~i] = -T[i]``. With S the sum of all of x's row and U the
lookups over the planes, ``U = sum_b 2^b sum_j T_j[idx_bj]``, the dot product is exactly

    sum_k w_k x_k = (a U + beta S) / 2,       beta = a (2^P - 1) + 2 c

(``beta`` folds the offset of signed and ternary codes into the activation sum).

``lut_precompute %x {g = 4, quantize = false, act_group = 0}`` (x: ``[..., K]``, G = ceil(K / g) groups, the
last one padded with zero activations, E = 2^g):

* x i8 (exact, int16 entries; |T| <= 512): ``table : i8[..., G, 2, E]`` byte-split as T-MAC keeps int16
  tables for byte shuffles: ``T = (table[..., 0, :] & 0xFF) + 256 * table[..., 1, :]``; ``sum : i32[..., 1]``;
* x f32: ``table : f32[..., G, E]``, ``sum : f32[..., 1]`` (summed in order, k = 0 .. K-1);
* x f32 with ``quantize = true``: ``table : i8[..., G, E]`` = rint(T / scale) clipped to +-127, with one
  ``scale : f32[..., NS]`` = max |T| / 127 per *activation group* of ``act_group`` activations (a multiple of g;
  0: the whole row; NS = ceil(G / (act_group / g))), then ``sum : f32[..., 1]``. Results: table, sum, scale.

Float entries are summed left to right (``((+-x0 +- x1) +- x2) +- x3``); a backend doing the same is bit-exact.

``lut_matmul %table, %sum, %w, %s1, %s2 [, %scale] {n, rows = 32, g = 4, act_group = 0, fast_aggregation =
false, epilogue = [], unroll = 1}`` -> ``f32[..., n]``: ``epilogue(f32(dot) * s1 * s2)`` with the dot above
(``unroll`` is a schedule hint for kernels, not semantics). ``w`` holds the weights of n rows (``[n, K]``)
*interleaved for a shuffle of ``rows`` lanes*: rows padded to NB = ceil(n / rows)
blocks, K to G * g, then ``[NB, rows, G, g] -> transpose(0, 2, 1, 3) -> [NB, G * rows * g]``, so that in the
``planes`` packing the g-bit indices of one group for one block of rows are rows * g / 8 consecutive bytes
(the lut pass builds this from the original weight with reshape/transpose/concat, once, at compile time).
Padding weights are arbitrary: their activations are 0 and padded rows are never returned.
Aggregation: entries are summed per plane in order over the groups (float tables: in f32, then
``((U_0 + 2 U_1) + 4 U_2) + ...``); with quantized tables the integer sum U_sg of each activation group is
scaled, ``acc = acc + f32(U_sg) * scale_sg`` in order; then ``((a * acc) + beta * S) * 0.5``.
``fast_aggregation`` (quantized tables only, T-MAC's): the entries of each pair of consecutive groups of an
activation group are combined as ``2 * floor((e0 + e1 + 1) / 2)`` (a byte ``pavgb``, no widening), a last
unpaired group as it is: each pair adds an error in [0, 1] table units.
"""

from __future__ import annotations

import numpy as np

from ..types import DTYPES, DType, TensorType
from .base import AttrSpec, InferError, OpDef, broadcast, register
from .lowbit import _apply_epilogue, _check_epilogue, unpacked

LUT_DTYPES = ("i1", "u1", "i2", "u2", "ternary", "i4", "u4")
GROUP_SIZES = (1, 2, 4)  # g divides 8: a group's indices never straddle a byte
EXACT_LIMIT = 512  # the largest |T| of an exact table: 4 * 128 (kernels size their int16 sums by it)


def weight_form(dt: DType) -> tuple[int, int]:
    """(a, c) with value = a * offset_code + c."""
    if dt.kind == "binary":
        return 2, -1
    if dt.kind == "ternary":
        return 1, -1
    if dt.kind == "int":
        return 1, -(1 << (dt.bits - 1))
    return 1, 0


def beta(dt: DType) -> int:
    a, c = weight_form(dt)
    return a * ((1 << dt.bits) - 1) + 2 * c


def groups_per_scale(act_group: int, g: int, n_groups: int) -> int:
    return act_group // g if act_group else max(n_groups, 1)


def _check_g(g: int) -> None:
    if g not in GROUP_SIZES:
        raise InferError(f"g must be one of {', '.join(map(str, GROUP_SIZES))} (a group's index in one byte), got {g}")


def _check_act_group(act_group: int, g: int) -> None:
    if act_group < 0 or act_group % g:
        raise InferError(f"act_group must be 0 (the whole row) or a positive multiple of g = {g}, got {act_group}")


# -- reference helpers ---------------------------------------------------------------------------------------

def sign_matrix(g: int) -> np.ndarray:
    """[2^g, g]: entry (i, t) = 2 bit_t(i) - 1."""
    i = np.arange(1 << g)[:, None]
    return ((i >> np.arange(g)[None, :]) & 1) * 2 - 1


def symmetric_tables(x: np.ndarray, g: int) -> np.ndarray:
    """x [..., K] (f32 or integer) -> T [..., G, 2^g], summed left to right; half by mirror consolidation."""
    k = x.shape[-1]
    n_groups = -(-k // g)
    acc_t = np.float32 if x.dtype.kind == "f" else np.int32
    xp = np.zeros(x.shape[:-1] + (n_groups * g,), acc_t)
    xp[..., :k] = x
    xg = xp.reshape(x.shape[:-1] + (n_groups, g))
    half = 1 << (g - 1)
    signs = sign_matrix(g)[:half]
    low = xg[..., None, 0] * signs[:, 0].astype(acc_t)
    for t in range(1, g):
        low = low + xg[..., None, t] * signs[:, t].astype(acc_t)
    return np.concatenate([low, -low[..., ::-1]], axis=-1)  # T[2^g - 1 - i] = -T[i]


def sequential_sum(x: np.ndarray) -> np.ndarray:
    """The row sums [..., 1], in order (f32) or exactly (integers)."""
    if x.dtype.kind == "f":
        return np.cumsum(x.astype(np.float32), axis=-1, dtype=np.float32)[..., -1:]
    return x.astype(np.int32).sum(axis=-1, keepdims=True, dtype=np.int32)


def quantize_tables(t: np.ndarray, gps: int) -> tuple[np.ndarray, np.ndarray]:
    """f32 tables [..., G, E] -> (i8 tables, f32 scales [..., NS]), one scale per gps groups."""
    n_groups = t.shape[-2]
    ns = -(-n_groups // gps)
    pad = np.zeros(t.shape[:-2] + (ns * gps - n_groups, t.shape[-1]), np.float32)
    blocks = np.concatenate([t, pad], axis=-2).reshape(t.shape[:-2] + (ns, gps * t.shape[-1]))
    scale = (np.abs(blocks).max(axis=-1) / np.float32(127)).astype(np.float32)
    per_group = np.repeat(scale, gps, axis=-1)[..., :n_groups, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(per_group > 0, np.clip(np.rint(t / per_group), -127, 127), 0)
    return q.astype(np.int8), scale


def split_bytes(t: np.ndarray) -> np.ndarray:
    """int16-range tables [..., G, E] -> i8 [..., G, 2, E] (low byte, high byte)."""
    lo = (t & 0xFF).astype(np.uint8).view(np.int8)
    hi = (t >> 8).astype(np.int8)
    return np.stack([lo, hi], axis=-2)


def join_bytes(t: np.ndarray) -> np.ndarray:
    return (t[..., 0, :].view(np.uint8).astype(np.int32) + 256 * t[..., 1, :].astype(np.int32))


def plane_indices(w: np.ndarray, dt: DType, n: int, rows: int, g: int) -> np.ndarray:
    """Interleaved weight values [NB, G * rows * g] -> g-bit indices [P, n, G] of every plane."""
    a, c = weight_form(dt)
    nb, width = w.shape
    n_groups = width // (rows * g)
    o = (w.astype(np.int16) - c) // a
    o = o.reshape(nb, n_groups, rows, g).transpose(0, 2, 1, 3).reshape(nb * rows, n_groups, g)[:n]
    shifts = np.arange(g, dtype=np.int16)
    return np.stack([(((o >> b) & 1) << shifts).sum(axis=-1) for b in range(dt.bits)]).astype(np.intp)


def aggregate(entries: np.ndarray, fast: bool) -> np.ndarray:
    """Integer entries [n, G'] -> their sum [n] (int64), pairs by rounding average when ``fast``."""
    if not fast:
        return entries.sum(axis=-1, dtype=np.int64)
    e = entries.astype(np.int64)
    pairs = e.shape[-1] // 2
    avg = (e[:, 0:2 * pairs:2] + e[:, 1:2 * pairs:2] + 1) >> 1
    return 2 * avg.sum(axis=-1) + e[:, 2 * pairs:].sum(axis=-1)


# -- ops ---------------------------------------------------------------------------------------------------

def table_types(x: TensorType, g: int, quantize: bool, act_group: int) -> list[TensorType]:
    """lut_precompute's results for activations x."""
    batch, k = x.shape[:-1], x.shape[-1]
    n_groups, e = -(-k // g), 1 << g
    if x.dtype.name == "i8":
        return [TensorType(DTYPES["i8"], batch + (n_groups, 2, e)), TensorType(DTYPES["i32"], batch + (1,))]
    f32 = DTYPES["f32"]
    if not quantize:
        return [TensorType(f32, batch + (n_groups, e)), TensorType(f32, batch + (1,))]
    ns = -(-n_groups // groups_per_scale(act_group, g, n_groups))
    return [TensorType(DTYPES["i8"], batch + (n_groups, e)), TensorType(f32, batch + (1,)),
            TensorType(f32, batch + (ns,))]


@register
class LutPrecompute(OpDef):
    """Activations -> T-MAC tables: results table, sum (table, sum, scale with quantize).

    x is i8 codes (exact tables) or f32; the forms are in the module docstring."""

    name = "lut_precompute"
    operands = ("x",)
    attrs = {"g": AttrSpec("int", 4), "quantize": AttrSpec("bool", False), "act_group": AttrSpec("int", 0)}

    def result_count(self, attrs):
        return 3 if attrs.get("quantize", False) else 2

    def infer(self, types, attrs):
        (x,) = types
        g, quantize, act_group = attrs["g"], attrs["quantize"], attrs["act_group"]
        _check_g(g)
        _check_act_group(act_group, g)
        if x.dtype.name not in ("i8", "f32"):
            raise InferError(f"x must be i8 codes or f32 activations, got {x}")
        if x.rank < 1 or x.shape[-1] < 1:
            raise InferError(f"x must have a non-empty last axis (K), got {x}")
        if quantize and x.dtype.name != "f32":
            raise InferError(f"quantize applies to f32 activations; i8 tables are exact already, got {x}")
        if act_group and not quantize:
            raise InferError("act_group is the group of a quantized table's scale; it needs quantize = true")
        return table_types(x, g, quantize, act_group)

    def compute(self, args, attrs, out, ins):
        x = args[0]
        g = attrs["g"]
        t = symmetric_tables(x, g)
        s = sequential_sum(x)
        if x.dtype == np.int8:
            return [split_bytes(t), s]
        if not attrs["quantize"]:
            return [t, s]
        q, scale = quantize_tables(t, groups_per_scale(attrs["act_group"], g, t.shape[-2]))
        return [q, s, scale]


@register
class LutMatMul(OpDef):
    """Table-lookup matmul over bit planes: epilogue(f32(dot) * s1 * s2), f32[..., n].

    ``w`` is interleaved for ``rows`` lanes, packed in ``planes`` or not; see the module docstring."""

    name = "lut_matmul"
    operands = ("table", "sum", "w", "s1", "s2", "scale?")
    packed_operands = ("w",)
    attrs = {
        "n": AttrSpec("int"),
        "rows": AttrSpec("int", 32),
        "g": AttrSpec("int", 4),
        "act_group": AttrSpec("int", 0),
        "fast_aggregation": AttrSpec("bool", False),
        "epilogue": AttrSpec("strs", ()),
        "unroll": AttrSpec("int", 1),  # groups per step of a kernel's loop: a schedule hint, not semantics
    }

    @staticmethod
    def mode(types) -> str:
        """'exact' (byte-split i8 tables), 'quantized' (i8 tables + scale) or 'float' (f32 tables)."""
        if len(types) == 6:
            return "quantized"
        return "exact" if types[0].dtype.name == "i8" else "float"

    def infer(self, types, attrs):
        table, tsum, w, s1, s2 = types[:5]
        g, n, rows, act_group = attrs["g"], attrs["n"], attrs["rows"], attrs["act_group"]
        _check_g(g)
        _check_act_group(act_group, g)
        _check_epilogue(attrs)
        mode = self.mode(types)
        e = 1 << g
        want = {"exact": ("i8", 3, "i32"), "quantized": ("i8", 2, "f32"), "float": ("f32", 2, "f32")}[mode]
        if table.dtype.name != want[0] or table.rank < want[1] or table.shape[-1] != e or \
                (mode == "exact" and table.shape[-2] != 2):
            form = {"exact": f"i8[..., G, 2, {e}] (exact, byte-split)", "quantized": f"i8[..., G, {e}] with a scale",
                    "float": f"f32[..., G, {e}]"}[mode]
            raise InferError(f"table must be {form} for g = {g}, got {table}")
        batch = table.shape[:-want[1]]
        n_groups = table.shape[len(batch)]
        if tsum != TensorType(DTYPES[want[2]], batch + (1,)):
            raise InferError(f"sum must be {want[2]}{list(batch + (1,))} for this table, got {tsum}")
        if w.dtype.name not in LUT_DTYPES or (w.layout and w.layout != "planes"):
            raise InferError(f"w must be {', '.join(LUT_DTYPES)} weights, in the planes packing or unpacked, got {w}")
        if attrs["unroll"] not in (1, 2, 4, 8):
            raise InferError(f"unroll must be 1, 2, 4 or 8, got {attrs['unroll']}")
        if n < 1 or rows < 8 or rows % 8:
            raise InferError(f"n must be >= 1 and rows a positive multiple of 8, got n = {n}, rows = {rows}")
        w_shape = (-(-n // rows), n_groups * rows * g)
        if w.shape != w_shape:
            raise InferError(f"w must be the {n} x {n_groups * g} weights interleaved for {rows} rows: "
                             f"{w.dtype}{list(w_shape)}, got {w}")
        if attrs["fast_aggregation"] and mode != "quantized":
            raise InferError("fast_aggregation averages int8 entries: it needs quantized tables (a scale operand)")
        if act_group and mode != "quantized":
            raise InferError("act_group describes a quantized table's scales; this table has none")
        out = TensorType(DTYPES["f32"], batch + (n,))
        for s, role in ((s1, "s1"), (s2, "s2")):
            if s.dtype.name != "f32":
                raise InferError(f"{role} must be f32, got {s}")
        if broadcast([out.shape, s1.shape, s2.shape]) != out.shape:
            raise InferError(f"scales {s1} and {s2} must broadcast to the result {list(out.shape)}")
        if mode == "quantized":
            ns = -(-n_groups // groups_per_scale(act_group, g, n_groups))
            if types[5] != TensorType(DTYPES["f32"], batch + (ns,)):
                raise InferError(f"scale must be f32{list(batch + (ns,))} (act_group = {act_group}), got {types[5]}")
        return [out]

    def compute(self, args, attrs, out, ins):
        mode = self.mode(ins)
        g, n, rows = attrs["g"], attrs["n"], attrs["rows"]
        dt = ins[2].dtype
        a, b_ = weight_form(dt), beta(dt)
        idx = plane_indices(unpacked(args[2], ins[2]), dt, n, rows, g)
        table = join_bytes(args[0]) if mode == "exact" else args[0]
        batch = out[0].shape[:-1]
        n_groups = table.shape[-2]
        tab = table.reshape((-1,) + table.shape[-2:])
        sums = args[1].reshape(-1)
        scales = args[5].reshape(len(tab), -1) if mode == "quantized" else None
        gps = groups_per_scale(attrs["act_group"], g, n_groups)
        cols = np.arange(n_groups)
        dots = np.empty((len(tab), n), np.int64 if mode == "exact" else np.float32)
        for m in range(len(tab)):
            entries = [tab[m][cols, idx[b]] for b in range(dt.bits)]  # each [n, G]
            if mode == "exact":
                u = sum(e.sum(axis=-1, dtype=np.int64) << b for b, e in enumerate(entries))
                dots[m] = (a[0] * u + b_ * int(sums[m])) // 2
                continue
            if mode == "float":
                acc = np.zeros(n, np.float32)
                for b, e in enumerate(entries):
                    plane = np.cumsum(e, axis=-1, dtype=np.float32)[:, -1]
                    acc = plane if b == 0 else acc + plane * np.float32(1 << b)
            else:
                acc = np.zeros(n, np.float32)
                for sg in range(-(-n_groups // gps)):
                    part = slice(sg * gps, min(n_groups, (sg + 1) * gps))
                    u = sum(aggregate(e[:, part], attrs["fast_aggregation"]) << b for b, e in enumerate(entries))
                    acc = acc + u.astype(np.float32) * scales[m, sg]
            dots[m] = (acc * np.float32(a[0]) + np.float32(b_) * sums[m]) * np.float32(0.5)
        y = dots.astype(np.float32).reshape(batch + (n,))
        y = (y * args[3]).astype(np.float32) * args[4]
        return [_apply_epilogue(y.astype(np.float32), out[0], attrs)]


def quantization_error_bound(x: np.ndarray, dt: DType, g: int, act_group: int, fast: bool) -> np.ndarray:
    """The largest |dot(int8 tables) - dot(exact)| (before s1, s2) per row of f32 activations x [..., K] for
    weights of type dt, as lut_matmul computes it (float rounding aside): every entry is off by at most
    scale/2 (round to nearest), and with fast aggregation each pair by one more unit, so
    (a / 2) * sum_sg scale_sg * G_sg * (2^P - 1) * (1 / 2 + [fast] / 2)."""
    t = symmetric_tables(x.astype(np.float32), g)
    n_groups = t.shape[-2]
    gps = groups_per_scale(act_group, g, n_groups)
    _, scale = quantize_tables(t, gps)
    sizes = np.minimum(gps, n_groups - gps * np.arange(scale.shape[-1]))
    a = weight_form(dt)[0]
    per = (scale.astype(np.float64) * sizes).sum(axis=-1)
    return a / 2 * per * ((1 << dt.bits) - 1) * (1.0 if fast else 0.5)


def interleaved_shape(n: int, k: int, rows: int, g: int) -> tuple[int, int]:
    """The shape of lut_matmul's w for n x k weights."""
    return -(-n // rows), -(-k // g) * rows * g


__all__ = ["LUT_DTYPES", "LutMatMul", "LutPrecompute", "beta", "interleaved_shape", "quantization_error_bound",
           "weight_form"]
