"""Workloads, design-space sweeps and the ``ladder sim`` / ``ladder sweep`` commands."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from ladder.backends.asic.config import ConfigError, load_config, with_overrides
from ladder.backends.asic.sweep import (grid, load_workload, parse_axes, parse_value, plot, run, sweep,
                                        write_csv)
from ladder.cli import main
from ladder.errors import LadderError
from ladder.models import SIZES, bitnet_decoder


@pytest.fixture(scope="module")
def tiny():
    return load_workload("bitnet:tiny")


def test_parse_axes_and_grid():
    assert parse_value("256") == 256 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("os") == "os"
    axes = parse_axes(["sram_kb=256,512", "systolic.dataflow=os,ws", "clock_mhz=100"])
    assert axes == {"sram_kb": [256, 512], "systolic.dataflow": ["os", "ws"], "clock_mhz": [100]}
    points = grid(axes)
    assert len(points) == 4 and points[0] == {"sram_kb": 256, "systolic.dataflow": "os", "clock_mhz": 100}
    with pytest.raises(LadderError, match="--set expects KEY=V1,V2"):
        parse_axes(["sram_kb"])
    with pytest.raises(LadderError, match="given twice"):
        parse_axes(["sram_kb=1", "sram_kb=2"])
    with pytest.raises(LadderError, match="at least one --set"):
        parse_axes([])


def test_builtin_and_file_workloads(tmp_path, tiny):
    assert tiny.context == SIZES["tiny"].context and tiny.tokens == 1
    assert load_workload("bitnet:tiny", context=32).context == 32
    assert len(load_workload("bitnet:tiny", layers=1).graph) < len(tiny.graph)
    path = tmp_path / "step.lir"
    path.write_text(str(bitnet_decoder(SIZES["tiny"], 2)))
    w = load_workload(str(path))
    assert (w.name, w.tokens, w.context) == ("step", 2, SIZES["tiny"].context)
    with pytest.raises(LadderError, match="no file or built-in model 'gpt:5'.*bitnet:3b"):
        load_workload("gpt:5")
    with pytest.raises(LadderError, match="--context and --layers size a built-in model"):
        load_workload(str(path), context=16)
    with pytest.raises(LadderError, match="--context must be positive"):
        load_workload("bitnet:tiny", context=0)


def test_two_token_step_doubles_tokens_per_run(tmp_path):
    path = tmp_path / "step2.lir"
    path.write_text(str(bitnet_decoder(SIZES["tiny"], 2)))
    r = run(load_workload(str(path)), "lut-tc")
    assert r.tokens_per_s == pytest.approx(2 / r.latency_s)


def test_sweep_rows_follow_the_grid_and_report_points_that_do_not_fit(tiny):
    rows = sweep(tiny, "lut-tc", {"sram_kb": [1, 1024], "clock_mhz": [500, 1000]}, progress=False)
    assert [(r["sram_kb"], r["clock_mhz"]) for r in rows] == [(1, 500), (1, 1000), (1024, 500), (1024, 1000)]
    small = [r for r in rows if r["sram_kb"] == 1]
    assert all("does not fit the SRAM" in r["error"] and "1,024 bytes" in r["error"] for r in small)
    slow, fast = [r for r in rows if r["sram_kb"] == 1024]
    assert not slow["error"] and not fast["error"]
    assert fast["tokens_per_s"] > slow["tokens_per_s"]   # a faster clock decodes faster
    assert fast["cycles"] >= slow["cycles"]              # ... though DRAM costs more cycles at it
    with pytest.raises(ConfigError, match="no key 'lanez'"):
        sweep(tiny, "lut-tc", {"vector.lanez": [8]}, progress=False)


def test_sweep_csv_and_plot(tmp_path, tiny):
    axes = {"sram_kb": [256, 1024], "systolic.rows": [16, 32]}
    rows = sweep(tiny, "lut-tc", axes, progress=False)
    write_csv(rows, tmp_path / "s.csv")
    table = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(table) == 4 and {"sram_kb", "systolic.rows", "tokens_per_s", "power_w", "error"} <= set(table[0])
    plot(rows, axes, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, tiny, monkeypatch):
    rows = sweep(tiny, "lut-tc", {"sram_kb": [1024]}, progress=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(LadderError, match=r"--plot needs matplotlib: pip install 'ladder\[plots\]'"):
        plot(rows, {"sram_kb": [1024]}, tmp_path / "x.png")


# -- the command line -------------------------------------------------------------------------------------

def test_cli_sim_prints_and_writes_json_and_csv(tmp_path, capsys):
    js, cs = tmp_path / "r.json", tmp_path / "r.csv"
    assert main(["sim", "bitnet:tiny", "--hw", "slim-llama", "--tokens", "3", "--json", str(js), "--csv", str(cs)]) == 0
    out = capsys.readouterr().out
    assert "@bitnet_tiny on slim-llama (200 MHz, context 64)" in out and "3 tokens" in out
    d = json.loads(js.read_text())
    assert d["summary"]["tokens"] == 3 and d["summary"]["config"] == "slim-llama"
    assert d["kinds"]["qmatmul_i8"]["ops"] > 0
    rows = list(csv.DictReader(open(cs)))
    assert any(r["scope"] == "kind" and r["name"] == "attention" for r in rows)


def test_cli_sim_operating_point(capsys):
    assert main(["sim", "bitnet:tiny", "--hw", "slim-llama", "--point", "low-power"]) == 0
    assert "(25 MHz" in capsys.readouterr().out
    assert main(["sim", "bitnet:tiny", "--hw", "slim-llama", "--point", "turbo"]) == 1
    assert "config slim-llama has no operating point 'turbo'; it has: low-power" in capsys.readouterr().err


def test_cli_sim_errors(tmp_path, capsys):
    assert main(["sim", "nosuch.lir", "--hw", "lut-tc"]) == 1
    assert "no file or built-in model 'nosuch.lir'" in capsys.readouterr().err
    assert main(["sim", "bitnet:tiny", "--hw", "nochip"]) == 1
    assert "no hardware config 'nochip'" in capsys.readouterr().err
    assert main(["sim", "bitnet:tiny", "--hw", "lut-tc", "--tokens", "0"]) == 1
    assert "--tokens must be positive" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[cost]\nzero_fraction = 2.0\n')
    assert main(["sim", "bitnet:tiny", "--hw", str(bad)]) == 1
    assert "zero_fraction must be in [0, 1)" in capsys.readouterr().err


def test_cli_sweep_writes_csv_and_plot(tmp_path, capsys):
    out, png = tmp_path / "sweep.csv", tmp_path / "sweep.png"
    assert main(["sweep", "bitnet:tiny", "--hw", "lut-tc", "--set", "sram_kb=256,1024", "--set",
                 "clock_mhz=500,1000", "-o", str(out), "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert f"wrote 4 point(s) to {out} and a plot to {png}" in text
    assert len(list(csv.DictReader(open(out)))) == 4 and png.exists()
    assert main(["sweep", "bitnet:tiny", "--hw", "lut-tc", "--set", "sram=1", "-o", str(out)]) == 1
    assert "unknown key 'sram'" in capsys.readouterr().err


# -- sweeps at scale: Dask, or this process -------------------------------------------------------------------

AXES = {"sram_kb": [256, 500], "dram_gbps": [1.6, 3.2], "energy.voltage": [0.8, 1.0]}


def test_sweep_reuses_programs_and_timelines_without_changing_a_figure(tiny):
    """Points sharing a lowering share one program, and points differing only in energy reuse its timeline;
    each row equals the row of a fresh lowering and simulation."""
    rows = sweep(tiny, "slim-llama", AXES, progress=False, scheduler="serial")
    fresh = [run(tiny, with_overrides(load_config("slim-llama"), p)).summary() for p in grid(AXES)]
    assert [{k: r[k] for k in f} for r, f in zip(rows, fresh)] == fresh


def test_sweep_without_dask_runs_here_and_says_so(tiny, monkeypatch, capsys):
    from ladder.backends.asic import sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "dask_available", lambda: False)
    monkeypatch.setattr(sweep_mod, "LOCAL_MIN_POINTS", 1)
    rows = sweep(tiny, "slim-llama", AXES, progress=False, workers=2)
    assert len(rows) == 8 and not any(r["error"] for r in rows)
    assert "Dask is not installed; the sweep runs in this process" in capsys.readouterr().err
    with pytest.raises(LadderError, match="--scheduler tcp://x:1 needs Dask"):
        sweep(tiny, "slim-llama", AXES, progress=False, scheduler="tcp://x:1")


def test_sweep_on_a_local_dask_cluster_matches_serial(tiny, monkeypatch):
    pytest.importorskip("dask.distributed")
    from ladder.backends.asic import sweep as sweep_mod

    monkeypatch.setattr(sweep_mod, "LOCAL_MIN_POINTS", 1)
    on_dask = sweep(tiny, "slim-llama", AXES, progress=False, workers=2)
    assert on_dask == sweep(tiny, "slim-llama", AXES, progress=False, scheduler="serial")
