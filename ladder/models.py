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
    # Variants for the accelerator presets (``MODELS``); the defaults are BitNet b1.58's.
    weight: str = "ternary"  # element type of the projection weights (i1, ternary, i4, ...)
    ffn_kind: str = "relu2"  # relu2: gated squared ReLU + sub-norm (BitNet); silu: gated SiLU (Llama); relu: OPT's
    sub_norms: bool = True   # BitNet's extra RMSNorms before the output and down projections
    head: str = "f32"        # f32: logits from the f32 embedding (tied); a low-bit type: a BitLinear head of it

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


# Shapes of published models for the accelerator cost model (``ladder sim``): dimensions as published,
# weights in the type the accelerator keeps them in.
MODELS = {
    **{f"bitnet:{k}": v for k, v in SIZES.items()},
    # A ~3B ternary Llama (3.1 B weights, 30 layers): Slim-Llama's workload size, and the speed benchmark's.
    "bitnet:3b": BitNetConfig(vocab=32000, hidden=3072, layers=30, heads=24, kv_heads=8, ffn=8192, context=128,
                              head="ternary"),
    # OPT-6.7B (32 layers, d 4096, MHA, FFN 16384 with ReLU) with 1-bit projections, as PIM-LLM evaluates it.
    "opt:6.7b": BitNetConfig(vocab=50272, hidden=4096, layers=32, heads=32, kv_heads=32, ffn=16384, context=1024,
                             weight="i1", ffn_kind="relu", sub_norms=False, head="i1"),
    # Llama 3.1 8B (GQA 32/8, FFN 14336 gated SiLU) with 4-bit weights (Taalas HC1 holds 3- and 6-bit ones).
    "llama:3.1-8b": BitNetConfig(vocab=128256, hidden=4096, layers=32, heads=32, kv_heads=8, ffn=14336,
                                 context=1024, rope_theta=500000.0, weight="i4", ffn_kind="silu", sub_norms=False,
                                 head="i4"),
}


def _bitlinear(b: Builder, x: Value, ref: str, out_features: int, in_features: int, weight: str = "ternary") -> Value:
    """BitNet's BitLinear: int8 absmax per-token activations x low-bit (ternary) weights, integer matmul, rescale."""
    xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
    w = b.param(f"{ref}.weight", f"{weight}[{out_features}, {in_features}]")
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

        wt = cfg.weight
        q = b.rope(heads(_bitlinear(b, h, f"{p}.q", d, d, wt), cfg.heads), pos, theta=cfg.rope_theta)
        k = b.rope(heads(_bitlinear(b, h, f"{p}.k", kvd, d, wt), cfg.kv_heads), pos, theta=cfg.rope_theta)
        v = heads(_bitlinear(b, h, f"{p}.v", kvd, d, wt), cfg.kv_heads)
        kc2 = b.cache_write(kc, k, start)
        vc2 = b.cache_write(vc, v, start)
        new_caches += [kc2, vc2]
        att = b.attention(q, kc2, vc2, kv_len)
        att = b.reshape(b.transpose(att, perm=[1, 0, 2]), shape=[seq, d])
        if cfg.sub_norms:
            att = b.rmsnorm(att, b.param(f"{p}.attn_sub_norm", f"f32[{d}]"), eps=cfg.eps)
        x = b.add(x, _bitlinear(b, att, f"{p}.o", d, d, wt))

        h = b.rmsnorm(x, b.param(f"{p}.ffn_norm", f"f32[{d}]"), eps=cfg.eps)
        x = b.add(x, _ffn(b, cfg, h, p))

    x = b.rmsnorm(x, b.param("final_norm", f"f32[{d}]"), eps=cfg.eps)
    if cfg.head == "f32":
        logits = b.matmul(x, b.param("embed", f"f32[{cfg.vocab}, {d}]"), transpose_b=True, name="logits")
    else:
        logits = _bitlinear(b, x, "lm_head", cfg.vocab, d, cfg.head)
    return b.build(logits, *new_caches)


def _ffn(b: Builder, cfg: BitNetConfig, h: Value, p: str) -> Value:
    """The feed-forward block of ``cfg.ffn_kind`` on the normed hidden state ``h``."""
    d, f, wt = cfg.hidden, cfg.ffn, cfg.weight
    if cfg.ffn_kind == "relu":
        return _bitlinear(b, b.relu(_bitlinear(b, h, f"{p}.fc1", f, d, wt)), f"{p}.fc2", d, f, wt)
    act = {"relu2": b.relu2, "silu": b.silu}[cfg.ffn_kind]
    a = b.mul(act(_bitlinear(b, h, f"{p}.gate", f, d, wt)), _bitlinear(b, h, f"{p}.up", f, d, wt))
    if cfg.sub_norms:
        a = b.rmsnorm(a, b.param(f"{p}.ffn_sub_norm", f"f32[{f}]"), eps=cfg.eps)
    return _bitlinear(b, a, f"{p}.down", d, f, wt)
