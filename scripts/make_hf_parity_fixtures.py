"""Write the transformers parity fixtures of tests/test_parity_hf.py.

Two tiny seeded Hugging Face folders (config.json + model.safetensors) go to tests/fixtures/parity/:
``hf-llama`` (LlamaForCausalLM, float32) and ``hf-bitnet`` (BitNetForCausalLM as BitNet b1.58 2B4T is
published: ternary projections packed four to a byte with a ``weight_scale``, offline ``bitlinear``
quantization). transformers loads each folder (``from_pretrained``), and its greedy tokens (32 steps,
recomputing the whole sequence each step) and first-step logits for ``PROMPT`` go to transformers.json.

Needs torch (the CPU wheel) and transformers; the tests do not.   python scripts/make_hf_parity_fixtures.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # BitLinear's torch.compile would need a C toolchain

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "parity"
DIMS = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5)
PROMPT = [1, 200, 45, 191, 17, 62, 9]
STEPS = 32
PROJ = {"self_attn.q_proj": ("hidden", "hidden"), "self_attn.k_proj": ("kv", "hidden"),
        "self_attn.v_proj": ("kv", "hidden"), "self_attn.o_proj": ("hidden", "hidden"),
        "mlp.gate_proj": ("ffn", "hidden"), "mlp.up_proj": ("ffn", "hidden"), "mlp.down_proj": ("hidden", "ffn")}


def pack_ternary(t: np.ndarray) -> np.ndarray:
    """int8 {-1,0,1} [4R, K] -> u8 [R, K]: row r + k R in bits 2k..2k+1 of row r, as codes + 1."""
    r = t.shape[0] // 4
    u = (t + 1).astype(np.uint8)
    return sum(u[k * r:(k + 1) * r] << (2 * k) for k in range(4)).astype(np.uint8)


def tensors(kind: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d, f, v = DIMS["hidden_size"], DIMS["intermediate_size"], DIMS["vocab_size"]
    size = {"hidden": d, "ffn": f, "kv": DIMS["num_key_value_heads"] * d // DIMS["num_attention_heads"]}
    emb = rng.standard_normal((v, d)).astype(np.float32)
    out = {"model.embed_tokens.weight": emb}
    for i in range(DIMS["num_hidden_layers"]):
        p = f"model.layers.{i}"
        out[f"{p}.input_layernorm.weight"] = rng.uniform(0.8, 1.2, d).astype(np.float32)
        out[f"{p}.post_attention_layernorm.weight"] = rng.uniform(0.8, 1.2, d).astype(np.float32)
        if kind == "bitnet":
            out[f"{p}.self_attn.attn_sub_norm.weight"] = rng.uniform(0.8, 1.2, d).astype(np.float32)
            out[f"{p}.mlp.ffn_sub_norm.weight"] = rng.uniform(0.8, 1.2, f).astype(np.float32)
        for name, (o, k) in PROJ.items():
            n_out, n_in = size[o], size[k]
            if kind == "bitnet":
                out[f"{p}.{name}.weight"] = pack_ternary(rng.integers(-1, 2, (n_out, n_in)).astype(np.int8))
                out[f"{p}.{name}.weight_scale"] = np.array([float(rng.choice([0.25, 0.5, 1.0]))], np.float32)
            else:
                out[f"{p}.{name}.weight"] = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
    out["model.norm.weight"] = rng.uniform(0.8, 1.2, d).astype(np.float32)
    if kind == "llama":  # leaning towards a successor of each token keeps greedy choices clear of near-ties
        succ = emb[rng.permutation(v)]
        out["lm_head.weight"] = ((rng.standard_normal((v, d)) * 4 + succ) / np.sqrt(d)).astype(np.float32)
    return out


def write(kind: str, folder: Path) -> None:
    from safetensors.numpy import save_file
    from transformers import BitNetConfig, LlamaConfig

    folder.mkdir(parents=True, exist_ok=True)
    if kind == "llama":
        cfg = LlamaConfig(**DIMS, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
        cfg.architectures = ["LlamaForCausalLM"]
    else:
        cfg = BitNetConfig(**DIMS, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                           rope_parameters={"rope_theta": 500000.0, "rope_type": "default"})
        cfg.architectures = ["BitNetForCausalLM"]
        cfg.quantization_config = {"quant_method": "bitnet", "linear_class": "bitlinear",
                                   "quantization_mode": "offline"}
    cfg.save_pretrained(folder)
    save_file(tensors(kind, seed=7 if kind == "llama" else 8), str(folder / "model.safetensors"),
              metadata={"format": "pt"})


def byte_tokenizer(folder: Path) -> None:
    """A byte-level tokenizer.json whose 256 tokens are the bytes (no merges), so text round-trips."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    # GPT-2's printable stand-ins for bytes: printable Latin-1 bytes stand for themselves, the rest map to 256+
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    char = {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}
    tok = Tokenizer(models.BPE({char[b]: b for b in range(256)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.save(str(folder / "tokenizer.json"))


def record(folder: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = list(PROMPT)
    first = None
    with torch.no_grad():
        for _ in range(STEPS):
            logits = model(torch.tensor([ids])).logits[0, -1].float().numpy()
            first = logits if first is None else first
            ids.append(int(np.argmax(logits)))
    return {"tokens": ids[len(PROMPT):], "logits": [float(x) for x in first]}


def main() -> int:
    import transformers

    runs = {}
    for kind in ("llama", "bitnet"):
        folder = OUT / f"hf-{kind}"
        write(kind, folder)
        byte_tokenizer(folder)
        runs[kind] = {"folder": folder.name, **record(folder)}
        print(kind, runs[kind]["tokens"])
    doc = {"transformers": transformers.__version__, "prompt": PROMPT, "steps": STEPS, "runs": runs}
    (OUT / "transformers.json").write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
