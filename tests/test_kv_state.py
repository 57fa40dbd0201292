"""The KV cache as state (ladder.compile(state=...), ladder.interpreter.State): the cpu module writes a step's
new rows into its own cache buffers in place, at fixed addresses, and gives the same values as the copying
path and the reference; a graph that would read an overwritten cache falls back to a copy; ref and cpu
generate the same tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ladder
from ladder import weights
from ladder.errors import LadderError
from ladder.generate import ModuleRunner, generate, signature, step_state
from ladder.interpreter import State, StateError
from ladder.models import SIZES, bitnet_decoder
from small_programs import PROMPT

@pytest.fixture(scope="module")
def stateful(small):
    """The decode step on cpu holding its caches, and the same step compiled without state."""
    held = ladder.compile(small.decode, "cpu", small.weights, threads=1, state=step_state(signature(small.decode)))
    plain = ladder.compile(small.decode, "cpu", small.weights, threads=1)
    return held, plain


def _step_inputs(token: int, at: int) -> dict[str, np.ndarray]:
    return {"tokens": np.array([token], np.int32), "pos": np.array([at], np.int32),
            "start": np.array([at], np.int32), "kv_len": np.array([at + 1], np.int32)}


def _caches(sig, fill: float = 0.0) -> dict[str, np.ndarray]:
    return {f"{kv}_cache{i}": np.full(sig.cache.shape, fill, np.float32) for i in range(sig.layers) for kv in "kv"}


def test_the_caches_are_updated_in_place_at_fixed_addresses(small, stateful):
    held, _ = stateful
    names = list(step_state(signature(small.decode)))
    assert held.state_updates == {n: "in place" for n in names}
    assert "state: %k_cache0 (in place)" in held.report()
    state = held.new_state()
    call = held.bind(state)
    assert set(call.inputs) == {"tokens", "pos", "start", "kv_len"}  # no cache crosses into Python
    addresses = {n: state.buffers[n].ctypes.data for n in names}
    # the cache_write kernels write into the state's own buffers: their output is their input
    writes = [op for op in held.graph.ops() if op.kind == "cache_write"]
    assert len(writes) == len(names)
    for op in writes:
        assert call.address[op.results[0].name] == call.address[op.operands[0]] == addresses[op.operands[0]]
    out = None
    for at, token in enumerate(PROMPT):
        for n, v in _step_inputs(token, at).items():
            call.inputs[n][...] = v
        out = call()
        assert set(out) == {held.graph.outputs[0]}  # the logits only
    assert {n: state.buffers[n].ctypes.data for n in names} == addresses
    assert all(np.any(state[n][:, :len(PROMPT)]) and not np.any(state[n][:, len(PROMPT):]) for n in names)
    state.reset()
    assert {n: state.buffers[n].ctypes.data for n in names} == addresses
    assert not any(np.any(state[n]) for n in names)


def test_state_values_equal_the_copying_path(small, stateful):
    """Step by step, the module holding its caches gives the logits and caches of the plain module, which
    copies every cache into a new output each step (bit for bit: the same kernels)."""
    held, plain = stateful
    sig = signature(small.decode)
    caches = _caches(sig)
    held.reset()
    for at, token in enumerate(PROMPT + [7, 9, 11]):
        want = list(plain({**_step_inputs(token, at), **caches}).values())
        got = held(_step_inputs(token, at))
        np.testing.assert_array_equal(list(got.values())[0], want[0])
        caches = dict(zip(caches, want[1:]))
        for n, v in caches.items():
            np.testing.assert_array_equal(held.state[n], v)


def test_a_call_with_every_cache_is_the_plain_call(small, stateful):
    """Given the caches, a stateful module loads them and returns every output, as the plain graph does."""
    held, plain = stateful
    sig = signature(small.decode)
    rng = np.random.default_rng(0)
    caches = {n: rng.standard_normal(c.shape).astype(np.float32) for n, c in _caches(sig).items()}
    want = plain({**_step_inputs(3, 10), **caches})
    got = held({**_step_inputs(3, 10), **caches})
    assert list(got) == list(want)
    for n in want:
        np.testing.assert_array_equal(got[n], want[n])
    np.testing.assert_array_equal(held.state["k_cache0"], want[small.decode.outputs[1]])
    with pytest.raises(StateError, match="give none of them, or all"):
        held({**_step_inputs(3, 10), "k_cache0": caches["k_cache0"]})


def test_reset_loads_values_and_read_views_are_read_only(stateful):
    held, _ = stateful
    ones = np.ones(held.state["k_cache1"].shape, np.float32)
    held.reset({"k_cache1": ones})
    assert np.all(held.state["k_cache1"] == 1) and not np.any(held.state["v_cache1"])
    with pytest.raises(ValueError):
        held.state["k_cache1"][0, 0, 0] = 5.0
    with pytest.raises(StateError, match="no state %k_cache9"):
        held.reset({"k_cache9": ones})
    held.reset()
    assert not np.any(held.state["k_cache1"])


def test_attention_reads_only_the_filled_rows(small, stateful):
    """Rows at and past kv_len hold NaN: a step that reads only the filled rows never sees them."""
    held, _ = stateful
    sig = signature(small.decode)
    rng = np.random.default_rng(1)
    at = 6
    filled = {n: rng.standard_normal(c.shape).astype(np.float32) for n, c in _caches(sig).items()}
    poisoned = {n: v.copy() for n, v in filled.items()}
    for v in poisoned.values():
        v[:, at:] = np.nan
    held.reset(filled)
    want = list(held(_step_inputs(4, at)).values())[0]
    held.reset(poisoned)
    got = list(held(_step_inputs(4, at)).values())[0]
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(got, want)
    assert np.isnan(held.state["k_cache0"][:, at + 1:]).all()  # past the new row: untouched


@pytest.mark.parametrize("target", ["ref", "cpu"])
def test_prefill_and_decode_share_one_state(target):
    """Two modules (a 4-token prefill, a 1-token decode) on one State continue each other's cache."""
    cfg = SIZES["tiny"]
    prefill, decode = bitnet_decoder(cfg, 4, "prefill4"), bitnet_decoder(cfg, 1, "decode1")
    w = weights.random(decode, 2)
    held = {g.name: ladder.compile(g, target, w, threads=1, state=step_state(signature(g))) for g in (prefill, decode)}
    state = held["decode1"].new_state()
    first = held["prefill4"]({"tokens": np.array(PROMPT[:4], np.int32), "pos": np.arange(4, dtype=np.int32),
                              "start": np.array([0], np.int32), "kv_len": np.array([4], np.int32)}, state=state)
    logits = list(held["decode1"](_step_inputs(PROMPT[4], 4), state=state).values())[0]
    # the reference, token by token through the decode graph with the caches passed around
    caches = _caches(signature(decode))
    for at, token in enumerate(PROMPT):
        out = list(ladder.run(decode, {**_step_inputs(token, at), **caches}, w).values())
        caches = dict(zip(caches, out[1:]))
    np.testing.assert_allclose(logits, out[0], rtol=1e-4, atol=1e-4)
    for n in caches:
        np.testing.assert_allclose(state[n], caches[n], rtol=1e-4, atol=1e-5)
    assert list(first.values())[0].shape == (4, cfg.vocab)


