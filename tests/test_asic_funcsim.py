"""The functional simulator against the reference interpreter: bit-exact on integer paths, within a float
rounding bound elsewhere, over the examples, seeded random graphs and shapes, every shipped config and the
tiny BitNet decoder.

Float bound: results that sum in another order than the reference (K tiles of an ``mma``, key chunks of
attention) must lie within ``FLOAT_RTOL`` x max|reference| of it (elementwise); everything else is compared
with ``np.array_equal``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ladder
from ladder import weights as W
from ladder.backends.asic import config as hw
from ladder.backends.asic import funcsim
from ladder.backends.asic.isa import Buffer, Lmma, LutBuild, Program, Tile, Xmma
from ladder.backends.asic.lower import LoweringError, lower
from ladder.builder import Builder
from ladder.errors import RuntimeFailure
from ladder.interpreter import Session
from ladder.models import SIZES, bitnet_decoder
from ladder.packing import get_packing
from ladder.passes import PassManager, default_pipeline
from ladder.types import DTYPES

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FLOAT_RTOL = 1e-5
BASE = hw.load_config("lut-tc")
# Every shipped config, plus lut-tc variants that force the other paths: a tiny SRAM (many tiles, key
# chunks, row tiles), crossbar-resident and hardwired weights, and LUT units that take no 2-bit weights.
CONFIGS = [hw.load_config(n) for n in hw.shipped_configs()] + [
    hw.with_overrides(BASE, {"name": "tight", "sram_kb": 24, "tile_kb": 1}),
    hw.with_overrides(BASE, {"name": "resident", "weight_placement": "resident", "sram_kb": 48, "tile_kb": 2}),
    hw.with_overrides(BASE, {"name": "hardwired", "weight_placement": "hardwired", "sram_kb": 48, "tile_kb": 2}),
    hw.with_overrides(BASE, {"name": "no-2bit", "weight_bits": [1], "sram_kb": 64, "tile_kb": 2}),
    hw.with_overrides(BASE, {"name": "no-mirror", "lut.mirror": False, "sram_kb": 32, "tile_kb": 1}),
]
IDS = [c.name for c in CONFIGS]


def simulate(g, w, inputs, cfg):
    """(reference outputs, simulated outputs, program) of graph g."""
    legal = PassManager(default_pipeline("asic:lut-tc")).run(g)
    prog = lower(legal, cfg)
    images = funcsim.build_images(prog, legal, Session(legal, w).fixed)
    return ladder.run(g, inputs, w), funcsim.run(prog, inputs, images), prog


def assert_same(ref, out, exact: bool):
    assert list(ref) == list(out)
    for k in ref:
        assert out[k].dtype == ref[k].dtype and out[k].shape == ref[k].shape, k
        if exact:
            assert np.array_equal(out[k], ref[k]), k
        else:
            bound = FLOAT_RTOL * max(1.0, float(np.max(np.abs(ref[k]))))
            np.testing.assert_allclose(out[k].astype(np.float64), ref[k].astype(np.float64), rtol=0, atol=bound)


def random_inputs(g, seed, start: int = 3):
    """Random inputs; a decoder step's (ladder.models convention) get valid positions and tokens."""
    rng = np.random.default_rng(seed)
    inputs = {v.name: W.random_tensor(rng, v.type) for v in g.inputs}
    if "start" in inputs:
        seq = g.value("pos").type.shape[0]
        inputs.update(pos=np.arange(start, start + seq, dtype=np.int32), start=np.array([start], np.int32),
                      kv_len=np.array([start + seq], np.int32))
    if "tokens" in inputs:
        inputs["tokens"] = rng.integers(0, 16, inputs["tokens"].shape).astype(np.int32)
    return inputs


def example(name: str):
    """An example graph; ffn.lir at a tenth of its width (its real 6912 x 2560 weights take minutes to simulate;
    test_asic_lower lowers the full one)."""
    text = (EXAMPLES / name).read_text()
    if name == "ffn.lir":
        text = text.replace("6912", "640").replace("2560", "256")
    return ladder.parse(text, name)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.lir")))
