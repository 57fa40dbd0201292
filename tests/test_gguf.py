"""The GGUF frontend: bit-exact dequantization per block type, llama and bitnet decoders checked against an
independent numpy implementation, generation, the CLI, fusion, and malformed files."""

from __future__ import annotations

import math
import os
import struct

import ml_dtypes
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFReader, GGUFWriter, quants  # noqa: E402
from gguf.constants import GGML_QUANT_SIZES  # noqa: E402

import ladder  # noqa: E402
from ladder import Builder, LadderError, PassManager  # noqa: E402
from ladder.cli import main as cli_main  # noqa: E402
from ladder.demo import generate  # noqa: E402
from ladder.frontends import gguf as lg  # noqa: E402
from ladder.frontends import load as load_any  # noqa: E402

# offsets of the f16 super-block scales of the K-quants (random bytes elsewhere are valid blocks)
K_F16 = {QT.Q2_K: (80, 82), QT.Q3_K: (108,), QT.Q4_K: (0, 2), QT.Q5_K: (0, 2), QT.Q6_K: (208,)}
CODE_TYPE = {QT.Q8_0: "i8", QT.Q4_0: "i4", QT.Q4_1: "u4", QT.Q5_0: "i8", QT.Q5_1: "u8", QT.TQ1_0: "ternary",
             QT.TQ2_0: "ternary", QT.Q2_K: "u4", QT.Q3_K: "i4", QT.Q4_K: "u4", QT.Q5_K: "i8", QT.Q6_K: "i8",
             QT.F32: "f32", QT.F16: "f16", QT.BF16: "bf16"}


