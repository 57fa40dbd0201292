"""The ``ladder`` command line: in-process through ``ladder.cli.main`` and as a real subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ladder
from ladder import weights
from ladder.cli import main
from small_programs import SMALL

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.lir"))
BITLINEAR = ROOT / "examples" / "bitlinear.lir"
MLP = ROOT / "examples" / "int4_mlp.lir"

BROKEN = """graph @broken(%x: f32[2, 3]) -> f32[2, 3] {
  %a = relu %x : f32[2, 3]
  %b = add %a, %nope : f32[2, 3]
  return %b
}
"""


def ladder_proc(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "ladder", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=120)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def one_paragraph_error(err: str) -> None:
    assert err.strip(), "expected a message on stderr"
    assert "Traceback" not in err
    assert "\n\n" not in err.strip(), f"more than one paragraph:\n{err}"


TIMING = re.compile(r"compiled in \d[\d.]* (ms|s), ran in \d[\d.]* (ms|s)\n")


def only_timing(err: str) -> bool:
    """stderr of a successful `ladder run`: the one line saying how long compiling and running took."""
    return TIMING.fullmatch(err) is not None


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# -- fmt -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_fmt_output_reparses(capsys, path):
    code, out, err = run_cli(capsys, "fmt", path)
    assert code == 0 and err == ""
    assert ladder.parse(out, "fmt.lir") == ladder.parse(path)
    assert out == str(ladder.parse(path))


def test_fmt_is_idempotent_and_writes_output_file(capsys, tmp_path):
    src = write(tmp_path, "messy.lir", "# comment\ngraph @small(%x:f32[2,3])->f32[2,3]{\n %a=relu %x:f32[2,3]\n"
                                       "  return %a }\n")
    code, out, _ = run_cli(capsys, "fmt", src)
    assert code == 0
    dst = tmp_path / "out.lir"
    code, out2, err2 = run_cli(capsys, "fmt", src, "-o", dst)
    assert code == 0 and out2 == "" and err2 == ""
    assert dst.read_text() == out
    code, out3, _ = run_cli(capsys, "fmt", dst)
    assert code == 0 and out3 == out
    assert "# comment" not in out and "%a = relu %x : f32[2, 3]" in out


def test_fmt_output_into_missing_dir_is_an_error(capsys, tmp_path):
    code, out, err = run_cli(capsys, "fmt", BITLINEAR, "-o", tmp_path / "no" / "such" / "dir" / "x.lir")
    assert code == 1
    one_paragraph_error(err)


# -- check -----------------------------------------------------------------------------------------

def test_check_examples_ok(capsys):
    code, out, err = run_cli(capsys, "check", *EXAMPLES)
    assert code == 0 and err == ""
    lines = out.strip().splitlines()
    assert len(lines) == len(EXAMPLES)
    for p, line in zip(EXAMPLES, lines):
        assert line.startswith(f"{p}: ok")


def test_check_broken_file_in_process(capsys, tmp_path):
    bad = write(tmp_path, "broken.lir", BROKEN)
    code, out, err = run_cli(capsys, "check", BITLINEAR, bad)
    assert code == 1
    assert f"{BITLINEAR}: ok" in out
    assert f"{bad}:3:" in err
    assert "%nope" in err
    assert "^" in err
    one_paragraph_error(err)


def test_check_broken_file_subprocess(tmp_path):
    bad = write(tmp_path, "broken.lir", BROKEN)
    r = ladder_proc("check", bad)
    assert r.returncode == 1
    assert r.stdout == ""
    first = r.stderr.splitlines()[0]
    assert first.startswith(f"{bad}:3:")
    col = int(first.split(":")[2])
    lines = r.stderr.splitlines()
    caret = next(l for l in lines if l.strip() == "^")
    src_line = lines[lines.index(caret) - 1]
    assert "%nope" in src_line
    # the caret is under column `col`: both lines carry the same indent, so it points at %nope
    assert src_line[caret.index("^"):].startswith("%nope")
    assert src_line[4 + col - 1:].startswith("%nope")  # excerpts are indented by 4
    one_paragraph_error(r.stderr)


@pytest.mark.parametrize("text, line", [
    ("graph @g(%x: f32[2]) -> f32[3] {\n  %y = relu %x : f32[3]\n  return %y\n}\n", 2),   # type
    ("graph @g(%x: f32[2]) -> f32[2] {\n  %y = relu %x : f32[2]\n  return %y\n}\n".replace(
        "-> f32[2]", "-> f32[3]"), 3),                                                        # return type
    ("graph @g(%x: f32[2]) -> f32[2] {\n  %y = relu %x, : f32[2]\n  return %y\n}\n", 2),  # syntax
    ("graph @g(%x: f32[2]) -> f32[2] {\n  %y = frob %x : f32[2]\n  return %y\n}\n", 2),   # unknown op
    ("graph @g(%x: f32[2]) -> f32[2] {\n  %y = relu %x : q7[2]\n  return %y\n}\n", 2),    # unknown type
    ("graph @g(%x: f32[2]) -> f32[2] {\n  %y = relu %x : f32[2]\n", 2),                   # truncated
])
def test_check_errors_are_located(capsys, tmp_path, text, line):
    bad = write(tmp_path, "bad.lir", text)
    code, _, err = run_cli(capsys, "check", bad)
    assert code == 1
    assert err.startswith(f"{bad}:{line}:")
    assert "^" in err
    one_paragraph_error(err)


def test_check_reports_wrong_declared_type_at_the_op(capsys, tmp_path):
    bad = write(tmp_path, "bad.lir", "graph @g(%x: f32[2]) -> f32[2] {\n  %y = relu %x : f32[3]\n"
                                     "  return %y\n}\n")
    code, _, err = run_cli(capsys, "check", bad)
    assert code == 1
    assert f"{bad}:2:" in err and "'relu'" in err


def test_check_truncated_file_message(capsys, tmp_path):
    bad = write(tmp_path, "bad.lir", "graph @g(%x: f32[2]) -> f32[2] {\n  %y = relu %x : f32[2]\n")
    code, _, err = run_cli(capsys, "check", bad)
    assert code == 1
    assert "None" not in err
    assert "end of the text" in err


def test_check_missing_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "check", tmp_path / "absent.lir")
    assert code == 1
    assert "absent.lir" in err
    one_paragraph_error(err)


# -- opt -------------------------------------------------------------------------------------------

def test_opt_prints_canonical_result(capsys, tmp_path):
    src = write(tmp_path, "small.lir", SMALL)
    code, out, err = run_cli(capsys, "opt", src, "-p", "canonicalize")
    assert code == 0 and err == ""
    g = ladder.parse(out)
    assert g == ladder.PassManager("canonicalize").run(ladder.parse(src))
    assert [op.kind for op in g.ops()] == ["relu", "add"]


def test_opt_print_ir_after_all_and_time_passes(capsys, tmp_path):
    src = write(tmp_path, "small.lir", SMALL)
    code, out, err = run_cli(capsys, "opt", src, "-p", "canonicalize{cse=false},canonicalize",
                             "--print-ir-after-all", "--time-passes")
    assert code == 0
    assert out.count("IR after") == 2
    assert "IR after canonicalize{cse=false}" in out
    last = out.split("// ----- IR after canonicalize -----")[-1]
    assert ladder.parse(last.strip()) == ladder.PassManager("canonicalize").run(ladder.parse(src))
    # the table goes to stderr, not stdout
    lines = err.strip().splitlines()
    assert lines[0].split() == ["pass", "ms", "%"]
    assert lines[1].split()[0] == "canonicalize{cse=false}"
    assert lines[2].split()[0] == "canonicalize"
    assert lines[3].split()[0] == "total"
    assert "total" not in out


def test_opt_time_passes_subprocess(tmp_path):
    r = ladder_proc("opt", MLP, "-p", "canonicalize", "--time-passes")
    assert r.returncode == 0, r.stderr
    assert ladder.parse(r.stdout) == ladder.PassManager("canonicalize").run(ladder.parse(MLP))
    assert r.stderr.splitlines()[0].split() == ["pass", "ms", "%"]
    assert r.stderr.strip().splitlines()[-1].split()[0] == "total"


def test_opt_dump_dir_and_output(capsys, tmp_path):
    src = write(tmp_path, "small.lir", SMALL)
    dump = tmp_path / "dump"
    dst = tmp_path / "out.lir"
    code, out, err = run_cli(capsys, "opt", src, "-p", "canonicalize", "--dump-dir", dump, "-o", dst)
    assert code == 0
    assert out == "" and err == ""
    files = sorted(p.name for p in dump.iterdir())
    assert files == ["00-input.lir", "01-canonicalize.lir"]
    assert ladder.parse(dump / "00-input.lir") == ladder.parse(src)
    expected = ladder.PassManager("canonicalize").run(ladder.parse(src))
    assert ladder.parse(dump / "01-canonicalize.lir") == expected
    assert ladder.parse(dst) == expected


def test_opt_requires_pipeline():
    r = ladder_proc("opt", BITLINEAR)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "-p" in r.stderr


@pytest.mark.parametrize("pipeline, word, col", [
    ("bogus", "bogus", 1),
    ("canonicalize,bogus", "bogus", 14),
    ("canonicalize{nope=1}", "nope", 14),
    ("canonicalize{fold_limit=big}", "big", None),
    ("canonicalize,", "','", 14),
])
def test_opt_bad_pipeline(capsys, pipeline, word, col):
    code, out, err = run_cli(capsys, "opt", BITLINEAR, "-p", pipeline)
    assert code == 1
    assert out == ""
    assert err.startswith("<pipeline>:1:")
    if col is not None:
        assert err.startswith(f"<pipeline>:1:{col}:")
    assert word in err
    assert pipeline in err and "^" in err
    one_paragraph_error(err)


def test_opt_bad_pipeline_subprocess():
    r = ladder_proc("opt", BITLINEAR, "-p", "canonicalize{nope=1}")
    assert r.returncode == 1
    assert r.stderr.startswith("<pipeline>:1:14:")
    one_paragraph_error(r.stderr)


# -- run -------------------------------------------------------------------------------------------

@pytest.fixture
def bitlinear_files(tmp_path):
    g = ladder.parse(BITLINEAR)
    w = weights.random(g, 3)
    wpath = tmp_path / "w.safetensors"
    weights.save(wpath, g, w)
    x = np.random.default_rng(0).standard_normal((2, 128)).astype(np.float32)
    xpath = tmp_path / "x.npy"
    np.save(xpath, x)
    return g, w, wpath, x, xpath


@pytest.mark.parametrize("input_name", ["x", "%x"])  # an input may be named with or without its %
def test_run_weights_input_output(capsys, tmp_path, bitlinear_files, input_name):
    g, w, wpath, x, xpath = bitlinear_files
    out = tmp_path / "out.npz"
    code, stdout, err = run_cli(capsys, "run", BITLINEAR, "--weights", wpath, "--input", f"{input_name}={xpath}",
                                "--output", out)
    assert code == 0, err
    assert only_timing(err), err
    assert "out.npz" in stdout
    expected = ladder.run(g, {"x": x}, w)
    with np.load(out) as z:
        assert sorted(z.files) == sorted(expected) == ["y"]
        for k in expected:
            assert z[k].dtype == expected[k].dtype
            np.testing.assert_array_equal(z[k], expected[k])


def test_run_safetensors_written_directly(capsys, tmp_path):
    from safetensors.numpy import save_file

    src = write(tmp_path, "lin.lir", """graph @lin(%x: f32[1, 4]) -> f32[1, 2] {
  %w = param @w : ternary[2, 4]
  %s = param @s : f32[1]
  %d = dequant %w, %s : f32[2, 4]
  %y = matmul %x, %d {transpose_b = true} : f32[1, 2]
  return %y
}""")
    wpath = tmp_path / "w.safetensors"
    save_file({"w": np.array([[1, 0, -1, 1], [0, 0, 1, -1]], np.int8), "s": np.array([0.5], np.float32)},
              str(wpath))
    xpath = tmp_path / "x.npy"
    np.save(xpath, np.array([[1, 2, 3, 4]], np.float32))
    out = tmp_path / "o.npz"
    code, _, err = run_cli(capsys, "run", src, "--weights", wpath, "--input", f"x={xpath}", "--output", out)
    assert code == 0, err
    with np.load(out) as z:
        np.testing.assert_allclose(z["y"], [[0.5 * (1 - 3 + 4), 0.5 * (3 - 4)]])


def test_run_random_weights_matches_library(capsys, tmp_path):
    g = ladder.parse(MLP)
    x = np.random.default_rng(1).standard_normal((4, 256)).astype(np.float32)
    xpath = tmp_path / "x.npy"
    np.save(xpath, x)
    out = tmp_path / "o.npz"
    code, _, err = run_cli(capsys, "run", MLP, "--random-weights", "5", "--input", f"x={xpath}", "--output", out)
    assert code == 0, err
    expected = ladder.run(g, {"x": x}, weights.random(g, 5))
    with np.load(out) as z:
        assert z.files == ["y"]
        np.testing.assert_array_equal(z["y"], expected["y"])
    # a different seed gives different outputs
    out2 = tmp_path / "o2.npz"
    assert main(["run", str(MLP), "--random-weights", "6", "--input", f"x={xpath}", "--output", str(out2)]) == 0
    with np.load(out2) as z:
        assert not np.array_equal(z["y"], expected["y"])


def test_run_with_pipeline_gives_same_results(capsys, tmp_path, bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    o1, o2 = tmp_path / "a.npz", tmp_path / "b.npz"
    assert main(["run", str(BITLINEAR), "--weights", str(wpath), "--input", f"x={xpath}", "--output", str(o1)]) == 0
    assert main(["run", str(BITLINEAR), "--weights", str(wpath), "--input", f"x={xpath}", "--output", str(o2),
                 "-p", "canonicalize", "--time-passes"]) == 0
    err = capsys.readouterr().err
    assert "canonicalize" in err and "total" in err
    with np.load(o1) as a, np.load(o2) as b:
        np.testing.assert_array_equal(a["y"], b["y"])


def test_run_prints_summary_without_output(capsys, tmp_path, bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    code, out, err = run_cli(capsys, "run", BITLINEAR, "--weights", wpath, "--input", f"x={xpath}")
    assert code == 0 and only_timing(err), err
    y = ladder.run(g, {"x": x}, w)["y"]
    assert out.startswith("%y : f32[2, 64]")
    assert f"{float(y.reshape(-1)[0]):.6g}" in out
    assert f"max {float(y.max()):.6g}" in out


def test_run_random_inputs_and_weights_subprocess(tmp_path):
    out = tmp_path / "o.npz"
    r = ladder_proc("run", BITLINEAR, "--random-weights", "0", "--random-inputs", "1", "--output", out)
    assert r.returncode == 0, r.stderr
    assert only_timing(r.stderr), r.stderr  # no progress bar: stderr is not a terminal
    with np.load(out) as z:
        assert z.files == ["y"]
        assert z["y"].shape == (2, 64) and z["y"].dtype == np.float32
        assert np.all(np.isfinite(z["y"]))


def _run_error(capsys, *args) -> str:
    code, out, err = run_cli(capsys, "run", *args)
    assert code == 1, (out, err)
    one_paragraph_error(err)
    return err


def test_run_missing_input(capsys, bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    err = _run_error(capsys, BITLINEAR, "--weights", wpath)
    assert "%x" in err and "f32[2, 128]" in err and "missing" in err


def test_run_unknown_input_name(capsys, bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    err = _run_error(capsys, BITLINEAR, "--weights", wpath, "--input", f"x={xpath}", "--input", f"zz={xpath}")
    assert "%zz" in err


def test_run_missing_weights_file(capsys, tmp_path, bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    err = _run_error(capsys, BITLINEAR, "--weights", tmp_path / "missing.safetensors", "--input", f"x={xpath}")
    assert "missing.safetensors" in err


def test_run_corrupt_weights_file(capsys, tmp_path, bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    err = _run_error(capsys, BITLINEAR, "--weights", bad, "--input", f"x={xpath}")
    assert "bad.safetensors" in err


def test_run_weights_file_missing_a_param(capsys, tmp_path, bitlinear_files):
    from safetensors.numpy import save_file

    g, w, wpath, x, xpath = bitlinear_files
    partial = tmp_path / "partial.safetensors"
    save_file({"norm": w["norm"], "w_scale": w["w_scale"]}, str(partial))
    err = _run_error(capsys, BITLINEAR, "--weights", partial, "--input", f"x={xpath}")
    assert "@w " in err and "ternary[64, 128]" in err
    assert f"{BITLINEAR}:" in err  # located at the param


def test_run_no_weights_at_all(capsys, bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    err = _run_error(capsys, BITLINEAR, "--input", f"x={xpath}")
    assert "@norm" in err


def test_run_wrong_input_shape(capsys, tmp_path, bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 128), np.float32))
    err = _run_error(capsys, BITLINEAR, "--weights", wpath, "--input", f"x={bad}")
    assert "%x" in err and "[3, 128]" in err and "f32[2, 128]" in err


@pytest.mark.parametrize("spec", ["x", "x=", "=foo.npy", "xfoo.npy"])
def test_run_bad_input_syntax(capsys, bitlinear_files, spec):
    g, w, wpath, x, xpath = bitlinear_files
    err = _run_error(capsys, BITLINEAR, "--weights", wpath, "--input", spec)
    assert "NAME=PATH" in err and spec in err


def test_run_input_file_missing_or_not_npy(capsys, tmp_path, bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    err = _run_error(capsys, BITLINEAR, "--weights", wpath, "--input", f"x={tmp_path / 'nope.npy'}")
    assert "nope.npy" in err
    txt = write(tmp_path, "x.txt", "1 2 3")
    err = _run_error(capsys, BITLINEAR, "--weights", wpath, "--input", f"x={txt}")
    assert "x.txt" in err


def test_run_unknown_target(capsys, bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    err = _run_error(capsys, BITLINEAR, "--weights", wpath, "--input", f"x={xpath}", "--target", "tpu9000")
    assert "tpu9000" in err and "ref" in err


def test_run_errors_subprocess(tmp_path, bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    for args in (["--weights", wpath],                                          # missing input
                 ["--weights", tmp_path / "none.safetensors", "--input", f"x={xpath}"],
                 ["--weights", wpath, "--input", "x"],
                 ["--weights", wpath, "--input", f"x={xpath}", "--target", "gpu"]):
        r = ladder_proc("run", BITLINEAR, *args)
        assert r.returncode == 1, (args, r.stderr)
        one_paragraph_error(r.stderr)


def test_run_weights_and_random_weights_are_exclusive(bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    r = ladder_proc("run", BITLINEAR, "--weights", wpath, "--random-weights", "0")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_run_runtime_error_is_located(capsys, tmp_path):
    src = write(tmp_path, "g.lir", """graph @g(%i: i32[2]) -> f32[2, 2] {
  %t = const [[1.0, 2.0], [3.0, 4.0]] : f32[2, 2]
  %y = gather %t, %i : f32[2, 2]
  return %y
}""")
    ipath = tmp_path / "i.npy"
    np.save(ipath, np.array([0, 7], np.int32))
    err = _run_error(capsys, src, "--input", f"i={ipath}")
    assert f"{src}:3:" in err and "7" in err


def test_run_output_named_file(tmp_path):
    src = write(tmp_path, "f.lir", "graph @g(%x: f32[2]) -> f32[2] {\n  %file = relu %x : f32[2]\n"
                                   "  return %file\n}\n")
    out = tmp_path / "o.npz"
    r = ladder_proc("run", src, "--random-inputs", "0", "--output", out)
    assert "Traceback" not in r.stderr
    assert r.returncode == 0
    with np.load(out) as z:
        assert z.files == ["file"]


def test_run_random_inputs_for_binary_input(capsys, tmp_path):
    src = write(tmp_path, "b.lir", "graph @g(%x: i1[8]) -> i1[8] {\n  %y = reshape %x {shape = [8]} : i1[8]\n"
                                   "  return %y\n}\n")
    code, out, err = run_cli(capsys, "run", src, "--random-inputs", "0")
    assert code == 0, err


def test_run_output_path_is_the_one_reported(capsys, tmp_path):
    out = tmp_path / "result"
    code, stdout, err = run_cli(capsys, "run", BITLINEAR, "--random-weights", "0", "--random-inputs", "0",
                                "--output", out)
    assert code == 0, err
    assert out.exists(), f"reported {stdout.strip()!r} but wrote {sorted(p.name for p in tmp_path.iterdir())}"


# -- ops, demo ---------------------------------------------------------------------------------------

def test_ops_lists_every_op(capsys):
    from ladder.ops import OPS

    code, out, err = run_cli(capsys, "ops")
    assert code == 0 and err == ""
    lines = out.splitlines()
    heads = [l.split("(")[0] for l in lines]
    assert sorted(heads) == sorted(OPS)
    assert len(lines) == len(OPS)
    for name, opdef in OPS.items():
        line = lines[heads.index(name)]
        for operand in opdef.operands:
            assert operand in line.split(")")[0], (name, operand)
        for attr in opdef.attrs:
            assert attr in line, (name, attr)


@pytest.fixture(scope="module")
def demo_run():
    """`ladder demo` in this process, noting what it had printed each time it started compiling."""
    import importlib
    import io

    from ladder import demo

    compile_mod = importlib.import_module("ladder.compile")  # the module; ladder.compile is also the function
    buf = io.StringIO()
    seen_at_compile = []
    real = compile_mod.compile

    def spy(*args, **kwargs):
        seen_at_compile.append(buf.getvalue())
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compile_mod, "compile", spy)
        code = demo.main(out=buf)
    return code, buf.getvalue(), seen_at_compile


def test_demo_in_process(demo_run):
    code, out, seen_at_compile = demo_run
    assert code == 0, out
    # each check is printed when it is known, not all at the end: the first two before any compile
    assert seen_at_compile and seen_at_compile[0].count("[ok]") == 2
    assert seen_at_compile[-1].count("[ok]") < out.count("[ok]")
    assert "checks passed in" in out.splitlines()[-1]
    assert "size 'tiny'" in out
    assert "FAILED" not in out
    from ladder.backends.asic.config import shipped_configs

    chips = shipped_configs()
    assert {"lut-tc", "slim-llama", "pim-llm", "taalas-hc1"} <= set(chips)
    # round trip, default pipeline, native cpu code and each chip's functional simulator agreeing with the reference
    assert out.count("[ok]") == 3 + len(chips)
    assert "generated [" in out
    lines = out.splitlines()
    header = next(l for l in lines if "prefill tok/s" in l)
    for col in ("target", "decode tok/s", "energy/token", "power"):
        assert col in header
    assert any(l.strip().startswith("ref (numpy interpreter)") for l in lines)
    assert any(l.strip().startswith("cpu (LLVM native code)") for l in lines)
    for chip in chips:
        row = next(l for l in lines if l.strip().startswith(f"asic:{chip} (simulated)"))
        tok_s = float(row.split()[3].replace(",", ""))
        assert tok_s > 0 and " uJ " in row and ("mW" in row or " W " in row), row


def test_demo_subprocess_is_deterministic(demo_run):
    """The command gives the tokens the in-process run gave: same seed, same model, same ids."""
    r = ladder_proc("demo")
    assert r.returncode == 0, r.stderr
    assert "[ok]" in r.stdout and "FAILED" not in r.stdout
    generated = [l for l in r.stdout.splitlines() if "-> generated" in l]
    assert len(generated) == 1 and generated[0] in demo_run[1]
    assert generated[0].split("generated")[1].count(",") == 7  # eight tokens by default


def test_no_command_is_usage_error():
    r = ladder_proc()
    assert r.returncode == 2
    assert "usage" in r.stderr.lower() and "Traceback" not in r.stderr


# -- flags that cannot apply are errors ------------------------------------------------------------------

def test_run_help_names_every_model_format():
    r = ladder_proc("run", "--help")
    assert r.returncode == 0
    assert all(suffix in r.stdout for suffix in (".lir", ".onnx", ".gguf"))


def test_run_instruments_apply_to_the_targets_pipeline(capsys, tmp_path):
    """Without -p, --time-passes / --print-ir-after-all / --dump-dir show the pipeline the target ran."""
    dump = tmp_path / "dump"
    code, out, err = run_cli(capsys, "run", BITLINEAR, "--random-weights", "0", "--random-inputs", "1",
                             "--time-passes", "--print-ir-after-all", "--dump-dir", dump)
    assert code == 0, err
    assert "// ----- IR after canonicalize -----" in out  # the ref target's pipeline
    table = err.splitlines()
    assert table[0].split() == ["pass", "ms", "%"] and table[1].split()[0] == "canonicalize"
    assert table[2].split()[0] == "total" and only_timing("\n".join(table[3:]) + "\n")
    assert sorted(p.name for p in dump.iterdir()) == ["00-input.lir", "01-canonicalize.lir"]
    assert ladder.parse(dump / "00-input.lir") == ladder.parse(BITLINEAR)


def test_run_time_passes_on_cpu_lists_the_default_pipeline(capsys):
    from ladder.passes import default_pipeline

    code, out, err = run_cli(capsys, "run", BITLINEAR, "--random-weights", "0", "--random-inputs", "1",
                             "--target", "cpu", "--time-passes")
    assert code == 0, err
    names = [line.split()[0] for line in err.splitlines()[1:] if line.strip()]
    want = [str(p) for p in ladder.PassManager(default_pipeline("cpu")).passes]
    assert names[:len(want)] == want and names[len(want)] == "total"


@pytest.mark.parametrize("args, words", [
    (["--shape", "x=2x128", "--random-weights", "0", "--random-inputs", "0"], ["--shape", "bitlinear.lir"]),
    (["--threads", "2", "--random-weights", "0", "--random-inputs", "0"], ["--threads", "ref"]),
    (["--threads", "2", "--target", "asic:lut-tc", "--random-weights", "0", "--random-inputs", "0"],
     ["--threads", "asic:lut-tc"]),
    (["--threads", "0", "--target", "cpu", "--random-weights", "0", "--random-inputs", "0"], ["--threads", "0"]),
])
def test_run_flags_that_cannot_apply(capsys, args, words):
    err = _run_error(capsys, BITLINEAR, *args)
    assert all(w in err for w in words), err


def test_run_random_weights_without_params_is_an_error(capsys, tmp_path):
    src = write(tmp_path, "small.lir", SMALL)
    err = _run_error(capsys, src, "--random-weights", "0", "--random-inputs", "0")
    assert "--random-weights" in err and "no params" in err


def test_run_random_inputs_when_all_are_given_is_an_error(capsys, bitlinear_files):
    g, w, wpath, x, xpath = bitlinear_files
    err = _run_error(capsys, BITLINEAR, "--weights", wpath, "--input", f"x={xpath}", "--random-inputs", "0")
    assert "--random-inputs" in err and "--input" in err


def test_compile_shape_with_lir_is_an_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "compile", BITLINEAR, "--random-weights", "0", "--shape", "x=2x128",
                           "-o", tmp_path / "b.so")
    assert code == 1 and "--shape" in err
    one_paragraph_error(err)
    assert not (tmp_path / "b.so").exists()


def _tiny_onnx(path: Path) -> Path:
    pytest.importorskip("onnx")
    import importlib.util

    import onnx

    spec = importlib.util.spec_from_file_location("make_onnx", ROOT / "examples" / "make_onnx.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    onnx.save(make.tiny_mlp(), str(path))
    return path


def test_import_without_weights_out_keeps_the_weights_beside_the_lir(capsys, tmp_path):
    model = _tiny_onnx(tmp_path / "model.onnx")
    code, out, err = run_cli(capsys, "import", model, "-o", tmp_path / "m.lir", "--shape", "x=1x64")
    assert code == 0, err
    wfile = tmp_path / "m.safetensors"
    assert wfile.exists() and str(wfile) in out and "--weights-out" in out
    g = ladder.parse(tmp_path / "m.lir")
    assert set(weights.load(wfile)) == set(weights.params(g))
    # and the pair runs, giving what the .onnx gives directly
    x = tmp_path / "x.npy"
    np.save(x, np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64))
    assert main(["run", str(tmp_path / "m.lir"), "--weights", str(wfile), "--input", f"x={x}",
                 "--output", str(tmp_path / "a.npz")]) == 0
    assert main(["run", str(model), "--shape", "x=1x64", "--input", f"x={x}", "--output", str(tmp_path / "b.npz")]) == 0
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        np.testing.assert_array_equal(a["y"], b["y"])


def test_import_with_weights_out_writes_only_there(capsys, tmp_path):
    model = _tiny_onnx(tmp_path / "model.onnx")
    code, out, err = run_cli(capsys, "import", model, "-o", tmp_path / "m.lir", "--weights-out",
                             tmp_path / "w.safetensors", "--shape", "x=1x64")
    assert code == 0, err
    assert (tmp_path / "w.safetensors").exists() and not (tmp_path / "m.safetensors").exists()
    assert "--weights-out" not in out


# -- progress and timing -----------------------------------------------------------------------------------

class _Terminal:
    """A stderr that says it is a terminal, keeping what was written."""

    def __init__(self, tty: bool):
        self.tty, self.text = tty, []

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text.append(s)

    def flush(self):
        pass


@pytest.mark.parametrize("tty", [True, False])
def test_progress_bar_only_on_a_terminal_and_time_always(tty):
    import time

    from ladder.progress import Task

    term = _Terminal(tty)
    with Task("packing", total=3, unit="weight", stream=term) as t:
        for _ in range(3):
            time.sleep(0.12)  # tqdm redraws at most every 0.1 s
            t.update()
    assert t.seconds >= 0.36
    shown = "".join(term.text)
    assert ("packing" in shown and "3/3" in shown) if tty else shown == ""


def test_progress_without_a_count_shows_the_elapsed_time():
    import time

    from ladder.progress import Task

    term = _Terminal(True)
    with Task("compiling @g for cpu", stream=term) as t:
        t.stage("llvm")
        time.sleep(1.2)  # the ticker refreshes twice a second
    assert "compiling @g for cpu: llvm: 00:01" in "".join(term.text)


@pytest.mark.parametrize("seconds, text", [(0.0042, "4.20 ms"), (0.85, "850 ms"), (3.421, "3.42 s"),
                                           (125.0, "2 min 05 s")])
def test_seconds_text(seconds, text):
    from ladder.progress import seconds_text

    assert seconds_text(seconds) == text
