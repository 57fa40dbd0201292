"""matmul, dequant and quantize."""

from __future__ import annotations

import numpy as np

from .. import quant
from ..types import DTYPES, TensorType
from .base import AttrSpec, InferError, OpDef, broadcast, norm_axis, register, to_f32


@register
class MatMul(OpDef):
    """``a [..., M, K] x b [..., K, N]`` (or ``b [..., N, K]`` with ``transpose_b``), batch dims broadcast.

    Float operands of one type give that type (float32 accumulation). Integer operands of any width
    (i8 activations, ternary/i4/i1 weights, ...) give i32, accumulated in int32 (wrapping), the
    integer path of BitNet-style kernels."""

    name = "matmul"
    operands = ("a", "b")
    attrs = {"transpose_b": AttrSpec("bool", False)}

    def infer(self, types, attrs):
        a, b = types
        if a.rank < 2 or b.rank < 2:
            raise InferError(f"operands must have rank >= 2, got {a} and {b}")
        if a.dtype.is_float and b.dtype.is_float:
            if a.dtype != b.dtype:
                raise InferError(f"float operands must have the same type, got {a} and {b}")
            out = a.dtype
        elif a.dtype.is_integer and b.dtype.is_integer:
            out = DTYPES["i32"]
        else:
            raise InferError(f"operands must be both float or both integer, got {a} and {b}; "
                             f"dequant the integer one first")
        k_b, n = (b.shape[-1], b.shape[-2]) if attrs["transpose_b"] else (b.shape[-2], b.shape[-1])
        if a.shape[-1] != k_b:
            raise InferError(f"inner dimensions differ: {a} has K = {a.shape[-1]}, "
                             f"{b}{' (transposed)' if attrs['transpose_b'] else ''} has K = {k_b}")
        batch = broadcast([a.shape[:-2], b.shape[:-2]])
        return [TensorType(out, batch + (a.shape[-2], n))]

    def compute(self, args, attrs, out, ins):
        a, b = args
        if attrs["transpose_b"]:
            b = np.swapaxes(b, -1, -2)
        if out[0].dtype.is_float:
            return [np.matmul(to_f32(a), to_f32(b)).astype(out[0].dtype.np_dtype)]
        # int64 products summed then wrapped to int32: identical to int32 accumulation with wraparound.
        acc = np.matmul(a.astype(np.int64), b.astype(np.int64))
        return [acc.astype(np.int32)]


class _Granular(OpDef):
    """Shared by dequant and quantize: the (axis, group) granularity convention of ladder.quant."""

    def granularity(self, t: TensorType, attrs) -> tuple[int, int]:
        axis = norm_axis(attrs["axis"], t.rank)
        group = attrs["group"]
        if group < -1:
            raise InferError(f"group must be -1 (per tensor), 0 (per slice) or a size > 0, got {group}")
        return axis, group


