"""Block scales laid out next to their blocks (nib16+f16 and friends): packing, the pack op, legalize-types, fuse."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ladder
from ladder import weights
from ladder.packing import PACKINGS, ScaledPacking, get_packing
from ladder.passes import PassManager
from ladder.types import DTYPES

BASES = [p.name for p in PACKINGS.values() if not p.planes]


def random_values(dt, shape, rng):
    if dt.kind == "table":
        return rng.integers(0, 16, shape).astype(np.uint8)
    vals = np.asarray(dt.values, dtype=np.float32)
    return vals[rng.integers(0, len(vals), shape)].astype(dt.np_dtype)


@settings(max_examples=60, deadline=None)
@given(base=st.sampled_from(BASES), scale=st.sampled_from(["f16", "bf16", "f32"]), zero=st.booleans(),
       rows=st.integers(1, 3), k=st.integers(1, 700), seed=st.integers(0, 2**16))
def test_scaled_round_trip(base, scale, zero, rows, k, seed):
    p = get_packing(f"{base}+{scale}{'z' if zero else ''}")
    rng = np.random.default_rng(seed)
    dt = DTYPES[sorted(p.dtypes)[seed % len(p.dtypes)]]
    v = random_values(dt, (rows, k), rng)
    nb = -(-k // p.block)
    s = rng.standard_normal((rows, nb)).astype(DTYPES[scale].np_dtype)
    z = rng.standard_normal((rows, nb)).astype(DTYPES[scale].np_dtype) if zero else None
    storage = p.pack(v, dt, s, z)
    assert storage.dtype == np.uint8 and storage.shape == p.storage_shape((rows, k), dt)
    back = p.unpack(storage, (rows, k), dt)
    assert np.array_equal(np.asarray(back).view(np.uint8), np.asarray(v).view(np.uint8))
    s2, z2 = p.unpack_scales(storage, (rows, k))
    assert np.array_equal(s2.view(np.uint8), s.view(np.uint8))
    assert (z2 is None) == (not zero) and (z is None or np.array_equal(z2.view(np.uint8), z.view(np.uint8)))


def test_q4_0_like_layout_bytes():
    """nib16+f16 is llama.cpp's Q4_0 block: an f16 scale, then 16 bytes holding codes j and j+16."""
    p = get_packing("nib16+f16")
    dt = DTYPES["u4"]
    codes = np.arange(32, dtype=np.uint8) % 16
    storage = p.pack(codes.reshape(1, 32).astype(dt.np_dtype), dt, np.array([[1.5]], np.float16))
    assert storage.shape == (1, 18) and p.bits_per_weight(dt) == 4.5
    assert storage[0, :2].tobytes() == np.float16(1.5).tobytes()
    expected = [(codes[j] | (codes[j + 16] << 4)) for j in range(16)]
    assert storage[0, 2:].tolist() == expected


def test_bits_per_weight_of_block_formats():
    assert get_packing("crumb64+f16").bits_per_weight(DTYPES["ternary"]) == pytest.approx(2.0625)  # TQ2_0
    assert get_packing("nib16+f32z").bits_per_weight(DTYPES["u4"]) == pytest.approx(6.0)


@pytest.mark.parametrize("name", ["planes+f16", "nib16+i8", "nib16+f64", "nope+f16"])
def test_bad_scaled_layouts(name):
    with pytest.raises(ladder.LadderError):
        get_packing(name)


def test_pack_needs_its_scales():
    p = get_packing("crumb32+f16")
    with pytest.raises(ladder.LadderError, match="scales"):
        p.pack(np.zeros((2, 128), np.int8), DTYPES["ternary"])
    assert isinstance(p, ScaledPacking)


MLP = """graph @g(%x: f32[3, 96]) -> f32[3, 8] {
  %w = param @w : i4[8, 96]
  %s = param @s : f16[8, 3]
  %d = dequant %w, %s {group = 32, dtype = f32} : f32[8, 96]
  %y = matmul %x, %d {transpose_b = true} : f32[3, 8]
  return %y
}"""


def _graph_and_weights():
    g = ladder.parse(MLP)
    w = weights.random(g, 3)
    x = np.random.default_rng(0).standard_normal((3, 96)).astype(np.float32)
    return g, w, x


@pytest.mark.parametrize("target", ["cpu:generic", "cpu:avx2", "cpu:avx512", "cpu"])
def test_legalize_embeds_block_scales_and_stays_bit_exact(target):
    g, w, x = _graph_and_weights()
    out = PassManager(f"legalize-types{{target={target}}},fuse").run(g)
    text = str(out)
    assert 'layout = "nib16+f16"' in text and "4.50 bits/weight" in text
    (q,) = [op for op in out.ops() if op.kind == "qmatmul"]
    assert len(q.operands) == 2  # the scales travel inside the packed weight
    assert np.array_equal(ladder.run(out, {"x": x}, w)["y"], ladder.run(g, {"x": x}, w)["y"])
    assert ladder.parse(text) == out


def test_block_scales_off_and_on_lut_keep_a_separate_scale():
    g, w, x = _graph_and_weights()
    for pipeline in ("legalize-types{target=cpu,block_scales=false},fuse", "legalize-types{target=lut},fuse"):
        out = PassManager(pipeline).run(g)
        (q,) = [op for op in out.ops() if op.kind == "qmatmul"]
        assert len(q.operands) == 3 and "+f16" not in str(out)
        assert np.array_equal(ladder.run(out, {"x": x}, w)["y"], ladder.run(g, {"x": x}, w)["y"])


def test_qmatmul_rejects_a_scale_operand_with_a_scaled_weight():
    text = """graph @g(%x: f32[1, 32], %w: i4<nib16+f16>[4, 32], %s: f16[4, 1]) -> f32[1, 4] {
  %y = qmatmul %x, %w, %s {group = 32, transpose_b = true} : f32[1, 4]
  return %y
}"""
    with pytest.raises(ladder.VerifyError, match="carries its scales"):
        ladder.parse(text)


def test_pack_op_checks_scale_shape():
    text = """graph @g(%w: i4[4, 64], %s: f16[4, 3]) -> i4<nib16+f16>[4, 64] {
  %p = pack %w, %s {layout = "nib16+f16"} : i4<nib16+f16>[4, 64]
  return %p
}"""
    with pytest.raises(ladder.VerifyError, match="f16\\[4, 2\\]"):
        ladder.parse(text)
