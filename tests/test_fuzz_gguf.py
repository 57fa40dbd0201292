"""Fuzzing the GGUF reader: whatever the bytes, opening, decoding and loading a file works or raises a
LadderError, and every length and count is checked against the file before it is used (no hang, no
MemoryError). Cases that once broke the reader are kept as explicit regressions."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("gguf")

from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import GGUFValueType as VT  # noqa: E402

from fuzz import gguf_inputs as gi  # noqa: E402
from fuzz.guard import expect_ok_or_ladder_error, time_limit  # noqa: E402
from ladder import LadderError  # noqa: E402
from ladder.frontends import gguf as lg  # noqa: E402

SEEDS = gi.seeds()
LLAMA_META = gi.model_meta("llama", hidden=64, ffn=96, heads=2, kv_heads=1, layers=1, context=16, vocab=8)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("gguf-fuzz") / "input.gguf"


def check_bytes(path, data: bytes, seconds: float = 10.0) -> str:
    path.write_bytes(data)
    return expect_ok_or_ladder_error(gi.check, path, seconds=seconds, describe=lambda: f"{data[:200]!r}...")


def refused(fn, path, cls, words: str) -> None:
    """``fn(path)`` raises ``cls`` matching ``words`` at once (a hang fails the test, it is not waited out)."""
    with time_limit(5), pytest.raises(cls, match=words):
        fn(path)


def test_seeds_read_and_the_models_load(scratch):
    for name in ("llama", "bitnet"):
        assert check_bytes(scratch, SEEDS[name].data) == "ok", name
    scratch.write_bytes(SEEDS["every type"].data)
    tensors = lg.read_tensors(scratch)
    assert len(tensors) == 16 and {t.ggml_type for t in tensors.values()} == set(lg.supported_types())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.randoms(use_true_random=False))
def test_hypothesis_gguf_files(scratch, rnd):
    check_bytes(scratch, gi.draw(rnd, SEEDS))


def test_seeded_mutations_exercise_both_outcomes(scratch):
    outcomes = [check_bytes(scratch, gi.make_input(i, SEEDS)) for i in range(150)]
    assert outcomes.count("ok") >= 2 and outcomes.count("ladder") >= 100, outcomes


# -- regressions: lengths and counts no file can hold -------------------------------------------------------------

def _string(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def one_kv(key: str, vt: VT, payload: bytes, *, tail: bytes = b"\0" * 4096, arch: bool = True) -> bytes:
    """A file with general.architecture (unless ``arch`` is False), then one key-value pair whose value bytes
    are given raw, then ``tail`` (so that a reader trusting a length finds bytes to read)."""
    kvs = _string(b"general.architecture") + struct.pack("<I", int(VT.STRING)) + _string(b"llama") if arch else b""
    kvs += _string(key.encode()) + struct.pack("<I", int(vt)) + payload
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 2 if arch else 1) + kvs + tail


@pytest.mark.parametrize("n", [1 << 40, (1 << 64) - 1, 1 << 63, 4097])
@pytest.mark.parametrize("item", [VT.UINT8, VT.UINT32, VT.STRING, VT.FLOAT64])
def test_array_length_past_the_file(scratch, n, item):
    # 2^40 elements hung the reader (it looped over them); 2^64-1 raised SystemError
    data = one_kv("tokenizer.ggml.tokens", VT.ARRAY, struct.pack("<IQ", int(item), n))
    scratch.write_bytes(data)
    refused(lg.open_file, scratch, lg.GGUFError, rf"the length of array 'tokenizer\.ggml\.tokens' is {n}, but")


@pytest.mark.parametrize("first, length, tail, words", [
    (b"a", 1 << 40, b"\0" * 64, r"element 1 of array 'tokenizer\.ggml\.tokens' at byte 78 has length 1099511627776, "
                                r"but only 64 bytes are left"),
    (b"a", 3, b"", r"element 1 of array 'tokenizer\.ggml\.tokens' at byte 78 has length 3, but only 0 bytes"),
    (b"abcde", None, b"\0" * 5, r"the length of element 1 of array 'tokenizer\.ggml\.tokens' at byte 82 is cut "
                                r"short by the end of the file \(87 bytes\)"),
])
def test_a_string_array_element_past_the_file(scratch, first, length, tail, words):
    """A vocabulary's strings are skipped in a tight loop; an element whose length runs past the file, or whose
    length itself is cut short, is refused naming the element and its byte."""
    second = struct.pack("<Q", length) if length is not None else b""
    payload = struct.pack("<IQ", int(VT.STRING), 2) + struct.pack("<Q", len(first)) + first + second
    data = one_kv("tokenizer.ggml.tokens", VT.ARRAY, payload, tail=tail, arch=False)
    scratch.write_bytes(data)
    refused(lg.open_file, scratch, lg.GGUFError, words)


@pytest.mark.parametrize("value, vt, words", [
    ((VT.UINT32, [1, 2]), VT.ARRAY, "not a string"),
    ((VT.STRING, ["llama"]), VT.ARRAY, "not a string"),
    ((VT.ARRAY, [(VT.UINT32, [7])]), VT.ARRAY, "array of arrays"),
    (7, VT.UINT32, "not a string"),
    (b"\xff\xfe", VT.STRING, "malformed"),
])
def test_architecture_of_the_wrong_type(scratch, value, vt, words):
    meta = [("general.architecture", vt, value)] + LLAMA_META[1:]
    scratch.write_bytes(gi.gguf_file(meta, []).data)
    refused(lg.load, scratch, LadderError, words)


def test_nested_array_of_huge_length_is_refused_at_once(scratch):
    # an array of arrays whose inner length is 2^64-1 kept the reader busy for as long as it was let
    scratch.write_bytes(one_kv("general.architecture", VT.ARRAY,
                               struct.pack("<IQIQ", int(VT.ARRAY), 1, int(VT.UINT32), (1 << 64) - 1), arch=False))
    refused(lg.open_file, scratch, lg.GGUFError, "array of arrays")


@pytest.mark.parametrize("at, value, words", [
    (8, (1 << 64) - 1, r"the tensor count is 18446744073709551615, but the \d+ bytes left"),
    (16, (1 << 64) - 1, r"the metadata count is 18446744073709551615, but the \d+ bytes left"),
    (16, 1 << 40, r"the metadata count is 1099511627776"),
    (24, 1 << 63, r"the key of metadata entry 0 at byte 24 has length 9223372036854775808, but only \d+ bytes"),
])
def test_counts_and_lengths_past_the_file(scratch, at, value, words):
    data = bytearray(SEEDS["llama"].data)
    struct.pack_into("<Q", data, at, value)
    scratch.write_bytes(bytes(data))
    refused(lg.open_file, scratch, lg.GGUFError, words)


def _tensor_field(f: gi.GGUFBytes, kind: str, index: int = 0) -> int:
    return [fl.at for fl in f.fields if fl.kind == kind][index]


@pytest.mark.parametrize("kind, value, words", [
    ("ndims", (1 << 32) - 1, r"has 4294967295 dimensions; GGUF allows 1 to 4"),
    ("ndims", 0, r"has 0 dimensions"),
    ("dim", 1 << 62, r"impossible shape"),
    ("dim", (1 << 64) - 1, r"impossible shape"),
    ("offset", (1 << 64) - 32, r"data offset 18446744073709551584"),
    ("ttype", (1 << 32) - 1, r"unknown type number 4294967295"),
])
def test_tensor_infos_past_the_file(scratch, kind, value, words):
    f = SEEDS["llama"]
    data = bytearray(f.data)
    at = _tensor_field(f, kind, 1)
    struct.pack_into("<I" if kind in ("ndims", "ttype") else "<Q", data, at, value)
    scratch.write_bytes(bytes(data))
    refused(lg.open_file, scratch, lg.GGUFError, words)


def test_what_llama_cpp_refuses_is_refused(scratch):
    long_name = "blk.0." + "x" * 60
    cases = [
        (gi.gguf_file([("a", VT.UINT32, 1), ("a", VT.UINT32, 2)], []), r"metadata key 'a' appears twice"),
        (gi.gguf_file([], [("t", QT.F32, [2], b"\0" * 8), ("t", QT.F32, [2], b"\0" * 8)]), r"'t' appears twice"),
        (gi.gguf_file([], [(long_name, QT.F32, [2], b"\0" * 8)]), r"66 bytes; GGUF names are shorter than 64"),
        (gi.gguf_file([("general.alignment", VT.UINT64, 32)], []), r"general\.alignment' should be a u32"),
        (gi.gguf_file([("general.alignment", VT.UINT32, 48)], []), r"should be a u32 power of two, got 48"),
        (gi.gguf_file([("general.alignment", VT.UINT32, 0)], []), r"power of two, got 0"),
        (gi.gguf_file([("k", VT.UINT32, 1)], [], version=1), r"version 1 is not supported"),
        (gi.GGUFBytes(b"GGUF" + struct.pack("<I", 3 << 24) + b"\0" * 16), r"big-endian"),
        (gi.gguf_file([(b"\xed\xb2\x80", VT.UINT8, 1)], []), r"key of metadata entry 0 at byte 24 is not UTF-8"),
    ]
    for f, words in cases:
        scratch.write_bytes(f.data)
        refused(lg.open_file, scratch, lg.GGUFError, words)


def test_general_alignment_with_tensors_reads(scratch):
    # general.alignment made the reader's offsets np.uint32, and -n // alignment overflowed (OverflowError)
    t = np.arange(64, dtype=np.float32)
    f = gi.gguf_file([("general.alignment", VT.UINT32, 64)], [("a", QT.F32, [64], t.tobytes()),
                                                             ("b", QT.F32, [64], t.tobytes())], align=64)
    scratch.write_bytes(f.data)
    tensors = lg.read_tensors(scratch)
    assert np.array_equal(tensors["b"].codes, t)


def test_open_reads_tensors_lazily(tmp_path):
    # the infos are views into a memory map: opening a file with a 16 MiB tensor copies none of it
    big = np.ones((1024, 4096), np.float32)
    p = tmp_path / "big.gguf"
    p.write_bytes(gi.gguf_file([("general.architecture", VT.STRING, "llama")],
                               [("big", QT.F32, [4096, 1024], big.tobytes()),
                                ("small", QT.F32, [4], np.arange(4, dtype=np.float32).tobytes())]).data)
    tracemalloc.start()
    try:
        f = lg.open_file(p)
        small = f.tensor("small")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"opening the file and reading a 16-byte tensor allocated {peak} bytes"
    assert small.codes.tolist() == [0, 1, 2, 3] and f.tensor("big").shape == (1024, 4096)


def test_a_block_count_past_the_tensors_is_refused_at_once(tmp_path):
    """A block_count of 167,772,161 (one fuzzed byte) once made the importer list 1.5 billion tensor names."""
    from test_gguf import model_file
    path = model_file(tmp_path / "m.gguf", extra_meta={"llama.block_count": 0x0A000001})
    refused(lg.load, path, lg.GGUFError, r"'llama.block_count' is 167772161, but the file holds only \d+ tensors")
