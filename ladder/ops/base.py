"""How an op is declared: operands, attributes, type inference and numpy reference semantics in one class.

An op definition is a subclass of ``OpDef`` registered with ``@register``. Operand names may end in ``?``
(optional, only at the end) or start with ``*`` (variadic, the only operand). ``infer`` maps operand types
and attributes to result types and raises ``InferError`` with a plain message; the verifier adds the op and
its location. ``compute`` is the reference semantics: numpy arrays in (held in each type's ``np_dtype``),
numpy arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ..errors import LadderError, Location
from ..types import DType, TensorType, dtype as lookup_dtype

REQUIRED = object()
# Every NaN attribute is this one object: tuples compare items by identity first, so ops holding a NaN
# attribute compare equal to their re-parse.
CANONICAL_NAN = float("nan")


class InferError(Exception):
    """Raised by an op's ``infer`` or ``compute``; the caller adds the op and location."""


@dataclass(frozen=True)
class AttrSpec:
    """kind: 'int', 'float', 'bool', 'str', 'ints', 'dtype' or 'data' (an array, for const)."""

    kind: str
    default: Any = REQUIRED
    choices: tuple = ()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def coerce(self, value: Any) -> Any:
        """Return ``value`` as this kind, or raise InferError saying what was expected."""
        k = self.kind
        if k == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
        elif k == "int":
            if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
                return int(value)
        elif k == "float":
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                try:
                    f = float(value)
                    return CANONICAL_NAN if f != f else f
                except OverflowError:
                    raise InferError(f"{value} is too large for a number") from None
        elif k == "str":
            if isinstance(value, str):
                if self.choices and value not in self.choices:
                    raise InferError(f"expected one of {', '.join(map(repr, self.choices))}, got {value!r}")
                return value
        elif k == "ints":
            if isinstance(value, (list, tuple)) and all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
            ):
                return tuple(int(v) for v in value)
        elif k == "strs":
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return tuple(value)
        elif k == "dtype":
            if isinstance(value, DType):
                return value
            if isinstance(value, str):
                try:
                    return lookup_dtype(value)
                except LadderError as e:
                    raise InferError(e.message) from None
        elif k == "data":
            if isinstance(value, np.ndarray):
                from ..constdata import ConstData

                return ConstData(value)
            if hasattr(value, "array") and isinstance(value.array, np.ndarray):  # ConstData
                return value
        raise InferError(f"expected {_KIND_WORDS[k]}, got {value!r}")


_KIND_WORDS = {
    "bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
    "ints": "a list of integers", "strs": "a list of strings", "dtype": "an element type name", "data": "a tensor literal",
}


class OpDef:
    name: ClassVar[str]
    operands: ClassVar[tuple[str, ...]] = ()
    attrs: ClassVar[dict[str, AttrSpec]] = {}
    num_results: ClassVar[int] = 1
    # Operands that may be packed tensors (a type with a layout); every other operand must be unpacked.
    packed_operands: ClassVar[tuple[str, ...]] = ()
    # Sources (param, const) declare their result type instead of inferring it.
    declares_result: ClassVar[bool] = False

    def check_declared(self, t: TensorType, attrs: Mapping[str, Any]) -> None:
        """For sources: raise InferError if the declared type does not fit the attributes."""

    # -- declared interface ---------------------------------------------------------------------------
    def infer(self, types: Sequence[TensorType], attrs: Mapping[str, Any]) -> list[TensorType]:
        raise NotImplementedError

    def compute(self, args: Sequence[np.ndarray], attrs: Mapping[str, Any],
                out: Sequence[TensorType], ins: Sequence[TensorType]) -> list[np.ndarray]:
        raise NotImplementedError

    # -- derived helpers -----------------------------------------------------------------------------
    def arity(self) -> tuple[int, int | None]:
        """(min, max) operand count; max None for variadic."""
        if self.operands and self.operands[0].startswith("*"):
            return 0, None
        required = sum(1 for o in self.operands if not o.endswith("?"))
        return required, len(self.operands)

    def operand_roles(self, n: int) -> list[str]:
        """The role name of each of n operands ('inputs' for every operand of a variadic op)."""
        if self.operands and self.operands[0].startswith("*"):
            return [self.operands[0][1:]] * n
        return [o.rstrip("?") for o in self.operands[:n]]

    def result_count(self, attrs: Mapping[str, Any]) -> int:
        return self.num_results

    def full_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Explicit attributes with defaults filled in (attrs assumed already normalized)."""
        out = {k: spec.default for k, spec in self.attrs.items() if not spec.required}
        out.update(attrs)
        return out

    def normalize_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Coerce attribute values to their kinds and drop those equal to their default.

        Raises InferError for unknown, missing or mistyped attributes."""
        out = {}
        for key, value in attrs.items():
            spec = self.attrs.get(key)
            if spec is None:
                known = ", ".join(self.attrs) or "none"
                raise InferError(f"'{self.name}' has no attribute '{key}' (its attributes: {known})")
            try:
                v = spec.coerce(value)
            except InferError as e:
                raise InferError(f"attribute '{key}' of '{self.name}': {e}") from None
            if spec.required or not _same(v, spec.default):
                out[key] = v
        missing = [k for k, s in self.attrs.items() if s.required and k not in out]
        if missing:
            raise InferError(f"'{self.name}' needs attribute(s) {', '.join(missing)}")
        return out


def _same(a, b) -> bool:
    if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        return False
    try:
        return bool(a == b)
    except Exception:
        return False


OPS: dict[str, OpDef] = {}


def register(cls: type[OpDef]) -> type[OpDef]:
    if cls.name in OPS:
        raise AssertionError(f"op {cls.name} registered twice")
    OPS[cls.name] = cls()
    return cls


def get_op(kind: str, loc: Location | None = None) -> OpDef:
    try:
        return OPS[kind]
    except KeyError:
        raise LadderError(f"unknown op '{kind}'", loc, notes=(f"known ops: {', '.join(sorted(OPS))}",)) from None


# -- small shared checks used by op definitions -------------------------------------------------------

def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1) or rank == 0:
        raise InferError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


def need_float(t: TensorType, what: str) -> None:
    if not t.dtype.is_float:
        raise InferError(f"{what} must have a float type, got {t}")


def need_same_dtype(types: Sequence[TensorType], what: str) -> None:
    if len({t.dtype for t in types}) > 1:
        raise InferError(f"{what} must have the same element type, got {', '.join(map(str, types))}")


def broadcast(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise InferError(f"shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast") from None


def to_f32(arr: np.ndarray) -> np.ndarray:
    return np.asarray(arr).astype(np.float32, copy=False)
