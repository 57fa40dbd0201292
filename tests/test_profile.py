"""The decode-step profile (``ladder generate --profile``): every kernel is timed, and the times add up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ladder import weights
from ladder.cli import main as cli_main
from ladder.errors import LadderError
from ladder.generate import ModuleRunner, load_model
from ladder.models import SIZES, bitnet_decoder
from ladder.profile import format_profile, profile_decode

SMALL = Path(__file__).resolve().parent.parent / "examples" / "bitnet_small.lir"
PROMPT = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def small():
    return load_model(SMALL, random_weights=0)


def test_profile_times_every_kernel_and_sums_to_the_step():
    # big enough that kernels, not the calls between them, make the step (a 1 ms step)
    decode = bitnet_decoder(SIZES["small"], 1)
    runner = ModuleRunner("cpu", weights.random(decode, 0), threads=1)
    p = profile_decode(decode, decode, PROMPT, runner, tokens=4, repeat=7)
    kernels = int(re.search(r"(\d+) kernels", runner.module(decode).report()).group(1))
    assert len(p.per_op) == kernels == sum(o.count for o in p.ops)
    kinds = {o.kind for o in p.ops}
    # the model's per-token work is all there (projections lower to a matmul flavour)
    assert {"gather", "rmsnorm", "rope", "cache_write", "attention"} <= kinds
    assert any("matmul" in k for k in kinds)
    assert all(t >= 0 for _, _, t in p.per_op) and p.kernel_seconds > 0
    assert p.kernel_seconds == pytest.approx(sum(o.seconds for o in p.ops))
    # kernels one by one vs the entry calling them: the same work (loose: the machine is shared)
    assert 0.25 < p.kernel_seconds / p.entry_seconds < 4.0
    assert p.loop_seconds > 0 and p.python_seconds <= p.loop_seconds
    text = format_profile(p)
    assert all(o.kind in text for o in p.ops) and "Python" in text


def test_profile_needs_a_cpu_target(small):
    runner = ModuleRunner("ref", small.weights)
    with pytest.raises(LadderError, match="times cpu kernels; target 'ref'"):
        profile_decode(small.prefill, small.decode, PROMPT, runner)


def test_generate_profile_on_the_command_line(capsys):
    assert cli_main(["generate", str(SMALL), "--random-weights", "0", "--prompt-ids", "1,2,3", "--max-new", "3",
                     "--threads", "1", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "decode step profile" in out and "attention" in out and re.search(r"Python \d+\.\d+ ms", out)
