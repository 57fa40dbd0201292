"""Weights: safetensors round trips for every element type, ``bind`` errors, seeded random weights."""

from __future__ import annotations

import numpy as np
import pytest

import ladder
from ladder import Builder, weights
from ladder.types import DTYPES

ALL = list(DTYPES)

# What a weights file holds for each type (README: low-bit unpacked one value per byte; bf16 as uint16 bits).
STORAGE = {
    "f32": np.float32, "f16": np.float16, "bf16": np.uint16, "fp8e4m3": np.uint8, "fp4": np.uint8,
    "i32": np.int32, "i16": np.int16, "i8": np.int8, "u8": np.uint8,
    "i4": np.int8, "i2": np.int8, "i1": np.int8, "ternary": np.int8,
    "u4": np.uint8, "u2": np.uint8, "u1": np.uint8, "nf4": np.uint8,
}


def graph_with(params: dict[str, str], name: str = "g") -> ladder.Graph:
    b = Builder(name)
    x = b.input("x", "f32[2]")
    for ref, t in params.items():
        b.param(ref, t)
    return b.build(x)


def one_param(t: str, ref: str = "w") -> ladder.Graph:
    return graph_with({ref: t})


def as_f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.float32)


def test_storage_table_covers_every_dtype():
    assert set(STORAGE) == set(DTYPES)


@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip_each_dtype(tmp_path, name):
    g = one_param(f"{name}[3, 5]")
    w = weights.random(g, seed=7)
    path = tmp_path / "w.safetensors"
    weights.save(path, g, w)

    raw = weights.load(path)
    assert set(raw) == {"w"}
    assert raw["w"].dtype == np.dtype(STORAGE[name]), f"{name} stored as {raw['w'].dtype}"
    assert raw["w"].shape == (3, 5)

    bound = weights.bind(g, raw)
    assert bound["w"].dtype == DTYPES[name].np_dtype
    assert bound["w"].shape == (3, 5)
    np.testing.assert_array_equal(as_f32(bound["w"]), as_f32(w["w"]))


def test_save_load_all_dtypes_in_one_file(tmp_path):
    g = graph_with({f"p.{n}": f"{n}[4]" for n in ALL})
    w = weights.random(g, seed=3)
    path = tmp_path / "all.safetensors"
    weights.save(path, g, w)
    bound = weights.bind(g, weights.load(path))
    assert set(bound) == set(w)
    for ref in w:
        assert bound[ref].dtype == w[ref].dtype, ref
        np.testing.assert_array_equal(as_f32(bound[ref]), as_f32(w[ref]), err_msg=ref)


def test_storage_values_are_the_values_for_low_bit_ints(tmp_path):
    # Unpacked means the stored byte is the value itself (-1/0/+1 for ternary, -8..7 for i4), not a code.
    g = graph_with({"t": "ternary[3]", "q": "i4[3]", "u": "u2[3]", "b": "i1[2]"})
    w = {"t": np.array([-1, 0, 1], np.int8), "q": np.array([-8, 0, 7], np.int8),
         "u": np.array([0, 2, 3], np.uint8), "b": np.array([-1, 1], np.int8)}
    path = tmp_path / "w.safetensors"
    weights.save(path, g, w)
    raw = weights.load(path)
    np.testing.assert_array_equal(raw["t"], [-1, 0, 1])
    np.testing.assert_array_equal(raw["q"], [-8, 0, 7])
    np.testing.assert_array_equal(raw["u"], [0, 2, 3])
    np.testing.assert_array_equal(raw["b"], [-1, 1])


def test_file_written_by_safetensors_directly_binds(tmp_path):
    from safetensors.numpy import save_file

    g = graph_with({"t": "ternary[2, 2]", "s": "f32[1]"})
    path = tmp_path / "w.safetensors"
    save_file({"t": np.array([[1, -1], [0, 1]], np.int8), "s": np.array([0.5], np.float32)}, str(path))
    bound = weights.bind(g, weights.load(path))
    np.testing.assert_array_equal(bound["t"], [[1, -1], [0, 1]])
    np.testing.assert_array_equal(bound["s"], [0.5])


# -- bind errors ------------------------------------------------------------------------------------

def test_missing_param_names_it_and_its_type():
    g = graph_with({"present": "f32[2]", "blocks.0.w": "ternary[4, 8]"})
    with pytest.raises(ladder.WeightsError) as ei:
        weights.bind(g, {"present": np.zeros(2, np.float32)})
    msg = str(ei.value)
    assert "@blocks.0.w" in msg
    assert "ternary[4, 8]" in msg
    assert "@present" not in msg


