"""Element types (ladder.types): widths, signedness, value sets, codes, range checks, storage and parsing."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ladder
from ladder import DTYPES, TensorType, TypeRangeError, tensor_type
from ladder.types import dtype

SETTINGS = settings(max_examples=50, deadline=None)

NF4 = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0)
FP4_POS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]

# name: (bits, signed, numpy dtype in memory, storage dtype, ascending values or None)
EXPECTED = {
    "f32": (32, True, np.float32, np.float32, None),
    "f16": (16, True, np.float16, np.float16, None),
    "bf16": (16, True, ml_dtypes.bfloat16, np.uint16, None),
    "fp8e4m3": (8, True, ml_dtypes.float8_e4m3fn, np.uint8, "fp8"),
    "fp4": (4, True, ml_dtypes.float4_e2m1fn, np.uint8, sorted({-v for v in FP4_POS} | set(FP4_POS))),
    "i32": (32, True, np.int32, np.int32, None),
    "i16": (16, True, np.int16, np.int16, None),
    "i8": (8, True, np.int8, np.int8, list(range(-128, 128))),
    "u8": (8, False, np.uint8, np.uint8, list(range(256))),
    "i4": (4, True, ml_dtypes.int4, np.int8, list(range(-8, 8))),
    "u4": (4, False, ml_dtypes.uint4, np.uint8, list(range(16))),
    "i2": (2, True, ml_dtypes.int2, np.int8, [-2, -1, 0, 1]),
    "u2": (2, False, ml_dtypes.uint2, np.uint8, [0, 1, 2, 3]),
    "u1": (1, False, ml_dtypes.uint1, np.uint8, [0, 1]),
    "i1": (1, True, np.int8, np.int8, [-1, 1]),
    "ternary": (2, True, np.int8, np.int8, [-1, 0, 1]),
    "nf4": (4, True, np.uint8, np.uint8, sorted(NF4)),
}
SMALL = [n for n, e in EXPECTED.items() if e[0] <= 8]


def test_dtypes_are_exactly_the_documented_set():
    assert list(DTYPES) == list(EXPECTED)
    for name, t in DTYPES.items():
        assert t.name == name and str(t) == name and dtype(name) is t and dtype(t) is t
        assert getattr(ladder.types, name) is t


@pytest.mark.parametrize("name", list(EXPECTED))
def test_bits_signedness_np_dtype(name):
    bits, signed, np_dt, storage, _ = EXPECTED[name]
    t = DTYPES[name]
    assert t.bits == bits
    assert t.signed is signed
    assert t.np_dtype == np.dtype(np_dt)
    assert t.storage_dtype == np.dtype(storage)
    assert t.is_low_bit == (bits < 8)
    assert t.is_float == (name in ("f32", "f16", "bf16", "fp8e4m3", "fp4"))
    assert t.is_integer == (name in ("i32", "i16", "i8", "u8", "i4", "u4", "i2", "u2", "u1", "i1", "ternary"))


@pytest.mark.parametrize("name", list(EXPECTED))
def test_values_and_range(name):
    t = DTYPES[name]
    want = EXPECTED[name][4]
    if want is None:
        assert t.values is None
        info = ml_dtypes.finfo(t.np_dtype) if t.is_float else np.iinfo(t.np_dtype)
        assert t.value_range == (float(info.min), float(info.max))
        return
    if want == "fp8":
        vals = t.values
        assert len(vals) == 253  # 256 codes less two NaNs and the duplicate zero
        assert vals[0] == -448.0 and vals[-1] == 448.0 and 0.001953125 in vals  # smallest subnormal 2^-9
        assert list(vals) == sorted(vals)
    else:
        assert list(t.values) == [float(v) for v in want]
        assert len(t.values) <= 2 ** t.bits
    assert t.value_range == (t.values[0], t.values[-1])


def test_nf4_table_is_qlora_and_symmetric_ends():
    t = DTYPES["nf4"]
    np.testing.assert_array_equal(t.decode(np.arange(16)), np.array(NF4, np.float32))
    assert t.decode(np.array([7]))[0] == 0.0 and t.kind == "table"


@pytest.mark.parametrize("name", SMALL)
def test_every_code_decodes_and_encodes_back(name):
    t = DTYPES[name]
    n = 2 ** t.bits
    ncodes = min(n, len(t.table))
    codes = np.arange(ncodes, dtype=np.uint8)
    vals = t.decode(codes)
    assert vals.dtype == np.float32 and vals.shape == (ncodes,)
    ok = ~np.isnan(vals)
    back = t.encode(vals[ok])
    assert back.dtype == np.uint8
    # decode(encode(v)) == v for every value; the code itself comes back except for a second zero (-0.0)
    np.testing.assert_array_equal(t.decode(back), vals[ok])
    same = back == codes[ok]
    dup = codes[ok][~same]
    assert all(vals[c] == 0.0 and math.copysign(1, vals[c]) < 0 for c in dup), dup
    if name in ("fp8e4m3", "fp4"):
        assert len(dup) == 1
        assert np.isnan(vals).sum() == (2 if name == "fp8e4m3" else 0)
    else:
        assert len(dup) == 0


@pytest.mark.parametrize("name,code_values", [
    ("i4", {0: 0, 7: 7, 8: -8, 15: -1}),
    ("i2", {0: 0, 1: 1, 2: -2, 3: -1}),
    ("u2", {0: 0, 3: 3}),
    ("i1", {0: -1, 1: 1}),
    ("ternary", {0: -1, 1: 0, 2: 1}),
    ("fp4", {1: 0.5, 7: 6.0, 9: -0.5, 15: -6.0}),
    ("fp8e4m3", {0x38: 1.0, 0x7E: 448.0, 0xFE: -448.0, 0x01: 2.0 ** -9}),
    ("i8", {0x80: -128, 0xFF: -1}),
])
def test_code_order(name, code_values):
    t = DTYPES[name]
    codes = np.array(list(code_values), np.uint8)
    assert t.decode(codes).tolist() == [float(v) for v in code_values.values()]
    assert t.encode(np.array(list(code_values.values()), np.float32)).tolist() == list(code_values)


def test_decode_unused_ternary_code_is_a_ladder_error():
    with pytest.raises(ladder.LadderError):
        DTYPES["ternary"].decode(np.array([3], np.uint8))


@pytest.mark.parametrize("name,value", [("ternary", 2.0), ("i4", 9.0), ("i1", 0.0), ("u2", -1.0), ("fp4", 5.0),
                                        ("nf4", 0.5)])
def test_encode_rejects_unrepresentable(name, value):
    with pytest.raises(TypeRangeError, match=name):
        DTYPES[name].encode(np.array([0.0 if name != "i1" else 1.0, value], np.float32))


def test_wide_types_have_no_code_table():
    for name in ("f32", "f16", "bf16", "i32", "i16"):
        with pytest.raises(ladder.LadderError, match="code table"):
            DTYPES[name].decode(np.array([0]))
        with pytest.raises(ladder.LadderError, match="code table"):
            DTYPES[name].encode(np.array([0.0]))


@st.composite
def values_of(draw, name):
    vals = DTYPES[name].values
    xs = draw(st.lists(st.sampled_from(vals), min_size=0, max_size=20))
    return np.array(xs, np.float32)


@pytest.mark.parametrize("name", SMALL)
def test_value_round_trip_hypothesis(name):
    @SETTINGS
    @given(values_of(name))
    def check(v):
        t = DTYPES[name]
        codes = t.encode(v)
        assert codes.shape == v.shape
        assert np.all(codes < 2 ** t.bits)
        np.testing.assert_array_equal(t.decode(codes), v)
        # every listed value is in range (nf4 tensors hold codes, so its check is on the codes)
        t.check(codes if t.kind == "table" else v, "v")
    check()


# -- check --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,arr,bad", [
    ("ternary", np.array([0, 1, 2, -1], np.int8), 2),
    ("i4", np.array([[1, 2], [9, 0]], np.int8), 9),
    ("i4", np.array([-9], np.int32), -9),
    ("i1", np.array([1, 0, -1], np.int8), 0),
    ("nf4", np.array([3, 16], np.uint8), 16),
    ("u4", np.array([16], np.int64), 16),
    ("u1", np.array([0, 2], np.uint8), 2),
    ("i2", np.array([-3], np.int8), -3),
    ("u8", np.array([-1], np.int16), -1),
    ("i8", np.array([128], np.int32), 128),
    ("i8", np.array([2.5], np.float32), 2.5),
    ("i16", np.array([40000], np.int32), 40000),
])
def test_check_rejects_out_of_range_naming_the_tensor(name, arr, bad):
    with pytest.raises(TypeRangeError) as ei:
        DTYPES[name].check(arr, "weight @blk.0.w")
    msg = str(ei.value)
    assert "weight @blk.0.w" in msg and name in msg and str(bad) in msg
    assert isinstance(ei.value, ladder.LadderError)


@pytest.mark.parametrize("name,arr", [
    ("ternary", np.array([-1, 0, 1], np.int8)),
    ("i4", np.array([-8, 7], np.int8)),
    ("i1", np.array([-1, 1], np.int8)),
    ("nf4", np.arange(16, dtype=np.uint8)),
    ("i8", np.array([3.0, -128.0], np.float32)),
    ("u1", np.array([0, 1], np.uint8)),
    ("f16", np.array([np.inf, np.nan], np.float16)),
    ("i4", np.zeros((0, 3), np.int8)),
])
def test_check_accepts_in_range(name, arr):
    DTYPES[name].check(arr, "x")


def test_check_reports_the_first_bad_index():
    with pytest.raises(TypeRangeError, match=r"index \[1, 0\]"):
        DTYPES["ternary"].check(np.array([[0, 1], [5, 7]], np.int8), "t")


# -- storage ------------------------------------------------------------------------------------------

def _valid_sample(name, rng):
    t = DTYPES[name]
    if t.kind == "table":
        return rng.integers(0, 16, (3, 5)).astype(np.uint8)
    if t.values is not None:
        vals = np.array([v for v in t.values], np.float32)
        return vals[rng.integers(0, len(vals), (3, 5))].astype(t.np_dtype)
    if t.is_float:
        return rng.standard_normal((3, 5)).astype(np.float32).astype(t.np_dtype)
    info = np.iinfo(t.np_dtype)
    return rng.integers(info.min, info.max, (3, 5), endpoint=True).astype(t.np_dtype)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_storage_round_trip(name):
    t = DTYPES[name]
    arr = _valid_sample(name, np.random.default_rng(7))
    stored = t.to_storage(arr)
    assert stored.dtype == t.storage_dtype and stored.shape == arr.shape
    back = t.from_storage(stored, "w")
    assert back.dtype == t.np_dtype
    np.testing.assert_array_equal(back.astype(np.float32), arr.astype(np.float32))
    if name == "bf16":
        assert np.array_equal(stored, arr.view(np.uint16))
    if name == "fp4":  # stored as its 4-bit codes
        assert stored.max() < 16
        np.testing.assert_array_equal(t.decode(stored), arr.astype(np.float32))


def test_storage_forms_of_low_bit_signed_types_are_values():
    assert DTYPES["i1"].to_storage(np.array([-1, 1], np.int8)).tolist() == [-1, 1]
    assert DTYPES["ternary"].to_storage(np.array([-1, 0, 1], np.int8)).tolist() == [-1, 0, 1]
    assert DTYPES["i4"].to_storage(np.array([-8, 7], ml_dtypes.int4)).tolist() == [-8, 7]


@pytest.mark.parametrize("name,arr", [
    ("ternary", np.array([2], np.int8)),
    ("i4", np.array([9], np.int8)),
    ("i1", np.array([0], np.int8)),
    ("nf4", np.array([16], np.uint8)),
    ("fp4", np.array([16], np.uint8)),
    ("u2", np.array([4], np.uint8)),
])
def test_from_storage_rejects_out_of_range(name, arr):
    with pytest.raises(TypeRangeError, match="weight @w"):
        DTYPES[name].from_storage(arr, "weight @w")


@SETTINGS
@given(st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=16))
def test_float_storage_round_trip_hypothesis(xs):
    for name in ("f32", "f16", "bf16", "fp8e4m3"):
        t = DTYPES[name]
        arr = np.array(xs, np.float32)
        if t.bits <= 8:
            lo, hi = t.value_range
            arr = np.clip(arr, lo, hi)
        with np.errstate(over="ignore"):
            arr = arr.astype(t.np_dtype)  # f32 values beyond f16's range become inf
        back = t.from_storage(t.to_storage(arr), "w")
        assert back.dtype == t.np_dtype
        # bit exact (including -0.0 and infinities)
        assert back.tobytes() == arr.tobytes()


@SETTINGS
@given(st.sampled_from(["i32", "i16", "i8", "u8", "i4", "u4", "i2", "u2", "u1", "i1", "ternary", "nf4"]),
       st.data())
def test_integer_storage_round_trip_hypothesis(name, data):
    t = DTYPES[name]
    if t.kind == "table":
        vals = list(range(16))
    elif t.values is not None:
        vals = [int(v) for v in t.values]
    else:
        info = np.iinfo(t.np_dtype)
        vals = None
    if vals is None:
        xs = data.draw(st.lists(st.integers(int(info.min), int(info.max)), max_size=16))
    else:
        xs = data.draw(st.lists(st.sampled_from(vals), max_size=16))
    arr = np.array(xs, dtype=np.int64).astype(t.np_dtype)
    stored = t.to_storage(arr)
    assert stored.dtype == t.storage_dtype
    assert stored.astype(np.int64).tolist() == xs
    back = t.from_storage(stored, "w")
    assert back.dtype == t.np_dtype and back.astype(np.int64).tolist() == xs


# -- tensor types -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,name,shape", [
    ("f32[2, 3]", "f32", (2, 3)),
    ("ternary[6912,2560]", "ternary", (6912, 2560)),
    ("  nf4 [ 4 ]  ", "nf4", (4,)),
    ("i8[]", "i8", ()),
    ("u1[0, 5]", "u1", (0, 5)),
])
def test_tensor_type_parsing(text, name, shape):
    t = tensor_type(text)
    assert t == TensorType(DTYPES[name], shape)
    assert t.dtype is DTYPES[name] and t.shape == shape and t.rank == len(shape)
    assert t.size == math.prod(shape)
    assert tensor_type(str(t)) == t
    assert str(t) == f"{name}[{', '.join(map(str, shape))}]"


def test_tensor_type_other_forms():
    t = tensor_type("i4", [2, 3])
    assert t == tensor_type("i4[2, 3]") and tensor_type(t) is t
    assert t.with_dtype("u4") == tensor_type("u4[2, 3]") and t.with_shape([6]) == tensor_type("i4[6]")
    assert tensor_type("f32[]").size == 1


@pytest.mark.parametrize("text,match", [
    ("f32", "not a tensor type"),
    ("f32[2, 3", "not a tensor type"),
    ("f32[a]", "not a tensor type"),
    ("f32[2.5]", "not a tensor type"),
    ("f32[2][3]", "not a tensor type"),
    ("f32[2]x", "not a tensor type"),
    ("f32[-1]", "negative"),
    ("f64[2]", "unknown element type 'f64'"),
    ("[2]", "unknown element type"),
])
def test_tensor_type_errors(text, match):
    with pytest.raises(ladder.LadderError, match=match):
        tensor_type(text)


def test_tensor_type_rejects_empty_dimension():
    with pytest.raises(ladder.LadderError):
        tensor_type("f32[2,,3]")


def test_unknown_dtype_lists_known_names():
    with pytest.raises(ladder.LadderError) as ei:
        dtype("int3")
    assert "int3" in str(ei.value) and "ternary" in str(ei.value) and "nf4" in str(ei.value)


@pytest.mark.parametrize("name", ["ternary", "i1", "i2", "u2", "i4", "u4", "u1", "nf4", "i8", "u8"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_range_check_of_integer_arrays_names_the_first_bad_value(name, data):
    """check decides from min and max (one pass, no copy); a bad value is still named with its index."""
    dt = DTYPES[name]
    lo, hi = (0, 2**dt.bits - 1) if dt.kind == "table" else dt.value_range
    store = data.draw(st.sampled_from([np.int8, np.int16, np.uint8, np.int64]))
    info = np.iinfo(store)
    vals = data.draw(st.lists(st.integers(max(info.min, -300), min(info.max, 300)), min_size=1, max_size=40))
    arr = np.asarray(vals, store)
    legal = set(range(int(lo), int(hi) + 1)) - ({0} if dt.kind == "binary" else set())
    bad = [i for i, v in enumerate(vals) if v not in legal]
    if not bad:
        dt.check(arr, "w")
        return
    with pytest.raises(TypeRangeError, match=rf"w holds .*{vals[bad[0]]}\)? at index \[{bad[0]}\]"):
        dt.check(arr, "w")
