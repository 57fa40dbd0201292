"""Sources (param, const) and element-wise ops: arithmetic, activations, clamp, round, cast."""

from __future__ import annotations

import math

import numpy as np

from ..errors import LadderError
from ..packing import ScaledPacking, get_packing
from ..types import TensorType
from .base import AttrSpec, InferError, OpDef, broadcast, need_float, need_same_dtype, register, to_f32


@register
class Param(OpDef):
    """A weight held outside the program, looked up by ``ref`` in the weights. ``stored`` (optional): the block
    packing its file holds it in (``q4+f16`` for a GGUF Q4_0 tensor); legalize-types packs it in that one where
    its block scales fit, so that the file's bytes are the packed weight (ladder.weights.Blocks)."""

    name = "param"
    attrs = {"ref": AttrSpec("str"), "stored": AttrSpec("str", "")}
    declares_result = True

    def check_declared(self, t, attrs):
        if not attrs["ref"]:
            raise InferError("a param needs a non-empty name")
        if t.layout:
            raise InferError(f"a param holds logical values, not {t}; legalize-types packs it with a 'pack' op")
        if attrs["stored"]:  # the block packing its file stores it in (legalize-types keeps that one)
            try:
                p = get_packing(attrs["stored"])
            except LadderError as e:
                raise InferError(f"stored: {e.message}") from None
            if not isinstance(p, ScaledPacking) or not p.accepts(t.dtype):
                raise InferError(f"stored = \"{attrs['stored']}\" is not a block packing of {t.dtype} "
                                 f"(BASE+SCALE, e.g. nib16+f16)")

    def compute(self, args, attrs, out, ins):  # the interpreter binds params from the weights
        raise InferError("param values come from the weights, not from compute")


@register
class Const(OpDef):
    """A literal tensor written in the program; its array holds values in the type's ``np_dtype``."""

    name = "const"
    attrs = {"value": AttrSpec("data")}
    declares_result = True

    def check_declared(self, t, attrs):
        if t.layout:
            raise InferError(f"a const holds logical values, not {t}")
        arr = attrs["value"].array
        if tuple(arr.shape) != t.shape:
            raise InferError(f"literal has shape {list(arr.shape)} but the type says {t}")
        if not t.dtype.is_float:
            try:
                t.dtype.check(arr, "the literal")
            except LadderError as e:
                raise InferError(e.message) from None

    def compute(self, args, attrs, out, ins):
        return [np.array(attrs["value"].array, dtype=out[0].dtype.np_dtype)]


# -- binary arithmetic ---------------------------------------------------------------------------------

class _Binary(OpDef):
    operands = ("lhs", "rhs")
    fn = staticmethod(np.add)
    floats_only = False

    def infer(self, types, attrs):
        need_same_dtype(types, f"operands of '{self.name}'")
        dt = types[0].dtype
        if self.floats_only:
            need_float(types[0], f"operands of '{self.name}'")
        elif not (dt.is_float or dt.kind in ("int", "uint") and dt.bits >= 8):
            raise InferError(f"'{self.name}' takes float or 8/16/32-bit integer operands, got {dt}; "
                             f"dequant or cast low-bit tensors first")
        return [TensorType(dt, broadcast([t.shape for t in types]))]

    def compute(self, args, attrs, out, ins):
        dt = out[0].dtype
        if dt.is_float:
            return [self.fn(to_f32(args[0]), to_f32(args[1])).astype(dt.np_dtype)]
        with np.errstate(over="ignore"):
            return [self.fn(args[0], args[1]).astype(dt.np_dtype)]


@register
class Add(_Binary):
    name, fn = "add", staticmethod(np.add)


@register
class Sub(_Binary):
    name, fn = "sub", staticmethod(np.subtract)


@register
class Mul(_Binary):
    name, fn = "mul", staticmethod(np.multiply)


@register
class Div(_Binary):
    name, fn, floats_only = "div", staticmethod(np.divide), True

    def compute(self, args, attrs, out, ins):
        with np.errstate(divide="ignore", invalid="ignore"):
            return super().compute(args, attrs, out, ins)


# -- unary ---------------------------------------------------------------------------------------------

class _Unary(OpDef):
    operands = ("x",)
    fn = None  # the numpy function of an op without attributes; the others define f
    floats_only = True

    def infer(self, types, attrs):
        t = types[0]
        if self.floats_only:
            need_float(t, f"the operand of '{self.name}'")
        elif not (t.dtype.is_float or t.dtype.kind == "int" and t.dtype.bits >= 8):
            raise InferError(f"'{self.name}' takes a float or signed 8/16/32-bit integer operand, got {t}")
        return [t]

    def compute(self, args, attrs, out, ins):
        dt = out[0].dtype
        x = args[0]
        if dt.is_float:
            with np.errstate(over="ignore", invalid="ignore"):
                return [np.asarray(self.f(x.astype(np.float64), attrs)).astype(dt.np_dtype)]
        return [np.asarray(self.f(x, attrs)).astype(dt.np_dtype)]

    def f(self, x, attrs):
        return self.fn(x)


