"""Same file, same answer: ladder against llama.cpp on the committed parity fixtures.

scripts/make_parity_fixtures.py wrote tiny seeded models (tests/parity_models.py) for llama.cpp's ``llama``
and ``bitnet`` architectures in several weight types and recorded llama.cpp's greedy tokens (32 steps) and
first-step logits, for each file and for the same weights dequantized to F32. ladder must give the same
tokens, and logits within a tolerance derived from llama.cpp's own spread: llama.cpp rounds activations to
Q8_0/Q8_K blocks or to F16/BF16 inside its dot products. Where ladder rounds them as llama.cpp does in every
matmul of the model (EXACT_QUANTIZED: Q8_0 and Q4_0 weights take Q8_0 blocks, TQ2_0, TQ1_0 and
Q2_K-Q6_K Q8_K blocks, F16/BF16 weights x in their type), only float summation order remains against llama.cpp's
run of the file; where it computes with f32 activations (EXACT_DEQUANT: F32) the same holds against llama.cpp's
run of the dequantized weights. Either way the other run may differ by about llama.cpp's own spread between the
two. Two runs match neither to float order (KNOWN_GAPS, below): each stays within the spread of both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf")

import ladder  # noqa: E402
import parity_models as pm  # noqa: E402
from ladder.generate import ModuleRunner, generate, load_model  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "parity"
DOC = json.loads((FIX / "llamacpp.json").read_text())
RUNS = DOC["runs"]
# float summation order only (ladder vs llama.cpp on the same F32 weights): measured <= 1e-6 on ref and cpu
EXACT_TOL = 1e-5
# ladder vs llama.cpp's quantized run: twice llama.cpp's own quantized-vs-exact spread, plus EXACT_TOL
SPREAD_FACTOR = 2.0


def max_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    made = {}

    def path_of(key: str) -> Path:
        r = RUNS[key]
        if r["file"]:
            return FIX / r["file"]
        if key not in made:  # float files are rebuilt, byte for byte, from the seed
            made[key] = tmp_path_factory.mktemp("parity") / f"{r['arch']}-{r['type']}.gguf"
            pm.write_float(made[key], r["arch"], r["type"])
        return made[key]

    return path_of


def ladder_generation(path: Path, target: str):
    # the fixtures ran llama.cpp with an f32 KV cache (scripts/parity_dump.cpp: type_k, type_v)
    model = load_model(path, prompt_len=len(DOC["prompt"]), context=len(DOC["prompt"]) + DOC["steps"],
                       kv_cache="f32")
    if target == "ref":
        def runner(g, inputs):
            return ladder.run(g, inputs, model.weights)
    else:
        runner = ModuleRunner(target, model.weights, threads=1)
    return generate(model.prefill, model.decode, DOC["prompt"], DOC["steps"], runner)


def test_fixtures_cover_the_architectures_and_types():
    assert {(r["arch"], r["type"]) for r in RUNS.values()} == {(a, t) for a, ts in pm.TYPES.items() for t in ts}
    assert DOC["prompt"] == pm.PROMPT and DOC["steps"] == pm.STEPS == 32
    for r in RUNS.values():
        assert len(r["tokens"]) == 32 and len(r["logits"]) == pm.DIMS["vocab"]
        if r["file"]:
            assert (FIX / r["file"]).stat().st_size < 1_200_000


# the cpu target compiles two step graphs per file: run it on one file per architecture and weight family
CPU_RUNS = ["llama/Q6_K", "bitnet/TQ2_0", "bitnet/TQ1_0", "llama/Q8_0", "llama/Q4_0", "llama/Q4_K", "llama/Q5_K",
            "llama/Q3_K", "llama/Q2_K"]
# runs whose every matmul takes x as llama.cpp's dot products take it: equal to llama.cpp's run of the file
EXACT_QUANTIZED = {"llama/Q8_0", "llama/Q4_0", "llama/BF16", "bitnet/TQ2_0", "bitnet/TQ1_0", "llama/Q4_K",
                   "llama/Q6_K", "llama/Q5_K", "llama/Q3_K", "llama/Q2_K"}
# runs with f32 activations in ladder: equal to llama.cpp's run of the dequantized weights
EXACT_DEQUANT = {"llama/F32", "bitnet/F32"}
# Not reproduced to float order, measured 2026-12-06: llama/F16 is 5.0e-4 from llama.cpp's run and 4.8e-4 from
# the F32 run (llama.cpp's own spread 6.1e-4); llama/TQ2_0 (random, not ternary, weights: per-block scales)
# is 1.6e-2 from llama.cpp's run and 1.9e-2 from the F32 run (spread 1.9e-2), although bitnet/TQ2_0 through
# the same Q8_K path and kernel agrees to 3e-7.
KNOWN_GAPS = {"llama/F16", "llama/TQ2_0"}
# Runs whose greedy tokens part from llama.cpp's after this many steps although the first logits agree to float
# order. llama/Q4_K (measured 2026-12-07): ladder's first logits are 5.5e-7 from llama.cpp's run of the file;
# over the prompt followed by llama.cpp's tokens, the last row's logits agree to <= 6.4e-7 at 18 of 20 prompt
# lengths and differ by 1.3e-2 and 1.0e-2 at lengths 8 and 26. There llama.cpp agrees with itself (with and
# without its repacked kernels, 3e-7) and ladder with itself (a decode step against the prefill of the same
# tokens, 4e-7); the head computed as llama.cpp's Q4_K x Q8_K dot product does on ladder's activations agrees
# with ladder's head to 3e-7. So the activations part upstream, where a float-order difference moves an
# activation across a rounding tie of its Q8_K code (a step of 1/127 of its row's largest value): at length 8
# the nearest lies 1.4e-5 of a step from a tie. Step 19's token follows such a row (top-2 margin 0.3%). That is
# the reference interpreter's run; the cpu target's (another float order) agreed in all 32 tokens on a Zen 4
# natively and compiled for cpu:avx2 and cpu:generic, 3.7-4.6e-7 from llama.cpp's first logits.
TOKENS_AGREE = {"llama/Q4_K": 19}
# Runs whose first logits agree with llama.cpp's run of the file to float order on some float orders only
# (measured 2026-12-07, Zen 4): llama/Q2_K natively (AVX-512 VNNI tiles) is 2.7e-7 from llama.cpp's first logits
# with all 32 tokens alike; the reference interpreter (dequantized f32 and BLAS), and the cpu target compiled for
# cpu:avx2 and for cpu:generic, are 1.4e-2 from them (1.6e-2 from the F32 run; llama.cpp's own spread 1.7e-2) and
# part after 11 tokens. In the reference's prefill of the prompt an activation lies 1.6e-5 of a code step from a
# rounding tie of its Q8_K block (Q5_K's nearest: 5.8e-5), about what a float-order difference moves it (one code
# step is 1/127 of the block's largest value). Such a run is held to the spread of both of llama.cpp's runs, and
# its tokens to the first that many, on every target. (llama/Q6_K is such a run on cpu:generic alone, no FMA: 1.7e-2
# from llama.cpp's first logits and 3 tokens alike, its nearest tie 1.9e-5 of a step; natively on Zen 4, for
# cpu:avx2 and on the reference 3e-7 and 32 tokens. The cpu runs here are native: x86-64 machines with FMA.)
TIES = {"llama/Q2_K": 11}


@pytest.mark.parametrize("target,key", [("ref", k) for k in RUNS] + [("cpu", k) for k in CPU_RUNS])
def test_same_tokens_and_logits_as_llamacpp(model_path, target, key):
    r = RUNS[key]
    gen = ladder_generation(model_path(key), target)
    ties = key in TIES
    agree = TIES[key] if ties else TOKENS_AGREE.get(key, len(r["tokens"]))
    assert gen.ids[:agree] == r["tokens"][:agree], \
        f"{key} on {target}: {sum(a == b for a, b in zip(gen.ids, r['tokens']))}/32"
    bound = SPREAD_FACTOR * r["spread"] + EXACT_TOL
    if key in KNOWN_GAPS or ties:
        assert max_rel(gen.first_logits, r["logits"]) <= bound
        assert max_rel(gen.first_logits, r["dequant_logits"]) <= bound
        return
    same, other = ("logits", "dequant_logits") if key in EXACT_QUANTIZED else ("dequant_logits", "logits")
    assert max_rel(gen.first_logits, r[same]) <= EXACT_TOL
    assert max_rel(gen.first_logits, r[other]) <= bound


def test_every_run_has_an_expectation():
    assert EXACT_QUANTIZED | EXACT_DEQUANT | KNOWN_GAPS == set(RUNS)
    assert not (EXACT_QUANTIZED & EXACT_DEQUANT or KNOWN_GAPS & (EXACT_QUANTIZED | EXACT_DEQUANT))


def test_activations_follow_the_weight_type():
    """The importer rounds x for exactly the weight types whose llama.cpp dot product takes it rounded and that
    ladder has kernels for (the others, e.g. Q4_1 and Q5_1, keep f32 x: EXACT_DEQUANT)."""
    from ladder.frontends.gguf import Q8_0_ACTIVATIONS, Q8_K_ACTIVATIONS, Q8_K_BLOCKS, ROUNDED_ACTIVATIONS

    assert set(Q8_0_ACTIVATIONS) == {"Q8_0", "Q4_0", "Q5_0"} and set(Q8_K_ACTIVATIONS) == {"TQ2_0", "TQ1_0"}
    assert set(Q8_K_BLOCKS) == {"Q4_K", "Q5_K", "Q6_K", "Q3_K", "Q2_K"}
    assert ROUNDED_ACTIVATIONS == {"F16": "f16", "BF16": "bf16"}
    rounded = set(Q8_0_ACTIVATIONS) | set(Q8_K_ACTIVATIONS) | set(Q8_K_BLOCKS) | set(ROUNDED_ACTIVATIONS)
    assert all(RUNS[k]["type"] in rounded for k in EXACT_QUANTIZED)
    assert not any(RUNS[k]["type"] in rounded for k in EXACT_DEQUANT if RUNS[k]["arch"] == "llama")
