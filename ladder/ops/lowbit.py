"""Ops on legalized low-bit tensors: pack, unpack and the fused mixed-precision matmuls.

``qmatmul`` and ``qmatmul_i8`` are defined as compositions of existing ops (their reference semantics call
those ops' semantics), so fusing never changes a result: a backend implements them as one kernel that
decodes the packed weights in registers.
"""

from __future__ import annotations

import numpy as np

from ..types import DTYPES, TensorType
from .base import OPS, AttrSpec, InferError, OpDef, broadcast, need_float, register

# Unary element-wise ops (without required attributes) that may follow a matmul inside its kernel.
EPILOGUES = ("relu", "relu2", "gelu", "silu", "sigmoid", "tanh", "exp", "neg")


def unpacked(arr: np.ndarray, t: TensorType) -> np.ndarray:
    """The logical values of a tensor of type t (decoding it when it is packed)."""
    return t.packing.unpack(arr, t.shape, t.dtype) if t.layout else arr


def block_scales(t: TensorType) -> bool:
    """True when a packed tensor carries its blocks' scales (a layout like nib16+f16)."""
    return t.layout is not None and hasattr(t.packing, "unpack_scales")


@register
class Pack(OpDef):
    """A low-bit tensor -> its storage in a packing (ladder.packing); run once on weights. A layout with
    block scales (``nib16+f16``) takes the scales (and zeros) too: one per block along the last axis."""

    name = "pack"
    operands = ("x", "scale?", "zero?")
    attrs = {"layout": AttrSpec("str")}

    def infer(self, types, attrs):
        x = types[0]
        if not x.dtype.is_low_bit and x.dtype.name != "i8":  # i8: only as Q8_0's blocks (q8)
            raise InferError(f"only low-bit tensors (and i8 in q8 blocks) are packed, got {x}")
        from ..errors import LadderError

        try:
            t = TensorType(x.dtype, x.shape, attrs["layout"])
        except LadderError as e:
            raise InferError(e.message) from None
        p = t.packing
        want = (1 + p.zero) if block_scales(t) else 0
        if len(types) - 1 != want:
            raise InferError(f"layout {p.name} takes {want} scale/zero operand(s), got {len(types) - 1}")
        for s, role in zip(types[1:], ("scale", "zero")):
            shape = p.scale_shape(x.shape)
            if s.dtype != p.scale or s.shape != shape:
                raise InferError(f"{role} must be {p.scale}{list(shape)} for layout {p.name}, got {s}")
        return [t]

    def compute(self, args, attrs, out, ins):
        return [out[0].packing.pack(*args[:1], out[0].dtype, *args[1:])]


@register
class Unpack(OpDef):
    """A packed tensor -> its logical values (the decode a kernel does in registers)."""

    name = "unpack"
    operands = ("x",)
    packed_operands = ("x",)

    def infer(self, types, attrs):
        if not types[0].layout:
            raise InferError(f"{types[0]} is not packed")
        return [types[0].logical]

    def compute(self, args, attrs, out, ins):
        return [unpacked(args[0], ins[0])]


def _check_epilogue(attrs):
    bad = [e for e in attrs["epilogue"] if e not in EPILOGUES]
    if bad:
        raise InferError(f"epilogue {bad[0]!r} is not one of {', '.join(EPILOGUES)}")


def _apply_epilogue(y: np.ndarray, t: TensorType, attrs) -> np.ndarray:
    for kind in attrs["epilogue"]:
        opdef = OPS[kind]
        (y,) = opdef.compute([y], opdef.full_attrs({}), [t], [t])
    return y


