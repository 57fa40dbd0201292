"""The ASIC cost simulator: unit timing models, energy tables, the timeline with overlap, the report."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math

import pytest

from ladder.backends.asic import costsim, energy, isa, units
from ladder.backends.asic.config import ConfigError, from_dict
from ladder.backends.asic.report import Report
from ladder.errors import LadderError


# -- unit timing models -------------------------------------------------------------------------------

@pytest.mark.parametrize("dataflow, sr, sc, t", [("os", 100, 70, 50), ("ws", 50, 70, 100), ("is", 50, 100, 70)])
def test_systolic_scalesim_formula(dataflow, sr, sc, t):
    # M=100, N=70, K=50 on a 32x16 array: (preload + R + C + T - 2) * ceil(S_R/R) * ceil(S_C/C), SCALE-Sim
    # 3.0.0's compute cycles; only ws and is preload their stationary operand (R cycles per fold).
    got = units.systolic_cycles(100, 70, 50, 32, 16, dataflow)
    preload = 0 if dataflow == "os" else 32
    assert got == (preload + 32 + 16 + t - 2) * math.ceil(sr / 32) * math.ceil(sc / 16)


def test_systolic_operand_traffic_follows_the_dataflow():
    # M=64, N=64, K=32 on 32x32: os re-reads A per column fold and B per row fold; ws keeps B, re-reads A
    os_ = units.systolic(64, 64, 32, 32, 32, "os", 8).actions
    assert (os_["a_reads"], os_["b_reads"], os_["out_writes"]) == (64 * 32 * 2, 32 * 64 * 2, 64 * 64)
    ws = units.systolic(64, 64, 32, 32, 32, "ws", 8).actions
    assert (ws["a_reads"], ws["b_reads"], ws["out_writes"]) == (64 * 32 * 2, 32 * 64, 64 * 64)
    assert units.systolic(64, 64, 32, 32, 32, "is", 8).actions["a_reads"] == 64 * 32


def test_systolic_one_fold_is_fill_plus_stream_plus_drain():
    # A 4x4 output tile on a 4x4 os array over K=10: 4 + 4 + 10 - 2 = 16 cycles, one fold.
    assert units.systolic_cycles(4, 4, 10, 4, 4, "os") == 16
    assert units.systolic_cycles(5, 4, 10, 4, 4, "os") == 32  # one more row -> a second fold
    assert units.systolic_cycles(4, 4, 4, 4, 4, "ws") == 4 + 4 + 4 + 4 - 2  # one fold: T = M = 4, plus the preload
    with pytest.raises(LadderError, match="dataflow 'xs'"):
        units.systolic_cycles(4, 4, 4, 4, 4, "xs")


def test_lut_zero_skipping_and_output_reuse():
    dense = units.LutParams(units=8, group=3)
    sparse = units.LutParams(units=8, group=3, zero_fraction=1 / 3, skip_zeros=True)
    d = units.lut_matmul(2, 64, 96, dense)
    s = units.lut_matmul(2, 64, 96, sparse)
    assert d.cycles == math.ceil(2 * 64 * 96 / 3 / 8)
    # all-zero groups of 3 (probability 1/27) issue no lookup
    assert s.actions["lut_lookup"] == pytest.approx(d.actions["lut_lookup"] * (1 - 1 / 27))
    assert s.cycles < d.cycles
    reuse = units.lut_matmul(2, 64, 96, units.LutParams(units=8, group=3, output_reuse=32))
    assert reuse.actions["psum_bytes"] == d.actions["psum_bytes"] / 32
    assert reuse.cycles == d.cycles


def test_crossbar_bit_serial_inputs_and_adc_sharing():
    p = units.CrossbarParams(rows=256, columns=256, count=64, adc_bits=8, dac_bits=1, adcs=8, adc_cycles=1)
    c = units.crossbar_mvm(1, 512, 512, input_bits=8, weight_bits=1, p=p)
    assert units.crossbars_needed(512, 512, 1, p) == 4
    assert c.cycles == 8 * (256 // 8)          # 8 input bits x 32 column groups per ADC
    assert c.actions["adc8"] == 8 * 4 * 256   # every column of every crossbar, every input cycle
    two_bit_dac = units.crossbar_mvm(1, 512, 512, 8, 1, units.CrossbarParams(256, 256, 64, 8, dac_bits=2, adcs=8))
    assert two_bit_dac.cycles == c.cycles // 2
    # a half-used crossbar (128 of 256 columns) converts, and waits for, only its used columns
    half = units.crossbar_mvm(1, 128, 512, 8, 1, p)
    assert half.actions["adc8"] == 8 * 2 * 128 and half.cycles == 8 * (128 // 8)
    # a budget of 2 crossbars converting at once: the 4-crossbar tile takes two periods
    budget = units.crossbar_mvm(1, 512, 512, 8, 1, units.CrossbarParams(256, 256, 64, 8, adcs=8, active=2))
    assert budget.cycles == 2 * c.cycles


def test_hardwired_and_vector_and_dma():
    h = units.hardwired_matmul(1, 4096, 4096, input_bits=8, mult_bits=4, weight_bits=6)
    assert h.cycles == 2 + 12
    assert h.actions["mult4"] == 4096 * 4096 * 2 * 2
    v = units.vector_op(1000, "softmax", lanes=64, latency=4)
    assert v.cycles == math.ceil(10 * 1000 / 64) + 4
    d = units.dma(1_600_000, bandwidth_gbs=1.6, clock_mhz=200)   # 8 bytes per cycle
    assert d.cycles == 200_000
    with pytest.raises(LadderError, match="bandwidth must be positive"):
        units.dma(10, 0.0, 200)


# -- energy tables ---------------------------------------------------------------------------------

def test_energy_reference_point_is_horowitz_45nm():
    t = energy.EnergyTable(45, 0.9)
    assert t.op("int8_add") == pytest.approx(0.03)
    assert t.op("fp32_mult") == pytest.approx(3.7)
    assert t.add(32) == pytest.approx(0.1)
    assert t.mult(8) == pytest.approx(0.2)
    assert t.sram_byte(8) * 8 == pytest.approx(10.0)
    assert t.sram_byte(32) * 8 == pytest.approx(20.0)
    with pytest.raises(LadderError, match="no energy figure for 'int3_add'"):
        t.op("int3_add")


def test_energy_scales_with_voltage_squared_and_node():
    hi, lo = energy.EnergyTable(28, 1.0), energy.EnergyTable(28, 0.5)
    assert lo.op("int8_mult") == pytest.approx(hi.op("int8_mult") / 4)
    assert energy.EnergyTable(28, 0.9).op("int8_add") < energy.EnergyTable(45, 0.9).op("int8_add")
    assert energy.node_factor(45) == 1.0
    assert energy.node_factor(28) < energy.node_factor(32) < energy.node_factor(45)
    assert energy.node_factor(40) < energy.node_factor(42) < energy.node_factor(45)  # interpolated
    with pytest.raises(LadderError, match="outside the energy tables"):
        energy.node_factor(3)
    # DRAM energy does not depend on the logic node or core voltage
    assert hi.dram_byte() == lo.dram_byte() == energy.EnergyTable(45, 0.9).dram_byte()


def test_adc_energy_doubles_per_bit():
    t = energy.EnergyTable(32, 0.9)
    assert t.adc_conversion(8) == pytest.approx(1.5625)   # ISAAC's 8-bit ADC at its own node
    assert t.adc_conversion(9) == pytest.approx(2 * t.adc_conversion(8))


def test_leakage_grows_with_supply():
    assert energy.leakage_power(10.0, 0.9, 0.9) == pytest.approx(10.0)
    assert energy.leakage_power(10.0, 0.45, 0.9) == pytest.approx(1.25)


# -- the timeline on hand-built programs -----------------------------------------------------------------

# 1 GB/s at 100 MHz = 10 bytes per cycle; 4 LUT units x 4 MACs per cycle.
TOY = {"name": "toy", "clock_mhz": 100, "sram_kb": 64, "dram_gbps": 1.0, "lut": {"units": 4},
       "systolic": {"rows": 4, "cols": 4, "dataflow": "os"}, "vector": {"lanes": 8},
       "energy": {"node_nm": 45, "voltage": 0.9, "leakage_mw": 1.0, "dram": "ddr3"},
       "cost": {"lut_macs_per_cycle": 4, "bit_serial": False}}


def toy(**changes) -> costsim.CostModel:
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TOY.items()}
    for key, value in changes.items():
        section, _, name = key.rpartition("__")
        (data.setdefault(section, {}) if section else data)[name] = value
    return costsim.CostModel.of(from_dict(data, "toy.toml"))


def weight_stream_program(tiles: int, pingpong: bool) -> isa.Program:
    """``tiles`` weight tiles (ternary 16 x 64 = 256 bytes packed) streamed into SRAM, each multiplied by
    the same activation tables; with ``pingpong`` the loads alternate between two SRAM buffers."""
    bufs = [isa.Buffer("wd", "dram", 256 * tiles, role="weight"), isa.Buffer("x", "sram", 64, 0, "i8", (1, 64)),
            isa.Buffer("tab", "sram", 2 * 16 * 16 * 2, 64, "i16"), isa.Buffer("acc", "sram", 64 * tiles, 2048, "i32"),
            isa.Buffer("w0", "sram", 256, 4096), isa.Buffer("w1", "sram", 256, 8192)]
    ins: list[isa.Instr] = [isa.LutBuild(dst=isa.Tile("tab", "i16", (1, 16, 16)), src=isa.Tile("x", "i8", (1, 64)),
                                         op="t")]
    for i in range(tiles):
        buf = f"w{i % 2}" if pingpong else "w0"
        ins.append(isa.DmaLoad(dst=buf, src="wd", row_bytes=256, src_off=256 * i, op="y"))
        ins.append(isa.Lmma(dst=isa.Tile("acc", "i32", (1, 16), offset=64 * i),
                            table=isa.Tile("tab", "i16", (1, 16, 16)),
                            w=isa.Tile(buf, "ternary", (16, 64), layout="planes"), op="y"))
    return isa.Program("stream", "toy", bufs, ins)


def test_double_buffering_overlaps_dma_with_compute():
    m = toy()
    # per tile: DMA 256 bytes / 10 per cycle = 26 cycles; lmma 1*16*64 MACs / 16 per cycle = 64 cycles
    serial = costsim.simulate(weight_stream_program(8, pingpong=False), m)
    overlapped = costsim.simulate(weight_stream_program(8, pingpong=True), m)
    build = costsim.cost_instr(weight_stream_program(1, False).instrs[0], weight_stream_program(1, False), m).cycles
    assert serial.cycles == max(build, 26) + 8 * 64 + 7 * 26   # each load waits for the lmma reading w0
    assert overlapped.cycles == max(build, 26) + 8 * 64          # loads hide behind the previous lmma
    assert overlapped.busy["dma"] == serial.busy["dma"] == 8 * 26
    assert overlapped.dram_bytes == 8 * 256
    assert overlapped.ops == 2 * 8 * 16 * 64


def test_memory_bound_program_runs_at_the_dram_bandwidth():
    # 1 MAC per cycle: compute is fast, so the program takes as long as its loads
    m = toy(lut__units=64)
    r = costsim.simulate(weight_stream_program(16, pingpong=True), m)
    assert r.busy["lut"] < r.busy["dma"]
    assert r.cycles == pytest.approx(16 * 26, rel=0.05)


def test_exposed_cycles_add_up_to_the_latency_and_energy_to_components():
    prog = weight_stream_program(6, pingpong=True)
    r = costsim.simulate(prog, toy(), op_kinds={"t": "lut_build", "y": "matmul"})
    assert sum(oc.exposed_cycles for oc in r.per_op.values()) == r.cycles
    assert set(r.per_op) == {"t", "y"} and r.per_op["y"].kind == "matmul"
    dynamic = sum(oc.energy_pj for oc in r.per_op.values())
    assert dynamic == pytest.approx(sum(v for k, v in r.energy_pj.items() if k not in ("clock", "leakage")))
    # leakage: 1 mW over the latency
    assert r.energy_pj["leakage"] == pytest.approx(1e-3 * r.seconds * 1e12)


def test_barrier_waits_for_every_unit():
    prog = weight_stream_program(2, pingpong=True)
    # a barrier after the first load makes the second load wait for the first lmma
    ins = list(prog.instrs)
    ins.insert(3, isa.Barrier())
    with_barrier = costsim.simulate(dataclasses.replace(prog, instrs=tuple(ins)), toy())
    assert with_barrier.cycles > costsim.simulate(prog, toy()).cycles


def test_voltage_scales_dynamic_energy_quadratically():
    prog = weight_stream_program(4, pingpong=True)
    hi = costsim.simulate(prog, toy(energy__voltage=0.9, energy__leakage_mw=0.0))
    lo = costsim.simulate(prog, toy(energy__voltage=0.45, energy__leakage_mw=0.0))
    on_chip = lambda r: sum(v for k, v in r.energy_pj.items() if k != "dram")  # noqa: E731
    assert on_chip(lo) == pytest.approx(on_chip(hi) / 4)
    assert lo.energy_pj["dram"] == hi.energy_pj["dram"]


def test_zero_skipping_saves_lut_cycles_and_energy():
    prog = weight_stream_program(4, pingpong=True)
    dense = costsim.simulate(prog, toy(cost__lut_macs_per_cycle=3))
    sparse = costsim.simulate(prog, toy(cost__lut_macs_per_cycle=3, cost__zero_fraction=0.5, cost__skip_zeros=True))
    assert sparse.busy["lut"] < dense.busy["lut"]
    assert sparse.energy_pj["lut"] < dense.energy_pj["lut"]
    assert sparse.ops == dense.ops    # zero weights still count as work done


def test_bad_cost_sections_are_config_errors():
    with pytest.raises(ConfigError, match=r"toy.toml: unknown key 'lut_units' in \[cost\]"):
        toy(cost__lut_units=3)
    with pytest.raises(ConfigError, match=r"'voltage' in \[energy\] must be float"):
        toy(energy__voltage="high")
    with pytest.raises(ConfigError, match="zero_fraction must be in"):
        toy(cost__zero_fraction=1.5)
    with pytest.raises(LadderError, match="unknown DRAM kind 'sdram'"):
        toy(energy__dram="sdram")


def test_program_larger_than_the_sram_is_an_error():
    prog = weight_stream_program(2, pingpong=True)
    with pytest.raises(isa.IsaError, match=r"needs 8448 bytes of SRAM \(buffer %w1 ends at 8448\).*has 4096"):
        costsim.simulate(prog, toy(sram_kb=4))


def test_report_figures_and_formats():
    prog = weight_stream_program(8, pingpong=True)
    r = Report(costsim.simulate(prog, toy(), op_kinds={"t": "lut_build", "y": "matmul"}), runs=3)
    s = r.summary()
    assert s["latency_s"] == pytest.approx(r.sim.cycles / 100e6)
    assert s["tokens_per_s"] == pytest.approx(1 / s["latency_s"])
    assert s["tops"] == pytest.approx(2 * 8 * 16 * 64 / s["latency_s"] / 1e12)
    assert s["peak_tops"] == pytest.approx(2 * (4 * 4 + 16) * 100e6 / 1e12)
    assert s["power_w"] < s["system_power_w"]   # DRAM energy is off-chip
    assert s["tokens"] == 3 and s["total_s"] == pytest.approx(3 * s["latency_s"])
    assert 0 < s["util_lut"] <= 1 and s["util_mma"] == 0
    assert r.latency_share("matmul") + r.latency_share("lut_build") == pytest.approx(1.0)
    d = json.loads(r.to_json())
    assert d["kinds"]["matmul"]["ops"] == 2 * 8 * 16 * 64
    rows = list(csv.DictReader(io.StringIO(r.to_csv())))
    assert {"summary", "unit", "energy", "area", "kind", "op"} == {row["scope"] for row in rows}
    assert s["area_mm2"] > 0 and s["peak_tops_per_mm2"] == pytest.approx(s["peak_tops"] / s["area_mm2"])
    assert any(row["metric"] == "tops_per_w" for row in rows)
    text = r.to_text()
    assert "tokens/s" in text and "matmul" in text and "TOPS/W" in text


def test_next_op_cannot_prefetch_into_sram_the_previous_op_still_uses():
    # op "a" reads SRAM buffer a.x for 100 lmma cycles; op "b"'s first load reuses those addresses (b.w at the
    # same address) and must wait; a load into addresses nobody used (c.w) need not.
    def prog(second_addr: int) -> isa.Program:
        w = isa.Tile("a.x", "ternary", (16, 64), layout="planes")
        bufs = [isa.Buffer("wd", "dram", 4096), isa.Buffer("a.x", "sram", 256, 0),
                isa.Buffer("a.tab", "sram", 1024, 256),
                isa.Buffer("a.acc", "sram", 64, 2048), isa.Buffer("b.w", "sram", 256, second_addr)]
        body = [isa.Lmma(dst=isa.Tile("a.acc", "i32", (1, 16)), table=isa.Tile("a.tab", "i16", (1, 16, 16)), w=w,
                         op="a") for _ in range(4)]
        return isa.Program("reuse", "toy", bufs, body + [isa.DmaLoad(dst="b.w", src="wd", row_bytes=256, op="b")])
    m = toy()
    reused = costsim.simulate(prog(0), m)
    fresh = costsim.simulate(prog(8192), m)
    assert fresh.cycles == 4 * 64                    # the load hides under op a's lmmas
    assert reused.cycles == 4 * 64 + 26              # the load waits for them


def test_several_systolic_arrays_run_independent_tiles_side_by_side():
    bufs = [isa.Buffer(f"{n}{i}", "sram", 4096, 4096 * (3 * i + j)) for i in range(4) for j, n in enumerate("abc")]
    ins = [isa.Mma(dst=isa.Tile(f"c{i}", "f32", (4, 4)), a=isa.Tile(f"a{i}", "f32", (4, 64)),
                   b=isa.Tile(f"b{i}", "f32", (64, 4)), op=f"h{i}") for i in range(4)]
    prog = isa.Program("heads", "toy", bufs, ins)
    one = costsim.simulate(prog, toy())
    four = costsim.simulate(prog, toy(cost__mma_arrays=4))
    assert one.cycles == 4 * units.systolic_cycles(4, 4, 64, 4, 4, "os")
    assert four.cycles == one.cycles // 4
    assert Report(four).utilization()["mma"] == pytest.approx(1.0)


def test_dma_engines_overlap_latency_bound_transfers_but_share_the_bandwidth():
    # toy: 10 bytes per cycle; 8 loads of 100 bytes into 8 buffers, 50 cycles of latency each
    bufs = [isa.Buffer("src", "dram", 80_000)] + [isa.Buffer(f"b{i}", "sram", 1024, 1024 * i) for i in range(8)]
    small = isa.Program("small", "toy", bufs, [isa.DmaLoad(dst=f"b{i}", src="src", row_bytes=100, src_off=100 * i)
                                               for i in range(8)])
    one = costsim.simulate(small, toy(cost__dma_latency_cycles=50))
    four = costsim.simulate(small, toy(cost__dma_latency_cycles=50, cost__dma_engines=4))
    assert one.cycles == 8 * (50 + 10)
    assert four.cycles == 2 * (50 + 40)          # 2 loads per engine, each engine at a quarter of the bandwidth
    assert Report(four).utilization()["dma"] == pytest.approx(8 * 90 / 4 / four.cycles)
    big = isa.Program("big", "toy", bufs[:2], [isa.DmaLoad(dst="b0", src="src", row_bytes=1000)])
    assert costsim.simulate(big, toy(cost__dma_engines=4)).cycles == 4 * costsim.simulate(big, toy()).cycles


def attention_program(model: costsim.CostModel) -> isa.Program:
    """Decode attention of 4 KV heads (4 query heads each) over 64 keys, lowered for ``model``'s config."""
    from ladder.backends.asic.lower import lower
    from ladder.builder import Builder

    b = Builder("att")
    q = b.input("q", "f32[16, 1, 32]")
    k = b.input("k", "f32[4, 64, 32]")
    v = b.input("v", "f32[4, 64, 32]")
    g = b.build(b.attention(q, k, v, b.input("n", "i32[1]"), causal=True))
    return lower(g, model.cfg)


