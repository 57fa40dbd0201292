"""The lut pass (ladder.passes.lut): which matmuls it rewrites, that the rewrite is exact for int8 activations
(the lut path equals the decode path bit for bit) and bounded with int8 tables, and its option errors."""

from __future__ import annotations

import numpy as np
import pytest

import ladder
from ladder.ops.lut import LUT_DTYPES, quantization_error_bound
from ladder.packing import from_codes
from ladder.passes import PassManager
from ladder.types import DTYPES


def rand_w(rng, dname, shape):
    dt = DTYPES[dname]
    return from_codes(rng.integers(0, 3 if dname == "ternary" else 2 ** dt.bits, shape).astype(np.uint8), dt)


def bitlinear(dname, m, n, k, tb=True, batch=(), epilogue=""):
    """x f32 -> absmax int8 -> qmatmul_i8 with weights w [n, k] (or [k, n])."""
    xs = ", ".join(map(str, batch + (m, k)))
    ys = ", ".join(map(str, batch + (m, n)))
    wshape = f"{n}, {k}" if tb else f"{k}, {n}"
    epi = f', epilogue = ["{epilogue}"]' if epilogue else ""
    return ladder.parse(f"""graph @b(%x: f32[{xs}]) -> f32[{ys}] {{
  %w = param @w : {dname}[{wshape}]
  %s = param @s : f32[1]
  %q, %qs = quantize %x {{scheme = "absmax", dtype = i8}} : i8[{xs}], f32[{', '.join(map(str, batch + (m, 1)))}]
  %y = qmatmul_i8 %q, %w, %qs, %s {{transpose_b = {str(tb).lower()}{epi}}} : f32[{ys}]
  return %y
}}""")


def kinds(g):
    return [op.kind for op in g.ops()]


CASES = [(d, m, n, k, tb) for d in LUT_DTYPES for (m, n, k, tb) in
         [(1, 1, 1, True), (3, 17, 30, True), (2, 40, 65, False), (1, 33, 8, True)]]


@pytest.mark.parametrize("dname, m, n, k, tb", CASES)
def test_lookup_equals_decode_exactly_for_int8_activations(dname, m, n, k, tb):
    rng = np.random.default_rng(n * k + m)
    g = bitlinear(dname, m, n, k, tb, epilogue="relu2" if n % 2 else "")
    w = rand_w(rng, dname, (n, k) if tb else (k, n))
    weights = {"w": w, "s": np.array([0.03], np.float32)}
    x = {"x": rng.standard_normal((m, k)).astype(np.float32) * 4}
    decode = PassManager("canonicalize,legalize-types{target=cpu:avx2},fuse,canonicalize").run(g)
    lookup = PassManager("canonicalize,legalize-types{target=cpu:avx2},fuse,lut{rows=16},canonicalize").run(g)
    assert "qmatmul_i8" in kinds(decode) and "qmatmul_i8" not in kinds(lookup)
    assert kinds(lookup).count("lut_matmul") == 1 and kinds(lookup).count("lut_precompute") == 1
    np.testing.assert_array_equal(ladder.run(lookup, x, weights)["y"], ladder.run(decode, x, weights)["y"])


def test_batched_activations_and_shared_tables():
    rng = np.random.default_rng(3)
    g = ladder.parse("""graph @two(%x: i8[2, 3, 20], %xs: f32[2, 3, 1]) -> (f32[2, 3, 6], f32[2, 3, 9]) {
  %a = param @a : i4[6, 20]
  %b = param @b : u2[9, 20]
  %s = param @s : f32[1]
  %y = qmatmul_i8 %x, %a, %xs, %s {transpose_b = true} : f32[2, 3, 6]
  %z = qmatmul_i8 %x, %b, %xs, %s {transpose_b = true} : f32[2, 3, 9]
  return %y, %z
}""")
    weights = {"a": rand_w(rng, "i4", (6, 20)), "b": rand_w(rng, "u2", (9, 20)), "s": np.ones(1, np.float32)}
    x = {"x": rng.integers(-128, 128, (2, 3, 20)).astype(np.int8), "xs": rng.random((2, 3, 1)).astype(np.float32)}
    out = PassManager("lut{rows=8},canonicalize").run(g)
    assert kinds(out).count("lut_precompute") == 1  # one table for both matmuls (canonicalize merges them)
    want, got = ladder.run(g, x, weights), ladder.run(out, x, weights)
    for name in ("y", "z"):
        np.testing.assert_array_equal(got[name], want[name])


def qmatmul_f32(dname, n, k, per_row):
    s = f"f32[{n}, 1]" if per_row else "f32[1]"
    return ladder.parse(f"""graph @f(%x: f32[3, {k}]) -> f32[3, {n}] {{
  %w = param @w : {dname}[{n}, {k}]
  %s = param @s : {s}
  %y = qmatmul %x, %w, %s {{transpose_b = true}} : f32[3, {n}]
  return %y
}}""")


