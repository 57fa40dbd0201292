"""Same file, same answer: ladder against llama.cpp on the committed parity fixtures.

scripts/make_parity_fixtures.py wrote tiny seeded models (tests/parity_models.py) for llama.cpp's ``llama``
and ``bitnet`` architectures in several weight types and recorded llama.cpp's greedy tokens (32 steps) and
first-step logits, for each file and for the same weights dequantized to F32. ladder must give the same
tokens, and logits within a tolerance derived from llama.cpp's own spread: llama.cpp rounds activations to
Q8_0/Q8_K/F16 blocks inside its quantized dot products. For Q8_0 and Q4_0 weights ladder does too (the GGUF
importer quantizes x to Q8_0 blocks, as llama.cpp), so against the quantized run only float summation order
remains, and against the dequantized-F32 run ladder may differ by about what llama.cpp differs from itself
(quantized vs dequantized-F32). For the other types ladder computes with exact dequantized weights and f32
activations: the other way round.
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
    model = load_model(path, prompt_len=len(DOC["prompt"]), context=len(DOC["prompt"]) + DOC["steps"])
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
CPU_RUNS = ["llama/Q6_K", "bitnet/TQ2_0", "llama/Q8_0", "llama/Q4_0"]
# weight types whose activations ladder quantizes as llama.cpp does (llama.cpp's Q8_0 blocks)
QUANTIZED_ACTIVATIONS = {"Q8_0", "Q4_0"}


@pytest.mark.parametrize("target,key", [("ref", k) for k in RUNS] + [("cpu", k) for k in CPU_RUNS])
def test_same_tokens_and_logits_as_llamacpp(model_path, target, key):
    r = RUNS[key]
    gen = ladder_generation(model_path(key), target)
    assert gen.ids == r["tokens"], f"{key} on {target}: {sum(a == b for a, b in zip(gen.ids, r['tokens']))}/32"
    same, other = ("logits", "dequant_logits") if r["type"] in QUANTIZED_ACTIVATIONS else \
        ("dequant_logits", "logits")
    assert max_rel(gen.first_logits, r[same]) <= EXACT_TOL
    assert max_rel(gen.first_logits, r[other]) <= SPREAD_FACTOR * r["spread"] + EXACT_TOL


def test_q8_0_activations_follow_the_weight_type():
    """The importer quantizes x for exactly the weight types whose llama.cpp dot product takes Q8_0 blocks."""
    from ladder.frontends.gguf import Q8_0_ACTIVATIONS

    assert QUANTIZED_ACTIVATIONS <= set(Q8_0_ACTIVATIONS) == {"Q8_0", "Q4_0", "Q5_0"}
