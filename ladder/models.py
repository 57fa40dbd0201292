"""Model graphs built with the Builder: a BitNet b1.58 decoder (ternary weights, int8 per-token activations,
RMSNorm with sub-norms, squared-ReLU gated FFN, RoPE, grouped-query causal attention with a KV cache).

One graph is one step over ``seq`` tokens: prefill uses seq = prompt length, decoding seq = 1; both read
the same weights. The KV cache has a fixed capacity; ``start`` (i32[1]) is where this step's keys go and
``kv_len`` (i32[1]) = start + seq is how many cache positions are filled afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

from .builder import Builder
from .ir import Graph, Value


@dataclass(frozen=True)
class BitNetConfig:
    vocab: int = 256
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 384
    context: int = 64
    rope_theta: float = 10000.0
    eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def ternary_params(self) -> int:
        d, f, kv = self.hidden, self.ffn, self.kv_heads * self.head_dim
        return self.layers * (2 * d * d + 2 * d * kv + 3 * d * f)


SIZES = {
    "tiny": BitNetConfig(),
    "small": BitNetConfig(vocab=4096, hidden=512, layers=4, heads=8, kv_heads=4, ffn=1536, context=256),
    "medium": BitNetConfig(vocab=32000, hidden=1024, layers=8, heads=16, kv_heads=4, ffn=2816, context=512),
    # BitNet b1.58 2B4T's dimensions.
    "2b": BitNetConfig(vocab=128256, hidden=2560, layers=30, heads=20, kv_heads=5, ffn=6912, context=1024,
                       rope_theta=500000.0),
}


def _bitlinear(b: Builder, x: Value, ref: str, out_features: int, in_features: int) -> Value:
    """BitNet's BitLinear: int8 absmax per-token activations x ternary weights, integer matmul, rescale."""
    xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
    w = b.param(f"{ref}.weight", f"ternary[{out_features}, {in_features}]")
    ws = b.param(f"{ref}.scale", "f32[1]")
    acc = b.matmul(xq, w, transpose_b=True)
    return b.mul(b.mul(b.cast(acc, dtype="f32"), xs), ws)


def decoder_step_inputs(b: Builder, seq: int, kv_heads: int, context: int, head_dim: int, layers: int):
    """The inputs of one decoder step, the convention ``ladder.demo.generate`` drives: tokens, pos, start,
    kv_len and a (k, v) cache pair per layer. Returns (tokens, pos, start, kv_len, caches)."""
    tokens = b.input("tokens", f"i32[{seq}]")
    pos = b.input("pos", f"i32[{seq}]")
    start = b.input("start", "i32[1]")
    kv_len = b.input("kv_len", "i32[1]")
    cache_t = f"f32[{kv_heads}, {context}, {head_dim}]"
    caches = [(b.input(f"k_cache{i}", cache_t), b.input(f"v_cache{i}", cache_t)) for i in range(layers)]
    return tokens, pos, start, kv_len, caches


def bitnet_decoder(cfg: BitNetConfig, seq: int, name: str = "bitnet") -> Graph:
    """Token ids [seq] -> logits [seq, vocab], plus the updated caches of every layer."""
    b = Builder(name)
    tokens, pos, start, kv_len, caches = decoder_step_inputs(b, seq, cfg.kv_heads, cfg.context, cfg.head_dim,
                                                             cfg.layers)
    d, hd, kvd = cfg.hidden, cfg.head_dim, cfg.kv_heads * cfg.head_dim

    x = b.gather(b.param("embed", f"f32[{cfg.vocab}, {d}]"), tokens)
    new_caches = []
    for i, (kc, vc) in enumerate(caches):
        p = f"layers.{i}"
        h = b.rmsnorm(x, b.param(f"{p}.attn_norm", f"f32[{d}]"), eps=cfg.eps)

        def heads(t: Value, n: int) -> Value:
            return b.transpose(b.reshape(t, shape=[seq, n, hd]), perm=[1, 0, 2])

        q = b.rope(heads(_bitlinear(b, h, f"{p}.q", d, d), cfg.heads), pos, theta=cfg.rope_theta)
        k = b.rope(heads(_bitlinear(b, h, f"{p}.k", kvd, d), cfg.kv_heads), pos, theta=cfg.rope_theta)
        v = heads(_bitlinear(b, h, f"{p}.v", kvd, d), cfg.kv_heads)
        kc2 = b.cache_write(kc, k, start)
        vc2 = b.cache_write(vc, v, start)
        new_caches += [kc2, vc2]
        att = b.attention(q, kc2, vc2, kv_len)
        att = b.reshape(b.transpose(att, perm=[1, 0, 2]), shape=[seq, d])
        att = b.rmsnorm(att, b.param(f"{p}.attn_sub_norm", f"f32[{d}]"), eps=cfg.eps)
        x = b.add(x, _bitlinear(b, att, f"{p}.o", d, d))

        h = b.rmsnorm(x, b.param(f"{p}.ffn_norm", f"f32[{d}]"), eps=cfg.eps)
        gate = b.relu2(_bitlinear(b, h, f"{p}.gate", cfg.ffn, d))
        up = _bitlinear(b, h, f"{p}.up", cfg.ffn, d)
        a = b.rmsnorm(b.mul(gate, up), b.param(f"{p}.ffn_sub_norm", f"f32[{cfg.ffn}]"), eps=cfg.eps)
        x = b.add(x, _bitlinear(b, a, f"{p}.down", d, cfg.ffn))

    x = b.rmsnorm(x, b.param("final_norm", f"f32[{d}]"), eps=cfg.eps)
    logits = b.matmul(x, b.param("embed", f"f32[{cfg.vocab}, {d}]"), transpose_b=True, name="logits")
    return b.build(logits, *new_caches)
