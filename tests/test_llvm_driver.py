"""The cpu backend's driver: one native entry function, the planned arena, threads, ladder.compile, the CLI."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import ladder
from ladder.backends.llvm.memory import Interval, plan
from ladder.cli import main

CHAIN = """graph @chain(%x: f32[37, 129]) -> (f32[37, 129], f32[37, 129]) {
  %a = relu %x : f32[37, 129]
  %b = relu %a : f32[37, 129]
  %c = relu %b : f32[37, 129]
  %d = relu %c : f32[37, 129]
  return %d, %a
}"""


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 20), st.integers(0, 6)), min_size=1, max_size=30))
def test_arena_never_overlaps_live_values(spec):
    ivs = [Interval(f"v{i}", size, start, start + length) for i, (size, start, length) in enumerate(spec)]
    p = plan(ivs)
    for i, a in enumerate(ivs):
        assert p.offsets[a.name] % 64 == 0 and p.offsets[a.name] + a.size <= p.size
        for b in ivs[i + 1:]:
            if a.start <= b.end and b.start <= a.end:
                assert not p.overlaps(a, b), (a, b, p.offsets)


def test_arena_reuses_dead_values():
    ivs = [Interval("a", 1000, 0, 1), Interval("b", 1000, 1, 2), Interval("c", 1000, 2, 3)]
    p = plan(ivs)
    assert p.offsets["a"] == p.offsets["c"] and p.size == 2 * 1024


@pytest.mark.parametrize("target", ["cpu", "cpu:generic"])
def test_chain_matches_the_interpreter_at_any_thread_count(target):
    g = ladder.parse(CHAIN)
    x = np.random.default_rng(0).standard_normal((37, 129)).astype(np.float32)
    ref = ladder.run(g, {"x": x})
    m = ladder.compile(g, target)
    for threads in (1, 2, 3):
        out = m({"x": x}, threads=threads)
        assert list(out) == ["d", "a"]
        assert all(np.array_equal(out[k], ref[k]) for k in ref)
    # b and c are the only intermediates (a and d are outputs); c is made from b, so both are live at once:
    # two buffers of 37 * 129 * 4 = 19092 bytes, each rounded up to 64
    backend = m._backend
    assert set(backend.plan.offsets) == {"b", "c"} and backend.plan.size == 2 * 19136


def test_outputs_are_fresh_arrays_each_call():
    g = ladder.parse(CHAIN)
    m = ladder.compile(g, "cpu")
    x = np.ones((37, 129), np.float32)
    first = m({"x": x})["d"]
    second = m({"x": -x})["d"]
    assert np.all(first == 1.0) and np.all(second == 0.0)


def test_graph_returning_an_input_and_a_weight():
    g = ladder.parse("""graph @g(%x: f32[4]) -> (f32[4], f32[4], f32[4]) {
  %w = param @w : f32[4]
  %y = relu %x : f32[4]
  return %y, %x, %w
}""")
    w = {"w": np.arange(4, dtype=np.float32)}
    x = np.array([-1, 2, -3, 4], np.float32)
    m = ladder.compile(g, "cpu", w)
    out = m({"x": x})
    assert out["y"].tolist() == [0, 2, 0, 4] and out["x"].tolist() == x.tolist() and out["w"].tolist() == [0, 1, 2, 3]
    # calls read the caller's arrays where they lie and return fresh arrays: a second call changes neither
    again = m({"x": -x})
    assert again["y"].tolist() == [1, 0, 3, 0] and again["x"].tolist() == (-x).tolist()
    assert out["y"].tolist() == [0, 2, 0, 4] and out["x"].tolist() == x.tolist() and out["y"] is not again["y"]


def test_compile_api_ref_target_and_introspection():
    g = ladder.parse(CHAIN)
    m = ladder.compile(g, "ref")
    x = np.full((37, 129), -2.0, np.float32)
    assert np.all(m({"x": x})["d"] == 0)
    assert "relu" in m.source()
    cpu = ladder.compile(g, "cpu")
    assert "define void @ladder_main" in cpu.source() and cpu.source("asm").strip()
    assert "kernels" in cpu.report() and "arena" in cpu.report()
    assert cpu.ir_after("legalize-types") is not None
    with pytest.raises(ladder.LadderError, match="no pass"):
        cpu.ir_after("nonexistent")


def test_unknown_target_and_missing_kernels_are_clear_errors():
    g = ladder.parse(CHAIN)
    with pytest.raises(ladder.LadderError, match="unknown target"):
        ladder.compile(g, "gpu")
    with pytest.raises(ladder.LadderError, match="unknown cpu 'sse9'"):
        ladder.compile(g, "cpu:sse9")


def test_cli_run_on_the_cpu_matches_ref(tmp_path, capsys):
    f = tmp_path / "chain.lir"
    f.write_text(CHAIN)
    outs = {}
    for extra in (["--target", "ref"], ["--target", "cpu", "--threads", "2"], ["--target", "cpu", "--cpu", "generic"]):
        path = tmp_path / f"out{len(outs)}.npz"
        assert main(["run", str(f), "--random-inputs", "3", "--output", str(path), *extra]) == 0
        outs[tuple(extra)] = dict(np.load(path))
    first, *rest = outs.values()
    for other in rest:
        assert all(np.array_equal(first[k], other[k]) for k in first)
    assert main(["run", str(f), "--random-inputs", "3", "--target", "ref", "--cpu", "avx2"]) == 1
    assert "goes with --target cpu" in capsys.readouterr().err


def test_compiled_code_is_cached_on_disk_and_a_damaged_entry_is_ignored(tmp_path):
    g = ladder.parse(CHAIN)
    x = np.random.default_rng(1).standard_normal((37, 129)).astype(np.float32)
    first = ladder.compile(g, "cpu", cache=tmp_path)
    assert not first._backend.module.from_cache
    (entry,) = list(tmp_path.glob("*.o"))
    second = ladder.compile(g, "cpu", cache=tmp_path)
    assert second._backend.module.from_cache
    assert np.array_equal(second({"x": x})["d"], first({"x": x})["d"])
    entry.write_bytes(entry.read_bytes()[:-10])  # a crash mid-write would leave something like this
    with pytest.warns(UserWarning, match="damaged"):
        third = ladder.compile(g, "cpu", cache=tmp_path)
    assert not third._backend.module.from_cache
    assert np.array_equal(third({"x": x})["d"], first({"x": x})["d"])
    assert not list(tmp_path.glob("*.tmp"))
    assert not ladder.compile(g, "cpu", cache=False)._backend.module.from_cache


@pytest.mark.parametrize("env, want", [({}, "10000"), ({"GOMP_SPINCOUNT": "77"}, "77"),
                                       ({"OMP_WAIT_POLICY": "PASSIVE"}, None)])
def test_libgomp_spin_is_bounded_unless_the_user_chose(env, want):
    """Loading libgomp sets GOMP_SPINCOUNT=10000 first, unless the user set it or OMP_WAIT_POLICY (a fresh
    process: libgomp reads its environment once, when it is loaded)."""
    import os
    import subprocess
    import sys

    from ladder.backends.llvm.compiler import gomp_available

    if not gomp_available():
        pytest.skip("no libgomp on this machine")
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = ("import os; from ladder.backends.llvm.compiler import gomp_available; assert gomp_available(); "
            "print(os.environ.get('GOMP_SPINCOUNT'))")
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == str(want)


def test_steps_of_one_kernel_share_its_parallel_trampoline_and_the_entry_is_not_optimised():
    """Two matmuls of one shape share a kernel and the trampoline libgomp's threads run for it (a decoder's
    layers: one each, not one per step); the entry, a call per step, is left out of LLVM's optimiser."""
    g = ladder.parse("""graph @g(%x: f32[64, 512], %w: f32[512, 512], %v: f32[512, 512]) -> (f32[64, 512], f32[64, 512]) {
  %y = matmul %x, %w : f32[64, 512]
  %z = matmul %x, %v : f32[64, 512]
  return %y, %z
}""")
    m = ladder.compile(g, "cpu", threads=2, cache=False)
    defines = [line for line in m.backend.ir_text.splitlines() if line.startswith("define")]
    entry = [line for line in defines if '@"ladder_main"' in line]
    assert len(entry) == 1 and "optnone" in entry[0] and "noinline" in entry[0], entry
    if not m.backend.use_gomp:
        pytest.skip("no libgomp here: every kernel runs on the calling thread")
    assert len([line for line in defines if "_par_" in line]) == 1, defines
    assert m.backend.ir_text.count("call void @\"GOMP_parallel\"") == 2
    x, w, v = (np.random.default_rng(i).standard_normal(s).astype(np.float32)
               for i, s in enumerate([(64, 512), (512, 512), (512, 512)]))
    out = m({"x": x, "w": w, "v": v})
    np.testing.assert_allclose(out["y"], x @ w, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out["z"], x @ v, rtol=1e-4, atol=1e-3)


