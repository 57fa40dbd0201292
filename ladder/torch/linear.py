"""A drop-in ``nn.Linear`` whose weight is quantized by ladder's recipes and whose forward runs ladder's compiled
CPU kernels through the ``ladder::linear`` custom op, so ``torch.compile(fullgraph=True)`` traces it as one
opaque call, without graph breaks. Inference only: the op has no gradient.

The kernels are ladder modules compiled for a fixed row count. A call with M rows runs them on chunks of
``MAX_ROWS`` rows and then on the powers of two that make up the rest (M = 7: 4 + 2 + 1), so a module
compiles at most ``log2(MAX_ROWS) + 1`` kernels, whatever row counts it sees, and no row is padded.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import quant
from ..builder import Builder
from ..compile import compile as ladder_compile
from ..errors import LadderError
from ..ir import Graph
from ..types import DTYPES

MAX_ROWS = 256


@dataclass(frozen=True)
class Recipe:
    """How a weight becomes codes of one type: a ``ladder.quant`` scheme, a zero mode and the default group
    (elements along K sharing a scale: -1 per tensor, 0 per output channel, g > 0 groups of g)."""

    scheme: str
    zero_mode: str
    group: int


def _recipe(name: str) -> Recipe | None:
    """BitNet b1.58's absmean per tensor for ternary; round to nearest for integer codes, symmetric for signed
    ones and with GPTQ-style zero points for unsigned ones, per channel at 8 bits and in groups of 32 below."""
    dt = DTYPES[name]
    if dt.kind == "ternary":
        return Recipe("absmean", "none", -1)
    if dt.kind in ("int", "uint") and 2 <= dt.bits <= 8:
        return Recipe("rtn", "none" if dt.kind == "int" else "original", 0 if dt.bits == 8 else 32)
    return None  # floats, table types and 1-bit codes (rounding to one bit loses the weight) have none here


RECIPES: dict[str, Recipe] = {n: r for n in DTYPES if (r := _recipe(n)) is not None}


@dataclass(frozen=True)
class QuantizedWeight:
    """A weight ``[N, K]`` as codes and scales (and zero points): ``ladder.quant``'s (axis -1, group) layout."""

    codes: np.ndarray
    scale: np.ndarray
    zero: np.ndarray | None
    dtype: str
    group: int
    zero_mode: str

    @classmethod
    def of(cls, w: np.ndarray, dtype: str, group: int | None = None) -> QuantizedWeight:
        if dtype not in RECIPES:
            raise LadderError(f"ladder.torch: dtype '{dtype}' has no quantization recipe; known: "
                              f"{', '.join(RECIPES)}")
        r = RECIPES[dtype]
        group = r.group if group is None else int(group)
        k = w.shape[-1]
        if group < -1 or (group > 0 and k % group):
            raise LadderError(f"ladder.torch: group {group} must be -1 (per tensor), 0 (per output channel) or "
                              f"a size dividing in_features {k}")
        q = quant.quantize(w, r.scheme, DTYPES[dtype], -1, group, r.zero_mode)
        return cls(q[0], q[1], q[2] if len(q) > 2 else None, dtype, group, r.zero_mode)

    def dequantize(self) -> np.ndarray:
        return quant.dequantize(self.codes, DTYPES[self.dtype], self.scale, self.zero, -1, self.group,
                                self.zero_mode)


# The custom op receives a key, never a Python object: the kernels live here, dropped with their module.
_KERNELS: weakref.WeakValueDictionary[int, _Kernel] = weakref.WeakValueDictionary()
_KEYS = itertools.count()


class _Kernel:
    """A quantized weight (+ bias) and its compiled ladder modules, one per chunk row count."""

    def __init__(self, weight: QuantizedWeight, bias: np.ndarray | None, threads: int | None):
        self.weight, self.threads = weight, threads
        self.n, self.k = weight.codes.shape
        self.arrays = {"w": weight.codes, "s": weight.scale}
        if weight.zero is not None:
            self.arrays["z"] = weight.zero
        if bias is not None:
            self.arrays["b"] = bias
        self.modules: dict[int, object] = {}
        self._lock = threading.Lock()
        self.key = next(_KEYS)
        _KERNELS[self.key] = self

    def __deepcopy__(self, memo):
        return self  # never changes after quantization: copies of a model share the weights and kernels

    def graph(self, m: int) -> Graph:
        """``x f32[m, K] -> x @ dequant(w, s[, z]).T (+ b)``: the fused low-bit matmul after ladder's passes."""
        b = Builder("linear")
        x = b.input("x", f"f32[{m}, {self.k}]")
        operands = [b.param("w", f"{self.weight.dtype}[{self.n}, {self.k}]"),
                    b.param("s", f"f32{list(self.weight.scale.shape)}")]
        if self.weight.zero is not None:
            operands.append(b.param("z", f"f32{list(self.weight.zero.shape)}"))
        d = b.dequant(*operands, group=self.weight.group, zero_mode=self.weight.zero_mode)
        y = b.matmul(x, d, transpose_b=True)
        if "b" in self.arrays:
            y = b.add(y, b.param("b", f"f32[{self.n}]"))
        return b.build(y)

    def module(self, m: int):
        mod = self.modules.get(m)
        if mod is None:
            with self._lock:
                mod = self.modules.get(m)
                if mod is None:
                    mod = ladder_compile(self.graph(m), "cpu", self.arrays, threads=self.threads)
                    self.modules[m] = mod
        return mod

    def __call__(self, x2d: np.ndarray, threads: int) -> np.ndarray:
        parts, at = [], 0
        for rows in row_chunks(x2d.shape[0]):
            out = self.module(rows)({"x": x2d[at:at + rows]}, threads=self.threads or threads)
            parts.append(next(iter(out.values())))
            at += rows
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def row_chunks(m: int, cap: int = MAX_ROWS) -> list[int]:
    """Row counts of the kernels that together take ``m`` rows: ``cap`` as often as it fits, then the binary
    digits of the rest, largest first."""
    full, rest = divmod(m, cap)
    return [cap] * full + [1 << i for i in reversed(range(rest.bit_length())) if rest >> i & 1]


