"""ONNX models -> a ladder Graph and its weights (installed as ``ladder.frontends.onnx``).

    g, w = load("model.onnx", shapes={"x": (1, 2560)})
    out = ladder.run(g, {"x": x}, w)

Each ONNX node maps onto existing ladder ops (Gemm = matmul + mul/add, QuantizeLinear = div, round, add,
clamp, cast, ...). What the importer guarantees:

* **Weights.** Initializers used as run-time data become ``param``s named after the initializer (the returned
  weights dict holds them in the param type's in-memory dtype). Integer weights behind ``DequantizeLinear``
  and ``com.microsoft.MatMulNBits`` become low-bit params (i8 u8 i4 u4 i2 u2) + f32 scale (+ zero) params +
  a ``dequant`` grouped along K, so ``legalize-types,fuse`` turn them into ``qmatmul``. MatMulNBits' packed B
  ([N, n_blocks, blob], low bits first) is unpacked at import; without zero points its codes q are stored as
  the signed values q - 2^(bits-1) (i4, i2, i8), with zero points as the unsigned codes and an f32 zero.
* **Import-time integers.** ladder has no i64, f64 or bool. Int64 shapes, axes, starts and indices that are
  initializers or Constants (or folded from them: Concat, Cast, Unsqueeze, ... of constants) are used at
  import time (Gather indices become an i32 const). An int64 graph input (token ids, positions) becomes an
  i32 input; running with a value outside i32 is an error naming the input. Any other f64, i64 or bool
  tensor (or another type ladder lacks) that would exist at run time is an error naming the tensor.
* **Shapes** are static: a symbolic input dimension must be fixed with ``shapes`` (``--shape x=1x2560``).
* **Names.** Values are named after the ONNX values, sanitized to ``[A-Za-z0-9_.$]`` and made unique. Each
  op's location is ``file:node-index`` with the node shown, so an error names the node.
* **Errors.** Unsupported ops are reported together in one error listing every op type and its nodes. A file
  that is not ONNX (or is truncated) is a LadderError. Nothing in the model is executed.
"""

from __future__ import annotations

import math
import os
import re
from typing import Callable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ladder.errors import LadderError, Location
from ladder.ir import ConstData, Graph, Value
from ladder.ops import make_op
from ladder.types import DTYPES, TensorType
from ladder.verifier import verify

# ONNX element type -> ladder dtype name (types ladder lacks are absent).
ONNX_TO_LADDER = {
    TensorProto.FLOAT: "f32", TensorProto.FLOAT16: "f16", TensorProto.BFLOAT16: "bf16",
    TensorProto.INT32: "i32", TensorProto.INT16: "i16", TensorProto.INT8: "i8", TensorProto.UINT8: "u8",
    TensorProto.INT4: "i4", TensorProto.UINT4: "u4", TensorProto.FLOAT8E4M3FN: "fp8e4m3",
}
for _n, _l in (("FLOAT4E2M1", "fp4"), ("INT2", "i2"), ("UINT2", "u2")):  # newer onnx versions only
    if hasattr(TensorProto, _n):
        ONNX_TO_LADDER[getattr(TensorProto, _n)] = _l

NUMPY_TO_LADDER = {np.dtype(DTYPES[n].np_dtype): n for n in ONNX_TO_LADDER.values()}

MS_DOMAIN = "com.microsoft"
SUPPORTED = (
    "MatMul Gemm Add Sub Mul Div Neg Relu Sigmoid Tanh Erf Gelu Softmax LayerNormalization RMSNormalization "
    "Reshape Transpose Concat Slice Gather Unsqueeze Squeeze Cast Constant Identity ReduceSum ReduceMean "
    "ReduceMax DequantizeLinear QuantizeLinear MatMulInteger QLinearMatMul"
).split()
MS_SUPPORTED = ("MatMulNBits",)
_UNSET = object()


def _type_name(elem: int) -> str:
    try:
        return TensorProto.DataType.Name(elem)
    except ValueError:
        return f"type {elem}"


