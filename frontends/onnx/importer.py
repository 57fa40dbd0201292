"""The importer's core: inputs, values, params and consts, typed attribute access with range checks, and the
per-node loop that folds import-time values and calls the converters of the op table."""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper

from ladder.errors import LadderError, Location
from ladder.ir import ConstData, Graph, Value
from ladder.ops import make_op
from ladder.types import DTYPES, TensorType
from ladder.verifier import verify

from . import fold
from . import shapes as shapes_mod
from .common import FOLD_LIMIT_BYTES, NUMPY_TO_LADDER, ONNX_TO_LADDER, sanitize, type_name
from .table import CONVERTERS, MS_DOMAIN, ONNX_DOMAIN, domain_of, supported

_UNSET = object()
# attribute kind wanted -> the AttributeProto types that satisfy it
_ATTR_KINDS = {
    "int": (AttributeProto.INT,), "float": (AttributeProto.FLOAT, AttributeProto.INT),
    "ints": (AttributeProto.INTS,), "floats": (AttributeProto.FLOATS, AttributeProto.INTS),
    "str": (AttributeProto.STRING,), "tensor": (AttributeProto.TENSOR,), "strs": (AttributeProto.STRINGS,),
}
# Python failures a converter may hit on a malformed node; each becomes a LadderError naming the node.
_MALFORMED = (TypeError, ValueError, ZeroDivisionError, IndexError, KeyError, OverflowError, AttributeError)