@register
class QMatMul(OpDef):
    """Mixed-precision matmul: ``epilogue(matmul(x, dequant(w, scale[, zero])))`` with the dequant's
    axis, group and zero mode, x float and w low-bit codes, packed or not. When w's layout carries its
    block scales (``nib16+f16``), there is no scale operand: the scales come from w, one per block along
    its last axis (so ``axis = -1`` and ``group`` = the block)."""

    name = "qmatmul"
    operands = ("x", "w", "scale?", "zero?")
    packed_operands = ("w",)
    attrs = {
        "transpose_b": AttrSpec("bool", False),
        "axis": AttrSpec("int", -1),
        "group": AttrSpec("int", 0),
        "zero_mode": AttrSpec("str", "none", ("none", "original", "rescale")),
        "epilogue": AttrSpec("strs", ()),
    }

    def _dequant_attrs(self, attrs, x: TensorType):
        return {"axis": attrs["axis"], "group": attrs["group"], "zero_mode": attrs["zero_mode"], "dtype": x.dtype}

    def infer(self, types, attrs):
        x, w = types[0], types[1]
        need_float(x, "x")
        _check_epilogue(attrs)
        scales = list(types[2:])
        if block_scales(w):
            p = w.packing
            if scales:
                raise InferError(f"w ({w}) carries its scales; no scale operand goes with it")
            if attrs["axis"] % w.rank != w.rank - 1 or attrs["group"] != p.block:
                raise InferError(f"w's block scales need axis = -1 and group = {p.block}")
            scales = [TensorType(p.scale, p.scale_shape(w.shape))] * (1 + p.zero)
        elif not scales:
            raise InferError("qmatmul needs a scale operand unless w carries its block scales")
        deq = OPS["dequant"].infer([w.logical] + scales, self._dequant_attrs(attrs, x))[0]
        return OPS["matmul"].infer([x, deq], {"transpose_b": attrs["transpose_b"]})

    def compute(self, args, attrs, out, ins):
        x, w = args[0], unpacked(args[1], ins[1])
        scales, scale_types = list(args[2:]), list(ins[2:])
        if block_scales(ins[1]):
            s, z = ins[1].packing.unpack_scales(args[1], ins[1].shape)
            scales = [s] + ([z] if z is not None else [])
            scale_types = [TensorType(ins[1].packing.scale, s.shape)] * len(scales)
        dattrs = self._dequant_attrs(attrs, ins[0])
        deq_t = TensorType(ins[0].dtype, ins[1].shape)
        (v,) = OPS["dequant"].compute([w] + scales, dattrs, [deq_t], [ins[1].logical] + scale_types)
        (y,) = OPS["matmul"].compute([x, v], {"transpose_b": attrs["transpose_b"]}, out, [ins[0], deq_t])
        return [_apply_epilogue(y, out[0], attrs)]


@register
class QMatMulI8(OpDef):
    """The integer path (BitNet's BitLinear): ``epilogue(f32(matmul(x, w)) * s1 * s2)``, x int8 codes
    (e.g. per-token absmax), w integer low-bit codes packed or not, accumulated in int32; s1 and s2 are
    float scales broadcast to the result (typically the activations' per-token and the weights' scale)."""

    name = "qmatmul_i8"
    operands = ("x", "w", "s1", "s2")
    packed_operands = ("w",)
    attrs = {"transpose_b": AttrSpec("bool", False), "epilogue": AttrSpec("strs", ())}

    def infer(self, types, attrs):
        x, w, s1, s2 = types
        if x.dtype.name not in ("i8", "u8") and not (x.dtype.is_integer and x.dtype.bits < 8):
            raise InferError(f"x must be 8-bit or narrower integer codes, got {x}")
        if not w.dtype.is_integer or w.dtype.bits > 8:
            raise InferError(f"w must be integer low-bit or 8-bit codes, got {w}")
        _check_epilogue(attrs)
        (acc,) = OPS["matmul"].infer([x, w.logical], {"transpose_b": attrs["transpose_b"]})
        for s, role in ((s1, "s1"), (s2, "s2")):
            if s.dtype != DTYPES["f32"]:
                raise InferError(f"{role} must be f32, got {s}")
        shape = broadcast([acc.shape, s1.shape, s2.shape])
        if shape != acc.shape:
            raise InferError(f"scales {s1} and {s2} must broadcast to the result {list(acc.shape)}")
        return [TensorType(DTYPES["f32"], acc.shape)]

    def compute(self, args, attrs, out, ins):
        x, w, s1, s2 = args
        acc_t = TensorType(DTYPES["i32"], out[0].shape)
        (acc,) = OPS["matmul"].compute([x, unpacked(w, ins[1])], {"transpose_b": attrs["transpose_b"]},
                                       [acc_t], [ins[0], ins[1].logical])
        cast, mul = OPS["cast"], OPS["mul"]
        (y,) = cast.compute([acc], {"dtype": out[0].dtype}, out, [acc_t])
        (y,) = mul.compute([y, s1], {}, out, [out[0], ins[2]])
        (y,) = mul.compute([y, s2], {}, out, [out[0], ins[3]])
        return [_apply_epilogue(y, out[0], attrs)]


