"""ladder.tune: the cost model, the persistent tuning cache, measuring, ``ladder tune`` and the default cpu
pipeline using lookup exactly where the cache (or the cost model) says so, with results equal to the reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ladder
from ladder import tune
from ladder.cli import main
from ladder.target import get_target
from ladder.tune import Choice, Problem
from ladder.types import DTYPES

GRAPH = """graph @two(%x: f32[1, 300]) -> (f32[1, 48], f32[1, 40]) {
  %w = param @w : i1[48, 300]
  %v = param @v : ternary[40, 300]
  %s = param @s : f32[1]
  %q, %qs = quantize %x {scheme = "absmax", dtype = i8} : i8[1, 300], f32[1, 1]
  %a = qmatmul_i8 %q, %w, %qs, %s {transpose_b = true} : f32[1, 48]
  %b = qmatmul_i8 %q, %v, %qs, %s {transpose_b = true} : f32[1, 40]
  return %a, %b
}
"""
I1, TERNARY = Problem("i8", "i1", 1, 48, 300), Problem("i8", "ternary", 1, 40, 300)


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    """Every cache (tuning and compiled code) in a fresh folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "ladder"


def lut_ops(graph):
    return sorted(op.name for op in graph.ops() if op.kind == "lut_matmul")


def test_cost_model_prefers_lookup_for_one_bit_weights_with_byte_shuffles():
    avx2, generic = get_target("cpu:avx2"), get_target("cpu:generic")
    for act in ("i8", "f32"):
        for m in (1, 32):
            assert tune.cost_model(Problem(act, "i1", m, 4096, 4096), avx2).method == "lut"
            assert tune.cost_model(Problem(act, "u1", m, 64, 64), avx2).method == "lut"
            assert tune.cost_model(Problem(act, "i1", m, 4096, 4096), generic).method == "decode"
    for d in ("ternary", "i2", "u2", "i4", "u4"):
        assert tune.cost_model(Problem("i8", d, 1, 4096, 4096), avx2).method == "decode"
        assert tune.cost_model(Problem("f32", d, 1, 4096, 4096), avx2).method == "decode"
        for tables in ("i8", "i8-fast"):  # int8 tables against f32 decode: lookup
            assert tune.cost_model(Problem("f32", d, 1, 4096, 4096, tables), avx2).method == "lut"
            assert tune.cost_model(Problem("f32", d, 1, 4096, 4096, tables), generic).method == "decode"
        gemm = tune.cost_model(Problem("f32", d, 32, 4096, 4096, "i8"), avx2).method
        assert gemm == ("decode" if DTYPES[d].bits == 4 else "lut")  # 4-bit GEMM: f32 decode wins
        assert tune.cost_model(Problem("f32", d, 32, 4096, 4096, "i8-fast"), avx2).method == "lut"


@pytest.mark.parametrize("act, tables", [("i8", "f32"), ("f32", "exact"), ("bf16", ""), ("f32", "i4")])
def test_impossible_problems_are_errors(act, tables):
    with pytest.raises(ladder.LadderError, match="no such problem"):
        Problem(act, "i2", 1, 8, 8, tables)


def test_cache_is_written_atomically_and_merged(cache_home):
    path = tune.cache_path()
    assert path == cache_home / "tune.json"
    tune.save_entries({"a": {"method": "lut"}})
    tune.save_entries({"b": {"method": "decode"}})
    assert tune.load_cache() == {"a": {"method": "lut"}, "b": {"method": "decode"}}
    assert [p.name for p in cache_home.iterdir()] == ["tune.json"]  # no temporary file left behind
    assert json.loads(path.read_text())["version"] == tune.VERSION


def test_unreadable_or_foreign_caches_are_ignored(cache_home):
    cache_home.mkdir(parents=True)
    for text in ("{not json", json.dumps({"version": 99, "entries": {"a": {}}}), "[]"):
        tune.cache_path().write_text(text)
        assert tune.load_cache() == {}
        assert tune.choose(I1, "cpu:avx2", 1).source == "cost model"


def test_choose_reads_the_cache_for_this_machine_shape_and_thread_count(cache_home):
    avx2 = get_target("cpu:avx2")
    key = tune.entry_key(TERNARY, avx2, 1)
    assert "cpu:avx2/haswell/" in key and "|i8|exact|ternary|1x40x300|t1" in key
    tune.save_entries({key: {"method": "lut", "rows": 16, "unroll": 4, "us": {"decode": 2.0}}})
    c = tune.choose(TERNARY, avx2, 1)
    assert (c.method, c.rows, c.unroll, c.source) == ("lut", 16, 4, "tuned")
    assert tune.choose(TERNARY, avx2, 2) == Choice("decode")  # other thread count: the cost model
    assert tune.choose(TERNARY, "cpu:avx512", 1) == Choice("decode")  # other machine


def test_measure_times_decode_and_every_lookup_configuration(cache_home):
    target = get_target("cpu")
    c = tune.measure(Problem("i8", "u2", 2, 24, 50), target, threads=1, budget=0.01)
    assert set(c.us) == {"decode"} | {f"lut/{r}/{u}" for r, u in tune.lut_configs(target)}
    assert all(v > 0 for v in c.us.values())
    best = min(c.us, key=c.us.get)
    assert c.method == ("decode" if best == "decode" else "lut") and c.source == "tuned"
    if c.method == "lut":
        assert best == f"lut/{c.rows}/{c.unroll}"


