"""Hugging Face model folders (``config.json`` + safetensors) -> ladder (installed as ``ladder.frontends.hf``).

Reads transformers' ``LlamaForCausalLM`` and ``BitNetForCausalLM`` without torch: the config gives the
dimensions, the safetensors files (one ``model.safetensors`` or shards listed by
``model.safetensors.index.json``) the weights. ``load(folder, shapes)`` builds one decoder step with
``ladder.models.decoder`` and the step convention of ``ladder.generate``; ``config(folder)`` gives the
dimensions.

* ``LlamaForCausalLM``: gated SiLU, RoPE on halves (``rotate_half``: transformers keeps the rows unpermuted),
  final norm, ``lm_head`` or the tied embedding.
* ``BitNetForCausalLM`` (BitNet b1.58 2B4T): squared ReLU, ``attn_sub_norm`` / ``ffn_sub_norm``. With
  ``quantization_config.linear_class = "bitlinear"`` (the published checkpoint) every projection holds
  ternary codes packed four to a byte along the output rows (row ``r + k * R`` in bits ``2k``, codes + 1) and
  a ``weight_scale`` that divides: ``y = (x_q @ W^T) / (x_scale * weight_scale)`` with ``x_q`` the int8
  absmax per-token activations, which ladder runs as BitNet's integer path. Without a quantization config
  the projections are float ``nn.Linear`` (no activation quantization), as transformers runs them.

Not supported (a LadderError says which): other architectures, biases, RoPE scaling, a head size other than
hidden / heads, ``autobitlinear`` (online) quantization, safetensors element types other than F32 F16 BF16 U8.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from typing import Any, Mapping

import ml_dtypes
import numpy as np

from ladder.builder import Builder
from ladder.errors import LadderError
from ladder.ir import Graph, Value
from ladder.models import (BITNET_B158, LLAMA_HF, Arch, BitNetConfig, bitlinear, check_kv_cache, decoder,
                           step_shapes)


class HFError(LadderError):
    """A Hugging Face model folder is malformed, or holds something ladder does not read."""

    kind = "hf error"


ARCHITECTURES = {"LlamaForCausalLM": LLAMA_HF, "BitNetForCausalLM": BITNET_B158}
ACTIVATIONS = {"LlamaForCausalLM": "silu", "BitNetForCausalLM": "relu2"}
_PROJ = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
         "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
_NORM = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
         "attn_sub_norm": "self_attn.attn_sub_norm", "ffn_sub_norm": "mlp.ffn_sub_norm"}
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "U8": np.uint8, "I8": np.int8}


@dataclass(frozen=True)
class HFModel:
    path: str
    architecture: str     # config.json's architectures[0]
    wiring: Arch
    cfg: BitNetConfig     # dimensions
    tied: bool
    packed: bool          # BitNet's offline-packed ternary projections


def _config_json(path: str) -> dict:
    f = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise HFError(f"{path}: not a folder (a Hugging Face model is a folder with config.json)")
    try:
        with open(f, encoding="utf-8") as fh:
            c = json.load(fh)
    except FileNotFoundError:
        raise HFError(f"{path}: no config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HFError(f"{f}: not valid JSON: {e}") from None
    if not isinstance(c, dict):
        raise HFError(f"{f}: should hold a JSON object")
    return c


def read_model(path: str | os.PathLike) -> HFModel:
    """The folder's architecture and dimensions, from config.json (no weights read)."""
    path = os.fspath(path)
    c = _config_json(path)
    archs = c.get("architectures") or []
    arch = archs[0] if isinstance(archs, list) and archs else None
    if arch not in ARCHITECTURES:
        raise HFError(f"{path}: architecture {arch!r} is not supported; ladder reads {', '.join(ARCHITECTURES)}")
    problems: list[str] = []

    def pos_int(key: str, default: int | None = None) -> int:
        v = c.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            problems.append(f"'{key}' should be a positive integer, got {v!r}")
            return 1
        return v

    hidden, heads = pos_int("hidden_size"), pos_int("num_attention_heads")
    kv_heads = pos_int("num_key_value_heads", heads)
    rope = c.get("rope_parameters") or {}
    theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
    rope_type = rope.get("rope_type", "default")
    if c.get("rope_scaling") not in (None, {}) or rope_type != "default":
        problems.append(f"RoPE scaling ({c.get('rope_scaling') or rope_type}) is not supported")
    if c.get("attention_bias") or c.get("mlp_bias"):
        problems.append("biases (attention_bias / mlp_bias) are not supported")
    act = c.get("hidden_act", ACTIVATIONS[arch])
    if act != ACTIVATIONS[arch]:
        problems.append(f"hidden_act '{act}' is not supported for {arch} (it uses {ACTIVATIONS[arch]})")
    if not problems and (hidden % heads or heads % kv_heads):
        problems.append(f"hidden_size {hidden}, num_attention_heads {heads} and num_key_value_heads {kv_heads} "
                        f"do not divide")
    head_dim = c.get("head_dim")
    if not problems and head_dim not in (None, hidden // heads):
        problems.append(f"head_dim {head_dim} differs from hidden_size / num_attention_heads (not supported)")
    q = c.get("quantization_config")
    packed = False
    if q is not None:
        if arch != "BitNetForCausalLM" or q.get("quant_method") != "bitnet":
            problems.append(f"quantization {q.get('quant_method')!r} is not supported for {arch}")
        elif q.get("linear_class", "bitlinear") != "bitlinear" or q.get("quantization_mode", "offline") != "offline":
            problems.append(f"BitNet's {q.get('linear_class')}/{q.get('quantization_mode')} layers are not "
                            f"supported (ladder reads the offline-packed 'bitlinear' checkpoints)")
        packed = True
    cfg = BitNetConfig(vocab=pos_int("vocab_size"), hidden=hidden, layers=pos_int("num_hidden_layers"),
                       heads=heads, kv_heads=kv_heads, ffn=pos_int("intermediate_size"),
                       context=pos_int("max_position_embeddings", 2048), rope_theta=float(theta),
                       eps=float(c.get("rms_norm_eps", 1e-6)))
    if problems:
        raise HFError(f"{path}: cannot build the {arch} model: " + "; ".join(problems))
    wiring = ARCHITECTURES[arch]
    if arch == "BitNetForCausalLM" and not packed:  # plain nn.Linear projections: float activations
        wiring = replace(wiring, name="bitnet-float", act_quant=False)
    return HFModel(path, arch, wiring, cfg, bool(c.get("tie_word_embeddings", arch == "BitNetForCausalLM")),
                   packed)


def _safetensors(path: str) -> dict[str, tuple[str, int, str, tuple[int, ...]]]:
    """Tensor name -> (file, data offset, dtype, shape) over the folder's safetensors files."""
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as fh:
            files = sorted(set(json.load(fh).get("weight_map", {}).values()))
    else:
        files = [n for n in sorted(os.listdir(path)) if n.endswith(".safetensors")]
    if not files:
        raise HFError(f"{path}: no .safetensors file (ladder reads safetensors checkpoints, not .bin)")
    out = {}
    for name in files:
        f = os.path.join(path, name)
        try:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
            size = os.path.getsize(f)
        except (OSError, ValueError) as e:
            raise HFError(f"{f}: not a readable safetensors file: {e}") from None
        for key, e in header.items():
            if key == "__metadata__":
                continue
            begin, end = e["data_offsets"]
            if e["dtype"] not in _DTYPES:
                raise HFError(f"{f}: tensor '{key}' has type {e['dtype']}; ladder reads {', '.join(_DTYPES)}")
            need = math.prod(e["shape"]) * np.dtype(_DTYPES[e["dtype"]]).itemsize
            if end - begin != need or 8 + n + end > size:
                raise HFError(f"{f}: tensor '{key}' ({e['dtype']} {e['shape']}) has a wrong data range")
            out[key] = (f, 8 + n + begin, e["dtype"], tuple(e["shape"]))
    return out


def _read(entry) -> np.ndarray:
    f, offset, dtype, shape = entry
    return np.fromfile(f, dtype=_DTYPES[dtype], count=math.prod(shape), offset=offset).reshape(shape)


def unpack_ternary(packed: np.ndarray) -> np.ndarray:
    """transformers' BitNet packing: u8 [R, K] -> int8 [4R, K]; row r + k R is bits 2k..2k+1 of row r, minus 1."""
    parts = [((packed >> (2 * k)) & 3).astype(np.int8) - 1 for k in range(4)]
    return np.concatenate(parts, axis=0)


def config(path: str | os.PathLike, shapes: Mapping[str, Any] | None = None) -> BitNetConfig:
    """The decoder's dimensions (context: the cache capacity that ``load`` with the same ``shapes`` uses)."""
    m = read_model(path)
    return replace(m.cfg, context=step_shapes(m.cfg, shapes, HFError)[1])


class _Source:
    """The folder's tensors as the decoder builder's weight source (param names are the checkpoint's)."""

    def __init__(self, m: HFModel, entries):
        self.m, self.entries = m, entries
        self.weights: dict[str, np.ndarray] = {}

    def _get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.entries:
            raise HFError(f"{self.m.path}: the {self.m.architecture} model needs tensor '{name}', which is missing")
        got = self.entries[name][3]
        if got != shape:
            raise HFError(f"{self.m.path}: tensor '{name}' has shape {list(got)}, the config says {list(shape)}")
        return _read(self.entries[name])

    def _float(self, b: Builder, name: str, shape: tuple[int, ...]) -> Value:
        if name not in self.weights:
            a = self._get(name, shape)
            self.weights[name] = a if a.dtype in (np.float32, np.float16, ml_dtypes.bfloat16) else a.astype(np.float32)
        a = self.weights[name]
        dt = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}.get(a.dtype, "bf16")
        v = b.param(name, f"{dt}[{', '.join(map(str, a.shape))}]")
        return v if dt == "f32" else b.cast(v, dtype="f32")

    def embed(self, b: Builder, tokens: Value) -> Value:
        c = self.m.cfg
        return b.gather(self._float(b, "model.embed_tokens.weight", (c.vocab, c.hidden)), tokens)

    def norm(self, b: Builder, name: str, size: int) -> Value:
        if name == "final_norm":
            return self._float(b, "model.norm.weight", (size,))
        _, i, which = name.split(".")
        return self._float(b, f"model.layers.{i}.{_NORM[which]}.weight", (size,))

    def project(self, b: Builder, x: Value, act_scale: Value | None, name: str, out_features: int,
                in_features: int) -> Value:
        _, i, proj = name.split(".")
        base = f"model.layers.{i}.{_PROJ[proj]}"
        if not self.m.packed:
            return b.matmul(x, self._float(b, f"{base}.weight", (out_features, in_features)), transpose_b=True)
        if out_features % 4:
            raise HFError(f"{self.m.path}: '{base}' has {out_features} outputs, not a multiple of 4 (packed rows)")
        codes = unpack_ternary(self._get(f"{base}.weight", (out_features // 4, in_features)))
        ws = self._get(f"{base}.weight_scale", (1,)).astype(np.float32)
        # transformers divides by weight_scale; ladder's bitlinear multiplies by its inverse
        self.weights[f"{base}.weight"] = codes
        self.weights[f"{base}.weight_scale"] = (np.float32(1) / ws).astype(np.float32)
        w = b.param(f"{base}.weight", f"ternary[{out_features}, {in_features}]")
        return bitlinear(b, x, act_scale, w, b.param(f"{base}.weight_scale", "f32[1]"))

    def head(self, b: Builder, x: Value) -> Value:
        c = self.m.cfg
        name = "lm_head.weight" if not self.m.tied and "lm_head.weight" in self.entries else \
            "model.embed_tokens.weight"
        if not self.m.tied and name != "lm_head.weight":
            raise HFError(f"{self.m.path}: tie_word_embeddings is false but there is no 'lm_head.weight'")
        return b.matmul(x, self._float(b, name, (c.vocab, c.hidden)), transpose_b=True, name="logits")


def load(path: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]] | None = None, last_logits: bool = False,
         kv_cache: str = "f16") -> tuple[Graph, dict[str, np.ndarray]]:
    """(one decoder step graph, its weights by param name) from a Hugging Face model folder (``last_logits``:
    see ladder.models.decoder; ``kv_cache``: the cache's element type, f16 by default, or f32 / bf16)."""
    m = read_model(path)
    seq, context = step_shapes(m.cfg, shapes, HFError)
    src = _Source(m, _safetensors(m.path))
    graph = decoder(m.wiring, replace(m.cfg, context=context, kv_cache=check_kv_cache(kv_cache)), src, seq,
                    m.architecture.lower() + "_step", last_logits)
    return graph, src.weights
