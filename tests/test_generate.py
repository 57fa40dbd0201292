"""Greedy generation (ladder.generate, `ladder generate`): the cpu target generates the reference's tokens,
chunked and padded prefill equals token-by-token prefill, .gguf models, and located errors for models and
requests that do not fit the step convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ladder
from ladder import weights
from ladder.cli import main as cli_main
from ladder.errors import LadderError
from ladder.generate import GenerateError, ModuleRunner, check, generate, load_model, signature
from ladder.models import SIZES, bitnet_decoder
from small_programs import BITNET_SMALL, PROMPT

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def ref_ids(small):
    return generate(small.prefill, small.decode, PROMPT, 10, ModuleRunner("ref", small.weights)).ids


def test_signature_of_the_example():
    sig = signature(ladder.parse(BITNET_SMALL))
    assert (sig.seq, sig.layers, sig.vocab, sig.context) == (1, 2, 256, 64)
    assert sig.cache.shape == (2, 64, 32)


def test_cpu_generates_the_reference_tokens(small, ref_ids):
    runner = ModuleRunner("cpu", small.weights, threads=1)
    gen = generate(small.prefill, small.decode, PROMPT, 10, runner)
    assert gen.ids == ref_ids
    assert len(ref_ids) == 10 and len(set(ref_ids)) > 1 and all(0 <= t < 256 for t in ref_ids)
    assert gen.steps == {"prefill": len(PROMPT), "decode": 9}
    assert gen.prefill_tokens_per_s > 0 and gen.decode_tokens_per_s > 0


def test_asic_functional_simulator_generates_the_reference_tokens(small, ref_ids, capsys):
    from ladder.compile import BACKENDS

    if "asic" not in BACKENDS:
        pytest.skip("the asic target is not registered with ladder.compile")
    assert cli_main(["generate", str(BITNET_SMALL), "--random-weights", "0", "--prompt-ids", ",".join(map(str, PROMPT)),
                     "--max-new", "10", "--target", "asic:lut-tc"]) == 0
    assert _ids(capsys.readouterr().out) == ref_ids


def test_decode_reads_the_cache(small, ref_ids):
    """Without the cache the model forgets the prompt: a fresh start from the last token alone differs."""
    gen = generate(small.prefill, small.decode, [PROMPT[-1]], 10, ModuleRunner("ref", small.weights))
    assert gen.ids != ref_ids


@pytest.mark.parametrize("seq", [2, 3, 5, 8])
def test_chunked_and_padded_prefill_equals_token_by_token(small, ref_ids, seq):
    prefill = bitnet_decoder(SIZES["tiny"], seq, f"prefill{seq}")
    runner = ModuleRunner("ref", small.weights)
    gen = generate(prefill, small.decode, PROMPT, 10, runner)
    assert gen.ids == ref_ids
    assert gen.steps["prefill"] == -(-len(PROMPT) // seq)


def test_demo_generate_is_the_same_loop(small, ref_ids):
    from ladder.demo import generate as demo_generate

    ids, t_prefill, t_decode = demo_generate(SIZES["tiny"], small.prefill, small.decode, PROMPT, 10,
                                             ModuleRunner("ref", small.weights))
    assert ids == ref_ids and t_prefill > 0 and t_decode > 0


def _ids(out: str) -> list[int]:
    line = next(ln for ln in out.splitlines() if ln.startswith("ids: "))
    return [int(t) for t in line[5:].split(",")]


@pytest.mark.parametrize("target", ["ref", "cpu"])
def test_cli_generates_and_reports_speeds(target, ref_ids, capsys):
    args = ["generate", str(BITNET_SMALL), "--random-weights", "0", "--prompt-ids", ",".join(map(str, PROMPT)),
            "--max-new", "10", "--target", target, *(["--threads", "1"] if target == "cpu" else [])]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert _ids(out) == ref_ids
    assert "prefill: 5 tokens in" in out and "decode: 9 tokens in" in out and out.count("tokens/s") == 2


def test_cli_with_a_prefill_graph_and_a_weights_file(tmp_path, ref_ids, capsys):
    prefill = tmp_path / "prefill.lir"
    prefill.write_text(str(bitnet_decoder(SIZES["tiny"], 4, "prefill4")))
    decode = ladder.parse(BITNET_SMALL)
    wfile = tmp_path / "w.safetensors"
    weights.save(wfile, decode, weights.random(decode, 0))
    assert cli_main(["generate", str(BITNET_SMALL), "--weights", str(wfile), "--prefill", str(prefill), "--prompt-ids",
                     "1,2,3,4,5", "--max-new", "10", "--target", "ref"]) == 0
    out = capsys.readouterr().out
    assert _ids(out) == ref_ids and "2 steps" in out


# -- GGUF ------------------------------------------------------------------------------------------

def test_gguf_model_on_cpu_and_ref(tmp_path, capsys):
    pytest.importorskip("gguf")
    from test_gguf import BITNET_TYPES, DIMS, model_file

    path = model_file(tmp_path / "bitnet.gguf", "bitnet-b1.58", BITNET_TYPES, tied=False,
                      dims={**DIMS, "layers": 1}, seed=3)
    model = load_model(path, prompt_len=3, context=12)
    assert signature(model.prefill).seq == 3 and signature(model.decode).seq == 1
    assert signature(model.decode).context == 12
    ids = {}
    for target in ("ref", "cpu"):
        threads = ["--threads", "1"] if target == "cpu" else []
        assert cli_main(["generate", str(path), "--prompt-ids", "7,8,9", "--max-new", "6", "--target", target,
                         *threads, "--context", "12"]) == 0
        ids[target] = _ids(capsys.readouterr().out)
    assert ids["cpu"] == ids["ref"]
    want = generate(model.prefill, model.decode, [7, 8, 9], 6, ModuleRunner("ref", model.weights)).ids
    assert ids["ref"] == want and len(want) == 6 and len(set(want)) > 1
    with pytest.raises(GenerateError, match="holds its own weights"):
        load_model(path, random_weights=0)


def test_gguf_cache_is_sized_to_the_request():
    """Without --context the cache holds prompt + max_new positions, not the file's 256 (issue 17)."""
    pytest.importorskip("gguf")
    path = Path(__file__).parent / "fixtures" / "parity" / "bitnet-TQ2_0.gguf"
    assert signature(load_model(path, prompt_len=3, max_new=6).decode).context == 9
    assert signature(load_model(path, prompt_len=3, max_new=600).decode).context == 256  # capped at the file's
    assert signature(load_model(path, prompt_len=3).decode).context == 256
    assert signature(load_model(path, prompt_len=3, max_new=6, context=20).decode).context == 20


