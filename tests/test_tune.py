"""ladder.tune: the cost model, tuning files, measuring, ``ladder tune`` and the default cpu pipeline using
lookup exactly where the given records (or the cost model) say so, with results equal to the reference; without
records nothing is read."""

from __future__ import annotations

import json
import os
import warnings

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


def test_tuning_file_is_written_atomically_and_merged(tmp_path):
    path = tmp_path / "t" / "tune.json"
    tune.save_records({"a": {"method": "lut", "rows": 16}}, path)
    tune.save_records({"b": Choice("decode", source="tuned")}, path)
    recs = tune.load_records(path)
    assert recs.path == str(path) and set(recs.entries) == {"a", "b"}
    assert (recs.get("a").method, recs.get("a").rows, recs.get("a").source) == ("lut", 16, "tuned")
    assert [p.name for p in path.parent.iterdir()] == ["tune.json"]  # no temporary file left behind
    assert json.loads(path.read_text())["version"] == tune.VERSION


def test_choose_uses_records_for_this_machine_shape_and_thread_count(tmp_path):
    avx2 = get_target("cpu:avx2")
    key = tune.entry_key(TERNARY, avx2, 1)
    assert "cpu:avx2/haswell/" in key and "|i8|exact|ternary|1x40x300|t1" in key
    path = tune.save_records({key: {"method": "lut", "rows": 16, "unroll": 4, "us": {"decode": 2.0}}},
                             tmp_path / "tune.json")
    recs = tune.load_records(path)
    c = tune.choose(TERNARY, avx2, 1, recs)
    assert (c.method, c.rows, c.unroll, c.source) == ("lut", 16, 4, "tuned")
    assert tune.choose(TERNARY, avx2, 1) == Choice("decode")  # no records: the cost model
    assert tune.choose(TERNARY, avx2, 2, recs) == Choice("decode")  # other thread count
    assert tune.choose(TERNARY, "cpu:avx512", 1, recs) == Choice("decode")  # other machine


def test_measure_times_decode_and_every_lookup_configuration():
    target = get_target("cpu")
    c = tune.measure(Problem("i8", "u2", 2, 24, 50), target, threads=1, budget=0.01)
    assert set(c.us) == {"decode"} | {f"lut/{r}/{u}" for r, u in tune.lut_configs(target)}
    assert all(v > 0 for v in c.us.values())
    best = min(c.us, key=c.us.get)
    assert c.method == ("decode" if best == "decode" else "lut") and c.source == "tuned"
    if c.method == "lut":
        assert best == f"lut/{c.rows}/{c.unroll}"


@pytest.mark.parametrize("tables", ["f32", "i8-fast"])
def test_measure_float_activations_checks_the_lookup_within_its_bound(tables):
    c = tune.measure(Problem("f32", "ternary", 1, 40, 64, tables), "cpu", threads=1, budget=0.01)
    assert len(c.us) == 1 + len(tune.lut_configs(get_target("cpu")))


def test_quantizing_lut_pass_asks_for_its_own_tables(tmp_path):
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
    path = tune.save_records({key: {"method": "decode"}}, tmp_path / "tune.json")
    assert lut_ops(pm(f"lut{{choose=auto,threads=1,quantize=true,tuning={path}}}").run(g)) == []  # tuned: decode
    assert lut_ops(pm(f"lut{{choose=auto,threads=1,quantize=true,fast_aggregation=true,tuning={path}}}").run(g)) \
        == ["y"]  # no record for i8-fast tables: the cost model