class Core:
    def __init__(self, model: onnx.ModelProto, path: str, shapes: dict, fold_limit: int = FOLD_LIMIT_BYTES):
        self.model = model
        self.path = path
        self.shapes = {str(k).lstrip("%"): tuple(int(d) for d in v) for k, v in shapes.items()}
        self.opset = {}
        for o in model.opset_import:
            self.opset[o.domain if o.domain not in ("", ONNX_DOMAIN) else ONNX_DOMAIN] = o.version
        self.fold_limit = fold_limit
        self.g = Graph(sanitize(model.graph.name) or "main", loc=Location(path))
        self.weights: dict[str, np.ndarray] = {}
        self.env: dict[str, Value] = {}          # ONNX name -> ladder value
        self.static: dict[str, np.ndarray] = {}  # ONNX name -> array known at import time (Constant, folded)
        self.inits: dict[str, np.ndarray] = {}   # ONNX initializer name -> array
        self.taken: set[str] = set()
        self.param_types: dict[str, TensorType] = {}
        self.param_cache: dict[str, Value] = {}
        self.loc = Location(path)
        self.node = None
        self.producer: dict = {}  # ONNX value name -> the node that writes it (for peephole patterns)

    # -- naming and locations ----------------------------------------------------------------------
    def unique(self, hint: str) -> str:
        base = sanitize(hint) or "v"
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
        self.check_names(graph)
        self.check_supported(graph)
        for t in graph.initializer:
            self.inits[t.name] = self.tensor_array(t, f"initializer '{t.name}'")
        for t in graph.sparse_initializer:
            raise self.error(f"sparse initializer '{t.values.name}' is not supported")
        real = [vi for vi in graph.input if vi.name not in self.inits]  # IR < 4 lists initializers too
        unknown = set(self.shapes) - {vi.name for vi in real} - {sanitize(vi.name) for vi in real}
        if unknown:
            raise self.error(f"--shape names no input of the model: {', '.join(sorted(unknown))}; "
                             f"its inputs: {', '.join(vi.name for vi in real)}")
        for vi in real:
            self.add_input(vi)
        self.producer = {o: n for n in graph.node for o in n.output if o}
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
            except fold.TooBig as e:
                raise LadderError(str(e), self.loc) from None
            except _MALFORMED as e:  # a malformed node the checks above missed: still say where
                raise LadderError(f"{node.op_type} node is malformed ({type(e).__name__}: {e})", self.loc) from None
            except MemoryError:
                raise LadderError(f"{node.op_type} node needs more memory than is available", self.loc) from None
        self.loc = Location(self.path)
        outs = []
        for vi in graph.output:
            v = self.value(vi.name, what=f"graph output '{vi.name}'")
            outs.append(v.name)
        if not outs:
            raise self.error("the graph has no outputs")
        self.g.set_outputs(outs)
        return verify(self.g), self.weights

    def check_names(self, graph) -> None:
        """Every name is text: protobuf hands back bytes for a string field that is not UTF-8."""
        def bad(where: str, field: str, v) -> None:
            if not isinstance(v, str):
                raise LadderError(f"{where}: {field} {bytes(v)!r} is not UTF-8 text", Location(self.path))

        bad("graph", "name", graph.name)
        for kind, vis in (("input", graph.input), ("output", graph.output), ("initializer", graph.initializer)):
            for i, v in enumerate(vis):
                bad(f"graph {kind} {i}", "name", v.name)
        for i, n in enumerate(graph.node):
            where = f"node {i} ({n.op_type if isinstance(n.op_type, str) else '?'})"
            for field in ("name", "op_type", "domain"):
                bad(where, field, getattr(n, field))
            for k, v in enumerate(n.input):
                bad(where, f"input {k}", v)
            for k, v in enumerate(n.output):
                bad(where, f"output {k}", v)
            for a in n.attribute:
                bad(where, "attribute name", a.name)
        for o in self.model.opset_import:
            bad("opset_import", "domain", o.domain)

    def check_supported(self, graph) -> None:
        bad: dict[str, list[str]] = {}
        for i, node in enumerate(graph.node):
            domain = domain_of(node)
            if (domain, node.op_type) not in CONVERTERS:
                key = node.op_type if domain == ONNX_DOMAIN else f"{domain}.{node.op_type}"
                bad.setdefault(key, []).append(node.name or f"#{i}")
            for a in node.attribute:
                if a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
                    bad.setdefault(f"{node.op_type} (with a subgraph)", []).append(node.name or f"#{i}")
        if bad:
            listing = "; ".join(f"{k} ({', '.join(v[:5])}{f', ... {len(v) - 5} more' if len(v) > 5 else ''})"
                                for k, v in sorted(bad.items()))
            raise LadderError(f"unsupported ONNX op(s): {listing}", Location(self.path),
                              notes=(f"supported: {', '.join(supported())}; {MS_DOMAIN}: "
                                     f"{', '.join(supported(MS_DOMAIN))}",))

    def tensor_array(self, t: onnx.TensorProto, what: str) -> np.ndarray:
        if t.data_location == TensorProto.EXTERNAL and not t.raw_data:
            raise self.error(f"{what} keeps its data in an external file that was not loaded")
        dims = list(t.dims)
        if any(d < 0 for d in dims):
            raise self.error(f"{what} has a negative dimension {dims}")
        n = math.prod(dims)
        if n > (1 << 40):
            raise self.error(f"{what} claims {n} elements {dims}; refusing")
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:
            raise self.error(f"cannot read {what} ({type_name(t.data_type)}): {e}") from None
        return np.asarray(arr)

    def add_input(self, vi: onnx.ValueInfoProto) -> None:
        loc = Location(self.path)
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None:
            raise LadderError(f"input '{vi.name}' is not a tensor", loc)
        # int64 inputs (token ids, positions) are taken as i32: ladder.run checks each given value fits.
        dt = "i32" if tt.elem_type == TensorProto.INT64 else \
            "u8" if tt.elem_type == TensorProto.BOOL else ONNX_TO_LADDER.get(tt.elem_type)
        if dt is None:
            raise LadderError(f"input '{vi.name}' is {type_name(tt.elem_type)}, which ladder has no type for "
                              f"at run time (it has {', '.join(sorted(set(ONNX_TO_LADDER.values())))})", loc)
        given = self.shapes.get(vi.name, self.shapes.get(sanitize(vi.name)))
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
        if any(d < 0 for d in shape):
            raise LadderError(f"input '{vi.name}' has a negative dimension {list(shape)}", loc)
        v = Value(self.unique(vi.name), TensorType(DTYPES[dt], shape))
        self.g.inputs.append(v)
        self.g._define(v.name, None, len(self.g.inputs) - 1, loc)
        self.env[vi.name] = v

    # -- values ------------------------------------------------------------------------------------
    def known(self, name: str | None):
        """The import-time array of ``name`` (initializer, Constant or folded), or None."""
        if not name:
            return None
        if name in self.static:
            return self.static[name]
        return self.inits.get(name)

    def need_known(self, name: str | None, what: str) -> np.ndarray:
        arr = self.known(name)
        if arr is None:
            raise self.error(f"{what} ('{name}') must be an initializer or Constant; ladder needs it at "
                             f"import time, but it is computed at run time")
        return arr

    def known_ints(self, name: str | None, what: str) -> list[int]:
        arr = self.need_known(name, what)
        if arr.dtype.kind not in "iu":
            raise self.error(f"{what} ('{name}') must be integers, got {arr.dtype}")
        return [int(v) for v in arr.reshape(-1)]

    def shape_of(self, name: str) -> tuple[int, ...]:
        k = self.known(name)
        return tuple(k.shape) if k is not None else self.value(name).type.shape

    def value(self, name: str | None, what: str | None = None, index: bool = False) -> Value:
        """The ladder value of ONNX value ``name``; import-time arrays become params or consts."""
        if not name:
            raise self.error(f"{self.node.op_type if self.node is not None else 'node'} is missing an input")
        if name in self.env:
            return self.env[name]
        arr = self.known(name)
        if arr is None:
            raise self.error(f"'{name}' is not defined before it is used")
        what = what or f"tensor '{name}'"
        if arr.dtype.kind in "iu" and arr.dtype.itemsize == 8:
            arr = self.as_i32(arr, what)
        elif index and arr.dtype.kind in "iu":
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
        return self.const(np.full((1,) * max(like.type.rank, 1), x, np.float64).astype(dt.np_dtype),
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
        if i >= len(self.node.output):
            return
        name = self.node.output[i]
        if not name:
            return
        if isinstance(v, Value):
            self.env[name] = v
        else:
            self.static[name] = np.asarray(v)

    def out_wanted(self, i: int) -> bool:
        return i < len(self.node.output) and bool(self.node.output[i])

    # -- attributes and inputs ---------------------------------------------------------------------
    def attr(self, name: str, default=_UNSET, kind: str | None = None):
        """Attribute ``name`` of the current node; ``kind`` (int float ints floats str tensor) is checked,
        so an attribute of the wrong type is an error naming the node and the field."""
        for a in self.node.attribute:
            if a.name == name:
                if kind is not None and a.type not in _ATTR_KINDS[kind]:
                    raise self.error(f"{self.node.op_type} attribute '{name}' must be {kind}, got "
                                     f"{AttributeProto.AttributeType.Name(a.type) if a.type in AttributeProto.AttributeType.values() else a.type}")
                if a.type == AttributeProto.TENSOR:
                    return self.tensor_array(a.t, f"attribute '{name}'")
                if a.type == AttributeProto.STRING:
                    try:
                        return a.s.decode("utf-8")
                    except UnicodeDecodeError:
                        raise self.error(f"{self.node.op_type} attribute '{name}' is not UTF-8 text") from None
                v = onnx.helper.get_attribute_value(a)
                if kind == "float":
                    return float(v)
                if kind in ("ints", "floats"):
                    return list(v)
                return v
        if default is _UNSET:
            raise self.error(f"{self.node.op_type} needs attribute '{name}'")
        return default

    def int_attr(self, name: str, default=_UNSET) -> int:
        return self.attr(name, default, "int")

    def float_attr(self, name: str, default=_UNSET) -> float:
        return float(self.attr(name, default, "float"))

    def ints_attr(self, name: str, default=_UNSET) -> list[int]:
        v = self.attr(name, default, "ints")
        return None if v is None else [int(x) for x in v]

    def axis(self, a: int, rank: int, field: str = "axis") -> int:
        """``a`` normalized into [0, rank); out of [-rank, rank) is an error naming the field."""
        if not -rank <= a < rank:
            raise self.error(f"{self.node.op_type} {field} {a} is out of range for rank {rank} "
                             f"(valid: {-rank} .. {rank - 1})")
        return a % rank

    def axes(self, axes, rank: int, field: str = "axes") -> list[int]:
        out = [self.axis(int(a), rank, field) for a in axes]
        if len(set(out)) != len(out):
            raise self.error(f"{self.node.op_type} {field} {list(axes)} repeat an axis")
        return out

    def inp(self, i: int) -> str | None:
        return self.node.input[i] if i < len(self.node.input) and self.node.input[i] else None

    def ver(self, domain: str = ONNX_DOMAIN) -> int:
        return self.opset.get(domain, 1 if domain != ONNX_DOMAIN else 21)

    def broadcast(self, *shapes) -> tuple[int, ...]:
        return shapes_mod.broadcast_shape(self, *shapes)

    def bound(self, shape, itemsize: int = 8, what: str = "result") -> None:
        """Refuse an import-time result of more than the fold limit (before allocating it)."""
        n = math.prod(int(d) for d in shape)
        if n * itemsize > self.fold_limit:
            raise fold.TooBig(f"{self.node.op_type}'s {what} {list(shape)} would take {n * itemsize} bytes, "
                              f"over the import-time folding limit of {self.fold_limit} bytes")

    # -- conversion --------------------------------------------------------------------------------
    def convert(self, node) -> None:
        for a in node.attribute:
            if a.ref_attr_name:
                raise self.error(f"attribute '{a.name}' refers to a function attribute; not supported")
        domain = domain_of(node)
        ins = [self.known(n) if n else None for n in node.input]
        present = [a for n, a in zip(node.input, ins) if n]
        folder = fold.FOLDERS.get(node.op_type) if domain == ONNX_DOMAIN else None
        # Float weights stay params (a lookup in an embedding is a run-time gather, not a new constant).
        weighty = any(n in self.inits and a is not None and a.dtype.kind == "f" and a.size > fold.WEIGHT_SIZE
                      for n, a in zip(node.input, ins))
        if folder is not None and not weighty and present and all(a is not None for a in present):
            try:
                res = folder(self, ins)
            except fold.TooBig as e:
                res = None
                if not fold.has_runtime(node.op_type):
                    raise self.error(str(e)) from None
            except LadderError:
                raise
            except (ValueError, IndexError, TypeError, ArithmeticError):
                res = None  # the run-time path reports a located error
            if res is not None:
                res = res if isinstance(res, (list, tuple)) else [res]
                for i, r in enumerate(res):
                    self.bind(i, np.asarray(r))
                return
        CONVERTERS[(domain, node.op_type)](self)