def test_ref_and_cpu_generate_the_same_16_tokens(small):
    ids = {}
    for target in ("ref", "cpu"):
        for held in (True, False):
            gen = generate(small.prefill, small.decode, PROMPT, 16, ModuleRunner(target, small.weights, threads=1,
                                                                                 state=held))
            ids[target, held] = gen.ids
            assert gen.steps == {"prefill": len(PROMPT), "decode": 15}
    assert len(set(map(tuple, ids.values()))) == 1 and len(ids["cpu", True]) == 16
    # and the plain function runner (the caches passed as inputs and returned)
    runner = ModuleRunner("cpu", small.weights, threads=1)
    assert generate(small.prefill, small.decode, PROMPT, 16, lambda g, i: runner(g, i)).ids == ids["ref", True]


def test_generations_on_one_runner_do_not_share_a_cache(small):
    """Each stream has its own cache: two interleaved generations give their own tokens."""
    from ladder.generate import stream

    runner = ModuleRunner("cpu", small.weights, threads=1)
    want_a = generate(small.prefill, small.decode, PROMPT, 6, runner).ids
    want_b = generate(small.prefill, small.decode, [9, 8], 6, runner).ids
    a, b = stream(small.prefill, small.decode, PROMPT, 6, runner), stream(small.prefill, small.decode, [9, 8], 6,
                                                                          runner)
    got = [(next(a), next(b)) for _ in range(6)]
    assert [x for x, _ in got] == want_a and [y for _, y in got] == want_b


# -- graphs that do not allow updating in place ------------------------------------------------------------

def _cache_graph(read_after: bool) -> ladder.Graph:
    """out = sum(new rows) [+ sum(updated - old cache)]; the updated cache is state. With ``read_after``,
    an op reads the old cache after cache_write has written the new one."""
    b = ladder.Builder("cachey")
    x = b.input("x", "f32[2, 1, 4]")
    start = b.input("start", "i32[1]")
    cache = b.input("cache", "f32[2, 8, 4]")
    if read_after:
        new = b.cache_write(cache, x, start)
        out = b.reduce(b.sub(new, cache), axes=[0, 1, 2], kind="sum")
    else:  # the old cache is read first: what the write needs depends on it
        seen = b.reduce(cache, axes=[1], kind="sum", keepdims=True)  # [2, 1, 4]
        new = b.cache_write(cache, b.add(x, seen), start)
        out = b.reduce(new, axes=[0, 1, 2], kind="sum")
    return b.build(out, new)


