"""Lowering graphs to ASIC programs: tiling to the SRAM, double buffering, weight placement, clear errors, the
size of a real model's decode program, and the backend's entry points (ladder.compile, ladder compile)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import ladder
from ladder import weights as W
from ladder.backends.asic import config as hw
from ladder.backends.asic.asm import parse_program
from ladder.backends.asic.isa import DmaLoad, Lmma, Xmma
from ladder.backends.asic.lower import LoweringError, lower
from ladder.builder import Builder
from ladder.cli import main as cli_main
from ladder.errors import LadderError
from ladder.models import SIZES, bitnet_decoder
from ladder.passes import PassManager, default_pipeline

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BASE = hw.load_config("lut-tc")


def legal(g):
    return PassManager(default_pipeline("asic:lut-tc")).run(g)


def bitlinear(m=1, k=512, n=512, wtype="ternary"):
    b = Builder("bl")
    x = b.input("x", f"f32[{m}, {k}]")
    xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
    w = b.param("w", f"{wtype}[{n}, {k}]")
    ws = b.param("ws", "f32[1]")
    return legal(b.build(b.mul(b.mul(b.cast(b.matmul(xq, w, transpose_b=True), dtype="f32"), xs), ws)))


@pytest.mark.parametrize("name", sorted(hw.shipped_configs()))
@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.lir")))
def test_every_example_lowers_for_every_config(example, name):
    prog = lower(legal(ladder.parse(EXAMPLES / example)), name)
    cfg = hw.load_config(name)
    assert prog.config == name and prog.space_bytes("sram") <= cfg.sram_bytes
    prog.check()


def test_weight_tiles_are_double_buffered():
    cfg = hw.with_overrides(BASE, {"tile_kb": 8})
    prog = lower(bitlinear(), cfg)
    seq = [(type(i).__name__, i.dst if isinstance(i, DmaLoad) else i.w.buffer) for i in prog.instrs
           if isinstance(i, Lmma) or isinstance(i, DmaLoad) and i.src.endswith(".tiles")]
    loads = [s for s in seq if s[0] == "DmaLoad"]
    lmmas = [s for s in seq if s[0] == "Lmma"]
    assert len(lmmas) == len(loads) == 512 * 2 * 512 // 8 // (8 * 1024)  # 8 tiles of 8 KB
    y = prog.outputs[0].value
    assert {b for _, b in loads} == {f"{y}.w0", f"{y}.w1"}
    # tile i+1 is loaded (into the other slot) before tile i is multiplied
    assert [s[0] for s in seq[:3]] == ["DmaLoad", "DmaLoad", "Lmma"]
    for i, (_, slot) in enumerate(lmmas):
        assert slot == f"{y}.w{i % 2}"
        assert seq.index(("Lmma", slot), 2 * i) > seq.index(loads[min(i + 1, len(loads) - 1)])


def test_row_tiles_fit_the_sram_and_alternate():
    b = Builder("rows")
    x = b.input("x", "f32[256, 512]")
    g = legal(b.build(b.softmax(b.relu(x))))
    cfg = hw.with_overrides(BASE, {"sram_kb": 64})
    prog = lower(g, cfg)
    softmax = [i for i in prog.instrs if i.mnemonic == "vec.softmax"]
    assert len(softmax) > 1 and all(i.dst[0].shape[1] == 512 for i in softmax)
    assert sum(i.dst[0].shape[0] for i in softmax) == 256
    assert len({i.src[0].buffer for i in softmax}) == 2  # ping, pong
    assert prog.space_bytes("sram") <= 64 * 1024


@pytest.mark.parametrize("placement, space, unit", [("stream", "dram", "lut"), ("resident", "xbar", "xbar"),
                                                    ("hardwired", "rom", "lut")])
def test_weights_are_placed_per_config(placement, space, unit):
    cfg = hw.with_overrides(BASE, {"weight_placement": placement, "tile_kb": 8})
    prog = lower(bitlinear(), cfg)
    tiles = [b for b in prog.buffers if b.name.endswith(".tiles")]
    assert len(tiles) == 1 and tiles[0].space == space and tiles[0].role == "weight"
    mms = [i for i in prog.instrs if isinstance(i, (Lmma, Xmma))]
    assert mms and {i.unit for i in mms} == {unit}
    weight_dma = sum(i.work().bytes for i in prog.instrs if i.unit == "dma" and getattr(i, "src", "") == tiles[0].name)
    assert weight_dma == (512 * 512 * 2 // 8 if placement == "stream" else 0)  # never moved unless streamed
    if placement != "stream":
        assert {i.w.buffer for i in mms} == {tiles[0].name}


def test_float_activations_use_f32_tables_unless_weights_sit_in_crossbars():
    g = legal(ladder.parse(EXAMPLES / "ffn.lir"))
    prog = lower(g, "lut-tc")
    builds = [i for i in prog.instrs if i.mnemonic == "lut.build"]
    assert len(builds) == 2 and all(i.dst.dtype == "f32" and i.src.dtype == "f32" for i in builds)
    assert "mma" not in {i.mnemonic for i in prog.instrs}
    crossbar = lower(g, hw.with_overrides(BASE, {"weight_placement": "resident"}))
    assert {"mma", "vec.unpack"} <= {i.mnemonic for i in crossbar.instrs}  # crossbars take integer inputs only
    grouped = lower(legal(ladder.parse(EXAMPLES / "int4_mlp.lir")), "lut-tc")  # group-wise scales and zeros
    assert {"vec.dequant", "mma"} <= {i.mnemonic for i in grouped.instrs}


def test_weight_bits_the_lut_units_lack_go_to_the_systolic_array():
    cfg = hw.with_overrides(BASE, {"weight_bits": [1, 2]})
    prog = lower(bitlinear(wtype="i4"), cfg)
    kinds = {i.mnemonic for i in prog.instrs}
    assert "lmma" not in kinds and {"vec.unpack", "mma"} <= kinds


def attention(hkv=4, rep=2, ctx=64, d=16):
    b = Builder("att")
    q = b.input("q", f"f32[{hkv * rep}, 1, {d}]")
    k = b.input("k", f"f32[{hkv}, {ctx}, {d}]")
    v = b.input("v", f"f32[{hkv}, {ctx}, {d}]")
    return legal(b.build(b.attention(q, k, v, b.input("n", "i32[1]"), causal=True)))


@pytest.mark.parametrize("sram_kb, sets", [(1024, 4), (40, 2), (20, 1)])
def test_attention_heads_get_their_own_buffers_as_the_sram_allows(sram_kb, sets):
    """4 KV heads of ~17 KB of buffers each: all 4 side by side in 1 MB, 2 at a time in 40 KB, one after
    another on shared buffers in 20 KB; the heads of a wave are interleaved instruction by instruction."""
    prog = lower(attention(), hw.with_overrides(BASE, {"sram_kb": sram_kb}))
    y = prog.outputs[0].buffer
    scores = sorted(b.name for b in prog.buffers if b.space == "sram" and ".scores." in b.name)
    assert scores == [f"{y}.scores.h{i}" for i in range(sets)]
    # one key chunk per head (the tiling of one head does not shrink); a wave's scores, then its values
    mmas = [i.dst.buffer for i in prog.instrs if i.mnemonic == "mma"]
    waves = [[f"{y}.{kind}.h{j}" for kind in ("scores", "out") for j in range(sets)] for _ in range(4 // sets)]
    assert mmas == sum(waves, [])
    # every KV head's output rows are stored exactly once
    stores = sorted(i.dst_off for i in prog.instrs if i.mnemonic == "dma.store")
    assert stores == [h * 2 * 16 * 4 for h in range(4)]


def test_unsupported_ops_are_named():
    b = Builder("c")
    x = b.input("x", "f32[4, 8]")
    q, _ = b.quantize(x, scheme="absmax", dtype="i4")
    g = legal(b.build(b.unpack(b.pack(q, layout="nib"))))
    with pytest.raises(LoweringError, match="'pack' defining %.*: the asic target does not lower 'pack' ops"):
        lower(g, "lut-tc")
    with pytest.raises(LoweringError, match="slices with positive steps"):
        lower(legal(b.build(b.slice(x, starts=[3], ends=[0], steps=[-1]))), "lut-tc")
    b = Builder("t")
    x = b.input("x", "f32[4, 8]")
    with pytest.raises(LoweringError, match=r"must keep the last axis \(perm \[1, 0\]\)"):
        lower(legal(b.build(b.transpose(x, perm=[1, 0]))), "lut-tc")


def test_unknown_config_lists_the_shipped_ones():
    with pytest.raises(LadderError, match="no hardware config 'nope'; shipped: .*lut-tc"):
        ladder.compile(ladder.parse(EXAMPLES / "bitlinear.lir"), target="asic:nope")


def test_a_3b_class_decode_step_lowers_fast_to_a_small_program():
    """BitNet b1.58 2B4T's dimensions, 30 layers, one decode token: types only, no weights needed."""
    g = legal(bitnet_decoder(SIZES["2b"], 1))
    t0 = time.perf_counter()
    prog = lower(g, "lut-tc")
    seconds = time.perf_counter() - t0
    stats = prog.stats()
    assert stats["instructions"] < 100_000
    assert seconds < 20  # ~2-4 s on a loaded 2-core machine
    assert stats["per_mnemonic"]["lmma"] > 0 and stats["per_mnemonic"]["vec.attn_softmax"] == 30 * 5
    ternary = SIZES["2b"].ternary_params()
    assert stats["macs"] >= ternary  # every ternary weight is multiplied once per token