def x_scale_per_superblock(types, attrs) -> bool:
    """Whether a ``qmatmul_q8``'s sx holds one scale per super-block of ``group * scale_group`` (Q8_K's) rather
    than one per group (the shapes tell when K is more than one group)."""
    from ..quant import reduced_shape

    sg = attrs.get("scale_group", 0)
    x, sx = types[0], types[1]
    g = attrs.get("group", 32)
    return bool(sg) and sx.shape == reduced_shape(x.shape, x.rank - 1, g * sg) and (
        sx.shape != reduced_shape(x.shape, x.rank - 1, g))


@register
class QMatMulQ8(OpDef):
    """llama.cpp's Q8_0 dot products: int8 activation codes ``x [..., M, K]`` with one float scale per
    ``group`` along K (``sx [..., M, ceil(K / group)]``, e.g. from ``quantize {absmax, i8, group = 32}``) times
    weights ``w [N, K]``, integer codes (packed or not) with one float scale per ``group`` along K (``sw
    [N, ceil(K / group)]``, or inside w's packing, ``nib32+f16``):
    ``epilogue(matmul(dequant(max(x, -127), sx), dequant(w, sw), transpose_b = true))`` in f32.

    x's codes are read clipped to -127..127: absmax quantization never gives -128 and llama.cpp's Q8_0 blocks
    hold none, so a kernel may multiply |w| by x with w's sign (one unsigned x signed byte product). The
    result is the composition's, up to float summation order: a kernel sums each block's integer dot product
    exactly and scales it by both blocks' scales.

    ``scale_group = G`` (> 0): w's scales are themselves quantized, as a K-quant's are (an integer sub-scale per
    group times an f32 per super-block): ``sw`` is i8 codes and ``sd [N, ceil(K / group / G)]`` their f32 scale,
    one per G of them; w's scale is ``dequant(sw, sd, group = G)`` (``f32(sw) * sd``, exact for a 6- or 8-bit
    code times an f16 value). With it, w may have zeros the same way (``zw`` i8 codes as sw, ``zd`` f32 as sd;
    a K-quant's mins: w = q * scale - zero): the result is then the product above less ``(x's dequantized values
    summed per group) @ dequant(zw, zd, group = G).T``, before the epilogue. A kernel may take each group's sum
    as sx * (the sum of its codes), exact in int32 and rounded once: the same up to float rounding. With
    ``scale_group``, sx may also hold one scale per super-block (``[..., M, ceil(K / (group * G))]``: llama.cpp's
    Q8_K activations, one f32 per 256): x is then ``dequant(x, sx, group = group * G)``, and a kernel may sum a
    super-block's integer products times w's i8 sub-scales exactly in int32 before any float rounding."""

    name = "qmatmul_q8"
    operands = ("x", "sx", "w", "sw?", "sd?", "zw?", "zd?")
    packed_operands = ("w",)
    attrs = {"group": AttrSpec("int", 32), "scale_group": AttrSpec("int", 0), "epilogue": AttrSpec("strs", ())}

    def infer(self, types, attrs):
        from ..quant import reduced_shape

        x, sx, w = types[0], types[1], types[2]
        g = attrs["group"]
        _check_epilogue(attrs)
        if g <= 0:
            raise InferError(f"group must be a size > 0, got {g}")
        if x.dtype.name != "i8" or x.rank < 2:
            raise InferError(f"x must be i8 codes of rank >= 2, got {x}")
        if w.rank != 2 or not w.dtype.is_integer or w.dtype.bits > 8:
            raise InferError(f"w must be 2-D integer codes of at most 8 bits, got {w}")
        scales = list(types[3:])
        if block_scales(w):
            if scales:
                raise InferError(f"w ({w}) carries its scales; no sw goes with it")
            if w.packing.zero or g != w.packing.block:
                raise InferError(f"w's block scales need group = {w.packing.block} and no zeros")
        elif not scales:
            raise InferError("qmatmul_q8 needs sw unless w carries its block scales")
        sg = attrs["scale_group"]
        if sg < 0:
            raise InferError(f"scale_group must be 0 (sw as given) or a size > 0, got {sg}")
        if sg and len(scales) not in (2, 4):
            raise InferError(f"scale_group = {sg} needs sw (i8 codes) and sd (their f32 scales)")
        if len(scales) == 3 or len(scales) == 4 and not sg:
            raise InferError("zeros (zw, zd) go with scale_group > 0, after sw and sd")
        if len(scales) == 4 and x.shape[-1] % g:
            raise InferError(f"zeros need K ({x.shape[-1]}) a whole number of groups of {g}")
        if not sg and len(scales) > 1:
            raise InferError("sd (the scales of sw's codes) goes with scale_group > 0")
        if sg:
            want = reduced_shape(w.shape, 1, g)
            want_d = reduced_shape(want, 1, sg)
            for i in range(0, len(scales), 2):
                cw, cd = scales[i:i + 2]
                role = ("sw", "sd") if i == 0 else ("zw", "zd")
                if cw.dtype.name != "i8" or cw.shape != want:
                    raise InferError(f"{role[0]} must be i8 codes {list(want)} for {w} and group {g}, got {cw}")
                if cd.dtype.name != "f32" or cd.shape != want_d:
                    raise InferError(f"{role[1]} must be f32 {list(want_d)} for {role[0]} {cw} and scale_group {sg}, "
                                     f"got {cd}")
            scales = []
            if sx.shape == reduced_shape(x.shape, x.rank - 1, g * sg):  # x's scale per super-block
                if sx.dtype.name not in ("f16", "bf16", "f32"):
                    raise InferError(f"sx must be f16, bf16 or f32, got {sx}")
                sx = None
        for s, t, role in ((sx, x, "sx"), *((sw, w, "sw") for sw in scales)):
            if s is None:
                continue
            want = reduced_shape(t.shape, t.rank - 1, g)
            if s.dtype.name not in ("f16", "bf16", "f32") or s.shape != want:
                raise InferError(f"{role} must be f16, bf16 or f32 {list(want)} for {t} and group {g}, got {s}")
        f32 = DTYPES["f32"]
        return OPS["matmul"].infer([TensorType(f32, x.shape), TensorType(f32, w.shape)], {"transpose_b": True})

    def compute(self, args, attrs, out, ins):
        from .base import to_f32

        f32 = DTYPES["f32"]
        deq = OPS["dequant"]
        g = attrs["group"]
        x = np.maximum(args[0], np.int8(-127))
        dattrs = {"axis": -1, "group": g, "zero_mode": "none", "dtype": f32}
        xg = g * attrs["scale_group"] if x_scale_per_superblock(ins, attrs) else g
        (xv,) = deq.compute([x, to_f32(args[1])], {**dattrs, "group": xg}, [TensorType(f32, ins[0].shape)],
                            [ins[0], TensorType(f32, ins[1].shape)])
        w = unpacked(args[2], ins[2])
        if block_scales(ins[2]):
            sw, _ = ins[2].packing.unpack_scales(args[2], ins[2].shape)
        elif attrs["scale_group"]:
            (sw,) = deq.compute([args[3], args[4]], {**dattrs, "group": attrs["scale_group"]},
                                [TensorType(f32, ins[3].shape)], [ins[3], ins[4]])
        else:
            sw = args[3]
        sw_t = TensorType(f32, np.shape(sw))
        (wv,) = deq.compute([w, to_f32(sw)], dattrs, [TensorType(f32, ins[2].shape)], [ins[2].logical, sw_t])
        (y,) = OPS["matmul"].compute([xv, wv], {"transpose_b": True}, out,
                                     [TensorType(f32, ins[0].shape), TensorType(f32, ins[2].shape)])
        if len(args) == 7:  # less (x's dequantized sums per group) @ zeros.T, as the unfused graph computes it
            k = ins[0].shape[-1]
            sums = np.sum(xv.reshape(xv.shape[:-1] + (k // g, g)), axis=(xv.ndim,)).astype(np.float32)
            (z,) = deq.compute([args[5], args[6]], {**dattrs, "group": attrs["scale_group"]},
                               [TensorType(f32, ins[5].shape)], [ins[5], ins[6]])
            (t,) = OPS["matmul"].compute([sums, z], {"transpose_b": True}, out,
                                         [TensorType(f32, sums.shape), TensorType(f32, z.shape)])
            y = (y - t).astype(np.float32)
        return [_apply_epilogue(y, out[0], attrs)]
