"""Generation over decoder *step graphs*: prefill the prompt, then decode token by token with the KV cache,
on any target (``ladder generate`` on the command line; ``ladder.LLM`` adds text in and out). Tokens are
picked greedily or drawn by a ``Sampler`` (temperature, top-k, top-p, seed); ``stream`` yields them as they
are decoded and stops at an end-of-sequence token.

A step graph runs S tokens through the model once. Its interface is the convention of
``ladder.models.decoder_step_inputs`` (the built-in BitNet decoder and the GGUF importer both follow it):

    inputs   tokens   i32[S]              the token ids of this step
             pos      i32[S]              their positions, start .. start + S - 1
             start    i32[1]              the cache row where this step's keys and values go
             kv_len   i32[1]              start + S: the cache rows filled once the step has run
             k_cacheN T[KVH, C, D]        layer N's key cache, N = 0 .. L-1 (C = the cache capacity; T the
                                          cache's float type: f16 for imported models by default, or f32, bf16)
             v_cacheN T[KVH, C, D]        layer N's value cache
    outputs  logits   f32[S, V]           first, then the updated caches in the order
                                          k_cache0, v_cache0, k_cache1, ... with the caches' types;
                                          or f32[1, V]: the last token's logits only (all generation reads)

A model is one step graph for decoding (S = 1, usually) and optionally a second one for the prompt (larger S).
The prompt is fed in chunks of the prefill graph's S; a last, shorter chunk is padded with token 0. Padding is
harmless: with causal attention the real tokens never see it, and the cache rows it writes lie at or beyond
the next step's ``start``, so they are overwritten before any ``kv_len`` lets a query read them. A prefill
graph that returns the last row only cannot be padded (that row would be a pad's): its last, shorter chunk
goes through the decode graph token by token.

``signature(graph)`` checks a graph against the convention (a clear error names what is missing or wrong),
``check`` a generation request against a model, ``generate(prefill, decode, prompt, max_new, runner)`` runs
it; ``load_model`` reads a .lir (+ weights) or a .gguf file; ``ModuleRunner`` compiles each step graph once
for a target (``ladder.compile``: ref, cpu, asic:CONFIG) and runs it. A .gguf file or a Hugging Face
folder gets a cache of prompt + max_new positions unless ``context`` says otherwise.

The KV cache is state. A ``ModuleRunner`` compiles a step graph with ``state=step_state(graph)``: each
k_cacheN/v_cacheN input is paired with the output that updates it, so the compiled module holds the caches
(ladder.compile) and the cpu target writes a step's new rows into them in place. A generation gets one fresh
State, shared by the prefill and the decode module, and a bound call per module (``CompiledModule.bind``):
a step writes tokens/pos/start/kv_len into the call's buffers, calls it and reads the logits; no cache
crosses into Python. Any other Runner (a plain function of graph and inputs, e.g. ``ladder.run``) gets the
caches as inputs and returns them updated, each step, as the convention describes; a ModuleRunner called
that way loads the given caches into its module's state first and returns copies (the same results).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable, Container, Iterator, Mapping, Sequence

import numpy as np

from .errors import LadderError
from .ir import Graph
from .tuning import host_threads
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
    cache: TensorType       # T[KVH, C, D] (T: f32, f16 or bf16)
    vocab: int              # logits per token (V)
    last_only: bool = False  # logits [1, V]: the last token's only

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
    if logits.rank != 2 or logits.shape[0] not in (seq, 1) or not logits.dtype.is_float:
        also = f" (or f32[1, vocab], the last token's)" if seq > 1 else ""
        raise _error(graph, f"the first output (logits) must be f32[{seq}, vocab]{also}, not {logits}")
    for i, t in enumerate(types[1:]):
        if t != cache:
            which = f"{'kv'[i % 2]}_cache{i // 2}"
            raise _error(graph, f"output {i + 1} (the updated %{which}) is {t}, not {cache}")
    return StepSignature(seq, layers, cache, logits.shape[1], seq > 1 and logits.shape[0] == 1)


def step_state(sig: StepSignature) -> dict[str, int]:
    """The state of a step graph for ``ladder.compile``: each cache input -> the output that updates it."""
    return {f"{kv}_cache{i}": 1 + 2 * i + j for i in range(sig.layers) for j, kv in enumerate("kv")}


@dataclass
class Generation:
    """The result of one greedy generation."""

    prompt: list[int]
    ids: list[int]                          # the new tokens
    prefill_seconds: float
    decode_seconds: float
    steps: dict[str, int] = field(default_factory=dict)   # graph calls: prefill, decode
    first_logits: np.ndarray | None = None  # the logits after the last prompt token (what chose ids[0])

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


# A picker chooses the next token from a step's logits (greedy: argmax; see ladder.sampling). The logits may
# be a view of a buffer the next step overwrites: a picker that keeps them copies them.
Picker = Callable[[np.ndarray], int]


def _argmax(logits: np.ndarray) -> int:
    return int(logits.argmax())  # the method: np.argmax's dispatch costs a few times more


@dataclass
class Sampler:
    """A picker: greedy at ``temperature`` 0, else a draw from softmax(logits / temperature) restricted to
    the ``top_k`` most likely tokens (0: all) and then to the smallest set whose probability reaches
    ``top_p``; ``seed`` makes the draws repeatable."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise GenerateError(f"sampling needs temperature >= 0, top_k >= 0 and 0 < top_p <= 1; got "
                                f"temperature {self.temperature}, top_k {self.top_k}, top_p {self.top_p}")
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self.temperature == 0:
            return _argmax(logits)
        z = np.asarray(logits, np.float64) / self.temperature
        order = np.argsort(-z, kind="stable")
        if self.top_k:
            order = order[:self.top_k]
        p = np.exp(z[order] - z[order[0]])
        p /= p.sum()
        if self.top_p < 1:
            keep = int(np.searchsorted(np.cumsum(p), self.top_p)) + 1
            order, p = order[:keep], p[:keep] / p[:keep].sum()
        return int(order[self.rng.choice(len(order), p=p)])