# -- errors ------------------------------------------------------------------------------------------

def test_a_graph_off_the_convention_names_the_missing_input(capsys):
    assert cli_main(["generate", str(EXAMPLES / "bitnet_layer.lir"), "--random-weights", "0",
                     "--prompt-ids", "1"]) == 1
    err = capsys.readouterr().err
    assert "bitnet_layer.lir:7:1: generate error: graph @bitnet_layer: missing input %tokens" in err
    assert "compiled" not in err


def _step(pos: str = "i32[1]", caches: tuple[str, ...] = ("k_cache0", "v_cache0"), logits: str = "f32[8, 4]",
          outputs: int = 3) -> ladder.Graph:
    """A minimal step graph (logits = embedding rows; the caches returned unchanged), changed as asked."""
    b = ladder.Builder("step")
    tokens = b.input("tokens", "i32[1]")
    b.input("pos", pos)
    b.input("start", "i32[1]")
    b.input("kv_len", "i32[1]")
    cache = [b.input(name, "f32[2, 8, 4]") for name in caches]
    out = b.gather(b.param("embed", logits), tokens)
    return b.build(*([out] + cache)[:outputs])


def test_signature_errors():
    sig = signature(_step())
    assert (sig.seq, sig.layers, sig.vocab, sig.context) == (1, 1, 4, 8)
    with pytest.raises(GenerateError, match=r"@step: input %pos must be an integer vector \[1\], not i32\[2\]"):
        signature(_step(pos="i32[2]"))
    with pytest.raises(GenerateError, match="returns 2 values; expected logits and 2 updated caches"):
        signature(_step(outputs=2))
    with pytest.raises(GenerateError, match="input %k_cache2 is not part of the convention"):
        signature(_step(caches=("k_cache0", "v_cache0", "k_cache2"), outputs=4))
    with pytest.raises(GenerateError, match="missing input %v_cache0"):
        signature(_step(caches=("k_cache0",), outputs=2))
    with pytest.raises(GenerateError, match=r"first output \(logits\) must be f32\[1, vocab\], not f32\[1, 2, 2\]"):
        signature(_step(logits="f32[8, 2, 2]"))


def test_request_errors(small):
    tiny = SIZES["tiny"]
    with pytest.raises(GenerateError, match="need 65 cache positions but the cache holds 64"):
        check(small.prefill, small.decode, [1] * 10, 56)
    check(small.prefill, small.decode, [1] * 10, 55)
    with pytest.raises(GenerateError, match="token id 256 is outside the vocabulary"):
        check(small.prefill, small.decode, [256], 2)
    with pytest.raises(GenerateError, match="prompt is empty"):
        check(small.prefill, small.decode, [], 2)
    with pytest.raises(GenerateError, match="max_new must be >= 1"):
        check(small.prefill, small.decode, [1], 0)
    other = bitnet_decoder(type(tiny)(layers=1), 4, "one_layer")
    with pytest.raises(GenerateError, match="prefill graph @one_layer .* does not match the decode graph"):
        check(other, small.decode, [1], 2)
    with pytest.raises(GenerateError, match="reads its params from --weights"):
        load_model(BITNET_SMALL)
    with pytest.raises(GenerateError, match="cache capacity is fixed"):
        load_model(BITNET_SMALL, random_weights=0, context=32)


def test_cli_rejects_bad_prompt_ids(capsys):
    assert cli_main(["generate", str(BITNET_SMALL), "--random-weights", "0", "--prompt-ids", "1,x"]) == 1
    assert "--prompt-ids expects comma-separated token ids" in capsys.readouterr().err