@pytest.mark.parametrize("per_row", [False, True])
def test_float_activations_f32_tables_sum_in_another_order_only(per_row):
    rng = np.random.default_rng(4)
    g = qmatmul_f32("ternary", 21, 77, per_row)
    s = rng.uniform(0.5, 2, (21, 1) if per_row else (1,)).astype(np.float32)
    weights = {"w": rand_w(rng, "ternary", (21, 77)), "s": s}
    x = {"x": rng.standard_normal((3, 77)).astype(np.float32)}
    out = PassManager("lut,canonicalize").run(g)
    assert "lut_matmul" in kinds(out) and "const" in kinds(out)  # s2 = 1
    want = ladder.run(g, x, weights)["y"]
    np.testing.assert_allclose(ladder.run(out, x, weights)["y"], want, rtol=1e-5, atol=1e-5 * np.abs(x["x"]).sum())


@pytest.mark.parametrize("opts", ["quantize=true", "quantize=true,act_group=16", "quantize=true,fast_aggregation=true"])
def test_int8_tables_are_within_the_stated_bound(opts):
    rng = np.random.default_rng(6)
    g = qmatmul_f32("i2", 24, 130, False)
    weights = {"w": rand_w(rng, "i2", (24, 130)), "s": np.array([0.5], np.float32)}
    x = rng.standard_normal((3, 130)).astype(np.float32)
    out = PassManager(f"lut{{{opts}}},canonicalize").run(g)
    lut = next(op for op in out.ops() if op.kind == "lut_matmul")
    a = {"act_group": lut.attr.get("act_group", 0), "fast": lut.attr.get("fast_aggregation", False)}
    got, want = ladder.run(out, {"x": x}, weights)["y"], ladder.run(g, {"x": x}, weights)["y"]
    bound = 0.5 * quantization_error_bound(x, DTYPES["i2"], 4, a["act_group"], a["fast"])[:, None]
    slack = 1e-5 * np.abs(x).sum(axis=1, keepdims=True) * 2
    assert (np.abs(got - want) <= bound + slack).all()
    assert np.abs(got - want).max() > 0


def test_packed_weights_after_legalize_and_fuse_are_repacked_once():
    g = bitlinear("ternary", 1, 8, 40)
    out = PassManager("canonicalize,legalize-types{target=cpu:avx2},fuse,lut{rows=16},canonicalize").run(g)
    packs = [op for op in out.ops() if op.kind == "pack"]
    assert [p.attr["layout"] for p in packs] == ["planes"]  # the decode packing (crumb32) is gone
    assert packs[0].result.type.shape == (1, 10 * 16 * 4)
    assert ladder.parse(str(out)) == out


def test_what_the_pass_leaves_alone():
    g = ladder.parse("""graph @keep(%x: i8[2, 16], %xs: f32[2, 1], %wi: i2[4, 16], %h: f32[2, 16]) -> (f32[2, 4], f32[2, 4], f32[2, 4], f32[2, 4]) {
  %s = param @s : f32[1]
  %a = qmatmul_i8 %x, %wi, %xs, %s {transpose_b = true} : f32[2, 4]
  %n = param @n : nf4[4, 16]
  %b = qmatmul %h, %n, %s {transpose_b = true} : f32[2, 4]
  %z = param @z : i4[4, 1]
  %w = param @w : i4[4, 16]
  %sc = param @sc : f32[4, 1]
  %c = qmatmul %h, %w, %sc, %z {transpose_b = true, zero_mode = "original"} : f32[2, 4]
  %g = param @g : f32[4, 2]
  %d = qmatmul %h, %w, %g {transpose_b = true, group = 8} : f32[2, 4]
  return %a, %b, %c, %d
}""")
    # an input weight (not known at compile time), nf4, zero points, group-wise scales
    assert "lut_matmul" not in kinds(PassManager("lut").run(g))


@pytest.mark.parametrize("pipeline, message", [
    ("lut{g=3}", "g must be one of 1, 2, 4"),
    ("lut{act_group=8}", "needs quantize=true"),
    ("lut{quantize=true,act_group=6}", "multiple of g = 4"),
    ("lut{fast_aggregation=true}", "needs quantize=true"),
    ("lut{rows=12}", "multiple of 8"),
    ("lut{unroll=3}", "unroll must be"),
    ("lut{choose=sometimes}", "choose must be one of always, auto"),
    ("lut{tuning=tune.json}", "they need choose=auto"),
    ("lut{choose=auto,tuning=/no/such/tune.json}", "cannot read tuning file /no/such/tune.json"),
])
def test_bad_options_are_pipeline_errors(pipeline, message):
    with pytest.raises(ladder.LadderError, match=message):
        PassManager(pipeline).run(bitlinear("i2", 1, 4, 8))