class _PassedCaches:
    """Steps through any Runner: the caches are inputs and outputs of every step (the convention as is)."""

    def __init__(self, runner: Runner, sig: StepSignature):
        self.runner = runner
        self.caches = {f"{kv}_cache{i}": np.zeros(sig.cache.shape, sig.cache.dtype.np_dtype)
                       for i in range(sig.layers) for kv in "kv"}
        self.names = list(self.caches)

    def step(self, graph: Graph, seq: int, ids: list[int], start: int) -> np.ndarray:
        """One step over ``ids`` (padded to ``seq``) at ``start``: the logits after the last real token."""
        padded = ids + [0] * (seq - len(ids))
        out = list(self.runner(graph, {"tokens": np.array(padded, np.int32),
                                       "pos": np.arange(start, start + seq, dtype=np.int32),
                                       "start": np.array([start], np.int32),
                                       "kv_len": np.array([start + seq], np.int32), **self.caches}).values())
        if len(out) != 1 + len(self.names):
            raise _error(graph, f"running it gave {len(out)} outputs, expected {1 + len(self.names)}")
        self.caches.update(zip(self.names, out[1:]))
        return np.asarray(out[0][len(ids) - 1 if out[0].shape[0] > 1 else 0])

    def one_token(self, graph: Graph, seq: int) -> Callable[[int, int], np.ndarray]:
        """``step`` for one token: (token, position) -> its logits."""
        return lambda token, at: self.step(graph, seq, [token], at)


class _BoundStep:
    """One step graph's bound call (``CompiledModule.bind``): its four small inputs are the call's buffers,
    written in place (through memoryviews: a tenth of numpy's cost per element)."""

    def __init__(self, module, state, threads: int | None):
        self.call = module.bind(state)
        if threads is not None:
            self.call.set_threads(threads)
        ins = self.call.inputs
        self.tokens, self.pos, self.start, self.kv_len = (ins[n] for n in STEP_INPUTS)
        self.seq = self.tokens.shape[0]
        self.offsets = np.arange(self.seq, dtype=self.pos.dtype)
        self.logits = module.graph.outputs[0]

    def step(self, ids: list[int], start: int) -> np.ndarray:
        n = len(ids)
        self.tokens[:n] = ids
        self.tokens[n:] = 0
        np.add(self.offsets, start, out=self.pos)
        self.start[0] = start
        self.kv_len[0] = start + self.seq
        out = self.call()[self.logits]
        return out[n - 1 if out.shape[0] > 1 else 0]

    def one_token(self) -> Callable[[int, int], np.ndarray]:
        """(token, position) -> its logits: the decode loop's step, kept short."""
        if self.seq != 1:
            return lambda token, at: self.step([token], at)
        tokens, pos, start, kv_len = (memoryview(a) for a in (self.tokens, self.pos, self.start, self.kv_len))
        call, name = self.call, self.logits
        last = [None, None]  # the logits of the last call and their row: on cpu the same array every call

        def step(token: int, at: int) -> np.ndarray:
            tokens[0] = token
            pos[0] = start[0] = at
            kv_len[0] = at + 1
            out = call()[name]
            if out is not last[0]:
                last[0], last[1] = out, out[0]
            return last[1]

        return step