def test_wrong_shape_names_param_and_shapes():
    g = one_param("f32[2, 3]", "proj")
    with pytest.raises(ladder.WeightsError) as ei:
        weights.bind(g, {"proj": np.zeros((3, 2), np.float32)})
    msg = str(ei.value)
    assert "@proj" in msg and "f32[2, 3]" in msg and "[3, 2]" in msg


@pytest.mark.parametrize("t, arr", [
    ("ternary[2]", np.array([1.0, 0.0], np.float32)),
    ("i4[2]", np.array([1, 0], np.int64)),
    ("i8[2]", np.array([1, 0], np.int32)),
    ("f32[2]", np.array([1, 0], np.int8)),
    ("nf4[2]", np.array([1, 0], np.int8)),
])
def test_wrong_dtype_names_param(t, arr):
    g = one_param(t, "wd")
    with pytest.raises(ladder.WeightsError) as ei:
        weights.bind(g, {"wd": arr})
    msg = str(ei.value)
    assert "@wd" in msg and str(arr.dtype) in msg


@pytest.mark.parametrize("t, arr, bad", [
    ("ternary[3]", np.array([1, 2, 0], np.int8), "2"),
    ("i4[3]", np.array([0, 9, 1], np.int8), "9"),
    ("i4[2]", np.array([-9, 0], np.int8), "-9"),
    ("i2[2]", np.array([-3, 0], np.int8), "-3"),
    ("u4[2]", np.array([16, 0], np.uint8), "16"),
    ("u1[2]", np.array([0, 2], np.uint8), "2"),
    ("i1[2]", np.array([0, 1], np.int8), "0"),
    ("nf4[2]", np.array([16, 0], np.uint8), "16"),
    ("fp4[2]", np.array([16, 0], np.uint8), "16"),
])
def test_out_of_range_value_names_param(t, arr, bad):
    g = one_param(t, "layer.q")
    with pytest.raises(ladder.WeightsError) as ei:
        weights.bind(g, {"layer.q": arr})
    msg = str(ei.value)
    assert "@layer.q" in msg
    assert bad in msg


def test_out_of_range_in_a_file_is_a_weights_error(tmp_path):
    from safetensors.numpy import save_file

    g = one_param("ternary[4]", "tw")
    path = tmp_path / "bad.safetensors"
    save_file({"tw": np.array([0, 1, 2, -1], np.int8)}, str(path))
    with pytest.raises(ladder.WeightsError, match="@tw"):
        weights.bind(g, weights.load(path))
    # and through the interpreter, too
    with pytest.raises(ladder.WeightsError, match="@tw"):
        ladder.run(g, {"x": np.zeros(2, np.float32)}, weights.load(path))


def test_save_rejects_invalid_weights(tmp_path):
    g = one_param("ternary[2]")
    with pytest.raises(ladder.WeightsError, match="@w"):
        weights.save(tmp_path / "w.safetensors", g, {"w": np.array([3, 0], np.int8)})


def test_bind_accepts_in_memory_and_storage_forms():
    import ml_dtypes

    g = graph_with({"a": "i4[2]", "b": "bf16[2]"})
    mem = weights.bind(g, {"a": np.array([-8, 7], ml_dtypes.int4), "b": np.array([1.5, -2], ml_dtypes.bfloat16)})
    sto = weights.bind(g, {"a": np.array([-8, 7], np.int8),
                           "b": np.array([1.5, -2], ml_dtypes.bfloat16).view(np.uint16)})
    for k in ("a", "b"):
        assert mem[k].dtype == sto[k].dtype == DTYPES["i4" if k == "a" else "bf16"].np_dtype
        np.testing.assert_array_equal(as_f32(mem[k]), as_f32(sto[k]))
    np.testing.assert_array_equal(as_f32(sto["b"]), [1.5, -2.0])


# -- files ----------------------------------------------------------------------------------------

def test_missing_file_is_weights_error(tmp_path):
    p = tmp_path / "nope.safetensors"
    with pytest.raises(ladder.WeightsError) as ei:
        weights.load(p)
    assert "nope.safetensors" in str(ei.value)


@pytest.mark.parametrize("content", [
    b"",
    b"garbage, not safetensors",
    b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}",
    b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\": {",
    b"\x40\x00\x00\x00\x00\x00\x00\x00" + b'{"w": {"dtype": "I8", "shape": [100], "data_offsets": [0, 100]}}',
])
def test_corrupt_file_is_weights_error(tmp_path, content):
    p = tmp_path / "corrupt.safetensors"
    p.write_bytes(content)
    with pytest.raises(ladder.WeightsError) as ei:
        weights.load(p)
    assert "corrupt.safetensors" in str(ei.value)


