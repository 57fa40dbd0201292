"""Every command block of README.md (and examples/README.md) runs as printed, from a fresh folder holding a copy
of what the repository ships (examples/), with `ladder` and `python` being the ones under test.

Each command line of a block is split as a shell would (quotes, comments, globs) and run in this process:
`ladder ARGS` through the entry point's function (ladder.cli.main), `python FILE ARGS` and `python -c CODE` as
Python does; it must exit 0, and a `#   ` comment line after a command is output it must print. One block
also runs under a real `bash -e` with the `ladder` command on PATH, to show the shell sees the same thing.
Starting Python once per command would cost more than the commands themselves. The two install-and-go blocks of the quickstart are checked, not run: one is exactly what CI runs, the
other ends with `ladder demo`, which tests/test_cli.py runs. A block needing a Python package that is not
installed is skipped, saying which.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import io
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import ladder

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES_README = ROOT / "examples" / "README.md"
CI = ROOT / ".ci" / "run"

# a word in a block -> the Python package the block then needs (the extras of pyproject.toml)
NEEDS = {".onnx": "onnx", ".gguf": "gguf", "--plot": "matplotlib"}


@dataclass(frozen=True)
class Block:
    file: str
    line: int  # of the opening fence, 1-based
    lang: str
    text: str

    @property
    def commands(self) -> list[str]:
        return [ln for ln in self.text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]

    @property
    def expected_output(self) -> list[str]:
        """The `#   ` lines: output fragments shown after a command."""
        return [ln[4:].strip() for ln in self.text.splitlines() if ln.startswith("#   ")]


def blocks(path: Path = README) -> list[Block]:
    out, lines, i = [], path.read_text().splitlines(), 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if m:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            out.append(Block(path.relative_to(ROOT).as_posix(), i + 1, m.group(1), "\n".join(lines[i + 1:end]) + "\n"))
            i = end
        i += 1
    return out


BLOCKS = blocks()
INSTALL = [b for b in BLOCKS if "pip install" in b.text]
SHELL = [b for b in BLOCKS if b.lang == "bash" and b not in INSTALL] + \
    [b for b in blocks(EXAMPLES_README) if b.lang == "bash"]
PYTHON = [b for b in BLOCKS if b.lang == "python"]
TEXT = [b for b in BLOCKS if b.lang == "" and b.text.startswith("graph @")]


def test_every_block_is_checked():
    assert len(INSTALL) == 2 and SHELL and PYTHON and TEXT
    unchecked = [b.line for b in BLOCKS if b not in INSTALL + SHELL + PYTHON + TEXT]
    assert not unchecked, f"README.md blocks at lines {unchecked} are neither commands, Python nor .lir"


def test_quickstart_installs_then_demos_and_tests():
    """The newcomer's two commands: install + demo, install + the test command CI runs (exactly)."""
    demo, tests = INSTALL
    ci = [ln for ln in CI.read_text().splitlines() if ln.strip() and not ln.startswith(("#", "set ", "cd "))]
    assert demo.commands == ["python3 -m venv .venv && . .venv/bin/activate && pip install -e . && ladder demo"]
    assert tests.commands == ci


@pytest.fixture(scope="module")
def shell_env(tmp_path_factory):
    """PATH with `ladder` and `python` of this interpreter first; caches inside the test's folders."""
    home = tmp_path_factory.mktemp("home")
    bin_dir = home / "bin"
    bin_dir.mkdir()
    for name, exe in (("ladder", f'"{sys.executable}" -m ladder'), ("python", f'"{sys.executable}"'),
                      ("python3", f'"{sys.executable}"')):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {exe} "$@"\n')
        shim.chmod(0o755)
    env = dict(os.environ)
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", HOME=str(home), XDG_CACHE_HOME=str(home / "cache"),
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    return env