class _HeldCaches:
    """Steps through a ModuleRunner's modules, which hold the caches: one fresh State for this generation,
    shared by the prefill and the decode module; a step writes only the small inputs (no array is made)."""

    def __init__(self, runner: "ModuleRunner", graphs: Sequence[Graph]):
        modules = {id(g): runner.module(g) for g in graphs}
        state = next(iter(modules.values())).new_state()  # zeroed; its slots are every module's (checked)
        self.bound = {key: _BoundStep(m, state, runner.threads) for key, m in modules.items()}

    def step(self, graph: Graph, seq: int, ids: list[int], start: int) -> np.ndarray:
        return self.bound[id(graph)].step(ids, start)

    def one_token(self, graph: Graph, seq: int) -> Callable[[int, int], np.ndarray]:
        return self.bound[id(graph)].one_token()


def stream(prefill: Graph, decode: Graph, prompt: Sequence[int], max_new: int, runner: Runner,
           pick: Picker = _argmax, stop: Container[int] = (), stats: Generation | None = None,
           on_step: Callable[[str], None] | None = None) -> Iterator[int]:
    """Yield the new tokens one by one as they are decoded: the prompt through ``prefill`` (in chunks of its
    S), then up to ``max_new - 1`` decode steps, each feeding back the token ``pick`` chose. A token in
    ``stop`` (end of sequence) is yielded and ends the stream. ``stats``, if given, collects the timings,
    step counts, the tokens and the first step's logits. ``on_step('prefill' | 'decode')`` is called after
    each step graph run (a progress bar)."""
    prompt = [int(t) for t in prompt]
    psig, sig = check(prefill, decode, prompt, max_new)
    if psig.last_only and len(prompt) % psig.seq and sig.seq != 1:
        raise GenerateError(f"the prefill graph @{prefill.name} returns the last token's logits only, so the last "
                            f"{len(prompt) % psig.seq} prompt tokens go through the decode graph, which takes "
                            f"{sig.seq} tokens a step, not 1")
    if isinstance(runner, ModuleRunner) and runner.state:
        steps = _HeldCaches(runner, [prefill, decode])
    else:
        steps = _PassedCaches(runner, sig)
    stats = stats if stats is not None else Generation(prompt, [], 0.0, 0.0)
    stats.prompt, stats.ids, stats.steps = prompt, [], {"prefill": 0, "decode": 0}
    count = stats.steps

    def step(graph: Graph, seq: int, ids: list[int], start: int) -> np.ndarray:
        logits = steps.step(graph, seq, ids, start)
        count["prefill"] += 1
        if on_step is not None:
            on_step("prefill")
        return logits

    t0 = time.perf_counter()
    for at in range(0, len(prompt), psig.seq):
        chunk = prompt[at:at + psig.seq]
        if len(chunk) < psig.seq and psig.last_only:  # no padding: the last row must be a real token's
            for j, t in enumerate(chunk):
                logits = step(decode, sig.seq, [t], at + j)
            break
        logits = step(prefill, psig.seq, chunk, at)
    stats.first_logits = np.array(logits)
    ids = stats.ids
    ids.append(pick(logits))
    stats.prefill_seconds = time.perf_counter() - t0
    yield ids[-1]
    # the decode loop: every line here is paid once per token (``ladder generate --profile`` measures it)
    decode_one = steps.one_token(decode, sig.seq)
    at = len(prompt)
    t1 = time.perf_counter()
    while len(ids) < max_new and ids[-1] not in stop:
        ids.append(pick(decode_one(ids[-1], at)))
        at += 1
        count["decode"] += 1
        if on_step is not None:
            on_step("decode")
        stats.decode_seconds = time.perf_counter() - t1
        yield ids[-1]


def generate(prefill: Graph, decode: Graph, prompt: Sequence[int], max_new: int, runner: Runner,
             pick: Picker = _argmax, stop: Container[int] = (),
             on_step: Callable[[str], None] | None = None) -> Generation:
    """Generate ``max_new`` tokens (fewer if one is in ``stop``); greedy unless ``pick`` samples. See ``stream``."""
    stats = Generation(list(prompt), [], 0.0, 0.0)
    for _ in stream(prefill, decode, prompt, max_new, runner, pick, stop, stats, on_step):
        pass
    return stats


