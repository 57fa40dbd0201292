"""The shipped chip configs against their published figures, in two kinds of test.

* **Calibration** (``test_calibration_*``): a constant was fitted to the figure (``[fit]``), so reaching it
  only shows the fit converged; it is not evidence.
* **Validation** (``test_validation_*``): no fit used the figure; the simulation predicts it from published
  inputs and the fitted constants, and must land within the figure's tolerance (default 15%). A figure the
  model is known to miss says so in the config (``known_miss``) and its test is a strict xfail.

Each figure is simulated under the condition its ``[published]`` entry names (model, context, point)."""

from __future__ import annotations

import pytest

from ladder.backends.asic import costsim, isa
from ladder.backends.asic.config import load_config, shipped_configs
from ladder.backends.asic.fit import Evaluator, figure_rows, figures, fit_specs
from ladder.backends.asic.sweep import load_workload, run

CHIPS = ("slim-llama", "pim-llm", "taalas-hc1", "lut-tc")   # lut-tc: LUT Tensor Core's unit against a MAC unit
CALIBRATION_TOLERANCE = 0.01


def _cases(use: str, compare: str | None = None):
    out = []
    for chip in CHIPS:
        for name, fig in figures(load_config(chip)).items():
            if fig.use != use or fig.spec.get("compare") != compare:
                continue
            marks = [pytest.mark.xfail(strict=True, reason=fig.spec["known_miss"])] if "known_miss" in fig.spec else []
            out.append(pytest.param(chip, name, marks=marks, id=f"{chip}-{name}"))
    return out


@pytest.fixture(scope="module")
def evaluators():
    """One per chip: its workloads and lowered programs are built once for every test of this module."""
    return {chip: Evaluator(load_config(chip)) for chip in CHIPS}


@pytest.fixture(scope="module")
def rows(evaluators):
    cache: dict[str, dict] = {}

    def get(chip: str) -> dict:
        if chip not in cache:
            cache[chip] = {r.figure.name: r for r in figure_rows(chip, evaluators[chip])}
        return cache[chip]
    return get


def simulated(evaluators, chip: str, figure: str):
    """The report of a published figure's condition (the model, context and point it names)."""
    return evaluators[chip].report(figures(load_config(chip))[figure], {})


def test_every_published_figure_says_its_source_use_and_convention():
    for chip in CHIPS:
        cfg = load_config(chip)
        figs = figures(cfg)          # checks use, metric, source and ops_per_mac for op counts
        specs = fit_specs(cfg)       # checks each constant names a use = "fit" figure, a range and a reference
        fitted = {s.to for s in specs}
        assert fitted == {n for n, f in figs.items() if f.use == "fit"}, chip   # no figure fitted by nothing
        for s in specs:
            assert s.reference > 0 and s.reference_source, (chip, s.key)


@pytest.mark.parametrize("chip, name", _cases("fit"))
def test_calibration_fit_reaches_its_target(rows, chip, name):
    row = rows(chip)[name]
    assert abs(row.error) <= CALIBRATION_TOLERANCE, (row.simulated, row.figure.value)


@pytest.mark.parametrize("chip, name", _cases("validate"))
def test_validation_predicts_a_held_out_figure(rows, chip, name):
    row = rows(chip)[name]
    assert abs(row.error) <= row.figure.tolerance, (row.simulated, row.figure.value, f"{row.error:+.1%}")


@pytest.mark.parametrize("chip, name", _cases("validate", "lower_bound"))
def test_validation_area_is_a_lower_bound_of_the_die(rows, chip, name):
    """The area model counts units and SRAM only: it must come out below the published die."""
    row = rows(chip)[name]
    assert 0 < row.simulated < row.figure.value, (row.simulated, row.figure.value)


@pytest.mark.parametrize("chip, name", _cases("validate", "at_least"))
def test_validation_reaches_a_published_floor(rows, chip, name):
    """A source that says "over 10x": the prediction must reach the floor."""
    row = rows(chip)[name]
    assert row.simulated >= row.figure.value, (row.simulated, row.figure.value)


def test_lut_tensor_core_figures_are_held_out_and_at_its_synthesis_point():
    """LUT Tensor Core's density and efficiency over a MAC unit are validation figures only (no [fit] in
    lut-tc), compared at the paper's synthesis point (28 nm, 1 GHz), per 1-bit weight plane, with the types
    its Table 1 states: the LUT unit on int8 activations (BitNet b1.58, W_INT2 A_INT8) against the A100's
    W_FP16 A_FP16 Tensor Core (20.9x, 11.2x) and its INT8 Tensor Core (61.84 / 17.73 TOPs/mm2)."""
    cfg = load_config("lut-tc")
    figs = figures(cfg)
    assert {f.metric for f in figs.values()} == {"density_vs_mac", "efficiency_vs_mac"}
    assert all(f.use == "validate" for f in figs.values()) and not fit_specs(cfg)
    assert all(f.spec["act_bits"] == 8 and f.spec["weight_bits"] == 1 for f in figs.values())
    assert {n: f.spec["mac"] for n, f in figs.items() if f.value in (20.9, 11.2)} == \
        {"density_vs_mac": "fp16", "efficiency_vs_mac": "fp16"}
    assert figs["density_vs_int8_tc"].value == pytest.approx(61.84 / 17.73, abs=0.005)
    assert figs["density_vs_int8_tc"].spec["mac"] == figs["efficiency_vs_int8_tc"].spec["mac"] == "int"
    model = costsim.CostModel.of(cfg)
    assert model.energy.node_nm == 28 and cfg.clock_mhz == 1000


