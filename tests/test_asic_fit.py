"""``ladder fit``: published figures with their conditions, constants fitted to them reproducibly, bounds
against cited references; and the labels and area the reports give."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ladder.backends.asic import area, units
from ladder.backends.asic.config import ConfigError, load_config, with_overrides
from ladder.backends.asic.fit import figures, fit_config, fit_specs, write_fitted
from ladder.backends.asic.sweep import load_workload, run
from ladder.cli import main
from ladder.errors import LadderError

SLIM = Path(load_config("slim-llama").source)


def tiny_slim(tmp_path, power_mw: float, io: float, reference: float = 32.0) -> Path:
    """slim-llama with its figures moved to bitnet:tiny (seconds, not minutes) and io_pj_per_byte set to ``io``."""
    text = SLIM.read_text().replace('model = "bitnet:3b"', 'model = "bitnet:tiny"')
    text = re.sub(r"(?m)^io_pj_per_byte = [0-9.]+", f"io_pj_per_byte = {io}", text)
    text = re.sub(r"power_mw = \{ value = [0-9.]+", f"power_mw = {{ value = {power_mw}", text)
    text = text.replace("reference = 32.0", f"reference = {reference}")
    path = tmp_path / "slim-tiny.toml"
    path.write_text(text)
    return path


def power_at(io: float) -> float:
    cfg = with_overrides(load_config("slim-llama"), {"energy.io_pj_per_byte": io})
    return run(load_workload("bitnet:tiny"), cfg).power_w * 1e3


def test_fit_recovers_a_constant_and_writes_it_back(tmp_path):
    target = power_at(30.0)
    path = tiny_slim(tmp_path, target, io=100.0)
    (r,) = fit_config(path, ["power_mw"])
    assert r.spec.key == "energy.io_pj_per_byte" and r.value == pytest.approx(30.0, rel=0.01)
    assert r.achieved == pytest.approx(target, rel=1e-3) and not r.flagged
    write_fitted(path, [r])
    text = path.read_text()
    assert re.search(r"(?m)^io_pj_per_byte = 30\.0?\d*\s+# \[fitted\]", text)   # value replaced, comment kept
    assert load_config(path).section("energy")["io_pj_per_byte"] == pytest.approx(30.0, rel=0.01)


def test_fit_flags_a_constant_far_from_its_reference(tmp_path, capsys):
    path = tiny_slim(tmp_path, power_at(30.0), io=100.0, reference=3.0)
    assert main(["fit", str(path), "--to", "power_mw", "--write"]) == 0
    out = capsys.readouterr().out
    assert "OUTSIDE BOUND" in out and "flagged: energy.io_pj_per_byte" in out and "wrote 1 value" in out


def test_fit_fits_only_to_figures_marked_for_fitting(tmp_path):
    with pytest.raises(LadderError, match="no constant of slim-llama is fitted to 'latency_ms'"):
        fit_config("slim-llama", ["latency_ms"])
    with pytest.raises(LadderError, match="no published figure 'tops'"):
        fit_config("slim-llama", ["tops"])
    path = tiny_slim(tmp_path, 1.0, io=42.0)
    path.write_text(path.read_text().replace('to = "power_mw"', 'to = "latency_ms"'))
    with pytest.raises(ConfigError, match="a fit may only use figures marked use = \"fit\""):
        fit_specs(load_config(path))


def test_fit_of_a_config_without_figures_says_so(tmp_path, capsys):
    text = Path(load_config("lut-tc").source).read_text()
    path = tmp_path / "bare.toml"
    path.write_text(text[:text.index("[published]")].replace('name = "lut-tc"', 'name = "bare"'))
    assert main(["fit", str(path), "--check"]) == 1
    assert "config bare names no published figures" in capsys.readouterr().err


def test_lut_tc_has_figures_but_nothing_to_fit(capsys):
    """lut-tc holds LUT Tensor Core's published ratios for validation only: nothing may be fitted to them."""
    assert main(["fit", "lut-tc", "--check"]) == 0
    assert "predicted" in capsys.readouterr().out
    with pytest.raises(LadderError, match="no fitted constant"):
        fit_config("lut-tc")


