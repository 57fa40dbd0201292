"""qmatmul_q8 (llama.cpp's Q8_0 dot products) on the LLVM backend against the reference interpreter, and the fuse
rule that makes it from the GGUF importer's graph.

Tolerance: |y - ref| <= 1e-5 * sum_k |x'||w'| (x', w' the dequantized values). The reference multiplies the
dequantized values in f32 (BLAS); the kernel sums each block's 32 integer products exactly and scales the sum
once by both blocks' scales, then adds blocks in 8-lane f32 accumulators: only rounding and summation order
differ, and over K <= 288 that is far below 1e-5 of the bound. Thread counts must agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_llvm_matmul import G, Guarded, check

import ladder
from ladder import Builder
from ladder.backends.llvm.compiler import compile_graph
from ladder.backends.llvm.lowerings import q8dot
from ladder.errors import VerifyError
from ladder.packing import from_codes, get_packing
from ladder.passes import PassManager
from ladder.target import get_target
from ladder.types import DTYPES

TARGETS = ["cpu", "cpu:generic"]
# (weight dtype, layout or None for unpacked, scale dtype)
WEIGHTS = [("i8", None, "f16"), ("i8", None, "f32"), ("i8", None, "bf16"), ("i4", "nib16+f16", None),
           ("i4", "nib16", "f32"), ("u4", "nib16+bf16", None), ("u4", "nib16", "f16"),
           ("i4", None, "f16"), ("ternary", "crumb32", "f32"), ("i4", "q4+f16", None), ("u4", "q4", "f32"),
           ("i8", "q8+f16", None), ("i8", "q8", "f32")]
F16 = {"f16": np.float16, "f32": np.float32, "bf16": DTYPES["bf16"].np_dtype}


def _codes(rng, dname, shape):
    dt = DTYPES[dname]
    if dname == "i8":
        return rng.integers(-128, 128, shape).astype(np.int8)
    return from_codes(rng.integers(0, 3 if dname == "ternary" else 16, shape).astype(np.uint8), dt)


def _case(gb: G, rng, dname, layout, sdt, lead, M, N, K, group=32, sx_dt="f32", epilogue=""):
    """x (i8 codes, -128 included) with per-group scales sx, times weights of dname (packed in layout) with
    per-group scales; adds the op to gb with its tolerance."""
    nb = -(-K // group)
    x = rng.integers(-128, 128, lead + (M, K)).astype(np.int8)
    x.flat[:3] = -128
    sx = (rng.random(lead + (M, nb)) * 0.05 + 0.001).astype(F16[sx_dt])
    xn = gb.input(x, "i8")
    sxn = gb.input(sx, sx_dt)
    w = _codes(rng, dname, (N, K))
    wn = gb.param(w, dname)
    inline = layout is not None and "+" in layout
    s_dt = get_packing(layout).scale.name if inline else sdt
    s = (rng.random((N, nb)) * 0.02 + 0.001).astype(F16[s_dt])
    sn = gb.param(s, s_dt)
    shape = f"[{N}, {K}]"
    if layout is None:
        operands = f"%{xn}, %{sxn}, %{wn}, %{sn}"
    elif inline:
        gb.lines.append(f'%p{wn} = pack %{wn}, %{sn} {{layout = "{layout}"}} : {dname}<{layout}>{shape}')
        operands = f"%{xn}, %{sxn}, %p{wn}"
    else:
        gb.lines.append(f'%p{wn} = pack %{wn} {{layout = "{layout}"}} : {dname}<{layout}>{shape}')
        operands = f"%{xn}, %{sxn}, %p{wn}, %{sn}"
    xv = np.maximum(x, -127).astype(np.float64) * np.repeat(sx.astype(np.float64), group, axis=-1)[..., :K]
    wv = DTYPES[dname].to_values(w).astype(np.float64) * np.repeat(s.astype(np.float64), group, axis=-1)[:, :K]
    tol = 1e-5 * (np.abs(xv) @ np.abs(wv).T) + 1e-30
    epi = f', epilogue = ["{epilogue}"]' if epilogue else ""
    attrs = f" {{group = {group}{epi}}}"
    out = f"f32[{', '.join(map(str, lead + (M, N)))}]"
    if epilogue:
        tol = np.maximum(tol, 1e-5)  # silu of values agreeing to tol
    gb.op(f"qmatmul_q8 {operands}{attrs}", out, tol=tol)


@pytest.mark.parametrize("dname,layout,sdt", WEIGHTS, ids=[f"{d}-{p or 'raw'}-{s or 'inline'}" for d, p, s in WEIGHTS])
def test_qmatmul_q8_matches_the_reference(dname, layout, sdt):
    rng = np.random.default_rng(hash((dname, layout, sdt)) % 2**32)
    gb = G()
    # M 1..9, N odd, K 32..288 (9 blocks: a group of 8 and one more), and one K no whole number of blocks
    for M, N, K in [(1, 7, 32), (2, 5, 64), (3, 1, 96), (4, 13, 256), (5, 3, 288), (9, 11, 160), (1, 9, 288),
                    (7, 5, 69)]:
        _case(gb, rng, dname, layout, sdt, (), M, N, K)
    check(gb, TARGETS)


def test_qmatmul_q8_batch_dims_f16_x_scales_groups_and_epilogue():
    rng = np.random.default_rng(7)
    gb = G()
    _case(gb, rng, "i8", None, "f16", (2, 3), 2, 5, 64)
    _case(gb, rng, "i4", "nib16+f16", None, (2,), 3, 7, 96, sx_dt="f16")
    _case(gb, rng, "i8", None, "f32", (), 3, 5, 64, group=16)  # a scale per 16: two a block
    _case(gb, rng, "i8", None, "f32", (), 3, 5, 64, group=8)  # another group: the generic kernel
    _case(gb, rng, "i4", "nib16+f16", None, (), 5, 9, 288, epilogue="silu")
    check(gb, TARGETS)


@pytest.mark.parametrize("M", [1, 4, 9, 70])  # 70 rows: more than one pass over the weights at K = 2048
def test_qmatmul_q8_many_rows_and_long_rows(M):
    rng = np.random.default_rng(M)
    gb = G()
    _case(gb, rng, "i8", None, "f16", (), M, 6, 2048)
    _case(gb, rng, "i4", "nib16+f16", None, (), M, 3, 2048)
    check(gb, ["cpu"])


TILE_WEIGHTS = [("i8", None, "f16"), ("i4", "nib16+f16", None), ("i4", "nib16", "f32"), ("u4", "nib16+bf16", None),
                ("i4", "q4+f16", None), ("i8", "q8+f16", None)]


@pytest.mark.parametrize("target", ["cpu", "cpu:avx2"])  # 32 vector registers (4 x 4 tiles) or 16 (4 x 2)
@pytest.mark.parametrize("dname,layout,sdt", TILE_WEIGHTS, ids=[f"{d}-{p or 'raw'}" for d, p, _ in TILE_WEIGHTS])
def test_qmatmul_q8_register_tiles_and_their_edges(target, dname, layout, sdt):
    """Rows of x in register tiles (MTILE rows x NTILE weight rows): M and N on and off multiples of the tile
    (the rows left over one at a time, the weight rows left over one a tile), a pass boundary (K = 2048: 64 rows
    a pass), f16 x scales, K not a whole number of blocks (the generic kernel); threads 1 and 2 agree bit for
    bit (they split the weight rows at other tile boundaries)."""
    rng = np.random.default_rng(len(dname + (layout or "")) + len(target))
    gb = G()
    for M, N, K in [(4, 4, 64), (8, 8, 96), (5, 9, 160), (7, 13, 32), (11, 3, 256), (12, 17, 288), (6, 1, 64),
                    (67, 10, 2048), (5, 6, 69)]:
        _case(gb, rng, dname, layout, sdt, (), M, N, K)
    _case(gb, rng, dname, layout, sdt, (), 9, 7, 128, sx_dt="f16")
    _case(gb, rng, dname, layout, sdt, (2,), 6, 5, 64, epilogue="silu")
    check(gb, [target])


@pytest.mark.parametrize("target", ["cpu", "cpu:avx2", "cpu:generic"])
def test_qmatmul_q8_stays_inside_its_buffers(target):
    """The block kernel on guarded buffers (a read past the end faults, a write outside is seen), at tile edges
    and split between two work ranges as two threads take it."""
    rng = np.random.default_rng(11)
    for M, N, K in [(1, 5, 64), (5, 9, 96), (8, 7, 32), (13, 6, 288)]:
        gb = G()
        for dname, layout, sdt in TILE_WEIGHTS:
            _case(gb, rng, dname, layout, sdt, (), M, N, K)
        g = gb.graph()
        cg = compile_graph(g, gb.weights, target=target, pipeline="")
        ref = ladder.run(g, gb.feeds, weights=gb.weights)
        from ladder.interpreter import Session
        fixed = Session(cg.graph, gb.weights).fixed
        env = dict(gb.feeds)
        steps = [step for step in cg.steps if step.op.kind == "qmatmul_q8"]
        assert len(steps) == len(TILE_WEIGHTS)
        for step in steps:
            ins = [Guarded(fixed[o] if o in fixed else env[o]) for o in step.op.operands]
            r = step.op.results[0]
            out = Guarded(np.full(r.type.storage_shape, np.nan, r.type.storage_np_dtype))
            half = step.spec.work // 2
            for lo, hi in ((0, half), (half, step.spec.work)):
                step.fn(*[a.ptr for a in ins], out.ptr, lo, hi)
            assert all(a.canary_ok() for a in ins + [out]), step.op.describe()
            assert np.all(np.abs(out.arr - ref[r.name]) <= gb.meta[r.name])


def test_the_plan_follows_the_target_and_the_weights():
    """The block kernel takes i8 and nib16 weights in blocks of 32 (vpdpbusd with VNNI, vpmaddubsw with AVX2,
    i16 products elsewhere); other groups, K not a whole number of blocks, and other weights go generic."""
    b = Builder()
    x = b.input("x", "i8[1, 64]")
    sx = b.input("sx", "f32[1, 2]")
    g = b.build(b.qmatmul_q8(x, sx, b.param("w", "i8[3, 64]"), b.param("s", "f16[3, 2]")))
    op = next(o for o in g.ops() if o.kind == "qmatmul_q8")
    types = [g.type_of(o) for o in op.operands]

    class Ctx:
        def __init__(self, t):
            self.target = get_target(t)

    dots = {t: q8dot.plan(Ctx(t), op, types).dot for t in ("cpu:generic", "cpu:avx2", "cpu:avx512",
                                                            "cpu:sapphirerapids", "cpu:znver4", "cpu:x86-64")}
    assert dots == {"cpu:generic": "i16", "cpu:avx2": "madd", "cpu:avx512": "vnni", "cpu:sapphirerapids": "vnni",
                    "cpu:znver4": "vnni", "cpu:x86-64": "i16"}
    assert q8dot.plan(Ctx("cpu:avx2"), op, types).f16c is False  # cpu:avx2 names no F16C: integer conversion
    b2 = Builder()
    g2 = b2.build(b2.qmatmul_q8(b2.input("x", "i8[1, 48]"), b2.input("sx", "f32[1, 3]"),
                                b2.param("w", "i8[3, 48]"), b2.param("s", "f16[3, 3]"), group=16))
    op2 = next(o for o in g2.ops() if o.kind == "qmatmul_q8")
    assert q8dot.plan(Ctx("cpu:avx2"), op2, [g2.type_of(o) for o in op2.operands]) is None
    b3 = Builder()  # a scale per 16 (Q6_K's) and K whole blocks of 32: the block kernel, two scales a block
    g3 = b3.build(b3.qmatmul_q8(b3.input("x", "i8[1, 64]"), b3.input("sx", "f32[1, 4]"),
                                b3.param("w", "i8[3, 64]"), b3.param("s", "f32[3, 4]"), group=16))
    op3 = next(o for o in g3.ops() if o.kind == "qmatmul_q8")
    p3 = q8dot.plan(Ctx("cpu:avx2"), op3, [g3.type_of(o) for o in op3.operands])
    assert p3 is not None and p3.halves and p3.per == 2 and not q8dot.plan(Ctx("cpu:avx2"), op, types).halves


@pytest.mark.parametrize("bad,msg", [
    ("%y = qmatmul_q8 %xf, %sx, %w, %s : f32[2, 3]", "x must be i8"),
    ("%y = qmatmul_q8 %x, %sx, %w : f32[2, 3]", "needs sw"),
    ("%y = qmatmul_q8 %x, %sx, %w, %sbad : f32[2, 3]", "sw must be"),
    ("%y = qmatmul_q8 %x, %sx, %w, %s {group = 16} : f32[2, 3]", "sx must be"),
])
def test_qmatmul_q8_verifies_its_operands(bad, msg):
    text = f"""graph @g(%x: i8[2, 64], %xf: f32[2, 64], %sx: f32[2, 2]) -> f32[2, 3] {{
  %w = param @w : i8[3, 64]
  %s = param @s : f16[3, 2]
  %sbad = param @sbad : f16[3, 4]
  {bad}
  return %y
}}"""
    with pytest.raises(VerifyError, match=msg):
        ladder.parse(text)


# -- the fuse rule ---------------------------------------------------------------------------------------------

def _gguf_like(wdt="i8", scheme="absmax", xgroup=32, wgroup=32, tb=True, f16_round=True, K=64, N=5, M=3):
    """x -> quantize{absmax, i8, per 32} -> (scale through f16) -> dequant; w codes + f16 scales -> dequant;
    matmul{transpose_b}: what the GGUF importer builds for a Q8_0 / Q4_0 projection."""
    b = Builder()
    x = b.input("x", f"f32[{M}, {K}]")
    xq, xs = b.quantize(x, scheme=scheme, dtype="i8", axis=-1, group=xgroup)
    if f16_round:
        xs = b.cast(b.cast(xs, dtype="f16"), dtype="f32")
    xd = b.dequant(xq, xs, axis=-1, group=xgroup)
    shape = (N, K) if tb else (K, N)
    w = b.param("w", f"{wdt}[{', '.join(map(str, shape))}]")
    s = b.param("s", f"f16[{N}, {K // wgroup}]" if tb else f"f16[{K // wgroup}, {N}]")
    wd = b.dequant(w, s, axis=-1 if tb else 0, group=wgroup)
    rng = np.random.default_rng(0)
    weights = {"w": _codes(rng, wdt, shape), "s": (rng.random(s.type.shape) * 0.02 + 0.001).astype(np.float16)}
    return b.build(b.matmul(xd, wd, transpose_b=tb)), weights, rng.standard_normal((M, K)).astype(np.float32)


@pytest.mark.parametrize("wdt", ["i8", "i4"])
def test_fuse_makes_qmatmul_q8_and_keeps_results(wdt):
    g, w, x = _gguf_like(wdt)
    fused = PassManager("canonicalize,legalize-types{target=cpu:avx2},fuse,canonicalize").run(g)
    kinds = [op.kind for op in fused.ops()]
    assert kinds.count("qmatmul_q8") == 1 and "matmul" not in kinds and "qmatmul" not in kinds
    op = next(o for o in fused.ops() if o.kind == "qmatmul_q8")
    assert fused.type_of(op.operands[2]).layout == ("nib16+f16" if wdt == "i4" else None)
    want = ladder.run(g, {"x": x}, w)
    got = ladder.run(fused, {"x": x}, w)
    assert all(np.array_equal(a, b) for a, b in zip(want.values(), got.values()))  # the composition, exactly
    for target in TARGETS:
        out = compile_graph(g, w, target=target).run({"x": x})
        for a, b in zip(out.values(), want.values()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()))


@pytest.mark.parametrize("change", [dict(scheme="absmean"), dict(wgroup=16), dict(tb=False), dict(xgroup=0)])
def test_fuse_leaves_other_chains_alone(change):
    """Not absmax int8 codes (their -128 would be clipped), groups that differ, [K, N] weights, or per-token
    x scales: no qmatmul_q8."""
    if change.get("scheme") == "absmean":
        b = Builder()
        x = b.input("x", "f32[3, 64]")
        xq, xs = b.quantize(x, scheme="absmean", dtype="ternary", axis=-1, group=32)
        wd = b.dequant(b.param("w", "i8[5, 64]"), b.param("s", "f16[5, 2]"), axis=-1, group=32)
        g = b.build(b.matmul(b.dequant(xq, xs, axis=-1, group=32), wd, transpose_b=True))
    else:
        g, _, _ = _gguf_like(**change)
    fused = PassManager("legalize-types{target=cpu:avx2},fuse").run(g)
    assert "qmatmul_q8" not in [op.kind for op in fused.ops()]


def test_fuse_without_int8_blocks_and_the_asic_pipeline():
    from ladder.passes import default_pipeline

    g, _, _ = _gguf_like()
    off = PassManager("legalize-types{target=cpu:avx2},fuse{int8_blocks=false}").run(g)
    assert "qmatmul_q8" not in [op.kind for op in off.ops()] and "qmatmul" in [op.kind for op in off.ops()]
    assert "fuse{int8_blocks=false}" in default_pipeline("asic:lut-tc")
    assert "int8_blocks" not in default_pipeline("cpu")


# -- ternary crumb blocks with Q8_K activations (TQ2_0: backends/llvm/lowerings/q8k.py) --------------------------

CRUMBS = [("crumb64+f16", None, 256), ("crumb64", "f32", 256), ("crumb32+f16", None, 128), ("crumb32", "f16", 128),
          ("tq2+f16", None, 256),  # tq2: llama.cpp's TQ2_0 bytes, the scale after the codes
          ("tq1+f16", None, 256), ("tq1", "f16", 256),  # tq1: TQ1_0's bytes, base-3 digits in three chunks
          ("trit5", "f32", 160)]  # five digits a byte, one 32-byte chunk


@pytest.mark.parametrize("layout,sdt,group", CRUMBS, ids=[c[0] for c in CRUMBS])
def test_qmatmul_q8_ternary_crumb_blocks_match_the_reference(layout, sdt, group):
    """x's codes (-128 included: read as -127) with one scale per block of the weights, ternary weights in crumb
    blocks with one scale each (TQ2_0's dot product with Q8_K blocks for crumb64+f16): rows 1 to 9 (tiles of 4
    and the rest), K one block to several."""
    rng = np.random.default_rng(group + len(layout))
    gb = G()
    for M, N, K in [(1, 7, group), (2, 5, 2 * group), (4, 3, 3 * group), (5, 9, group), (9, 4, 2 * group)]:
        _case(gb, rng, "ternary", layout, sdt, (), M, N, K, group=group)
    _case(gb, rng, "ternary", layout, sdt, (2,), 3, 5, group, group=group, epilogue="silu")
    check(gb, TARGETS)


@pytest.mark.parametrize("dname", ["i2", "u2"])
def test_qmatmul_q8_two_bit_integer_blocks(dname):
    """The same kernel on i2 / u2 codes: the layout's XOR makes them offset codes, the offset (2 or 0) times x's
    block sum comes off."""
    rng = np.random.default_rng(3)
    gb = G()
    for M in (1, 5):
        _case(gb, rng, dname, "crumb64+f16", None, (), M, 6, 512, group=256)
    check(gb, TARGETS)


@pytest.mark.parametrize("layout", ["crumb64+f16", "tq1+f16"])
@pytest.mark.parametrize("M", [1, 70])  # 70 rows: more than one pass over the weights at K = 2560
def test_qmatmul_q8_ternary_long_rows(M, layout):
    rng = np.random.default_rng(M + 1)
    gb = G()
    _case(gb, rng, "ternary", layout, None, (), M, 5, 2560, group=256)
    check(gb, ["cpu"])


@pytest.mark.parametrize("target", ["cpu", "cpu:avx2", "cpu:generic"])
def test_digit_rows_decoded_once_a_pass_stay_inside_their_buffers(target):
    """TQ1_0's digits with several rows of x: each weight row decoded once a pass into a buffer, read by every
    tile of rows (4 and the rest), on guarded buffers, split between two work ranges; the results within the
    reference's tolerance (test_gemv_gives_the_bits_of_a_leftover_row checks a decoded row's bits)."""
    from ladder.interpreter import Session
    rng = np.random.default_rng(23)
    for M, N, K in [(3, 5, 256), (6, 7, 768)]:
        gb = G()
        for layout, sdt in (("tq1+f16", None), ("tq1", "f16")):
            _case(gb, rng, "ternary", layout, sdt, (), M, N, K, group=256)
        g = gb.graph()
        cg = compile_graph(g, gb.weights, target=target, pipeline="")
        ref = ladder.run(g, gb.feeds, weights=gb.weights)
        fixed = Session(cg.graph, gb.weights).fixed
        steps = [step for step in cg.steps if step.op.kind == "qmatmul_q8"]
        assert len(steps) == 2
        for step in steps:
            ins = [Guarded(fixed[o] if o in fixed else gb.feeds[o]) for o in step.op.operands]
            r = step.op.results[0]
            out = Guarded(np.full(r.type.storage_shape, np.nan, r.type.storage_np_dtype))
            cut = step.spec.work // 2 | 1
            for lo, hi in ((0, cut), (cut, step.spec.work)):
                step.fn(*[a.ptr for a in ins], out.ptr, lo, hi)
            assert all(a.canary_ok() for a in ins + [out]), step.op.describe()
            assert np.all(np.abs(out.arr - ref[r.name]) <= gb.meta[r.name]), step.op.describe()


def test_the_crumb_plan_follows_the_target_and_the_layout():
    """crumb blocks of 4B codes (B a multiple of 32) with the op's group = the block take the crumb kernel, its
    dot product by the target; other groups and smaller blocks the generic kernel (still right, slower)."""
    from ladder.backends.llvm.lowerings import q8k

    class Ctx:
        def __init__(self, t):
            self.target = get_target(t)

    def plan_of(target, layout, group, K=512):
        gb = G()
        _case(gb, np.random.default_rng(0), "ternary", layout, "f32", (), 1, 3, K, group=group)
        g = gb.graph()
        op = next(o for o in g.ops() if o.kind == "qmatmul_q8")
        return q8k.plan(Ctx(target), op, [g.type_of(o) for o in op.operands])

    dots = {t: plan_of(t, "crumb64+f16", 256).dot for t in ("cpu:generic", "cpu:avx2", "cpu:znver4", "cpu:x86-64")}
    assert dots == {"cpu:generic": "i16", "cpu:avx2": "madd", "cpu:znver4": "vnni", "cpu:x86-64": "i16"}
    assert plan_of("cpu:avx2", "crumb64+f16", 256).codes_at == 2 and plan_of("cpu:avx2", "crumb64", 256).sw
    assert plan_of("cpu:avx2", "crumb64", 128) is None  # the group is not the block
    assert plan_of("cpu:avx2", "crumb16", 64, K=256) is None  # 16-byte quarters: not whole vectors
    tq2 = plan_of("cpu:avx2", "tq2+f16", 256)
    assert (tq2.codes_at, tq2.scale_at, tq2.stride) == (0, 64, 66)  # the scale after the codes
    # codes 0..31: tq2's lowest bit field of bytes 0..31 (llama.cpp's order), crumb64's highest
    crumb64 = plan_of("cpu:avx2", "crumb64+f16", 256)
    assert (0, 0, 0) in tq2.pieces and (0, 6, 0) in crumb64.pieces and (0, 0, 0) not in crumb64.pieces
    # tq1 (TQ1_0's bytes): eight pieces of 32 digits; codes 0..31 are bytes 0..31 as they are, codes 32..63
    # the same bytes times 3; codes 224..255 are digit 4 of bytes 32..47 beside the four digits of bytes 48..51
    tq1 = plan_of("cpu:avx2", "tq1+f16", 256)
    assert (tq1.radix, tq1.codes_at, tq1.scale_at, tq1.stride, len(tq1.pieces)) == (3, 0, 52, 54, 8)
    assert tq1.pieces[0] == (tuple(range(32)), (1,) * 32, 0) and tq1.pieces[1] == (tuple(range(32)), (3,) * 32, 32)
    assert tq1.pieces[7] == (tuple(range(32, 48)) + (48, 49, 50, 51) * 4, (81,) * 16 + (1,) * 4 + (3,) * 4
                             + (9,) * 4 + (27,) * 4, 224)


# -- the GEMV (one row of x: decode) ---------------------------------------------------------------------------

GEMV_WEIGHTS = [("i8", None, "f16", 32), ("i4", "nib16+f16", None, 32), ("i4", "nib16", "f32", 32),
                ("u4", "nib16+bf16", None, 32), ("u4", "nib16", "f16", 32), ("ternary", "tq2+f16", None, 256),
                ("ternary", "crumb64", "f32", 256), ("i2", "crumb64+f16", None, 256), ("i4", "q4+f16", None, 32),
                ("i8", "q8+f16", None, 32), ("ternary", "tq1+f16", None, 256), ("i8", None, "f32", 16),
                ("i4", "nib16", "f16", 16), ("i8", "q8", "bf16", 16)]
GEMV_IDS = [f"{d}-{p or 'raw'}" for d, p, _, _ in GEMV_WEIGHTS]


def _one_op_graph(rng, dname, layout, sdt, group, M, N, K):
    gb = G()
    _case(gb, rng, dname, layout, sdt, (), M, N, K, group=group)
    return gb


@pytest.mark.parametrize("target", ["cpu", "cpu:avx2", "cpu:generic"])
@pytest.mark.parametrize("dname,layout,sdt,group", GEMV_WEIGHTS, ids=GEMV_IDS)
def test_gemv_gives_the_bits_of_a_leftover_row(target, dname, layout, sdt, group):
    """One row of x takes the GEMV kernel (several weight rows a step); the last row of 5 (left over from a tile
    of 4) takes the row-at-a-time loop. The same x there gives the same bits: N on and off multiples of the
    GEMV's row group, K from one block to whole groups of 8 and a tail."""
    rng = np.random.default_rng(len(GEMV_IDS) + len(target) + group)
    for N, K in [(1, max(group, 32)), (3, 2 * max(group, 32)), (5, 9 * 32 if group <= 32 else 3 * group),
                 (13, 24 * 32), (9, 2048)]:
        gb = _one_op_graph(rng, dname, layout, sdt, group, 5, N, K)
        one = _one_op_graph(rng, dname, layout, sdt, group, 1, N, K)
        cg5 = compile_graph(gb.graph(), gb.weights, target=target, pipeline="")
        x5, s5 = (gb.feeds[k] for k in sorted(gb.feeds))
        x1, s1 = sorted(one.feeds)
        w5 = dict(zip(sorted(gb.weights), [gb.weights[k] for k in sorted(gb.weights)]))
        cg1 = compile_graph(one.graph(), {k1: w5[k5] for k1, k5 in zip(sorted(one.weights), sorted(gb.weights))},
                            target=target, pipeline="")
        feeds1 = {x1: x5[4:5], s1: s5[4:5]}
        got5 = next(iter(cg5.run(gb.feeds).values()))
        got1 = [next(iter(cg1.run(feeds1, threads=t).values())) for t in (1, 2)]
        assert np.array_equal(got1[0], got1[1]), f"{N}x{K}: threads differ"
        assert np.array_equal(got1[0][0].view(np.uint32), got5[4].view(np.uint32)), f"{N}x{K}"


