"""Same folder, same answer: ladder against transformers on the committed Hugging Face fixtures.

scripts/make_hf_parity_fixtures.py wrote two tiny seeded folders, a LlamaForCausalLM (float32) and a
BitNetForCausalLM packed as BitNet b1.58 2B4T is published (ternary rows four to a byte, a weight_scale that
divides, int8 per-token activations), and recorded what transformers' forward gives: greedy tokens for 32
steps and the first-step logits. No torch here: ladder reads the folders itself.

Tolerance: transformers computes in float32 like ladder, so only summation order (and, for BitNet, the
weight scale applied as a product with its inverse instead of a division) separates them; measured <= 5e-6.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ladder
from ladder.cli import main as cli_main
from ladder.errors import LadderError
from ladder.frontends import hf
from ladder.generate import ModuleRunner, generate, load_model

FIX = Path(__file__).parent / "fixtures" / "parity"
DOC = json.loads((FIX / "transformers.json").read_text())
TOL = 5e-5


def max_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("target", ["ref", "cpu"])
@pytest.mark.parametrize("kind", ["llama", "bitnet"])
def test_same_tokens_and_logits_as_transformers(kind, target):
    r = DOC["runs"][kind]
    model = load_model(FIX / r["folder"], prompt_len=len(DOC["prompt"]), max_new=DOC["steps"], kv_cache="f32")  # torch: f32
    if target == "ref":
        def runner(g, inputs):
            return ladder.run(g, inputs, model.weights)
    else:
        runner = ModuleRunner(target, model.weights, threads=1)
    gen = generate(model.prefill, model.decode, DOC["prompt"], DOC["steps"], runner)
    assert gen.ids == r["tokens"]
    assert max_rel(gen.first_logits, r["logits"]) <= TOL


def test_bitnet_folder_takes_the_integer_path():
    g, w = hf.load(FIX / "hf-bitnet")
    kinds = [op.kind for op in g.ops()]
    assert kinds.count("quantize") == 7 * 2 and "relu2" in kinds and kinds.count("rmsnorm") == 2 * 4 + 1
    codes = w["model.layers.0.self_attn.q_proj.weight"]
    assert codes.shape == (64, 64) and set(np.unique(codes)) <= {-1, 0, 1}
    fused = ladder.PassManager("legalize-types{target=cpu},fuse").run(g)
    assert [op.kind for op in fused.ops()].count("qmatmul_i8") == 7 * 2


def test_unpack_matches_the_packing():
    rng = np.random.default_rng(0)
    t = rng.integers(-1, 2, (8, 5)).astype(np.int8)
    packed = sum(((t[k * 2:(k + 1) * 2] + 1).astype(np.uint8) << (2 * k)) for k in range(4)).astype(np.uint8)
    np.testing.assert_array_equal(hf.unpack_ternary(packed), t)


def test_cli_generate_on_a_folder(capsys):
    folder = FIX / DOC["runs"]["llama"]["folder"]
    ids = ",".join(map(str, DOC["prompt"]))
    assert cli_main(["generate", str(folder), "--prompt-ids", ids, "--max-new", "8", "--target", "ref"]) == 0
    out = capsys.readouterr().out
    assert "ids: " + ",".join(map(str, DOC["runs"]["llama"]["tokens"][:8])) in out


def test_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(LadderError, match="no config.json"):
        hf.load(tmp_path)
    bad = tmp_path / "m"
    shutil.copytree(FIX / "hf-llama", bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(LadderError, match="'GPT2LMHeadModel' is not supported; ladder reads LlamaForCausalLM, "
                                          "BitNetForCausalLM"):
        hf.load(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "rope_parameters": {"rope_type": "yarn", "factor": 4}}))
    with pytest.raises(LadderError, match="RoPE scaling"):
        hf.load(bad)
    (bad / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 96}))
    with pytest.raises(LadderError, match=r"mlp.gate_proj.weight' has shape \[128, 64\], the config says \[96, 64"):
        hf.load(bad)
    (bad / "config.json").write_text(json.dumps(cfg))
    (bad / "model.safetensors").unlink()
    with pytest.raises(LadderError, match="no .safetensors file"):
        hf.load(bad)