@pytest.mark.parametrize("tables", ["f32", "i8-fast"])
def test_measure_float_activations_checks_the_lookup_within_its_bound(cache_home, tables):
    c = tune.measure(Problem("f32", "ternary", 1, 40, 64, tables), "cpu", threads=1, budget=0.01)
    assert len(c.us) == 1 + len(tune.lut_configs(get_target("cpu")))


def test_quantizing_lut_pass_asks_for_its_own_tables(cache_home):
    g = ladder.parse("""graph @f(%x: f32[1, 64]) -> f32[1, 40] {
  %w = param @w : i4[40, 64]
  %s = param @s : f32[1]
  %y = qmatmul %x, %w, %s {transpose_b = true} : f32[1, 40]
  return %y
}""")
    if not get_target("cpu").supports("table-lookup"):
        pytest.skip("the cost model picks decode on a CPU without byte shuffles")
    pm = ladder.passes.PassManager
    assert lut_ops(pm("lut{choose=auto,threads=1}").run(g)) == []  # f32 tables: decode (cost model)
    assert lut_ops(pm("lut{choose=auto,threads=1,quantize=true}").run(g)) == ["y"]  # int8 tables: lookup
    key = tune.entry_key(Problem("f32", "i4", 1, 40, 64, "i8"), get_target("cpu"), 1)
    tune.save_entries({key: {"method": "decode"}})
    assert lut_ops(pm("lut{choose=auto,threads=1,quantize=true}").run(g)) == []  # tuned: decode
    assert lut_ops(pm("lut{choose=auto,threads=1,quantize=true,fast_aggregation=true}").run(g)) == ["y"]


def test_default_pipeline_uses_lookup_exactly_where_the_cache_says(cache_home):
    g = ladder.parse(GRAPH)
    target = get_target("cpu")
    threads = tune.host_threads()
    w = ladder.weights.random(g, 1)
    x = {"x": np.random.default_rng(2).standard_normal((1, 300)).astype(np.float32)}
    ref = ladder.compile(g, "ref", w)(x)
    # no tuning data: the cost model (lookup for the 1-bit weights on a CPU with byte shuffles)
    m = ladder.compile(g, "cpu", w, threads=threads)
    assert lut_ops(m.graph) == (["a"] if target.supports("table-lookup") else [])
    # tuned the other way round: lookup for ternary only
    tune.save_entries({tune.entry_key(I1, target, threads): {"method": "decode"},
                       tune.entry_key(TERNARY, target, threads): {"method": "lut", "rows": 16, "unroll": 2}})
    m = ladder.compile(g, "cpu", w, threads=threads)
    assert lut_ops(m.graph) == ["b"]
    (lut,) = [op for op in m.graph.ops() if op.kind == "lut_matmul"]
    assert lut.attr["rows"] == 16 and lut.attr["unroll"] == 2
    out = m(x)
    for name in ("a", "b"):
        np.testing.assert_array_equal(out[name], ref[name])


def test_the_compile_thread_count_selects_the_cache_entry(cache_home):
    g = ladder.parse(GRAPH)
    target = get_target("cpu")
    tune.save_entries({tune.entry_key(TERNARY, target, 1): {"method": "lut", "rows": 32, "unroll": 1}})
    w = ladder.weights.random(g, 1)
    assert "b" in lut_ops(ladder.compile(g, "cpu", w, threads=1).graph)
    assert "b" not in lut_ops(ladder.compile(g, "cpu", w, threads=3).graph)  # untuned: the cost model


def test_ladder_tune_then_run_matches_the_reference(cache_home, tmp_path, capsys):
    src = tmp_path / "two.lir"
    src.write_text(GRAPH)
    assert main(["tune", str(src), "--threads", "1", "--budget", "0.01"]) == 0
    out = capsys.readouterr()
    assert "i8 x i1 1x48x300" in out.out and "i8 x ternary 1x40x300" in out.out
    assert "tuning" in out.err  # the progress bar
    entries = tune.load_cache()
    assert len(entries) == 2 and all(e["method"] in ("decode", "lut") for e in entries.values())
    outs = {}
    for t in ("ref", "cpu"):
        path = tmp_path / f"{t}.npz"
        assert main(["run", str(src), "--target", t, "--random-weights", "3", "--random-inputs", "4",
                     "--output", str(path)]) == 0
        outs[t] = dict(np.load(path))
    for name in ("a", "b"):
        np.testing.assert_array_equal(outs["cpu"][name], outs["ref"][name])


def test_ladder_tune_errors(tmp_path, capsys):
    src = tmp_path / "none.lir"
    src.write_text("graph @g(%x: f32[2]) -> f32[2] {\n  %y = relu %x : f32[2]\n  return %y\n}\n")
    assert main(["tune", str(src)]) == 0
    assert "nothing to tune" in capsys.readouterr().out
    assert main(["tune", str(src), "--target", "ref"]) == 1
    assert "cpu target" in capsys.readouterr().err