def test_a_unit_figure_names_a_known_mac_baseline(tmp_path):
    from ladder.backends.asic.config import ConfigError

    text = open(load_config("lut-tc").source).read().replace(', mac = "fp16",', ', mac = "bf16",')
    path = tmp_path / "lut-tc.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="mac must be one of int, fp16, got 'bf16'"):
        figures(load_config(str(path)))


def test_pim_llm_energy_figures_count_what_the_paper_prices(evaluators):
    """PIM-LLM's GOPS/W prices crossbars (MNSIM 2.0) and synthesized TPU logic, not the SRAM the KV cache
    streams through: both its figures say so, and ladder's own (whole-chip) GOPS/W is lower."""
    figs = figures(load_config("pim-llm"))
    scopes = {n: f.spec.get("energy_counts") for n, f in figs.items() if f.metric == "gops_per_w"}
    assert len(scopes) == 2 and len({tuple(v) for v in scopes.values()}) == 1   # fitted and predicted alike
    assert "sram" not in scopes["gops_per_w_4096"] and "dram" not in scopes["gops_per_w_4096"]
    fig = figs["gops_per_w_4096"]
    report = evaluators["pim-llm"].report(fig, {})
    whole_chip = report.tops_per_w * 1e3 * fig.spec["ops_per_mac"] / 2
    assert whole_chip < 0.9 * evaluators["pim-llm"].simulate(fig, {})


@pytest.mark.parametrize("chip, name", _cases("identity"))
def test_identity_figures(rows, chip, name):
    row = rows(chip)[name]
    assert abs(row.error) <= 0.01, (row.simulated, row.figure.value)


# -- what the simulation says about each chip, beyond its headline figures --------------------------------

@pytest.fixture(scope="module")
def slim(evaluators):
    return simulated(evaluators, "slim-llama", "latency_ms")


def test_slim_llama_is_memory_bound(slim):
    util = slim.utilization()
    assert util["dma"] > 0.9 and util["lut"] < 0.05
    assert 0.75e9 < slim.sim.dram_bytes < 0.85e9   # 3.1 B ternary weights at 2 bits + KV + activations


def test_slim_llama_lut_units_reach_their_peak_on_resident_tiles():
    model = costsim.CostModel.of("slim-llama")
    lut_peak = model.peak_tops(("lut",))
    w = isa.Tile("w", "ternary", (256, 1024), layout="planes")
    tab = isa.Tile("tab", "i16", (16, 256, 16))
    prog = isa.Program("peak", "slim-llama", [
        isa.Buffer("w", "sram", w.nbytes, 0), isa.Buffer("tab", "sram", tab.nbytes, 100_000),
        isa.Buffer("acc", "sram", 16 * 256 * 4, 400_000)],
        [isa.Lmma(dst=isa.Tile("acc", "i32", (16, 256)), table=tab, w=w, acc=i > 0, op="y") for i in range(64)])
    sim = costsim.simulate(prog, model)
    achieved = sim.ops / sim.seconds / 1e12
    assert lut_peak < achieved < 1.1 * lut_peak   # all-zero groups skipped: the MACs counted run above the peak


def test_pim_llm_projections_on_crossbars_attention_on_the_array():
    r = run(load_workload("opt:6.7b", context=256, layers=2), "pim-llm")
    assert r.kinds()["qmatmul_i8"].busy.get("xbar", 0) > 0 and "lut" not in r.kinds()["qmatmul_i8"].busy
    assert r.kinds()["attention"].busy["mma"] > 0


@pytest.fixture(scope="module")
def taalas(evaluators):
    return simulated(evaluators, "taalas-hc1", "tokens_per_s")


def test_taalas_hardwired_multipliers_are_their_own_unit(taalas):
    """The hardwired matmuls are booked as "hardwired" (not LUT) time and energy, and count in the peak."""
    mm = taalas.kinds()["qmatmul_i8"]
    assert mm.busy.get("hardwired", 0) > 0 and mm.busy.get("lut", 0) == 0
    assert taalas.sim.energy_pj["hardwired"] > 0 and taalas.sim.energy_pj["lut"] == 0
    weights = taalas.sim.hardwired_weights
    assert 6e9 < weights < 9e9                    # Llama 3.1 8B's projection weights
    assert taalas.peak_tops > 100 * taalas.sim.model.peak_tops(("lut", "mma"))
    assert taalas.sim.dram_bytes < 0.01 * 8e9 * 4 / 8   # weights never move
    assert taalas.sim.energy_pj["dram"] == 0 and taalas.sim.energy_pj["io"] == 0


def test_taalas_figures_hold_at_their_stated_context_only(taalas):
    """Taalas's 17,000 tokens/s is fitted at context 128; a longer cache is slower, and the report says which
    context it simulated."""
    short, longer = (run(load_workload("llama:3.1-8b", context=c, layers=4), "taalas-hc1") for c in (128, 1024))
    assert longer.tokens_per_s < 0.6 * short.tokens_per_s
    assert "context 128" in taalas.to_text() and "context 1024" in longer.to_text()
    assert figures(load_config("taalas-hc1"))["tokens_per_s"].spec["context"] == 128


@pytest.mark.parametrize("config", shipped_configs())
def test_every_shipped_config_simulates_a_model(config):
    r = run(load_workload("bitnet:tiny"), config)
    s = r.summary()
    assert s["cycles"] > 0 and s["energy_per_token_j"] > 0 and s["ops"] > 0 and s["area_mm2"] > 0
    assert sum(oc.exposed_cycles for oc in r.sim.per_op.values()) == r.sim.cycles
