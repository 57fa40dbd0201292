"""Type tables and small helpers shared by the ONNX importer modules (which import each other only downwards:
common, table, fold and shapes below the ops_* converter modules)."""

from __future__ import annotations

import re

import numpy as np
from onnx import TensorProto

from ladder.types import DTYPES

# ONNX element type -> ladder dtype name (types ladder lacks are absent). BOOL is u8 holding 0 or 1.
ONNX_TO_LADDER = {
    TensorProto.FLOAT: "f32", TensorProto.FLOAT16: "f16", TensorProto.BFLOAT16: "bf16",
    TensorProto.INT32: "i32", TensorProto.INT16: "i16", TensorProto.INT8: "i8", TensorProto.UINT8: "u8",
    TensorProto.INT4: "i4", TensorProto.UINT4: "u4", TensorProto.FLOAT8E4M3FN: "fp8e4m3",
}
for _n, _l in (("FLOAT4E2M1", "fp4"), ("INT2", "i2"), ("UINT2", "u2")):  # newer onnx versions only
    if hasattr(TensorProto, _n):
        ONNX_TO_LADDER[getattr(TensorProto, _n)] = _l

NUMPY_TO_LADDER = {np.dtype(DTYPES[n].np_dtype): n for n in ONNX_TO_LADDER.values()}
NUMPY_TO_LADDER[np.dtype(bool)] = "u8"  # a bool tensor at run time is u8 0/1

# Import-time folding refuses results larger than this many bytes (a constant that big is a run-time
# tensor, not a shape computation).
FOLD_LIMIT_BYTES = 64 << 20


def type_name(elem: int) -> str:
    try:
        return TensorProto.DataType.Name(elem)
    except ValueError:
        return f"type {elem}"


def sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.$]", "_", name or "")


def broadcast_to(im, v, shape, out=None):
    """``v`` broadcast to ``shape`` exactly: a size-1 axis becomes n copies by a gather of zeros."""
    shape = tuple(shape)
    if v.type.shape == shape:
        return v if out is None else im.emit("reshape", [v], {"shape": list(shape)}, out=out)
    r = len(shape)
    if v.type.rank < r:
        v = im.emit("reshape", [v], {"shape": [1] * (r - v.type.rank) + list(v.type.shape)})
    steps = [a for a in range(r) if v.type.shape[a] != shape[a]]
    for k, a in enumerate(steps):
        idx = im.const(np.zeros(shape[a], np.int32), "i32", "bcast.idx")
        v = im.emit("gather", [v, idx], {"axis": a}, out=out if k == len(steps) - 1 else None)
    return v