def test_examples_match_the_interpreter(cfg, name):
    g = example(name)
    ref, out, _ = simulate(g, W.random(g, 0), random_inputs(g, 1), cfg)
    # bitlinear is all integer path up to its final f32 scaling: bit for bit
    assert_same(ref, out, exact=name == "bitlinear.lir")


def test_a_graph_too_big_for_the_sram_is_an_error():
    g = ladder.parse(EXAMPLES / "ffn.lir")
    cfg = hw.with_overrides(BASE, {"name": "tight", "sram_kb": 8})
    # the f32 tables of one 2560-wide activation row alone are 640 groups x 9 (mirrored) entries x 4 bytes
    with pytest.raises(LoweringError, match=r"ffn.lir:8:10: .*'qmatmul' defining %a does not fit the SRAM: buffer "
                                            r"%a.lut needs 23,040 bytes \(.* in all\) but the SRAM of config tight "
                                            r"has 8,192 bytes"):
        lower(PassManager(default_pipeline("asic:lut-tc")).run(g), cfg)


def bitlinear_graph(m, k, n, wtype, epilogue):
    b = Builder("bl")
    x = b.input("x", f"f32[{m}, {k}]")
    xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
    w = b.param("w", f"{wtype}[{n}, {k}]")
    ws = b.param("ws", f"f32[{n}]")
    y = b.mul(b.mul(b.cast(b.matmul(xq, w, transpose_b=True), dtype="f32"), xs), ws)
    if epilogue:
        y = b.relu2(y)
    return b.build(y, b.matmul(xq, w, transpose_b=True, name="acc"))


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_random_bitlinear_shapes_are_bit_exact(cfg):
    """Integer path: int8 activations x every LUT weight type, odd K (not a multiple of 4 or 8), N = 1, M > 1."""
    rng = np.random.default_rng(7)
    for case in range(6):
        m, k, n = int(rng.integers(1, 5)), int(rng.integers(1, 300)), int(rng.integers(1, 150))
        wtype = ["ternary", "i1", "i2", "u2", "i4", "u4"][case]
        g = bitlinear_graph(m, k, n if case else 1, wtype, case % 2 == 0)
        ref, out, _ = simulate(g, W.random(g, case), random_inputs(g, case), cfg)
        assert_same(ref, out, exact=True)


@pytest.mark.parametrize("seed", range(8))
def test_random_configs_and_shapes_are_bit_exact(seed):
    """Random SRAM and tile sizes, placements, LUT widths and table forms against random BitLinear shapes."""
    rng = np.random.default_rng(100 + seed)
    cfg = hw.with_overrides(BASE, {
        "name": f"random{seed}", "sram_kb": int(rng.integers(12, 80)), "tile_kb": float(rng.choice([0.5, 1, 4])),
        "weight_placement": str(rng.choice(["stream", "resident", "hardwired"])),
        "weight_bits": [int(rng.choice([1, 2, 4]))], "lut.tile.n": int(rng.choice([16, 64])),
        "lut.mirror": bool(rng.integers(0, 2))})
    m, k, n = int(rng.integers(1, 9)), int(rng.integers(1, 400)), int(rng.integers(1, 1500))
    wtype = str(rng.choice(["ternary", "i1", "i2", "u2", "i4", "u4"]))
    g = bitlinear_graph(m, k, n, wtype, bool(rng.integers(0, 2)))
    ref, out, _ = simulate(g, W.random(g, seed), random_inputs(g, seed), cfg)
    assert_same(ref, out, exact=True)