def test_default_pipeline_uses_lookup_exactly_where_the_records_say(tmp_path):
    g = ladder.parse(GRAPH)
    target = get_target("cpu")
    threads = tune.host_threads()
    w = ladder.weights.random(g, 1)
    x = {"x": np.random.default_rng(2).standard_normal((1, 300)).astype(np.float32)}
    ref = ladder.compile(g, "ref", w)(x)
    # no tuning data: the cost model (lookup for the 1-bit weights on a CPU with byte shuffles)
    m = ladder.compile(g, "cpu", w, threads=threads)
    assert lut_ops(m.graph) == (["a"] if target.supports("table-lookup") else [])
    assert m.tuning == [] and m.tuning_records == {}
    assert "tuning: none (the cost model" in m.report()
    # tuned the other way round: lookup for ternary only
    path = tune.save_records({tune.entry_key(I1, target, threads): {"method": "decode"},
                              tune.entry_key(TERNARY, target, threads): {"method": "lut", "rows": 16, "unroll": 2}},
                             tmp_path / "tune.json")
    m = ladder.compile(g, "cpu", w, threads=threads, tuning=path)
    assert lut_ops(m.graph) == ["b"]
    (lut,) = [op for op in m.graph.ops() if op.kind == "lut_matmul"]
    assert lut.attr["rows"] == 16 and lut.attr["unroll"] == 2
    assert m.tuning == [str(path)]
    assert {k: (c.method, c.rows, c.unroll) for k, c in m.tuning_records.items()} == {
        tune.entry_key(I1, target, threads): ("decode", 0, 1), tune.entry_key(TERNARY, target, threads): ("lut", 16, 2)}
    report = m.report()
    assert f"tuning: {path}: 2 record(s) used" in report and "(rows 16, unroll 2)" in report
    # without snapshots (what ladder.generate compiles): the same graph and the same records reported
    bare = ladder.compile(g, "cpu", w, threads=threads, tuning=path, snapshots=False, jit=False, cache=False)
    assert str(bare.graph) == str(m.graph) and bare.tuning_records == m.tuning_records and not bare.snapshots.items
    with pytest.raises(ladder.LadderError, match="compiled with snapshots=False"):
        bare.ir_after("lut")
    assert len(m.snapshots) == len(m.passes) + 1 and str(m.ir_after("lut")) != ""
    out = m(x)
    for name in ("a", "b"):
        np.testing.assert_array_equal(out[name], ref[name])


def test_compiles_do_not_read_a_tuning_file_from_the_cache_folder(tmp_path, monkeypatch):
    """What an earlier tuning run left in the cache folder changes nothing: same graph, same target, same IR."""
    g = ladder.parse(GRAPH)
    w = ladder.weights.random(g, 1)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    before = ladder.compile(g, "cpu", w, threads=1, jit=False, cache=False).graph
    target = get_target("cpu")
    flipped = {tune.entry_key(p, target, 1): {"method": "lut" if tune.cost_model(p, target).method == "decode"
                                                else "decode"} for p in (I1, TERNARY)}
    tune.save_records(flipped, tmp_path / "ladder" / "tune.json")  # where earlier versions looked
    m = ladder.compile(g, "cpu", w, threads=1, jit=False, cache=False)
    assert str(m.graph) == str(before) and m.tuning_records == {}
    assert lut_ops(ladder.compile(g, "cpu", w, threads=1, jit=False, cache=False,
                                  tuning=tmp_path / "ladder" / "tune.json").graph) != lut_ops(before)


def test_the_compile_thread_count_selects_the_record(tmp_path):
    g = ladder.parse(GRAPH)
    target = get_target("cpu")
    path = tune.save_records({tune.entry_key(TERNARY, target, 1): {"method": "lut", "rows": 32, "unroll": 1}},
                             tmp_path / "tune.json")
    w = ladder.weights.random(g, 1)
    m1 = ladder.compile(g, "cpu", w, threads=1, tuning=path, jit=False, cache=False)
    m3 = ladder.compile(g, "cpu", w, threads=3, tuning=path, jit=False, cache=False)
    assert "b" in lut_ops(m1.graph) and len(m1.tuning_records) == 1
    assert "b" not in lut_ops(m3.graph) and m3.tuning_records == {}  # untuned: the cost model


