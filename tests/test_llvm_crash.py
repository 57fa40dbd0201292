"""Never abort: every loop ladder emits carries its vectorisation decision, and LLVM runs in a child process
whose death becomes a warning (compiled again without loop vectorisation) or a LadderError naming the op
and kernel, while this process lives on."""

from __future__ import annotations

import re

import numpy as np
import pytest

import ladder
from ladder.backends.llvm import worker as worker_mod
from ladder.backends.llvm.codegen import KernelContext, for_range, loop_md, seal_loops
from ladder.backends.llvm.compiler import CompilerWarning, compile_graph
from ladder.backends.llvm.jit import compile_in_child
from ladder.target import get_target

CHAIN = """graph @chain(%x: f32[37, 129]) -> f32[37, 129] {
  %a = relu2 %x : f32[37, 129]
  %q, %s = quantize %a {scheme = "absmax", dtype = i8} : i8[37, 129], f32[37, 1]
  %d = dequant %q, %s : f32[37, 129]
  return %d
}"""


def _loop_ids(ir_text: str) -> dict[str, str]:
    """loop ID -> its options, from module text."""
    nodes = dict(re.findall(r"^(!\d+) = (.*)$", ir_text, re.M))
    out = {}
    for node, body in nodes.items():
        ops = re.findall(r"!\d+", body)
        if ops and ops[0] == node:  # a loop ID refers to itself first
            out[node] = " ".join(nodes.get(o, "") for o in ops[1:])
    return out


# -- every loop decided ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["cpu:generic", "cpu:avx2", "cpu:avx512"])
def test_every_loop_back_edge_carries_a_decision(target):
    cg = compile_graph(ladder.parse(CHAIN), target=target, jit=False)
    ids = _loop_ids(cg.ir_text)
    backs = re.findall(r"br label %\"[\w.]+\", !llvm.loop (!\d+)", cg.ir_text)
    assert backs and all(b in ids for b in backs)
    assert all("llvm.loop.vectorize" in ids[b] for b in backs)
    widths = {int(w) for b in backs for w in re.findall(r'"llvm.loop.vectorize.width", i32 (\d+)', ids[b])}
    # f32 element loops are forced to one register of floats
    assert get_target(target).vector_bits // 32 in widths


def _one_loop(target, body, trips=None):
    ctx = KernelContext(get_target(target))
    fn, b, ptrs, begin, end = ctx.kernel("t", 2)
    stop = trips if trips is not None else end
    with for_range(b, 0, stop) as i:
        body(b, ptrs, i)
    b.ret_void()
    text = str(ctx.module)
    (md,) = _loop_ids(text).values()
    return md


def _f32_copy(b, ptrs, i):
    from ladder.backends.llvm.codegen import F32, elem_ptr

    b.store(b.fadd(b.load(elem_ptr(b, ptrs[0], i, F32), typ=F32), b.load(elem_ptr(b, ptrs[0], i, F32), typ=F32)),
            elem_ptr(b, ptrs[1], i, F32))


def _f32_sum(b, ptrs, i):
    from ladder.backends.llvm.codegen import F32, elem_ptr

    slot = b.alloca(F32)
    b.store(b.fadd(b.load(slot, typ=F32), b.load(elem_ptr(b, ptrs[0], i, F32), typ=F32)), slot)


def _i8_copy(b, ptrs, i):
    from ladder.backends.llvm.codegen import I8, elem_ptr

    b.store(b.load(elem_ptr(b, ptrs[0], i, I8), typ=I8), elem_ptr(b, ptrs[1], i, I8))


def test_loop_plan_widths():
    assert "i32 8" in _one_loop("cpu:avx2", _f32_copy)
    assert "i32 16" in _one_loop("cpu:avx512", _f32_copy)
    assert "i32 4" in _one_loop("cpu:generic", _f32_copy)
    assert "i32 32" in _one_loop("cpu:avx2", _i8_copy)
    assert "i32 2" in _one_loop("cpu:avx2", _f32_copy, trips=3)  # at most the trip count
    # a float sum stays in order (a forced width would let LLVM reassociate it); one trip is no vector
    for md in (_one_loop("cpu:avx2", _f32_sum), _one_loop("cpu:avx2", _f32_copy, trips=1)):
        assert "vectorize.enable\", i1 0" in md and "width" not in md


def test_hand_built_loops_are_sealed():
    ctx = KernelContext(get_target("cpu:avx2"))
    fn, b, ptrs, begin, end = ctx.kernel("t", 1)
    head = fn.append_basic_block("head")
    b.branch(head)
    b.position_at_end(head)
    done = fn.append_basic_block("done")
    b.cbranch(b.icmp_signed("<", begin, end), head, done)
    b.position_at_end(done)
    b.ret_void()
    assert seal_loops(ctx.module) == 1 and seal_loops(ctx.module) == 0
    assert "llvm.loop" in str(ctx.module)
    assert loop_md(ctx.module, 1) is not loop_md(ctx.module, 1)  # each loop has its own ID


# -- the compiler child ----------------------------------------------------------------------------------------

@pytest.fixture
def crash_on(monkeypatch):
    def arm(function: str, always: bool):
        monkeypatch.setattr(worker_mod, "CRASH_TEST", (function, always))
    return arm


def _kernel_of(cg, kind):
    return next(s.spec.fn.name for s in cg.steps if s.op.kind == kind)


def test_a_crash_is_retried_without_loop_vectorisation_and_named(crash_on):
    g = ladder.parse(CHAIN, "chain.lir")
    x = np.random.default_rng(0).standard_normal((37, 129)).astype(np.float32)
    kernel = _kernel_of(compile_graph(g, target="cpu", jit=False), "quantize")
    started = worker_mod.worker().started
    crash_on(kernel, False)
    with pytest.warns(CompilerWarning) as rec:
        cg = compile_graph(g, target="cpu")
    (msg,) = [str(w.message) for w in rec if w.category is CompilerWarning]
    assert "'quantize' defining %q" in msg and "chain.lir:3" in msg and kernel in msg
    assert "abort while compiling" in msg  # the child's last words
    assert not cg.module.loop_vectorize
    assert np.array_equal(cg.run({"x": x})["d"], ladder.run(g, {"x": x})["d"])
    assert worker_mod.worker().started > started  # the child died and was started again


def test_a_crash_without_a_way_out_is_a_ladder_error(crash_on):
    g = ladder.parse(CHAIN, "chain.lir")
    kernel = _kernel_of(compile_graph(g, target="cpu:avx2", jit=False), "dequant")
    crash_on(kernel, True)
    with pytest.raises(ladder.LadderError) as e:
        compile_graph(g, target="cpu:avx2", jit=False)
    text = str(e.value)
    assert "LLVM crashed compiling 'dequant' defining %d" in text and kernel in text and "chain.lir:4" in text
    assert "also without loop vectorisation" in text and "abort while compiling" in text
    # the child serves the next compile
    worker_mod.CRASH_TEST = None
    assert compile_graph(g, target="cpu:avx2", jit=False).module.obj


def test_llvm_errors_it_survives_come_back_as_ladder_errors():
    with pytest.raises(ladder.LadderError, match="LLVM rejected"):
        compile_in_child("define void @f( {", get_target("cpu:generic"))


def test_the_child_prints_nothing_into_this_process(capfd):
    compile_graph(ladder.parse(CHAIN), target="cpu:x86-64", jit=False)
    out, err = capfd.readouterr()
    assert "loop not vectorized" not in err and not out
