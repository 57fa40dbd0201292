"""The ASIC ISA: hardware configs, instructions (units, reads/writes, work) and the assembly text round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import ladder
from ladder.backends.asic import config as hw
from ladder.backends.asic.asm import parse_program, print_program
from ladder.backends.asic.isa import (Barrier, Buffer, DmaCopy, DmaGather, DmaLoad, DmaStore, IsaError, Lmma,
                                      LutBuild, Mma, Program, Tile, Vec, Xmma)
from ladder.backends.asic.lower import lower
from ladder.errors import LadderError, ParseError
from ladder.models import SIZES, bitnet_decoder
from ladder.passes import PassManager, default_pipeline
from ladder.target import get_target

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIGS = hw.shipped_configs()


def lowered(g, config="lut-tc"):
    return lower(PassManager(default_pipeline("asic:lut-tc")).run(g), config)


# -- configs -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_every_shipped_config_loads_and_validates(name):
    cfg = hw.load_config(name)
    assert cfg.name == name
    assert cfg.sram_bytes > 0 and cfg.clock_mhz > 0 and cfg.dram_gbps > 0
    assert cfg.weight_placement in hw.PLACEMENTS and cfg.systolic.dataflow in hw.DATAFLOWS


def test_lut_tc_defaults():
    cfg = hw.load_config("lut-tc")
    assert (cfg.lut.tile.m, cfg.lut.tile.n, cfg.lut.tile.k) == (2, 64, 4)
    assert cfg.weight_placement == "stream" and cfg.sram_bytes == 1 << 20 and cfg.weight_bits == (1, 2, 4)


def test_config_by_path_and_unknown_name(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('name = "mine"\nsram_kb = 64\n[energy]\nsram_pj_per_byte = 1.5\n')
    cfg = hw.load_config(p)
    assert cfg.name == "mine" and cfg.sram_kb == 64.0
    assert cfg.section("energy") == {"sram_pj_per_byte": 1.5}  # pass-through table
    with pytest.raises(hw.ConfigError, match="no hardware config 'nope'; shipped: .*lut-tc"):
        hw.load_config("nope")


@pytest.mark.parametrize("text, message", [
    ('name = "x"\nsram_kib = 4\n', "unknown key 'sram_kib'"),
    ('name = "x"\n[lut]\nunit = 4\n', r"unknown key 'unit' in \[lut\]; known: group, mirror"),
    ('name = "x"\n[systolic]\ndataflow = "rs"\n', "dataflow must be one of ws, os, is"),
    ('name = "x"\nweight_placement = "flash"\n', "weight_placement must be one of stream, resident, hardwired"),
    ('name = "x"\nsram_kb = "big"\n', "'sram_kb' must be float"),
    ('name = "x"\nsram_kb = 0\n', "'sram_kb' must be > 0"),
    ('sram_kb = 4\n', "needs a name"),
    ('name = "x"\nsram_kb = \n', "mine.toml"),
])
def test_config_errors_name_the_key(tmp_path, text, message):
    p = tmp_path / "mine.toml"
    p.write_text(text)
    with pytest.raises(hw.ConfigError, match=message):
        hw.load_config(p)


def test_config_overrides_are_validated():
    cfg = hw.load_config("lut-tc")
    small = hw.with_overrides(cfg, {"sram_kb": 256, "systolic.rows": 64, "lut.tile.n": 32})
    assert (small.sram_kb, small.systolic.rows, small.lut.tile.n) == (256.0, 64, 32)
    assert cfg.sram_kb == 1024.0  # the original is unchanged
    with pytest.raises(hw.ConfigError, match="no key 'row'"):
        hw.with_overrides(cfg, {"systolic.row": 64})
    with pytest.raises(hw.ConfigError, match="must be > 0"):
        hw.with_overrides(cfg, {"sram_kb": -1})


def test_asic_target_has_the_lut_packings():
    t = get_target("asic:lut-tc")
    assert t.name == "asic:lut-tc" and t.supports("table-lookup")
    assert t.packing_for(ladder.types.DTYPES["ternary"]).name == "planes"
    with pytest.raises(LadderError, match="needs a hardware config name"):
        get_target("asic:")


# -- instructions ----------------------------------------------------------------------------------------

def test_instructions_declare_unit_buffers_and_work():
    acc = Tile("acc", "i32", (2, 64), offset=256, stride=128)
    lut = Tile("lut", "i16", (2, 640, 16))
    w = Tile("w0", "ternary", (64, 2560), layout="planes")
    lm = Lmma(dst=acc, table=lut, w=w, acc=True, op="y")
    assert lm.unit == "lut" and lm.writes() == ("acc",) and set(lm.reads()) == {"lut", "w0", "acc"}
    work = lm.work()
    assert (work.m, work.n, work.k, work.bits, work.macs) == (2, 64, 2560, 2, 2 * 64 * 2560)
    assert w.nbytes == 64 * 2 * 320  # two bit planes of 2560 / 8 bytes per row
    assert Lmma(dst=acc, table=lut, w=w).reads() == ("lut", "w0")  # overwrite: dst is not read
    d = DmaLoad(dst="x0", src="x", rows=4, row_bytes=100, src_stride=400)
    assert d.unit == "dma" and d.work().bytes == 400 and d.reads() == ("x",) and d.writes() == ("x0",)
    x = Xmma(dst=acc, x=Tile("x", "i8", (2, 2560)), w=Tile("xb", "i1", (64, 2560), layout="planes"))
    assert x.unit == "xbar" and x.work().bits == 1
    mm = Mma(dst=Tile("s", "f32", (4, 64)), a=Tile("q", "f32", (4, 128)), b=Tile("k", "f32", (64, 128)),
             transpose_b=True)
    assert mm.unit == "mma" and (mm.work().m, mm.work().n, mm.work().k) == (4, 64, 128)
    v = Vec(fn="rmsnorm", dst=(Tile("o", "f32", (4, 128)),), src=(Tile("i", "f32", (4, 128)),))
    assert v.unit == "vec" and v.mnemonic == "vec.rmsnorm" and v.work().elems == 512
    assert Barrier().unit == "sync" and Barrier().reads() == ()
    assert LutBuild(dst=lut, src=Tile("x", "i8", (2, 2560))).work().elems == 2 * 640 * 16
    assert acc.span == (128 + 64) * 4  # a strided tile covers whole rows but the last


def test_program_check_names_the_instruction_and_buffer():
    bufs = [Buffer("a", "sram", 64), Buffer("b", "dram", 64)]
    bad_tile = Program("p", "lut-tc", bufs, [Vec(fn="relu", dst=(Tile("a", "f32", (32,)),),
                                                 src=(Tile("a", "f32", (4,)),), op="r")])
    with pytest.raises(IsaError, match=r"instruction 0 \(vec.relu, op %r\).*128, past the 64-byte buffer %a"):
        bad_tile.check()
    unknown = Program("p", "lut-tc", bufs, [DmaLoad(dst="a", src="zz", row_bytes=4)])
    with pytest.raises(IsaError, match="%zz, which is not a declared buffer"):
        unknown.check()
    too_long = Program("p", "lut-tc", bufs, [DmaLoad(dst="a", src="b", row_bytes=32, rows=3)])
    with pytest.raises(IsaError, match="src rows end at byte 96, past the 64-byte buffer %b"):
        too_long.check()
    with pytest.raises(IsaError, match="space 'disk'"):
        Buffer("c", "disk", 4)


# -- assembly text ------------------------------------------------------------------------------------

def _programs():
    yield "bitlinear", lowered(ladder.parse(EXAMPLES / "bitlinear.lir"))
    yield "int4_mlp", lowered(ladder.parse(EXAMPLES / "int4_mlp.lir"))
    for name in CONFIGS:
        yield f"bitnet-{name}", lowered(bitnet_decoder(SIZES["tiny"], 2), name)


@pytest.mark.parametrize("name, program", list(_programs()), ids=lambda v: v if isinstance(v, str) else "")
def test_assembly_round_trips_real_programs(name, program):
    text = print_program(program)
    again = parse_program(text, f"{name}.isa")
    assert again == program
    assert print_program(again) == text


def test_every_instruction_kind_round_trips():
    t = Tile("a", "f32", (2, 3), offset=8, stride=5)
    w = Tile("w", "i4", (8, 16), layout="planes")
    instrs = [DmaLoad(dst="a", src="b", row_bytes=8, rows=2, src_stride=16, index="i", index_scale=4,
                      index_limit=7, op="x.y"),
              LutBuild(dst=Tile("a", "i16", (2, 4, 16)), src=Tile("a", "i8", (2, 16))),
              Lmma(dst=t, table=t, w=w, acc=True), Xmma(dst=t, x=t, w=w), Mma(dst=t, a=t, b=t, transpose_b=True),
              Vec(fn="clamp", dst=(t,), src=(t,), attrs=(("max", float("inf")), ("min", -1.5))),
              Vec(fn="reduce", dst=(t,), src=(t,), attrs=(("axes", (-1,)), ("kind", "sum"))),
              Vec(fn="attn_softmax", dst=(t,), src=(t, t), attrs=(("causal", True), ("queries", 2), ("row0", 0),
                                                                  ("scale", 0.125))),
              Barrier()]
    p = Program("all", "lut-tc", [Buffer("a", "sram", 4096), Buffer("b", "dram", 64, 4096, "f32", (16,), "input")],
                instrs, sram_bytes=1 << 20)
    assert parse_program(print_program(p)) == p


@pytest.mark.parametrize("text, where, message", [
    ("program @p {\n  lmma dst=3\n}\n", ":2:8", "field 'dst' of 'lmma' must be a tile"),
    ("program @p {\n  foo x=1\n}\n", ":2:3", "unknown opcode 'foo'; known: dma.copy"),
    ("program @p {\n  vec.nope dst=[]\n}\n", ":2:3", "unknown vector function 'nope'"),
    ('program @p {\n  dma.load dst=%a, src=%b, row_bytes="x"\n}\n', ":2:28",
     "'row_bytes' of 'dma.load' must be an integer"),
    ("program @p {\n  dma.load dst=%a, src=%b\n}\n", ":2:3", "needs field\\(s\\) row_bytes"),
    ("program @p {\n  dma.load dst=%a, src=%b, row_bytes=4, rowz=1\n}\n", ":2:41", "has no field 'rowz'"),
    ("program @p {\n  dma.load dst=\"a\", src=%b, row_bytes=4\n}\n", ":2:12", "must be a buffer %name"),
    ("program @p {\n  dma.load dst=%a src=%b\n}\n", ":2:19", "unexpected"),
    ("program @p {\n  buffer %a space=\"disk\", bytes=4\n}\n", ":2:3", "space 'disk'"),
    ("program @p {\n  sync.barrier\n", ":", "unexpected end"),
])
def test_parse_errors_point_at_the_text(text, where, message):
    with pytest.raises(ParseError, match=message) as e:
        parse_program(text, "t.isa")
    assert f"t.isa{where}" in str(e.value)


# -- random programs round trip ------------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,6}", fullmatch=True)
SIZES_ = st.integers(0, 1 << 20)


@st.composite
def tiles(draw, packed: bool = False):
    if packed:
        return Tile(draw(NAMES), draw(st.sampled_from(["ternary", "i4", "i1", "u2"])),
                    (draw(st.integers(1, 64)), draw(st.integers(1, 300))), draw(SIZES_), layout="planes")
    shape = tuple(draw(st.lists(st.integers(1, 64), min_size=1, max_size=3)))
    stride = draw(st.sampled_from([0, shape[-1], shape[-1] + draw(st.integers(1, 99))]))
    return Tile(draw(NAMES), draw(st.sampled_from(["f32", "f16", "i8", "i16", "i32", "u8"])), shape,
                draw(SIZES_), stride)


ATTR_VALUES = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, width=32), st.booleans(),
                        st.sampled_from(["absmax", "i8", "half"]),
                        st.lists(st.integers(-3, 3), max_size=3).map(tuple))


@st.composite
def instructions(draw):
    kind = draw(st.sampled_from(["dma", "gather", "lut", "lmma", "xmma", "mma", "vec", "barrier"]))
    op = draw(st.one_of(st.just(""), NAMES))
    if kind == "dma":
        cls = draw(st.sampled_from([DmaLoad, DmaStore, DmaCopy]))
        return cls(dst=draw(NAMES), src=draw(NAMES), row_bytes=draw(SIZES_), rows=draw(st.integers(1, 99)),
                   src_off=draw(SIZES_), dst_stride=draw(SIZES_), index=draw(st.one_of(st.just(""), NAMES)),
                   index_scale=draw(SIZES_), index_on=draw(st.sampled_from(["src", "dst"])), op=op)
    if kind == "gather":
        return DmaGather(dst=draw(NAMES), table=draw(NAMES), index=draw(NAMES), count=draw(SIZES_),
                         row_bytes=draw(SIZES_), table_rows=draw(SIZES_), index_off=draw(SIZES_), op=op)
    if kind == "lut":
        return LutBuild(dst=draw(tiles()), src=draw(tiles()), op=op)
    if kind in ("lmma", "xmma"):
        other = {"table": draw(tiles())} if kind == "lmma" else {"x": draw(tiles())}
        cls = Lmma if kind == "lmma" else Xmma
        return cls(dst=draw(tiles()), w=draw(tiles(packed=True)), acc=draw(st.booleans()), op=op, **other)
    if kind == "mma":
        return Mma(dst=draw(tiles()), a=draw(tiles()), b=draw(tiles()), transpose_b=draw(st.booleans()), op=op)
    if kind == "vec":
        attrs = draw(st.dictionaries(st.from_regex(r"[a-z_]{1,6}", fullmatch=True), ATTR_VALUES, max_size=3))
        return Vec(fn=draw(st.sampled_from(["rmsnorm", "mul", "quantize", "attn_softmax", "copy"])),
                   dst=tuple(draw(st.lists(tiles(), min_size=1, max_size=2))),
                   src=tuple(draw(st.lists(tiles(), max_size=3))), attrs=tuple(sorted(attrs.items())), op=op)
    return Barrier(op=op)


@settings(max_examples=60, deadline=None)
@given(st.lists(instructions(), max_size=8), st.text(min_size=1, max_size=12))
def test_random_programs_round_trip(instrs, name):
    p = Program(name, "lut-tc", [Buffer("b", "dram", 8)], instrs, sram_bytes=1024)
    assert parse_program(print_program(p)) == p