def test_ladder_tune_then_run_matches_the_reference(tmp_path, capsys):
    src = tmp_path / "two.lir"
    src.write_text(GRAPH)
    records = tmp_path / "two.tune.json"
    assert main(["tune", str(src), "--threads", "1", "--budget", "0.01", "-o", str(records)]) == 0
    out = capsys.readouterr()
    assert "i8 x i1 1x48x300" in out.out and "i8 x ternary 1x40x300" in out.out
    assert f"--tuning {records}" in out.out  # how to use the file
    assert "tuning" in out.err  # the progress bar
    entries = tune.load_records(records).entries
    assert len(entries) == 2 and all(e.method in ("decode", "lut") for e in entries.values())
    outs = {}
    for t in ("ref", "cpu"):
        path = tmp_path / f"{t}.npz"
        extra = ["--tuning", str(records), "--threads", "1"] if t == "cpu" else []
        assert main(["run", str(src), "--target", t, "--random-weights", "3", "--random-inputs", "4",
                     "--output", str(path)] + extra) == 0
        outs[t] = dict(np.load(path))
    for name in ("a", "b"):
        np.testing.assert_array_equal(outs["cpu"][name], outs["ref"][name])


def test_tuning_argument_errors(tmp_path):
    g = ladder.parse(GRAPH)
    w = ladder.weights.random(g, 1)
    path = tune.save_records({}, tmp_path / "tune.json")
    with pytest.raises(ladder.LadderError, match="with your own pipeline"):
        ladder.compile(g, "cpu", w, pipeline="canonicalize", tuning=path)
    with pytest.raises(ladder.LadderError, match="tuning records choose cpu kernels"):
        ladder.compile(g, "ref", w, tuning=path)
    with pytest.raises(ladder.LadderError, match="cannot read tuning file .*missing.json"):
        ladder.compile(g, "cpu", w, tuning=tmp_path / "missing.json", jit=False, cache=False)
    with pytest.raises(ladder.LadderError, match="not a regular file"):
        ladder.compile(g, "cpu", w, tuning=tmp_path, jit=False, cache=False)
    with pytest.raises(ladder.LadderError, match="need choose=auto"):
        ladder.passes.PassManager(f"lut{{tuning={path}}}").run(g)


def test_ladder_tune_errors(tmp_path, capsys):
    src = tmp_path / "none.lir"
    src.write_text("graph @g(%x: f32[2]) -> f32[2] {\n  %y = relu %x : f32[2]\n  return %y\n}\n")
    assert main(["tune", str(src)]) == 0
    assert "nothing to tune" in capsys.readouterr().out
    assert main(["tune", str(src), "--target", "ref"]) == 1
    assert "cpu target" in capsys.readouterr().err


# -- damaged tuning files: every bad record is skipped with one warning naming the file and key --------------

GOOD = {"method": "lut", "rows": 16, "unroll": 2, "us": {"decode": 3.0, "lut/16/2": 1.5}}


@pytest.mark.parametrize("record, why", [
    ("lut", "a record is a JSON object, got str"),
    (["lut", 16, 2], "a record is a JSON object, got list"),
    (None, "got NoneType"),
    ({"method": "lut", "rows": 7}, "rows must be 0 or a multiple of 8"),
    ({"method": "lut", "rows": -64}, "rows must be"),
    ({"method": "lut", "rows": 2 ** 20}, "rows must be"),
    ({"method": "lut", "rows": None}, "rows must be .*got null"),
    ({"method": "lut", "rows": 16.0}, "rows must be"),
    ({"method": "lut", "rows": True}, "rows must be"),
    ({"method": "lut", "unroll": 0}, "unroll must be one of"),
    ({"method": "lut", "unroll": 1e9}, "unroll must be one of"),
    ({"method": "lut", "unroll": 10 ** 30}, "unroll must be one of"),
    ({"method": "lut", "us": "fast"}, "us must map"),
    ({"method": "lut", "us": [1.0]}, "us must map"),
    ({"method": "lut", "us": {"decode": "1"}}, "us must map"),
    ({"method": "lut", "us": {"decode": float("nan")}}, "us must map"),
    ({"method": "fast"}, "method must be one of"),
    ({"rows": 16}, "method must be one of"),
])
def test_a_damaged_record_is_skipped_with_one_warning(tmp_path, record, why):
    path = tmp_path / "tune.json"
    path.write_text(json.dumps({"version": tune.VERSION, "entries": {"good": GOOD, "bad|key": record}}))
    with pytest.warns(tune.TuningWarning) as caught:
        recs = tune.load_records(path)
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert msg.startswith(f"{path}: tuning record 'bad|key' skipped: ")
    assert __import__("re").search(why, msg), msg
    assert list(recs.entries) == ["good"] and recs.get("good").rows == 16  # the rest are used


