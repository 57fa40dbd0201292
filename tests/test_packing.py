"""Packings (ladder.packing): round trips, the documented byte layouts, padding, sizes, codes and errors.

Expected bytes are computed here from the layouts in ladder/packing.py's docstring, by plain Python loops that
share no code with the packers, plus a few literal byte strings written by hand.
"""

from __future__ import annotations

import itertools
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ladder import DTYPES, LadderError, TensorType, tensor_type
from ladder.ops.base import OPS, InferError
from ladder.packing import PACKINGS, from_codes, get_packing, packings_for, to_codes

SETTINGS = settings(max_examples=60, deadline=None)

LOW_BIT = ("i4", "u4", "i2", "u2", "i1", "u1", "ternary", "nf4", "fp4")

# The packings and the types each one is documented to hold.
DOC_TYPES = {
    "nib": {"i4", "u4", "nf4", "fp4"},
    "nib16": {"i4", "u4", "nf4", "fp4"},
    "nib32": {"i4", "u4", "nf4", "fp4"},
    "nib64": {"i4", "u4", "nf4", "fp4"},
    "crumb": {"i2", "u2", "ternary"},
    "crumb16": {"i2", "u2", "ternary"},
    "crumb32": {"i2", "u2", "ternary"},
    "crumb64": {"i2", "u2", "ternary"},
    "tq2": {"i2", "u2", "ternary"},
    "q4": {"i4", "u4"},
    "q8": {"i8"},
    "trit5": {"ternary"},
    "tq1": {"ternary"},
    "bit": {"i1", "u1"},
    "planes": {"i1", "u1", "i2", "u2", "ternary", "i4", "u4"},
}

PAIRS = [(p, d) for p in sorted(PACKINGS) for d in sorted(PACKINGS[p].dtypes)]

# e2m1 values in code order (sign bit = bit 3): code 8 is -0.0.
FP4 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]

# Per type: (number of codes, code -> value as a Python number, numpy dtype in memory).
CODE_VALUE = {
    "i4": (16, lambda c: c - 16 if c >= 8 else c, ml_dtypes.int4),
    "u4": (16, lambda c: c, ml_dtypes.uint4),
    "i2": (4, lambda c: c - 4 if c >= 2 else c, ml_dtypes.int2),
    "u2": (4, lambda c: c, ml_dtypes.uint2),
    "u1": (2, lambda c: c, ml_dtypes.uint1),
    "i1": (2, lambda c: 2 * c - 1, np.int8),
    "ternary": (3, lambda c: c - 1, np.int8),
    "nf4": (16, lambda c: c, np.uint8),  # nf4 tensors hold their codes
    "fp4": (16, lambda c: FP4[c], ml_dtypes.float4_e2m1fn),
    "i8": (256, lambda c: c - 256 if c >= 128 else c, np.int8),
}
# The code of 0 (None when the type has no 0) and the minimum value (for offset-binary planes).
ZERO_CODE = {"i8": 0, "i4": 0, "u4": 0, "i2": 0, "u2": 0, "u1": 0, "i1": None, "ternary": 1, "nf4": 7, "fp4": 0}
MIN_VALUE = {"i4": -8, "u4": 0, "i2": -2, "u2": 0, "u1": 0, "ternary": -1}


def values_of(codes, name: str) -> np.ndarray:
    """Codes (nested lists or an int array) -> a tensor of the type's in-memory dtype, built independently."""
    codes = np.asarray(codes, dtype=np.int64)
    _, f, npd = CODE_VALUE[name]
    flat = [f(int(c)) for c in codes.ravel()]
    if name == "fp4":
        arr = np.array(flat, dtype=np.float32).astype(npd)
    else:
        arr = np.array(flat, dtype=np.int64).astype(npd)
    return arr.reshape(codes.shape)


def bits_of(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr).view(np.uint8)


