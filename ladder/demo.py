"""``ladder demo``: a BitNet b1.58-shaped model on built-in seeded weights, end to end on what ladder has.

It builds the decoder (ternary weights, int8 activations, KV cache), checks that the text format round-trips
it and that the canonicalize pipeline leaves its results unchanged, then generates tokens greedily
(``ladder.generate``) with the reference interpreter, the cpu target and, for every shipped ASIC config
(``backends/asic/configs``), the ASIC program on the functional simulator, and prints one table: tokens/s
measured here, and each chip's simulated tokens/s, energy per token and power for one decode step of this model
(the cost simulator). The ASIC programs' tokens are checked against the reference for sizes up to ``small``
(the functional simulator is numpy, tile by tile: larger sizes are costed, not executed).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import numpy as np

from . import weights as weights_mod
from .errors import LadderError
from .generate import Runner, generate as generate_tokens, signature
from .interpreter import Session
from .ir import Graph
from .models import SIZES, BitNetConfig, bitnet_decoder
from .passes import PassManager, TimePasses, default_pipeline


def generate(cfg: BitNetConfig, prefill: Graph, decode: Graph, prompt: list[int], max_new: int,
             runner: Runner) -> tuple[list[int], float, float]:
    """Greedy generation with ``ladder.generate.generate`` on the graphs of ``cfg`` (checked against it).

    Returns (new token ids, prefill seconds, decode seconds)."""
    sig = signature(decode)
    if (sig.layers, sig.context, sig.vocab) != (cfg.layers, cfg.context, cfg.vocab):
        raise LadderError(f"graph @{decode.name} has {sig.layers} layers, context {sig.context} and vocab "
                          f"{sig.vocab}; the config says {cfg.layers}, {cfg.context} and {cfg.vocab}")
    gen = generate_tokens(prefill, decode, prompt, max_new, runner)
    return gen.ids, gen.prefill_seconds, gen.decode_seconds


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
          f"(built in {build_s * 1e3:.0f} ms)", file=out, flush=True)

    from .frontends.text import parse

    checks: list[tuple[str, bool]] = []

    def check(what: str, ok: bool) -> None:  # printed as soon as it is known: the whole demo takes a while
        checks.append((what, ok))
        print(f"  [{'ok' if ok else 'FAILED'}] {what}", file=out, flush=True)

    t_start = time.perf_counter()
    check("text round trip (print, parse, compare)", parse(str(decode)) == decode)
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
    check(f"{pipeline}: {len(decode)} -> {len(compiled[1])} ops, {fused} ternary matmuls fused into "
          f"qmatmul_i8 over packed weights; every generated token unchanged", ids == ids_opt)

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
    check(f"cpu (LLVM, {native[id(decode)].backend.machine}, compiled in {t_compile:.1f} s): "
          f"same tokens as the reference; prefill logits within {diff:.1e} (relative)",
          ids_cpu == ids and diff < 1e-4)

    chips = _chips(cfg, size, prefill, decode, w, prompt, tokens, ids, check)

    print(f"  prompt {prompt} -> generated {ids}", file=out)
    rows = [
        ("target", "prefill tok/s", "decode tok/s", "energy/token", "power", "note"),
        ("ref (numpy interpreter)", f"{len(prompt) / t_prefill:.1f}",
         f"{(tokens - 1) / t_decode:.1f}" if tokens > 1 else "-", "-", "-",
         "measured; the reference every backend is checked against"),
        ("cpu (LLVM native code)", f"{len(prompt) / t_prefill_cpu:.1f}",
         f"{(tokens - 1) / t_decode_cpu:.1f}" if tokens > 1 else "-", "-", "-",
         f"measured, {native[id(decode)].backend.threads} threads"),
    ] + chips
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip(), file=out)
    failed = sum(not ok for _, ok in checks)
    print(f"  {len(checks) - failed} of {len(checks)} checks passed in {time.perf_counter() - t_start:.1f} s",
          file=out)
    return 0 if not failed else 1


def _watts(p: float) -> str:
    return f"{p:,.1f} W" if p >= 1 else f"{p * 1e3:,.1f} mW"


FUNCTIONAL_SIZES = ("tiny", "small")  # sizes whose ASIC programs the demo executes, not only costs


def _chips(cfg: BitNetConfig, size: str, prefill: Graph, decode: Graph, w, prompt: list[int], tokens: int,
           ids_ref: list[int], check) -> list[tuple[str, ...]]:
    """One table row per shipped ASIC config: one decode step of this model cost-simulated (tokens/s, energy per
    token, chip power); for small sizes the programs also generate on the functional simulator, checked against
    the reference's tokens."""
    from .backends.asic.config import load_config, shipped_configs
    from .backends.asic.sweep import Workload, cost
    from .compile import compile as compile_module

    rows = []
    for name in shipped_configs():
        target = f"asic:{name}"
        t0 = time.perf_counter()
        mods = {id(g): compile_module(g, target, w if size in FUNCTIONAL_SIZES else None) for g in (prefill, decode)}
        dec = mods[id(decode)]
        program = dec.backend.program  # the decode program is costed as compiled, not lowered again
        report = cost(program, Workload(decode.name, dec.graph, 1, cfg.context), load_config(name))
        n_instr = len(program.instrs)
        if size in FUNCTIONAL_SIZES:
            sim = lambda g, inputs: mods[id(g)](inputs)  # noqa: E731
            ids_sim, _, _ = generate(cfg, prefill, decode, prompt, tokens, sim)
            check(f"{target}: {n_instr:,} instructions per decode step; the functional simulator "
                  f"generates the reference's tokens ({time.perf_counter() - t0:.1f} s)", ids_sim == ids_ref)
        rows.append((f"{target} (simulated)", "-", f"{report.tokens_per_s:,.0f}",
                     f"{report.energy_per_token_j * 1e6:,.2f} uJ", _watts(report.power_w),
                     f"cost model, one decode step ({report.latency_s * 1e3:.3g} ms), chip energy without DRAM"))
    return rows