WIDE_WEIGHTS = [w for w in GEMV_WEIGHTS if w[3] <= 32] + [("i8", None, "f32", 32), ("u4", "q4", "f32", 32)]


@pytest.mark.parametrize("dname,layout,sdt,group", WIDE_WEIGHTS, ids=[f"{d}-{p or 'raw'}-{s or 'inline'}"
                                                                       for d, p, s, _ in WIDE_WEIGHTS])
def test_512_bit_tiles_give_every_row_the_bits_of_its_gemv(dname, layout, sdt, group):
    """On AVX-512 VNNI the register tiles take two blocks a 512-bit vector and sum them as the GEMV does, and the
    rows left over from a tile take the GEMV's loop: every row of a prefill is bit for bit the decode of that
    row. M on and off tiles of 4, N on and off tiles of 4, K in whole groups of 8 blocks, with a tail, and a
    single block. Runs where the host has AVX-512 VNNI (compiled for every CPU by the compile matrix)."""
    target = "cpu:avx512"
    if get_target(target).runs_here():
        pytest.skip("this CPU lacks AVX-512 VNNI")
    rng = np.random.default_rng(len(dname + (layout or "") + (sdt or "")))
    for M, N, K in [(9, 7, 9 * 32), (4, 8, 16 * 32), (6, 5, 32), (13, 4, 2048)]:
        gb = _one_op_graph(rng, dname, layout, sdt, group, M, N, K)
        one = _one_op_graph(rng, dname, layout, sdt, group, 1, N, K)
        cgm = compile_graph(gb.graph(), gb.weights, target=target, pipeline="")
        xm, sm = (gb.feeds[k] for k in sorted(gb.feeds))
        wm = [gb.weights[k] for k in sorted(gb.weights)]
        cg1 = compile_graph(one.graph(), dict(zip(sorted(one.weights), wm)), target=target, pipeline="")
        x1, s1 = sorted(one.feeds)
        got = next(iter(cgm.run(gb.feeds).values()))
        ref = ladder.run(gb.graph(), gb.feeds, weights=gb.weights)
        tol = next(iter(gb.meta.values()))
        assert np.all(np.abs(got - next(iter(ref.values()))) <= tol), f"{M}x{N}x{K}"
        for m in range(M):
            row = next(iter(cg1.run({x1: xm[m:m + 1], s1: sm[m:m + 1]}).values()))
            assert np.array_equal(row[0].view(np.uint32), got[m].view(np.uint32)), f"{M}x{N}x{K} row {m}"