@pytest.mark.parametrize("read_after", [True, False])
def test_reading_the_old_cache_after_the_write_falls_back_to_a_copy(read_after):
    g = _cache_graph(read_after)
    cpu = ladder.compile(g, "cpu", threads=1, state={"cache": 1})
    ref = ladder.compile(g, "ref", state={"cache": 1})
    assert cpu.state_updates == {"cache": "copy" if read_after else "in place"}
    assert ref.state_updates == {"cache": "copy"}
    rng = np.random.default_rng(0)
    for at in range(5):
        ins = {"x": rng.standard_normal((2, 1, 4)).astype(np.float32), "start": np.array([at], np.int32)}
        got, want = cpu(ins), ref(ins)
        assert list(got) == list(want) == [g.outputs[0]]
        np.testing.assert_allclose(got[g.outputs[0]], want[g.outputs[0]], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(cpu.state["cache"], ref.state["cache"], rtol=1e-5, atol=1e-5)
    assert np.any(cpu.state["cache"][:, :5]) and not np.any(cpu.state["cache"][:, 5:])


@pytest.mark.parametrize("target", ["ref", "cpu"])
def test_states_that_swap_and_one_returned_unchanged(target):
    """k takes v's old value and v takes k's (every new value is read before any buffer is written); a
    state the graph returns as it came stays; a state input also returned as an output gives its old value."""
    b = ladder.Builder("swap")
    x = b.input("x", "f32[3]")
    k, v, keep = b.input("k", "f32[3]"), b.input("v", "f32[3]"), b.input("keep", "f32[3]")
    g = b.build(b.add(x, k), v, k, keep, k)
    m = ladder.compile(g, target, threads=1, state={"k": 1, "v": 2, "keep": 3})
    assert m.state_updates == {"k": "copy", "v": "copy", "keep": "unchanged"}
    m.reset({"k": [1, 2, 3], "v": [10, 20, 30], "keep": [5, 5, 5]})
    out = m({"x": np.zeros(3, np.float32)})
    assert list(out) == [g.outputs[0], "k"]
    assert [list(a) for a in out.values()] == [[1, 2, 3], [1, 2, 3]]  # x + k, and k's old value
    assert list(m.state["k"]) == [10, 20, 30] and list(m.state["v"]) == [1, 2, 3] and list(m.state["keep"]) == [5] * 3
    m({"x": np.zeros(3, np.float32)})
    assert list(m.state["k"]) == [1, 2, 3] and list(m.state["v"]) == [10, 20, 30]


def test_state_errors(small):
    g = small.decode
    with pytest.raises(StateError, match="has no input %k_cache7 to hold as state"):
        ladder.compile(g, "ref", small.weights, state={"k_cache7": 1})
    with pytest.raises(StateError, match="cannot take output 0 .* one type"):
        ladder.compile(g, "ref", small.weights, state={"k_cache0": 0})
    with pytest.raises(StateError, match="output 1 of graph @bitnet_small already updates %k_cache0"):
        ladder.compile(g, "ref", small.weights, state={"k_cache0": 1, "v_cache0": 1})
    with pytest.raises(StateError, match="5 outputs; output 9"):
        ladder.compile(g, "ref", small.weights, state={"k_cache0": 9})
    plain = ladder.compile(g, "ref", small.weights)
    with pytest.raises(StateError, match="compiled without state"):
        plain({}, state=State(()))
    held = ladder.compile(g, "ref", small.weights, state={"k_cache0": 1})
    with pytest.raises(StateError, match="does not fit graph @bitnet_small: it lacks %k_cache0"):
        held(_step_inputs(1, 0), state=State(()))
    with pytest.raises(LadderError, match="input %v_cache0 .* is missing"):
        held(_step_inputs(1, 0))


def test_state_by_output_name_and_aot_header(small, tmp_path):
    sig = signature(small.decode)
    by_name = {n: small.decode.outputs[i] for n, i in step_state(sig).items()}
    m = ladder.compile(small.decode, "cpu", small.weights, threads=1, state=by_name)
    assert [s.output for s in m.state_slots] == list(step_state(sig).values())
    header = Path(m.write(tmp_path / "step.so")[1]).read_text()
    assert "input 4 %k_cache0: output 1 may be the same buffer as the input (updated in place)" in header
    assert "int64_t ladder_call(" in header
