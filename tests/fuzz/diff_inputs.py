"""Differential fuzz inputs: random valid graphs (a chain of 1-6 ops over a float tensor, drawn from the op
families a model uses: elementwise, broadcasting binaries, float and low-bit matmuls, activation quantization,
norms, softmax, reductions, movement) run through the reference interpreter and compiled for ``cpu`` (the host)
and ``cpu:generic`` (no vector extensions), at 1 and 2 threads.

The reference is the spec. A compiled result must agree with it:
- integer and code outputs exactly, except that a value the reference rounds at a tie may land one code away
  when an upstream float differs in its last bits (at most one code, in at most 1% of the elements);
- float outputs within ``RTOL`` of the output's largest magnitude (a sum of K products reassociated by
  vectorisation moves each result by up to about K ulps of the largest partial sum; 1e-3 covers K up to ~8000);
- NaN where the reference has NaN.

A quantize turns a float that differs in its last bits into a code one step away at a rounding tie, and the ops
after it carry that step on (a dequantized value moves by a whole scale, an integer matmul by a code times a
row). So a graph is checked piecewise at its quantizes: the compiled module also returns each quantize's codes
and scale, which must agree with the reference's (codes as above, scales within ``RTOL``), and the outputs must
agree with the reference run *from the compiled codes and scales* (the graph cut at its quantizes, whose
results become inputs). Without a quantize this is the plain comparison.

A disagreement is an AssertionError naming target, threads, output, the worst element and both values; the
driver counts it under "other exceptions".
"""

from __future__ import annotations

import random
import re

import numpy as np

import ladder
from ladder import Builder, weights

RTOL = 1e-3
TARGETS = ("cpu", "cpu:generic")
UNARY = ("relu", "relu2", "silu", "gelu", "sigmoid", "tanh", "neg", "exp")
BINARY = ("add", "sub", "mul")
LOWBIT = ("ternary", "i2", "i4", "u4", "i1", "i8")