@pytest.mark.parametrize("target", ["cpu", "cpu:avx2", "cpu:generic"])
def test_gemv_matches_the_reference_and_stays_inside_its_buffers(target):
    """The GEMV on guarded buffers (a read past the end faults, a write outside is seen; the prefetch hints stay
    inside the weights), split between two work ranges at an odd row as two threads take it."""
    rng = np.random.default_rng(17)
    for N, K in [(1, 256), (6, 512), (7, 768), (13, 2048)]:
        gb = G()
        for dname, layout, sdt, group in GEMV_WEIGHTS:
            _case(gb, rng, dname, layout, sdt, (), 1, N, K, group=group)
        _guarded_steps(gb, target, len(GEMV_WEIGHTS),
                       lambda got, want, name: np.all(np.abs(got - want) <= gb.meta[name]))


def _guarded_steps(gb, target, count, close):
    """Compile ``gb``'s graph for ``target`` and run each of its ``count`` qmatmul_q8 steps on guarded buffers (a
    read past the end faults, a write outside is seen), split between two work ranges at an odd row as two
    threads take it; ``close(got, want, name)`` checks the values against the reference interpreter's."""
    from ladder.interpreter import Session

    g = gb.graph()
    cg = compile_graph(g, gb.weights, target=target, pipeline="")
    ref = ladder.run(g, gb.feeds, weights=gb.weights)
    fixed = Session(cg.graph, gb.weights).fixed
    steps = [step for step in cg.steps if step.op.kind == "qmatmul_q8"]
    assert len(steps) == count
    for step in steps:
        ins = [Guarded(fixed[o] if o in fixed else gb.feeds[o]) for o in step.op.operands]
        r = step.op.results[0]
        out = Guarded(np.full(r.type.storage_shape, np.nan, r.type.storage_np_dtype))
        cut = step.spec.work // 2 | 1 if step.spec.work > 1 else 0
        for lo, hi in ((0, cut), (cut, step.spec.work)):
            step.fn(*[a.ptr for a in ins], out.ptr, lo, hi)
        assert all(a.canary_ok() for a in ins + [out]), step.op.describe()
        assert close(out.arr, ref[r.name], r.name), step.op.describe()


