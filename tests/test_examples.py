"""The example programs in examples/: each parses and verifies, `ladder run --target cpu` gives the reference
interpreter's outputs, each is described in examples/README.md, and bitnet_small.lir is the built-in
BitNet decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ladder
from ladder import weights
from ladder.cli import main as cli_main
from ladder.models import SIZES, bitnet_decoder

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROGRAMS = sorted(p.name for p in EXAMPLES.glob("*.lir"))

# Inputs a random draw would make meaningless: where the step's keys go and how much cache is filled.
FIXED_INPUTS = {"bitnet_layer.lir": {"start": 2, "kv_len": 6}, "bitnet_small.lir": {"start": 5, "kv_len": 6}}


def test_the_expected_examples_are_there():
    assert {"bitnet_layer.lir", "bitnet_small.lir", "binary_mlp.lir", "int4_mlp.lir"} <= set(PROGRAMS)


@pytest.mark.parametrize("name", PROGRAMS)
def test_parses_and_verifies(name, capsys):
    assert cli_main(["check", str(EXAMPLES / name)]) == 0
    assert f"{name}: ok" in capsys.readouterr().out


@pytest.mark.parametrize("name", PROGRAMS)
def test_described_in_the_readme(name):
    readme = (EXAMPLES / "README.md").read_text()
    line = next((ln for ln in readme.splitlines() if f"`{name}`" in ln), None)
    assert line is not None, f"examples/README.md does not describe {name}"
    assert len(line.split("|")[2].strip()) > 20, f"the README line of {name} says too little"


def _run(name: str, target: str, tmp_path: Path) -> dict[str, np.ndarray]:
    args = ["run", str(EXAMPLES / name), "--random-weights", "0", "--random-inputs", "1", "--target", target]
    for input_name, value in FIXED_INPUTS.get(name, {}).items():
        path = tmp_path / f"{input_name}.npy"
        np.save(path, np.array([value], np.int32))
        args += ["--input", f"{input_name}={path}"]
    out = tmp_path / f"{target}.npz"
    assert cli_main(args + ["--output", str(out)]) == 0
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("name", PROGRAMS)
def test_cpu_matches_the_reference(name, tmp_path, capsys):
    ref = _run(name, "ref", tmp_path)
    cpu = _run(name, "cpu", tmp_path)
    assert list(cpu) == list(ref)
    for key, want in ref.items():
        got = cpu[key]
        assert got.shape == want.shape and got.dtype == want.dtype
        assert np.all(np.isfinite(want)), f"{name}: %{key} of the reference is not finite"
        scale = max(float(np.max(np.abs(want))), 1e-30)
        assert float(np.max(np.abs(got - want))) <= 1e-4 * scale, f"{name}: %{key} differs"


def test_binary_mlp_packs_one_bit_and_fuses():
    """What its README line says: 8 weights a byte, one qmatmul per layer with the ReLU folded in."""
    g = ladder.PassManager("legalize-types{target=cpu},fuse").run(ladder.parse(EXAMPLES / "binary_mlp.lir"))
    packs = [op for op in g.ops() if op.kind == "pack"]
    assert len(packs) == 3 and all(op.result.type.storage_note().endswith("1.00 bits/weight") for op in packs)
    fused = [op for op in g.ops() if op.kind == "qmatmul"]
    assert [op.attr.get("epilogue", ()) for op in fused] == [("relu",), ("relu",), ()]
    assert not any(op.kind in ("dequant", "matmul", "relu") for op in g.ops())


def test_bitnet_small_is_the_builtin_decoder():
    """The checked-in text computes what ladder.models builds (same param names, bit for bit)."""
    text = ladder.parse(EXAMPLES / "bitnet_small.lir")
    built = bitnet_decoder(SIZES["tiny"], 1)
    assert [v.type for v in text.inputs] == [v.type for v in built.inputs]
    assert text.output_types() == built.output_types()
    w = weights.random(built, 3)
    assert set(weights.params(text)) == set(w)
    rng = np.random.default_rng(0)
    cfg = SIZES["tiny"]
    inputs = {"tokens": np.array([17], np.int32), "pos": np.array([9], np.int32),
              "start": np.array([9], np.int32), "kv_len": np.array([10], np.int32),
              **{f"{kv}_cache{i}": rng.standard_normal((cfg.kv_heads, cfg.context, cfg.head_dim)).astype(np.float32)
                 for i in range(cfg.layers) for kv in "kv"}}
    got = list(ladder.run(text, inputs, w).values())
    want = list(ladder.run(built, inputs, w).values())
    assert len(got) == len(want) == 1 + 2 * cfg.layers
    for g, e in zip(got, want):
        np.testing.assert_array_equal(g, e)
