"""Greedy text generation over decoder *step graphs*: prefill the prompt, then decode token by token with
the KV cache, on any target (``ladder generate`` on the command line).

A step graph runs S tokens through the model once. Its interface is the convention of
``ladder.models.decoder_step_inputs`` (the built-in BitNet decoder and the GGUF importer both follow it):

    inputs   tokens   i32[S]              the token ids of this step
             pos      i32[S]              their positions, start .. start + S - 1
             start    i32[1]              the cache row where this step's keys and values go
             kv_len   i32[1]              start + S: the cache rows filled once the step has run
             k_cacheN f32[KVH, C, D]      layer N's key cache, N = 0 .. L-1 (C = the cache capacity)
             v_cacheN f32[KVH, C, D]      layer N's value cache
    outputs  logits   f32[S, V]           first, then the updated caches in the order
                                          k_cache0, v_cache0, k_cache1, ... with the caches' types

A model is one step graph for decoding (S = 1, usually) and optionally a second one for the prompt (larger S).
The prompt is fed in chunks of the prefill graph's S; a last, shorter chunk is padded with token 0. Padding is
harmless: with causal attention the real tokens never see it, and the cache rows it writes lie at or beyond
the next step's ``start``, so they are overwritten before any ``kv_len`` lets a query read them.

``signature(graph)`` checks a graph against the convention (a clear error names what is missing or wrong),
``check`` a generation request against a model, ``generate(prefill, decode, prompt, max_new, runner)`` runs
it; ``load_model`` reads a .lir (+ weights) or a .gguf file; ``ModuleRunner`` compiles each step graph once
for a target (``ladder.compile``: ref, cpu, asic:CONFIG) and runs it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import LadderError
from .ir import Graph
from .types import TensorType

# A runner executes a step graph on its inputs and returns its outputs in the graph's output order.
Runner = Callable[[Graph, dict], Mapping[str, np.ndarray]]

STEP_INPUTS = ("tokens", "pos", "start", "kv_len")


class GenerateError(LadderError):
    """A model does not follow the step-graph convention, or a generation request does not fit it."""

    kind = "generate error"


@dataclass(frozen=True)
class StepSignature:
    """What generation needs to know about a step graph."""

    seq: int                # tokens per step (S)
    layers: int             # cache pairs (L)
    cache: TensorType       # f32[KVH, C, D]
    vocab: int              # logits per token (V)

    @property
    def context(self) -> int:
        return self.cache.shape[1]


def _error(graph: Graph, msg: str) -> GenerateError:
    return GenerateError(f"graph @{graph.name}: {msg}", graph.loc,
                         notes=("a step graph takes tokens, pos, start, kv_len and k_cacheN/v_cacheN and returns "
                                "logits then the updated caches (see ladder.generate)",))


def _check_int_vector(graph: Graph, name: str, length: int | None) -> int:
    t = graph.type_of(name)
    if t.rank != 1 or t.dtype.kind not in ("int", "uint") or (length is not None and t.shape[0] != length):
        want = f"[{length}]" if length is not None else "[S]"
        raise _error(graph, f"input %{name} must be an integer vector {want}, not {t}")
    return t.shape[0]


def signature(graph: Graph) -> StepSignature:
    """Check ``graph`` against the step convention and read its dimensions."""
    inputs = {v.name: v.type for v in graph.inputs}
    for name in (*STEP_INPUTS, "k_cache0", "v_cache0"):
        if name not in inputs:
            raise _error(graph, f"missing input %{name}")
    seq = _check_int_vector(graph, "tokens", None)
    _check_int_vector(graph, "pos", seq)
    _check_int_vector(graph, "start", 1)
    _check_int_vector(graph, "kv_len", 1)
    layers = 0
    while f"k_cache{layers}" in inputs or f"v_cache{layers}" in inputs:
        layers += 1
    cache = inputs["k_cache0"]
    if cache.rank != 3 or not cache.dtype.is_float:
        raise _error(graph, f"input %k_cache0 must be a float cache [kv_heads, context, head_dim], not {cache}")
    expected = set(STEP_INPUTS) | {f"{kv}_cache{i}" for i in range(layers) for kv in "kv"}
    for name, t in inputs.items():
        if name not in expected:
            raise _error(graph, f"input %{name} is not part of the convention (caches must be numbered 0.."
                                f"{layers - 1} with no gap)")
        if name.endswith(tuple(f"_cache{i}" for i in range(layers))) and t != cache:
            raise _error(graph, f"input %{name} : {t} differs from %k_cache0 : {cache}")
    missing = sorted(expected - set(inputs))
    if missing:
        raise _error(graph, f"missing input %{missing[0]}")
    types = graph.output_types()
    if len(types) != 1 + 2 * layers:
        raise _error(graph, f"returns {len(types)} values; expected logits and {2 * layers} updated caches")
    logits = types[0]
    if logits.rank != 2 or logits.shape[0] != seq or not logits.dtype.is_float:
        raise _error(graph, f"the first output (logits) must be f32[{seq}, vocab], not {logits}")
    for i, t in enumerate(types[1:]):
        if t != cache:
            which = f"{'kv'[i % 2]}_cache{i // 2}"
            raise _error(graph, f"output {i + 1} (the updated %{which}) is {t}, not {cache}")
    return StepSignature(seq, layers, cache, logits.shape[1])


@dataclass
class Generation:
    """The result of one greedy generation."""

    prompt: list[int]
    ids: list[int]                          # the new tokens
    prefill_seconds: float
    decode_seconds: float
    steps: dict[str, int] = field(default_factory=dict)   # graph calls: prefill, decode

    @property
    def prefill_tokens_per_s(self) -> float:
        return len(self.prompt) / self.prefill_seconds if self.prefill_seconds > 0 else float("inf")

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens per second of the decode loop (the first new token comes from the prefill)."""
        n = len(self.ids) - 1
        if n <= 0:
            return None
        return n / self.decode_seconds if self.decode_seconds > 0 else float("inf")