# -- quantized weight scales (a K-quant's integer sub-scales times an f32 per 256: scale_group) ----------------

FACTORED = [("i8", None, 16), ("i8", None, 32), ("u4", "nib16", 32), ("i4", "nib16", 16), ("u4", "nib16", 16)]


def _factored_pair(rng, dname, layout, group, M, N, K):
    """The same product twice: w's scales as i8 sub-scales with an f32 per 256 (``scale_group``), and as the f32
    values those make (``f32(sub) * d``, what the reference's dequant gives)."""
    sg = 256 // group
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    sx = (rng.random((M, K // group)) * 0.05 + 0.001).astype(np.float32)
    w = _codes(rng, dname, (N, K))
    sub = rng.integers(-32, 64, (N, K // group)).astype(np.int8)
    d = (rng.random((N, K // 256)) * 0.01 + 1e-4).astype(np.float16).astype(np.float32)
    f32 = sub.astype(np.float32) * np.repeat(d, sg, axis=-1)
    graphs = []
    for factored in (True, False):
        gb = G()
        xn, sxn = gb.input(x, "i8"), gb.input(sx, "f32")
        wn = gb.param(w, dname)
        if layout is not None:
            gb.lines.append(f'%p{wn} = pack %{wn} {{layout = "{layout}"}} : {dname}<{layout}>[{N}, {K}]')
            wn = f"p{wn}"
        if factored:
            sn, dn = gb.param(sub, "i8"), gb.param(d, "f32")
            gb.op(f"qmatmul_q8 %{xn}, %{sxn}, %{wn}, %{sn}, %{dn} {{group = {group}, scale_group = {sg}}}",
                  f"f32[{M}, {N}]")
        else:
            sn = gb.param(f32, "f32")
            gb.op(f"qmatmul_q8 %{xn}, %{sxn}, %{wn}, %{sn} {{group = {group}}}", f"f32[{M}, {N}]")
        graphs.append(gb)
    return graphs


@pytest.mark.parametrize("target", ["cpu", "cpu:avx2", "cpu:generic"])
@pytest.mark.parametrize("dname,layout,group", FACTORED, ids=[f"{d}-{p or 'raw'}-{g}" for d, p, g in FACTORED])
def test_quantized_weight_scales_give_the_bits_of_their_f32_values(target, dname, layout, group):
    """Every tier of the block kernel (the GEMV, the row-at-a-time loop, the register tiles; 512-bit tiles where
    the host has AVX-512 VNNI) makes each weight scale from its i8 sub-scale and f32 super-block scale as the
    reference does: the results are bit for bit those of the same op given the f32 scales, at 1 and 2 threads;
    the reference interpreter agrees too. M: a GEMV, a tile with a row left over, more than a pass's rows."""
    if get_target(target).runs_here():
        pytest.skip(f"this CPU cannot run {target}")
    rng = np.random.default_rng(group + len(dname + (layout or "")))
    for M, N, K in [(1, 7, 512), (5, 9, 256), (70, 4, 768)]:
        fac, plain = _factored_pair(rng, dname, layout, group, M, N, K)
        got = [next(iter(compile_graph(gb.graph(), gb.weights, target=target, pipeline="").run(
            gb.feeds, threads=t).values())) for gb in (fac, plain) for t in (1, 2)]
        for other in got[1:]:
            assert np.array_equal(other.view(np.uint32), got[0].view(np.uint32)), f"{target} {M}x{N}x{K}"
        refs = [next(iter(ladder.run(gb.graph(), gb.feeds, weights=gb.weights).values())) for gb in (fac, plain)]
        assert np.array_equal(refs[0], refs[1])
        assert np.allclose(got[0], refs[0], rtol=1e-4, atol=1e-4 * float(np.abs(refs[0]).max()))


ZEROS = [("u4", "nib16", 32), ("i8", None, 32), ("u4", "nib16", 16)]  # Q4_K's, Q5_K's and Q2_K's


def _zeros_case(gb, rng, dname, layout, group, x, sx, N):
    """qmatmul_q8 with quantized scales and zeros (w = q * scale - zero, as a K-quant's mins) into ``gb``; x and sx
    given, so that other graphs can take rows of the same x."""
    M, K = x.shape
    sg = 256 // group
    xn, sxn = gb.input(x, "i8"), gb.input(sx, "f32")
    wn = gb.param(_codes(rng, dname, (N, K)), dname)
    if layout is not None:
        gb.lines.append(f'%p{wn} = pack %{wn} {{layout = "{layout}"}} : {dname}<{layout}>[{N}, {K}]')
        wn = f"p{wn}"
    parts = [gb.param(rng.integers(0, 64, (N, K // group)).astype(np.int8), "i8"),
             gb.param((rng.random((N, K // 256)) * 0.01 + 1e-4).astype(np.float32), "f32"),
             gb.param(rng.integers(0, 64, (N, K // group)).astype(np.int8), "i8"),
             gb.param((rng.random((N, K // 256)) * 0.01 + 1e-4).astype(np.float32), "f32")]
    ops = ", ".join(f"%{n}" for n in parts)
    return gb.op(f"qmatmul_q8 %{xn}, %{sxn}, %{wn}, {ops} {{group = {group}, scale_group = {sg}}}", f"f32[{M}, {N}]")


@pytest.mark.parametrize("target", ["cpu", "cpu:avx2", "cpu:generic"])
@pytest.mark.parametrize("dname,layout,group", ZEROS, ids=[f"{d}-{p or 'raw'}-{g}" for d, p, g in ZEROS])
def test_zeros_term_in_every_tier_gives_each_row_its_gemv_bits(target, dname, layout, group):
    """w with zeros (a K-quant's mins): the kernel takes their term from x's code sums; the reference agrees and
    the threads agree. With 512-bit tiles (a target with AVX-512 VNNI, where the host runs it) every row of
    several is bit for bit the GEMV of that row alone, its zeros' term included (256-bit register tiles keep one
    accumulator an output, so there rows agree with the GEMV to rounding only)."""
    t = get_target(target)
    if t.runs_here():
        pytest.skip(f"this CPU cannot run {target}")
    wide = {"avx512f", "avx512bw", "avx512vnni"} <= t.features()
    for M, N, K in [(6, 9, 512), (9, 4, 256), (70, 3, 768)]:
        rng = np.random.default_rng(M + group)
        x = rng.integers(-128, 128, (M, K)).astype(np.int8)
        sx = (rng.random((M, K // group)) * 0.05 + 0.001).astype(np.float32)
        gm = G()
        _zeros_case(gm, np.random.default_rng(1), dname, layout, group, x, sx, N)
        cg = compile_graph(gm.graph(), gm.weights, target=target, pipeline="")
        got = [next(iter(cg.run(gm.feeds, threads=t).values())) for t in (1, 2)]
        assert np.array_equal(got[0].view(np.uint32), got[1].view(np.uint32))
        ref = next(iter(ladder.run(gm.graph(), gm.feeds, weights=gm.weights).values()))
        # the zeros' term cancels most of the codes' (llama.cpp's mins): a bound on both terms' magnitudes
        assert np.allclose(got[0], ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()) + 1e-6)
        for m in (0, M // 2, M - 1) if wide else ():
            g1 = G()
            _zeros_case(g1, np.random.default_rng(1), dname, layout, group, x[m:m + 1], sx[m:m + 1], N)
            one = next(iter(compile_graph(g1.graph(), g1.weights, target=target, pipeline="").run(g1.feeds).values()))
            assert np.array_equal(one[0].view(np.uint32), got[0][m].view(np.uint32)), f"{M}x{N}x{K} row {m}"


@pytest.mark.parametrize("target", ["cpu", "cpu:avx2", "cpu:generic"])
def test_zeros_term_stays_inside_its_buffers(target):
    """The kernel with zeros on guarded buffers, split between two work ranges as two threads take it."""
    rng = np.random.default_rng(23)
    for M, N, K in [(1, 7, 256), (5, 9, 512), (13, 5, 256)]:
        gb = G()
        for dname, layout, group in ZEROS:
            x = rng.integers(-128, 128, (M, K)).astype(np.int8)
            _zeros_case(gb, rng, dname, layout, group, x, (rng.random((M, K // group)) * 0.05).astype(np.float32), N)
        _guarded_steps(gb, target, len(ZEROS), lambda got, want, _: np.allclose(
            got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()) + 1e-6))


def test_quantized_weight_scales_need_both_operands_and_a_plan_that_fits():
    """scale_group's operands are checked; a super-block that is not the kernel's 8 blocks takes the generic
    kernel (its results still the reference's)."""
    def text(op):
        return f"""graph @g(%x: i8[2, 256], %sx: f32[2, 8]) -> f32[2, 3] {{
  %w = param @w : i8[3, 256]
  %sub = param @sub : i8[3, 8]
  %s16 = param @s16 : f16[3, 8]
  %d = param @d : f32[3, 1]
  %y = {op} : f32[2, 3]
  return %y
}}"""
    for bad, msg in [("qmatmul_q8 %x, %sx, %w, %sub {scale_group = 8}", "needs sw .i8 codes. and sd"),
                     ("qmatmul_q8 %x, %sx, %w, %s16, %d {scale_group = 8}", "sw must be i8"),
                     ("qmatmul_q8 %x, %sx, %w, %sub, %sub {scale_group = 8}", "sd must be f32"),
                     ("qmatmul_q8 %x, %sx, %w, %sub, %d", "goes with scale_group"),
                     ("qmatmul_q8 %x, %sx, %w, %sub, %d, %sub {scale_group = 8}", "needs sw .i8 codes. and sd"),
                     ("qmatmul_q8 %x, %sx, %w, %sub, %d, %sub, %d", "zeros .zw, zd. go with"),
                     ("qmatmul_q8 %x, %sx, %w, %sub, %d, %s16, %d {scale_group = 8}", "zw must be i8")]:
        with pytest.raises(VerifyError, match=msg):
            ladder.parse(text(bad))
    g = ladder.parse(text("qmatmul_q8 %x, %sx, %w, %sub, %d {scale_group = 8}"))
    op = next(o for o in g.ops() if o.kind == "qmatmul_q8")

    class Ctx:
        target = get_target("cpu:avx2")

    types = [g.type_of(o) for o in op.operands]
    assert q8dot.plan(Ctx(), op, types).sub == 8
    assert q8dot.plan(Ctx(), op.with_(attrs={**op.attr, "scale_group": 4}), types) is None


# -- x's scale per super-block (Q8_K's: one f32 per 256, as the GGUF importer gives K-quant projections) ------

SUPER = [("u4", "nib16", 32, True), ("u4", "nib16", 32, False), ("i8", None, 32, True), ("i8", None, 16, False),
         ("u4", "nib16", 16, True), ("i4", "nib16", 32, False)]


def _superblock_parts(rng, dname, group, zeros, N, K):
    """Weights: codes, i8 sub-scales and their f32 per 256, and maybe zeros the same way."""
    parts = [rng.integers(0, 64, (N, K // group)).astype(np.int8),
             (rng.random((N, K // 256)) * 0.01 + 1e-4).astype(np.float32)]
    if zeros:
        parts += [rng.integers(0, 64, (N, K // group)).astype(np.int8),
                  (rng.random((N, K // 256)) * 0.01 + 1e-4).astype(np.float32)]
    return _codes(rng, dname, (N, K)), parts


def _superblock_graph(x, sx, w, parts, dname, layout, group, gb=None):
    """qmatmul_q8 {group, scale_group = 256 / group} of x (sx one per super-block, or one per group) and w, in
    ``gb`` (a new graph when None)."""
    (M, K), N = x.shape, w.shape[0]
    gb = G() if gb is None else gb
    xn, sxn = gb.input(x, "i8"), gb.input(sx, "f32")
    wn = gb.param(w, dname)
    if layout is not None:
        gb.lines.append(f'%p{wn} = pack %{wn} {{layout = "{layout}"}} : {dname}<{layout}>[{N}, {K}]')
        wn = f"p{wn}"
    ops = ", ".join(f"%{gb.param(a, 'i8' if a.dtype == np.int8 else 'f32')}" for a in parts)
    gb.op(f"qmatmul_q8 %{xn}, %{sxn}, %{wn}, {ops} {{group = {group}, scale_group = {256 // group}}}",
          f"f32[{M}, {N}]")
    return gb


def _superblock_pair(rng, dname, layout, group, zeros, M, N, K):
    """The same product twice: x's scale one per super-block of 256 (``sx [M, K / 256]``), and that scale repeated
    per group (``sx [M, K / group]``); w's scales quantized (``scale_group``), with zeros or not."""
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    sx = (rng.random((M, K // 256)) * 0.05 + 0.001).astype(np.float32)
    w, parts = _superblock_parts(rng, dname, group, zeros, N, K)
    return [_superblock_graph(x, sx if per_super else np.repeat(sx, 256 // group, axis=-1), w, parts, dname, layout,
                              group) for per_super in (True, False)]


@pytest.mark.parametrize("target", ["cpu", "cpu:avx2", "cpu:generic"])
@pytest.mark.parametrize("dname,layout,group,zeros", SUPER,
                         ids=[f"{d}-{p or 'raw'}-{g}-{'zeros' if z else 'plain'}" for d, p, g, z in SUPER])
def test_x_scale_per_superblock_agrees_with_it_repeated_per_group(target, dname, layout, group, zeros):
    """sx one per super-block is x dequantized with that scale over the whole super-block: the reference gives the
    bits of the same scale repeated per group, the kernels (every tier; the generic one too: a super-block the
    block kernel does not take) agree with it to rounding, and the threads agree bit for bit."""
    if get_target(target).runs_here():
        pytest.skip(f"this CPU cannot run {target}")
    rng = np.random.default_rng(group + 7 * zeros + len(dname))
    for M, N, K in [(1, 7, 512), (6, 9, 256), (70, 4, 768)]:
        sup, rep = _superblock_pair(rng, dname, layout, group, zeros, M, N, K)
        refs = [next(iter(ladder.run(gb.graph(), gb.feeds, weights=gb.weights).values())) for gb in (sup, rep)]
        assert np.array_equal(refs[0], refs[1])
        cg = compile_graph(sup.graph(), sup.weights, target=target, pipeline="")
        got = [next(iter(cg.run(sup.feeds, threads=t).values())) for t in (1, 2)]
        assert np.array_equal(got[0].view(np.uint32), got[1].view(np.uint32)), f"{target} {M}x{N}x{K}"
        assert np.allclose(got[0], refs[0], rtol=1e-4, atol=1e-4 * float(np.abs(refs[0]).max()) + 1e-6)


def test_x_scale_per_superblock_is_checked():
    """sx per super-block goes with scale_group only; any other shape names the one it wants."""
    def text(sx, attrs):
        return f"""graph @g(%x: i8[2, 512], %sx: f32[2, {sx}]) -> f32[2, 3] {{
  %w = param @w : i8[3, 512]
  %sub = param @sub : i8[3, 16]
  %s = param @s : f32[3, 16]
  %d = param @d : f32[3, 2]
  %y = qmatmul_q8 %x, %sx, %w, {attrs} : f32[2, 3]
  return %y
}}"""
    ladder.parse(text(2, "%sub, %d {scale_group = 8}"))
    ladder.parse(text(16, "%sub, %d {scale_group = 8}"))
    with pytest.raises(VerifyError, match=r"sx must be f16, bf16 or f32 \[2, 16\]"):
        ladder.parse(text(2, "%s"))
    with pytest.raises(VerifyError, match=r"sx must be f16, bf16 or f32 \[2, 16\]"):
        ladder.parse(text(4, "%sub, %d {scale_group = 8}"))


INT_SUPER = [("u4", "nib16", True), ("u4", "nib16", False), ("i4", "nib16", True)]


@pytest.mark.parametrize("dname,layout,zeros", INT_SUPER,
                         ids=[f"{d}-{'zeros' if z else 'plain'}" for d, _, z in INT_SUPER])
def test_integer_superblocks_give_every_row_the_bits_of_its_gemv(dname, layout, zeros):
    """Nibbles with quantized scales and x's scale per super-block (a Q4_K projection) on AVX-512 VNNI: the tiles
    and the GEMV sum each super-block's products times the sub-scales in int32, then one FMA: every row of a
    prefill is bit for bit the decode of that row, at 1 and 2 threads; the reference agrees. M on and off tiles
    of 4 (and under one), N on and off tiles of 4 and of the GEMV's 2. Runs where the host has AVX-512 VNNI."""
    target = "cpu:avx512"
    if get_target(target).runs_here():
        pytest.skip("this CPU lacks AVX-512 VNNI")
    rng = np.random.default_rng(3 + zeros + len(dname))
    for M, N, K in [(9, 7, 512), (4, 8, 256), (3, 5, 768), (70, 3, 2048)]:
        x = rng.integers(-128, 128, (M, K)).astype(np.int8)
        sx = (rng.random((M, K // 256)) * 0.05 + 0.001).astype(np.float32)
        w, parts = _superblock_parts(rng, dname, 32, zeros, N, K)
        gm = _superblock_graph(x, sx, w, parts, dname, layout, 32)
        cg = compile_graph(gm.graph(), gm.weights, target=target, pipeline="")
        got = [next(iter(cg.run(gm.feeds, threads=t).values())) for t in (1, 2)]
        assert np.array_equal(got[0].view(np.uint32), got[1].view(np.uint32))
        ref = next(iter(ladder.run(gm.graph(), gm.feeds, weights=gm.weights).values()))
        assert np.allclose(got[0], ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()) + 1e-6)
        for m in range(M) if M < 10 else (0, 33, M - 1):
            g1 = _superblock_graph(x[m:m + 1], sx[m:m + 1], w, parts, dname, layout, 32)
            one = next(iter(compile_graph(g1.graph(), g1.weights, target=target, pipeline="").run(g1.feeds).values()))
            assert np.array_equal(one[0].view(np.uint32), got[0][m].view(np.uint32)), f"{M}x{N}x{K} row {m}"


@pytest.mark.parametrize("target", ["cpu", "cpu:avx512"])
def test_integer_superblocks_stay_inside_their_buffers(target):
    """The integer super-block tiles and GEMV on guarded buffers, split between two work ranges as two threads
    take it (on a host without AVX-512 VNNI, "cpu" takes the float tiers)."""
    if get_target(target).runs_here():
        pytest.skip(f"this CPU cannot run {target}")
    rng = np.random.default_rng(29)
    for M, N, K in [(1, 7, 256), (5, 9, 512), (13, 5, 256)]:
        gb = G()
        for dname, layout, zeros in INT_SUPER:
            x = rng.integers(-128, 128, (M, K)).astype(np.int8)
            sx = (rng.random((M, K // 256)) * 0.05 + 0.001).astype(np.float32)
            w, parts = _superblock_parts(rng, dname, 32, zeros, N, K)
            _superblock_graph(x, sx, w, parts, dname, layout, 32, gb)
        _guarded_steps(gb, target, len(INT_SUPER), lambda got, want, _: np.allclose(
            got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()) + 1e-6))
