"""Backends behind one protocol (ladder.backend): a backend registered by a test compiles through ladder.compile
with nothing but the protocol, the shipped ones implement it, the core loads a backend only when its kind is
used, and the compile context (ladder.context) reaches the passes and the backend."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ladder
from ladder import backend as backend_mod
from ladder.backend import (BACKENDS, REGISTRY, SHIPPED, Backend, Call, Executable, HostState, get_backend,
                            missing_members, protocol_members, register_backend)
from ladder.context import CompileContext, default_cache_dir
from ladder.errors import LadderError
from ladder.interpreter import Session, StateError
from ladder.passes import PassManager
from ladder.passes.lut import Lut

ROOT = Path(__file__).resolve().parent.parent

GRAPH = """graph @g(%x: f32[2, 8]) -> (f32[2, 4], f32[2, 8]) {
  %w = param @w : f32[4, 8]
  %s = param @s : f32[1]
  %ws = mul %w, %s : f32[4, 8]
  %y = matmul %x, %ws {transpose_b = true} : f32[2, 4]
  %r = relu %y : f32[2, 4]
  %n = neg %x : f32[2, 8]
  return %r, %n
}"""

# an accumulator: %acc is state, updated by output 1
STATEFUL = """graph @acc(%x: f32[4], %acc: f32[4]) -> (f32[4], f32[4]) {
  %sum = add %acc, %x : f32[4]
  %y = relu %sum : f32[4]
  return %y, %sum
}"""

LUT_GRAPH = """graph @q(%x: f32[1, 64]) -> f32[1, 32] {
  %w = param @w : i1[32, 64]
  %s = param @s : f32[1]
  %d = dequant %w, %s : f32[32, 64]
  %y = matmul %x, %d {transpose_b = true} : f32[1, 32]
  return %y
}"""


def _weights(g):
    return ladder.weights.random(g, 0)


# -- a third backend, defined here -------------------------------------------------------------------------

class ToyModule(HostState):
    """Runs the graph in the reference interpreter and counts its calls; the state comes from HostState."""

    machine = "toy machine"
    threads = 1

    def __init__(self, graph, weights, ctx, state):
        super().__init__(graph, state, ctx.target_name)
        self.session = Session(graph, weights, memory_budget=ctx.memory_budget)
        self.program = ("toy", graph.name)
        self.calls = 0

    def run_plain(self, inputs, threads):
        self.calls += 1
        return self.session.run(inputs)

    def time_steps(self, inputs, repeat=5, threads=1, state=None):
        return [(op, 0.5) for op in self.session.runtime_ops], 2.0

    def source(self, kind=None):
        return f"toy {kind or 'text'} of @{self.graph.name}"

    def write(self, path, emit=None):
        Path(path).write_text(self.source(emit))
        return [Path(path)]

    def report_lines(self):
        return [f"toy: {self.calls} call(s)"]


class Strict:
    """Only the members of ``protocol``, read from ``inner``; each use is noted in ``used``. Anything else is an
    AttributeError: a caller that gets by with a Strict object needs nothing but the protocol."""

    @staticmethod
    def wrap(inner, protocol, used: set):
        def member(name):
            def get(self):
                used.add(name)
                return getattr(inner, name)
            return property(get)

        names = protocol_members(protocol)
        cls = type(f"Strict{type(inner).__name__}", (), {"__slots__": (), **{n: member(n) for n in names}})
        return cls()


class ToyBackend:
    kind = "toy"
    targets = "toy:NAME"
    takes_tuning = True

    def __init__(self):
        self.contexts: list[CompileContext] = []
        self.modules: list[ToyModule] = []
        self.used: set[str] = set()

    def default_pipeline(self, ctx):
        tuning = f",tuning={ctx.tuning_file}" if ctx.tuning is not None else ""
        return f"canonicalize,lut{{target=cpu:avx2,choose=auto{tuning}}}"

    def compile(self, graph, weights, ctx, state=()):
        self.contexts.append(ctx)
        self.modules.append(ToyModule(graph, weights, ctx, state))
        return Strict.wrap(self.modules[-1], Executable, self.used)


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.delitem(REGISTRY, "toy", raising=False)
    b = register_backend(ToyBackend())
    yield b
    REGISTRY.pop("toy", None)


def test_a_registered_backend_compiles_through_ladder_compile(toy, tmp_path):
    g = ladder.parse(GRAPH)
    w = _weights(g)
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    m = ladder.compile(g, "toy:one", w, threads=3, cache=tmp_path, memory_budget="1G", jit=False)
    assert m.pipeline == "canonicalize,lut{target=cpu:avx2,choose=auto}"  # the backend's default pipeline
    want = ladder.run(g, {"x": x}, w)
    out = m({"x": x})
    assert list(out) == ["r", "n"] and all(np.array_equal(out[k], want[k]) for k in want)
    (ctx,) = toy.contexts
    assert (ctx.target, ctx.kind, ctx.threads, ctx.cache_dir, ctx.memory_budget, ctx.jit, ctx.tuning) == \
        ("toy:one", "toy", 3, tmp_path, "1G", False, None)
    assert m.context is ctx
    assert m.source() == "toy text of @g" and m.source("asm") == "toy asm of @g"
    assert m.write(tmp_path / "out.txt", "bin") == [tmp_path / "out.txt"]
    assert (tmp_path / "out.txt").read_text() == "toy bin of @g"
    report = m.report()
    assert report.startswith("target toy:one, pipeline canonicalize,lut")
    assert "toy: 1 call(s)" in report and "tuning: none (the cost model" in report
    steps, entry = m.time_steps({"x": x})
    assert entry == 2.0 and [op.kind for op, _ in steps] == ["matmul", "relu", "neg"]
    assert (m.backend.machine, m.backend.threads, m.backend.program) == ("toy machine", 1, ("toy", "g"))
    assert toy.used <= set(protocol_members(Executable))
    assert {"run", "source", "write", "report_lines", "time_steps"} <= toy.used


def test_state_goes_through_the_protocol(toy):
    g = ladder.parse(STATEFUL)
    m = ladder.compile(g, "toy:acc", state={"acc": 1})
    ref = ladder.compile(g, "ref", state={"acc": 1})
    one = np.ones(4, np.float32)
    for _ in range(3):
        got, want = m({"x": one}), ref({"x": one})
        assert list(got) == ["y"] and np.array_equal(got["y"], want["y"])
    assert m.state["acc"].tolist() == [3.0] * 4 and m.state_updates == {"acc": "copy"}
    call = m.bind()
    call.inputs["x"][:] = -1
    assert call()["y"].tolist() == [2.0] * 4 and m.state["acc"].tolist() == [2.0] * 4
    assert isinstance(call, Call)
    m.reset({"acc": np.full(4, 5, np.float32)})
    assert m({"x": one, "acc": np.zeros(4, np.float32)})["sum"].tolist() == [1.0] * 4  # every input: loaded
    other = m.new_state()
    m({"x": one}, state=other)
    assert other["acc"].tolist() == [1.0] * 4 and m.state["acc"].tolist() == [1.0] * 4
    with pytest.raises(StateError, match="compiled without state"):
        ladder.compile(g, "toy:plain")({"x": one, "acc": one}, state=other)
    assert {"state", "state_modes", "run", "bind"} <= toy.used


def test_the_context_reaches_the_passes_and_the_tuning_file_is_read_once(toy, tmp_path, monkeypatch):
    from ladder import tune

    g = ladder.parse(LUT_GRAPH)
    w = _weights(g)
    path = tune.save_records({}, tmp_path / "tune.json")
    reads = []
    real = ladder.context.load_records
    monkeypatch.setattr(ladder.context, "load_records", lambda p: reads.append(p) or real(p))
    monkeypatch.setattr(ladder.passes.lut, "load_records", lambda p: pytest.fail(f"the lut pass read {p} again"))
    m = ladder.compile(g, "toy:t", w, tuning=path)
    assert reads == [path]
    (lut,) = [p for p in m.passes if isinstance(p, Lut)]
    assert lut.tuning == str(path) and lut.records is m.context.tuning and m.context.tuning_file == str(path)
    assert m.tuning == [str(path)] and m.tuning_records == {}
    # a pass manager without a context leaves its passes as parsed; with one, only a pass naming that file changes
    plain = PassManager(m.pipeline).passes
    assert all(p.with_context(CompileContext("ref")) is p for p in plain)
    other = PassManager("lut{choose=auto,tuning=/elsewhere.json}", context=m.context).passes[0]
    assert other == Lut(choose="auto", tuning="/elsewhere.json") and "records" not in vars(other)


def test_the_compile_context_is_frozen_and_reads_only_its_arguments(tmp_path, monkeypatch):
    ctx = CompileContext.create("cpu:avx2", threads=2, cache=tmp_path, memory_budget="50%", jit=False)
    assert (ctx.target_name, ctx.kind, ctx.cache_dir, ctx.tuning, ctx.tuning_file) == \
        ("cpu:avx2", "cpu", tmp_path, None, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.threads = 4
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert CompileContext.create("ref", cache=True).cache_dir == tmp_path / "xdg" / "ladder" == default_cache_dir()
    assert CompileContext.create("ref", cache=False).cache_dir is None
    assert CompileContext.create("ref", cache=tmp_path).cache_dir == tmp_path
    # the user's folder is looked up only by a backend that keeps machine code: not for ref
    monkeypatch.setattr(ladder.context, "default_cache_dir", lambda: pytest.fail("the cache folder was looked up"))
    m = ladder.compile(ladder.parse(STATEFUL), "ref")
    assert m.context.cache is True and m({"x": np.ones(4), "acc": np.ones(4)})["y"].tolist() == [2.0] * 4


def test_targets_find_their_backend_by_kind(toy):
    assert get_backend("toy:anything") is toy
    assert {"ref", "cpu", "asic", "toy"} <= set(BACKENDS) and "asic" in BACKENDS and "gpu" not in BACKENDS
    assert BACKENDS["toy"] is toy
    with pytest.raises(LadderError, match=r"unknown target 'gpu'; known: ref, cpu, .*asic:CONFIG, toy:NAME"):
        ladder.compile(ladder.parse(GRAPH), "gpu")
    with pytest.raises(LadderError, match="registered already"):
        register_backend(ToyBackend())
    with pytest.raises(LadderError, match="tuning records choose cpu kernels; target 'ref'"):
        ladder.compile(ladder.parse(GRAPH), "ref", tuning="never-read.json")


def test_registration_checks_the_protocol(monkeypatch):
    class NoCompile:
        kind, targets, takes_tuning = "nocompile", "nocompile", False

        def default_pipeline(self, ctx):
            return ""

    with pytest.raises(LadderError, match="lacks compile"):
        register_backend(NoCompile())
    bad_kind = ToyBackend()
    bad_kind.kind = "a:b"
    with pytest.raises(LadderError, match="part before ':'"):
        register_backend(bad_kind)

    class Hollow(ToyBackend):
        kind = "hollow"

        def compile(self, graph, weights, ctx, state=()):
            return object()

    monkeypatch.setitem(REGISTRY, "hollow", Hollow())
    with pytest.raises(LadderError, match="hollow backend's compile returned a object, which lacks bind, machine"):
        ladder.compile(ladder.parse(GRAPH), "hollow")
    monkeypatch.setitem(SHIPPED, "silent", ("ladder.errors", "silent"))  # a module that registers nothing
    with pytest.raises(LadderError, match="ladder.errors registers no backend for target kind 'silent'"):
        get_backend("silent")


@pytest.mark.parametrize("target", ["ref", "cpu", "asic:lut-tc"])
def test_the_shipped_backends_implement_the_protocol(target):
    g = ladder.parse(GRAPH)
    w = _weights(g)
    m = ladder.compile(g, target, w, cache=False)
    exe = m.backend
    assert missing_members(exe, Executable) == [] and isinstance(exe, Executable)
    assert missing_members(get_backend(target), Backend) == [] and isinstance(get_backend(target), Backend)
    assert isinstance(exe.bind(), Call) and exe.state_modes == {} and len(exe.state) == 0
    x = np.random.default_rng(2).standard_normal((2, 8)).astype(np.float32)
    want = ladder.run(g, {"x": x}, w)
    got = exe.run({"x": x})
    np.testing.assert_allclose(got["r"], want["r"], rtol=1e-5, atol=1e-5)
    assert isinstance(exe.report_lines(), list) and isinstance(exe.threads, int) and exe.threads >= 1
    if target == "cpu":
        assert exe.machine == ladder.target.get_target("cpu").cpu_name and exe.program is None
        steps, entry = exe.time_steps({"x": x}, repeat=1)
        assert [op.kind for op, _ in steps] == [s.op.kind for s in exe.steps] and entry > 0
    elif target == "ref":
        assert exe.machine == "numpy" and exe.program is None
        with pytest.raises(LadderError, match="per-op profile times cpu kernels; target 'ref' has none"):
            m.time_steps({"x": x})
    else:
        from ladder.backends.asic.isa import Program

        assert exe.machine == "lut-tc" and isinstance(exe.program, Program)


def test_the_core_imports_a_backend_only_when_its_kind_is_used():
    code = (
        "import sys, ladder\n"
        "def loaded():\n"
        "    return sorted({'.'.join(m.split('.')[:3]) for m in sys.modules if m.startswith('ladder.backends.')})\n"
        "g = ladder.parse('graph @g(%x: f32[4]) -> f32[4] {\\n  %y = relu %x : f32[4]\\n  return %y\\n}')\n"
        "ladder.compile(g, 'ref')\n"
        "print(loaded())\n"
        "ladder.compile(g, 'cpu:generic', jit=False, cache=False)\n"
        "print(loaded())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "['ladder.backends.llvm']"]


def test_the_session_names_the_ops_each_run_computes():
    g = ladder.parse(GRAPH)
    s = Session(g, _weights(g))
    assert [op.kind for op in s.runtime_ops] == ["matmul", "relu", "neg"]  # the scaled weight is computed once
    assert "ws" in s.fixed
