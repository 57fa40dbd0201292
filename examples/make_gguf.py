"""Write a tiny Llama-style GGUF model to try ``ladder generate`` on (needs the ``gguf`` extra).

    python examples/make_gguf.py model.gguf

Random weights in the layout llama.cpp reads: 2 layers, hidden 64, 4 heads (2 KV heads), FFN 128, a 64-token
vocabulary and context 64; the projections are Q8_0 and the norms and embedding F32. The tokens it generates
mean nothing; the file exercises the importer and the generation loop in seconds.
"""

from __future__ import annotations

import sys

import numpy as np

DIMS = dict(vocab=64, hidden=64, layers=2, heads=4, kv_heads=2, ffn=128, context=64)


def write_tiny_llama(path: str, seed: int = 0) -> None:
    from gguf import GGMLQuantizationType, GGUFWriter, quants

    rng = np.random.default_rng(seed)
    d, f, v = DIMS["hidden"], DIMS["ffn"], DIMS["vocab"]
    kv = DIMS["kv_heads"] * d // DIMS["heads"]
    w = GGUFWriter(path, "llama")
    w.add_uint32("llama.block_count", DIMS["layers"])
    w.add_uint32("llama.embedding_length", d)
    w.add_uint32("llama.feed_forward_length", f)
    w.add_uint32("llama.context_length", DIMS["context"])
    w.add_uint32("llama.attention.head_count", DIMS["heads"])
    w.add_uint32("llama.attention.head_count_kv", DIMS["kv_heads"])
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)

    def f32(name, a):
        w.add_tensor(name, a.astype(np.float32))

    def q8(name, rows, cols):  # rows x cols as llama.cpp stores a projection (one output per row)
        a = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        w.add_tensor(name, quants.quantize(a, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)

    f32("token_embd.weight", rng.standard_normal((v, d)))
    for i in range(DIMS["layers"]):
        p = f"blk.{i}"
        f32(f"{p}.attn_norm.weight", rng.uniform(0.5, 1.5, d))
        for name, rows, cols in (("attn_q", d, d), ("attn_k", kv, d), ("attn_v", kv, d), ("attn_output", d, d),
                                 ("ffn_gate", f, d), ("ffn_up", f, d), ("ffn_down", d, f)):
            q8(f"{p}.{name}.weight", rows, cols)
        f32(f"{p}.ffn_norm.weight", rng.uniform(0.5, 1.5, d))
    f32("output_norm.weight", rng.uniform(0.5, 1.5, d))
    q8("output.weight", v, d)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python examples/make_gguf.py OUT.gguf", file=sys.stderr)
        return 2
    write_tiny_llama(argv[0])
    print(f"wrote {argv[0]}: a tiny llama ({DIMS['layers']} layers, hidden {DIMS['hidden']}, vocab {DIMS['vocab']}, "
          f"context {DIMS['context']}), Q8_0 projections, random weights")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