def check(prefill: Graph, decode: Graph, prompt: Sequence[int], max_new: int
          ) -> tuple[StepSignature, StepSignature]:
    """The signatures of both step graphs, once checked against each other and against the request."""
    sig, psig = signature(decode), signature(prefill)
    if (psig.layers, psig.cache, psig.vocab) != (sig.layers, sig.cache, sig.vocab):
        raise GenerateError(f"the prefill graph @{prefill.name} ({psig.layers} layers, cache {psig.cache}, vocab "
                            f"{psig.vocab}) does not match the decode graph @{decode.name} ({sig.layers} layers, "
                            f"cache {sig.cache}, vocab {sig.vocab})")
    _check_request(sig, psig, prompt, max_new)
    return psig, sig


def _check_request(sig: StepSignature, prefill_sig: StepSignature, prompt: Sequence[int], max_new: int) -> None:
    """Errors for a prompt or length the model cannot take."""
    if not prompt:
        raise GenerateError("the prompt is empty; give at least one token id")
    if max_new < 1:
        raise GenerateError(f"max_new must be >= 1, got {max_new}")
    bad = [t for t in prompt if not 0 <= t < sig.vocab]
    if bad:
        raise GenerateError(f"token id {bad[0]} is outside the vocabulary [0, {sig.vocab})")
    padded = -(-len(prompt) // prefill_sig.seq) * prefill_sig.seq
    # the last new token is never fed back: the last decode step starts at prompt + max_new - 2
    need = max(padded, len(prompt) + max_new - 2 + sig.seq if max_new > 1 else 0)
    if need > sig.context:
        raise GenerateError(f"prompt of {len(prompt)} tokens + {max_new} new tokens need {need} cache positions "
                            f"but the cache holds {sig.context}")


def generate(prefill: Graph, decode: Graph, prompt: Sequence[int], max_new: int, runner: Runner) -> Generation:
    """Greedy generation: the prompt through ``prefill`` (in chunks of its S), then ``max_new - 1`` decode
    steps, each feeding back the previous argmax. ``runner(graph, inputs)`` runs a step graph."""
    prompt = [int(t) for t in prompt]
    psig, sig = check(prefill, decode, prompt, max_new)
    caches = {f"{kv}_cache{i}": np.zeros(sig.cache.shape, sig.cache.dtype.np_dtype)
              for i in range(sig.layers) for kv in "kv"}
    names = list(caches)
    steps = {"prefill": 0, "decode": 0}

    def step(graph: Graph, seq: int, ids: list[int], start: int, what: str) -> int:
        """Run one step over ``ids`` (padded to ``seq``) at ``start``; the argmax after the last real token."""
        padded = ids + [0] * (seq - len(ids))
        out = list(runner(graph, {"tokens": np.array(padded, np.int32),
                                  "pos": np.arange(start, start + seq, dtype=np.int32),
                                  "start": np.array([start], np.int32),
                                  "kv_len": np.array([start + seq], np.int32), **caches}).values())
        if len(out) != 1 + len(names):
            raise _error(graph, f"running it gave {len(out)} outputs, expected {1 + len(names)}")
        caches.update(zip(names, out[1:]))
        steps[what] += 1
        return int(np.argmax(out[0][len(ids) - 1]))

    t0 = time.perf_counter()
    for at in range(0, len(prompt), psig.seq):
        first = step(prefill, psig.seq, prompt[at:at + psig.seq], at, "prefill")
    t1 = time.perf_counter()
    new = [first]
    while len(new) < max_new:
        new.append(step(decode, sig.seq, [new[-1]], len(prompt) + len(new) - 1, "decode"))
    return Generation(prompt, new, t1 - t0, time.perf_counter() - t1, steps)


class ModuleRunner:
    """A Runner that compiles each step graph once (``ladder.compile``) for ``target`` and then runs it with
    ``threads`` (which may change between generations). ``compile_seconds`` adds up the time compiling."""

    def __init__(self, target: str, weights: Mapping[str, np.ndarray], threads: int | None = None):
        self.target, self.weights, self.threads = target, weights, threads
        self.modules: dict[int, object] = {}
        self.compile_seconds = 0.0

    def module(self, graph: Graph):
        if id(graph) not in self.modules:
            from .compile import compile as compile_graph

            t0 = time.perf_counter()
            self.modules[id(graph)] = compile_graph(graph, self.target, self.weights, threads=self.threads)
            self.compile_seconds += time.perf_counter() - t0
        return self.modules[id(graph)]

    def prepare(self, *graphs: Graph) -> float:
        """Compile these graphs now (so that timing a generation leaves compilation out); the seconds spent."""
        before = self.compile_seconds
        for g in graphs:
            self.module(g)
        return self.compile_seconds - before

    def __call__(self, graph: Graph, inputs: dict) -> Mapping[str, np.ndarray]:
        return self.module(graph)(inputs, threads=self.threads)


@dataclass
class Model:
    """A model ready to generate: step graphs (the same object when one graph does both) and weights."""

    prefill: Graph
    decode: Graph
    weights: Mapping[str, np.ndarray]


def load_model(path: str | os.PathLike, *, prompt_len: int = 1, weights: str | os.PathLike | None = None,
               random_weights: int | None = None, prefill_path: str | os.PathLike | None = None,
               context: int | None = None) -> Model:
    """Step graphs and weights from a model file.

    * ``.lir``: weights from a safetensors file (``weights``) or seeded random ones (``random_weights``); the
      file's graph decodes and, unless ``prefill_path`` names another step graph, also prefills.
    * ``.gguf``: the file's own weights; the prefill graph takes the whole prompt (``prompt_len`` tokens) in one
      step; ``context`` sets the cache capacity (default: the file's context length)."""
    path = os.fspath(path)
    if path.lower().endswith(".lir"):
        return _text_model(path, weights, random_weights, prefill_path, context)
    if prefill_path is not None:
        raise GenerateError(f"{path}: a separate prefill graph goes with a .lir model")
    if weights is not None or random_weights is not None:
        raise GenerateError(f"{path}: a .gguf model holds its own weights; drop --weights/--random-weights")
    return _imported_model(path, prompt_len, context)


def _text_model(path: str, weights, random_weights: int | None, prefill_path, context: int | None) -> Model:
    from . import weights as weights_mod
    from .frontends import load

    if context is not None:
        raise GenerateError(f"{path}: a .lir model's cache capacity is fixed by its k_cacheN type; "
                            f"--context is for .gguf models")
    decode = load(path)[0]
    prefill = load(prefill_path)[0] if prefill_path is not None else decode
    if weights is not None:
        return Model(prefill, decode, weights_mod.load(weights))
    if random_weights is not None:
        return Model(prefill, decode, weights_mod.random(decode, random_weights))
    raise GenerateError(f"{path}: a .lir model reads its params from --weights FILE.safetensors "
                        f"(or --random-weights SEED)")


def _imported_model(path: str, prompt_len: int, context: int | None) -> Model:
    """A file holding its weights, whose importer sets a step's length and the cache capacity from input
    shapes (``tokens`` and ``k_cache0``), as the GGUF frontend does."""
    from .frontends import load

    decode, weights = load(path, {"tokens": (1,)})
    cache = {}
    if context is not None:
        kv_heads, _, head_dim = signature(decode).cache.shape
        cache = {"k_cache0": (kv_heads, context, head_dim)}
        decode, weights = load(path, {"tokens": (1,), **cache})
    prefill = load(path, {"tokens": (prompt_len,), **cache})[0] if prompt_len != 1 else decode
    return Model(prefill, decode, weights)


def report(gen: Generation, out) -> None:
    """Print the ids and the speeds of a generation."""
    print(f"prompt {gen.prompt} -> generated {gen.ids}", file=out)
    print("ids: " + ",".join(str(t) for t in gen.ids), file=out)
    decode = gen.decode_tokens_per_s
    print(f"prefill: {len(gen.prompt)} tokens in {gen.prefill_seconds * 1e3:.1f} ms "
          f"({gen.prefill_tokens_per_s:.1f} tokens/s, {gen.steps.get('prefill', 0)} steps)", file=out)
    if decode is None:
        print("decode: no decode step (max_new = 1)", file=out)
    else:
        print(f"decode: {len(gen.ids) - 1} tokens in {gen.decode_seconds * 1e3:.1f} ms ({decode:.1f} tokens/s)",
              file=out)
