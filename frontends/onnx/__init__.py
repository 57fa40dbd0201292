"""ONNX models -> a ladder Graph and its weights (installed as ``ladder.frontends.onnx``).

    g, w = load("model.onnx", shapes={"input_ids": (1, 8)})
    out = ladder.run(g, {"input_ids": ids}, w)

Each ONNX node maps onto existing ladder ops (Gemm = matmul + mul/add, QuantizeLinear = div, round, add,
clamp, cast, Where = one gather over the interleaved candidates, ...). What the importer guarantees:

* **Models as exporters write them.** ``torch.onnx.export`` output (dynamo and TorchScript) imports as
  written: the shape subgraphs (Shape, Gather, Range, ConstantOfShape, Equal, Where, Expand, ...) are
  evaluated at import for the static shapes given, so they become constants. Folding is bounded
  (``FOLD_LIMIT_BYTES``): a result over the limit stays a run-time op, or is refused with its size.
* **Weights.** Initializers used as run-time data become ``param``s named after the initializer. Integer
  weights behind ``DequantizeLinear`` and ``com.microsoft.MatMulNBits`` become low-bit params + f32 scale
  (+ zero) params + a ``dequant`` grouped along K, so ``legalize-types,fuse`` turn them into ``qmatmul``.
* **Types.** ladder has no i64, f64 or bool. Int64 values known at import are used at import; an int64 graph
  input (token ids, positions) becomes an i32 input checked at run time. A bool at run time is u8 0/1.
  Any other f64/i64 tensor at run time is an error naming it.
* **Shapes** are static: a symbolic input dimension must be fixed with ``shapes`` (``--shape x=1x2560``).
* **Checks.** Invalid models are refused, never wrapped: an axis out of range, Slice lists of unequal
  length, an attribute of the wrong type, a zero block size are errors naming the node, op and field.
  Each op's location is ``file:node-index`` with the node shown. Unsupported ops are reported together.
* **Supported ops** are the keys of the op table (``table.CONVERTERS``): ``SUPPORTED`` and ``MS_SUPPORTED``.
"""

from __future__ import annotations

import os
from typing import Mapping

import onnx

from ladder.errors import LadderError, Location

from . import ops_math, ops_ms, ops_nn, ops_quant, ops_shape  # noqa: F401  (register the converters)
from .common import FOLD_LIMIT_BYTES, ONNX_TO_LADDER
from .importer import Core
from .ops_quant import pack_bits, unpack_bits
from .table import MS_DOMAIN, supported

SUPPORTED = supported()
MS_SUPPORTED = supported(MS_DOMAIN)
MAX_FILE_BYTES = 1 << 34  # a protobuf cannot hold more than 2 GiB; external data can


def load(path: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]] | None = None, *,
         fold_limit: int = FOLD_LIMIT_BYTES):
    """(graph, weights) from an .onnx file. ``shapes`` fixes symbolic input dimensions by input name."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LadderError("no such file", Location(path))
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LadderError(f"cannot read: {e.strerror or e}", Location(path)) from None
    model = _parse_model(data, path)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        try:
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
        except Exception as e:  # missing or short external data files
            raise LadderError(f"cannot read the model's external data: {e}", Location(path)) from None
    return from_model(model, shapes, path=path, fold_limit=fold_limit)


def _parse_model(data: bytes, path: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # google.protobuf DecodeError and friends: not ONNX, or truncated
        raise LadderError(f"not a readable ONNX model ({type(e).__name__}: {e})", Location(path)) from None
    if not model.HasField("graph") or not model.graph.output or model.ir_version <= 0:
        raise LadderError("not an ONNX model (no graph with outputs; is the file truncated?)", Location(path))
    return model


def from_model(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]] | None = None, *,
               path: str = "<onnx>", fold_limit: int = FOLD_LIMIT_BYTES):
    """(graph, weights) from an in-memory ``onnx.ModelProto``."""
    if not isinstance(model, onnx.ModelProto):
        raise LadderError(f"expected an onnx.ModelProto, got {type(model).__name__}")
    try:
        shapes = dict(shapes or {})
        return Core(model, path, shapes, fold_limit).run()
    except (TypeError, ValueError) as e:  # shapes that are not name -> ints
        if isinstance(e, LadderError):
            raise
        raise LadderError(f"bad shapes argument or model field ({type(e).__name__}: {e})", Location(path)) from None


__all__ = ["load", "from_model", "unpack_bits", "pack_bits", "ONNX_TO_LADDER", "SUPPORTED", "MS_SUPPORTED",
           "FOLD_LIMIT_BYTES"]
