"""Differential fuzzing in the suite: seeded random valid graphs through the reference and compiled code
(``tests/fuzz/diff_inputs.py``; the long run is ``python tests/fuzz --surface diff --seconds N``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz import diff_inputs  # noqa: E402

import ladder  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


@pytest.mark.parametrize("seed", range(12))
def test_random_graph_agrees_with_the_reference(seed):
    text = diff_inputs.make_input(seed)
    diff_inputs.check_graph(ladder.parse(text), seed)


def test_the_comparison_can_fail():
    want = np.array([1.0, -2.0, 1000.0], np.float32)
    diff_inputs._compare(want, want + np.float32(0.5), "close")  # within 1e-3 x 1000
    with pytest.raises(AssertionError, match="off by 2"):
        diff_inputs._compare(want, want + np.array([0, 2, 0], np.float32), "far")
    with pytest.raises(AssertionError, match="NaN differs"):
        diff_inputs._compare(want, np.array([np.nan, -2, 1000], np.float32), "nan")
    codes = np.zeros(200, np.int8)
    diff_inputs._compare(codes, codes + np.eye(1, 200, 5, dtype=np.int8)[0], "one tie")
    with pytest.raises(AssertionError, match="codes differ"):
        diff_inputs._compare(codes, codes + 2 * np.eye(1, 200, 5, dtype=np.int8)[0], "two codes")
