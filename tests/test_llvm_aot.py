"""Ahead-of-time compilation: a shared library + C header + weights, called from the C example."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ladder
from ladder.cli import main

ROOT = Path(__file__).resolve().parents[1]
GRAPH = """graph @aot(%x: f32[3, 41]) -> (f32[3, 41], f32[3, 41]) {
  %a = relu %x : f32[3, 41]
  %b = relu %a : f32[3, 41]
  return %b, %a
}"""


@pytest.mark.parametrize("emit, marker", [("llvm", "define void @ladder_main"), ("asm", "ladder_main:")])
def test_emit_text(tmp_path, emit, marker):
    src = tmp_path / "g.lir"
    src.write_text(GRAPH)
    out = tmp_path / f"g.{emit}"
    assert main(["compile", str(src), "--emit", emit, "-o", str(out)]) == 0
    assert marker in out.read_text()


def test_emit_object(tmp_path):
    src = tmp_path / "g.lir"
    src.write_text(GRAPH)
    out = tmp_path / "g.o"
    assert main(["compile", str(src), "--emit", "obj", "-o", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x7fELF"


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
def test_shared_library_called_from_c(tmp_path):
    src = tmp_path / "g.lir"
    src.write_text(GRAPH)
    lib = tmp_path / "model.so"
    assert main(["compile", str(src), "-o", str(lib)]) == 0
    header = (tmp_path / "model.h").read_text()
    assert "void ladder_main(" in header and "#define LADDER_NUM_OUTPUTS 2" in header
    exe = tmp_path / "run_model"
    subprocess.run(["cc", "-O2", f"-I{tmp_path}", str(ROOT / "examples" / "run_model.c"), "-o", str(exe),
                    str(lib), f"-Wl,-rpath,{tmp_path}"], check=True, capture_output=True)
    done = subprocess.run([str(exe), str(tmp_path / "model.weights")], check=True, capture_output=True, text=True)
    # %.9g prints each f32 so that it reads back to the same f32
    printed = [np.array(line.split(), np.float32) for line in done.stdout.strip().splitlines()]
    x = np.float32(0.01) * np.arange(3 * 41, dtype=np.float32).reshape(3, 41)
    ref = ladder.run(ladder.parse(GRAPH), {"x": x})
    assert len(printed) == 2
    assert np.array_equal(printed[0], ref["b"].reshape(-1)[:8]) and np.array_equal(printed[1], ref["a"].reshape(-1)[:8])


def test_compile_refuses_the_ref_target(tmp_path, capsys):
    src = tmp_path / "g.lir"
    src.write_text(GRAPH)
    assert main(["compile", str(src), "--target", "ref", "-o", str(tmp_path / "x.so")]) == 1
    assert "cpu target" in capsys.readouterr().err


def test_foreign_cpu_level_compiles_ahead_of_time_but_does_not_run_here(tmp_path):
    from ladder.target import get_target

    g = ladder.parse(GRAPH)
    lacking = get_target("cpu:avx512").runs_here()
    if lacking:  # this machine has no AVX-512: running the code would be an illegal instruction
        with pytest.raises(ladder.LadderError, match="cannot run code for cpu:avx512"):
            ladder.compile(g, "cpu:avx512")
    out = tmp_path / "g.s"
    assert main(["compile", str(tmp_path / "missing.lir"), "-o", str(out)]) == 1
    src = tmp_path / "g.lir"
    src.write_text(GRAPH)
    assert main(["compile", str(src), "--cpu", "avx512", "--emit", "asm", "-o", str(out)]) == 0
    assert "zmm" in out.read_text() or "ymm" in out.read_text()