def load(path: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]] | None = None
         ) -> tuple[Graph, dict[str, np.ndarray]]:
    """(graph, weights) from an .onnx file. ``shapes`` fixes symbolic input dimensions by input name."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LadderError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LadderError(f"{path}: cannot read: {e}") from None
    model = _parse_model(data, path)
    if any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer):
        try:
            from onnx.external_data_helper import load_external_data_for_model

            load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
        except Exception as e:  # missing or short external data files
            raise LadderError(f"{path}: cannot read the model's external data: {e}") from None
    return from_model(model, shapes, path=path)


def _parse_model(data: bytes, path: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as e:  # google.protobuf DecodeError and friends: not ONNX, or truncated
        raise LadderError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    if not model.HasField("graph") or not model.graph.output or model.ir_version <= 0:
        raise LadderError(f"{path}: not an ONNX model (no graph with outputs; is the file truncated?)")
    return model


def from_model(model: onnx.ModelProto, shapes: Mapping[str, tuple[int, ...]] | None = None, *,
               path: str = "<onnx>") -> tuple[Graph, dict[str, np.ndarray]]:
    """(graph, weights) from an in-memory ``onnx.ModelProto``."""
    if not isinstance(model, onnx.ModelProto):
        raise LadderError(f"expected an onnx.ModelProto, got {type(model).__name__}")
    return _Importer(model, path, dict(shapes or {})).run()


class _Importer:
    def __init__(self, model: onnx.ModelProto, path: str, shapes: dict):
        self.model = model
        self.path = path
        self.shapes = {k.lstrip("%"): tuple(v) for k, v in shapes.items()}
        self.opset = {o.domain or "ai.onnx": o.version for o in model.opset_import}
        gname = _sanitize(model.graph.name) or "main"
        self.g = Graph(gname, loc=Location(path))
        self.weights: dict[str, np.ndarray] = {}
        self.env: dict[str, Value] = {}          # ONNX name -> ladder value
        self.static: dict[str, np.ndarray] = {}  # ONNX name -> array known at import time (Constant, folded)
        self.inits: dict[str, np.ndarray] = {}   # ONNX initializer name -> array
        self.taken: set[str] = set()
        self.param_types: dict[str, TensorType] = {}
        self.param_cache: dict[tuple, Value] = {}
        self.loc = Location(path)
        self.node = None

    # -- naming and locations ----------------------------------------------------------------------
    def unique(self, hint: str) -> str:
        base = _sanitize(hint) or "v"
        cand, k = base, 0
        while cand in self.taken or self.g.defines(cand):
            k += 1
            cand = f"{base}.{k}"
        self.taken.add(cand)
        return cand

    def error(self, msg: str) -> LadderError:
        return LadderError(msg, self.loc)

    # -- entry -------------------------------------------------------------------------------------
    def run(self) -> tuple[Graph, dict[str, np.ndarray]]:
        graph = self.model.graph
        self.check_supported(graph)
        for t in graph.initializer:
            self.inits[t.name] = self.tensor_array(t, f"initializer '{t.name}'")
        for t in graph.sparse_initializer:
            raise self.error(f"sparse initializer '{t.values.name}' is not supported")
        real = [vi for vi in graph.input if vi.name not in self.inits]  # IR < 4 lists initializers too
        unknown = set(self.shapes) - {vi.name for vi in real} - {_sanitize(vi.name) for vi in real}
        if unknown:
            raise self.error(f"--shape names no input of the model: {', '.join(sorted(unknown))}; "
                             f"its inputs: {', '.join(vi.name for vi in real)}")
        for vi in real:
            self.add_input(vi)
        for i, node in enumerate(graph.node):
            self.node = node
            text = f"node {i} {node.name or '(unnamed)'!r}: {node.op_type}({', '.join(node.input)}) -> " \
                   f"{', '.join(node.output)}"
            self.loc = Location(self.path, i + 1, 1, text)
            try:
                self.convert(node)
            except LadderError as e:
                if e.loc is None or e.loc.file != self.path or e.loc.line != i + 1:
                    raise LadderError(e.message, self.loc, notes=e.notes) from None
                raise
        self.loc = Location(self.path)
        outs = []
        for vi in graph.output:
            v = self.value(vi.name, what=f"graph output '{vi.name}'")
            outs.append(v.name)
        self.g.set_outputs(outs)
        return verify(self.g), self.weights

    def check_supported(self, graph) -> None:
        bad: dict[str, list[str]] = {}
        for i, node in enumerate(graph.node):
            domain = node.domain or "ai.onnx"
            ok = (domain in ("ai.onnx", "") and node.op_type in SUPPORTED) or \
                 (domain == MS_DOMAIN and node.op_type in MS_SUPPORTED)
            if not ok:
                key = node.op_type if domain in ("ai.onnx", "") else f"{domain}.{node.op_type}"
                bad.setdefault(key, []).append(node.name or f"#{i}")
            for a in node.attribute:
                if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    bad.setdefault(f"{node.op_type} (with a subgraph)", []).append(node.name or f"#{i}")
        if bad:
            listing = "; ".join(f"{k} ({', '.join(v[:5])}{f', ... {len(v) - 5} more' if len(v) > 5 else ''})"
                                for k, v in sorted(bad.items()))
            raise LadderError(f"{self.path}: unsupported ONNX op(s): {listing}", Location(self.path),
                              notes=(f"supported: {', '.join(SUPPORTED)}, {MS_DOMAIN}.MatMulNBits",))

    def tensor_array(self, t: onnx.TensorProto, what: str) -> np.ndarray:
        if t.data_location == TensorProto.EXTERNAL and not t.raw_data:
            raise self.error(f"{what} keeps its data in an external file that was not loaded")
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:
            raise self.error(f"cannot read {what} ({_type_name(t.data_type)}): {e}") from None
        return np.asarray(arr)

    def add_input(self, vi: onnx.ValueInfoProto) -> None:
        loc = Location(self.path)
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            raise LadderError(f"input '{vi.name}' is not a tensor", loc)
        # int64 inputs (token ids, positions) are taken as i32: ladder.run checks each given value fits.
        dt = "i32" if tt.elem_type == TensorProto.INT64 else ONNX_TO_LADDER.get(tt.elem_type)
        if dt is None:
            raise LadderError(f"input '{vi.name}' is {_type_name(tt.elem_type)}, which ladder has no type for "
                              f"at run time (it has {', '.join(sorted(set(ONNX_TO_LADDER.values())))})", loc)
        given = self.shapes.get(vi.name, self.shapes.get(_sanitize(vi.name)))
        dims = list(tt.shape.dim) if tt.HasField("shape") else None
        if given is not None:
            if dims is not None and len(dims) != len(given):
                raise LadderError(f"--shape {vi.name}={'x'.join(map(str, given))} has rank {len(given)}, "
                                  f"but input '{vi.name}' has rank {len(dims)}", loc)
            for i, (d, n) in enumerate(zip(dims or [], given)):
                if d.HasField("dim_value") and d.dim_value != n:
                    raise LadderError(f"--shape {vi.name}: dimension {i} is {d.dim_value} in the model, "
                                      f"not {n}", loc)
            shape = tuple(given)
        else:
            if dims is None:
                raise LadderError(f"input '{vi.name}' has no shape; give one with --shape {vi.name}=DIMS", loc)
            shape = []
            for i, d in enumerate(dims):
                if not d.HasField("dim_value"):
                    sym = d.dim_param or "?"
                    raise LadderError(f"input '{vi.name}' has a symbolic dimension {i} ('{sym}'); give its "
                                      f"shape with --shape {vi.name}=DIMS (shapes={{'{vi.name}': (...)}})", loc)
                shape.append(d.dim_value)
            shape = tuple(shape)
        v = Value(self.unique(vi.name), TensorType(DTYPES[dt], shape))
        self.g.inputs.append(v)
        self.g._define(v.name, None, len(self.g.inputs) - 1, loc)
        self.env[vi.name] = v

    # -- values ------------------------------------------------------------------------------------
    def known(self, name: str):
        """The import-time array of ``name`` (initializer, Constant or folded), or None."""
        if name in self.static:
            return self.static[name]
        return self.inits.get(name)

    def need_known(self, name: str, what: str) -> np.ndarray:
        arr = self.known(name)
        if arr is None:
            raise self.error(f"{what} ('{name}') must be an initializer or Constant; ladder needs it at "
                             f"import time, but it is computed at run time")
        return arr

    def value(self, name: str, what: str | None = None, index: bool = False) -> Value:
        """The ladder value of ONNX value ``name``; import-time arrays become params or consts."""
        if name in self.env:
            return self.env[name]
        arr = self.known(name)
        if arr is None:
            raise self.error(f"'{name}' is not defined before it is used")
        what = what or f"tensor '{name}'"
        if index and arr.dtype.kind in "iu":
            arr = self.as_i32(arr, what)
        dt = self.ladder_dtype(arr, what)
        if name in self.inits or (DTYPES[dt].is_float and arr.size > 16):
            v = self.param(name, arr, dt)
        else:
            v = self.const(arr, dt, hint=name)
        if not index:
            self.env[name] = v
        return v

    def ladder_dtype(self, arr: np.ndarray, what: str) -> str:
        dt = NUMPY_TO_LADDER.get(np.dtype(arr.dtype))
        if dt is None:
            raise self.error(f"{what} is {arr.dtype} at run time; ladder has no {arr.dtype} tensors "
                             f"(only {', '.join(sorted(set(ONNX_TO_LADDER.values())))})")
        return dt

    def as_i32(self, arr: np.ndarray, what: str) -> np.ndarray:
        if arr.size and (arr.min() < -2**31 or arr.max() >= 2**31):
            raise self.error(f"{what} holds values outside i32")
        return arr.astype(np.int32)

    def param(self, ref: str, arr: np.ndarray, dt: str) -> Value:
        """A param holding ``arr`` named @ref (@ref.1, ... when ref is already taken by other data)."""
        t = TensorType(DTYPES[dt], tuple(arr.shape))
        arr = np.asarray(arr).astype(t.dtype.np_dtype)
        r, k = ref, 0
        while r in self.param_types:
            if self.param_types[r] == t and np.array_equal(self.weights[r], arr):
                return self.param_cache[r]
            k += 1
            r = f"{ref}.{k}"
        op = make_op("param", [], [], {"ref": r}, [self.unique(r)], [t], self.loc)
        self.g.add_op(op)
        self.param_types[r] = t
        self.weights[r] = arr
        self.param_cache[r] = op.result
        return op.result

    def const(self, arr, dt: str, hint: str = "c") -> Value:
        t = TensorType(DTYPES[dt], tuple(np.shape(arr)))
        arr = np.asarray(arr).astype(t.dtype.np_dtype)
        op = make_op("const", [], [], {"value": ConstData(arr)}, [self.unique(hint)], [t], self.loc)
        self.g.add_op(op)
        return op.result

    def fconst(self, x: float, like: Value, hint: str = "c") -> Value:
        """A one-element const of ``like``'s element type, broadcastable to it."""
        dt = like.type.dtype
        return self.const(np.full((1,) * max(like.type.rank, 1), x, np.float32).astype(dt.np_dtype),
                          dt.name, hint)

    def emit(self, kind: str, operands, attrs=None, out: int | None = None, hint: str | None = None) -> Value:
        """Add one op; ``out`` = i names its result after the node's i-th output."""
        ops = [o.name for o in operands]
        types = [o.type for o in operands]
        if out is not None:
            name = self.unique(self.node.output[out])
        else:
            base = hint or (self.node.output[0] if self.node is not None and self.node.output else "t")
            name = self.unique(f"{base}.{kind}")
        op = make_op(kind, ops, types, attrs or {}, [name], None, self.loc)
        self.g.add_op(op)
        return op.result

    def bind(self, i: int, v) -> None:
        """Node output i is ``v`` (a ladder Value or an import-time array)."""
        name = self.node.output[i]
        if not name:
            return
        if isinstance(v, Value):
            self.env[name] = v
        else:
            self.static[name] = np.asarray(v)

    # -- attributes and inputs ---------------------------------------------------------------------
    def attr(self, name: str, default=_UNSET):
        for a in self.node.attribute:
            if a.name == name:
                if a.type == onnx.AttributeProto.TENSOR:
                    return self.tensor_array(a.t, f"attribute '{name}'")
                return onnx.helper.get_attribute_value(a)
        if default is _UNSET:
            raise self.error(f"{self.node.op_type} needs attribute '{name}'")
        return default

    def inp(self, i: int) -> str | None:
        return self.node.input[i] if i < len(self.node.input) and self.node.input[i] else None

    def ver(self, domain: str = "ai.onnx") -> int:
        return self.opset.get(domain, 1 if domain != "ai.onnx" else 21)

    # -- conversion --------------------------------------------------------------------------------
    def convert(self, node) -> None:
        for a in node.attribute:
            if a.ref_attr_name:
                raise self.error(f"attribute '{a.name}' refers to a function attribute; not supported")
        fn: Callable = getattr(self, f"op_{node.op_type}")
        # Fold integer shape arithmetic on import-time values.
        ins = [self.known(n) if n else None for n in node.input]
        present = [a for n, a in zip(node.input, ins) if n]
        if node.op_type in _FOLDABLE and present and all(a is not None for a in present) and \
                (node.op_type in ("Identity", "Cast") or all(a.dtype.kind in "iub" for a in present)):
            try:
                res = self.fold(node, ins)
            except LadderError:
                raise
            except (ValueError, IndexError, TypeError):  # leave it to the run-time path, which reports a located error
                res = None
            if res is not None:
                self.bind(0, res)
                return
        fn()

    def fold(self, node, ins):
        t = node.op_type
        a = ins[0]
        if t == "Identity":
            return a
        if t == "Cast":
            to = self.attr("to")
            npdt = onnx.helper.tensor_dtype_to_np_dtype(to)
            return a.astype(npdt)
        if t in ("Add", "Sub", "Mul"):
            fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[t]
            return fn(a, ins[1]).astype(a.dtype)
        if t == "Neg":
            return -a
        if t == "Concat":
            return np.concatenate([x for x in ins if x is not None], axis=self.attr("axis"))
        if t == "Gather":
            return np.take(a, ins[1], axis=self.attr("axis", 0))
        if t in ("Unsqueeze", "Squeeze", "Reshape"):
            return a.reshape(self.reshaped(a.shape))
        if t == "Slice":
            return a[self.slice_spec(a.shape)]
        return None

    # element-wise ---------------------------------------------------------------------------------
    def binary(self, kind: str) -> None:
        a = self.value(self.inp(0))
        b = self.value(self.inp(1))
        if a.type.dtype != b.type.dtype:
            raise self.error(f"{self.node.op_type} of {a.type} and {b.type}")
        if kind == "div" and not a.type.dtype.is_float:
            if a.type.dtype.bits > 16:
                raise self.error(f"integer Div of {a.type} is not supported (ladder divides floats; "
                                 f"only <= 16-bit integers convert exactly)")
            fa = self.emit("cast", [a], {"dtype": "f32"})
            fb = self.emit("cast", [b], {"dtype": "f32"})
            q = self.emit("div", [fa, fb])
            self.bind(0, self.emit("cast", [q], {"dtype": a.type.dtype.name}, out=0))
            return
        self.bind(0, self.emit(kind, [a, b], out=0))

    def op_Add(self):
        self.binary("add")

    def op_Sub(self):
        self.binary("sub")

    def op_Mul(self):
        self.binary("mul")

    def op_Div(self):
        self.binary("div")

    def unary(self, kind: str, attrs=None) -> None:
        self.bind(0, self.emit(kind, [self.value(self.inp(0))], attrs, out=0))

    def op_Neg(self):
        self.unary("neg")

    def op_Relu(self):
        self.unary("relu")

    def op_Sigmoid(self):
        self.unary("sigmoid")

    def op_Tanh(self):
        self.unary("tanh")

    def op_Erf(self):
        self.unary("erf")

    def op_Gelu(self):
        self.unary("gelu", {"approximate": self.attr("approximate", b"none").decode()})

    def op_Identity(self):
        self.bind(0, self.value(self.inp(0)))

    def op_Constant(self):
        keys = [a.name for a in self.node.attribute]
        if "value" in keys:
            arr = self.attr("value")
        elif "value_float" in keys:
            arr = np.array(self.attr("value_float"), np.float32)
        elif "value_floats" in keys:
            arr = np.array(self.attr("value_floats"), np.float32)
        elif "value_int" in keys:
            arr = np.array(self.attr("value_int"), np.int64)
        elif "value_ints" in keys:
            arr = np.array(self.attr("value_ints"), np.int64)
        else:
            raise self.error(f"Constant with {', '.join(keys) or 'no value'} is not supported")
        self.bind(0, arr)

    def op_Cast(self):
        to = self.attr("to")
        x = self.value(self.inp(0))
        dt = ONNX_TO_LADDER.get(to)
        if dt is None or DTYPES[dt].kind not in ("float", "int", "uint"):
            raise self.error(f"Cast of '{self.inp(0)}' to {_type_name(to)}: ladder has no such type at run time")
        if dt == "fp8e4m3" and not self.attr("saturate", 1):
            raise self.error("Cast to FLOAT8E4M3FN with saturate=0 is not supported (ladder saturates)")
        if x.type.dtype.name == dt:
            self.bind(0, x)
            return
        self.bind(0, self.emit("cast", [x], {"dtype": dt}, out=0))

    def op_Softmax(self):
        x = self.value(self.inp(0))
        r = x.type.rank
        if self.ver() >= 13:
            self.bind(0, self.emit("softmax", [x], {"axis": self.attr("axis", -1) % max(r, 1)}, out=0))
            return
        axis = self.attr("axis", 1) % max(r, 1)  # older opsets: softmax of the input coerced to 2-D
        flat = self.emit("reshape", [x], {"shape": [math.prod(x.type.shape[:axis]), -1]})
        s = self.emit("softmax", [flat], {"axis": -1})
        self.bind(0, self.emit("reshape", [s], {"shape": list(x.type.shape)}, out=0))

    # normalization ---------------------------------------------------------------------------------
    def _norm_2d(self, x: Value, axis: int) -> tuple[Value, int]:
        r = x.type.rank
        if axis == r - 1:
            return x, x.type.shape[-1]
        d = math.prod(x.type.shape[axis:])
        return self.emit("reshape", [x], {"shape": list(x.type.shape[:axis]) + [d]}), d

    def op_LayerNormalization(self):
        x = self.value(self.inp(0))
        r = x.type.rank
        axis = self.attr("axis", -1) % r
        eps = float(self.attr("epsilon", 1e-5))
        scale = self.value(self.inp(1))
        bias = self.value(self.inp(2)) if self.inp(2) else None
        norm_shape = x.type.shape[axis:]
        flat, d = self._norm_2d(x, axis)
        fused = axis == r - 1 and scale.type.shape == (d,) and (bias is None or bias.type.shape == (d,)) \
            and scale.type.dtype == x.type.dtype
        if fused:
            y = self.emit("layernorm", [flat, scale] + ([bias] if bias else []), {"eps": eps}, out=0)
        else:
            y = self.emit("layernorm", [flat], {"eps": eps})
            if flat is not x:
                y = self.emit("reshape", [y], {"shape": list(x.type.shape)})
            y = self.emit("mul", [y, scale], out=None if bias else 0)
            if bias is not None:
                y = self.emit("add", [y, bias], out=0)
        self.bind(0, y)
        if self.inp_out(1) or self.inp_out(2):
            axes = list(range(axis, r))
            mean = self.emit("reduce", [x], {"kind": "mean", "axes": axes, "keepdims": True},
                             out=1 if self.inp_out(1) else None)
            self.bind(1, mean)
            if self.inp_out(2):
                self.bind(2, self.inv_std(x, mean, axis, d, eps, norm_shape))

    def inp_out(self, i: int) -> bool:
        return i < len(self.node.output) and bool(self.node.output[i])

    def inv_std(self, x: Value, mean: Value, axis: int, d: int, eps: float, norm_shape) -> Value:
        """1 / sqrt(var + eps) over the normalized axes, without a sqrt op: rmsnorm (eps 0) of
        e = [c * (x - mean), k] with c^2 = (D+1)/D and k^2 = (D+1) * eps has mean(e^2) = var + eps, so its
        last element is k / sqrt(var + eps)."""
        if eps <= 0:
            raise self.error("LayerNormalization's InvStdDev output needs epsilon > 0")
        lead = list(x.type.shape[:axis])
        cen = self.emit("sub", [x, mean])
        cen = self.emit("reshape", [cen], {"shape": lead + [d]})
        c = math.sqrt((d + 1) / d)
        k = math.sqrt((d + 1) * eps)
        cen = self.emit("mul", [cen, self.fconst(c, cen)])
        ones = self.emit("reduce", [self.emit("mul", [cen, self.fconst(0.0, cen)])],
                         {"kind": "sum", "axes": [-1], "keepdims": True})
        kk = self.emit("add", [ones, self.fconst(k, ones)])
        e = self.emit("concat", [cen, kk], {"axis": -1})
        n = self.emit("rmsnorm", [e], {"eps": 0.0})
        last = self.emit("slice", [n], {"starts": [d], "ends": [d + 1], "axes": [-1]})
        inv = self.emit("mul", [last, self.fconst(1.0 / k, last)])
        return self.emit("reshape", [inv], {"shape": lead + [1] * len(norm_shape)}, out=2)

    def op_RMSNormalization(self):
        x = self.value(self.inp(0))
        r = x.type.rank
        axis = self.attr("axis", -1) % r
        eps = float(self.attr("epsilon", 1e-5))
        scale = self.value(self.inp(1))
        flat, d = self._norm_2d(x, axis)
        if axis == r - 1 and scale.type.shape == (d,) and scale.type.dtype == x.type.dtype:
            self.bind(0, self.emit("rmsnorm", [flat, scale], {"eps": eps}, out=0))
            return
        y = self.emit("rmsnorm", [flat], {"eps": eps})
        if flat is not x:
            y = self.emit("reshape", [y], {"shape": list(x.type.shape)})
        self.bind(0, self.emit("mul", [y, scale], out=0))

    # reductions -----------------------------------------------------------------------------------
    def reduce(self, kind: str) -> None:
        x = self.value(self.inp(0))
        keep = bool(self.attr("keepdims", 1))
        if self.inp(1):  # an input since opset 13 (ReduceSum) / 18 (the others), an attribute before
            axes = self.need_known(self.inp(1), "the axes").reshape(-1).tolist()
        else:
            axes = list(self.attr("axes", []))
        if not axes and self.attr("noop_with_empty_axes", 0):
            self.bind(0, x)
            return
        if kind == "mean" and not x.type.dtype.is_float:
            raise self.error(f"ReduceMean of integer tensor {x.type} is not supported")
        red = [int(a) % x.type.rank for a in axes] or list(range(x.type.rank))
        if kind == "max" and any(x.type.shape[a] == 0 for a in red) and x.type.dtype.is_float:
            shape = [1 if i in red else d for i, d in enumerate(x.type.shape) if keep or i not in red]
            self.bind(0, np.full(shape, -np.inf, x.type.dtype.np_dtype))  # max of nothing, as ONNX says
            return
        self.bind(0, self.emit("reduce", [x], {"kind": kind, "axes": [int(a) for a in axes], "keepdims": keep},
                               out=0))

    def op_ReduceSum(self):
        self.reduce("sum")

    def op_ReduceMean(self):
        self.reduce("mean")

    def op_ReduceMax(self):
        self.reduce("max")

    # shapes -----------------------------------------------------------------------------------------
    def reshaped(self, shape: tuple[int, ...]) -> list[int]:
        """The output shape of Reshape / Unsqueeze / Squeeze on an input of ``shape``."""
        t = self.node.op_type
        if t == "Reshape":
            spec = [int(s) for s in self.need_known(self.inp(1), "the shape").reshape(-1)]
            if not self.attr("allowzero", 0):
                spec = [shape[i] if s == 0 else s for i, s in enumerate(spec)]
            if spec.count(-1) == 1:
                known = math.prod(s for s in spec if s != -1)
                if known == 0 or math.prod(shape) % known:
                    raise self.error(f"cannot reshape {list(shape)} to {spec}")
                spec[spec.index(-1)] = math.prod(shape) // known
            if math.prod(spec) != math.prod(shape) or any(s < 0 for s in spec):
                raise self.error(f"cannot reshape {list(shape)} to {spec}")
            return spec
        if self.inp(1):  # an input since opset 13, an attribute before
            axes = [int(a) for a in self.need_known(self.inp(1), "the axes").reshape(-1)]
        else:
            axes = list(self.attr("axes", []))
        if t == "Unsqueeze":
            rank = len(shape) + len(axes)
            axes = sorted(a % rank for a in axes)
            out = list(shape)
            for a in axes:
                out.insert(a, 1)
            return out
        r = len(shape)
        axes = {a % r for a in axes} if axes else {i for i, d in enumerate(shape) if d == 1}
        for a in axes:
            if shape[a] != 1:
                raise self.error(f"Squeeze of axis {a}, which has size {shape[a]}")
        return [d for i, d in enumerate(shape) if i not in axes]

    def reshape_op(self):
        x = self.value(self.inp(0))
        shape = self.reshaped(x.type.shape)
        if list(shape) == list(x.type.shape):
            self.bind(0, x)
            return
        self.bind(0, self.emit("reshape", [x], {"shape": shape}, out=0))

    op_Reshape = op_Unsqueeze = op_Squeeze = reshape_op

    def op_Transpose(self):
        x = self.value(self.inp(0))
        perm = list(self.attr("perm", list(reversed(range(x.type.rank)))))
        self.bind(0, self.emit("transpose", [x], {"perm": perm}, out=0))

    def op_Concat(self):
        vals = [self.value(n) for n in self.node.input if n]
        vals = [v for v in vals if v.type.size or len(vals) == 1] or vals
        if len(vals) == 1:
            self.bind(0, vals[0])
            return
        self.bind(0, self.emit("concat", vals, {"axis": self.attr("axis") % vals[0].type.rank}, out=0))

    def slice_spec(self, shape) -> tuple[slice, ...]:
        if self.ver() >= 10:
            starts = self.need_known(self.inp(1), "Slice's starts").reshape(-1).tolist()
            ends = self.need_known(self.inp(2), "Slice's ends").reshape(-1).tolist()
            axes = self.need_known(self.inp(3), "Slice's axes").reshape(-1).tolist() if self.inp(3) \
                else list(range(len(starts)))
            steps = self.need_known(self.inp(4), "Slice's steps").reshape(-1).tolist() if self.inp(4) \
                else [1] * len(starts)
        else:
            starts, ends = list(self.attr("starts")), list(self.attr("ends"))
            axes = list(self.attr("axes", list(range(len(starts)))))
            steps = [1] * len(starts)
        out = [slice(None)] * len(shape)
        for s, e, a, st in zip(starts, ends, axes, steps):
            a = int(a) % len(shape)
            if st == 0:
                raise self.error("Slice with step 0")
            start, stop, step = slice(int(s), int(e), int(st)).indices(shape[a])
            if step < 0 and stop < 0:
                stop = -shape[a] - 1
            out[a] = slice(start, stop, step)
        return tuple(out)

    def op_Slice(self):
        x = self.value(self.inp(0))
        spec = self.slice_spec(x.type.shape)
        axes = [i for i, s in enumerate(spec) if s != slice(None)]
        if not axes:
            self.bind(0, x)
            return
        self.bind(0, self.emit("slice", [x], {"starts": [spec[a].start for a in axes],
                                               "ends": [spec[a].stop for a in axes], "axes": axes,
                                               "steps": [spec[a].step for a in axes]}, out=0))

    def op_Gather(self):
        table = self.value(self.inp(0))
        idx_name = self.inp(1)
        known = self.known(idx_name)
        if known is not None:
            idx = self.const(self.as_i32(known, "Gather's indices"), "i32", hint=f"{idx_name}.i32")
        else:
            idx = self.value(idx_name)
        axis = self.attr("axis", 0) % table.type.rank
        self.bind(0, self.emit("gather", [table, idx], {"axis": axis}, out=0))

    # matmuls ----------------------------------------------------------------------------------------
    def matmul(self, a: Value, b: Value, out: int | None = 0, transpose_b: bool = False) -> Value:
        """numpy matmul semantics (1-D operands) on ladder's rank >= 2 matmul."""
        a2 = self.emit("reshape", [a], {"shape": [1, a.type.shape[0]]}) if a.type.rank == 1 else a
        b2 = self.emit("reshape", [b], {"shape": [b.type.shape[0], 1]}) if b.type.rank == 1 else b
        if a.type.rank == 1 or b.type.rank == 1:
            y = self.emit("matmul", [a2, b2], {"transpose_b": transpose_b})
            shape = list(y.type.shape)
            if b.type.rank == 1:
                shape.pop(-1)
            if a.type.rank == 1:
                shape.pop(-1 if b.type.rank == 1 else -2)
            return self.emit("reshape", [y], {"shape": shape}, out=out)
        return self.emit("matmul", [a2, b2], {"transpose_b": transpose_b}, out=out)

    def op_MatMul(self):
        a, b = self.value(self.inp(0)), self.value(self.inp(1))
        if a.type.dtype != b.type.dtype:
            raise self.error(f"MatMul of {a.type} and {b.type}")
        self.bind(0, self.matmul(a, b))

    def op_Gemm(self):
        a, b = self.value(self.inp(0)), self.value(self.inp(1))
        alpha, beta = float(self.attr("alpha", 1.0)), float(self.attr("beta", 1.0))
        if self.attr("transA", 0):
            a = self.emit("transpose", [a], {"perm": [1, 0]})
        c = self.inp(2)
        y = self.emit("matmul", [a, b], {"transpose_b": bool(self.attr("transB", 0))},
                      out=0 if alpha == 1 and not c else None)
        if alpha != 1:
            y = self.emit("mul", [y, self.fconst(alpha, y)], out=None if c else 0)
        if c:
            cv = self.value(c)
            if beta != 1:
                cv = self.emit("mul", [cv, self.fconst(beta, cv)])
            y = self.emit("add", [y, cv], out=0)
        self.bind(0, y)

    def int_minus_zero(self, x: Value, zp_name: str | None, axis_of_vector: int) -> Value:
        """i32(x) - zero point (a scalar, or a vector along ``axis_of_vector`` of a 2-D x)."""
        xi = self.emit("cast", [x], {"dtype": "i32"})
        if not zp_name:
            return xi
        zk = self.known(zp_name)
        if zk is not None and not np.any(zk):
            return xi
        z = self.value(zp_name)
        z = self.emit("cast", [z], {"dtype": "i32"}) if z.type.dtype.name != "i32" else z
        if z.type.size > 1 and z.type.rank == 1 and x.type.rank >= 2:
            shape = [1] * x.type.rank
            shape[axis_of_vector] = z.type.size
            z = self.emit("reshape", [z], {"shape": shape})
        return self.emit("sub", [xi, z])

    def op_MatMulInteger(self):
        a, b = self.value(self.inp(0)), self.value(self.inp(1))
        if not self.inp(2) and not self.inp(3):
            self.bind(0, self.matmul(a, b))
            return
        ai = self.int_minus_zero(a, self.inp(2), a.type.rank - 2)
        bi = self.int_minus_zero(b, self.inp(3), b.type.rank - 1)
        self.bind(0, self.matmul(ai, bi))

    def op_QLinearMatMul(self):
        n = list(self.node.input) + [""] * 8
        a, b = self.value(n[0]), self.value(n[3])
        ai = self.int_minus_zero(a, n[2], a.type.rank - 2)
        bi = self.int_minus_zero(b, n[5], b.type.rank - 1)
        f = self.emit("cast", [self.matmul(ai, bi, out=None)], {"dtype": "f32"})
        sa, sb, sy = (self.known(n[i]) for i in (1, 4, 6))
        if all(s is not None and s.size == 1 for s in (sa, sb, sy)):  # a * b / y as ONNX computes it
            mult = sa.astype(np.float32).reshape(()) * sb.astype(np.float32).reshape(()) \
                / sy.astype(np.float32).reshape(())
            m = self.const(np.full((1,) * f.type.rank, mult, np.float32), "f32", "mult")
        else:
            va, vb, vy = (self.f32_value(n[i]) for i in (1, 4, 6))
            if vb.type.rank == 1 and vb.type.size > 1:
                vb = self.emit("reshape", [vb], {"shape": [1, vb.type.size]})
            if va.type.rank == 1 and va.type.size > 1:
                va = self.emit("reshape", [va], {"shape": [va.type.size, 1]})
            m = self.emit("div", [self.emit("mul", [va, vb]), vy])
        f = self.emit("mul", [f, m])
        zero = None
        zk = self.known(n[7]) if n[7] else None
        if n[7] and not (zk is not None and not np.any(zk)):
            zero = self.f32_value(n[7])
        out_dt = self.value_dtype(n[7]) if n[7] else a.type.dtype.name
        self.bind(0, self.finish_q(f, zero, out_dt, out=0))

    def f32_value(self, name: str) -> Value:
        k = self.known(name)
        if k is not None and name not in self.inits:
            return self.const(k.astype(np.float32), "f32", hint=f"{name}.f32")
        v = self.value(name)
        return v if v.type.dtype.name == "f32" else self.emit("cast", [v], {"dtype": "f32"})

    def value_dtype(self, name: str) -> str:
        k = self.known(name)
        if k is not None:
            return self.ladder_dtype(k, f"'{name}'")
        return self.value(name).type.dtype.name

    # quantization ------------------------------------------------------------------------------------
    def quant_layout(self, x_shape, s_shape, axis: int, block: int) -> tuple[str, tuple[int, ...]]:
        """('tensor' | 'axis' | 'block', scale shape at x's rank)."""
        r = len(x_shape)
        if math.prod(s_shape) == 1 and (block == 0 or len(s_shape) <= 1):
            return "tensor", (1,) * max(r, 1)
        a = axis % r
        if block:
            if len(s_shape) != r:
                raise self.error(f"blocked quantization needs a scale of rank {r}, got {list(s_shape)}")
            return "block", tuple(s_shape)
        if len(s_shape) != 1 or s_shape[0] != x_shape[a]:
            raise self.error(f"per-axis scale {list(s_shape)} does not match axis {a} of {list(x_shape)}")
        shape = [1] * r
        shape[a] = x_shape[a]
        return "axis", tuple(shape)

    def op_DequantizeLinear(self):
        xname, sname, zname = self.inp(0), self.inp(1), self.inp(2)
        xk = self.inits.get(xname)
        sk, zk = self.known(sname), (self.known(zname) if zname else None)
        x_shape = tuple(xk.shape) if xk is not None else self.value(xname).type.shape
        s_shape = tuple(sk.shape) if sk is not None else self.value(sname).type.shape
        r = max(len(x_shape), 1)
        axis = self.attr("axis", 1) if len(x_shape) else 0
        block = int(self.attr("block_size", 0))
        layout, sshape = self.quant_layout(x_shape or (1,), s_shape, axis, block)
        if not x_shape:
            x_shape = ()
        # Output type: the scale's (or output_dtype's).
        out_dt = ONNX_TO_LADDER.get(self.attr("output_dtype", 0)) if self.attr("output_dtype", 0) else None
        s_dt = (self.ladder_dtype(sk, f"scale '{sname}'") if sk is not None else self.value(sname).type.dtype.name)
        out_dt = out_dt or s_dt
        # codes
        if xk is not None:
            cdt = self.ladder_dtype(xk, f"'{xname}'")
            codes = self.param(xname, xk.reshape(x_shape or (1,)), cdt)
        else:
            codes = self.value(xname)
            if not x_shape:
                codes = self.emit("reshape", [codes], {"shape": [1]})
        cdt = codes.type.dtype
        wide = cdt.bits > 8
        if cdt.kind not in ("int", "uint", "float"):
            raise self.error(f"DequantizeLinear of {codes.type} codes is not supported")
        # scale and zero as f32 at x's rank
        scale = self.scale_value(sname, sk, sshape)
        zero = None
        if zname and not (zk is not None and not np.any(zk)):
            zero = self.scale_value(zname, zk, sshape, is_zero=True)
        if layout == "tensor":
            lax, group = (r - 2 if r >= 2 else 0), -1
        elif layout == "axis":
            a = axis % r
            lax, group = (0 if r == 1 else (r - 2 if a == r - 1 else r - 1)), 0
        else:
            lax, group = axis % r, block
        if wide:  # i16/i32 codes: the dequant op takes <= 8-bit codes, so compose it
            self.bind(0, self.dequant_wide(codes, scale, zero, out_dt, layout, axis % r, block, bool(x_shape)))
            return
        attrs = {"axis": lax, "group": group, "dtype": out_dt}
        if zero is not None:
            attrs["zero_mode"] = "original"
        y = self.emit("dequant", [codes, scale] + ([zero] if zero is not None else []), attrs,
                      out=None if not x_shape else 0)
        if not x_shape:
            y = self.emit("reshape", [y], {"shape": []}, out=0)
        self.bind(0, y)

    def expand_blocks(self, s: Value, x: Value, axis: int, block: int) -> Value:
        """A blocked scale [.., ceil(D / block), ..] repeated to x's shape along ``axis`` (a gather)."""
        d = x.type.shape[axis]
        idx = self.const((np.arange(d) // block).astype(np.int32), "i32", hint=f"{s.name}.blocks")
        return self.emit("gather", [s, idx], {"axis": axis})

    def dequant_wide(self, codes, scale, zero, out_dt, layout, axis, block, shaped) -> Value:
        """(f32(codes) - zero) * scale for codes wider than 8 bits."""
        f = self.emit("cast", [codes], {"dtype": "f32"})
        if layout == "block":
            scale = self.expand_blocks(scale, codes, axis, block)
            zero = self.expand_blocks(zero, codes, axis, block) if zero is not None else None
        if zero is not None:
            f = self.emit("sub", [f, zero])
        y = self.emit("mul", [f, scale])
        if not shaped:
            y = self.emit("reshape", [y], {"shape": []})
        return self.emit("cast", [y], {"dtype": out_dt}, out=0)

    def scale_value(self, name: str, known, shape, is_zero: bool = False) -> Value:
        """A scale or zero point as an f32 value of ``shape``: an f32 param (initializer), const or a
        reshape + cast of a run-time value."""
        if known is not None:
            arr = np.asarray(known).astype(np.float32).reshape(shape)
            if name in self.inits:
                return self.param(name, arr, "f32")
            return self.const(arr, "f32", hint=name)
        v = self.value(name)
        if v.type.dtype.name != "f32" and (is_zero or not v.type.dtype.is_float):
            v = self.emit("cast", [v], {"dtype": "f32"})
        if v.type.shape != tuple(shape):
            v = self.emit("reshape", [v], {"shape": list(shape)})
        return v

    def op_QuantizeLinear(self):
        xname, sname, zname = self.inp(0), self.inp(1), self.inp(2)
        x = self.value(xname)
        sk, zk = self.known(sname), (self.known(zname) if zname else None)
        s_shape = tuple(sk.shape) if sk is not None else self.value(sname).type.shape
        x_shape = x.type.shape
        r = max(len(x_shape), 1)
        axis = self.attr("axis", 1) if x_shape else 0
        block = int(self.attr("block_size", 0))
        layout, sshape = self.quant_layout(x_shape or (1,), s_shape, axis, block)
        if not x_shape:
            x = self.emit("reshape", [x], {"shape": [1]})
        out_to = self.attr("output_dtype", 0)
        if out_to:
            out_dt = ONNX_TO_LADDER.get(out_to)
        elif zname:
            out_dt = self.value_dtype(zname)
        else:
            out_dt = "u8"
        if out_dt is None or DTYPES[out_dt].kind not in ("int", "uint", "float") or \
                (DTYPES[out_dt].is_float and out_dt not in ("fp8e4m3", "fp4")):
            raise self.error(f"QuantizeLinear to {_type_name(out_to) if out_to else out_dt} is not supported")
        if out_dt == "fp8e4m3" and not self.attr("saturate", 1):
            raise self.error("QuantizeLinear to FLOAT8E4M3FN with saturate=0 is not supported (ladder saturates)")
        fdt = x.type.dtype.name
        scale = self.scale_value(sname, sk, sshape)
        if scale.type.dtype.name != fdt:
            scale = self.emit("cast", [scale], {"dtype": fdt})
        zero_v = None
        if zname and not (zk is not None and not np.any(zk)):
            zero_v = self.scale_value(zname, zk, sshape, is_zero=True)
            if zero_v.type.dtype.name != fdt:
                zero_v = self.emit("cast", [zero_v], {"dtype": fdt})
        if layout == "block":
            scale = self.expand_blocks(scale, x, axis % r, block)
            if zero_v is not None:
                zero_v = self.expand_blocks(zero_v, x, axis % r, block)
        q = self.emit("div", [x, scale])
        y = self.finish_q(q, zero_v, out_dt, out=0 if x_shape else None)
        if not x_shape:
            y = self.emit("reshape", [y], {"shape": []}, out=0)
        self.bind(0, y)

    def finish_q(self, f: Value, zero: Value | None, out_dt: str, out) -> Value:
        dt = DTYPES[out_dt]
        if dt.is_float:  # float8/float4: no rounding, saturate (ladder's cast saturates)
            if zero is not None:
                f = self.emit("add", [f, zero])
            return self.emit("cast", [f], {"dtype": out_dt}, out=out)
        f = self.emit("round", [f])
        if zero is not None:
            f = self.emit("add", [f, zero])
        lo, hi = dt.value_range
        f = self.emit("clamp", [f], {"min": lo, "max": hi})
        return self.emit("cast", [f], {"dtype": out_dt}, out=out)

    # com.microsoft.MatMulNBits ----------------------------------------------------------------------
    def op_MatMulNBits(self):
        n = self.node.input
        a = self.value(n[0])
        K, N = int(self.attr("K")), int(self.attr("N"))
        bits, block = int(self.attr("bits", 4)), int(self.attr("block_size"))
        if bits not in (2, 4, 8):
            raise self.error(f"MatMulNBits with bits={bits} is not supported (2, 4 and 8 are)")
        if len(n) > 4 and n[4]:
            raise self.error("MatMulNBits with g_idx (act-order) is not supported")
        bk = self.inits.get(n[1])
        sk = self.known(n[2])
        if bk is None or sk is None:
            raise self.error("MatMulNBits needs B and scales as initializers")
        nb = (K + block - 1) // block
        blob = block * bits // 8
        if bk.dtype != np.uint8 or bk.size != N * nb * blob:
            raise self.error(f"MatMulNBits B '{n[1]}' is {bk.dtype}{list(bk.shape)}; expected uint8 "
                             f"[{N}, {nb}, {blob}]")
        if sk.size != N * nb:
            raise self.error(f"MatMulNBits scales '{n[2]}' has {sk.size} values; expected N * n_blocks = {N * nb}")
        if a.type.shape[-1] != K:
            raise self.error(f"MatMulNBits input A {a.type} does not have K = {K} columns")
        codes = unpack_bits(bk.reshape(N, nb * blob), bits)[:, :K]  # [N, K] codes 0 .. 2^bits - 1
        scale = self.param(n[2], sk.astype(np.float32).reshape(N, nb), "f32")
        zname = n[3] if len(n) > 3 and n[3] else None
        ddt = a.type.dtype.name
        attrs = {"axis": -1, "group": block, "dtype": ddt}
        if zname is None:
            sdt = {2: "i2", 4: "i4", 8: "i8"}[bits]
            w = self.param(n[1], codes.astype(np.int16) - 2 ** (bits - 1), sdt)
            deq = self.emit("dequant", [w, scale], attrs, hint=f"{n[1]}")
        else:
            zk = self.known(zname)
            if zk is None:
                raise self.error("MatMulNBits needs its zero points as an initializer")
            if zk.dtype == np.uint8:
                per = (nb * bits + 7) // 8
                if zk.size != N * per:
                    raise self.error(f"MatMulNBits zero_points '{zname}' has {zk.size} bytes; expected {N * per}")
                z = unpack_bits(zk.reshape(N, per), bits)[:, :nb].astype(np.float32)
            else:
                if zk.size != N * nb:
                    raise self.error(f"MatMulNBits zero_points '{zname}' has {zk.size} values; expected {N * nb}")
                z = zk.astype(np.float32).reshape(N, nb)
            udt = {2: "u2", 4: "u4", 8: "u8"}[bits]
            w = self.param(n[1], codes, udt)
            zero = self.param(zname, z, "f32")
            deq = self.emit("dequant", [w, scale, zero], dict(attrs, zero_mode="original"), hint=f"{n[1]}")
        bias = n[5] if len(n) > 5 and n[5] else None
        y = self.matmul(a, deq, out=None if bias else 0, transpose_b=True)
        if bias:
            y = self.emit("add", [y, self.value(bias)], out=0)
        self.bind(0, y)


_FOLDABLE = {"Identity", "Cast", "Add", "Sub", "Mul", "Neg", "Concat", "Gather", "Unsqueeze", "Squeeze",
             "Reshape", "Slice"}


def unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    """uint8 [..., B] holding ``8 / bits`` codes per byte, lowest bits first -> uint8 [..., B * 8 / bits]."""
    packed = np.asarray(packed, np.uint8)
    per = 8 // bits
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    codes = (packed[..., None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.reshape(packed.shape[:-1] + (packed.shape[-1] * per,))


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of ``unpack_bits`` (the last axis a multiple of ``8 / bits``)."""
    codes = np.asarray(codes, np.uint8)
    per = 8 // bits
    grouped = codes.reshape(codes.shape[:-1] + (codes.shape[-1] // per, per))
    out = np.zeros(grouped.shape[:-1], np.uint8)
    for j in range(per):
        out |= (grouped[..., j] & ((1 << bits) - 1)) << (j * bits)
    return out


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.$]", "_", name or "")


__all__ = ["load", "from_model", "unpack_bits", "pack_bits", "ONNX_TO_LADDER", "SUPPORTED"]