@register
class Neg(_Unary):
    name, fn, floats_only = "neg", staticmethod(np.negative), False


@register
class Relu(_Unary):
    name, floats_only = "relu", False

    @staticmethod
    def f(x, attrs):
        return np.maximum(x, 0)


@register
class Relu2(_Unary):
    """Squared ReLU, BitNet b1.58's FFN activation."""

    name = "relu2"

    @staticmethod
    def f(x, attrs):
        r = np.maximum(x, 0)
        return r * r


_erf = np.vectorize(math.erf, otypes=[np.float64])


@register
class Gelu(_Unary):
    name = "gelu"
    attrs = {"approximate": AttrSpec("str", "none", ("none", "tanh"))}

    @staticmethod
    def f(x, attrs):
        if attrs["approximate"] == "tanh":
            return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


@register
class Erf(_Unary):
    name, fn = "erf", staticmethod(_erf)


@register
class Silu(_Unary):
    name = "silu"

    @staticmethod
    def f(x, attrs):
        return x / (1.0 + np.exp(-x))


@register
class Sigmoid(_Unary):
    name = "sigmoid"

    @staticmethod
    def f(x, attrs):
        return 1.0 / (1.0 + np.exp(-x))


@register
class Tanh(_Unary):
    name, fn = "tanh", staticmethod(np.tanh)


@register
class Exp(_Unary):
    name, fn = "exp", staticmethod(np.exp)


@register
class Round(_Unary):
    """Round half to even (IEEE round-to-nearest), as numpy, PyTorch and ONNX do."""

    name, fn = "round", staticmethod(np.rint)


@register
class Clamp(_Unary):
    name, floats_only = "clamp", False
    attrs = {"min": AttrSpec("float", -math.inf), "max": AttrSpec("float", math.inf)}

    def infer(self, types, attrs):
        if attrs["min"] > attrs["max"]:
            raise InferError(f"min {attrs['min']} is greater than max {attrs['max']}")
        return super().infer(types, attrs)

    @staticmethod
    def f(x, attrs):
        lo, hi = attrs["min"], attrs["max"]
        if x.dtype.kind in "iu":
            info = np.iinfo(x.dtype)
            lo = max(math.ceil(lo), info.min) if lo > -math.inf else info.min
            hi = min(math.floor(hi), info.max) if hi < math.inf else info.max
        return np.clip(x, lo, hi)


@register
class Cast(OpDef):
    """Convert element type. To an integer type: round toward zero, then saturate to the type's range.
    To a float type: round to nearest even (ml_dtypes' conversion; out-of-range fp8/fp4 saturate to
    their largest finite value). Binary, ternary and nf4 are not cast targets: use ``quantize``."""

    name = "cast"
    operands = ("x",)
    attrs = {"dtype": AttrSpec("dtype")}

    def infer(self, types, attrs):
        to = attrs["dtype"]
        if to.kind not in ("float", "int", "uint"):
            raise InferError(f"cannot cast to {to}; quantize to it instead")
        if types[0].dtype.kind == "table":
            raise InferError(f"cannot cast from {types[0].dtype} codes; dequant them instead")
        return [types[0].with_dtype(to)]

    def compute(self, args, attrs, out, ins):
        to = out[0].dtype
        x = args[0]
        if to.is_float:
            v = x.astype(np.float32) if x.dtype.kind not in "iub" else (
                x.astype(np.float64) if to.bits >= 32 else _f32_round_to_odd(x.astype(np.float64)))
            if to.bits <= 8:
                lo, hi = to.value_range
                v = np.clip(v, lo, hi)  # ml_dtypes would give NaN for fp8 overflow
            return [v.astype(to.np_dtype)]
        lo, hi = to.value_range
        v = x.astype(np.float64)
        v = np.trunc(np.nan_to_num(v, nan=0.0, posinf=hi, neginf=lo))
        return [np.clip(v, lo, hi).astype(np.int64).astype(to.np_dtype)]


def _f32_round_to_odd(x: np.ndarray) -> np.ndarray:
    """float64 -> float32 rounding to odd: truncate, then set the last bit if inexact. A second rounding
    to any narrower float (bf16, f16, fp8, fp4) then equals one correct rounding of x (no double rounding)."""
    y = x.astype(np.float32)
    away = np.abs(y.astype(np.float64)) > np.abs(x)
    y = np.where(away, np.nextafter(y, np.float32(0)), y)
    inexact = y.astype(np.float64) != x
    bits = y.view(np.uint32) | inexact.astype(np.uint32)
    return bits.view(np.float32)
