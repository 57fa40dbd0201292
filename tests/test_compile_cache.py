"""The compiled-code cache is keyed on the graph, before any kernel is generated: a second compile of the same
graph generates no kernel and prints no IR, and runs the same; any change to what the code is made from (the
graph, the target, libgomp, ladder's own source) misses; an entry that is damaged, foreign or whose kernel
table does not fit is refused with a CacheWarning and the module compiled afresh."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import ladder
from ladder.backends.llvm import codegen, compiler, jit
from ladder.backends.llvm.jit import CacheWarning, ObjectCache, pack_entry
from ladder.errors import RuntimeFailure

CHAIN = """graph @chain(%x: f32[37, 129], %i: i32[3]) -> (f32[37, 129], f32[3, 129]) {
  %a = relu2 %x : f32[37, 129]
  %q, %s = quantize %a {scheme = "absmax", dtype = i8} : i8[37, 129], f32[37, 1]
  %d = dequant %q, %s : f32[37, 129]
  %g = gather %d, %i {axis = 0} : f32[3, 129]
  return %d, %g
}"""
X = np.random.default_rng(0).standard_normal((37, 129)).astype(np.float32)
IDX = np.array([3, 0, 36], np.int32)


def _compile(folder, text=CHAIN, target="cpu", **kw):
    """The backend's CompiledGraph, and whether it came from the cache; CacheWarnings fail the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        cg = ladder.compile(ladder.parse(text), target, cache=folder, **kw)._backend
    return cg, cg.module.from_cache


def _no_lowering(monkeypatch):
    for kind in list(codegen.LOWERINGS):
        monkeypatch.setitem(codegen.LOWERINGS, kind, lambda *a, kind=kind: pytest.fail(f"{kind} was lowered"))


def _entries(folder):
    return sorted(p for p in folder.iterdir() if p.suffix == ".o")


def test_a_second_compile_generates_no_kernel_and_runs_the_same(tmp_path, monkeypatch):
    first, hit = _compile(tmp_path)
    assert not hit
    _no_lowering(monkeypatch)
    monkeypatch.setattr(compiler.CompiledGraph, "_generate", lambda *a: pytest.fail("IR was generated"))
    second, hit = _compile(tmp_path)
    assert hit
    assert [(s.spec.fn.name, s.spec.work, s.spec.grain, s.spec.errors) for s in second.steps] == \
           [(s.spec.fn.name, s.spec.work, s.spec.grain, s.spec.errors) for s in first.steps]
    want = first.run({"x": X, "i": IDX})
    got = second.run({"x": X, "i": IDX})
    assert all(np.array_equal(got[k], want[k]) for k in want)
    # a kernel's error message comes from the entry's kernel table
    with pytest.raises(RuntimeFailure, match="out of range for axis 0 of size 37"):
        second.run({"x": X, "i": np.array([0, 37, 1], np.int32)})
    # the IR is generated when asked for, and is the IR the object was compiled from
    monkeypatch.undo()
    assert second.ir_text == first.ir_text
    assert second.source("llvm") == first.source("llvm")


def test_what_the_code_is_made_from_is_the_key(tmp_path, monkeypatch):
    _compile(tmp_path, jit=False)
    assert _compile(tmp_path, jit=False)[1]
    assert _compile(tmp_path, threads=3, jit=False)[1]  # threads are a run-time argument
    assert not _compile(tmp_path, CHAIN.replace("relu2", "relu"), jit=False)[1]
    assert not _compile(tmp_path, target="cpu:generic", jit=False)[1]
    assert _compile(tmp_path, target="cpu:generic", jit=False)[1]
    gomp = compiler.gomp_available()
    monkeypatch.setattr(compiler, "gomp_available", lambda: not gomp)
    assert not _compile(tmp_path, jit=False)[1]
    monkeypatch.undo()
    monkeypatch.setattr(jit, "code_version", lambda: "ladder's source, edited")
    assert not _compile(tmp_path, jit=False)[1]
    assert len(_entries(tmp_path)) == 5


def test_ladder_source_is_hashed():
    assert jit.code_version() == jit.code_version() and len(jit.code_version()) == 64


def _refused(folder, match):
    with pytest.warns(CacheWarning, match=match):
        cg = ladder.compile(ladder.parse(CHAIN), "cpu", cache=folder)._backend
    assert not cg.module.from_cache
    want = ladder.run(ladder.parse(CHAIN), {"x": X, "i": IDX})
    got = cg.run({"x": X, "i": IDX})
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert _compile(folder)[1]  # the recompile stored a good entry again


def test_a_damaged_or_foreign_entry_is_refused_and_recompiled(tmp_path):
    cg, _ = _compile(tmp_path)
    (entry,) = _entries(tmp_path)
    entry.write_bytes(entry.read_bytes()[:-10])
    _refused(tmp_path, "damaged")
    os.chmod(entry, 0o646)
    _refused(tmp_path, "writable by another user")
    # an entry with a valid checksum under this very key whose kernel table does not fit the graph
    source = cg._code_source()
    for meta in ({"kernels": []}, {"kernels": [{"fn": 1}] * len(cg.steps)}, {}):
        entry.write_bytes(ObjectCache(tmp_path, source, cg.target).pack(pack_entry(cg.module.obj, meta)))
        _refused(tmp_path, "kernel table")
    entry.write_bytes(ObjectCache(tmp_path, source, cg.target).pack(b"\xff" * 7))
    _refused(tmp_path, "no object")


def test_write_after_a_hit(tmp_path):
    _compile(tmp_path)
    cg, hit = _compile(tmp_path)
    assert hit
    (ll,) = cg.write(tmp_path / "m.ll", "llvm")
    assert "define" in ll.read_text()
    (o,) = cg.write(tmp_path / "m.o", "obj")
    assert o.read_bytes() == cg.module.obj