def expected_row_bytes(packing: str, k: int, bits: int) -> int:
    if packing == "nib":
        return math.ceil(k / 2)
    if packing.startswith("nib"):
        b = int(packing[3:])
        return math.ceil(k / (2 * b)) * b
    if packing == "crumb":
        return math.ceil(k / 4)
    if packing.startswith("crumb"):
        b = int(packing[5:])
        return math.ceil(k / (4 * b)) * b
    if packing == "trit5":
        return math.ceil(k / 160) * 32
    if packing == "tq1":
        return math.ceil(k / 256) * 52
    if packing == "tq2":
        return math.ceil(k / 256) * 64
    if packing == "q4":
        return math.ceil(k / 32) * 16
    if packing == "q8":
        return math.ceil(k / 32) * 32
    if packing == "bit":
        return math.ceil(k / 8)
    assert packing == "planes"
    return math.ceil(k / 8) * bits


# -- the reference packer, one row of codes at a time, straight from the docstring --------------------

def pad_to(codes: list[int], multiple: int, fill: int) -> list[int]:
    n = -(-len(codes) // multiple) * multiple
    return codes + [fill] * (n - len(codes))


def ref_pack_row(packing: str, name: str, codes: list[int]) -> list[int]:
    """The documented bytes of one row of type codes (DType.encode order)."""
    fill = ZERO_CODE[name] if ZERO_CODE[name] is not None else 0
    if packing == "nib":
        c = pad_to(codes, 2, fill)
        return [c[2 * j] | c[2 * j + 1] << 4 for j in range(len(c) // 2)]
    if packing.startswith("nib"):
        b = int(packing[3:])
        c = pad_to(codes, 2 * b, fill)
        out = []
        for s in range(0, len(c), 2 * b):
            out += [c[s + j] | c[s + j + b] << 4 for j in range(b)]
        return out
    if packing == "crumb":
        c = pad_to(codes, 4, fill)
        return [c[4 * j] | c[4 * j + 1] << 2 | c[4 * j + 2] << 4 | c[4 * j + 3] << 6 for j in range(len(c) // 4)]
    if packing.startswith("crumb"):
        b = int(packing[5:])
        c = pad_to(codes, 4 * b, fill)
        out = []
        for s in range(0, len(c), 4 * b):
            out += [c[s + j] << 6 | c[s + j + b] << 4 | c[s + j + 2 * b] << 2 | c[s + j + 3 * b] for j in range(b)]
        return out
    if packing == "trit5":
        t = pad_to(codes, 160, fill)  # ternary code = value + 1 = the trit
        out = []
        for s in range(0, len(t), 160):
            for m in range(32):
                q = sum(t[s + m + 32 * n] * 3 ** (4 - n) for n in range(5))
                out.append(-(-256 * q // 243))
        return out
    if packing == "tq1":  # llama.cpp's quantize_row_tq1_0_ref: 32 bytes of 5 trits, 16 of 5, 4 of 4 (then * 3)
        t = pad_to(codes, 256, fill)
        out = []
        for s in range(0, len(t), 256):
            qs0 = [sum(t[s + m + 32 * n] * 3 ** (4 - n) for n in range(5)) for m in range(32)]
            qs1 = [sum(t[s + 160 + m + 16 * n] * 3 ** (4 - n) for n in range(5)) for m in range(16)]
            qh = [3 * sum(t[s + 240 + m + 4 * n] * 3 ** (3 - n) for n in range(4)) for m in range(4)]
            out += [-(-256 * q // 243) for q in qs0 + qs1 + qh]
        return out
    if packing == "tq2":
        c = pad_to(codes, 256, fill)
        out = []
        for s in range(0, len(c), 128):  # two 128-code halves a block
            out += [c[s + j] | c[s + j + 32] << 2 | c[s + j + 64] << 4 | c[s + j + 96] << 6 for j in range(32)]
        return out
    if packing == "q4":  # nib16's bytes of offset codes: value - min (i4: the two's-complement code ^ 8)
        c = pad_to([v ^ 8 if name == "i4" else v for v in codes], 32, fill ^ 8 if name == "i4" else fill)
        out = []
        for s in range(0, len(c), 32):
            out += [c[s + j] | c[s + j + 16] << 4 for j in range(16)]
        return out
    if packing == "q8":  # the two's complement byte of each code, blocks of 32
        return pad_to(codes, 32, fill)
    if packing == "bit":
        c = pad_to(codes, 8, fill)
        return [sum(c[8 * j + i] << i for i in range(8)) for j in range(len(c) // 8)]
    assert packing == "planes"
    bits = DTYPES[name].bits
    _, f, _ = CODE_VALUE[name]
    if name == "i1":
        offs = list(codes)  # value = 2 * bit - 1: the plane holds the code
        pad = 0
    else:
        offs = [f(c) - MIN_VALUE[name] for c in codes]  # offset binary: value - min
        pad = -MIN_VALUE[name]
    o = pad_to(offs, 8, pad)
    out = []
    for b in range(bits):
        for j in range(len(o) // 8):
            lo = sum(((o[8 * j + t] >> b) & 1) << t for t in range(4))
            hi = sum(((o[8 * j + 4 + t] >> b) & 1) << t for t in range(4))
            out.append(lo | hi << 4)
    return out


def ref_pack(packing: str, name: str, codes: np.ndarray) -> np.ndarray:
    rows = codes.reshape(-1, codes.shape[-1])
    packed = [ref_pack_row(packing, name, [int(c) for c in row]) for row in rows]
    return np.array(packed, dtype=np.uint8).reshape(codes.shape[:-1] + (-1,))


# -- strategies ----------------------------------------------------------------------------------------

@st.composite
def code_tensors(draw, name: str, max_k: int = 700, max_rank: int = 3):
    rank = draw(st.integers(1, max_rank))
    lead = tuple(draw(st.lists(st.integers(1, 3), min_size=rank - 1, max_size=rank - 1)))
    k = draw(st.one_of(st.integers(1, max_k), st.sampled_from([1, 3, 5, 7, 9, 31, 33, 127, 129, 159, 161, 257,
                                                              319, 321, 511, 513]).filter(lambda x: x <= max_k)))
    n = CODE_VALUE[name][0]
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mode = draw(st.sampled_from(["random", "const", "random"]))
    if mode == "const":
        codes = np.full(lead + (k,), draw(st.integers(0, n - 1)), dtype=np.int64)
    else:
        codes = rng.integers(0, n, size=lead + (k,))
    return codes


def test_packings_are_the_documented_ones():
    assert {p: set(PACKINGS[p].dtypes) for p in PACKINGS} == DOC_TYPES
    for p, types in DOC_TYPES.items():
        for name in LOW_BIT:
            assert PACKINGS[p].accepts(DTYPES[name]) == (name in types)
    for name in LOW_BIT:
        assert {p.name for p in packings_for(DTYPES[name])} == {p for p, t in DOC_TYPES.items() if name in t}


# -- round trips --------------------------------------------------------------------------------------

@pytest.mark.parametrize("packing,name", PAIRS)
def test_round_trip(packing, name):
    p, dt = PACKINGS[packing], DTYPES[name]

    @SETTINGS
    @given(code_tensors(name))
    def check(codes):
        v = values_of(codes, name)
        s = p.pack(v, dt)
        assert s.dtype == np.uint8
        assert s.shape == p.storage_shape(v.shape, dt)
        assert s.shape == v.shape[:-1] + (expected_row_bytes(packing, v.shape[-1], dt.bits),)
        assert s.shape == TensorType(dt, v.shape, packing).storage_shape
        u = p.unpack(s, v.shape, dt)
        assert u.dtype == v.dtype
        assert u.shape == v.shape
        np.testing.assert_array_equal(bits_of(u), bits_of(v))

    check()


def test_fp4_negative_zero_survives_every_packing():
    dt = DTYPES["fp4"]
    v = np.array([-0.0, 0.0, -0.0, -6.0, 6.0, -0.5, -0.0], dtype=np.float32).astype(ml_dtypes.float4_e2m1fn)
    for p in packings_for(dt):
        u = p.unpack(p.pack(v, dt), v.shape, dt)
        np.testing.assert_array_equal(bits_of(u), bits_of(v))
        assert np.signbit(u.astype(np.float32)).tolist() == [True, False, True, True, False, True, True]


# -- byte layouts -------------------------------------------------------------------------------------

@pytest.mark.parametrize("packing,name", PAIRS)
def test_layout_matches_docstring(packing, name):
    p, dt = PACKINGS[packing], DTYPES[name]

    @SETTINGS
    @given(code_tensors(name, max_k=340, max_rank=2))
    def check(codes):
        v = values_of(codes, name)
        np.testing.assert_array_equal(p.pack(v, dt), ref_pack(packing, name, codes))

    check()


HAND = [
    # (packing, type, values, expected bytes)
    ("nib", "u4", [1, 2, 3], [0x21, 0x03]),
    ("nib", "i4", [-1, 7, -8], [0x7F, 0x08]),
    ("nib", "nf4", [15, 0, 3], [0x0F, 0x73]),  # padding holds nf4's 0.0, code 7
    ("nib", "fp4", [-0.0, 6.0, -6.0], [0x78, 0x0F]),
    ("crumb", "u2", [1, 2, 3, 0, 3], [0x39, 0x03]),
    ("crumb", "i2", [-1, -2, 0, 1], [0x4B]),
    ("crumb", "ternary", [-1, 0, 1], [0x64]),  # codes 0, 1, 2 and the padding's code 1
    ("bit", "u1", [1, 0, 1, 1, 0, 0, 0, 0, 1], [0x0D, 0x01]),
    ("bit", "i1", [-1, 1, 1], [0x06]),
    ("planes", "u2", [3, 1, 2, 0], [0x03, 0x05]),
    ("planes", "i2", [-2, -1, 0, 1], [0x0A, 0xFC]),  # padding holds 0 = offset 2: plane 1 bits set
    ("planes", "ternary", [-1, 0, 1, 0, 1, 1, -1, 0], [0x8A, 0x34]),
    ("planes", "i1", [-1, 1, 1, -1, -1, -1, 1, -1, 1], [0x46, 0x01]),
    ("planes", "u4", [15, 0, 9], [0x05, 0x01, 0x01, 0x05]),
    ("planes", "i4", [-8, 7, 0], [0x02, 0x02, 0x02, 0xFE]),  # padding: 0 = offset 8
]


@pytest.mark.parametrize("packing,name,vals,want", HAND)
def test_hand_written_bytes(packing, name, vals, want):
    dt = DTYPES[name]
    npd = CODE_VALUE[name][2]
    v = np.array(vals, dtype=np.float32 if name == "fp4" else np.int64).astype(npd)
    s = PACKINGS[packing].pack(v, dt)
    assert s.tolist() == want
    np.testing.assert_array_equal(bits_of(PACKINGS[packing].unpack(s, v.shape, dt)), bits_of(v))


def test_nib16_is_q4_0_order():
    dt = DTYPES["u4"]
    v = (np.arange(32) % 16).astype(ml_dtypes.uint4)  # c[j] = j, c[j+16] = j
    assert PACKINGS["nib16"].pack(v, dt).tolist() == [j | j << 4 for j in range(16)]
    v = np.array([1] * 16 + [2] * 16 + [3] * 16 + [4] * 16, dtype=np.int64).astype(ml_dtypes.uint4)
    assert PACKINGS["nib16"].pack(v, dt).tolist() == [0x21] * 16 + [0x43] * 16
    assert PACKINGS["nib32"].pack(v, dt).tolist() == [0x31] * 16 + [0x42] * 16


@pytest.mark.parametrize("b", [16, 32, 64])
def test_crumb_blocks_are_i2_s_order(b):
    dt = DTYPES["u2"]
    v = (np.arange(4 * b) // b).astype(ml_dtypes.uint2)  # quarter q of the block holds q
    assert PACKINGS[f"crumb{b}"].pack(v, dt).tolist() == [0 << 6 | 1 << 4 | 2 << 2 | 3] * b  # 0x1B
    # the same values in the plain crumb order
    assert PACKINGS["crumb"].pack(v, dt).tolist() == [0x00] * (b // 4) + [0x55] * (b // 4) + \
        [0xAA] * (b // 4) + [0xFF] * (b // 4)


def test_trit5_constant_blocks():
    dt, p = DTYPES["ternary"], PACKINGS["trit5"]
    for val, byte in ((-1, 0), (0, 128), (1, 255)):
        v = np.full((160,), val, np.int8)
        assert p.pack(v, dt).tolist() == [byte] * 32


def _decode_trits(byte: int) -> list[int]:
    return [((byte * 3**n) % 256) * 3 >> 8 for n in range(5)]


def test_trit5_all_243_combinations():
    dt, p = DTYPES["ternary"], PACKINGS["trit5"]
    combos = list(itertools.product(range(3), repeat=5))
    assert len(combos) == 243
    seen = set()
    # Eight blocks of 32 bytes cover the 243 combinations (the last block repeats a few).
    padded = combos + combos[: 256 - 243]
    for blk in range(8):
        chunk = padded[blk * 32:(blk + 1) * 32]
        t = np.zeros(160, dtype=np.int64)
        for m, trits in enumerate(chunk):
            for n in range(5):
                t[m + 32 * n] = trits[n]
        v = (t - 1).astype(np.int8)
        s = p.pack(v, dt)
        for m, trits in enumerate(chunk):
            q = sum(trits[n] * 3 ** (4 - n) for n in range(5))
            assert int(s[m]) == math.ceil(256 * q / 243) == -(-256 * q // 243)
            assert _decode_trits(int(s[m])) == list(trits)  # the documented decode is exact
            seen.add(int(s[m]))
        np.testing.assert_array_equal(p.unpack(s, (160,), dt), v)
    assert len(seen) == 243  # every combination gets its own byte


def test_tq1_is_gguf_tq1_0_byte_for_byte():
    """tq1+f16 against gguf-py's TQ1_0 quantizer (what writes GGUF files): ternary values times a per-block d
    exactly representable in f16, every block holding a nonzero (gguf takes d = max |x| as the scale)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize
    p, dt = get_packing("tq1+f16"), DTYPES["ternary"]
    rng = np.random.default_rng(17)
    for rows, blocks in ((1, 1), (3, 4)):
        v = (rng.integers(0, 3, (rows, 256 * blocks)) - 1).astype(np.int8)
        v[:, 255::256] = rng.choice([-1, 1], (rows, blocks))  # a nonzero in every block (in its 4-trit chunk)
        d = rng.choice([0.125, 0.5, 1.0, 1.5, 3.0, 2.0 ** -7, 1024.0], (rows, blocks)).astype(np.float16)
        x = v.astype(np.float32) * np.repeat(d.astype(np.float32), 256, axis=-1)
        storage = p.pack(v, dt, d)
        assert storage.shape == (rows, 54 * blocks)
        assert storage.tobytes() == quantize(x, GGMLQuantizationType.TQ1_0).tobytes()
        np.testing.assert_array_equal(p.unpack(storage, v.shape, dt), v)
        np.testing.assert_array_equal(p.unpack_scales(storage, v.shape)[0].view(np.uint16), d.view(np.uint16))


@pytest.mark.parametrize("packing", sorted(PACKINGS))
def test_packing_works_on_last_axis_only(packing):
    p = PACKINGS[packing]
    name = sorted(p.dtypes)[0]
    dt = DTYPES[name]
    rng = np.random.default_rng(7)
    codes = rng.integers(0, CODE_VALUE[name][0], size=(2, 3, 37))
    v = values_of(codes, name)
    s = p.pack(v, dt)
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(s[i, j], p.pack(v[i, j], dt))


# -- padding -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("packing,name", PAIRS)
def test_padding_holds_the_code_of_zero(packing, name):
    p, dt = PACKINGS[packing], DTYPES[name]
    n = CODE_VALUE[name][0]
    full = p.block  # the whole first block
    for k in sorted({1, 2, 3, full - 1, full + 1} - {0}):
        if k >= 2 * full or k % full == 0:
            continue
        codes = np.full((2, k), n - 1)  # a nonzero code in every real position
        v = values_of(codes, name)
        s = p.pack(v, dt)
        kp = -(-k // full) * full
        assert p.storage_shape((2, kp), dt) == s.shape
        whole = p.unpack(s, (2, kp), dt)
        np.testing.assert_array_equal(bits_of(whole[:, :k]), bits_of(v))
        pad = whole[:, k:]
        if ZERO_CODE[name] is None:  # i1 has no 0: code 0 (-1)
            assert (pad.astype(np.int64) == -1).all()
        elif name == "nf4":
            assert (pad == 7).all()  # NF4_VALUES[7] == 0.0
        else:
            pf = pad.astype(np.float32)
            assert (pf == 0).all() and not np.signbit(pf).any()


# -- sizes -------------------------------------------------------------------------------------------

BPW = {"nib": 4.0, "nib16": 4.0, "nib32": 4.0, "nib64": 4.0, "crumb": 2.0, "crumb16": 2.0, "crumb32": 2.0,
       "crumb64": 2.0, "tq2": 2.0, "q4": 4.0, "q8": 8.0, "trit5": 1.6, "tq1": 1.625,
       "bit": 1.0}


@pytest.mark.parametrize("packing,name", PAIRS)
def test_bits_per_weight(packing, name):
    p, dt = PACKINGS[packing], DTYPES[name]
    want = dt.bits if packing == "planes" else BPW[packing]
    assert p.bits_per_weight(dt) == pytest.approx(want)
    assert p.bits_per_weight(dt, k=8 * p.block) == pytest.approx(want)
    # a partial block still pays for the whole block
    assert p.bits_per_weight(dt, k=1) == pytest.approx(8 * expected_row_bytes(packing, 1, dt.bits))


def test_storage_shape_rank_zero_is_an_error():
    for p in PACKINGS.values():
        dt = DTYPES[sorted(p.dtypes)[0]]
        with pytest.raises(LadderError):
            p.storage_shape((), dt)


# -- codes ---------------------------------------------------------------------------------------------

PACKABLE = sorted(set().union(*(p.dtypes for p in PACKINGS.values())))


def test_packable_types_are_the_low_bit_ones():
    """Every low-bit type, and i8 only as Q8_0's blocks (q8, whose one type it is)."""
    assert set(PACKABLE) == set(LOW_BIT) | {"i8"}
    assert [p.name for p in PACKINGS.values() if "i8" in p.dtypes] == ["q8"]


@pytest.mark.parametrize("name", PACKABLE)
def test_codes_round_trip_and_follow_encode_order(name):
    dt = DTYPES[name]
    n = CODE_VALUE[name][0]
    codes = np.arange(n, dtype=np.uint8)
    ref = values_of(codes, name)
    vals = from_codes(codes, dt)
    assert vals.dtype == dt.np_dtype
    np.testing.assert_array_equal(bits_of(vals), bits_of(ref))
    np.testing.assert_array_equal(to_codes(vals, dt), codes)
    np.testing.assert_array_equal(to_codes(ref, dt), codes)
    assert to_codes(vals, dt).dtype == np.uint8
    # The type's own code table, in code order, gives the same values.
    floats = dt.to_values(vals)
    table = np.asarray(dt.table, dtype=np.float32)[:n]
    np.testing.assert_array_equal(floats, table)
    np.testing.assert_array_equal(np.signbit(floats), np.signbit(table))
    enc = dt.encode(floats)
    if name == "fp4":  # encode maps -0.0 to the first zero, code 0; every other code is its own
        assert int(enc[8]) == 0
        keep = codes != 8
        np.testing.assert_array_equal(enc[keep], codes[keep])
    else:
        np.testing.assert_array_equal(enc, codes)
    # from_codes inverts to_codes on a random tensor too
    rng = np.random.default_rng(3)
    c = rng.integers(0, n, size=(3, 17)).astype(np.uint8)
    np.testing.assert_array_equal(to_codes(from_codes(c, dt), dt), c)


def test_to_codes_rejects_wide_types():
    with pytest.raises(LadderError):
        to_codes(np.zeros(3, np.float32), DTYPES["f32"])


# -- errors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("packing", sorted(PACKINGS))
def test_pack_rejects_types_it_does_not_hold(packing):
    p = PACKINGS[packing]
    for name in LOW_BIT + ("f32", "i8", "u8"):
        if name in p.dtypes:
            continue
        dt = DTYPES[name]
        with pytest.raises(LadderError, match=packing):
            p.pack(np.zeros((2, 16), dtype=dt.np_dtype), dt)


@pytest.mark.parametrize("packing,name", PAIRS)
def test_unpack_rejects_storage_of_the_wrong_shape(packing, name):
    p, dt = PACKINGS[packing], DTYPES[name]
    shape = (3, 200)
    s = p.pack(values_of(np.zeros(shape, np.int64), name), dt)
    rb = s.shape[-1]
    for bad in [np.zeros((3, rb + 1), np.uint8), np.zeros((3, rb - 1), np.uint8), np.zeros((2, rb), np.uint8),
                np.zeros((rb,), np.uint8), np.zeros((1, 3, rb), np.uint8)]:
        with pytest.raises(LadderError):
            p.unpack(bad, shape, dt)
    with pytest.raises(LadderError):
        p.unpack(s, (), dt)


def test_get_packing_unknown():
    with pytest.raises(LadderError, match="nib"):
        get_packing("nib8")
    assert get_packing("crumb32") is PACKINGS["crumb32"]


def test_tensor_type_layout_errors():
    with pytest.raises(LadderError):
        TensorType(DTYPES["ternary"], (4, 256), "crumb17")
    with pytest.raises(LadderError):
        TensorType(DTYPES["ternary"], (4, 256), "nib32")
    with pytest.raises(LadderError):
        TensorType(DTYPES["f32"], (4, 256), "nib")
    with pytest.raises(LadderError):
        TensorType(DTYPES["u4"], (), "nib")
    with pytest.raises(LadderError):
        tensor_type("ternary<bogus>[4, 256]")
    with pytest.raises(LadderError):
        tensor_type("i4<trit5>[4, 256]")


def test_tensor_type_with_layout_parses_and_prints():
    t = tensor_type("ternary<crumb32>[4, 256]")
    assert t.dtype is DTYPES["ternary"] and t.shape == (4, 256) and t.layout == "crumb32"
    assert t.packing is PACKINGS["crumb32"]
    assert str(t) == "ternary<crumb32>[4, 256]"
    assert tensor_type(str(t)) == t
    assert t.storage_shape == (4, 64)
    assert t.storage_np_dtype == np.uint8
    assert t.logical == TensorType(DTYPES["ternary"], (4, 256))
    assert t.logical.layout is None and t.logical.storage_shape == (4, 256)
    note = t.storage_note()
    assert "u8[4, 64]" in note and "2.00 bits/weight" in note
    assert t.logical.storage_note() == ""
    for spec, storage in [("i4<nib>[3, 5]", (3, 3)), ("ternary<trit5>[2, 161]", (2, 64)),
                          ("u2<planes>[7]", (2,)), ("i1<bit>[2, 2, 9]", (2, 2, 2))]:
        t = tensor_type(spec)
        assert str(t) == spec and t.storage_shape == storage
    assert "1.60 bits/weight" in tensor_type("ternary<trit5>[1, 320]").storage_note()


def test_pack_and_unpack_ops():
    t = TensorType(DTYPES["ternary"], (2, 300))
    (packed_t,) = OPS["pack"].infer([t], {"layout": "crumb32"})
    assert packed_t == TensorType(DTYPES["ternary"], (2, 300), "crumb32")
    assert OPS["unpack"].infer([packed_t], {}) == [t]
    rng = np.random.default_rng(1)
    v = (rng.integers(0, 3, size=(2, 300)) - 1).astype(np.int8)
    (s,) = OPS["pack"].compute([v], {"layout": "crumb32"}, [packed_t], [t])
    assert s.shape == packed_t.storage_shape == (2, 96)
    (u,) = OPS["unpack"].compute([s], {}, [t], [packed_t])
    np.testing.assert_array_equal(u, v)
    with pytest.raises(InferError, match="nib"):
        OPS["pack"].infer([t], {"layout": "nib"})
    with pytest.raises(InferError):
        OPS["unpack"].infer([t], {})


# -- bugs ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("packing", sorted(PACKINGS))
def test_empty_last_axis_round_trips(packing):
    p = PACKINGS[packing]
    dt = DTYPES[sorted(p.dtypes)[0]]
    v = np.zeros((2, 0), dtype=dt.np_dtype)
    s = p.pack(v, dt)
    assert s.shape == p.storage_shape((2, 0), dt) == (2, 0)
    assert p.unpack(s, (2, 0), dt).shape == (2, 0)