def test_only_kernels_worth_a_parallel_region_get_one():
    from ladder.backends.llvm.compiler import PARALLEL_MIN_COST, step_cost

    g = ladder.parse("""graph @g(%x: f32[64, 512], %w: f32[512, 512], %s: f32[64, 256]) -> (f32[64, 512], f32[64, 256]) {
  %y = matmul %x, %w : f32[64, 512]
  %r = relu %s : f32[64, 256]
  return %y, %r
}""")
    ops = {op.kind: op for op in g.ops()}
    assert step_cost(ops["matmul"], g) >= PARALLEL_MIN_COST > step_cost(ops["relu"], g)
    m = ladder.compile(g, "cpu", threads=2)
    if not m.backend.use_gomp:
        pytest.skip("no libgomp here: every kernel runs on the calling thread")
    ir_text = m.backend.ir_text
    tramps = [line for line in ir_text.splitlines() if line.startswith("define") and "_par_" in line]
    assert len(tramps) == 1 and "matmul" in tramps[0], tramps
    x = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32)
    out = m({"x": x, "w": w, "s": x[:, :256]})
    np.testing.assert_allclose(out["y"], x @ w, rtol=1e-4, atol=1e-3)
    assert np.array_equal(out["r"], np.maximum(x[:, :256], 0))


def test_ops_of_one_kind_attributes_and_types_share_a_kernel():
    g = ladder.parse("""graph @g(%a: f32[8, 16], %b: f32[8, 16], %c: f32[4, 16]) -> (f32[8, 16], f32[8, 16], f32[4, 16]) {
  %x = relu %a : f32[8, 16]
  %y = relu %b : f32[8, 16]
  %z = relu %c : f32[4, 16]
  return %x, %y, %z
}""")
    m = ladder.compile(g, "cpu", cache=False)
    steps = {s.op.results[0].name: s for s in m.backend.steps}
    assert steps["x"].spec.fn is steps["y"].spec.fn and steps["z"].spec.fn is not steps["x"].spec.fn
    assert sum(line.startswith("define") and "k_relu" in line for line in m.backend.ir_text.splitlines()) == 2
    rng = np.random.default_rng(0)
    x = {k: rng.standard_normal(s).astype(np.float32) for k, s in (("a", (8, 16)), ("b", (8, 16)), ("c", (4, 16)))}
    out = m(x)
    for k, v in (("x", "a"), ("y", "b"), ("z", "c")):
        assert np.array_equal(out[k], np.maximum(x[v], 0))
