"""Decoder models built with the Builder: one decoder builder, parametrised by architecture, that every
importer (GGUF, Hugging Face folders) and the built-in demo model share.

An architecture (``Arch``) says how the decoder is wired: the FFN activation (gated SiLU, gated squared
ReLU, plain ReLU), whether BitNet's sub-norms sit before the output and down projections, the RoPE style,
whether activations are quantized to int8 per token before every projection, and whether the head is tied
to the embedding. Where the weights come from, and how a projection reads them (float, codes + block
scales, BitNet's integer path), is a ``WeightSource``: the builder only asks it for a named weight.

One graph is one step over ``seq`` tokens: prefill uses seq = prompt length, decoding seq = 1; both read
the same weights. The KV cache has a fixed capacity; ``start`` (i32[1]) is where this step's keys go and
``kv_len`` (i32[1]) = start + seq is how many cache positions are filled afterwards.

The projections are named ``layers.N.{q,k,v,o,gate,up,down}`` (``fc1``/``fc2`` for the ungated FFN), the
norms ``layers.N.{attn_norm,attn_sub_norm,ffn_norm,ffn_sub_norm}`` and ``final_norm``; a source maps
these names to its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from .builder import Builder
from .errors import LadderError
from .ir import Graph, Value


@dataclass(frozen=True)
class Arch:
    """How a decoder is wired (see the module docstring)."""

    name: str
    ffn_act: str = "silu"          # silu | relu2 (gated) | relu (ungated fc1 -> relu -> fc2, OPT's)
    sub_norms: bool = False        # RMSNorm before the output projection and before the down projection
    rope_style: str = "half"       # half (GPT-NeoX, HF) | interleaved (llama.cpp's normal mode)
    act_quant: bool = False        # int8 absmax per-token activations before every projection (not the head)

    @property
    def gated(self) -> bool:
        return self.ffn_act != "relu"


# llama.cpp's LLM_ARCH_LLAMA (the GGUF converter permuted Q/K rows for adjacent-pair RoPE).
LLAMA_GGUF = Arch("llama", "silu", False, "interleaved", False)
# transformers' LlamaForCausalLM (rotate_half RoPE on unpermuted rows).
LLAMA_HF = Arch("llama-hf", "silu", False, "half", False)
# llama.cpp's LLM_ARCH_BITNET: gated SiLU, sub-norms, NEOX RoPE, float activations into every matmul.
BITNET_GGUF = Arch("bitnet", "silu", True, "half", False)
# BitNet b1.58 2B4T (transformers' BitNetForCausalLM, bitnet.cpp): squared ReLU, sub-norms, int8 activations.
BITNET_B158 = Arch("bitnet-b1.58", "relu2", True, "half", True)


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
    kv_cache: str = "f32"    # the KV cache's element type: f32, or f16 / bf16 (keys and values rounded on write)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def arch(self) -> Arch:
        """The built-in model's wiring: BitLinear projections (int8 activations) of ``weight``."""
        return Arch(f"builtin-{self.ffn_kind}", self.ffn_kind, self.sub_norms, "half", True)

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


class WeightSource(Protocol):
    """Where a decoder's weights come from. ``x`` of a projection is float; ``act_scale`` is set when the
    architecture quantized it (``x`` then holds int8 codes and ``act_scale`` their per-token scales)."""

    def embed(self, b: Builder, tokens: Value) -> Value: ...

    def norm(self, b: Builder, name: str, size: int) -> Value: ...

    def project(self, b: Builder, x: Value, act_scale: Value | None, name: str, out_features: int,
                in_features: int) -> Value: ...

    def head(self, b: Builder, x: Value) -> Value: ...


KV_CACHE_TYPES = ("f16", "f32", "bf16")


def check_kv_cache(name: str) -> str:
    """A KV cache element type, checked (an importer's ``kv_cache`` argument, ``--kv-cache``)."""
    if name not in KV_CACHE_TYPES:
        raise LadderError(f"kv_cache must be one of {', '.join(KV_CACHE_TYPES)}, not {name!r}")
    return name