def encode(a: np.ndarray, qt: QT, rng: np.random.Generator) -> np.ndarray:
    """What GGUFWriter.add_tensor takes for a tensor of values ``a`` stored as ``qt``."""
    if qt == QT.F32:
        return a.astype(np.float32)
    if qt == QT.F16:
        return a.astype(np.float16)
    if qt in K_F16:  # gguf-py has no quantizer for these: random blocks with finite f16 scales
        block, size = GGML_QUANT_SIZES[qt]
        n = a.size // block
        b = rng.integers(0, 256, (n, size), dtype=np.uint8)
        for off in K_F16[qt]:
            b[:, off:off + 2] = (rng.uniform(-1, 1, (n, 1)) * 2e-4).astype(np.float16).view(np.uint8)
        return b.reshape(a.shape[:-1] + (a.shape[-1] // block * size,))
    if qt in (QT.TQ1_0, QT.TQ2_0):  # ternary values times one scale, as BitNet's converter gives
        a = np.sign(np.round(a / np.abs(a).mean())).astype(np.float32) * np.float32(0.05)
    return quants.quantize(a.astype(np.float32), qt)


def write_gguf(path, arch: str, meta: dict, tensors: dict) -> None:
    """tensors: name -> (values, qtype) (values encoded with ``encode``) or (raw array, qtype, True)."""
    rng = np.random.default_rng(1234)
    w = GGUFWriter(str(path), arch)
    for key, value in meta.items():
        if isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        else:
            w.add_uint32(key, value)
    for name, spec in tensors.items():
        a, qt = spec[0], spec[1]
        data = a if len(spec) > 2 else encode(a, qt, rng)
        w.add_tensor(name, data, raw_dtype=None if qt in (QT.F32, QT.F16) else qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


class Values(dict):
    """Tensors by name, ``types``: each one's GGML type name, and ``mins`` (see gguf_values)."""

    types: dict[str, str]
    mins: dict[str, np.ndarray]


def gguf_values(path) -> Values:
    """Every tensor dequantized by the gguf package (the independent reference); ``mins``: each Q4_K tensor's
    subtracted term (dmin * m, one per 32 values), dequantized by the same package from the blocks with their
    4-bit codes set to 0 (a Q4_K value is q * d * sc - dmin * m)."""
    out = Values()
    out.types, out.mins = {}, {}
    for t in GGUFReader(str(path)).tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        out[t.name] = quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        out.types[t.name] = t.tensor_type.name
        if t.tensor_type in (QT.Q4_K, QT.Q5_K, QT.Q2_K):
            size, codes, g = {QT.Q4_K: (144, slice(16, None), 32), QT.Q5_K: (176, slice(16, None), 32),
                              QT.Q2_K: (84, slice(16, 80), 16)}[t.tensor_type]
            blocks = np.array(t.data, np.uint8).reshape(-1, size)
            blocks[:, codes] = 0  # the codes (Q4_K, Q5_K: after d, dmin and the 6-bit scales and mins)
            out.mins[t.name] = -quants.dequantize(blocks, t.tensor_type).reshape(shape)[:, ::g].astype(np.float32)
    return out


def dequant_in_ladder(t: lg.GGUFTensor) -> np.ndarray:
    """Run ladder's dequant op (a graph through the reference interpreter) on the tensor's codes + scales."""
    b = Builder("deq")
    shape = ", ".join(map(str, t.shape))
    codes = b.param("codes", f"{t.dtype.name}[{shape}]")
    if not t.quantized:
        g = b.build(b.cast(codes, dtype="f32") if t.dtype.name != "f32" else b.neg(b.neg(codes)))
        return ladder.run(g, {}, {"codes": t.codes})[g.outputs[0]]
    sname = "f16" if t.scale.dtype == np.float16 else "f32"
    scale = b.param("scale", f"{sname}[{', '.join(map(str, t.scale.shape))}]")
    w = {"codes": t.codes, "scale": t.scale}
    extra = []
    if t.zero is not None:
        extra = [b.param("zero", f"{sname}[{', '.join(map(str, t.zero.shape))}]")]
        w["zero"] = t.zero
    g = b.build(b.dequant(codes, scale, *extra, axis=-1, group=t.group, zero_mode=t.zero_mode))
    return ladder.run(g, {}, w)[g.outputs[0]]


# -- dequantization, per type -------------------------------------------------------------------------

ALL_TYPES = [QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.TQ1_0, QT.TQ2_0,
             QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K]


@pytest.mark.parametrize("chunk", [None, 4], ids=["whole", "chunked"])
@pytest.mark.parametrize("qt", ALL_TYPES, ids=lambda q: q.name)
def test_dequant_is_bit_exact(tmp_path, qt, chunk, monkeypatch):
    """Every type's codes + scales dequantize to gguf's values bit for bit, decoded whole or a few blocks at a
    time (``_DECODE_BLOCKS``: a large tensor's chunks, here with an odd last one)."""
    if chunk:
        monkeypatch.setattr(lg, "_DECODE_BLOCKS", chunk)
    rng = np.random.default_rng(int(qt))
    a = rng.standard_normal((3, 512)).astype(np.float32) * 3
    a[0, :32] = 0  # an all-zero block (scale 0)
    a[1, 40:72] = -a[1, 40:72] ** 2  # a block of one sign
    t3 = rng.standard_normal((2, 3, 256)).astype(np.float32)  # a rank-3 tensor
    path = tmp_path / "t.gguf"
    write_gguf(path, "llama", {}, {"w": (a, qt), "w3": (t3, qt)})
    tensors = lg.read_tensors(path)
    ref = gguf_values(path)
    for name in ("w", "w3"):
        t = tensors[name]
        assert t.ggml_type == qt.name and t.dtype.name == CODE_TYPE[qt]
        assert t.shape == ref[name].shape
        got = dequant_in_ladder(t)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.uint32), ref[name].view(np.uint32))
        np.testing.assert_array_equal(t.values().view(np.uint32), ref[name].view(np.uint32))
        if t.quantized:
            block = GGML_QUANT_SIZES[qt][0]
            assert t.scale.shape == t.shape[:-1] + (t.shape[-1] // t.group,) and block % t.group == 0
            t.dtype.check(t.codes, name)  # every code is a value of its ladder type


@pytest.mark.parametrize("qt", [q for q in ALL_TYPES if q in lg.SCALES_APART], ids=lambda q: q.name)
def test_scales_decode_apart_from_the_codes(tmp_path, qt):
    """A weight read lazily (as a compile reads it) gives its scales and zeros without decoding its codes
    (a compile whose codes come packed from the pack cache), the same bits as the whole decode's; the codes
    decoded afterwards leave them as they were."""
    rng = np.random.default_rng(int(qt))
    a = rng.standard_normal((4, 512)).astype(np.float32) * 3
    t3 = rng.standard_normal((2, 3, 256)).astype(np.float32)
    path = tmp_path / "t.gguf"
    write_gguf(path, "llama", {}, {"w": (a, qt), "w3": (t3, qt)})
    whole = lg.read_tensors(path)
    f = lg.open_file(path)
    for name in ("w", "w3"):
        lazy = f.tensor(name, keep_blocks=True)
        blocks = lazy.codes.blocks
        calls = []
        decode = blocks._decode
        blocks._decode = lambda which: calls.append(which) or decode(which)
        scale = np.asarray(lazy.scale)
        zero = None if lazy.zero is None else np.asarray(lazy.zero)
        assert blocks._codes is None  # no codes decoded for them
        np.testing.assert_array_equal(scale.view(np.uint8), np.asarray(whole[name].scale).view(np.uint8))
        assert (zero is None) == (whole[name].zero is None)
        if zero is not None:
            np.testing.assert_array_equal(zero.view(np.uint8), np.asarray(whole[name].zero).view(np.uint8))
        np.testing.assert_array_equal(np.asarray(lazy.codes), whole[name].codes)
        assert np.asarray(lazy.scale) is scale and calls[-1] == 0


def test_code_layouts_match_the_formats(tmp_path):
    """The codes themselves, not only the products: Q4_0 holds q - 8, Q4_1 q with zero -m, TQ ternary."""
    a = np.linspace(-1, 1, 2 * 256, dtype=np.float32).reshape(2, 256)
    path = tmp_path / "c.gguf"
    write_gguf(path, "llama", {}, {"q40": (a, QT.Q4_0), "q41": (a, QT.Q4_1), "tq1": (a * 40, QT.TQ1_0),
                                   "tq2": (a * 40, QT.TQ2_0), "q80": (a, QT.Q8_0)})
    t = lg.read_tensors(path)
    raw = {r.name: r.data for r in GGUFReader(str(path)).tensors}
    q40 = raw["q40"].reshape(-1, 18)
    assert np.array_equal(t["q40"].codes.astype(np.int8).reshape(-1, 32)[:, :16], (q40[:, 2:] & 0x0F).astype(np.int8) - 8)
    assert np.array_equal(t["q40"].scale.reshape(-1), q40[:, :2].copy().view(np.float16).reshape(-1))
    q41 = raw["q41"].reshape(-1, 20)
    assert np.array_equal(t["q41"].zero.reshape(-1), -q41[:, 2:4].copy().view(np.float16).reshape(-1))
    assert t["q41"].zero_mode == "rescale" and t["q40"].zero is None
    assert np.array_equal(t["q80"].codes.reshape(-1, 32), raw["q80"].reshape(-1, 34)[:, 2:].view(np.int8))
    for name in ("tq1", "tq2"):
        assert set(np.unique(t[name].codes)) == {-1, 0, 1} and t[name].group == 256


# -- models ------------------------------------------------------------------------------------------------

DIMS = dict(vocab=48, hidden=256, layers=2, heads=4, kv_heads=2, ffn=512, context=16)


def model_file(path, arch="llama", types=None, tied=False, dims=DIMS, extra_meta=None, extra_tensors=None,
               seed=0):
    """A small random model. ``types`` maps a tensor name suffix to its GGUF type."""
    rng = np.random.default_rng(seed)
    d, f, v, L = dims["hidden"], dims["ffn"], dims["vocab"], dims["layers"]
    hd = d // dims["heads"]
    kvd = dims["kv_heads"] * hd
    types = dict(types or {})
    meta = {f"{arch}.block_count": L, f"{arch}.embedding_length": d, f"{arch}.feed_forward_length": f,
            f"{arch}.attention.head_count": dims["heads"], f"{arch}.attention.head_count_kv": dims["kv_heads"],
            f"{arch}.context_length": dims["context"], f"{arch}.rope.freq_base": 10000.0,
            f"{arch}.attention.layer_norm_rms_epsilon": 1e-5}
    meta.update(extra_meta or {})

    def mat(n, k):
        return (rng.standard_normal((n, k)) / math.sqrt(k)).astype(np.float32)

    def norm(n):
        return rng.uniform(0.5, 1.5, n).astype(np.float32)

    ts = {"token_embd.weight": (mat(v, d) * 4, types.get("token_embd", QT.F32))}
    for i in range(L):
        p = f"blk.{i}"
        ts[f"{p}.attn_norm.weight"] = (norm(d), QT.F32)
        for proj, (n, k) in {"attn_q": (d, d), "attn_k": (kvd, d), "attn_v": (kvd, d), "attn_output": (d, d),
                             "ffn_gate": (f, d), "ffn_up": (f, d), "ffn_down": (d, f)}.items():
            ts[f"{p}.{proj}.weight"] = (mat(n, k) * 2, types.get(proj, QT.F32))
        ts[f"{p}.ffn_norm.weight"] = (norm(d), QT.F32)
        if arch.startswith("bitnet"):
            ts[f"{p}.attn_sub_norm.weight"] = (norm(d), QT.F32)
            ts[f"{p}.ffn_sub_norm.weight"] = (norm(f), QT.F32)
    ts["output_norm.weight"] = (norm(d), QT.F32)
    if not tied:
        ts["output.weight"] = (mat(v, d), types.get("output", QT.F32))
    ts.update(extra_tensors or {})
    write_gguf(path, arch, meta, ts)
    return path


LLAMA_TYPES = {"token_embd": QT.Q4_1, "attn_q": QT.Q4_0, "attn_k": QT.Q8_0, "attn_v": QT.Q4_K,
               "attn_output": QT.F16, "ffn_gate": QT.Q6_K, "ffn_up": QT.BF16, "ffn_down": QT.TQ2_0,
               "output": QT.Q5_1}
BITNET_TYPES = {"attn_q": QT.TQ1_0, "attn_k": QT.TQ2_0, "attn_v": QT.TQ1_0, "attn_output": QT.TQ2_0,
                "ffn_gate": QT.TQ1_0, "ffn_up": QT.TQ2_0, "ffn_down": QT.TQ1_0, "token_embd": QT.F16}


# -- an independent numpy decoder ---------------------------------------------------------------------

def _rms(x, w, eps=1e-5):
    return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * w).astype(np.float32)


def _rope(x, pos, style, theta=10000.0):
    """x [S, H, D] at positions pos [S]."""
    d = x.shape[-1]
    out = np.empty_like(x, dtype=np.float64)
    for s, p in enumerate(pos):
        for i in range(d // 2):
            ang = p * theta ** (-2.0 * i / d)
            c, sn = math.cos(ang), math.sin(ang)
            a, b = (2 * i, 2 * i + 1) if style == "interleaved" else (i, i + d // 2)
            out[s, :, a] = x[s, :, a] * c - x[s, :, b] * sn
            out[s, :, b] = x[s, :, b] * c + x[s, :, a] * sn
    return out.astype(np.float32)


def _actq(x):
    """BitNet's per-token int8 absmax quantization, values back in float."""
    m = np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), np.float32(1e-5))
    q = np.clip(np.rint(x * (np.float32(127) / m)), -128, 127)
    return (q * (m / np.float32(127))).astype(np.float32)


def _q8_0(x):
    """llama.cpp's Q8_0 activation blocks, values back in float: per 32, q = rint(x * 127 / max|x|) (its x86
    quantize_row_q8_0), d = max|x| / 127 rounded to f16."""
    blocks = x.reshape(-1, 32)
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(blocks * inv)
    d = (amax / np.float32(127)).astype(np.float16).astype(np.float32)
    return (q * d).astype(np.float32).reshape(x.shape)


def _q8_k(x):
    """llama.cpp's Q8_K activation blocks (TQ2_0's, TQ1_0's and the K-quants' dot products), values back in
    float: per 256, q = rint(x * 127 / max|x|), d = max|x| / 127 kept f32 (quantize_row_q8_K_ref, up to d's sign and last bit)."""
    blocks = x.reshape(-1, 256)
    amax = np.abs(blocks).max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    return (np.rint(blocks * inv) * (amax / np.float32(127))).astype(np.float32).reshape(x.shape)


# the weight types whose llama.cpp dot product takes x in Q8_0 blocks, Q8_K blocks or rounded to f16 / bf16
Q8_0_DOT = ("Q8_0", "Q4_0", "Q5_0")
ROUND_X = {"Q8_0": _q8_0, "Q4_0": _q8_0, "Q5_0": _q8_0, "TQ2_0": _q8_k, "TQ1_0": _q8_k, "Q4_K": _q8_k,
           "Q5_K": _q8_k, "Q6_K": _q8_k, "Q3_K": _q8_k, "Q2_K": _q8_k,
           "F16": lambda x: x.astype(np.float16).astype(np.float32),
           "BF16": lambda x: x.astype(ml_dtypes.bfloat16).astype(np.float32)}


def reference_step(W, arch, dims, tokens, start, caches):
    """One decoder step: returns logits [S, V] and updates ``caches`` (list of [k, v] of [KV, C, hd])."""
    d, H, KV = dims["hidden"], dims["heads"], dims["kv_heads"]
    hd, S = d // H, len(tokens)
    pos = np.arange(start, start + S)
    style = "interleaved" if arch == "llama" else "half"
    bitnet = arch.startswith("bitnet")  # sub-norms and the optional per-tensor scales
    b158 = arch == "bitnet-b1.58"  # 2B4T: squared ReLU and int8 activations; llama.cpp's bitnet: SiLU, floats

    def lin(x, name):
        if b158:
            x = _actq(x)
        elif W.types[name] in ROUND_X:
            x = ROUND_X[W.types[name]](x)
        if name in W.mins:  # llama.cpp's Q4_K dot product: the codes' term, less x's sums per 32 times the mins
            z = W.mins[name]
            g = x.shape[-1] // z.shape[-1]  # 32 (Q4_K, Q5_K) or 16 (Q2_K)
            y = x @ (W[name] + np.repeat(z, g, axis=1)).T - x.reshape(len(x), -1, g).sum(-1) @ z.T
        else:
            y = x @ W[name].T
        scale = W.get(name.replace(".weight", ".scale"))
        return y * scale.reshape(-1)[0] if scale is not None else y

    x = W["token_embd.weight"][np.asarray(tokens)]
    for i, (kc, vc) in enumerate(caches):
        p = f"blk.{i}"
        h = _rms(x, W[f"{p}.attn_norm.weight"])
        q = _rope(lin(h, f"{p}.attn_q.weight").reshape(S, H, hd), pos, style)
        k = _rope(lin(h, f"{p}.attn_k.weight").reshape(S, KV, hd), pos, style)
        v = lin(h, f"{p}.attn_v.weight").reshape(S, KV, hd)
        kc[:, start:start + S] = k.transpose(1, 0, 2)
        vc[:, start:start + S] = v.transpose(1, 0, 2)
        L = start + S
        att = np.zeros((S, H, hd), np.float32)
        for hq in range(H):
            kvh = hq // (H // KV)
            scores = (q[:, hq] @ kc[kvh, :L].T) / np.float32(math.sqrt(hd))
            scores = np.where(np.arange(L)[None, :] <= pos[:, None], scores, -np.inf)
            e = np.exp(scores - scores.max(-1, keepdims=True))
            att[:, hq] = (e / e.sum(-1, keepdims=True)) @ vc[kvh, :L]
        att = att.reshape(S, d)
        if bitnet:
            att = _rms(att, W[f"{p}.attn_sub_norm.weight"])
        x = x + lin(att, f"{p}.attn_output.weight")
        h = _rms(x, W[f"{p}.ffn_norm.weight"])
        g, u = lin(h, f"{p}.ffn_gate.weight"), lin(h, f"{p}.ffn_up.weight")
        a = (np.maximum(g, 0) ** 2 if b158 else g / (1 + np.exp(-g))) * u
        if bitnet:
            a = _rms(a, W[f"{p}.ffn_sub_norm.weight"])
        x = x + lin(a, f"{p}.ffn_down.weight")
    x = _rms(x, W["output_norm.weight"])
    head = "token_embd.weight" if arch == "bitnet" or "output.weight" not in W else "output.weight"
    return (ROUND_X[W.types[head]](x) if W.types[head] in ROUND_X else x) @ W[head].T


def run_steps(path, arch, prompt, next_token, fuse=False):
    """(ladder outputs, reference logits) of a prefill over ``prompt`` and one decode step."""
    W = gguf_values(path)
    ctx = DIMS["context"]
    hd = DIMS["hidden"] // DIMS["heads"]
    ref_caches = [[np.zeros((DIMS["kv_heads"], ctx, hd), np.float32) for _ in range(2)]
                  for _ in range(DIMS["layers"])]
    ref = [reference_step(W, arch, DIMS, prompt, 0, ref_caches),
           reference_step(W, arch, DIMS, [next_token], len(prompt), ref_caches)]
    g1, w = lg.load(path, {"tokens": (len(prompt),)}, kv_cache="f32")  # the numpy reference's caches are f32
    g2, _ = lg.load(path, kv_cache="f32")
    if fuse:
        g1, g2 = (PassManager("legalize-types{target=cpu},fuse").run(g) for g in (g1, g2))
    caches = {f"{kv}_cache{i}": np.zeros((DIMS["kv_heads"], ctx, hd), np.float32)
              for i in range(DIMS["layers"]) for kv in "kv"}
    outs = []
    for g, ids, start in ((g1, prompt, 0), (g2, [next_token], len(prompt))):
        n = len(ids)
        out = ladder.run(g, {"tokens": np.array(ids, np.int32), "pos": np.arange(start, start + n, dtype=np.int32),
                             "start": np.array([start], np.int32), "kv_len": np.array([start + n], np.int32),
                             **caches}, w)
        vals = list(out.values())
        for i in range(DIMS["layers"]):
            caches[f"k_cache{i}"], caches[f"v_cache{i}"] = vals[1 + 2 * i], vals[2 + 2 * i]
        outs.append(out)
    return outs, ref, ref_caches


@pytest.mark.parametrize("tied", [False, True], ids=["output", "tied"])
def test_llama_matches_numpy_reference(tmp_path, tied):
    path = model_file(tmp_path / "llama.gguf", "llama", LLAMA_TYPES, tied=tied)
    outs, ref, ref_caches = run_steps(path, "llama", [3, 17, 5], 40)
    for out, r in zip(outs, ref):
        logits = out["logits"]
        assert logits.shape == r.shape
        np.testing.assert_allclose(logits, r, rtol=1e-4, atol=1e-4 * float(np.abs(r).max()))
    final = list(outs[1].values())
    for i in range(DIMS["layers"]):
        for got, want in zip(final[1 + 2 * i:3 + 2 * i], ref_caches[i]):
            np.testing.assert_allclose(got[:, :4], want[:, :4], rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    assert np.all(final[1][:, 4:] == 0)  # nothing written past the filled positions


# a Q4_K_M file's K-quants (llama-quantize's default mix: Q4_K, Q6_K for some projections and the embedding / head)
# and Q2_K, Q3_K and Q5_K (Q2_K's, Q3_K_M's, Q5_K_M's)
K_QUANTS = {"token_embd": QT.Q6_K, "attn_q": QT.Q3_K, "attn_k": QT.Q6_K, "attn_v": QT.Q5_K,
            "attn_output": QT.Q2_K, "ffn_gate": QT.Q3_K, "ffn_up": QT.Q4_K, "ffn_down": QT.Q6_K}


def test_k_quants_take_llamas_q8_k_dot_products(tmp_path):
    """Q2_K, Q3_K, Q4_K, Q5_K and Q6_K projections and a tied Q6_K head take x in Q8_K blocks and int8 dot products over
    blocks of 32 (``qmatmul_q8``; Q3_K's and Q6_K's scale per 16 is ``group = 16``, two scales a block): the
    reference interpreter agrees with the numpy model (llama.cpp's dot products), and the cpu target with it."""
    path = model_file(tmp_path / "k.gguf", "llama", K_QUANTS, tied=True)
    outs, ref, _ = run_steps(path, "llama", [3, 17, 5], 40)
    for out, r in zip(outs, ref):
        np.testing.assert_allclose(out["logits"], r, rtol=1e-4, atol=1e-4 * float(np.abs(r).max()))
    g, w = lg.load(path)
    fused = PassManager("legalize-types{target=cpu},fuse").run(g)
    groups = sorted(op.attr.get("group", 32) for op in fused.ops() if op.kind == "qmatmul_q8")
    # per layer 2 Q3_K, 2 Q6_K and a Q2_K, and the head; a Q4_K and a Q5_K
    assert groups == [16] * (2 * 5 + 1) + [32] * (2 * 2)
    assert not [op for op in fused.ops() if op.kind == "qmatmul"]
    # every scale as the file has it, an int8 sub-scale a group times an f32 per 256 (scale_group), apart from the
    # codes: Q3_K's, Q2_K's and Q4_K's in 4-bit blocks of 32, Q5_K's and Q6_K's int8 as they are; Q2_K's, Q4_K's
    # and Q5_K's mins the same way, their term inside the op (no float matmul left for it)
    q8 = [op for op in fused.ops() if op.kind == "qmatmul_q8"]
    assert all(op.attr.get("group", 32) * op.attr.get("scale_group", 0) == 256 for op in q8)
    # x in Q8_K blocks: its scale one per super-block of 256 (sx [..., K / 256]), as the file's d per 256
    assert all(fused.type_of(op.operands[1]).shape[-1] * 256 == fused.type_of(op.operands[0]).shape[-1] for op in q8)
    assert sorted(len(op.operands) for op in q8) == [5] * (2 * 4 + 1) + [7] * (2 * 3)
    assert not [op for op in fused.ops() if op.kind in ("matmul", "reduce")]
    assert {(op.results[0].type.dtype.name, op.results[0].type.packing.name) for op in fused.ops()
            if op.kind == "pack"} == {("i4", "nib16"), ("u4", "nib16")}
    feed = feed_of(g)
    want = ladder.run(g, feed, w)["logits"]
    got = ladder.compile(g, "cpu", w, cache=False)(feed)["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_llama_rope_is_interleaved(tmp_path):
    """The llama graph uses llama.cpp's normal RoPE (adjacent pairs); the half style gives other logits."""
    path = model_file(tmp_path / "llama.gguf", "llama", {})
    g, _ = lg.load(path)
    styles = {op.attr.get("style") for op in g.ops() if op.kind == "rope"}
    assert styles == {"interleaved"}
    W = gguf_values(path)
    caches = [[np.zeros((2, 16, 64), np.float32) for _ in range(2)] for _ in range(2)]
    ref = reference_step(W, "llama", DIMS, [1, 2], 0, caches)
    half = reference_step(W, "llama with half rope", DIMS, [1, 2], 0,  # a non-llama arch name: style half
                          [[np.zeros((2, 16, 64), np.float32) for _ in range(2)] for _ in range(2)])
    gp, w = lg.load(path, {"tokens": (2,)}, kv_cache="f32")  # the numpy reference's caches are f32
    out = ladder.run(gp, {"tokens": np.array([1, 2], np.int32), "pos": np.arange(2, dtype=np.int32),
                          "start": np.array([0], np.int32), "kv_len": np.array([2], np.int32),
                          **{f"{kv}_cache{i}": np.zeros((2, 16, 64), np.float32) for i in range(2) for kv in "kv"}},
                     w)
    np.testing.assert_allclose(out["logits"], ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    assert not np.allclose(out["logits"][1], half[1], rtol=1e-2, atol=1e-2 * float(np.abs(ref).max()))


@pytest.mark.parametrize("arch", ["bitnet", "bitnet-b1.58"])
def test_bitnet_matches_numpy_reference(tmp_path, arch):
    """llama.cpp's bitnet: SiLU gate and float activations; BitNet b1.58 2B4T: squared ReLU and int8
    activations. Both: sub-norms, NEOX RoPE, per-tensor scales, the head tied to token_embd."""
    scales = {f"blk.{i}.{p}.scale": (np.array([0.5 + 0.25 * i], np.float32), QT.F32)
              for i in range(DIMS["layers"]) for p in ("attn_v", "ffn_down")}
    path = model_file(tmp_path / "bitnet.gguf", arch, BITNET_TYPES, tied=True, extra_tensors=scales)
    g, _ = lg.load(path)
    kinds = [op.kind for op in g.ops()]
    assert {op.attr.get("style", "half") for op in g.ops() if op.kind == "rope"} == {"half"}
    b158 = arch == "bitnet-b1.58"
    # b1.58: int8 x into every projection; llama.cpp's bitnet: Q8_K x once per distinct x (4 a layer)
    assert kinds.count("quantize") == (7 if b158 else 4) * DIMS["layers"]
    assert ("relu2" in kinds, "silu" in kinds) == (b158, not b158)
    outs, ref, _ = run_steps(path, arch, [3, 17, 5], 40)
    tol = 2e-3 if b158 else 1e-4  # int8 rounding flips on ulp differences in the quantized path
    for out, r in zip(outs, ref):
        np.testing.assert_allclose(out["logits"], r, rtol=tol, atol=tol * float(np.abs(r).max()))


def test_bitnet_reads_no_output_weight(tmp_path):
    """llama.cpp's bitnet loads no output.weight (the head is token_embd): a file with one is refused."""
    path = model_file(tmp_path / "bitnet.gguf", "bitnet", BITNET_TYPES, tied=False)
    with pytest.raises(LadderError, match="does not use.*output.weight"):
        lg.load(path)


def test_fuse_makes_qmatmul_and_keeps_results(tmp_path):
    path = model_file(tmp_path / "llama.gguf", "llama", LLAMA_TYPES)
    g, w = lg.load(path)
    # 5 quantized projections/layer, the embedding and the head; per layer x's Q8_0 blocks once (attn_q and
    # attn_k share theirs), x's Q8_K blocks for ffn_down (TQ2_0), for attn_v (Q4_K: its zeros apart) and for
    # ffn_gate (Q6_K: x's scale repeated per 16); the K-quants' scales (and Q4_K's mins) are their sub-scales
    # dequantized (3 a layer)
    assert sum(op.kind == "dequant" for op in g.ops()) == 2 * 5 + 2 + 2 * 4 + 2 * 3
    assert sum(op.kind == "quantize" for op in g.ops()) == 2 * 4
    # x rounded to bf16 into ffn_up (BF16) and to f16 into attn_output (F16), as llama.cpp's dot products take it
    assert sum(op.kind == "cast" and op.result.type.dtype.name == "bf16" for op in g.ops()) == 2
    fused = PassManager("legalize-types{target=cpu},fuse").run(g)
    kinds = [op.kind for op in fused.ops()]
    assert kinds.count("qmatmul") == 1  # the other quantized matmul: the head (the embedding's feeds a gather)
    # attn_q (Q4_0), attn_k (Q8_0), attn_v (Q4_K), ffn_gate (Q6_K) and ffn_down (TQ2_0): llama.cpp's Q8_0 and Q8_K
    # dot products
    assert kinds.count("qmatmul_q8") == 2 * 5
    # the F16 and BF16 projections stay float matmuls; attn_v's zeros' term (x's sums per 32) joins its qmatmul_q8
    assert kinds.count("matmul") == 2 * 2
    assert "pack" in kinds
    outs, _, _ = run_steps(path, "llama", [3, 17, 5], 40)
    outs_f, _, _ = run_steps(path, "llama", [3, 17, 5], 40, fuse=True)
    for a, b in zip(outs, outs_f):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_bitnet_fuses_into_the_integer_path(tmp_path):
    """2B4T's ternary weights whose blocks share a scale take BitNet's int8 x ternary path (qmatmul_i8)."""
    path = tmp_path / "bitnet.gguf"
    model_file(path, "bitnet-b1.58", BITNET_TYPES, tied=True)
    path2 = tmp_path / "bitnet2.gguf"
    model_file(path2, "bitnet-b1.58", BITNET_TYPES, tied=True,
               extra_tensors={"blk.0.ffn_down.scale": (np.array([0.5], np.float32), QT.F32)})
    ts = lg.read_tensors(path2)
    assert ts["blk.0.attn_q.weight"].dtype.name == "ternary"
    g, w = lg.load(path2)
    fused = PassManager("legalize-types{target=cpu},fuse").run(g)
    kinds = [op.kind for op in fused.ops()]
    assert kinds.count("qmatmul_i8") == 7 * DIMS["layers"]
    assert np.asarray(w["blk.0.attn_q.weight.scales"]).shape == (1,)
    inputs = {"tokens": np.array([7], np.int32), "pos": np.array([0], np.int32), "start": np.array([0], np.int32),
              "kv_len": np.array([1], np.int32),
              **{f"{kv}_cache{i}": np.zeros((2, 16, 64), np.float32) for i in range(2) for kv in "kv"}}
    a, b = ladder.run(g, inputs, w), ladder.run(fused, inputs, w)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # the optional per-tensor scale multiplies ffn_down's output
    g0, w0 = lg.load(tmp_path / "bitnet.gguf")
    assert not np.array_equal(ladder.run(g0, inputs, w0)["logits"], a["logits"])
    assert any(op.kind == "param" and op.attr["ref"] == "blk.0.ffn_down.scale" for op in g.ops())
    # non-uniform block scales: the float path with the same int8-quantized activations
    path3 = tmp_path / "bitnet3.gguf"
    model_file(path3, "bitnet-b1.58", {**BITNET_TYPES, "ffn_up": QT.Q8_0}, tied=True)
    g3, w3 = lg.load(path3)
    k3 = [op.kind for op in PassManager("legalize-types{target=cpu},fuse").run(g3).ops()]
    assert k3.count("qmatmul_i8") == 6 * DIMS["layers"] and k3.count("qmatmul") == DIMS["layers"]


def test_generate_bitnet_unchanged_by_fusion(tmp_path):
    path = model_file(tmp_path / "bitnet.gguf", "bitnet", BITNET_TYPES, tied=True)
    cfg = lg.config(path)
    prompt = [5, 6, 7]
    prefill, w = lg.load(path, {"tokens": (len(prompt),)})
    decode, _ = lg.load(path)

    def runner(g, inputs):
        return ladder.run(g, inputs, w)

    ids, _, _ = generate(cfg, prefill, decode, prompt, 4, runner)
    pm = PassManager("legalize-types{target=cpu},fuse")
    ids_fused, _, _ = generate(cfg, pm.run(prefill), pm.run(decode), prompt, 4, runner)
    assert len(ids) == 4 and all(0 <= t < DIMS["vocab"] for t in ids)
    assert ids == ids_fused


def test_generate_drives_a_gguf_model(tmp_path):
    path = model_file(tmp_path / "llama.gguf", "llama", LLAMA_TYPES)
    cfg = lg.config(path)
    assert (cfg.layers, cfg.kv_heads, cfg.head_dim, cfg.context, cfg.vocab) == (2, 2, 64, 16, 48)
    prompt = [1, 2, 3, 4]
    prefill, w = lg.load(path, {"tokens": (len(prompt),)}, kv_cache="f32")  # as the numpy reference's caches
    decode, _ = lg.load(path, kv_cache="f32")
    sessions = {}

    def runner(g, inputs):
        if id(g) not in sessions:
            sessions[id(g)] = ladder.interpreter.Session(g, w)
        return sessions[id(g)].run(inputs)

    ids, _, _ = generate(cfg, prefill, decode, prompt, 5, runner)
    # greedy decoding with the numpy reference gives the same tokens
    W = gguf_values(path)
    caches = [[np.zeros((2, 16, 64), np.float32) for _ in range(2)] for _ in range(2)]
    want = [int(np.argmax(reference_step(W, "llama", DIMS, prompt, 0, caches)[-1]))]
    for _ in range(4):
        want.append(int(np.argmax(reference_step(W, "llama", DIMS, [want[-1]], len(prompt) + len(want) - 1,
                                                 caches)[-1])))
    assert ids == want and len(ids) == 5


def test_shapes_choose_the_step_and_the_cache(tmp_path):
    path = model_file(tmp_path / "m.gguf", "llama", {})
    g, _ = lg.load(path, {"tokens": (3,), "k_cache0": (2, 8, 64)})
    assert g.type_of("tokens").shape == (3,) and g.type_of("k_cache1").shape == (2, 8, 64)
    assert lg.config(path, {"k_cache0": (2, 8, 64)}).context == 8
    for bad in ({"x": (1,)}, {"tokens": (0,)}, {"k_cache0": (3, 8, 64)}, {"tokens": (17,)}):
        with pytest.raises(LadderError):
            lg.load(path, bad)


def test_cli_and_dispatcher(tmp_path, capsys):
    path = model_file(tmp_path / "m.gguf", "llama", LLAMA_TYPES)
    g, w = load_any(path)
    assert g.name == "llama_step" and set(w) >= {"token_embd.weight", "token_embd.weight.scales"}
    assert cli_main(["run", str(path), "--random-inputs", "0"]) == 0
    out = capsys.readouterr().out
    assert "%logits : f32[1, 48]" in out and out.count(" : f16[2, 16, 64]") == 2 * 2  # the updated caches (f16)
    np.save(tmp_path / "kv_len.npy", np.array([2], np.int32))
    np.save(tmp_path / "start.npy", np.array([0], np.int32))
    assert cli_main(["run", str(path), "--random-inputs", "0", "--shape", "tokens=2", "--output",
                     str(tmp_path / "o.npz"), "--input", f"kv_len={tmp_path / 'kv_len.npy'}",
                     "--input", f"start={tmp_path / 'start.npy'}"]) == 0
    with np.load(tmp_path / "o.npz") as z:
        assert z["logits"].shape == (2, 48) and np.all(np.isfinite(z["logits"]))
    # import to .lir + safetensors, and the text round-trips to the same graph
    lir, st = tmp_path / "m.lir", tmp_path / "m.safetensors"
    assert cli_main(["import", str(path), "-o", str(lir), "--weights-out", str(st)]) == 0
    assert ladder.parse(lir) == g
    from ladder import weights as weights_mod

    inputs = {"tokens": np.array([5], np.int32), "pos": np.array([0], np.int32), "start": np.array([0], np.int32),
              "kv_len": np.array([1], np.int32),
              **{f"{kv}_cache{i}": np.zeros((2, 16, 64), np.float32) for i in range(2) for kv in "kv"}}
    np.testing.assert_array_equal(ladder.run(ladder.parse(lir), inputs, weights_mod.load(st))["logits"],
                                  ladder.run(g, inputs, w)["logits"])
    capsys.readouterr()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUX" + b"\0" * 64)
    assert cli_main(["run", str(bad), "--random-inputs", "0"]) == 1
    assert "not a GGUF file" in capsys.readouterr().err


# -- unsupported content -----------------------------------------------------------------------------

def test_unsupported_architecture(tmp_path):
    path = model_file(tmp_path / "g.gguf", "gpt2", {})
    with pytest.raises(LadderError, match=r"architecture 'gpt2' is not supported.*llama, bitnet"):
        lg.load(path)


def test_unsupported_tensor_type(tmp_path):
    rng = np.random.default_rng(0)
    block, size = GGML_QUANT_SIZES[QT.IQ4_NL]
    raw = rng.integers(0, 256, (256, 256 // block * size), dtype=np.uint8)
    raw[:, 0:2] = np.array([0.01], np.float16).view(np.uint8)
    path = model_file(tmp_path / "u.gguf", "llama", {},
                      extra_tensors={"blk.0.attn_q.weight": (raw, QT.IQ4_NL, True)})
    with pytest.raises(LadderError, match=r"blk\.0\.attn_q\.weight \(IQ4_NL\).*Q4_0"):
        lg.load(path)
    with pytest.raises(LadderError, match=r"IQ4_NL"):
        lg.read_tensors(path)


def test_unsupported_model_features(tmp_path):
    path = model_file(tmp_path / "b.gguf", "llama", {},
                      extra_tensors={"blk.0.attn_q.bias": (np.zeros(256, np.float32), QT.F32)})
    with pytest.raises(LadderError, match=r"does not use.*blk\.0\.attn_q\.bias"):
        lg.load(path)
    path = model_file(tmp_path / "r.gguf", "llama", {}, extra_meta={"llama.rope.dimension_count": 32})
    with pytest.raises(LadderError, match=r"rope\.dimension_count"):
        lg.load(path)
    path = model_file(tmp_path / "m.gguf", "llama", {}, extra_meta={"llama.feed_forward_length": 384})
    with pytest.raises(LadderError, match=r"ffn_gate\.weight' has shape \[512, 256\] but the metadata says \[384, 256\]"):
        lg.load(path)


# -- malformed files --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "valid.gguf"
    dims = dict(DIMS, hidden=64, ffn=96, vocab=16, layers=1)
    model_file(path, "llama", {"attn_q": QT.Q4_0, "attn_k": QT.Q8_0, "ffn_up": QT.Q4_1}, dims=dims)
    return path, path.read_bytes()


def _info_offsets(data: bytes):
    """(name, offset of its n_dims field, of its type field, of its offset field) for every tensor info."""
    import os
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".gguf", delete=False) as fh:
        fh.write(data)
    try:
        rd = GGUFReader(fh.name)
        out = []
        for t in rd.tensors:
            f = t.field
            ndims_at = f.offset + 8 + len(t.name.encode())
            n = int(f.parts[2][0])
            out.append((t.name, ndims_at, ndims_at + 4 + 8 * n, ndims_at + 4 + 8 * n + 4, n))
        return out, rd.data_offset
    finally:
        del rd
        os.unlink(fh.name)


def _expect_error(tmp_path, data: bytes, pattern: str | None = None, name: str = "bad.gguf", file_level=True):
    p = tmp_path / name
    p.write_bytes(data)
    with pytest.raises(LadderError) as ei:
        lg.load(p)
    if pattern:
        assert __import__("re").search(pattern, str(ei.value)), str(ei.value)
    if file_level:  # else the file is well formed, only not the model its metadata describes
        with pytest.raises(LadderError):
            lg.read_tensors(p)
    return str(ei.value)


def test_valid_file_loads(valid_file):
    g, w = lg.load(valid_file[0])
    assert len(g) > 0 and "blk.0.attn_q.weight.scales" in w


def test_wrong_magic_and_empty(tmp_path, valid_file):
    _, data = valid_file
    _expect_error(tmp_path, b"GGML" + data[4:], r"not a GGUF file")
    _expect_error(tmp_path, b"", r"empty|not a GGUF")
    _expect_error(tmp_path, data[:4] + struct.pack("<I", 99) + data[8:], r"version 99")
    with pytest.raises(LadderError, match="no such file"):
        lg.load(tmp_path / "missing.gguf")


@pytest.mark.parametrize("frac", [0.001, 0.01, 0.05, 0.2, 0.5, 0.9, 0.999])
def test_truncated(tmp_path, valid_file, frac):
    _, data = valid_file
    _expect_error(tmp_path, data[:max(1, int(len(data) * frac))])


def test_tensor_data_out_of_range(tmp_path, valid_file):
    _, data = valid_file
    infos, data_off = _info_offsets(data)
    name, ndims_at, type_at, off_at, n = infos[-1]
    # the last tensor's data cut off by the end of the file
    _expect_error(tmp_path, data[:data_off + 64], r"needs bytes .* but the file has")
    # an offset pointing past the end
    bad = bytearray(data)
    bad[off_at:off_at + 8] = struct.pack("<Q", 1 << 40)
    _expect_error(tmp_path, bytes(bad), rf"'{name}'.*data offset {1 << 40}")


def test_shape_and_type_lies(tmp_path, valid_file):
    _, data = valid_file
    infos, _ = _info_offsets(data)
    by_name = {i[0]: i for i in infos}
    # the last tensor grows: its data no longer fits the file
    name, ndims_at, type_at, off_at, n = infos[-1]
    bad = bytearray(data)
    dim1_at = ndims_at + 4 + 8 * (n - 1)
    bad[dim1_at:dim1_at + 8] = struct.pack("<Q", 10_000)
    _expect_error(tmp_path, bytes(bad), rf"'{name}'.*needs bytes")
    # an earlier tensor claims another shape of the same size: the model's metadata disagrees
    name, ndims_at, type_at, off_at, n = by_name["blk.0.attn_q.weight"]
    assert n == 2
    bad = bytearray(data)
    bad[ndims_at + 4:ndims_at + 20] = struct.pack("<QQ", 32, 128)
    _expect_error(tmp_path, bytes(bad), r"attn_q\.weight' has shape \[128, 32\]", file_level=False)
    # a row that is not a whole number of blocks
    bad = bytearray(data)
    bad[ndims_at + 4:ndims_at + 20] = struct.pack("<QQ", 48, 64)
    _expect_error(tmp_path, bytes(bad), r"rows of 48 elements")
    # a type that changes the tensor's size (Q4_0 -> Q8_0): the tensors after it are misplaced
    bad = bytearray(data)
    bad[type_at:type_at + 4] = struct.pack("<I", int(QT.Q8_0))
    _expect_error(tmp_path, bytes(bad), r"data offset")
    # an unknown type number, and a type ladder does not read (same size: IQ4_NL has Q4_0's block)
    bad[type_at:type_at + 4] = struct.pack("<I", 250)
    _expect_error(tmp_path, bytes(bad), r"unknown type number 250")
    bad[type_at:type_at + 4] = struct.pack("<I", int(QT.IQ4_NL))
    _expect_error(tmp_path, bytes(bad), r"IQ4_NL")
    # too many dimensions
    bad = bytearray(data)
    bad[ndims_at:ndims_at + 4] = struct.pack("<I", 7)
    _expect_error(tmp_path, bytes(bad))
    # a metadata value of the wrong type
    name, ndims_at, type_at, off_at, n = infos[0]
    txt = data.replace(b"llama.embedding_length", b"llama.embedding_lengtX")
    _expect_error(tmp_path, txt, r"embedding_length' is missing", file_level=False)


def test_random_corruption_is_always_a_ladder_error(tmp_path, valid_file):
    """Bytes flipped anywhere in the header and tensor infos: the file loads or fails with a LadderError."""
    _, data = valid_file
    _, data_off = _info_offsets(data)
    rng = np.random.default_rng(7)
    p = tmp_path / "fuzz.gguf"
    failures = 0
    for _ in range(300):
        bad = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, data_off))
            bad[at] = int(rng.integers(0, 256)) if rng.random() < 0.5 else bad[at] ^ (1 << int(rng.integers(0, 8)))
        p.write_bytes(bytes(bad))
        try:
            lg.load(p)
        except LadderError as e:
            failures += 1
            assert str(e).strip()
    assert failures > 100


# -- bitnet.cpp's I2_S ------------------------------------------------------------------------------------

def pack_i2s(t: np.ndarray, scale: float) -> np.ndarray:
    """Independent packer of bitnet.cpp's x86 I2_S layout: per 128 elements, 32 bytes; element g*32+p of a
    block in bits 6-2g of byte p; codes t+1; then the f32 scale, padded to 32 bytes."""
    flat = (t.reshape(-1) + 1).astype(np.uint8)
    out = np.zeros(flat.size // 4 + 32, np.uint8)
    for j in range(flat.size):
        blk, within = divmod(j, 128)
        g, pos = divmod(within, 32)
        out[blk * 32 + pos] |= flat[j] << (6 - 2 * g)
    out[flat.size // 4:flat.size // 4 + 4] = np.frombuffer(np.float32(scale).tobytes(), np.uint8)
    return out


def test_i2s_decodes_bitnet_cpp_layout():
    rng = np.random.default_rng(5)
    t = rng.integers(-1, 2, (4, 256)).astype(np.int8)
    raw = pack_i2s(t, 0.75)
    assert raw.size == lg.i2s_nbytes(t.size)
    got = lg.decode_i2s("w", raw, t.shape)
    np.testing.assert_array_equal(got.codes, t)
    np.testing.assert_array_equal(got.values(), t.astype(np.float32) * np.float32(0.75))
    assert got.dtype.name == "ternary" and lg._shared_ternary_scale(got)[1].tolist() == [0.75]
    bad = raw.copy()
    bad[0] |= 0xC0  # code 3 in the first element
    with pytest.raises(LadderError, match="unused 2-bit code 3"):
        lg.decode_i2s("w", bad, t.shape)
    with pytest.raises(LadderError, match="needs 260 bytes"):
        lg.decode_i2s("w", raw[:100], t.shape)
    with pytest.raises(LadderError, match="not a whole number of 128"):
        lg.decode_i2s("w", raw, (4, 100))


@pytest.mark.parametrize("arch,types", [("llama", LLAMA_TYPES), ("bitnet-b1.58", BITNET_TYPES)])
def test_a_prefill_and_a_decode_step_decode_each_tensor_once(tmp_path, monkeypatch, arch, types):
    from ladder.generate import load_model, signature

    path = model_file(tmp_path / "m.gguf", arch, types, tied=arch != "llama")
    decoded = []
    real = lg._tensor_of
    monkeypatch.setattr(lg, "_tensor_of", lambda p, info, *a: decoded.append(info.name) or real(p, info, *a))
    m = load_model(path, prompt_len=3, max_new=4)
    assert sorted(decoded) == sorted(set(decoded))  # once each, for both graphs
    assert (signature(m.prefill).seq, signature(m.decode).seq, signature(m.prefill).last_only) == (3, 1, True)
    params = {op.attr["ref"] for g in (m.prefill, m.decode) for op in g.ops() if op.kind == "param"}
    assert params == set(m.weights)
    # the same graphs as two separate loads
    one, _ = lg.load(path, {"tokens": (3,), "k_cache0": (2, 7, 64)}, last_logits=True)
    assert ladder.printer.print_graph(one) == ladder.printer.print_graph(m.prefill)


def test_q4_0_q8_0_tq1_0_and_tq2_0_weights_are_the_files_bytes(tmp_path):
    """A Q4_0, Q8_0 or TQ2_0 projection is packed as the file stores it (q4+f16, q8+f16, tq2+f16): the compiled
    module reads the file's memory map itself, no decoded or repacked copy; the embedding's rows (gathered codes)
    are decoded, and the logits are those of the same model read with every tensor decoded. TQ1_0's base-3
    digits are repacked once into the target's 2-bit fields (same blocks, same scales), unless the pipeline
    keeps them (legalize-types keep_digits=true): then they too are the file's bytes. Both give the same
    logits as the decoded model."""
    import mmap

    from ladder.packing import get_packing
    from ladder.passes import default_pipeline

    def in_file(a):
        while a is not None:
            if isinstance(a, mmap.mmap):
                return True
            a = getattr(a, "base", None)
        return False

    keep = default_pipeline("cpu").replace("legalize-types{target=cpu}", "legalize-types{target=cpu,keep_digits=true}")
    assert keep != default_pipeline("cpu")
    for qt, pipeline in ((QT.Q4_0, None), (QT.Q8_0, None), (QT.TQ1_0, None), (QT.TQ1_0, keep), (QT.TQ2_0, None)):
        path = model_file(tmp_path / f"{qt.name}.gguf", types={k: qt for k in ("token_embd", "attn_q", "attn_k",
                          "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}, seed=3)
        g, w = lg.load(path)
        assert isinstance(w["blk.0.attn_q.weight"], ladder.weights.BlockPart)
        m = ladder.compile(g, "cpu", w, cache=False, pipeline=pipeline)
        backed = {n for n, a in zip(m.backend.weight_names, m.backend.weights) if in_file(a)}
        projections = {f"blk.{i}.{p}.weight.packed" for i in range(DIMS["layers"]) for p in
                       ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
        layouts = {m.graph.type_of(n).layout for n in projections}
        if qt == QT.TQ1_0 and pipeline is None:
            assert not projections & backed  # repacked: a copy, not the file's digits
            (layout,) = layouts
            p = get_packing(layout)
            assert (p.base.radix, p.base.bits, p.block, p.scale.name) == (0, 2, 256, "f16"), layout
        else:
            assert projections <= backed
            layout = {QT.Q4_0: "q4+f16", QT.Q8_0: "q8+f16", QT.TQ1_0: "tq1+f16", QT.TQ2_0: "tq2+f16"}[qt]
            assert layouts == {layout}
        assert "token_embd.weight" not in backed
        decoded = {k: np.asarray(v) for k, v in w.items()}  # every param as arrays: packed by legalize-types
        ref = ladder.compile(g, "cpu", decoded, cache=False)
        feed = {"tokens": np.array([5], np.int32), "kv_len": np.array([1], np.int32)}
        feed = {v.name: feed.get(v.name, np.zeros(v.type.shape, v.type.dtype.np_dtype)) for v in g.inputs}
        np.testing.assert_array_equal(m(feed)["logits"], ref(feed)["logits"])


def _mapped_file(a):
    """The file an array is a memory map of (walking its bases), or None."""
    while a is not None:
        if isinstance(a, np.memmap) and a.filename:
            return a.filename
        a = getattr(a, "base", None)
    return None


def test_tq1_0_repacking_is_done_once_and_kept_in_the_cache_folder(tmp_path, monkeypatch):
    """The repacked TQ1_0 projections are written to the cache folder's ``packed`` entries on the first
    compile; a second compile from a fresh load maps them (nothing decoded or repacked) and gives the same
    logits. An entry cut short, written by another key or group-writable is not used (repacked and rewritten,
    same logits); a file changed in place misses, and its entries replace the old ones."""
    import os

    from ladder.weights import Blocks

    types = {k: QT.TQ1_0 for k in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
    path = model_file(tmp_path / "m.gguf", types=types, seed=3)
    cache = tmp_path / "cache"
    projections = {f"blk.{i}.{p}.weight.packed" for i in range(DIMS["layers"]) for p in types}
    feed = None

    def run(expect_decodes: bool):
        nonlocal feed
        g, w = lg.load(path)
        decoded, repacked = [], []
        real, real_repack = Blocks.decoded, ladder.weights.repack_rows
        monkeypatch.setattr(Blocks, "decoded", lambda self, which: decoded.append((self.name, which))
                            or real(self, which))
        monkeypatch.setattr(ladder.weights, "repack_rows", lambda *a: repacked.append(a[0]) or real_repack(*a))
        m = ladder.compile(g, "cpu", w, cache=cache)
        monkeypatch.setattr(Blocks, "decoded", real)
        monkeypatch.setattr(ladder.weights, "repack_rows", real_repack)
        if feed is None:
            feed = feed_of(g)
        files = {n: _mapped_file(a) for n, a in zip(m.backend.weight_names, m.backend.weights) if n in projections}
        assert set(files) == projections
        assert all(f and os.path.dirname(f) == str(cache / "packed") for f in files.values()), files
        assert not [d for d in decoded if d[1] == 0], decoded  # repacked from the file's bytes, rows at a time
        assert bool(repacked) == expect_decodes, repacked
        return m(feed)["logits"], files

    first, files = run(True)
    assert len(list((cache / "packed").glob("*.pack"))) == len(projections)
    again, files2 = run(False)  # mapped from the cache: no projection decoded
    np.testing.assert_array_equal(again, first)
    assert files2 == files
    g, w = lg.load(path)
    np.testing.assert_array_equal(ladder.compile(g, "cpu", w, cache=False)(feed)["logits"], first)

    entries = sorted(files.values())
    with open(entries[0], "r+b") as f:  # cut short
        f.truncate(os.path.getsize(entries[0]) - 1)
    os.chmod(entries[1], 0o664)  # writable by the group
    with open(entries[2], "r+b") as f:  # its key changed (a byte of the JSON)
        head = f.read(64)
        at = head.index(b'"')
        f.seek(at + 1)
        f.write(b"X")
    mended, _ = run(True)
    np.testing.assert_array_equal(mended, first)
    _, files3 = run(False)  # rewritten whole
    assert files3 == files

    model_file(path, types=types, seed=4)  # another model at the same path: its entries replace the old ones
    changed, files4 = run(True)
    assert files4 == files and len(list((cache / "packed").glob("*.pack"))) == len(projections)
    g, w = lg.load(path)
    np.testing.assert_array_equal(ladder.compile(g, "cpu", w, cache=False)(feed)["logits"], changed)


def test_k_quants_compile_from_the_cache_without_decoding(tmp_path, monkeypatch):
    """Q4_K projections: the first compile packs their codes (the target's nibble blocks) and decodes their
    sub-scales, super-block scales and mins into the cache folder's entries; Q6_K ones (a Q4_K_M file's attn_v
    and ffn_down) keep their int8 codes, sub-scales and super-block scales there. A second compile from a fresh
    load maps them all (no block decoded) and gives the same logits, which equal a compile without the cache."""
    import os

    from ladder.weights import Blocks

    types = {k: QT.Q4_K for k in ("attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up")}
    types.update(attn_v=QT.Q6_K, ffn_down=QT.Q6_K)
    path = model_file(tmp_path / "m.gguf", types=types, seed=5)
    cache = tmp_path / "cache"

    def run():
        g, w = lg.load(path)
        decodes = []
        real = Blocks.decoded
        monkeypatch.setattr(Blocks, "decoded", lambda self, which: decodes.append((self.name, which))
                            or real(self, which))
        m = ladder.compile(g, "cpu", w, cache=cache)
        monkeypatch.setattr(Blocks, "decoded", real)
        mapped = [n for n, a in zip(m.backend.weight_names, m.backend.weights)
                  if (_mapped_file(a) or "").startswith(str(cache / "packed"))]
        return m(feed_of(g))["logits"], decodes, mapped

    first, decodes, _ = run()
    assert any(d[0].startswith("blk.") for d in decodes)
    again, decodes2, mapped = run()
    np.testing.assert_array_equal(again, first)
    assert not [d for d in decodes2 if d[0].startswith("blk.")], decodes2  # codes, scales and mins all mapped
    for i in range(DIMS["layers"]):
        for p_, qt in types.items():
            w_ = f"blk.{i}.{p_}.weight"
            parts = {f"{w_}.subscales", f"{w_}.superscales"} | (
                {f"{w_}.packed", f"{w_}.subzeros", f"{w_}.superzeros"} if qt == QT.Q4_K else {w_})
            assert parts <= set(mapped), mapped
    g, w = lg.load(path)
    np.testing.assert_array_equal(ladder.compile(g, "cpu", w, cache=False)(feed_of(g))["logits"], first)
    assert all(os.path.getsize(f) > 0 for f in (cache / "packed").glob("*.pack"))


def test_two_modules_share_one_mapping_of_each_cached_part(tmp_path):
    """A prefill and a decode module compiled from one load read the same mapping of each part kept in the pack
    cache (Q6_K's int8 codes and scales, Q4_K's mins): not a second mapping, whose pages would count twice in the
    resident set (a 2B Q4_K_M file's peak RSS 3.4 -> 2.3 GB)."""
    types = {"attn_q": QT.Q4_K, "ffn_down": QT.Q6_K}
    path = model_file(tmp_path / "m.gguf", types=types, seed=6)
    g, w = lg.load(path)
    g2, _ = lg.load(path, {"tokens": (3,)})  # a prefill step of the same model, compiled with the same w
    mods = [ladder.compile(x, "cpu", w, cache=tmp_path / "cache") for x in (g, g2)]
    names = ["blk.0.ffn_down.weight", "blk.0.ffn_down.weight.subscales", "blk.0.ffn_down.weight.superscales",
             "blk.0.attn_q.weight.subzeros"]
    where = [{n: a.__array_interface__["data"][0] for n, a in zip(m.backend.weight_names, m.backend.weights)}
             for m in mods]
    assert all(n in where[0] and where[0][n] == where[1][n] for n in names), where


def test_q4_k_packs_from_the_file_bytes_as_the_generic_pack_does(tmp_path):
    """Q4_K's codes go into 32-code nibble blocks (with their f32 scales, or alone) straight from the file's code
    bytes (no code decoded): the same bytes as packing the decoded codes; other packings are left to the generic
    pack."""
    from ladder.packing import get_packing
    from ladder.types import DTYPES
    from ladder.weights import repack_rows

    path = model_file(tmp_path / "m.gguf", types={"ffn_down": QT.Q4_K}, seed=3)
    t = lg.open_file(path).tensor("blk.1.ffn_down.weight", keep_blocks=True)
    p = get_packing("nib16+f32")
    want = p.pack(np.asarray(t.codes), DTYPES["u4"], np.asarray(t.scale))
    got = repack_rows("nib16+f32", [t.codes, t.scale], want.shape)
    assert got is not None and np.array_equal(got, want)
    assert repack_rows("nib16+f16", [t.codes, t.scale], want.shape) is None  # a scale the file's is not
    alone = get_packing("nib16").pack(np.asarray(t.codes), DTYPES["u4"])
    got = repack_rows("nib16", [t.codes], alone.shape)
    assert got is not None and np.array_equal(got, alone)
    # the scales and mins as the file has them: f32(sub-scale) * d is the decoded f32 scale (zero), bit for bit
    sub, d, zc, zd = (np.asarray(a) for a in t.factors)
    for c, f, want in ((sub, d, t.scale), (zc, zd, t.zero)):
        assert c.dtype == np.int8 and f.dtype == np.float32 and f.shape[-1] * 8 == c.shape[-1]
        assert np.array_equal((c.astype(np.float32) * np.repeat(f, 8, axis=-1)).view(np.int32),
                              np.asarray(want).view(np.int32))


def feed_of(g):
    """A decode step's inputs: token 5 at position 0, zeroed caches."""
    feed = {"tokens": np.array([5], np.int32), "kv_len": np.array([1], np.int32)}
    return {v.name: feed.get(v.name, np.zeros(v.type.shape, v.type.dtype.np_dtype)) for v in g.inputs}


def test_a_tq2_0_code_3_is_refused_without_decoding(tmp_path):
    """One 2-bit code 3 anywhere in a TQ2_0 tensor's codes (any byte of a block's 64, any of its four fields,
    the first block or the last) is refused at load; the scale bytes after the codes may hold any value."""
    path = model_file(tmp_path / "m.gguf", types={"attn_q": QT.TQ2_0})
    raw = bytes(path.read_bytes())
    info = lg.open_file(path).infos["blk.0.attn_q.weight"]
    start, nblocks = int(info.data_offset), int(info.n_bytes) // 66
    bad = tmp_path / "bad.gguf"
    for block in (0, nblocks - 1):
        for byte, value in ((5, 0xFF), (0, 0x03), (7, 0x0C), (8, 0x30), (63, 0xC0), (62, 0xC1)):
            b = bytearray(raw)
            at = start + 66 * block + byte
            b[at] = value  # one field (or all four) 3, the others valid codes
            bad.write_bytes(bytes(b))
            with pytest.raises(LadderError, match="blk.0.attn_q.weight.*unused 2-bit code 3"):
                lg.load(bad)
        b = bytearray(raw)
        b[start + 66 * block + 64:start + 66 * block + 66] = b"\xff\x3b"  # a scale (f16 0.9995) of 2-bit 3s: no code
        bad.write_bytes(bytes(b))
        lg.load(bad)


@pytest.mark.parametrize("qt", [QT.Q4_0, QT.TQ2_0, QT.TQ1_0, QT.Q8_0])
def test_a_tied_embedding_gathers_rows_of_the_packed_weight(tmp_path, qt):
    """With the head tied to a quantized token_embd (which legalize-types packs with its block scales), the
    embedding gathers rows of that packed weight and unpacks them when the step runs: no decoded copy of the
    table (a 128,256 x 2,560 vocabulary is 328 MB of codes). The logits are the interpreter's on the decoded
    weights (to the block dot products' rounding), on the cpu and in the interpreter of the compiled graph."""
    path = model_file(tmp_path / "m.gguf", types={"token_embd": qt}, tied=True, seed=5)
    g, w = lg.load(path)
    m = ladder.compile(g, "cpu", w, cache=False)
    kinds = {op.kind for op in m.graph.ops() if "token_embd" in " ".join(op.operands)}
    feed = {v.name: np.zeros(v.type.shape, v.type.dtype.np_dtype) for v in g.inputs}
    feed.update(tokens=np.array([7], np.int32), kv_len=np.array([1], np.int32))
    want = ladder.run(g, feed, {k: np.asarray(v) for k, v in w.items()})["logits"]
    # Q8_0's int8 codes too, in their q8+f16 blocks
    gathers = [op for op in m.graph.ops() if op.kind == "gather" and m.graph.type_of(op.operands[0]).layout]
    assert len(gathers) == 1 and "token_embd.weight" not in m.backend.weight_names, kinds
    np.testing.assert_allclose(ladder.run(m.graph, feed, {k: np.asarray(v) for k, v in w.items()})["logits"],
                               want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m(feed)["logits"], want, rtol=1e-4, atol=1e-4)


def test_prefill_and_decode_compile_side_by_side_packing_each_weight_once(tmp_path, monkeypatch):
    """ModuleRunner.prepare compiles a prefill and a decode step on a thread each (a second compiler child takes
    the second module): every weight is packed once for both (the other compile waits for the pack and takes
    it), and the modules generate what modules compiled one after the other generate."""
    from ladder import interpreter
    from ladder.backends.llvm import worker as worker_mod
    from ladder.generate import ModuleRunner, generate as run_generate, load_model

    path = model_file(tmp_path / "m.gguf", types={"attn_q": QT.Q4_K, "ffn_down": QT.Q6_K, "ffn_up": QT.Q2_K},
                      seed=9)
    packed: list[str] = []
    real = interpreter.Session._pack_blocks_now
    monkeypatch.setattr(interpreter.Session, "_pack_blocks_now",
                        lambda self, op, graph, args: packed.append(op.results[0].name) or real(self, op, graph, args))
    outs = []
    for side_by_side in (True, False):
        m = load_model(path, prompt_len=3, context=16)
        runner = ModuleRunner("cpu", m.weights, 1, cache=tmp_path / f"cache{side_by_side}")
        if side_by_side:
            runner.prepare(m.prefill, m.decode)
            assert len(packed) == len(set(packed)) and packed, packed  # once each, for both modules
        else:
            runner.module(m.prefill)
            runner.module(m.decode)
        got = run_generate(m.prefill, m.decode, [3, 5, 7], 4, runner)
        outs.append((got.ids, got.first_logits))
    assert outs[0][0] == outs[1][0] and np.array_equal(outs[0][1], outs[1][1])
    if (os.cpu_count() or 1) > 1:  # a busy first child: another is started for the next request
        first = worker_mod.worker()
        with first._lock:
            assert worker_mod.idle_worker() is not first
