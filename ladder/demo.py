"""``ladder demo``: a BitNet b1.58-shaped model on built-in seeded weights, end to end on what ladder has.

It builds the decoder (ternary weights, int8 activations, KV cache), checks that the text format round-trips
it and that the canonicalize pipeline leaves its results unchanged, then generates tokens greedily with the
reference interpreter and prints one table.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

import numpy as np

from . import weights as weights_mod
from .interpreter import Session
from .ir import Graph
from .models import SIZES, BitNetConfig, bitnet_decoder
from .passes import PassManager, TimePasses, default_pipeline

Runner = Callable[[Graph, dict], dict]


def generate(cfg: BitNetConfig, prefill: Graph, decode: Graph, prompt: list[int], max_new: int,
             runner: Runner) -> tuple[list[int], float, float]:
    """Greedy generation: prefill the prompt, then decode token by token with the KV cache.

    Returns (new token ids, prefill seconds, decode seconds)."""
    if len(prompt) + max_new > cfg.context:
        raise ValueError(f"prompt {len(prompt)} + {max_new} new tokens exceed the context {cfg.context}")
    cache = np.zeros((cfg.kv_heads, cfg.context, cfg.head_dim), np.float32)
    caches = {f"{kv}_cache{i}": cache for i in range(cfg.layers) for kv in "kv"}

    def step(graph: Graph, ids: list[int], start: int) -> int:
        n = len(ids)
        out = runner(graph, {"tokens": np.array(ids, np.int32), "pos": np.arange(start, start + n, dtype=np.int32),
                             "start": np.array([start], np.int32), "kv_len": np.array([start + n], np.int32),
                             **caches})
        values = list(out.values())
        for i in range(cfg.layers):
            caches[f"k_cache{i}"], caches[f"v_cache{i}"] = values[1 + 2 * i], values[2 + 2 * i]
        return int(np.argmax(values[0][-1]))

    t0 = time.perf_counter()
    new = [step(prefill, prompt, 0)]
    t1 = time.perf_counter()
    for _ in range(max_new - 1):
        new.append(step(decode, [new[-1]], len(prompt) + len(new) - 1))
    return new, t1 - t0, time.perf_counter() - t1


def main(size: str = "tiny", seed: int = 0, tokens: int = 8, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    cfg = SIZES[size]
    prompt = [1, 2, 3, 4]
    t0 = time.perf_counter()
    prefill = bitnet_decoder(cfg, len(prompt), "bitnet_prefill")
    decode = bitnet_decoder(cfg, 1, "bitnet_decode")
    w = weights_mod.random(decode, seed)
    build_s = time.perf_counter() - t0
    print(f"ladder demo: BitNet b1.58-shaped decoder, size '{size}': {cfg.layers} layers, hidden {cfg.hidden}, "
          f"{cfg.heads} heads ({cfg.kv_heads} kv), ffn {cfg.ffn}, vocab {cfg.vocab}, context {cfg.context}", file=out)
    print(f"  {cfg.ternary_params():,} ternary weights (seeded, seed {seed}); decode graph has {len(decode)} ops "
          f"(built in {build_s * 1e3:.0f} ms)", file=out)

    from .frontends.text import parse

    checks = []
    checks.append(("text round trip (print, parse, compare)", parse(str(decode)) == decode))
    timer = TimePasses()
    pipeline = default_pipeline("cpu")
    compiled = [PassManager(pipeline, instruments=[timer]).run(g) for g in (prefill, decode)]
    sessions: dict[int, Session] = {}

    def ref(g: Graph, inputs: dict) -> dict:  # one Session per graph: weights bound and packed once
        if id(g) not in sessions:
            sessions[id(g)] = Session(g, w)
        return sessions[id(g)].run(inputs)

    ids, t_prefill, t_decode = generate(cfg, prefill, decode, prompt, tokens, ref)
    ids_opt, _, _ = generate(cfg, compiled[0], compiled[1], prompt, tokens, ref)
    fused = sum(op.kind == "qmatmul_i8" for op in compiled[1].ops())
    checks.append((f"{pipeline}: {len(decode)} -> {len(compiled[1])} ops, {fused} ternary matmuls fused into "
                   f"qmatmul_i8 over packed weights; every generated token unchanged", ids == ids_opt))

    from .compile import compile as compile_module

    t0 = time.perf_counter()
    native = {id(g): compile_module(g, "cpu", w) for g in (prefill, decode)}
    t_compile = time.perf_counter() - t0
    cpu = lambda g, inputs: native[id(g)](inputs)  # noqa: E731
    ids_cpu, t_prefill_cpu, t_decode_cpu = generate(cfg, prefill, decode, prompt, tokens, cpu)
    first = dict(tokens=np.array(prompt, np.int32), pos=np.arange(len(prompt), dtype=np.int32),
                 start=np.array([0], np.int32), kv_len=np.array([len(prompt)], np.int32),
                 **{f"{kv}_cache{i}": np.zeros((cfg.kv_heads, cfg.context, cfg.head_dim), np.float32)
                    for i in range(cfg.layers) for kv in "kv"})
    logits_ref = ref(prefill, first)["logits"]
    diff = float(np.max(np.abs(native[id(prefill)](first)["logits"] - logits_ref)) / float(np.max(np.abs(logits_ref))))
    checks.append((f"cpu (LLVM, {native[id(decode)]._backend.target.cpu_name}, compiled in {t_compile:.1f} s): "
                   f"same tokens as the reference; prefill logits within {diff:.1e} (relative)",
                   ids_cpu == ids and diff < 1e-4))

    for what, ok in checks:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}", file=out)
    print(f"  prompt {prompt} -> generated {ids}", file=out)
    rows = [
        ("target", "prefill tok/s", "decode tok/s", "note"),
        ("ref (numpy interpreter)", f"{len(prompt) / t_prefill:.1f}",
         f"{(tokens - 1) / t_decode:.1f}" if tokens > 1 else "-", "the reference every backend is checked against"),
        ("cpu (LLVM native code)", f"{len(prompt) / t_prefill_cpu:.1f}",
         f"{(tokens - 1) / t_decode_cpu:.1f}" if tokens > 1 else "-",
         f"{native[id(decode)]._backend.threads} threads"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r)), file=out)
    return 0 if all(ok for _, ok in checks) else 1