def step_shapes(cfg: BitNetConfig, shapes: Mapping[str, Any] | None, error: type[LadderError] = LadderError
                ) -> tuple[int, int]:
    """(tokens per step, cache capacity) of an imported model's step graph from input shapes given by name
    (``tokens``/``pos``: (S,); any ``k_cacheN``/``v_cacheN``: (kv_heads, C, head_dim)); by default 1 and
    ``cfg.context``. Anything else is an ``error`` (the importer's class) naming the input."""
    c = cfg
    seq, context = 1, c.context
    for name, shape in (shapes or {}).items():
        name = name.lstrip("%")
        dims = tuple(shape) if shape is not None else None
        if name in ("tokens", "pos"):
            if dims is None or len(dims) != 1 or not 1 <= int(dims[0]) <= 1 << 20:
                raise error(f"shape of '{name}' must be (S,) with S >= 1, got {shape}")
            seq = int(dims[0])
        elif name.startswith(("k_cache", "v_cache")) and name[7:].isdigit() and int(name[7:]) < c.layers:
            if dims is None or len(dims) != 3 or dims[0] != c.kv_heads or dims[2] != c.head_dim or dims[1] < 1:
                raise error(f"shape of '{name}' must be ({c.kv_heads}, CONTEXT, {c.head_dim}), got {shape}")
            context = int(dims[1])
        else:
            raise error(f"no input '{name}' to give a shape to; the inputs are tokens, pos, start, kv_len, "
                        f"k_cacheN, v_cacheN (N < {c.layers})")
    if seq > context:
        raise error(f"a step of {seq} tokens does not fit the cache of {context} positions")
    return seq, context


def bitlinear(b: Builder, xq: Value, xs: Value, w: Value, ws: Value) -> Value:
    """BitNet's integer path: int8 activation codes x low-bit weight codes -> i32, then the two scales."""
    acc = b.matmul(xq, w, transpose_b=True)
    return b.mul(b.mul(b.cast(acc, dtype="f32"), xs), ws)


def decoder_step_inputs(b: Builder, seq: int, kv_heads: int, context: int, head_dim: int, layers: int,
                        cache_dtype: str = "f32"):
    """The inputs of one decoder step, the convention ``ladder.generate`` drives: tokens, pos, start,
    kv_len and a (k, v) cache pair per layer (of ``cache_dtype``). Returns (tokens, pos, start, kv_len,
    caches)."""
    tokens = b.input("tokens", f"i32[{seq}]")
    pos = b.input("pos", f"i32[{seq}]")
    start = b.input("start", "i32[1]")
    kv_len = b.input("kv_len", "i32[1]")
    cache_t = f"{cache_dtype}[{kv_heads}, {context}, {head_dim}]"
    caches = [(b.input(f"k_cache{i}", cache_t), b.input(f"v_cache{i}", cache_t)) for i in range(layers)]
    return tokens, pos, start, kv_len, caches


