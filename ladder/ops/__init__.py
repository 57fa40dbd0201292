"""The op registry. Each op is declared once (operands, attributes, type inference, numpy semantics)
in one of the modules below; importing this package registers them all."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import LadderError, Location, VerifyError
from ..ir import Op, Value
from ..types import TensorType
from .base import OPS, AttrSpec, InferError, OpDef, get_op, register
from . import elementwise, linalg, lowbit, lut, nn, shape, sqrt  # noqa: F401  (registration)

__all__ = ["OPS", "AttrSpec", "InferError", "OpDef", "get_op", "register", "make_op", "infer_results",
           "check_arity", "normalized_attrs", "describe"]


def _fail(what: str, msg: str, loc: Location | None) -> VerifyError:
    """``what`` names the op: "'matmul' defining %h"."""
    return VerifyError([LadderError(f"{what}: {msg}", loc)])


def describe(kind: str, names: Sequence[str]) -> str:
    return f"'{kind}'" + (f" defining {', '.join('%' + n for n in names)}" if names else "")


def check_arity(opdef: OpDef, n: int, loc: Location | None, what: str) -> None:
    lo, hi = opdef.arity()
    if n < lo or (hi is not None and n > hi):
        want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
        names = ", ".join(o.strip("*?") for o in opdef.operands)
        raise _fail(what, f"takes {want} operand(s) ({names}), got {n}", loc)


def normalized_attrs(opdef: OpDef, attrs: Mapping[str, Any], loc: Location | None, what: str) -> dict[str, Any]:
    try:
        return opdef.normalize_attrs(attrs)
    except InferError as e:
        raise _fail(what, str(e), loc) from None


def infer_results(opdef: OpDef, operand_types: Sequence[TensorType], attrs: Mapping[str, Any],
                  loc: Location | None, what: str) -> list[TensorType]:
    """Result types of a non-source op from its operand types and (normalized) attributes."""
    for role, t in zip(opdef.operand_roles(len(operand_types)), operand_types):
        if t.layout and role not in opdef.packed_operands:
            raise _fail(what, f"{role} is packed ({t}); only {', '.join(opdef.packed_operands) or 'no operand'} "
                        f"of '{opdef.name}' may be, so unpack it first", loc)
    try:
        return list(opdef.infer(list(operand_types), opdef.full_attrs(attrs)))
    except InferError as e:
        raise _fail(what, str(e), loc) from None


def make_op(kind: str, operands: Sequence[str], operand_types: Sequence[TensorType], attrs: Mapping[str, Any],
            names: Sequence[str], types: Sequence[TensorType] | None, loc: Location) -> Op:
    """Check and build an op. ``types`` are the declared result types (the parser's annotation); when
    None they are inferred (the builder). Raises VerifyError located at ``loc``."""
    opdef = get_op(kind, loc)
    what = describe(kind, names)
    check_arity(opdef, len(operands), loc, what)
    norm = normalized_attrs(opdef, attrs, loc, what)
    n = opdef.result_count(opdef.full_attrs(norm))
    if types is None:
        if opdef.declares_result:
            raise _fail(what, "needs its result type given", loc)
        types = infer_results(opdef, operand_types, norm, loc, what)
    if len(names) != n or len(types) != n:
        raise _fail(what, f"has {n} result(s) here, got {len(names)} name(s) and {len(types)} type(s)", loc)
    return Op.make(kind, operands, norm, [Value(nm, t) for nm, t in zip(names, types)], loc)