@register
class Dequant(_Granular):
    """codes (+ scale, + zero) -> float values; see ladder.quant for granularity and zero modes.

    The scale is either one value (any shape of size 1: per tensor) or has the codes' rank, with
    ``ceil(D / group)`` entries along ``axis`` (``group > 0``) or 1 or D entries (``group = 0``), and 1 or
    the codes' size along every other axis. A zero, when given, has the scale's shape."""

    name = "dequant"
    operands = ("codes", "scale", "zero?")
    attrs = {
        "axis": AttrSpec("int", -1),
        "group": AttrSpec("int", 0),
        "zero_mode": AttrSpec("str", "none", quant.ZERO_MODES),
        "dtype": AttrSpec("dtype", DTYPES["f32"]),
    }

    def infer(self, types, attrs):
        codes, scale = types[0], types[1]
        if codes.dtype.bits > 8:
            raise InferError(f"codes must have a low-bit or 8-bit type, got {codes}")
        if not scale.dtype.is_float:
            raise InferError(f"scale must be float, got {scale}")
        if not attrs["dtype"].is_float:
            raise InferError(f"result dtype must be a float type, got {attrs['dtype']}")
        axis, group = self.granularity(codes, attrs)
        has_zero = len(types) == 3
        if has_zero != (attrs["zero_mode"] != "none"):
            raise InferError("a zero operand goes with zero_mode 'original' or 'rescale', and only with them")
        if group == -1 and scale.size != 1:
            raise InferError(f"group -1 (per tensor) takes one scale, got {scale}")
        if scale.size != 1:
            self._check_scale_shape(codes, scale, axis, group)
        if has_zero and types[2].shape != scale.shape:
            raise InferError(f"zero {types[2]} must have the scale's shape {list(scale.shape)}")
        return [TensorType(attrs["dtype"], codes.shape)]

    @staticmethod
    def _check_scale_shape(codes, scale, axis, group):
        if scale.rank != codes.rank:
            raise InferError(f"scale {scale} must have one value or the codes' rank {codes.rank}")
        d = codes.shape[axis]
        along = {1, d} if group == 0 else {quant.reduced_shape(codes.shape, axis, group)[axis]}
        if scale.shape[axis] not in along:
            raise InferError(f"scale {scale} has {scale.shape[axis]} entries along axis {axis}; "
                             f"expected {' or '.join(map(str, sorted(along)))} for group {group}")
        for i, (s, c) in enumerate(zip(scale.shape, codes.shape)):
            if i != axis and s not in (1, c):
                raise InferError(f"scale {scale} has {s} entries along axis {i}; expected 1 or {c}")

    def compute(self, args, attrs, out, ins):
        codes, scale = args[0], args[1]
        zero = args[2] if len(args) == 3 else None
        axis = attrs["axis"] % codes.ndim
        group = attrs["group"] if np.asarray(scale).size != 1 else -1
        vals = quant.dequantize(codes, ins[0].dtype, to_f32(scale), None if zero is None else to_f32(zero),
                                axis, group, attrs["zero_mode"])
        return [vals.astype(out[0].dtype.np_dtype)]


@register
class Quantize(_Granular):
    """x -> (codes, scale[, zero]) by a recipe of ladder.quant: absmax, absmean or rtn."""

    name = "quantize"
    operands = ("x",)
    attrs = {
        "scheme": AttrSpec("str", choices=quant.SCHEMES),
        "dtype": AttrSpec("dtype"),
        "axis": AttrSpec("int", -1),
        "group": AttrSpec("int", 0),
        "zero_mode": AttrSpec("str", "none", quant.ZERO_MODES),
    }

    def result_count(self, attrs):
        return 2 if attrs.get("zero_mode", "none") == "none" else 3

    def infer(self, types, attrs):
        x = types[0]
        if not x.dtype.is_float:
            raise InferError(f"quantize takes a float tensor, got {x}")
        dt = attrs["dtype"]
        if not dt.is_integer or dt.bits > 8:
            raise InferError(f"quantize produces integer codes of at most 8 bits, not {dt}")
        zm = attrs["zero_mode"]
        if zm != "none" and (attrs["scheme"] != "rtn" or dt.kind != "uint"):
            raise InferError(f"zero_mode '{zm}' needs scheme 'rtn' and an unsigned type (u8, u4, u2)")
        if zm == "none" and dt.kind != "int" and dt.kind != "ternary" and dt.kind != "binary":
            raise InferError(f"symmetric quantization needs a signed type, got {dt}; "
                             f"use zero_mode 'original' or 'rescale' for unsigned types")
        if dt.kind == "binary":
            raise InferError("quantize to i1 is not a recipe here; use ternary or a signed int type")
        axis, group = self.granularity(x, attrs)
        sshape = quant.reduced_shape(x.shape, axis, group)
        scale = TensorType(DTYPES["f32"], sshape)
        return [TensorType(dt, x.shape), scale] + ([scale] if zm != "none" else [])

    def compute(self, args, attrs, out, ins):
        axis = attrs["axis"] % args[0].ndim
        return list(quant.quantize(args[0], attrs["scheme"], attrs["dtype"], axis, attrs["group"],
                                   attrs["zero_mode"]))