def decoder(arch: Arch, cfg: BitNetConfig, src: WeightSource, seq: int, name: str,
            last_logits: bool = False) -> Graph:
    """One decoder step of ``arch`` with ``cfg``'s dimensions over ``seq`` tokens, weights from ``src``:
    token ids [seq] -> logits [seq, vocab], plus the updated caches of every layer. ``last_logits``: logits
    [1, vocab] of the last token only (generation needs no other row, and the head is a large share of a
    prefill step)."""
    b = Builder(name)
    tokens, pos, start, kv_len, caches = decoder_step_inputs(b, seq, cfg.kv_heads, cfg.context, cfg.head_dim,
                                                             cfg.layers, cfg.kv_cache)
    d, hd, kvd, f = cfg.hidden, cfg.head_dim, cfg.kv_heads * cfg.head_dim, cfg.ffn

    def proj(x: Value, ref: str, n_out: int, n_in: int) -> Value:
        if arch.act_quant:
            xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
            return src.project(b, xq, xs, ref, n_out, n_in)
        return src.project(b, x, None, ref, n_out, n_in)

    def heads(t: Value, n: int) -> Value:
        return b.transpose(b.reshape(t, shape=[seq, n, hd]), perm=[1, 0, 2])

    x = src.embed(b, tokens)
    new_caches = []
    for i, (kc, vc) in enumerate(caches):
        p = f"layers.{i}"
        h = b.rmsnorm(x, src.norm(b, f"{p}.attn_norm", d), eps=cfg.eps)
        q = b.rope(heads(proj(h, f"{p}.q", d, d), cfg.heads), pos, theta=cfg.rope_theta, style=arch.rope_style)
        k = b.rope(heads(proj(h, f"{p}.k", kvd, d), cfg.kv_heads), pos, theta=cfg.rope_theta,
                   style=arch.rope_style)
        v = heads(proj(h, f"{p}.v", kvd, d), cfg.kv_heads)
        if cfg.kv_cache != "f32":  # rounded once, on the way in (llama.cpp's f16 cache); attention reads f32
            k, v = b.cast(k, dtype=cfg.kv_cache), b.cast(v, dtype=cfg.kv_cache)
        kc2 = b.cache_write(kc, k, start)
        vc2 = b.cache_write(vc, v, start)
        new_caches += [kc2, vc2]
        att = b.attention(q, kc2, vc2, kv_len)
        att = b.reshape(b.transpose(att, perm=[1, 0, 2]), shape=[seq, d])
        if arch.sub_norms:
            att = b.rmsnorm(att, src.norm(b, f"{p}.attn_sub_norm", d), eps=cfg.eps)
        x = b.add(x, proj(att, f"{p}.o", d, d))

        h = b.rmsnorm(x, src.norm(b, f"{p}.ffn_norm", d), eps=cfg.eps)
        if not arch.gated:
            a = b.relu(proj(h, f"{p}.fc1", f, d))
            x = b.add(x, proj(a, f"{p}.fc2", d, f))
            continue
        act = {"relu2": b.relu2, "silu": b.silu}[arch.ffn_act]
        a = b.mul(act(proj(h, f"{p}.gate", f, d)), proj(h, f"{p}.up", f, d))
        if arch.sub_norms:
            a = b.rmsnorm(a, src.norm(b, f"{p}.ffn_sub_norm", f), eps=cfg.eps)
        x = b.add(x, proj(a, f"{p}.down", d, f))

    if last_logits and seq > 1:
        x = b.slice(x, starts=[seq - 1], ends=[seq], axes=[0])
    x = b.rmsnorm(x, src.norm(b, "final_norm", d), eps=cfg.eps)
    return b.build(src.head(b, x), *new_caches)


class _RandomParams:
    """The built-in model's weights: params named as the builder names them (weights come with the graph's
    params, e.g. ``ladder.weights.random``); projections are BitLinear of ``cfg.weight``."""

    def __init__(self, cfg: BitNetConfig):
        self.cfg = cfg

    def _embedding(self, b: Builder) -> Value:
        return b.param("embed", f"f32[{self.cfg.vocab}, {self.cfg.hidden}]")

    def embed(self, b: Builder, tokens: Value) -> Value:
        return b.gather(self._embedding(b), tokens)

    def norm(self, b: Builder, name: str, size: int) -> Value:
        return b.param(name, f"f32[{size}]")

    def project(self, b, x, act_scale, name, out_features, in_features):
        w = b.param(f"{name}.weight", f"{self.cfg.weight}[{out_features}, {in_features}]")
        return bitlinear(b, x, act_scale, w, b.param(f"{name}.scale", "f32[1]"))

    def head(self, b: Builder, x: Value) -> Value:
        c = self.cfg
        if c.head == "f32":
            return b.matmul(x, self._embedding(b), transpose_b=True, name="logits")
        xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
        w = b.param("lm_head.weight", f"{c.head}[{c.vocab}, {c.hidden}]")
        return bitlinear(b, xq, xs, w, b.param("lm_head.scale", "f32[1]"))


def bitnet_decoder(cfg: BitNetConfig, seq: int, name: str = "bitnet") -> Graph:
    """The built-in BitNet-style model (random or safetensors weights): token ids [seq] -> logits [seq, vocab],
    plus the updated caches of every layer."""
    return decoder(cfg.arch, cfg, _RandomParams(cfg), seq, name)
