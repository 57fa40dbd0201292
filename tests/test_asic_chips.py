"""The shipped chip configs reproduce their published headline figures within 10%: each test lowers a real
model graph (ladder.models) for the config and cost-simulates it; the figures come out of the simulation,
the published values out of the config's [published] table."""

from __future__ import annotations

import pytest

from ladder.backends.asic import costsim, isa
from ladder.backends.asic.config import load_config, shipped_configs
from ladder.backends.asic.sweep import at_point, load_workload, run

TOLERANCE = 0.10


def published(config: str, key: str):
    return load_config(config).section("published")[key]["value"]


def within(simulated: float, target: float) -> bool:
    return abs(simulated - target) <= TOLERANCE * target


def test_every_published_figure_says_what_kind_it_is():
    for name in ("slim-llama", "pim-llm", "taalas-hc1"):
        figures = load_config(name).section("published")
        assert figures, name
        for key, fig in figures.items():
            assert fig["kind"] in ("peak", "measured", "derived"), (name, key)
            assert fig["note"], (name, key)


# -- Slim-Llama -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bitnet_3b():
    return load_workload("bitnet:3b")


@pytest.fixture(scope="module")
def slim(bitnet_3b):
    return {point: run(bitnet_3b, at_point("slim-llama", point)) for point in (None, "low-power")}


def test_slim_llama_decode_latency_489ms(slim):
    r = slim[None]
    assert r.sim.config.clock_mhz == 200
    assert within(r.latency_s * 1e3, published("slim-llama", "latency_ms")), r.latency_s
    # memory bound: the weights stream at 1.6 GB/s while the LUT units idle
    util = r.utilization()
    assert util["dma"] > 0.9 and util["lut"] < 0.05
    assert 0.75e9 < r.sim.dram_bytes < 0.85e9   # 3.1 B ternary weights at 2 bits + KV + activations


def test_slim_llama_power_at_200_and_25_mhz(slim):
    hi, lo = slim[None], slim["low-power"]
    assert within(hi.power_w * 1e3, published("slim-llama", "power_mw")), hi.power_w
    assert lo.sim.config.clock_mhz == 25
    assert within(lo.power_w * 1e3, published("slim-llama", "power_mw_low")), lo.power_w
    # the same token at 1/8 of the clock and a lower supply: less energy per token, all of it from the model
    assert lo.energy_per_token_j < hi.energy_per_token_j


def test_slim_llama_peak_4_92_tops():
    model = costsim.CostModel.of("slim-llama")
    lut_peak = model.peak_tops(("lut",))   # 4096 units x 3 MACs x 2 ops x 200 MHz
    assert within(lut_peak, published("slim-llama", "peak_tops"))
    # and the LUT units reach it on a stream of lmma tiles over SRAM-resident weights (zero skipping lets
    # the MACs counted, zeros included, run slightly above the dense peak)
    w = isa.Tile("w", "ternary", (256, 1024), layout="planes")
    tab = isa.Tile("tab", "i16", (16, 256, 16))
    prog = isa.Program("peak", "slim-llama", [
        isa.Buffer("w", "sram", w.nbytes, 0), isa.Buffer("tab", "sram", tab.nbytes, 100_000),
        isa.Buffer("acc", "sram", 16 * 256 * 4, 400_000)],
        [isa.Lmma(dst=isa.Tile("acc", "i32", (16, 256)), table=tab, w=w, acc=i > 0, op="y") for i in range(64)])
    sim = costsim.simulate(prog, model)
    achieved = sim.ops / sim.seconds / 1e12
    assert within(achieved, published("slim-llama", "peak_tops")), achieved
    assert achieved > lut_peak   # all-zero groups skipped


# -- PIM-LLM -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pim():
    return {ctx: run(load_workload("opt:6.7b", context=ctx), "pim-llm") for ctx in (128, 1024, 4096)}


@pytest.mark.parametrize("ctx", [1024, 4096])
def test_pim_llm_opt_6_7b_gops_and_gops_per_watt(pim, ctx):
    r = pim[ctx]
    assert within(r.tops * 1e3, published("pim-llm", f"gops_{ctx}")), r.tops
    assert within(r.tops_per_w * 1e3, published("pim-llm", f"gops_per_w_{ctx}")), r.tops_per_w
    # the projections run in the crossbars, attention on the systolic array
    assert r.kinds()["qmatmul_i8"].busy.get("xbar", 0) > 0 and "lut" not in r.kinds()["qmatmul_i8"].busy
    assert r.kinds()["attention"].busy["mma"] > 0


def test_decode_attention_costs_the_keys_of_its_context(pim):
    """A built-in model's KV cache is sized to the context it is simulated at, so a decode step at context L
    attends over L keys: the systolic array's work on attention grows 4x from context 1024 to 4096."""
    busy = {ctx: pim[ctx].kinds()["attention"].busy["mma"] for ctx in (1024, 4096)}
    assert busy[4096] / busy[1024] == pytest.approx(4.0, rel=0.02)


def test_pim_llm_attention_share_of_latency(pim):
    lo, hi = published("pim-llm", "attention_share_128")
    assert lo <= pim[128].latency_share("attention") <= hi
    lo, hi = published("pim-llm", "attention_share_4096")
    assert lo <= pim[4096].latency_share("attention") <= hi


# -- Taalas HC1 ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def taalas():
    return run(load_workload("llama:3.1-8b", context=128), "taalas-hc1")


def test_taalas_hc1_tokens_per_second_and_power(taalas):
    assert within(taalas.tokens_per_s, published("taalas-hc1", "tokens_per_s")), taalas.tokens_per_s
    assert within(taalas.power_w, published("taalas-hc1", "power_w")), taalas.power_w
    # weights are never moved: the only DRAM-space traffic is activations and the KV cache (on chip)
    assert taalas.sim.dram_bytes < 0.01 * 8e9 * 4 / 8   # under 1% of the 4 GB of weights
    assert taalas.sim.energy_pj["dram"] == 0 and taalas.sim.energy_pj["io"] == 0


def test_taalas_hc1_runs_kv_heads_side_by_side_at_a_1_ghz_class_clock(taalas):
    """The 8 KV heads of a layer run on 8 attention arrays at once (their busy cycles are several times the
    latency attention adds), which is what lets a ~1 GHz clock reach the published token rate."""
    assert 800 <= taalas.sim.config.clock_mhz <= 1500
    attention = taalas.kinds()["attention"]
    assert taalas.sim.model.cost.mma_arrays == 8
    assert attention.busy["mma"] > 4 * attention.exposed_cycles


@pytest.mark.parametrize("config", shipped_configs())
def test_every_shipped_config_simulates_a_model(config):
    r = run(load_workload("bitnet:tiny"), config)
    s = r.summary()
    assert s["cycles"] > 0 and s["energy_per_token_j"] > 0 and s["ops"] > 0
    assert sum(oc.exposed_cycles for oc in r.sim.per_op.values()) == r.sim.cycles
