"""The KV cache's element type: f16 by default for imported models (as llama.cpp's), f32 or bf16 on request.
Keys and values are rounded once, when written; attention reads them into f32 (f32 queries over a f16/bf16
cache). Checked: the op against numpy over the rounded cache (reference and cpu), an imported model's tokens
against llama.cpp's greedy run of the same file (its fixtures ran an f32 cache: the f16 cache stays within
the spread of llama.cpp's own runs), and the cache's bytes halved."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import ladder
from ladder import Builder
from ladder.errors import LadderError
from ladder.generate import ModuleRunner, generate, load_model, signature

PARITY = Path(__file__).parent / "fixtures" / "parity"
DOC = json.loads((PARITY / "llamacpp.json").read_text())
CACHE_TYPES = {"f16": np.float16, "bf16": ml_dtypes.bfloat16}


def _numpy_attention(q, k, v, length):
    """Causal GQA attention in float64 over the first ``length`` cache rows."""
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    rep = q.shape[0] // k.shape[0]
    k, v = np.repeat(k[:, :length], rep, axis=0), np.repeat(v[:, :length], rep, axis=0)
    s = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    sq = q.shape[1]
    s = np.where(np.arange(length)[None, :] <= (length - sq + np.arange(sq))[:, None], s, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)) @ v


@pytest.mark.parametrize("cache", sorted(CACHE_TYPES))
@pytest.mark.parametrize("target", ["ref", "cpu", "cpu:generic"])
def test_f32_queries_read_a_half_precision_cache(cache, target):
    r = np.random.default_rng(3)
    b = Builder()
    q = b.input("q", "f32[4, 3, 16]")
    k = b.input("k", f"{cache}[2, 9, 16]")
    v = b.input("v", f"{cache}[2, 9, 8]")
    n = b.input("n", "i32[1]")
    y = b.attention(q, k, v, n)
    assert y.type.dtype.name == "f32"
    g = b.build(y)
    inputs = {"q": r.standard_normal((4, 3, 16)).astype(np.float32),
              "k": r.standard_normal((2, 9, 16)).astype(CACHE_TYPES[cache]),
              "v": r.standard_normal((2, 9, 8)).astype(CACHE_TYPES[cache])}
    m = ladder.compile(g, target)
    for length in (3, 6, 9):
        inputs["n"] = np.array([length], np.int32)
        got = m.run(inputs)[y.name]
        want = _numpy_attention(inputs["q"], inputs["k"], inputs["v"], length)
        assert np.allclose(got, want, rtol=1e-5, atol=1e-5), (target, length)


def test_queries_must_be_f32_or_the_cache_type():
    b = Builder()
    q = b.input("q", "f16[2, 1, 8]")
    k = b.input("k", "f32[2, 4, 8]")
    with pytest.raises(LadderError, match="k and v must have one element type, and q the same or f32"):
        b.attention(q, k, k)
    kh = b.input("kh", "f16[2, 4, 8]")
    with pytest.raises(LadderError, match="k and v must have one element type"):
        b.attention(b.input("q32", "f32[2, 1, 8]"), kh, k)


def test_imported_models_default_to_a_f16_cache_and_take_f32_on_request():
    path = PARITY / "llama-Q8_0.gguf"
    f16 = load_model(path, prompt_len=3, max_new=4)
    f32 = load_model(path, prompt_len=3, max_new=4, kv_cache="f32")
    assert signature(f16.decode).cache.dtype.name == "f16"
    assert signature(f32.decode).cache.dtype.name == "f32"
    assert signature(f16.prefill).cache.dtype.name == "f16"
    with pytest.raises(LadderError, match="kv_cache must be one of f16, f32, bf16, not 'f8'"):
        load_model(path, prompt_len=3, max_new=4, kv_cache="f8")


@pytest.mark.parametrize("key", ["llama/Q8_0", "llama/Q4_0", "bitnet/TQ2_0"])
def test_a_f16_cache_stays_within_llama_cpps_spread(key):
    """These random-weight models amplify a small change: the f16 cache (2^-11 relative rounding) moves the first
    step's logits by 1.4e-2 (Q8_0), 1.5e-2 (Q4_0), 2.0e-2 (TQ2_0), the size of llama.cpp's own spread between a
    quantized file and its F32 dequantization (Q8_0 1.6e-2, Q4_0 1.4e-2, TQ2_0 3.0e-2; the bound is the file's
    spread or Q8_0's, whichever is larger), and greedy tokens then flip where
    the top two are close (Q8_0 at token 7, TQ2_0 at token 5; Q4_0 keeps all 16): the prompt's token and four
    decode steps through the cache are checked."""
    run = DOC["runs"][key]
    steps = 16
    model = load_model(PARITY / run["file"], prompt_len=len(DOC["prompt"]), context=len(DOC["prompt"]) + steps)
    assert signature(model.decode).cache.dtype.name == "f16"
    gen = generate(model.prefill, model.decode, DOC["prompt"], steps, ModuleRunner("cpu", model.weights, threads=1))
    assert gen.ids[:5] == run["tokens"][:5]
    first = np.asarray(run["logits"], np.float32)
    rel = float(np.abs(np.asarray(gen.first_logits) - first).max() / np.abs(first).max())
    assert 1e-4 < rel <= max(run["spread"], 1.6e-2), rel  # rounded (not f32), and within the spread


def test_the_f16_cache_state_holds_half_the_bytes():
    path = PARITY / "llama-Q8_0.gguf"
    held = {}
    for cache in ("f16", "f32"):
        model = load_model(path, prompt_len=1, context=64, kv_cache=cache)
        module = ModuleRunner("cpu", model.weights, threads=1).module(model.decode)
        state = module.new_state()
        held[cache] = sum(buf.nbytes for name, buf in state.buffers.items() if "_cache" in name)
        assert {buf.dtype for name, buf in state.buffers.items() if "_cache" in name} == {np.dtype({"f16": np.float16, "f32": np.float32}[cache])}
    assert held["f16"] * 2 == held["f32"] > 0


def test_the_asic_target_refuses_a_half_precision_cache():
    b = Builder()
    y = b.attention(b.input("q", "f32[2, 1, 8]"), b.input("k", "f16[2, 4, 8]"), b.input("v", "f16[2, 4, 8]"))
    with pytest.raises(LadderError, match=r"reads an f32 KV cache, got f16\[2, 4, 8\].*--kv-cache f32"):
        ladder.compile(b.build(y), "asic:lut-tc")
