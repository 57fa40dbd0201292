"""ladder.budget: graphs whose buffers exceed the memory budget are refused with a clear error before anything
is allocated (reference interpreter, ladder.compile for cpu, the CLI's random inputs); the budget has a default
(a share of this machine's memory, faked here so that no test depends on the host) and can be set."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ladder
from ladder import budget
from ladder.budget import MemoryBudgetError
from ladder.cli import _random_inputs, main
from ladder.interpreter import Session

GIB = 1 << 30
HUGE_INPUT = """graph @huge(%x: f32[100000000000]) -> f32[100000000000] {
  %y = relu %x : f32[100000000000]
  return %y
}"""
SQUARE = """graph @square(%a: f32[65536, 8], %b: f32[8, 65536]) -> f32[1, 65536] {
  %y = matmul %a, %b : f32[65536, 65536]
  %z = slice %y {starts = [0], ends = [1], axes = [0]} : f32[1, 65536]
  return %z
}"""
BROADCAST = """graph @wide(%a: f32[2147483648, 1], %b: f32[1, 2147483648]) -> f32[2147483648, 2147483648] {
  %y = add %a, %b : f32[2147483648, 2147483648]
  return %y
}"""
CHAIN = """graph @chain(%x: f32[1000]) -> f32[1000] {
  %w = param @w : f32[1000]
  %w2 = mul %w, %w : f32[1000]
  %a = add %x, %w2 : f32[1000]
  %b = relu %a : f32[1000]
  %c = neg %b : f32[1000]
  %d = mul %c, %a : f32[1000]
  return %d
}"""


@pytest.fixture(autouse=True)
def sixteen_gib_machine(monkeypatch):
    """The default budget as on a 16 GiB machine, whatever this one has."""
    monkeypatch.setattr(budget, "machine_memory", lambda: 16 * GIB)


@pytest.mark.parametrize("given, want", [
    (None, 12 * GIB), (4096, 4096), (1.5e9, 1_500_000_000), ("8G", 8 * GIB), ("8 GiB", 8 * GIB), ("512m", 512 << 20),
    ("1.5T", 3 << 39), ("100", 100), ("25%", 4 * GIB), ("100%", 16 * GIB), ("unlimited", math.inf),
    (math.inf, math.inf), (2 ** 70, 2 ** 70),
])
def test_budget_forms(given, want):
    assert budget.resolve(given) == want


@pytest.mark.parametrize("given", ["0", "-1", "abc", "8X", "1e3", "", "0%", "101%", "x%", 0, -5, float("nan"), True])
def test_bad_budgets_are_errors(given):
    with pytest.raises(MemoryBudgetError, match="memory budget"):
        budget.resolve(given)


def test_sizes_are_python_ints_that_never_wrap():
    g = ladder.parse(BROADCAST)
    assert budget.value_bytes(g.type_of("y")) == 2 ** 64  # numpy's int64 would wrap to 0
    est = budget.memory_estimate(g)
    assert est.inputs == 2 * 2 ** 33 and est.intermediates == 2 ** 64 and est.fixed == 0
    assert est.biggest.name == "y"


def test_the_estimate_frees_each_value_after_its_last_use():
    est = budget.memory_estimate(ladder.parse(CHAIN))
    assert est.fixed == 2 * 4000  # w, and w2 computed from it once
    assert est.inputs == 4000
    assert est.intermediates == 3 * 4000  # at most a, b (or c) and the next result at once


@pytest.mark.parametrize("text, name, size", [
    (HUGE_INPUT, "%x : f32[100000000000]", "372.5 GiB"),
    (SQUARE, "%y : f32[65536, 65536]", "16.0 GiB"),
    (BROADCAST, "%y : f32[2147483648, 2147483648]", "16.0 EiB"),
])
@pytest.mark.parametrize("target", ["ref", "cpu"])
def test_oversized_graphs_are_refused_before_allocating(text, name, size, target):
    g = ladder.parse(text)
    with pytest.raises(MemoryBudgetError) as e:
        ladder.compile(g, target)
    msg = str(e.value)
    assert f"graph @{g.name} needs at least" in msg and f"to run " in msg
    assert f"the biggest tensor is {name} ({size}" in msg
    assert "memory budget of 12.0 GiB (the default, 75% of this machine's 16.0 GiB)" in msg
    if name.startswith("%y"):  # made by an op: the error points at it
        assert "<string>:2:8" in msg and ("made by 'matmul'" in msg or "made by 'add'" in msg)
    else:
        assert "an input of the graph" in msg


def test_the_interpreter_checks_its_budget():
    with pytest.raises(MemoryBudgetError, match="to run in the reference interpreter"):
        Session(ladder.parse(SQUARE))
    with pytest.raises(MemoryBudgetError, match=r"memory_budget='10K'"):
        ladder.interpreter.run(ladder.parse(CHAIN), {"x": np.ones(1000, np.float32)},
                               {"w": np.ones(1000, np.float32)}, memory_budget="10K")


def test_a_budget_can_be_lowered_and_raised(monkeypatch):
    g = ladder.parse(CHAIN)
    w = {"w": np.linspace(-1, 1, 1000, dtype=np.float32)}
    x = {"x": np.linspace(-2, 2, 1000, dtype=np.float32)}
    want = ladder.interpreter.run(g, x, w)["d"]
    for target in ("ref", "cpu"):
        with pytest.raises(MemoryBudgetError, match="needs at least 23.4 KiB"):
            ladder.compile(g, target, w, memory_budget=20_000)
    monkeypatch.setattr(budget, "machine_memory", lambda: 16_000)  # the default (12,000 bytes) is too small
    for target in ("ref", "cpu"):
        with pytest.raises(MemoryBudgetError, match="the default"):
            ladder.compile(g, target, w, cache=False)
        m = ladder.compile(g, target, w, memory_budget="1M", cache=False)  # a larger budget is honoured
        np.testing.assert_allclose(m(x)["d"], want, rtol=1e-6)


def test_the_interpreter_drops_dead_values_but_keeps_outputs():
    g = ladder.parse(CHAIN.replace("-> f32[1000] {", "-> (f32[1000], f32[1000]) {").replace(
        "return %d", "return %d, %a"))
    w = {"w": np.linspace(-1, 1, 1000, dtype=np.float32)}
    x = {"x": np.linspace(-2, 2, 1000, dtype=np.float32)}
    s = Session(g, w)
    every = s.run(x, keep=True)
    out = s.run(x)
    assert list(out) == ["d", "a"] and set(every) >= {"a", "b", "c", "d", "w", "w2", "x"}
    for k in out:
        np.testing.assert_array_equal(out[k], every[k])
    np.testing.assert_allclose(out["d"], -np.maximum(every["a"], 0) * every["a"])


def test_random_inputs_are_checked_before_allocating():
    g = ladder.parse(HUGE_INPUT)
    with pytest.raises(MemoryBudgetError, match=r"--random-inputs for @huge needs at least 372.5 GiB to hold its "
                                                r"inputs .* the biggest tensor is %x : f32\[100000000000\]"):
        _random_inputs(g, {}, 0)
    small = ladder.parse(CHAIN)
    assert _random_inputs(small, {}, 0, "1M")["x"].shape == (1000,)
    with pytest.raises(MemoryBudgetError, match="memory_budget='1K'"):
        _random_inputs(small, {}, 0, "1K")


def test_cli_refuses_with_one_message(tmp_path, capsys):
    src = tmp_path / "huge.lir"
    src.write_text(HUGE_INPUT)
    for target in ("ref", "cpu"):
        assert main(["run", str(src), "--target", target, "--random-inputs", "0"]) == 1
        err = capsys.readouterr().err
        assert "memory error" in err and "%x : f32[100000000000]" in err and "Traceback" not in err
    chain = tmp_path / "chain.lir"
    chain.write_text(CHAIN)
    args = ["run", str(chain), "--random-weights", "1", "--random-inputs", "2"]
    assert main(args + ["--memory-budget", "10K"]) == 1
    assert "memory_budget='10K'" in capsys.readouterr().err
    assert main(args + ["--memory-budget", "lots"]) == 1
    assert "memory budget must be a size like 8G" in capsys.readouterr().err
    assert main(args + ["--target", "cpu", "--memory-budget", "1M"]) == 0
    assert "%d : f32[1000]" in capsys.readouterr().out
    out = tmp_path / "chain.so"
    assert main(["compile", str(chain), "-o", str(out), "--random-weights", "1", "--memory-budget", "10K"]) == 1
    assert "memory error" in capsys.readouterr().err and not out.exists()


def test_generate_takes_the_budget_and_tuning_flags(capsys):
    args = ["generate", "examples/bitnet_small.lir", "--random-weights", "0", "--prompt-ids", "1,2", "--max-new", "1",
            "--target", "cpu", "--threads", "1"]
    root = __import__("pathlib").Path(__file__).parent.parent
    args[1] = str(root / args[1])
    assert main(args + ["--memory-budget", "1K"]) == 1
    assert "graph @bitnet_small needs at least" in capsys.readouterr().err
    assert main(args + ["--tuning", str(root / "no-such-tune.json")]) == 1
    assert "cannot read tuning file" in capsys.readouterr().err
