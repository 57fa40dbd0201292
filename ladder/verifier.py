"""The verifier: types, shapes and attributes of every op, and the graph's outputs.

Run after parsing, after building, and after each pass. It collects every problem it finds (an op whose
inference fails keeps its declared types, so later ops are still checked) and raises one VerifyError.
"""

from __future__ import annotations

from .errors import LadderError, VerifyError
from .ir import Graph, Op
from .ops import OPS, InferError, check_arity, describe, infer_results, normalized_attrs


def verify(graph: Graph) -> Graph:
    diags: list[LadderError] = []
    refs: dict[str, tuple] = {}
    passed: set = set()  # what _verify_op reads of ops that verified: a decoder repeats its layers' ops
    for op in graph.ops():
        try:
            key = (op.kind, op.attrs, tuple(graph.type_of(o) for o in op.operands), tuple(r.type for r in op.results))
            hash(key)
        except (TypeError, KeyError, LadderError):  # an unhashable attribute, an operand with no type: alone
            key = None
        try:
            if key is None or key not in passed:
                _verify_op(graph, op)
                if key is not None:
                    passed.add(key)
        except VerifyError as e:
            diags.extend(e.diagnostics)
        except LadderError as e:
            diags.append(e)
        if op.kind == "param" and op.results:
            ref, t = op.attr.get("ref"), op.results[0].type
            if ref in refs and refs[ref][0] != t:
                diags.append(LadderError(
                    f"{describe(op.kind, [op.name])}: weight @{ref} is declared as {t} here and as "
                    f"{refs[ref][0]} at {refs[ref][1]}", op.loc))
            refs.setdefault(ref, (t, op.loc))
    if not graph.outputs:
        diags.append(LadderError(f"graph @{graph.name} returns nothing", graph.loc))
    if diags:
        raise VerifyError(diags)
    return graph


def _verify_op(graph: Graph, op: Op) -> None:
    opdef = OPS.get(op.kind)
    what = describe(op.kind, [r.name for r in op.results])
    if opdef is None:
        raise LadderError(f"{what}: unknown op '{op.kind}'", op.loc)
    check_arity(opdef, len(op.operands), op.loc, what)
    norm = normalized_attrs(opdef, op.attr, op.loc, what)
    full = opdef.full_attrs(norm)
    want_n = opdef.result_count(full)
    if len(op.results) != want_n:
        raise LadderError(f"{what}: has {want_n} result(s), but {len(op.results)} are named", op.loc)
    declared = [r.type for r in op.results]
    if opdef.declares_result:
        try:
            opdef.check_declared(declared[0], full)
        except InferError as e:
            raise LadderError(f"{what}: {e}", op.loc) from None
        return
    types = [graph.type_of(o) for o in op.operands]
    inferred = infer_results(opdef, types, norm, op.loc, what)
    for r, t in zip(op.results, inferred):
        if r.type != t:
            raise LadderError(f"{what}: the op gives %{r.name} the type {t}, but it is declared as {r.type}", op.loc)
