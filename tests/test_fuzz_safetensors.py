"""Fuzzing safetensors weights files: whatever the header and bytes, loading a file, reading its tensors and
running a graph on them works or raises a LadderError (a WeightsError naming the tensor), with nothing read
before it is needed. Cases that once broke ladder are kept as explicit regressions."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ladder
from fuzz import safetensors_inputs as si
from fuzz.guard import expect_ok_or_ladder_error, time_limit
from ladder import weights


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("st-fuzz") / "input.safetensors"


def check_bytes(path, data: bytes) -> str:
    path.write_bytes(data)
    return expect_ok_or_ladder_error(si.check, path, seconds=10, describe=lambda: f"{data[:300]!r}")


def test_seed_runs(scratch):
    header, data = si.seed()
    assert check_bytes(scratch, si.st_file(header, data)) == "ok"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.randoms(use_true_random=False))
def test_hypothesis_safetensors_files(scratch, rnd):
    check_bytes(scratch, si.draw(rnd))


def test_seeded_mutations_exercise_both_outcomes(scratch):
    outcomes = [check_bytes(scratch, si.make_input(i)) for i in range(150)]
    assert outcomes.count("ok") >= 10 and outcomes.count("ladder") >= 75, outcomes


def test_unused_64_gib_tensor_is_a_weights_error_not_a_memory_error(scratch):
    # the header claims a 64 GiB tensor the graph does not use: was a MemoryError
    header, data = si.seed()
    header["big"] = {"dtype": "F32", "shape": [1 << 34], "data_offsets": [len(data), len(data) + (1 << 36)]}
    scratch.write_bytes(si.st_file(header, data))
    with time_limit(5), pytest.raises(ladder.WeightsError, match=r"tensor 'big' \(F32\[17179869184\]\) claims bytes"):
        weights.load(scratch)


def test_header_length_of_2_to_the_64_minus_1(scratch):
    header, data = si.seed()
    scratch.write_bytes(si.st_file(header, data, header_len=(1 << 64) - 1))
    with time_limit(5), pytest.raises(ladder.WeightsError, match="header length is 18446744073709551615"):
        weights.load(scratch)


def test_value_out_of_range_in_a_tensor_names_it(scratch):
    header, data = si.seed()
    at = header["t"]["data_offsets"][0]
    scratch.write_bytes(si.st_file(header, data[:at] + b"\x02" + data[at + 1:]))
    with pytest.raises(ladder.WeightsError, match="@t"):
        si.check(scratch)


def test_a_gap_between_tensors_is_a_weights_error_when_read(scratch):
    # ladder's header check allows gaps; safetensors itself refuses them: still a WeightsError naming the tensor
    header, data = si.seed()
    header["w"]["data_offsets"] = [4, 132]
    for name in ("s", "t", "ts", "h", "unused"):
        header[name]["data_offsets"] = [o + 4 for o in header[name]["data_offsets"]]
    scratch.write_bytes(si.st_file(header, b"\0" * 4 + data))
    f = weights.load(scratch)
    with pytest.raises(ladder.WeightsError, match="weights file"):
        f["w"]


def test_json_header_is_not_read_past_its_length(scratch):
    # a valid JSON object followed by junk inside the declared length is refused, not half-parsed
    text = json.dumps({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}}).encode() + b"}}"
    scratch.write_bytes(struct.pack("<Q", len(text)) + text + b"\x01")
    with pytest.raises(ladder.WeightsError, match="not valid JSON"):
        weights.load(scratch)
    assert np.array_equal(weights.load(_rewrite(scratch, text[:-2]))["a"], [1])


def _rewrite(path, text: bytes):
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\x01")
    return path