def test_truncated_real_file_is_weights_error(tmp_path):
    g = one_param("f32[64, 64]")
    p = tmp_path / "w.safetensors"
    weights.save(p, g, weights.random(g, 0))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ladder.WeightsError):
        weights.load(p)


def test_directory_is_weights_error(tmp_path):
    with pytest.raises(ladder.WeightsError):
        weights.load(tmp_path)


# -- random weights ----------------------------------------------------------------------------------

MIXED = {f"p_{n}": f"{n}[16, 32]" for n in ALL} | {f"v_{n}": f"{n}[8]" for n in ("f32", "f16", "bf16")}


def test_random_is_deterministic():
    g = graph_with(MIXED)
    a, b = weights.random(g, 5), weights.random(g, 5)
    assert set(a) == set(b) == set(MIXED)
    for k in a:
        assert a[k].dtype == b[k].dtype
        np.testing.assert_array_equal(as_f32(a[k]), as_f32(b[k]), err_msg=k)


def test_random_differs_per_seed():
    g = graph_with(MIXED)
    a, b = weights.random(g, 0), weights.random(g, 1)
    for k in a:
        assert not np.array_equal(as_f32(a[k]), as_f32(b[k])), f"{k} is the same for seeds 0 and 1"


@pytest.mark.parametrize("name", ALL)
def test_random_values_in_range_and_bind(name):
    g = one_param(f"{name}[32, 32]")
    dt = DTYPES[name]
    arr = weights.random(g, 11)["w"]
    assert arr.dtype == dt.np_dtype and arr.shape == (32, 32)
    vals = dt.to_values(arr)
    assert np.all(np.isfinite(vals))
    dt.check(arr, "random weight")  # raises TypeRangeError when out of range
    if dt.values is not None:
        assert set(np.unique(vals).tolist()) <= set(dt.values)
    else:
        lo, hi = dt.value_range
        assert vals.min() >= lo and vals.max() <= hi
    # more than one distinct value: random, not constant
    assert len(np.unique(vals)) > 1
    # what random() gives, bind() accepts unchanged
    np.testing.assert_array_equal(as_f32(weights.bind(g, {"w": arr})["w"]), as_f32(arr))


def test_random_ternary_and_binary_values_exact():
    g = graph_with({"t": "ternary[64, 64]", "b": "i1[64, 64]"})
    w = weights.random(g, 2)
    assert set(np.unique(w["t"]).tolist()) == {-1, 0, 1}
    assert set(np.unique(w["b"]).tolist()) == {-1, 1}


def test_random_param_unchanged_when_another_is_added():
    g1 = graph_with({"a": "ternary[8, 16]", "b": "f32[16, 4]"})
    g2 = graph_with({"zzz": "f32[3, 3]", "a": "ternary[8, 16]", "new": "i4[5]", "b": "f32[16, 4]"})
    w1, w2 = weights.random(g1, 9), weights.random(g2, 9)
    np.testing.assert_array_equal(w1["a"], w2["a"])
    np.testing.assert_array_equal(w1["b"], w2["b"])
    assert set(w2) == {"zzz", "a", "new", "b"}


def test_random_covers_each_param_once_even_if_used_twice():
    b = Builder("g")
    x = b.input("x", "f32[4]")
    s1 = b.param("s", "f32[4]")
    s2 = b.param("s", "f32[4]")
    g = b.build(b.add(b.mul(x, s1), s2))
    w = weights.random(g, 0)
    assert list(w) == ["s"]
    out = ladder.run(g, {"x": np.ones(4, np.float32)}, w)
    (y,) = out.values()
    np.testing.assert_allclose(y, w["s"] * 2, rtol=1e-6)


# -- 0-d weights and name mismatches (issue 17) ---------------------------------------------------------------

def test_zero_d_weights_round_trip_through_a_file(tmp_path):
    # save wrote a 0-d weight as [1], so import -> save -> load -> run failed with "should be f32[] but is [1]"
    g = ladder.parse("graph @g(%x: f32[3]) -> f32[3] {\n  %s = param @s : f32[]\n  %k = param @k : i8[]\n"
                     "  %kf = cast %k {dtype = f32} : f32[]\n  %y = mul %x, %s : f32[3]\n"
                     "  %z = add %y, %kf : f32[3]\n  return %z\n}\n")
    w = {"s": np.array(2.5, np.float32), "k": np.array(-3, np.int8)}
    p = tmp_path / "w.safetensors"
    weights.save(p, g, w)
    back = weights.load(p)
    assert back["s"].shape == () and back["k"].shape == ()
    out = ladder.run(g, {"x": np.array([1, 2, 3], np.float32)}, back)
    np.testing.assert_array_equal(out[g.outputs[0]], [-0.5, 2.0, 4.5])