# -- sampling, streaming, text ---------------------------------------------------------------------------

def test_sampler():
    from ladder.generate import Sampler

    logits = np.array([0.0, 3.0, 2.9, -5.0, 1.0])
    assert Sampler()(logits) == 1  # temperature 0: greedy
    draws = [Sampler(1.0, seed=s)(logits) for s in range(200)]
    assert set(draws) >= {1, 2, 4} and draws == [Sampler(1.0, seed=s)(logits) for s in range(200)]
    assert {Sampler(1.0, top_k=2, seed=s)(logits) for s in range(100)} == {1, 2}
    # top_p: token 1 holds 0.48 of the mass at temperature 1, tokens 1 and 2 0.91; 0.4 keeps only the first
    assert {Sampler(1.0, top_p=0.4, seed=s)(logits) for s in range(50)} == {1}
    assert {Sampler(1.0, top_p=0.8, seed=s)(logits) for s in range(100)} == {1, 2}
    with pytest.raises(GenerateError, match="top_p"):
        Sampler(1.0, top_p=0.0)


def test_stream_yields_tokens_and_stops_at_eos(small, ref_ids):
    from ladder.generate import stream

    run = ModuleRunner("ref", small.weights)
    assert list(stream(small.prefill, small.decode, PROMPT, 6, run)) == ref_ids[:6]
    stop = ref_ids[2]
    got = list(stream(small.prefill, small.decode, PROMPT, 6, run, stop={stop}))
    assert got == ref_ids[:ref_ids.index(stop) + 1]


PARITY = Path(__file__).parent / "fixtures" / "parity"


def test_llm_generates_text_and_ids():
    pytest.importorskip("tokenizers")
    import json

    doc = json.loads((PARITY / "llamacpp.json").read_text())
    llm = ladder.LLM(PARITY / "llama-Q4_0.gguf", target="ref", context=64, prefill_chunk=4)
    toks = list(llm.generate(doc["prompt"], 8))  # ids in: chunked prefill, llama.cpp's greedy tokens
    assert [t.id for t in toks] == doc["runs"]["llama/Q4_0"]["tokens"][:8]
    toks = list(llm.generate("hello the world", 6))
    assert len(toks) == 6 and "".join(t.text for t in toks) == llm.tokenizer.decode([t.id for t in toks])
    a = [t.id for t in llm.generate("hello", 6, temperature=1.0, top_k=50, seed=5)]
    assert a == [t.id for t in llm.generate("hello", 6, temperature=1.0, top_k=50, seed=5)]
    assert a != [t.id for t in llm.generate("hello", 6)]
    with pytest.raises(LadderError, match="no chat template"):
        list(llm.generate("hello", 2, chat=True))


@pytest.mark.parametrize("model", ["llama-Q4_0.gguf", "hf-llama"])
def test_cli_streams_text(model, capsys):
    pytest.importorskip("tokenizers")
    from ladder.tokenizer import load as load_tokenizer

    path = PARITY / model
    assert cli_main(["generate", str(path), "--prompt", "hello the", "--max-new", "5", "--target", "ref"]) == 0
    out = capsys.readouterr().out
    ids = _ids(out)
    tok = load_tokenizer(path)
    assert len(ids) == 5 and tok.decode(ids) + "\n" in out
    assert cli_main(["generate", str(path), "--prompt", "hello", "--max-new", "4", "--target", "ref",
                     "--temperature", "0.7", "--top-p", "0.9", "--seed", "1"]) == 0
    assert len(_ids(capsys.readouterr().out)) == 4


def test_prefill_with_last_row_logits_generates_the_same():
    """A prefill graph whose head runs on the last token only (``last_logits``) gives the same tokens and first
    logits as one returning every row; a prompt that does not fill its chunks ends through the decode graph."""
    from ladder.models import _RandomParams, decoder

    cfg = SIZES["tiny"]
    dec = bitnet_decoder(cfg, 1)
    every, last = bitnet_decoder(cfg, 4), decoder(cfg.arch, cfg, _RandomParams(cfg), 4, "last", last_logits=True)
    assert last.output_types()[0].shape == (1, cfg.vocab) and signature(last).last_only
    assert not signature(every).last_only
    w = weights.random(every, 3)
    for prompt in ([5, 6, 7, 8, 9, 10, 11, 12], [5, 6, 7, 8, 9, 10]):
        a = generate(every, dec, prompt, 4, ModuleRunner("ref", w))
        b = generate(last, dec, prompt, 4, ModuleRunner("ref", w))
        assert a.ids == b.ids
        np.testing.assert_allclose(b.first_logits, a.first_logits, rtol=1e-5, atol=1e-5)
        assert b.steps == {"prefill": 2 if len(prompt) == 8 else 3, "decode": 3}


def test_imported_prefill_computes_the_last_rows_logits_only(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import parity_models as pm

    path = tmp_path / "m.gguf"
    pm.write_float(path, "llama")
    m = load_model(path, prompt_len=5, max_new=3)
    assert m.prefill.output_types()[0].shape == (1, pm.DIMS["vocab"])
    assert m.decode.output_types()[0].shape == (1, pm.DIMS["vocab"])