@pytest.mark.parametrize("content, why", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe garbage", "not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "not JSON"),  # nesting deeper than the parser's recursion limit
    (json.dumps({"version": 99, "entries": {"a": GOOD}}).encode(), "not a ladder tuning file of version 1"),
    (json.dumps({"version": 1, "entries": [GOOD]}).encode(), "not a ladder tuning file"),
    (b"[]", "not a ladder tuning file"),
    (b"null", "not a ladder tuning file"),
    (b" " * (tune.MAX_FILE_BYTES + 1), "larger than 16 MiB"),
])
def test_a_damaged_file_is_ignored_with_one_warning(tmp_path, content, why):
    path = tmp_path / "tune.json"
    path.write_bytes(content)
    with pytest.warns(tune.TuningWarning) as caught:
        recs = tune.load_records(path)
    assert len(caught) == 1 and str(caught[0].message).startswith(f"{path}: tuning file ignored: ")
    assert why in str(caught[0].message)
    assert len(recs) == 0 and tune.choose(I1, "cpu:avx2", 1, recs).source == "cost model"


def test_a_pipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "tune.json"
    os.mkfifo(fifo)
    with pytest.raises(ladder.LadderError, match="not a regular file"):
        tune.load_records(fifo)


def test_compiling_with_a_damaged_file_warns_and_keeps_the_valid_records(tmp_path):
    g = ladder.parse(GRAPH)
    target = get_target("cpu")
    path = tmp_path / "tune.json"
    entries = {tune.entry_key(TERNARY, target, 1): {"method": "lut", "rows": 16, "unroll": 4},
               tune.entry_key(I1, target, 1): {"method": "lut", "rows": 2 ** 20}}
    path.write_text(json.dumps({"version": tune.VERSION, "entries": entries}))
    w = ladder.weights.random(g, 1)
    with pytest.warns(tune.TuningWarning, match="rows must be") as caught:
        m = ladder.compile(g, "cpu", w, threads=1, tuning=path, jit=False, cache=False)
    assert len(caught) == 1  # read once per compile, reported once
    assert list(m.tuning_records) == [tune.entry_key(TERNARY, target, 1)]
    (b,) = [op for op in m.graph.ops() if op.name == "b"]
    assert b.kind == "lut_matmul" and b.attr["rows"] == 16 and b.attr["unroll"] == 4
    want_a = tune.cost_model(I1, target).method  # the damaged record is not trusted
    assert ("a" in lut_ops(m.graph)) == (want_a == "lut")


def test_saving_drops_damaged_records(tmp_path):
    path = tmp_path / "tune.json"
    path.write_text(json.dumps({"version": tune.VERSION, "entries": {"old": GOOD, "bad": "x"}}))
    with pytest.warns(tune.TuningWarning, match="'bad'"):
        tune.save_records({"new": {"method": "decode"}}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(tune.load_records(path).entries) == {"old", "new"}


def test_tests_never_use_the_users_cache_folder():
    from pathlib import Path

    from ladder.compile import default_cache_dir

    home_cache = Path.home() / ".cache"
    assert home_cache not in default_cache_dir().parents  # tests/conftest.py gives the session its own folder