def test_missing_names_list_what_the_file_holds_closest_first(tmp_path):
    held = {"model.layers.0.attn.q": "f32[2]", "model.layers.0.attn.k": "f32[2]", "lm_head": "f32[2]",
            "zzz_unrelated": "f32[2]"}
    g_file = graph_with(held)
    p = tmp_path / "w.safetensors"
    weights.save(p, g_file, weights.random(g_file, 0))
    g = graph_with({"layers.0.attn.q": "f32[2]", "lm_head": "f32[2]"})
    with pytest.raises(ladder.WeightsError) as ei:
        weights.bind(g, weights.load(p))
    e = ei.value
    assert "@layers.0.attn.q : f32[2]" in e.message and "lm_head" not in e.message
    note = " ".join(e.notes)
    assert str(p) in note and "3 name(s)" in note
    order = [note.index(repr(n)) for n in ("model.layers.0.attn.q", "model.layers.0.attn.k", "zzz_unrelated")]
    assert order == sorted(order), note  # the closest match comes first, an unrelated name last
    # a plain dict of weights says so, too
    with pytest.raises(ladder.WeightsError) as ei:
        weights.bind(g, {"lm_head": np.zeros(2, np.float32), "layer.0.attn.q": np.zeros(2, np.float32)})
    assert "the weights given also hold 1 name(s)" in str(ei.value) and "'layer.0.attn.q'" in str(ei.value)


# -- lazy reading and a header bounded by the file ----------------------------------------------------------

def raw_file(path, header: dict, data: bytes = b"", header_len: int | None = None) -> None:
    import json
    import struct

    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if header_len is None else header_len) + text + data)


def test_load_reads_nothing_until_asked_and_only_what_the_graph_needs(tmp_path, monkeypatch):
    import tracemalloc

    big = graph_with({"unused": "f32[4096, 1024]", "used": "f32[2]"})
    p = tmp_path / "w.safetensors"
    weights.save(p, big, {"unused": np.zeros((4096, 1024), np.float32), "used": np.ones(2, np.float32)})
    tracemalloc.start()
    try:
        f = weights.load(p)
        peak_open = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak_open < 1 << 20, f"opening a 16 MiB file allocated {peak_open} bytes"
    assert f.shapes == {"unused": ("F32", (4096, 1024)), "used": ("F32", (2,))}
    read = []
    real = weights.WeightsFile.__getitem__
    monkeypatch.setattr(weights.WeightsFile, "__getitem__", lambda self, k: read.append(k) or real(self, k))
    g = ladder.parse("graph @g(%x: f32[2]) -> f32[2] {\n  %w = param @used : f32[2]\n"
                     "  %y = add %x, %w : f32[2]\n  return %y\n}\n")
    out = ladder.run(g, {"x": np.ones(2, np.float32)}, f)
    assert out[g.outputs[0]].tolist() == [2.0, 2.0] and read == ["used"]


@pytest.mark.parametrize("header, data, header_len, words", [
    # an unused tensor that claims 64 GiB: was a MemoryError
    ({"big": {"dtype": "F32", "shape": [1 << 34], "data_offsets": [0, 1 << 36]},
      "s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, b"\0" * 4, None, r"'big' .*claims bytes 0\.\.68719476736"),
    ({"a": {"dtype": "F32", "shape": [1 << 62, 1 << 62], "data_offsets": [0, 4]}}, b"\0" * 4, None, r"'a' is F32"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, 1 << 63, r"header length is 9223372036854775808"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, 1 << 40, r"header length"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 8]}}, b"\0" * 8, None, r"'a' has shape \[-1\]"),
    ({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}}, b"\0" * 8, None, r"'a' has shape"),
    ({"a": {"dtype": "F32", "shape": [1] * 40, "data_offsets": [0, 4]}}, b"\0" * 4, None, r"'a' has shape"),
    ({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 1]}}, b"\0", None, r"'a' has dtype 'Q4'"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, None, r"'a' has data_offsets"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, -8]}}, b"\0" * 8, None, r"'a' has data_offsets"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}, b"\0" * 8, None, r"'a' has data_offsets"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, None, r"'a' should have"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, None, r"'a' .* and 'b' .* overlap"),
    ({"__metadata__": {"k": 1}}, b"", None, r"__metadata__"),
    ([1, 2], b"", None, r"JSON object"),
])
def test_damaged_headers_are_weights_errors_naming_the_tensor(tmp_path, header, data, header_len, words):
    p = tmp_path / "h.safetensors"
    raw_file(p, header, data, header_len)
    with pytest.raises(ladder.WeightsError, match=words) as ei:
        weights.load(p)
    assert "h.safetensors" in str(ei.value)