def _graph(rnd: random.Random) -> ladder.Graph:
    lead = [rnd.choice([1, 1, 2, 3, 5, 8, 17])] + ([rnd.randint(1, 4)] if rnd.random() < 0.25 else [])
    k = rnd.choice([1, 3, 8, 15, 32, 33, 64, 91, 127, 128, 256, 300, 1024])
    b = Builder(f"diff{rnd.randrange(1 << 30)}")
    x = b.input("x", f"f32{[*lead, k]}")
    shape = [*lead, k]
    for i in range(rnd.randint(1, 6)):
        kind = rnd.choice(["unary", "unary", "binary", "matmul", "matmul", "lowbit", "bitlinear", "norm",
                           "softmax", "reduce", "transpose", "quantize"])
        last = shape[-1]
        if kind == "unary":
            op = rnd.choice(UNARY)
            x = b.op(op, b.op("tanh", x) if op == "exp" else x)  # exp of a bounded value: no inf to compare
        elif kind == "binary":
            other = rnd.choice([[last], [1], shape, [shape[0], 1] if len(shape) == 2 else [last]])
            y = b.param(f"p{i}", f"f32{other}")
            x = b.op(rnd.choice(BINARY), *((x, y) if rnd.random() < 0.5 else (y, x)))
            shape = list(np.broadcast_shapes(tuple(shape), tuple(other)))
        elif kind == "matmul":
            n = rnd.choice([1, 3, 16, 31, 64, 200])
            tb = rnd.random() < 0.7
            w = b.param(f"w{i}", f"f32{[n, last] if tb else [last, n]}")
            x = b.matmul(x, w, transpose_b=tb)
            shape[-1] = n
        elif kind in ("lowbit", "bitlinear"):
            n = rnd.choice([1, 4, 16, 33, 64])
            dt = rnd.choice(LOWBIT)
            w = b.param(f"w{i}", f"{dt}[{n}, {last}]")
            if kind == "lowbit":
                group = rnd.choice([g for g in (0, -1, 32, 8) if g <= 0 or last % g == 0])
                scale = [n, last // group] if group > 0 else ([n, 1] if group == 0 else [1])
                s = b.param(f"s{i}", f"f32{scale}")
                zero = dt.startswith("u") and rnd.random() < 0.5
                ops = [w, s] + ([b.param(f"z{i}", f"f32{scale}")] if zero else [])
                d = b.dequant(*ops, group=group, zero_mode="original" if zero else "none")
                x = b.matmul(x, d, transpose_b=True)
            else:  # BitNet's linear: absmax i8 activations, an integer matmul, two rescales
                xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
                s = b.param(f"s{i}", f"f32[{n}]")
                x = b.mul(b.mul(b.cast(b.matmul(xq, w, transpose_b=True), dtype="f32"), xs), s)
            shape[-1] = n
        elif kind == "norm":
            if rnd.random() < 0.5:
                x = b.rmsnorm(x, b.param(f"g{i}", f"f32[{last}]"), eps=1e-5)
            else:
                x = b.layernorm(x, b.param(f"g{i}", f"f32[{last}]"), b.param(f"h{i}", f"f32[{last}]"), eps=1e-5)
        elif kind == "softmax":
            x = b.softmax(x, axis=rnd.randrange(-len(shape), len(shape)))
        elif kind == "reduce":
            axis = rnd.randrange(len(shape))
            x = b.reduce(x, kind=rnd.choice(["sum", "max", "mean"]), axes=[axis], keepdims=True)
            shape[axis] = 1
        elif kind == "transpose" and len(shape) >= 2:
            perm = list(range(len(shape)))
            perm[-1], perm[-2] = perm[-2], perm[-1]
            x = b.transpose(x, perm=perm)
            shape = [shape[p] for p in perm]
        elif kind == "quantize":
            xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
            x = b.mul(b.cast(xq, dtype="f32"), xs)
    return b.build(x)


def make_input(seed: int) -> str:
    """Input number ``seed``: the text of a random valid graph (its weights and inputs are drawn from ``seed``
    when it is checked)."""
    return str(_graph(random.Random(seed)))


def _inputs(g: ladder.Graph, rng) -> dict[str, np.ndarray]:
    scale = rng.choice([1e-3, 1.0, 30.0])
    return {v.name: (rng.standard_normal(v.type.shape) * scale).astype(np.float32) for v in g.inputs}


def _compare(want: np.ndarray, got: np.ndarray, where: str) -> None:
    if want.shape != got.shape or want.dtype != got.dtype:
        raise AssertionError(f"{where}: {got.dtype}{list(got.shape)}, the reference gives "
                             f"{want.dtype}{list(want.shape)}")
    if want.size == 0:
        return
    if want.dtype.kind in "iub":
        diff = np.abs(want.astype(np.int64) - got.astype(np.int64))
        if diff.max() > 1 or np.count_nonzero(diff) > max(1, want.size // 100):
            i = np.unravel_index(int(np.argmax(diff)), want.shape)
            raise AssertionError(f"{where}: {np.count_nonzero(diff)} of {want.size} codes differ; at {i} "
                                 f"{got[i]} vs the reference's {want[i]}")
        return
    w, g = want.astype(np.float64), got.astype(np.float64)
    nan = np.isnan(w)
    if not np.array_equal(nan, np.isnan(g)):
        i = np.unravel_index(int(np.argmax(nan != np.isnan(g))), want.shape)
        raise AssertionError(f"{where}: NaN differs at {i}: {got[i]} vs the reference's {want[i]}")
    finite = ~nan
    if not finite.any():
        return
    bound = RTOL * max(float(np.max(np.abs(w[finite]))), 1e-30)
    diff = np.where(finite, np.abs(w - g), 0.0)
    if diff.max() > bound:
        i = np.unravel_index(int(np.argmax(diff)), want.shape)
        raise AssertionError(f"{where}: off by {diff[i]:.3g} at {i} ({got[i]} vs the reference's {want[i]}); "
                             f"bound {bound:.3g} = {RTOL} x max |reference|")


def _header(text: str) -> tuple[str, str, str, str]:
    """A printed graph's first line split: (up to the inputs' "(", the inputs, the results, the rest)."""
    first, rest = text.split("\n", 1)
    m = re.match(r"(graph @\S+?\()(.*)\) -> (.*) \{$", first)
    return m.group(1), m.group(2), m.group(3).strip("()"), rest


def _with_quantize_outputs(g: ladder.Graph) -> tuple[ladder.Graph, list[str]]:
    """``g`` also returning every quantize's results (codes, scale), and their names."""
    cut = [r.name for op in g.ops() if op.kind == "quantize" for r in op.results]
    if not cut:
        return g, []
    head, ins, outs, body = _header(str(g))
    types = ", ".join([outs] + [str(g.type_of(n)) for n in cut])
    body = re.sub(r"^(\s*return .*)$", lambda m: m.group(1) + "".join(f", %{n}" for n in cut), body, flags=re.M)
    return ladder.parse(f"{head}{ins}) -> ({types}) {{\n{body}"), cut


def _cut_at(g: ladder.Graph, cut: list[str]) -> ladder.Graph:
    """``g`` with its quantizes' results as inputs instead (the quantizes dropped)."""
    head, ins, outs, body = _header(str(g))
    body = re.sub(r"^\s*%[^=]+= quantize .*\n", "", body, flags=re.M)
    ins = ", ".join([ins] + [f"%{n}: {g.type_of(n)}" for n in cut])
    return ladder.parse(f"{head}{ins}) -> ({outs}) {{\n{body}")


def check_graph(g: ladder.Graph, seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = weights.random(g, seed)
    feeds = _inputs(g, rng)
    full, cut = _with_quantize_outputs(g)
    want = ladder.run(full, feeds, weights=w)
    piece = _cut_at(g, cut) if cut else None
    for target in TARGETS:
        m = ladder.compile(full, target=target, weights=w, cache=False)
        for threads in (1, 2):
            got = m(feeds, threads=threads)
            where = f"{target} threads={threads}"
            for name in cut:
                _compare(np.asarray(want[name]), np.asarray(got[name]), f"{where} %{name} (a quantize's)")
            ref = want if piece is None else ladder.run(piece, {**feeds, **{n: got[n] for n in cut}}, weights=w)
            for name in g.outputs:
                _compare(np.asarray(ref[name]), np.asarray(got[name]), f"{where} %{name}")


def check(path: str) -> None:
    """The driver's entry: parse the graph text at ``path`` and check it (weights seeded by its text)."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    g = ladder.parse(text)
    check_graph(g, sum(text.encode()) & 0xFFFFFFFF)
