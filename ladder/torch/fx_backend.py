"""``torch.compile(model, backend="ladder")``: the FX graph dynamo captures is cut into runs of calls ladder
lowers (``RULES``); each run becomes one ladder graph compiled for the CPU, called in place of the run, and
everything else stays torch.

Inference only: with gradients to compute (grad mode on and an input that requires grad) the backend hands
the whole graph back to torch; under ``torch.no_grad()`` or ``torch.inference_mode()`` dynamo compiles again
and ladder takes its part. Float32 CPU tensors of static shape only: a node whose shape is symbolic (dynamo's
automatic dynamic shapes, after a call with new sizes) stays torch; pass ``dynamic=False`` to have dynamo
recompile for each new shape instead. Threads: ``torch.get_num_threads()`` at each call.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx

from ..builder import Builder
from ..compile import compile as ladder_compile
from ..errors import LadderError
from ..ir import Value

# -- what a node is: static float32 CPU tensors only ---------------------------------------------------------


def tensor_shape(a) -> tuple[int, ...] | None:
    """The static shape of a float32 CPU tensor node (dynamo's ``example_value``, else a propagated ``val``),
    None for anything else: other types, other devices, symbolic sizes, non-tensors."""
    if not isinstance(a, fx.Node):
        return None
    v = a.meta.get("example_value", a.meta.get("val"))
    if not isinstance(v, torch.Tensor) or v.dtype != torch.float32 or v.device.type != "cpu":
        return None
    shape = tuple(v.shape)
    return shape if all(type(d) is int for d in shape) else None


# -- the rules: which calls lower, and how -----------------------------------------------------------------


class Call:
    """One FX call, its arguments bound to a rule's parameter names; ``value`` turns them into ladder values
    while a region is built (``b``, ``env`` set), ``shape`` reads their static shapes."""

    def __init__(self, node: fx.Node, rule: Rule, args: dict):
        self.node, self.rule, self.args = node, rule, args
        self.b: Builder | None = None
        self.env: dict | None = None

    def __getitem__(self, name: str):
        return self.args.get(name)

    def shape(self, name: str | None = None) -> tuple[int, ...] | None:
        return tensor_shape(self.node if name is None else self.args.get(name))

    def value(self, name_or_arg) -> Value:
        a = self.args.get(name_or_arg) if isinstance(name_or_arg, str) else name_or_arg
        if isinstance(a, fx.Node):
            return self.env[a]
        return self.b.const(np.float32(a))  # a Python number operand


@dataclass(frozen=True)
class Rule:
    """A named lowering: the calls it matches (functions, and method names as strings), what its positional
    arguments bind to (a last ``*name`` collects the rest), the values some arguments must keep (their torch
    defaults: anything else is a call ladder does not lower), keywords it ignores, an extra condition and the
    emitter. ``params = None``: the arguments only set the result's shape, which the metadata gives."""

    name: str
    targets: tuple
    params: tuple[str, ...] | None
    emit: Callable[[Call], Value]
    fixed: dict = field(default_factory=dict)      # name -> the values ladder accepts
    ignored: tuple[str, ...] = ()
    when: Callable[[Call], bool] = lambda c: True

    def bind(self, n: fx.Node) -> dict | None:
        if self.params is None:
            return {"input": n.args[0]} if n.args else None
        names, rest = list(self.params), None
        if names and names[-1].startswith("*"):
            rest = names.pop()[1:]
        if len(n.args) > len(names) and rest is None:
            return None
        args = dict(zip(names, n.args))
        if rest is not None:
            args[rest] = tuple(n.args[len(names):])
        for k, v in n.kwargs.items():
            if k in args or (k not in names and k not in self.fixed and k not in self.ignored and k != rest):
                return None
            args[k] = v
        if any(k in args and not any(_same(args[k], ok) for ok in allowed) for k, allowed in self.fixed.items()):
            return None
        return args


def _same(a, b) -> bool:
    return a is b or (type(a) is type(b) and a == b)


def _number(a) -> bool:
    return type(a) in (int, float)


def _f32_or_number(*args) -> bool:
    return all(_number(a) or tensor_shape(a) is not None for a in args)


def _binary(kind: str):
    return lambda c: c.b.op(kind, c.value("input"), c.value("other"))


def _unary(kind: str):
    return lambda c: c.b.op(kind, c.value("input"))


def _rank(c: Call, name: str) -> int:
    s = c.shape(name)
    return -1 if s is None else len(s)


def _axes(dims) -> tuple[int, ...]:
    return (dims,) if isinstance(dims, int) else tuple(dims)


def _norm(kind: str):
    def emit(c: Call) -> Value:
        ops = [c.value("input")]
        w, bias = c["weight"], c["bias"]
        if w is None and bias is not None:  # ladder's layernorm takes a bias after a weight only
            w = np.ones(c.shape("input")[-1], np.float32)
            ops.append(c.b.const(w))
        elif w is not None:
            ops.append(c.value(w))
        if bias is not None:
            ops.append(c.value(bias))
        eps = c["eps"]
        if eps is None:  # torch's rms_norm default; layer_norm's is 1e-5
            eps = torch.finfo(torch.float32).eps if kind == "rmsnorm" else 1e-5
        return c.b.op(kind, *ops, eps=float(eps))
    return emit


def _normalizes_last_axis(c: Call) -> bool:
    shape = c["normalized_shape"]
    return isinstance(shape, (list, tuple, torch.Size)) and tuple(shape) == c.shape("input")[-1:] \
        and _number(c["eps"] if c["eps"] is not None else 0.0)


def _linear(c: Call) -> Value:
    y = c.b.matmul(c.value("input"), c.value("weight"), transpose_b=True)
    return y if c["bias"] is None else c.b.add(y, c.value("bias"))


def _pow(c: Call) -> Value:
    x = c.value("input")
    return c.b.mul(x, x) if c["exponent"] == 2 else c.b.sqrt(x)


def _reduce(kind: str):
    return lambda c: c.b.reduce(c.value("input"), kind=kind, axes=_axes(c["dim"]), keepdims=bool(c["keepdim"]))


def _transpose(c: Call) -> Value:
    rank = len(c.shape())
    perm = list(range(rank))
    i, j = (int(d) % rank for d in (c["dim0"], c["dim1"]))
    perm[i], perm[j] = perm[j], perm[i]
    return c.b.transpose(c.value("input"), perm=perm)


def _permute_dims(c: Call) -> tuple[int, ...]:
    dims = c["dims"]
    if len(dims) == 1 and isinstance(dims[0], (list, tuple, torch.Size)):  # x.permute([0, 2, 1])
        dims = dims[0]
    return tuple(int(d) % len(c.shape()) for d in dims)


def _float32_only(c: Call) -> bool:
    """``x.to(torch.float32)``, ``x.to(dtype=torch.float32)``: a no-op on float32 (no device, no copy)."""
    return all(a is torch.float32 for a in (*c["args"], *c.node.kwargs.values()))


FLOAT32 = (None, torch.float32)
RULES: tuple[Rule, ...] = (
    Rule("add", (operator.add, torch.add, "add"), ("input", "other"), _binary("add"), {"alpha": (1,)},
         when=lambda c: _f32_or_number(c["input"], c["other"])),
    Rule("sub", (operator.sub, torch.sub, "sub"), ("input", "other"), _binary("sub"), {"alpha": (1,)},
         when=lambda c: _f32_or_number(c["input"], c["other"])),
    Rule("mul", (operator.mul, torch.mul, "mul"), ("input", "other"), _binary("mul"),
         when=lambda c: _f32_or_number(c["input"], c["other"])),
    Rule("div", (operator.truediv, torch.div, torch.true_divide, "div", "true_divide"), ("input", "other"),
         _binary("div"), {"rounding_mode": (None,)}, when=lambda c: _f32_or_number(c["input"], c["other"])),
    Rule("neg", (operator.neg, torch.neg, "neg"), ("input",), _unary("neg")),
    Rule("relu", (torch.relu, F.relu, "relu"), ("input", "inplace"), _unary("relu"), {"inplace": (False,)}),
    Rule("silu", (F.silu, torch._C._nn.silu), ("input", "inplace"), _unary("silu"), {"inplace": (False,)}),
    Rule("sigmoid", (torch.sigmoid, F.sigmoid, "sigmoid"), ("input",), _unary("sigmoid")),
    Rule("tanh", (torch.tanh, F.tanh, "tanh"), ("input",), _unary("tanh")),
    Rule("exp", (torch.exp, "exp"), ("input",), _unary("exp")),
    Rule("erf", (torch.erf, "erf"), ("input",), _unary("erf")),
    Rule("sqrt", (torch.sqrt, "sqrt"), ("input",), _unary("sqrt")),
    Rule("rsqrt", (torch.rsqrt, "rsqrt"), ("input",),
         lambda c: c.b.div(c.b.const(np.float32(1)), c.b.sqrt(c.value("input")))),
    Rule("gelu", (F.gelu,), ("input", "approximate"),
         lambda c: c.b.gelu(c.value("input"), approximate=c["approximate"] or "none"),
         {"approximate": ("none", "tanh")}),
    Rule("pow", (torch.pow, operator.pow, "pow"), ("input", "exponent"), _pow,
         when=lambda c: tensor_shape(c["input"]) is not None and _number(c["exponent"])
         and c["exponent"] in (2, 0.5)),
    Rule("softmax", (torch.softmax, F.softmax, "softmax"), ("input", "dim"),
         lambda c: c.b.softmax(c.value("input"), axis=int(c["dim"])), {"dtype": FLOAT32}, ("_stacklevel",),
         when=lambda c: isinstance(c["dim"], int)),
    Rule("layer_norm", (F.layer_norm, torch.layer_norm), ("input", "normalized_shape", "weight", "bias", "eps"),
         _norm("layernorm"), when=_normalizes_last_axis),
    Rule("rms_norm", (F.rms_norm, torch.rms_norm), ("input", "normalized_shape", "weight", "eps"),
         _norm("rmsnorm"), when=_normalizes_last_axis),
    Rule("linear", (F.linear,), ("input", "weight", "bias"), _linear,
         when=lambda c: _rank(c, "input") >= 2 and _rank(c, "weight") == 2),
    Rule("matmul", (torch.matmul, operator.matmul, "matmul", torch.bmm, "bmm", torch.mm, "mm"), ("input", "other"),
         lambda c: c.b.matmul(c.value("input"), c.value("other")),
         when=lambda c: _rank(c, "input") >= 2 and _rank(c, "other") >= 2),
    Rule("mean", (torch.mean, "mean"), ("input", "dim", "keepdim"), _reduce("mean"), {"dtype": FLOAT32},
         when=lambda c: c["dim"] not in (None, [], ())),
    Rule("sum", (torch.sum, "sum"), ("input", "dim", "keepdim"), _reduce("sum"), {"dtype": FLOAT32},
         when=lambda c: c["dim"] not in (None, [], ())),
    Rule("amax", (torch.amax, "amax"), ("input", "dim", "keepdim"), _reduce("max"),
         when=lambda c: c["dim"] not in (None, [], ())),
    Rule("cat", (torch.cat, torch.concat), ("tensors", "dim"),
         lambda c: c.b.concat(*(c.value(a) for a in c["tensors"]), axis=int(c["dim"] or 0)),
         when=lambda c: isinstance(c["tensors"], (list, tuple))  # torch also skips empty 1-d tensors; not ladder
         and all(tensor_shape(a) is not None and len(tensor_shape(a)) == len(c.shape()) for a in c["tensors"])),
    # movement: shapes come from the metadata, so view/reshape need no -1 resolving
    Rule("reshape", ("view", "reshape", torch.reshape, "unsqueeze", torch.unsqueeze, "squeeze", torch.squeeze,
                     "flatten", torch.flatten), None, lambda c: c.b.reshape(c.value("input"), shape=c.shape())),
    Rule("transpose", ("transpose", torch.transpose, "swapaxes", torch.swapaxes), ("input", "dim0", "dim1"),
         _transpose),
    Rule("t", ("t", torch.t), ("input",), lambda c: c.b.transpose(c.value("input"), perm=[1, 0]),
         when=lambda c: len(c.shape()) == 2),
    Rule("permute", ("permute", torch.permute), ("input", "*dims"),
         lambda c: c.b.transpose(c.value("input"), perm=_permute_dims(c))),
    Rule("identity", ("contiguous", "float"), ("input",), lambda c: c.value("input"), ignored=("memory_format",)),
    Rule("to", ("to",), ("input", "*args"), lambda c: c.value("input"), ignored=("dtype",), when=_float32_only),
)
MOVEMENT = ("reshape", "transpose", "t", "permute", "identity", "to")
_BY_TARGET: dict = {}
for _rule in RULES:
    for _t in _rule.targets:
        _BY_TARGET.setdefault(_t, _rule)


def match(n: fx.Node) -> Call | None:
    """The rule-bound call when ladder lowers ``n``: a call of a rule's target whose arguments the rule takes,
    on static float32 CPU tensors, with a static float32 result."""
    if n.op not in ("call_function", "call_method"):
        return None
    try:
        rule = _BY_TARGET.get(n.target)
    except TypeError:  # an unhashable target
        return None
    if rule is None or tensor_shape(n) is None or any(tensor_shape(a) is None for a in n.all_input_nodes):
        return None
    args = rule.bind(n)
    if args is None:
        return None
    c = Call(n, rule, args)
    return c if rule.when(c) else None


# -- regions ----------------------------------------------------------------------------------------------------


class LadderRegion(torch.nn.Module):
    """One compiled ladder graph standing for a run of FX nodes; called with torch tensors, it returns one
    tensor per output node. ``rules`` names the rule that lowered each node, in order."""

    def __init__(self, calls: list[Call], inputs: list[fx.Node], outputs: list[fx.Node], threads: int | None):
        super().__init__()
        b = Builder("region")
        env = {a: b.input(f"in{i}", f"f32{list(tensor_shape(a))}") for i, a in enumerate(inputs)}
        for c in calls:
            c.b, c.env = b, env
            env[c.node] = c.rule.emit(c)
            got, want = tuple(b.graph.type_of(env[c.node].name).shape), c.shape()
            if got != want:  # a lowering bug: fail at compile time, naming the node, not with wrong numbers
                raise LadderError(f"ladder backend: rule '{c.rule.name}' lowered {c.node.format_node()} to shape "
                                  f"{list(got)}; torch says {list(want)}")
        self.rules = [c.rule.name for c in calls]
        self.ops = [c.node.format_node() for c in calls]
        input_names = {v.name: i for i, v in enumerate(env[a] for a in inputs)}
        # an output may be an input passed through (x.contiguous()) or the same value twice: each is returned
        # from where it is, and the ladder graph returns each computed value once
        names = [env[o].name for o in outputs]
        computed = list(dict.fromkeys(n for n in names if n not in input_names))
        self.sources = [("in", input_names[n]) if n in input_names else ("out", computed.index(n)) for n in names]
        self.shapes = [tensor_shape(o) for o in outputs]
        self.module = ladder_compile(b.build(*computed), "cpu", {}, threads=threads) if computed else None
        self.threads = threads

    def forward(self, *tensors):
        out = []
        if self.module is not None:
            feeds = {f"in{i}": t.detach().contiguous().numpy() for i, t in enumerate(tensors)}
            out = list(self.module(feeds, threads=self.threads or torch.get_num_threads()).values())
        return tuple(tensors[i] if kind == "in" else torch.from_numpy(out[i]).reshape(shape)
                     for (kind, i), shape in zip(self.sources, self.shapes))


def _regions(gm: fx.GraphModule, min_compute: int = 1) -> list[list[Call]]:
    """Maximal runs of consecutive lowered nodes (consecutive in a topological order, so every run is convex:
    no path leaves it and comes back), keeping the runs with some arithmetic: a lone reshape costs a call and
    gains nothing."""
    runs, cur = [], []
    for n in gm.graph.nodes:
        c = match(n)
        if c is not None:
            cur.append(c)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [r for r in runs if sum(c.rule.name not in MOVEMENT for c in r) >= min_compute]


def _propagate(gm: fx.GraphModule, example_inputs) -> None:
    """Fake-tensor metadata for graphs that lack dynamo's (a ``symbolic_trace`` of a module); nothing runs."""
    if all("example_value" in n.meta or "val" in n.meta for n in gm.graph.nodes if n.op != "output"):
        return
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    FakeTensorProp(gm, FakeTensorMode(allow_non_fake_inputs=True)).propagate(*example_inputs)


def partition(gm: fx.GraphModule, example_inputs, threads: int | None = None) -> fx.GraphModule:
    """Rewrite ``gm`` so each region ladder lowers is one call of a ``LadderRegion`` submodule
    (``ladder_region_0``, ...); the other nodes stay as they are. A region ladder fails to build (a rule that
    claimed a call ladder cannot take: a bug) stays torch too, with a warning naming the error."""
    _propagate(gm, example_inputs)
    for k, run in enumerate(_regions(gm)):
        nodes = [c.node for c in run]
        calls = [match(n) for n in nodes]  # bound again: earlier regions replaced some of their arguments
        inside = set(nodes)
        inputs = list(dict.fromkeys(a for n in nodes for a in n.all_input_nodes if a not in inside))
        outputs = [n for n in nodes if any(u not in inside for u in n.users)]
        name = f"ladder_region_{k}"
        try:
            region = LadderRegion(calls, inputs, outputs, threads)
        except LadderError as e:  # a rule claimed more than ladder takes: torch keeps the run, and we say so
            warnings.warn(f"ladder backend: the run of {len(nodes)} nodes from %{nodes[0].name} stays torch: {e}",
                          stacklevel=2)
            continue
        gm.add_submodule(name, region)
        with gm.graph.inserting_before(nodes[-1].next):
            call = gm.graph.call_module(name, tuple(inputs))
            for i, o in enumerate(outputs):
                get = gm.graph.call_function(operator.getitem, (call, i))
                get.meta = dict(o.meta)  # later regions read their inputs' shapes from here
                o.replace_all_uses_with(get, delete_user_cb=lambda u: u not in inside)
        for n in reversed(nodes):
            gm.graph.erase_node(n)
    gm.graph.lint()
    gm.recompile()
    return gm


def regions(gm: fx.GraphModule) -> list[LadderRegion]:
    """The ladder regions of a graph module ``partition`` rewrote."""
    return [m for name, m in gm.named_children() if isinstance(m, LadderRegion)]


def backend(gm: fx.GraphModule, example_inputs, threads: int | None = None):
    """A ``torch.compile`` backend: ``torch.compile(model, backend=ladder.torch.backend)`` or
    ``backend="ladder"`` once ``ladder.torch`` is imported. ``threads`` fixes the kernels' thread count."""
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in example_inputs):
        warnings.warn("ladder backend: inference only; with gradients to compute the graph runs as torch "
                      "(call the model under torch.no_grad() or torch.inference_mode())", stacklevel=2)
        return gm.forward
    with torch.no_grad():
        return partition(gm, example_inputs, threads).forward


def _register() -> None:
    from torch._dynamo.backends.registry import list_backends, register_backend

    if "ladder" not in list_backends(exclude_tags=()):
        register_backend(name="ladder")(backend)


_register()