def test_energy_figures_name_real_components(tmp_path):
    text = Path(load_config("pim-llm").source).read_text().replace('"xbar", "mma"', '"xbar", "sram_reads"', 1)
    path = tmp_path / "pim.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="energy_counts must list energy components"):
        figures(load_config(path))


def test_op_count_figures_must_state_their_convention(tmp_path):
    path = tiny_slim(tmp_path, 1.0, io=42.0)
    path.write_text(path.read_text().replace('metric = "peak_tops", ops_per_mac = 2,', 'metric = "peak_tops",'))
    with pytest.raises(ConfigError, match="ops_per_mac = 1 or 2"):
        figures(load_config(path))
    pim = figures(load_config("pim-llm"))
    assert all(f.spec["ops_per_mac"] == 1 for f in pim.values() if f.metric.startswith("gops"))


def test_fit_out_of_range_says_so(tmp_path):
    path = tiny_slim(tmp_path, 1e6, io=42.0)     # a megawatt: no interface energy in range reaches it
    with pytest.raises(LadderError, match="never reaches"):
        fit_config(path, ["power_mw"], passes=1)


# -- units booked under their own names, monotonic budgets, area ---------------------------------------------

def test_crossbar_budget_never_slows_as_it_grows():
    one_layer = load_workload("opt:6.7b", context=64, layers=1)   # 1-bit projections: the crossbars take them
    r = {a: run(one_layer, with_overrides(load_config("pim-llm"), {"xbar.active": a})) for a in (4, 16, 64, 0)}
    xbar = {a: rep.sim.busy["xbar"] for a, rep in r.items()}
    assert xbar[4] >= xbar[16] >= xbar[64] >= xbar[0]   # 0 = every crossbar the program holds
    assert xbar[4] > xbar[0]


def test_crossbar_waves_are_fractional_per_tile():
    p = units.CrossbarParams(256, 256, 0, 8, active=16)
    one = units.crossbar_mvm(1, 256, 256, 8, 1, p).cycles
    assert units.crossbar_mvm(1, 256, 256 * 4, 8, 1, p).cycles == pytest.approx(4 * one, abs=1)


def test_area_model_scales_with_node_and_sram():
    assert area.sram_mm2_per_byte(7) < area.sram_mm2_per_byte(28) < area.sram_mm2_per_byte(45)
    assert area.logic_scale(45) == 1.0 and area.logic_scale(6) < area.logic_scale(28) < 1.0
    # 1 MB of 28 nm SRAM: 8 Mbit x 0.127 um^2 / 0.6 array efficiency ~ 1.78 mm^2
    assert 1024 * 1024 * area.sram_mm2_per_byte(28) == pytest.approx(8 * 1024 * 1024 * 0.127e-6 / 0.6)
    with pytest.raises(LadderError, match="outside the logic density table"):
        area.logic_scale(2)
    small = run(load_workload("bitnet:tiny"), "lut-tc")
    big = run(load_workload("bitnet:tiny"), with_overrides(load_config("lut-tc"), {"sram_kb": 4096}))
    assert big.area.mm2["sram"] == pytest.approx(4 * small.area.mm2["sram"])
    assert big.peak_tops_per_mm2 < small.peak_tops_per_mm2


def test_report_names_ops_by_layer_and_role():
    r = run(load_workload("bitnet:tiny"), "lut-tc")
    text = r.to_text()
    assert re.search(r"layers\.\d+\.(q|k|v|o|gate|up|down) \(qmatmul_i8\)", text)
    labels = set(r.labels.values())
    assert "layers.1.down" in labels and "layers.0.attention" in labels
    assert r.to_dict()["ops"][next(iter(r.sim.per_op))]["label"]