def test_invalid_utf8_and_deep_json_headers(tmp_path):
    import struct

    p = tmp_path / "u.safetensors"
    for text in (b'{"\xff": 1}', b"[" * 100000 + b"]" * 100000):
        p.write_bytes(struct.pack("<Q", len(text)) + text)
        with pytest.raises(ladder.WeightsError, match="not valid JSON"):
            weights.load(p)


# -- import -> save -> load -> run, 0-d weights included (issue 17) -----------------------------------------------

def test_onnx_import_save_load_run_round_trip(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from ladder.frontends import load as load_model

    s = numpy_helper.from_array(np.array(2.5, np.float32), "s")  # a 0-d initializer, as every export has
    b = numpy_helper.from_array(np.array([1.0, -1.0, 0.5], np.float32), "b")
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], [s, b]),
        opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    g, w = load_model(path)
    wpath, lpath = tmp_path / "w.safetensors", tmp_path / "m.lir"
    weights.save(wpath, g, w)
    lpath.write_text(str(g))
    g2 = ladder.parse(lpath)
    x = np.array([1, 2, 3], np.float32)
    want = ladder.run(g, {g.inputs[0].name: x}, w)[g.outputs[0]]
    got = ladder.run(g2, {g2.inputs[0].name: x}, weights.load(wpath))[g2.outputs[0]]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, x * 2.5 + [1.0, -1.0, 0.5])


def test_gguf_import_save_load_bind_round_trip(tmp_path):
    pytest.importorskip("gguf")
    from fuzz import gguf_inputs

    from ladder.frontends import gguf as lg

    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_inputs.seeds()["llama"].data)
    g, w = lg.load(path)
    wpath = tmp_path / "w.safetensors"
    weights.save(wpath, g, w)
    back = weights.bind(g, weights.load(wpath))
    for ref, arr in weights.bind(g, w).items():
        assert back[ref].dtype == arr.dtype and back[ref].shape == arr.shape, ref
        np.testing.assert_array_equal(as_f32(back[ref]), as_f32(arr), err_msg=ref)


@pytest.mark.parametrize("stored,layout", [("tq1+f16", "crumb64+f16"), ("tq1+f16", "tq2+f16"),
                                           ("tq2+f16", "crumb64+f16"), ("q4+f16", "nib16+f16")])
@pytest.mark.parametrize("step_codes", [256, 3 * 512, 1 << 20])
def test_repacking_a_files_blocks_rows_at_a_time_equals_packing_the_whole(monkeypatch, stored, layout, step_codes):
    """repack_rows (a weight its file stores in one block packing, packed into another a run of rows at a time,
    from the file's bytes) gives the bytes packing the decoded codes and scales whole gives, whatever the run's
    length (one row, several, more than the weight; 7 rows do not divide into runs of 3)."""
    from ladder.packing import get_packing

    rng = np.random.default_rng(7)
    dt = DTYPES["ternary" if stored.startswith("tq") else "i4"]
    shape = (7, 512)
    codes = rng.integers(-1, 2, shape).astype(np.int8) if dt.name == "ternary" else \
        rng.integers(-8, 8, shape).astype(dt.np_dtype)
    scales = (rng.random((7, 512 // get_packing(stored).block)) + 0.1).astype(np.float16)
    storage = get_packing(stored).pack(codes, dt, scales)
    b = weights.Blocks("w", dt.name, shape, lambda which: (codes, scales, None), layout=stored, storage=storage)
    want = get_packing(layout).pack(codes, dt, scales)
    monkeypatch.setattr(weights, "REPACK_CODES", step_codes)
    got = weights.repack_rows(layout, [b.codes, b.scales], want.shape)
    np.testing.assert_array_equal(got, want)
    assert weights.repack_rows(layout, [b.codes], want.shape) is None  # not the weight's every part
    if dt.name == "ternary":  # other blocks than the file's scales'
        assert weights.repack_rows("crumb32+f16", [b.codes, b.scales], (7, 4 * 34)) is None