def fresh_folder(tmp_path: Path) -> Path:
    """What a clone gives a user: the shipped examples, nothing built."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "*.so", "*.npz", "*.o"))
    return tmp_path


def _skip_if_missing(block: Block) -> None:
    for word, package in NEEDS.items():
        if word in block.text and importlib.util.find_spec(package) is None:
            pytest.skip(f"{block.file} line {block.line}: needs the '{package}' package, which is not installed")


def run_line(line: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of one command line, run in this process from the current folder."""
    words = shlex.split(line, comments=True)
    argv = [m for w in words for m in (sorted(glob.glob(w)) if any(c in w for c in "*?[") else [w])]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if argv[0] == "ladder":
                from ladder.cli import main

                code = main(argv[1:])
            elif argv[:2] == ["python", "-c"]:
                exec(compile(argv[2], "<python -c>", "exec"), {"__name__": "__main__"})
                code = 0
            elif argv[0] == "python" and argv[1].endswith(".py"):
                saved, sys.argv = sys.argv, argv[1:]
                try:
                    runpy.run_path(argv[1], run_name="__main__")
                    code = 0
                finally:
                    sys.argv = saved
            else:
                raise AssertionError(f"the README test does not know how to run: {line}")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("block", SHELL, ids=[f"{b.file}:{b.line}" for b in SHELL])
def test_shell_block_runs_as_printed(block, tmp_path, monkeypatch, shell_env):
    _skip_if_missing(block)
    monkeypatch.chdir(fresh_folder(tmp_path))
    for key in ("HOME", "XDG_CACHE_HOME", "MPLBACKEND"):
        monkeypatch.setenv(key, shell_env[key])
    printed = []
    for line in block.commands:
        t0 = time.perf_counter()
        code, out, err = run_line(line)
        assert code == 0, f"{block.file} block at line {block.line}: `{line}` exited {code}:\n{out[-2000:]}\n{err[-2000:]}"
        printed.append(out)
        print(f"{time.perf_counter() - t0:6.1f} s  {line}")
    for fragment in block.expected_output:
        assert fragment in "".join(printed), f"{block.file} line {block.line} shows output not printed:\n{fragment}"


def test_a_block_runs_in_a_real_shell(tmp_path, shell_env):
    """The shortest block that makes and uses a file, under bash with `ladder` as a command."""
    block = min((b for b in SHELL if "python examples/" in b.text), key=lambda b: len(b.commands))
    _skip_if_missing(block)
    cwd = fresh_folder(tmp_path)
    t0 = time.perf_counter()
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=cwd, env=shell_env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, f"{block.file} block at line {block.line} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr
    print(f"{block.file} line {block.line} under bash: {len(block.commands)} commands in {time.perf_counter() - t0:.1f} s")


@pytest.mark.parametrize("block", PYTHON, ids=[f"{b.file}:{b.line}" for b in PYTHON])
def test_python_block_runs(block, tmp_path, monkeypatch, shell_env):
    monkeypatch.chdir(fresh_folder(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", shell_env["XDG_CACHE_HOME"])
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(block.text, f"{block.file}:{block.line}", "exec"), {"__name__": "__main__"})


@pytest.mark.parametrize("block", TEXT, ids=[f"{b.file}:{b.line}" for b in TEXT])
def test_text_format_block_parses_and_verifies(block):
    g = ladder.parse(block.text, f"{block.file}:{block.line}")
    assert len(g) > 0


def test_commands_in_the_text_name_no_missing_files():
    """Inline `ladder ...` commands of the sections this test covers use shipped files or placeholders in
    capitals (FILE.lir), never a file name a reader would look for and not find."""
    text = README.read_text()
    section = text[text.index("## Command line"):]
    for cmd in re.findall(r"`(ladder [^`]+)`", section):
        for word in cmd.split()[1:]:
            if re.fullmatch(r"[\w./-]+\.(lir|onnx|gguf|safetensors|npy)", word):
                made = any(word in b.text for b in SHELL)
                assert (ROOT / word).exists() or made, f"`{cmd}` names {word}, which nothing ships or makes"