@pytest.mark.parametrize("transpose_b", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
def test_float_activations_on_f32_tables(transpose_b, per_channel):
    """qmatmul with f32 activations: lut.build f32 tables + lmma, then the per-tensor or per-channel scale."""
    k, n = 200, 96
    b = Builder("fq")
    x = b.input("x", f"f32[3, {k}]")
    w = b.param("w", f"i2[{n}, {k}]" if transpose_b else f"i2[{k}, {n}]")
    scale = ([n, 1] if transpose_b else [1, n]) if per_channel else [1]
    s = b.param("s", f"f32[{', '.join(map(str, scale))}]")
    g = b.build(b.silu(b.matmul(x, b.dequant(w, s, axis=1 if transpose_b else 0), transpose_b=transpose_b)))
    cfg = hw.with_overrides(BASE, {"name": "fq", "tile_kb": 1})
    ref, out, prog = simulate(g, W.random(g, 2), random_inputs(g, 2), cfg)
    assert {"lut.build", "lmma"} <= {i.mnemonic for i in prog.instrs}
    assert_same(ref, out, exact=False)


@pytest.mark.parametrize("placement", ["stream", "resident"])
def test_wide_outputs_are_chunked_and_bit_exact(placement):
    """N = 3000 outputs do not fit a 16 KB SRAM as one int32 row: the accumulator works in chunks, each with
    its slice of a per-column scale and of a full [M, N] scale."""
    m, k, n = 3, 72, 3000
    b = Builder("wide")
    x = b.input("x", f"f32[{m}, {k}]")
    s1 = b.input("s1", f"f32[{m}, {n}]")
    xq, _ = b.quantize(x, scheme="absmax", dtype="i8")
    w = b.param("w", f"ternary[{n}, {k}]")
    y = b.mul(b.mul(b.cast(b.matmul(xq, w, transpose_b=True), dtype="f32"), s1), b.param("ws", f"f32[{n}]"))
    g = b.build(b.relu2(y))
    cfg = hw.with_overrides(BASE, {"name": "wide", "sram_kb": 16, "tile_kb": 2, "weight_placement": placement})
    ref, out, prog = simulate(g, W.random(g, 1), random_inputs(g, 1), cfg)
    assert_same(ref, out, exact=True)
    stores = [i for i in prog.instrs if i.mnemonic == "dma.store" and i.dst == prog.outputs[0].buffer]
    assert len(stores) > 1 and all(i.rows == m and i.dst_stride == n * 4 for i in stores)


@pytest.mark.parametrize("seed", range(4))
def test_random_row_ops_are_bit_exact(seed):
    """Element-wise ops with broadcasts, norms, softmax and reductions, tiled by rows in a small SRAM."""
    rng = np.random.default_rng(seed)
    rows, cols = int(rng.integers(1, 90)), int(rng.integers(1, 200))
    b = Builder("rows")
    x = b.input("x", f"f32[{rows}, {cols}]")
    y = b.input("y", f"f32[{rows}, 1]")
    v = b.param("v", f"f32[{cols}]")
    h = b.rmsnorm(b.add(b.mul(x, y), v), v, eps=1e-5)
    s = b.softmax(b.silu(h), axis=-1)
    r = b.reduce(b.sub(s, x), kind="max", axes=[1], keepdims=True)
    q, qs = b.quantize(b.layernorm(h, v, v), scheme="absmax", dtype="i8")
    g = b.build(s, r, q, qs, b.cast(b.tanh(h), dtype="f16"))
    cfg = hw.with_overrides(BASE, {"name": "rows", "sram_kb": 8})
    ref, out, prog = simulate(g, W.random(g, seed), random_inputs(g, seed), cfg)
    assert_same(ref, out, exact=True)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("sram_kb", [6, 64])
def test_attention_in_row_tiles_and_key_chunks(causal, sram_kb):
    """Grouped-query attention over a 96-position cache: a 6 KB SRAM needs several query-row tiles per KV head
    and several key chunks (float bound); 64 KB takes each head in one piece (bit for bit)."""
    b = Builder("att")
    q = b.input("q", "f32[4, 12, 16]")
    k = b.input("k", "f32[2, 96, 16]")
    v = b.input("v", "f32[2, 96, 8]")
    n = b.input("n", "i32[1]")
    g = b.build(b.attention(q, k, v, n, causal=causal))
    inputs = random_inputs(g, 5)
    inputs["n"] = np.array([40], np.int32)
    cfg = hw.with_overrides(BASE, {"name": "att", "sram_kb": sram_kb})
    ref, out, prog = simulate(g, {}, inputs, cfg)
    softmax = [i for i in prog.instrs if i.mnemonic == "vec.attn_softmax"]
    chunks = sum(1 for i in prog.instrs if i.mnemonic == "mma") // (2 * len(softmax))
    assert (len(softmax) > 2 and chunks > 1) if sram_kb == 6 else (len(softmax), chunks) == (2, 1)
    assert_same(ref, out, exact=sram_kb == 64)


def test_attention_heads_side_by_side_compute_what_one_after_another_does():
    """4 KV heads of 3 query heads each, one key chunk per head: sharing one set of buffers (12 KB), in 2
    waves of 2 (24 KB) or all 4 side by side (256 KB), interleaved instruction by instruction, the program
    computes the same bits; all match the reference within the float bound (a 3-row mma sums in another
    order than the reference's per-head matmul)."""
    b = Builder("att")
    q = b.input("q", "f32[12, 1, 16]")
    k = b.input("k", "f32[4, 48, 16]")
    v = b.input("v", "f32[4, 48, 8]")
    g = b.build(b.attention(q, k, v, b.input("n", "i32[1]"), causal=True))
    inputs = random_inputs(g, 11)
    inputs["n"] = np.array([31], np.int32)
    outs = {}
    for sram_kb, sets in [(12, 1), (24, 2), (256, 4)]:
        ref, out, prog = simulate(g, {}, inputs, hw.with_overrides(BASE, {"name": "heads", "sram_kb": sram_kb}))
        assert len({b.name for b in prog.buffers if ".scores.h" in b.name}) == sets
        assert sum(1 for i in prog.instrs if i.mnemonic == "mma") == 8   # one key chunk per head
        assert_same(ref, out, exact=False)
        outs[sets] = out
    for sets in (2, 4):
        assert_same(outs[1], outs[sets], exact=True)


@pytest.mark.parametrize("seed", range(3))
def test_data_movement_is_bit_exact(seed):
    """transpose (keeping the last axis), slice, concat and reshape are DMA copies of the same bytes."""
    rng = np.random.default_rng(seed)
    a, b_, c = (int(v) for v in rng.integers(1, 7, 3))
    b = Builder("move")
    x = b.input("x", f"f32[{a}, {b_}, {c}]")
    t = b.transpose(x, perm=[1, 0, 2])
    s = b.slice(t, starts=[0, a // 2], ends=[b_, a], axes=[0, 1], steps=[max(1, b_ // 2), 1])
    cat = b.concat(x, b.neg(x), axis=int(rng.integers(0, 3)))
    g = b.build(t, s, cat, b.reshape(cat, shape=[-1]), b.slice(x, starts=[0], ends=[c], axes=[2]))
    ref, out, prog = simulate(g, {}, random_inputs(g, seed), BASE)
    assert_same(ref, out, exact=True)
    assert {i.mnemonic for i in prog.instrs} >= {"dma.copy"}


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("seq, start", [(1, 6), (4, 0)])
def test_tiny_bitnet_decoder_matches(cfg, seq, start):
    c = SIZES["tiny"]
    g = bitnet_decoder(c, seq)
    inputs = random_inputs(g, 3)
    rng = np.random.default_rng(4)
    inputs.update(tokens=rng.integers(0, c.vocab, seq).astype(np.int32), pos=np.arange(start, start + seq,
                  dtype=np.int32), start=np.array([start], np.int32), kv_len=np.array([start + seq], np.int32))
    ref, out, prog = simulate(g, W.random(g, 0), inputs, cfg)
    # The KV caches come from the integer path (int8 x ternary lmma, scales, rope): bit for bit. The logits
    # pass through attention and the float logits matmul, whose tiles sum in another order.
    caches = [k for k in ref if k != "logits"]
    assert_same({k: ref[k] for k in caches}, {k: out[k] for k in caches}, exact=True)
    assert_same({"logits": ref["logits"]}, {"logits": out["logits"]}, exact=False)


def test_bitnet_keeps_the_kv_cache_in_place():
    g = bitnet_decoder(SIZES["tiny"], 1)
    prog = lower(PassManager(default_pipeline("asic:lut-tc")).run(g), "lut-tc")
    outs = {b.value: b.buffer for b in prog.outputs}
    ins = {b.value: b.buffer for b in prog.inputs}
    assert ins["k_cache0"] in outs.values() and prog.buffer(ins["k_cache0"]).role == "state"


# -- the lmma and xmma instructions on their own ------------------------------------------------------

@pytest.mark.parametrize("wtype", ["ternary", "i1", "u1", "i2", "u2", "i4", "u4"])
@pytest.mark.parametrize("instr, entries", [("lmma", 16), ("lmma", 9), ("xmma", 0)])
def test_table_lookup_matmul_equals_integer_matmul(wtype, instr, entries):
    """lut.build + lmma (16-entry tables, or 9-entry mirrored ones) and xmma against an int64 matmul."""
    rng = np.random.default_rng(0)
    m, k, n = 3, 37, 9
    dt = DTYPES[wtype]
    x = rng.integers(-128, 128, (m, k)).astype(np.int8)
    vals = np.asarray(dt.values, np.float32)
    w = vals[rng.integers(0, len(vals), (n, k))].astype(dt.np_dtype)
    planes = get_packing("planes").pack(w, dt)
    groups = 2 * -(-k // 8)
    bufs = [Buffer("x", "sram", x.nbytes), Buffer("w", "sram", planes.nbytes, 256),
            Buffer("t", "sram", m * groups * 16 * 2, 1024), Buffer("y", "sram", m * n * 4, 4096)]
    wt, yt = Tile("w", wtype, (n, k), layout="planes"), Tile("y", "i32", (m, n))
    if instr == "lmma":
        table = Tile("t", "i16", (m, groups, entries))
        body = [LutBuild(dst=table, src=Tile("x", "i8", (m, k))), Lmma(dst=yt, table=table, w=wt),
                Lmma(dst=yt, table=table, w=wt, acc=True)]
    else:
        body = [Xmma(dst=yt, x=Tile("x", "i8", (m, k)), w=wt), Xmma(dst=yt, x=Tile("x", "i8", (m, k)), w=wt, acc=True)]
    prog = Program("mm", "lut-tc", bufs, body, sram_bytes=1 << 16)
    prog.check()
    machine = funcsim.Machine(prog)
    machine.raw("x")[...] = x.reshape(-1).view(np.uint8)
    machine.raw("w")[...] = planes.reshape(-1)
    funcsim.run(prog, {}, machine=machine)
    expect = 2 * (x.astype(np.int64) @ w.astype(np.int64).T)
    assert np.array_equal(machine.read(yt), expect.astype(np.int32))


# -- runtime errors ------------------------------------------------------------------------------------------

def _decoder_case(start, kv_len, token=0):
    c = SIZES["tiny"]
    g = bitnet_decoder(c, 1)
    inputs = random_inputs(g, 3)
    inputs.update(tokens=np.array([token], np.int32), pos=np.array([start], np.int32),
                  start=np.array([start], np.int32), kv_len=np.array([kv_len], np.int32))
    legal = PassManager(default_pipeline("asic:lut-tc")).run(g)
    prog = lower(legal, "lut-tc")
    images = funcsim.build_images(prog, legal, Session(legal, W.random(g, 0)).fixed)
    return prog, inputs, images


@pytest.mark.parametrize("start, kv_len, token, message", [
    (64, 65, 0, r"dma.copy of %\d+: position 64 is outside 0 \.\. 63"),
    (3, 70, 0, "kv_len 70 must be between the 1 queries and the cache size 64"),
    (3, 4, 999, "dma.gather of %.*: index 999 is out of range for axis 0 of size 256"),
])
def test_runtime_errors_name_the_instruction(start, kv_len, token, message):
    prog, inputs, images = _decoder_case(start, kv_len, token)
    with pytest.raises(RuntimeFailure, match=message):
        funcsim.run(prog, inputs, images)


def test_inputs_are_checked_like_the_interpreter():
    prog, inputs, images = _decoder_case(3, 4)
    with pytest.raises(RuntimeFailure, match="input %kv_len : i32\\[1\\] is missing"):
        funcsim.run(prog, {k: v for k, v in inputs.items() if k != "kv_len"}, images)
    with pytest.raises(RuntimeFailure, match="has no input %nope"):
        funcsim.run(prog, {**inputs, "nope": 1}, images)