def test_attention_heads_run_side_by_side_on_several_arrays():
    """With buffers of their own (1 MB SRAM) the 4 KV heads run on 4 systolic arrays at once; sharing one set
    of buffers (48 KB) they run one after another however many arrays there are."""
    fast = {"dram_gbps": 100.0, "vector__lanes": 256}    # so the arrays' work dominates
    big = {n: toy(sram_kb=1024, cost__mma_arrays=n, **fast) for n in (1, 4)}
    small = toy(sram_kb=48, cost__mma_arrays=4, **fast)
    side_by_side, shared = attention_program(big[1]), attention_program(small)
    assert sum(".scores.h" in b.name for b in side_by_side.buffers) == 4
    assert sum(".scores.h" in b.name for b in shared.buffers) == 1
    one, four = (costsim.simulate(side_by_side, big[n]) for n in (1, 4))
    assert one.busy["mma"] == four.busy["mma"] > 0.8 * one.cycles     # the array's work is the latency
    assert four.cycles < one.cycles / 3
    assert costsim.simulate(shared, small).cycles >= one.cycles


def test_crossbar_capacity_is_checked():
    prog = isa.Program("pim", "toy", [isa.Buffer("w", "xbar", 3 * 256 * 256 // 8)], [])
    costsim.simulate(prog, toy(xbar__count=3))
    with pytest.raises(isa.IsaError, match="3 crossbars of 256x256, but config toy has 2"):
        costsim.simulate(prog, toy(xbar__count=2))


def test_float_tiles_move_at_the_chips_float_width_and_onchip_stores_cost_chip_energy():
    bufs = [isa.Buffer("kv", "dram", 4000, dtype="f32"), isa.Buffer("s", "sram", 4000)]
    load = isa.DmaLoad(dst="s", src="kv", row_bytes=4000)
    full = costsim.cost_instr(load, {b.name: b for b in bufs}, toy())
    eight = costsim.cost_instr(load, {b.name: b for b in bufs}, toy(cost__float_bits=8))
    assert full.dram_bytes == 4000 and eight.dram_bytes == 1000 and eight.cycles == 100
    onchip = costsim.cost_instr(load, {b.name: b for b in bufs}, toy(energy__dram="onchip"))
    assert "dram" not in onchip.energy and onchip.energy["sram"] > full.energy["sram"]


def test_operating_point_overrides_clock_and_voltage():
    base = from_dict({**TOY, "points": {"slow": {"clock_mhz": 25, "energy.voltage": 0.6}}}, "toy.toml")
    slow = costsim.operating_point(base, "slow")
    assert slow.clock_mhz == 25 and slow.section("energy")["voltage"] == 0.6
    with pytest.raises(ConfigError, match="no operating point 'fast'; it has: slow"):
        costsim.operating_point(base, "fast")


def test_zero_fraction_defaults_to_a_third_for_ternary_weights():
    m = toy(cost__skip_zeros=True)
    assert m.zero_fraction("ternary") == pytest.approx(1 / 3) and m.zero_fraction("i1") == 0.0
    assert toy(cost__zero_fraction=0.5).zero_fraction("ternary") == 0.5
    prog = weight_stream_program(1, pingpong=False)
    lmma = prog.instrs[-1]
    skipping = costsim.cost_instr(lmma, prog, toy(cost__skip_zeros=True, cost__lut_macs_per_cycle=3))
    dense = costsim.cost_instr(lmma, prog, toy(cost__lut_macs_per_cycle=3))
    assert skipping.energy["lut"] == pytest.approx(dense.energy["lut"] * (1 - 1 / 27))   # all-zero triples


def test_lut_vs_mac_prices_the_baseline_mac_from_horowitz():
    """The MAC PE a LUT unit is compared with: "int" widens the weights to the activations (an 8x8 multiply
    and a 32-bit add for int8); "fp16" is Horowitz's fp16 multiply and fp32 add, area and energy, with the
    same PE overhead. The LUT side does not depend on the baseline."""
    from ladder.backends.asic.area import HOROWITZ_45NM_UM2, PE_OVERHEAD, logic_scale, lut_vs_mac, mult_um2, add_um2

    m = costsim.CostModel.of("lut-tc")
    node = m.energy.node_nm
    i8, f16 = lut_vs_mac(m, 1, 8), lut_vs_mac(m, 1, 8, "fp16")
    assert i8.mac == "int" and f16.mac == "fp16"
    assert i8.mac_um2_per_mac == pytest.approx((mult_um2(8, 8, node) + add_um2(32, node)) * PE_OVERHEAD)
    assert i8.mac_pj_per_mac == pytest.approx(m.table.mult(8) + m.table.add(32))
    assert f16.mac_um2_per_mac == pytest.approx((1640.0 + 4184.0) * logic_scale(node) * PE_OVERHEAD)
    assert HOROWITZ_45NM_UM2["fp16_mult"] == 1640.0 and HOROWITZ_45NM_UM2["fp32_add"] == 4184.0
    assert f16.mac_pj_per_mac == pytest.approx((1.1 + 0.9) * m.table.scale)
    assert (f16.lut_um2_per_mac, f16.lut_pj_per_mac) == (i8.lut_um2_per_mac, i8.lut_pj_per_mac)
    with pytest.raises(ValueError, match="unknown MAC baseline 'bf16'"):
        lut_vs_mac(m, 1, 8, "bf16")


def test_a_table_lookup_is_priced_from_the_cells_it_switches():
    """A lookup is a multiplexer tree over the table registers (plus sign XORs with mirror consolidation),
    priced at Horowitz's energy per µm² of integer logic, in energy and area alike; no chip figure sets it."""
    from ladder.backends.asic.area import chip_area, logic_scale
    from ladder.backends.asic.cells import FJ_PER_UM2_45NM, LookupPath

    m = costsim.CostModel.of("lut-tc")
    path = LookupPath.of(m.cfg.lut)
    assert path.cells == {"MUX2": 7 * 16, "XOR2": 16}            # 8 mirrored entries of 16 bits
    assert LookupPath(16, 16, False).cells == {"MUX2": 15 * 16, "XOR2": 0}
    assert 0.70 < FJ_PER_UM2_45NM < 0.84                         # between his adds' and multiply's pJ per µm²
    assert costsim.lookup_pj(m) == pytest.approx(path.pj_45nm * m.table.scale)
    assert costsim.lookup_pj(m) < m.table.mult(8)                # far below the old 64-byte SRAM read
    t = m.cfg.lut.tile
    per_unit = chip_area(m).mm2["lut"] * 1e6 / m.cfg.lut.units
    assert per_unit > t.m * t.n * path.um2_45nm * logic_scale(m.energy.node_nm)   # every lookup has its tree