def test_ladder_compile_runs_the_functional_simulator(tmp_path):
    g = ladder.parse(EXAMPLES / "bitlinear.lir")
    w = W.random(g, 0)
    m = ladder.compile(g, target="asic:lut-tc", weights=w)
    x = np.random.default_rng(0).standard_normal((2, 128)).astype(np.float32)
    assert np.array_equal(m({"x": x})["y"], ladder.run(g, {"x": x}, w)["y"])
    assert "config lut-tc:" in m.report() and "lmma" in m.source()
    assert parse_program(m.source("isa")) == m._backend.program
    (path,) = m.write(tmp_path / "bl.isa")
    assert parse_program(path.read_text()) == m._backend.program
    with pytest.raises(LadderError, match="emits isa, not 'asm'"):
        m.source("asm")


def test_threads_the_simulator_cannot_use_are_errors_and_cache_and_jit_are_accepted(tmp_path):
    g = ladder.parse(EXAMPLES / "bitlinear.lir")
    w = W.random(g, 0)
    x = np.random.default_rng(0).standard_normal((2, 128)).astype(np.float32)
    # what ladder.compile passes by default (the user's cache folder, jit=True) and jit=False / a cache path
    m = ladder.compile(g, target="asic:lut-tc", weights=w)
    for extra in ({"threads": 1}, {"cache": tmp_path, "jit": False}, {"cache": False}):
        assert np.array_equal(ladder.compile(g, target="asic:lut-tc", weights=w, **extra)({"x": x})["y"],
                              m({"x": x})["y"])
    assert np.array_equal(m({"x": x}, threads=1)["y"], m({"x": x})["y"])
    for threads in (2, 0):
        with pytest.raises(LadderError, match=f"simulates on one thread; threads={threads} cannot apply"):
            ladder.compile(g, target="asic:lut-tc", weights=w, threads=threads)
    with pytest.raises(LadderError, match="threads=4 cannot apply"):
        m({"x": x}, threads=4)


def test_cli_compile_emits_isa(tmp_path):
    out = tmp_path / "bl.isa"
    assert cli_main(["compile", str(EXAMPLES / "bitlinear.lir"), "--target", "asic:lut-tc", "--emit", "isa",
                     "-o", str(out)]) == 0
    prog = parse_program(out.read_text(), str(out))
    assert prog.config == "lut-tc" and any(i.mnemonic == "lmma" for i in prog.instrs)
    assert cli_main(["compile", str(EXAMPLES / "bitlinear.lir"), "--target", "asic:lut-tc", "--emit", "so",
                     "-o", str(out)]) != 0


def test_cli_run_on_the_functional_simulator(tmp_path):
    lir = str(EXAMPLES / "bitlinear.lir")
    common = ["--random-weights", "0", "--random-inputs", "1"]
    assert cli_main(["run", lir, "--target", "asic:lut-tc", "--output", str(tmp_path / "a.npz")] + common) == 0
    assert cli_main(["run", lir, "--target", "ref", "--output", str(tmp_path / "r.npz")] + common) == 0
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "r.npz") as r:
        assert np.array_equal(a["y"], r["y"])