class ModuleRunner:
    """A Runner that compiles each step graph once (``ladder.compile``) for ``target`` and then runs it with
    ``threads`` (which may change between generations). ``compile_seconds`` adds up the time compiling.

    With ``state`` (the default) a graph that follows the step convention is compiled with its caches as
    state (``step_state``): ``stream`` then keeps them in the modules; ``state=False`` compiles plain graphs
    whose caches cross into Python every step (the comparison point of ``benchmarks/bench_e2e.py``)."""

    def __init__(self, target: str, weights: Mapping[str, np.ndarray], threads: int | None = None, *,
                 state: bool = True, **options):
        self.target, self.weights, self.threads, self.state = target, weights, threads, state
        self.options = options  # more ladder.compile arguments (tuning, memory_budget)
        self.modules: dict[int, object] = {}
        self.compile_seconds = 0.0

    def module(self, graph: Graph):
        if id(graph) not in self.modules:
            t0 = time.perf_counter()
            self.modules[id(graph)] = self._compiled(graph)
            self.compile_seconds += time.perf_counter() - t0
        return self.modules[id(graph)]

    def _compiled(self, graph: Graph):
        from .compile import compile as compile_graph

        held = None
        if self.state:
            try:
                held = step_state(signature(graph))
            except GenerateError:  # not a step graph: nothing to hold
                pass
        return compile_graph(graph, self.target, self.weights, threads=self.threads, state=held, snapshots=False,
                             **self.options)

    def prepare(self, *graphs: Graph) -> float:
        """Compile these graphs now (so that timing a generation leaves compilation out); the seconds spent.
        Several graphs (a prefill and a decode step) compile side by side, a thread each, where there are two
        cores or more: while one's kernels are generated (Python), another's are optimised in a compiler child
        (one per core: ladder.backends.llvm.worker.idle_worker), and a weight both read is packed once (the
        other compile waits for it: ladder.weights.Blocks.lock). A BitNet-2B-shaped Q4_K_M file on a 2-core Zen 4,
        its packs cached and its code not: 8.2-8.7 -> 5.9-6.7 s (bench_e2e.py's child, in turns)."""
        todo = list({id(g): g for g in graphs if id(g) not in self.modules}.values())
        if len(todo) < 2 or host_threads() < 2:
            before = self.compile_seconds
            for g in todo:
                self.module(g)
            return self.compile_seconds - before
        from concurrent.futures import ThreadPoolExecutor

        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(todo), thread_name_prefix="ladder-compile") as pool:
            done = list(pool.map(self._compiled, todo))
        for g, m in zip(todo, done):
            self.modules[id(g)] = m
        spent = time.perf_counter() - t0
        self.compile_seconds += spent
        return spent

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
               context: int | None = None, max_new: int | None = None, kv_cache: str = "f16") -> Model:
    """Step graphs and weights from a model file.

    * ``.lir``: weights from a safetensors file (``weights``) or seeded random ones (``random_weights``); the
      file's graph decodes and, unless ``prefill_path`` names another step graph, also prefills.
    * ``.gguf`` (or a Hugging Face model folder): the file's own weights; the prefill graph takes the whole
      prompt (``prompt_len`` tokens) in one step; ``context`` sets the cache capacity (default: ``prompt_len +
      max_new`` when ``max_new`` is given, capped at the model's context length; else the model's context);
      ``kv_cache`` its element type (f16, as llama.cpp's default; f32 or bf16 on request)."""
    path = os.fspath(path)
    if path.lower().endswith(".lir"):
        return _text_model(path, weights, random_weights, prefill_path, context)
    if prefill_path is not None:
        raise GenerateError(f"{path}: a separate prefill graph goes with a .lir model")
    if weights is not None or random_weights is not None:
        raise GenerateError(f"{path}: a .gguf model holds its own weights; drop --weights/--random-weights")
    return _imported_model(path, prompt_len, context, max_new, kv_cache)


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


def _imported_config(path: str):
    """The dimensions of a model file or folder (metadata only, no weights read)."""
    if os.path.isdir(path):
        from .frontends import hf

        return hf.config(path)
    from .frontends import gguf

    return gguf.config(path)


def _imported_model(path: str, prompt_len: int, context: int | None, max_new: int | None, kv_cache: str
                    ) -> Model:
    """A file holding its weights, whose importer sets a step's length and the cache capacity from input
    shapes (``tokens`` and ``k_cache0``), as the GGUF frontend does."""
    cfg = _imported_config(path)
    if context is None and max_new is not None:
        # size the cache to the request, not to the model's full context (4096 floats a row per layer)
        context = min(cfg.context, prompt_len + max_new)
    cache = {"k_cache0": (cfg.kv_heads, context, cfg.head_dim)} if context is not None else {}
    # generation reads the last prompt token's logits only: the prefill's head runs on that row alone
    steps = [({"tokens": (1,), **cache}, False)] + ([({"tokens": (prompt_len,), **cache}, True)]
                                                    if prompt_len != 1 else [])
    if os.path.isdir(path):
        from .frontends.hf import load

        graphs = [load(path, shapes, last_logits=last, kv_cache=kv_cache) for shapes, last in steps]
        weights = graphs[0][1]
        graphs = [g for g, _ in graphs]
    else:
        from .frontends.gguf import load_steps

        graphs, weights = load_steps(path, steps, kv_cache)  # each tensor decoded once for both graphs
    return Model(graphs[-1], graphs[0], weights)


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
