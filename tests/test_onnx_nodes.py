"""ONNX's own node tests for every op the importer claims, through ladder's reference interpreter. The cases
come from ``onnx.backend.test.case.node`` (the generator of onnx/backend/test/data/node; the wheels of onnx
1.23 ship the generator, not the data folder), each with its model and its expected outputs.

A case passes when ladder's outputs equal the expected ones (integers exactly, floats within a few ulps of
their type). A variant the importer refuses with a LadderError (a type ladder lacks, a run-time value it
needs at import) is skipped with that error as the reason; any other exception, or a wrong answer, fails.
Int64 inputs are given as initializers: ladder reads shapes, axes and indices at import time."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

import ladder  # noqa: E402
from ladder.errors import LadderError  # noqa: E402
from ladder.frontends import onnx as lo  # noqa: E402


def _cases():
    import warnings

    import onnx.backend.test.case.node as nodecases

    claimed = {("", op) for op in lo.SUPPORTED}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = nodecases.collect_testcases(None)
    out = {}
    for c in cases:
        ops = {(n.domain or "", n.op_type) for n in c.model.graph.node}
        if len(c.model.graph.node) == 1 and ops <= claimed and c.data_sets:
            out[c.name] = c
    return out


CASES = _cases()


def _array(a):
    return numpy_helper.to_array(a) if isinstance(a, onnx.TensorProto) else np.asarray(a)


def test_every_claimed_op_has_node_tests_that_pass():
    """Claims are real: each op in the table with node tests in onnx passes at least one of them."""
    have = {}
    for name, c in CASES.items():
        have.setdefault(c.model.graph.node[0].op_type, []).append(name)
    assert len(have) >= 60, sorted(have)
    dead = [op for op, cs in have.items() if not any(_run(c)[0] == "pass" for c in cs)]
    assert not dead, f"ops claimed whose node tests never pass: {dead}"


def _run(case):
    """('pass', [(got, expected)]) or ('refused', message). A case refused with its inputs given at run time
    is tried again with all of them as initializers: the import-time path (Range, Tile, Cos, ... are
    supported on import-time values only)."""
    status, res = _run_with(case, folded=False)
    if status == "refused":
        status2, res2 = _run_with(case, folded=True)
        if status2 == "pass":
            return status2, res2
    return status, res


def _run_with(case, folded):
    tc = CASES[case]
    m = onnx.ModelProto()
    m.CopyFrom(tc.model)
    ins, outs = ([_array(a) for a in x] for x in tc.data_sets[0])
    feeds, keep = [], []
    graph_inputs = [v for v in m.graph.input if v.name not in {t.name for t in m.graph.initializer}]
    for v, arr in zip(graph_inputs, ins):
        if arr.dtype == np.int64 or folded:
            m.graph.initializer.append(numpy_helper.from_array(arr, v.name))
        else:
            keep.append(v)
            feeds.append(arr)
    del m.graph.input[:]
    m.graph.input.extend(keep)
    try:
        g, w = lo.from_model(m)
        got = ladder.run(g, feeds, w)
    except LadderError as e:
        return "refused", e.message
    return "pass", [(got[n], e) for n, e in zip(g.outputs, outs)]


def _compare(pairs):
    for got, e in pairs:
        assert got.shape == e.shape
        if e.dtype == bool:
            np.testing.assert_array_equal(got.astype(bool), e)
        elif e.dtype.kind in "iu" or e.dtype in (ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2):
            np.testing.assert_array_equal(got.astype(np.int64), e.astype(np.int64))
        else:
            tol = 1e-5 if e.dtype == np.float32 else 1e-2  # f16, bf16, fp8: a few ulps of the narrow type
            np.testing.assert_allclose(got.astype(np.float32), e.astype(np.float32), rtol=max(tol, 1e-4), atol=tol,
                                       equal_nan=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_node(case):
    status, res = _run(case)
    if status == "refused":
        pytest.skip(f"refused: {res.splitlines()[0][:160]}")
    _compare(res)
