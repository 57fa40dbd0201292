"""bitnet.cpp's I2_S weights (GGML type 36, unknown to the gguf package) in a GGUF file: the reader takes the
type, sizes its data as bitnet.cpp does (codes, then a 32-byte tail holding the f32 scale) and decodes it; a
BitNet b1.58 model stored as I2_S computes what the same ternary weights stored as TQ2_0 and as F32 compute;
and data of the wrong size is refused naming the tensor."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("gguf")

from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFWriter, quants  # noqa: E402

import ladder  # noqa: E402
from ladder.frontends import gguf as lg  # noqa: E402

I2S = 36  # GGML_TYPE_I2_S in bitnet.cpp's ggml fork
ARCH = "bitnet-b1.58"
DIMS = dict(vocab=32, hidden=256, layers=2, heads=4, kv_heads=2, ffn=512, context=16)
PROJ = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def pack_i2s(t: np.ndarray, scale: float) -> np.ndarray:
    """bitnet.cpp's x86 I2_S bytes for ternary ``t`` (row-major): per 128 elements 32 bytes, element
    g * 32 + p of a block in bits 6 - 2g of byte p, as code t + 1; then 32 bytes whose first 4 are the f32
    scale."""
    codes = (t.reshape(-1, 4, 32) + 1).astype(np.uint8)
    packed = (codes << np.array([6, 4, 2, 0], np.uint8).reshape(1, 4, 1)).sum(axis=1, dtype=np.uint8)
    tail = np.zeros(32, np.uint8)
    tail[:4] = np.frombuffer(np.float32(scale).tobytes(), np.uint8)
    return np.concatenate([packed.reshape(-1), tail])


# -- the layout ------------------------------------------------------------------------------------------

def test_pack_then_decode_round_trips():
    rng = np.random.default_rng(0)
    for shape in [(1, 128), (3, 256), (5, 384)]:
        t = rng.integers(-1, 2, shape).astype(np.int8)
        raw = pack_i2s(t, 0.3)
        assert raw.size == lg.i2s_nbytes(t.size) == t.size // 4 + 32
        got = lg.decode_i2s("w", raw, shape)
        assert got.ggml_type == "I2_S" and got.dtype.name == "ternary" and got.shape == shape
        np.testing.assert_array_equal(got.codes, t)
        np.testing.assert_array_equal(got.values(), t.astype(np.float32) * np.float32(0.3))


def test_element_positions_follow_the_documented_layout():
    """One +1 among zeros lands where the layout says: code 2 in bits 6-2g of byte block*32 + p."""
    for j in (0, 31, 32, 65, 127, 128, 200, 255):
        t = np.zeros((2, 128), np.int8)
        t.reshape(-1)[j] = 1
        raw = pack_i2s(t, 1.0)
        blk, within = divmod(j, 128)
        g, p = divmod(within, 32)
        byte = blk * 32 + p
        zeros = 0b01010101  # four codes 1 (the value 0)
        want = zeros & ~(0b11 << (6 - 2 * g)) | (0b10 << (6 - 2 * g))
        assert raw[byte] == want, j
        assert np.all(np.delete(raw[:64], byte) == zeros), j
        np.testing.assert_array_equal(lg.decode_i2s("w", raw, t.shape).codes, t)


# -- files -----------------------------------------------------------------------------------------------

def ternary_model(seed: int = 0):
    """Ternary codes and one f16-exact scale per projection (so TQ2_0 holds the same values), plus float
    embeddings and norms."""
    rng = np.random.default_rng(seed)
    d, f, v, L = DIMS["hidden"], DIMS["ffn"], DIMS["vocab"], DIMS["layers"]
    kvd = DIMS["kv_heads"] * d // DIMS["heads"]
    shapes = {"attn_q": (d, d), "attn_k": (kvd, d), "attn_v": (kvd, d), "attn_output": (d, d),
              "ffn_gate": (f, d), "ffn_up": (f, d), "ffn_down": (d, f)}
    floats = {"token_embd.weight": rng.standard_normal((v, d)).astype(np.float32)}
    ternary = {}
    for i in range(L):
        floats[f"blk.{i}.attn_norm.weight"] = rng.uniform(0.5, 1.5, d).astype(np.float32)
        floats[f"blk.{i}.ffn_norm.weight"] = rng.uniform(0.5, 1.5, d).astype(np.float32)
        floats[f"blk.{i}.attn_sub_norm.weight"] = rng.uniform(0.5, 1.5, d).astype(np.float32)
        floats[f"blk.{i}.ffn_sub_norm.weight"] = rng.uniform(0.5, 1.5, f).astype(np.float32)
        for j, proj in enumerate(PROJ):
            n, k = shapes[proj]
            scale = float(np.float16((1 + j + 7 * i) / 64 / math.sqrt(k) * 8))
            ternary[f"blk.{i}.{proj}.weight"] = (rng.integers(-1, 2, (n, k)).astype(np.int8), scale)
    floats["output_norm.weight"] = rng.uniform(0.5, 1.5, d).astype(np.float32)
    return floats, ternary


def write_model(path, storage: str, floats: dict, ternary: dict, raw_i2s: dict | None = None, order=None):
    """Write the model with its ternary weights as ``storage`` ("I2_S", "TQ2_0" or "F32"). ``raw_i2s``:
    name -> bytes to store instead of the packed weight (damaged data). ``order``: tensor names in file order."""
    w = GGUFWriter(str(path), ARCH)
    a = ARCH
    for key, val in {f"{a}.block_count": DIMS["layers"], f"{a}.embedding_length": DIMS["hidden"],
                     f"{a}.feed_forward_length": DIMS["ffn"], f"{a}.attention.head_count": DIMS["heads"],
                     f"{a}.attention.head_count_kv": DIMS["kv_heads"], f"{a}.context_length": DIMS["context"]}.items():
        w.add_uint32(key, val)
    w.add_float32(f"{a}.rope.freq_base", 10000.0)
    w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-5)
    names = order or [*floats, *ternary]
    for name in names:
        if name in floats:
            w.add_tensor(name, floats[name])
            continue
        t, scale = ternary[name]
        vals = t.astype(np.float32) * np.float32(scale)
        if storage == "F32":
            w.add_tensor(name, vals)
        elif storage == "TQ2_0":
            w.add_tensor(name, quants.quantize(vals, QT.TQ2_0), raw_dtype=QT.TQ2_0)
        else:
            data = (raw_i2s or {}).get(name)
            data = pack_i2s(t, scale) if data is None else data
            # bytes as int8: the writer then takes the shape as given and the type number as is (it knows
            # no block size for type 36, which it would need to turn a uint8 byte shape into elements)
            w.add_tensor(name, data.view(np.int8), raw_shape=t.shape, raw_dtype=I2S)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def model():
    return ternary_model()


def test_reader_takes_i2s_in_file_order(tmp_path, model):
    floats, ternary = model
    order = [*ternary][:3] + [*floats] + [*ternary][3:]  # I2_S tensors before, between and after the others
    p = write_model(tmp_path / "i2s.gguf", "I2_S", floats, ternary, order=order)
    f = lg.open_file(p)
    assert list(f.infos) == order
    ts = lg.read_tensors(p)
    for name, (t, scale) in ternary.items():
        assert ts[name].ggml_type == "I2_S" and ts[name].shape == t.shape
        np.testing.assert_array_equal(ts[name].codes, t)
        np.testing.assert_array_equal(ts[name].values(), t.astype(np.float32) * np.float32(scale))
    for name, vals in floats.items():
        assert ts[name].ggml_type == "F32"
        np.testing.assert_array_equal(ts[name].codes, vals)
    assert "I2_S" in lg.supported_types()


def _step_inputs(tokens, start):
    hd = DIMS["hidden"] // DIMS["heads"]
    caches = {f"{kv}_cache{i}": np.zeros((DIMS["kv_heads"], DIMS["context"], hd), np.float32)
              for i in range(DIMS["layers"]) for kv in "kv"}
    n = len(tokens)
    return {"tokens": np.array(tokens, np.int32), "pos": np.arange(start, start + n, dtype=np.int32),
            "start": np.array([start], np.int32), "kv_len": np.array([start + n], np.int32), **caches}


def _run_ref(path, tokens):
    g, w = lg.load(path, {"tokens": (len(tokens),)})
    return ladder.compile(g, "ref", w)(_step_inputs(tokens, 0)), w


def test_i2s_model_computes_what_tq2_and_f32_compute(tmp_path, model):
    floats, ternary = model
    tokens = [3, 17, 5, 30]
    out_i2s, w_i2s = _run_ref(write_model(tmp_path / "i2s.gguf", "I2_S", floats, ternary), tokens)
    out_tq2, w_tq2 = _run_ref(write_model(tmp_path / "tq2.gguf", "TQ2_0", floats, ternary), tokens)
    out_f32, _ = _run_ref(write_model(tmp_path / "f32.gguf", "F32", floats, ternary), tokens)
    # I2_S's one scale per tensor takes BitNet's integer path, as TQ2_0 blocks sharing a scale do: the same
    # weights and the same graph, so the same bits
    for name, (t, scale) in ternary.items():
        assert w_i2s[f"{name}.scales"].tolist() == [np.float32(scale)]
        np.testing.assert_array_equal(w_i2s[name], w_tq2[name])
    assert out_i2s.keys() == out_tq2.keys()
    for k in out_i2s:
        np.testing.assert_array_equal(out_i2s[k], out_tq2[k], err_msg=k)
    # the F32 file's weights take the float path (int8 activations dequantized, times t * s): the same sums
    # in another order, so an ulp apart, and an ulp can move an activation across an int8 rounding edge
    # (1/127 of that row's absmax) in a later layer
    logits = out_i2s["logits"]
    assert np.isfinite(logits).all() and np.abs(logits).max() > 0.1
    np.testing.assert_allclose(logits, out_f32["logits"], rtol=2e-3, atol=2e-3 * float(np.abs(logits).max()))


# -- damaged files -----------------------------------------------------------------------------------------

def _error(path) -> str:
    with pytest.raises(lg.GGUFError) as e:
        lg.load(path)
    assert str(path) in str(e.value)
    return str(e.value)


def test_i2s_data_of_the_wrong_size_names_the_tensor(tmp_path, model):
    floats, ternary = model
    name = "blk.0.attn_k.weight"
    t, scale = ternary[name]
    good = pack_i2s(t, scale)
    # the 32-byte tail left out, or 64 bytes too many: the next tensor is not where the I2_S size puts it
    for i, data in enumerate([good[:-32], np.concatenate([good, np.zeros(64, np.uint8)])]):
        p = write_model(tmp_path / f"size{i}.gguf", "I2_S", floats, ternary, raw_i2s={name: data})
        msg = _error(p)
        assert f"the end of tensor '{name}' (I2_S, shape [256, 128], {t.size // 4 + 32} bytes" in msg, msg
    # the last tensor of the file cut short
    order = [n for n in [*floats, *ternary] if n != name] + [name]
    p = write_model(tmp_path / "last.gguf", "I2_S", floats, ternary, order=order)
    data = p.read_bytes()
    p.write_bytes(data[:-16])
    assert f"tensor '{name}' (I2_S" in _error(p) and "but the file has" in _error(p)
    # bitnet.cpp's other type numbers (I8_S 37, TL1 38, TL2 39 there) stay unknown
    p = write_model(tmp_path / "i8s.gguf", "I2_S", floats, ternary)
    data = bytearray(p.read_bytes())
    at = data.index(name.encode()) + len(name) + 4 + 2 * 8  # after the name, n_dims and two dimensions
    assert int.from_bytes(data[at:at + 4], "little") == I2S
    data[at:at + 4] = (37).to_bytes(4, "little")
    p.write_bytes(bytes(data))
    assert f"tensor '{name}' has unknown type number 37" in _error(p)


def test_i2s_bad_codes_and_scale_name_the_tensor(tmp_path, model):
    floats, ternary = model
    name = "blk.1.ffn_down.weight"
    t, scale = ternary[name]
    bad_code = pack_i2s(t, scale)
    bad_code[7] |= 0b11  # code 3 (no ternary value) for element 3 * 32 + 7
    p = write_model(tmp_path / "code.gguf", "I2_S", floats, ternary, raw_i2s={name: bad_code})
    assert f"'{name}' (I2_S) holds the unused 2-bit code 3" in _error(p)
    p = write_model(tmp_path / "scale.gguf", "I2_S", floats, ternary, raw_i2s={name: pack_i2s(t, np.nan)})
    assert f"'{name}' (I2_S) has a non-finite scale" in _error(p)
