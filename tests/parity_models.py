"""The tiny seeded models of the llama.cpp parity fixtures (tests/fixtures/parity).

``write_float(path, arch, qtype)`` writes the model of ``arch`` with every matrix in F32, F16 or BF16 through
the ``gguf`` writer, laid out as llama.cpp's converter lays it out, with a small SentencePiece vocabulary so
that llama.cpp loads it. The same call gives the same bytes every time, so the tests rebuild the float files
instead of committing them; the quantized files are ``llama-quantize --pure`` of the F32 one and are
committed (scripts/make_parity_fixtures.py writes both and records llama.cpp's answers).

Dimensions: hidden 256 (the K-quants and TQ types pack rows in 256-element blocks), 2 layers, 4 heads of
64, 2 KV heads, FFN 256, vocabulary 320.
"""

from __future__ import annotations

import numpy as np

DIMS = dict(vocab=320, hidden=256, layers=2, heads=4, kv_heads=2, ffn=256, context=256)
PROMPT = [1, 300, 45, 291, 17, 262, 9]
STEPS = 32
EMB = 0.1  # scale of BitNet's (tied) embedding
LEAN = 1.0  # how strongly the head leans to each token's successor
# architecture -> the weight types recorded against llama.cpp
TYPES = {
    "llama": ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q6_K", "TQ2_0", "Q4_K", "Q5_K", "Q3_K", "Q2_K"],
    "bitnet": ["F32", "TQ1_0", "TQ2_0"],
}
FLOAT_TYPES = ("F32", "F16", "BF16")

_MERGES = ["▁t", "▁a", "he", "in", "er", "an", "on", "▁s", "en", "re", "▁w", "at", "▁o", "it", "is", "or",
           "▁c", "nd", "ed", "es", "ou", "ar", "al", "le", "▁b", "▁f", "▁m", "▁p", "▁h", "▁d", "▁the",
           "ing", "▁and", "▁of"]


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, token types) of a SentencePiece-style vocabulary: <unk> <s> </s>, 256 byte tokens,
    then pieces (longer pieces score higher, so they win)."""
    pieces = ["▁"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + _MERGES
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + pieces
    assert len(tokens) == DIMS["vocab"], len(tokens)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces), 0, -1)]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)  # unknown, control, byte, normal
    return tokens, scores, types


def tensors(arch: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The model's float32 tensors by GGUF name (values, row-major, the row last)."""
    rng = np.random.default_rng(seed)
    d, f, v, L = DIMS["hidden"], DIMS["ffn"], DIMS["vocab"], DIMS["layers"]
    kvd = DIMS["kv_heads"] * d // DIMS["heads"]
    bitnet = arch == "bitnet"

    def mat(n, k, scale):
        if bitnet:  # ternary values times one per-tensor scale (a power of two: exact in every format)
            return (rng.integers(-1, 2, (n, k)) * scale).astype(np.float32)
        return (rng.standard_normal((n, k)) * scale / np.sqrt(k)).astype(np.float32)

    def norm(n):
        return rng.uniform(0.8, 1.2, n).astype(np.float32)

    # BitNet's head is the embedding: a small one keeps the layers' say over the next token (a large one only
    # repeats the last token)
    out = {"token_embd.weight": (rng.standard_normal((v, d)) * (EMB if bitnet else 1.0)).astype(np.float32)}
    for i in range(L):
        p = f"blk.{i}"
        out[f"{p}.attn_norm.weight"] = norm(d)
        out[f"{p}.attn_q.weight"] = mat(d, d, 0.0625 if bitnet else 1.0)
        out[f"{p}.attn_k.weight"] = mat(kvd, d, 0.0625 if bitnet else 1.0)
        out[f"{p}.attn_v.weight"] = mat(kvd, d, 0.0625 if bitnet else 1.0)
        out[f"{p}.attn_output.weight"] = mat(d, d, 0.0625 if bitnet else 1.0)
        out[f"{p}.ffn_norm.weight"] = norm(d)
        out[f"{p}.ffn_gate.weight"] = mat(f, d, 0.0625 if bitnet else 1.0)
        out[f"{p}.ffn_up.weight"] = mat(f, d, 0.0625 if bitnet else 1.0)
        out[f"{p}.ffn_down.weight"] = mat(d, f, 0.0625 if bitnet else 1.0)
        if bitnet:
            out[f"{p}.attn_sub_norm.weight"] = norm(d)
            out[f"{p}.ffn_sub_norm.weight"] = norm(f)
            # llama.cpp's optional per-tensor scales, on two projections
            out[f"{p}.attn_q.scale"] = np.array([1.5], np.float32)
            out[f"{p}.ffn_down.scale"] = np.array([0.75 + 0.5 * i], np.float32)
    out["output_norm.weight"] = norm(d)
    if not bitnet:  # llama.cpp's bitnet has no output.weight (it projects with token_embd)
        # a head that leans towards a fixed successor of each token (a permutation of the embedding) keeps the
        # greedy choices clear of near-ties, which llama.cpp's own rounding would flip
        succ = out["token_embd.weight"][rng.permutation(v)]
        out["output.weight"] = ((rng.standard_normal((v, d)) * 4 + LEAN * succ) / np.sqrt(d)).astype(np.float32)
    return out


def write(path, arch: str, values: dict[str, np.ndarray], qtype: str = "F32") -> None:
    """Write ``values`` as a GGUF model of ``arch``; matrices in ``qtype`` (F32, F16 or BF16), vectors in F32."""
    from gguf import GGMLQuantizationType as QT
    from gguf import GGUFWriter, quants

    w = GGUFWriter(str(path), arch)
    w.add_name(f"ladder-parity-{arch}")
    w.add_block_count(DIMS["layers"])
    w.add_context_length(DIMS["context"])
    w.add_embedding_length(DIMS["hidden"])
    w.add_feed_forward_length(DIMS["ffn"])
    w.add_head_count(DIMS["heads"])
    w.add_head_count_kv(DIMS["kv_heads"])
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type({"F32": 0, "F16": 1, "BF16": 32}[qtype])
    tokens, scores, types = vocabulary()
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    for name, a in values.items():
        if a.ndim == 1 or qtype == "F32":
            w.add_tensor(name, a.astype(np.float32))
        elif qtype == "F16":
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, quants.quantize(a, QT.BF16), raw_dtype=QT.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_float(path, arch: str, qtype: str = "F32", seed: int = 0) -> None:
    write(path, arch, tensors(arch, seed), qtype)