@torch.library.custom_op("ladder::linear", mutates_args=(), device_types="cpu")
def linear_op(x: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
    """``x [..., K]`` -> ``[..., N]`` through the ladder kernel registered under ``key``, in float32 (the
    result has ``x``'s dtype); at ``torch.get_num_threads()`` threads unless the module fixed a count."""
    kernel = _KERNELS.get(key)
    if kernel is None:
        raise LadderError(f"ladder::linear: no kernel under key {key} (its module was freed)")
    if x.shape[-1] != kernel.k or out_features != kernel.n:
        raise LadderError(f"ladder::linear: the kernel under key {key} maps {kernel.k} features to {kernel.n}; "
                          f"got an input [..., {x.shape[-1]}] and out_features {out_features}")
    lead = x.shape[:-1]
    x2d = x.detach().reshape(-1, kernel.k).to(torch.float32).contiguous()
    if x2d.shape[0] == 0:
        return x.new_empty((*lead, out_features))
    y = torch.from_numpy(kernel(x2d.numpy(), torch.get_num_threads()))  # ladder returns a fresh array
    return y.reshape(*lead, out_features).to(x.dtype)


@linear_op.register_fake
def _(x: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], out_features))


def _no_gradient(ctx, grad):
    raise LadderError("ladder::linear is inference only: it has no gradient (run the model under "
                      "torch.no_grad() or torch.inference_mode(), or keep nn.Linear where you train)")


linear_op.register_autograd(_no_gradient)


class Linear(nn.Module):
    """``y = x @ dequant(codes, scale[, zero]).T + bias`` with ladder's kernels; build with ``from_linear``.

    The quantized weight is fixed at construction: it lives outside ``parameters()`` and ``state_dict()``
    (the compiled kernels hold packed copies of it). Inputs are float tensors on the CPU."""

    def __init__(self, weight: QuantizedWeight, bias: np.ndarray | None = None, threads: int | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.codes.shape
        self.kernel = _Kernel(weight, bias, threads)

    @classmethod
    def from_linear(cls, lin: nn.Linear, dtype: str = "ternary", group: int | None = None,
                    threads: int | None = None) -> Linear:
        """Quantize ``lin``'s weight with ``RECIPES[dtype]``; ``group`` elements along K share a scale (0: per
        output channel, -1: per tensor; default: the recipe's). ``threads``: a fixed thread count for the
        kernels (default: ``torch.get_num_threads()`` at each call)."""
        if not isinstance(lin, nn.Linear):
            raise LadderError(f"Linear.from_linear expects an nn.Linear, got {type(lin).__name__}")
        w = lin.weight.detach().to(device="cpu", dtype=torch.float32).numpy()
        bias = None if lin.bias is None else lin.bias.detach().to(device="cpu", dtype=torch.float32).numpy().copy()
        return cls(QuantizedWeight.of(w, dtype, group), bias, threads)

    @property
    def quantized(self) -> QuantizedWeight:
        """The codes, scales and zero points this module computes with."""
        return self.kernel.weight

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight ``[N, K]`` this module computes with (what an eager reference should hold)."""
        return torch.from_numpy(self.kernel.weight.dequantize())

    def bias_tensor(self) -> torch.Tensor | None:
        b = self.kernel.arrays.get("b")
        return None if b is None else torch.from_numpy(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() == 0 or x.shape[-1] != self.in_features:
            got = f"shape {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise LadderError(f"ladder Linear: expected an input [..., {self.in_features}], got {got}")
        if not x.is_floating_point() or x.device.type != "cpu":
            raise LadderError(f"ladder Linear: expected a float tensor on the CPU, got {x.dtype} on {x.device}")
        return linear_op(x, self.kernel.key, self.out_features)

    def extra_repr(self) -> str:
        w = self.kernel.weight
        return (f"in_features={self.in_features}, out_features={self.out_features}, dtype={w.dtype}, "
                f"group={w.group}, bias={'b' in self.kernel.arrays}")


def quantize(model: nn.Module, dtype: str = "ternary", group: int | None = None, skip=("lm_head",),
             threads: int | None = None) -> nn.Module:
    """Swap every ``nn.Linear`` of ``model`` in place for a ladder ``Linear`` of ``dtype``, except those whose
    qualified name has a component in ``skip`` (the output head by default); returns ``model``."""
    skip = set(skip)
    chosen = [(mod, child_name, child) for name, mod in model.named_modules()
              for child_name, child in mod.named_children()
              if type(child) is nn.Linear and not {*name.split("."), child_name} & skip]
    # all quantized before any swap: an error (a bad dtype, a group not dividing K) leaves the model as it was;
    # a linear shared by two parents stays shared
    new = {id(child): Linear.from_linear(child, dtype, group, threads) for _, _, child in chosen}
    for mod, child_name, child in chosen:
        setattr(mod, child_name, new[id(child)])
    return model
