"""LLVM movement kernels (reshape, transpose, concat, slice, gather, cache_write, unpack, pack) bit-exact against
the interpreter for every element type and packing, on both targets and at 1 and 2 threads.

Every graph is also run through ``guarded_run``: each operand sits right before (then right after) a
PROT_NONE page, so a read out of bounds crashes the test, and each result has canary bytes on both sides that
must survive the kernel (also when the kernel reports a run-time error)."""

from __future__ import annotations

import ctypes
import math
import mmap

import ml_dtypes
import numpy as np
import pytest

import ladder
from ladder.backends.llvm.compiler import compile_graph
from ladder.backends.llvm.lowerings import movement
from ladder.builder import Builder
from ladder.errors import RuntimeFailure
from ladder.interpreter import bind_inputs
from ladder.packing import PACKINGS, from_codes, get_packing
from ladder.types import DTYPES, TensorType
from graph_inputs import declare_inputs

TARGETS = ["cpu", "cpu:generic"]
ALL_TYPES = list(DTYPES)  # f32 f16 bf16 fp8e4m3 fp4 i32 i16 i8 u8 i4 u4 i2 u2 u1 i1 ternary nf4
LOW_BIT = [n for n, t in DTYPES.items() if t.is_low_bit]
CANARY = 64  # bytes of 0xA5 on each side of every result

# -- guarded execution ------------------------------------------------------------------------------------

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_KEEP: list = []  # guarded mappings stay mapped for the whole session (kernels are done with them)


def guarded_copy(arr: np.ndarray, where: str) -> np.ndarray:
    """A copy of arr whose bytes end right at a PROT_NONE page (where='end') or start right after one."""
    arr = np.ascontiguousarray(arr)
    n = arr.nbytes
    data_pages = -(-max(n, 1) // PAGE)
    mm = mmap.mmap(-1, (data_pages + 2) * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    for page in (base, base + (data_pages + 1) * PAGE):
        assert _libc.mprotect(page, PAGE, 0) == 0
    start = PAGE + data_pages * PAGE - n if where == "end" else PAGE
    out = np.frombuffer(mm, np.uint8, n, start).view(arr.dtype).reshape(arr.shape)
    out[...] = arr
    _KEEP.append(mm)
    return out


def _bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def call_in_parts(fn, ptrs, work: int, parts: int, grain: int) -> None:
    """Call a kernel over [0, work) in ``parts`` ranges (split points multiples of ``grain``), as threads would."""
    chunk = -(-max(work, 1) // parts)
    chunk = -(-chunk // grain) * grain
    for lo in range(0, work, chunk):
        fn(*ptrs, lo, min(work, lo + chunk))


def guarded_run(cg, inputs, threads: int, where: str) -> dict[str, np.ndarray]:
    """CompiledGraph.run with guard pages around operands and canaries around results."""
    env = dict(zip(cg.weight_names, cg.weights))
    env.update(bind_inputs(cg.graph, inputs))
    for s in cg.steps:
        args = [guarded_copy(env[o], where) for o in s.op.operands]
        bufs, outs = [], []
        for r in s.op.results:
            dt, shape = np.dtype(r.type.storage_np_dtype), r.type.storage_shape
            n = math.prod(shape) * dt.itemsize
            buf = np.full(n + 2 * CANARY, 0xA5, np.uint8)
            bufs.append(buf)
            outs.append(buf[CANARY:CANARY + n].view(dt).reshape(shape))
        status = np.zeros(1, np.int64) if s.spec.has_status else None
        ptrs = [a.ctypes.data for a in args + outs] + ([status.ctypes.data] if status is not None else [])
        call_in_parts(s.fn, ptrs, s.spec.work, threads, s.spec.grain)
        for buf in bufs:
            assert np.all(buf[:CANARY] == 0xA5) and np.all(buf[-CANARY:] == 0xA5), \
                f"{s.op.describe()} wrote outside its result"
        if status is not None and status[0]:
            raise RuntimeFailure(f"{s.op.describe()}: {s.spec.errors[int(status[0])]}", s.op.loc)
        for r, arr in zip(s.op.results, outs):
            env[r.name] = arr
    env.update(cg.fixed_outputs)
    return {name: env[name] for name in cg.graph.outputs}


def check(graph, inputs, weights=None, targets=TARGETS):
    """Every output, on every target, at 1 and 2 threads, guarded or not, equals the interpreter's bytes."""
    ref = ladder.run(graph, inputs, weights)
    for target in targets:
        cg = compile_graph(graph, weights, target=target, pipeline="")
        runs = [cg.run(inputs, threads=t) for t in (1, 2)]
        runs += [guarded_run(cg, inputs, t, w) for t, w in ((1, "end"), (2, "start"))]
        for got in runs:
            assert list(got) == list(ref)
            for name in ref:
                a, b = got[name], ref[name]
                assert a.dtype == b.dtype and a.shape == b.shape, (target, name, a.dtype, a.shape, b.dtype, b.shape)
                assert np.array_equal(_bytes(a), _bytes(b)), (target, name, graph.value(name).type)
    return ref


def rand_values(name: str, shape, rng) -> np.ndarray:
    """Random values of a type in its in-memory form (floats with NaN, -0 and inf, every code of low-bit types)."""
    dt = DTYPES[name]
    shape = tuple(shape)
    if name in ("f32", "f16", "bf16"):
        v = rng.standard_normal(shape).astype(np.float32)
        flat = v.reshape(-1)
        for k, special in enumerate((np.nan, -0.0, np.inf, -np.inf)):
            if flat.size > k:
                flat[(k * 7) % flat.size] = special
        return v.astype(dt.np_dtype)
    if name == "fp8e4m3":
        return rng.integers(0, 256, shape).astype(np.uint8).view(dt.np_dtype)
    if dt.is_low_bit:
        n = len(dt.values) if dt.kind == "ternary" else 2 ** dt.bits
        codes = rng.integers(0, n, shape).astype(np.uint8)
        return np.asarray(from_codes(codes, dt)).reshape(shape)
    info = np.iinfo(dt.np_dtype)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dt.np_dtype)


# -- every element type through every movement op --------------------------------------------------------

def test_every_element_type_through_every_op():
    rng = np.random.default_rng(0)
    b = Builder("all_types")
    xs = {n: b.input(f"x_{n}", f"{n}[3, 5, 7]") for n in ALL_TYPES}
    idx = b.input("idx", "i32[2, 3]")
    pos = b.input("pos", "i32[1]")
    news = {n: b.input(f"new_{n}", f"{n}[3, 2, 7]") for n in ALL_TYPES}
    outs = []
    for n, x in xs.items():
        outs += [
            b.reshape(x, shape=[7, -1]),
            b.transpose(x, perm=[0, 2, 1]),
            b.transpose(x, perm=[2, 0, 1]),
            b.transpose(x, perm=[1, 0, 2]),
            b.slice(x, starts=[-1, 1], ends=[-10, 6], axes=[1, 2], steps=[-2, 2]),
            b.concat(x, news[n], x, axis=1),
            b.gather(x, idx, axis=1),
            b.cache_write(x, news[n], pos, axis=1),
        ]
    g = b.build(*outs)
    inputs = {f"x_{n}": rand_values(n, (3, 5, 7), rng) for n in ALL_TYPES}
    inputs.update({f"new_{n}": rand_values(n, (3, 2, 7), rng) for n in ALL_TYPES})
    inputs["idx"] = np.array([[0, -1, 4], [2, -5, 3]], np.int32)
    inputs["pos"] = np.array([2], np.int32)
    ref = check(g, inputs)
    # the reference really moved the data (not a no-op comparison of empties)
    assert all(v.size for v in ref.values())


# -- transpose -------------------------------------------------------------------------------------------

TRANSPOSES = [
    ("f32", (70, 130), (1, 0)),  # tiled, partial tiles on both axes
    ("u8", (3, 130, 67), (0, 2, 1)),
    ("bf16", (5, 33, 65), (0, 2, 1)),
    ("i16", (2, 3, 4, 5), None),  # every permutation
    ("f32", (1, 9, 1, 4), (3, 2, 0, 1)),  # size-1 axes
    ("i8", (4, 0, 3), (2, 1, 0)),  # empty
    ("f16", (1,), (0,)),
    ("u8", (2, 3, 5, 7), (0, 1, 3, 2)),  # contiguous outer axes merged
    ("f32", (6, 10, 3), (1, 0, 2)),  # innermost run kept: rows of 3 elements move together
    ("i8", (2, 70, 3, 90), (3, 1, 2, 0)),  # tiled with axes between
]


def test_transpose_shapes_and_permutations():
    import itertools

    rng = np.random.default_rng(1)
    b = Builder("transposes")
    specs = []
    for k, (dt, shape, perm) in enumerate(TRANSPOSES):
        x = b.input(f"x{k}", f"{dt}[{', '.join(map(str, shape))}]")
        perms = list(itertools.permutations(range(len(shape)))) if perm is None else [perm]
        specs.append((x, perms, dt, shape))
    outs = [b.transpose(x, perm=list(p)) for x, perms, _, _ in specs for p in perms]
    g = b.build(*outs)
    inputs = {f"x{k}": rand_values(dt, shape, rng) for k, (_, _, dt, shape) in enumerate(specs)}
    ref = check(g, inputs)
    assert len(ref) == len(TRANSPOSES) - 1 + 24


def test_rank0_transpose_and_slice_copy_the_value():
    # (the interpreter cannot run these: np.ascontiguousarray turns its 0-d result into shape [1])
    b = Builder("rank0")
    x = b.input("x", "i32[]")
    g = b.build(b.transpose(x, perm=[]), b.slice(x, starts=[], ends=[]))
    for target in TARGETS:
        got = compile_graph(g, target=target, pipeline="").run({"x": np.array(-123456789, np.int32)})
        assert [(v.shape, int(v)) for v in got.values()] == [((), -123456789)] * 2


def test_transpose_canonical_forms():
    # the plans that make transposes cache-friendly: merged axes, a wide element, a tiled pair of axes
    E = 4
    assert movement._canonical([7, 5], [4, 28], 0, E).dims == [7, 5]  # [5, 7] -> [7, 5]
    sc = movement._canonical([3, 6, 10], [60 * 4, 10 * 4, 4], 0, E)  # identity: one contiguous run
    assert sc.dims == [] and sc.elem == 180 * 4
    sc = movement._canonical([10, 6, 3], [3 * 4, 30 * 4, 4], 0, E)  # perm (1, 0, 2) of [6, 10, 3]
    assert sc.dims == [10, 6] and sc.elem == 12
    sc = movement._canonical([1, 4, 1, 9], [4, 4, 4, 16], 0, E)
    assert sc.dims == [4, 9] and sc.strides == [4, 16]


# -- slice -----------------------------------------------------------------------------------------------

SLICES = [
    dict(starts=[1], ends=[4]),
    dict(starts=[-1], ends=[-100], steps=[-1]),  # full reversal
    dict(starts=[0, 10], ends=[5, -20], axes=[1, 2], steps=[2, -3]),
    dict(starts=[100], ends=[200], axes=[0]),  # clamped to empty
    dict(starts=[-2, 0, 0], ends=[-1, 1, 1]),  # one element
    dict(starts=[0], ends=[7], axes=[-1]),  # whole rows: one contiguous copy
    dict(starts=[2, 3], ends=[-1, 1000], axes=[2, 1], steps=[1, 1]),
    dict(starts=[5, -1], ends=[-1000, -1000], axes=[0, 1], steps=[-2, -1]),
    dict(starts=[0], ends=[7], axes=[2], steps=[7]),
]


@pytest.mark.parametrize("dt", ["f32", "bf16", "u8"])
def test_slices(dt):
    rng = np.random.default_rng(2)
    b = Builder("slices")
    x = b.input("x", f"{dt}[6, 5, 7]")
    e = b.input("e", f"{dt}[0, 3]")
    v = b.input("v", f"{dt}[11]")
    outs = [b.slice(x, **s) for s in SLICES]
    outs += [b.slice(e, starts=[0], ends=[2], axes=[1]), b.slice(v, starts=[9], ends=[0], steps=[-4]),
             b.slice(v, starts=[-1], ends=[-12], steps=[-1])]
    g = b.build(*outs)
    inputs = {"x": rand_values(dt, (6, 5, 7), rng), "e": rand_values(dt, (0, 3), rng), "v": rand_values(dt, (11,), rng)}
    ref = check(g, inputs, targets=TARGETS if dt == "f32" else ["cpu"])
    assert ref[outs[1].name][0].tolist() == inputs["x"][-1].tolist() or dt != "u8"
    assert any(r.size == 0 for r in ref.values()) and any(r.size == 1 for r in ref.values())


def test_slice_plan_matches_numpy():
    shape = (6, 5, 7)
    x = np.arange(math.prod(shape)).reshape(shape)
    opdef = ladder.ops.OPS["slice"]
    for s in SLICES:
        plan = movement.slice_plan(shape, s)
        got = x[np.ix_(*[start + step * np.arange(c) for start, step, c in plan])]
        assert np.array_equal(got, x[opdef.slices(TensorType(DTYPES["u8"], shape), opdef.full_attrs(s))]), s


# -- concat ----------------------------------------------------------------------------------------------

def test_concat_axes_and_operand_counts():
    rng = np.random.default_rng(3)
    b = Builder("concats")
    a, c, z = declare_inputs(b, a="f16[2, 3, 4]", c="f16[2, 1, 4]", z="f16[2, 0, 4]")
    v, w, e = declare_inputs(b, v="i8[5]", w="i8[1]", e="i32[0, 3]")
    outs = [
        b.concat(a, c, z, a, c, axis=1),
        b.concat(a, a, axis=0),
        b.concat(a, a, a, axis=-1),
        b.concat(a, axis=2),
        b.concat(z, z, axis=1),  # empty result
        b.concat(*([v, w] * 9), axis=0),
        b.concat(e, e, axis=0),
    ]
    g = b.build(*outs)
    inputs = {"a": rand_values("f16", (2, 3, 4), rng), "c": rand_values("f16", (2, 1, 4), rng),
              "z": rand_values("f16", (2, 0, 4), rng), "v": rand_values("i8", (5,), rng),
              "w": rand_values("i8", (1,), rng), "e": np.zeros((0, 3), np.int32)}
    ref = check(g, inputs)
    assert ref[outs[5].name].shape == (54,)


# -- gather ----------------------------------------------------------------------------------------------

def test_gather_index_types_axes_and_negative_indices():
    rng = np.random.default_rng(4)
    b = Builder("gathers")
    t, t3, v = declare_inputs(b, t="bf16[300, 6]", t3="u8[2, 5, 3]", v="f32[4]")
    i32, i16, i8, u8 = declare_inputs(b, i32="i32[2, 3]", i16="i16[4]", i8="i8[5]", u8="u8[3]")
    s, small = declare_inputs(b, s="i32[]", small="i8[2]")
    outs = [b.gather(t, i32), b.gather(t, i16), b.gather(t, i8), b.gather(t, u8),
            b.gather(t3, small, axis=1), b.gather(t3, small, axis=-1), b.gather(t3, s, axis=0),
            b.gather(v, s), b.gather(v, small)]
    g = b.build(*outs)
    inputs = {"t": rand_values("bf16", (300, 6), rng), "t3": rand_values("u8", (2, 5, 3), rng),
              "v": rand_values("f32", (4,), rng),
              "i32": np.array([[0, 299, -300], [-1, 150, 7]], np.int32),
              "i16": np.array([-2, 5, 298, -299], np.int16),
              "i8": np.array([-128, 127, -1, 0, 3], np.int8),
              "u8": np.array([255, 200, 128], np.uint8),  # zero-extended: rows 255, 200, 128
              "s": np.array(-2, np.int32), "small": np.array([-1, 1], np.int8)}
    ref = check(g, inputs)
    assert np.array_equal(_bytes(ref[outs[3].name]), _bytes(inputs["t"][[255, 200, 128]]))


@pytest.mark.parametrize("idx_dt, bad", [("i32", 6), ("i32", -7), ("i16", 1000), ("i8", -128), ("u8", 255)])
def test_gather_out_of_range_is_a_runtime_failure(idx_dt, bad):
    b = Builder("gather_bad")
    t = b.input("t", "f32[6, 5]")
    e = b.input("e", "f32[0, 6]")
    i = b.input("i", f"{idx_dt}[4]")
    g = b.build(b.gather(t, i), b.gather(e, i, axis=1))
    idx = np.array([1, 0, bad, 2], DTYPES[idx_dt].np_dtype)
    inputs = {"t": np.ones((6, 5), np.float32), "e": np.zeros((0, 6), np.float32), "i": idx}
    with pytest.raises(RuntimeFailure, match="out of range"):
        ladder.run(g, inputs)
    cg = compile_graph(g, target="cpu", pipeline="")
    for t in (1, 2):
        with pytest.raises(RuntimeFailure, match="out of range for axis 0 of size 6"):
            cg.run(inputs, threads=t)
        with pytest.raises(RuntimeFailure, match="out of range"):
            guarded_run(cg, inputs, t, "end")  # canaries intact even on error
    # also when the table has no elements to copy, the indices are checked as the reference does
    g2 = Builder("gather_empty")
    e2 = g2.input("e", "f32[0, 6]")
    i2 = g2.input("i", f"{idx_dt}[4]")
    g2 = g2.build(g2.gather(e2, i2, axis=1))
    with pytest.raises(RuntimeFailure, match="out of range for axis 1 of size 6"):
        compile_graph(g2, target="cpu:generic", pipeline="").run({"e": inputs["e"], "i": idx})


# -- cache_write -----------------------------------------------------------------------------------------

def test_cache_write_positions_axes_and_types():
    rng = np.random.default_rng(5)
    b = Builder("cache")
    c, n1, n3 = declare_inputs(b, c="f16[2, 4, 9, 8]", n1="f16[2, 4, 1, 8]", n3="f16[2, 4, 3, 8]")
    nall, n0 = declare_inputs(b, nall="f16[2, 4, 9, 8]", n0="f16[2, 4, 0, 8]")
    c0, new0 = declare_inputs(b, c0="i8[5, 2]", new0="i8[2, 2]")
    p32, p16, p8, pu8 = (b.input(f"p{k}", f"{k}[1]") for k in ("i32", "i16", "i8", "u8"))
    outs = [b.cache_write(c, n1, p32), b.cache_write(c, n3, p16), b.cache_write(c, nall, p8),
            b.cache_write(c, n0, pu8), b.cache_write(c0, new0, pu8, axis=0),
            b.cache_write(c, n1, p32, axis=-2)]
    g = b.build(*outs)
    inputs = {"c": rand_values("f16", (2, 4, 9, 8), rng), "n1": rand_values("f16", (2, 4, 1, 8), rng),
              "n3": rand_values("f16", (2, 4, 3, 8), rng), "nall": rand_values("f16", (2, 4, 9, 8), rng),
              "n0": rand_values("f16", (2, 4, 0, 8), rng), "c0": rand_values("i8", (5, 2), rng),
              "new0": rand_values("i8", (2, 2), rng),
              "pi32": np.array([8], np.int32), "pi16": np.array([6], np.int16), "pi8": np.array([0], np.int8),
              "pu8": np.array([3], np.uint8)}
    ref = check(g, inputs)
    assert np.array_equal(_bytes(ref[outs[0].name][:, :, 8]), _bytes(inputs["n1"][:, :, 0]))


@pytest.mark.parametrize("pos_dt, pos", [("i32", 7), ("i32", -1), ("i8", -128), ("u8", 200), ("i16", 30000)])
def test_cache_write_overflow_is_a_runtime_failure(pos_dt, pos):
    b = Builder("cache_bad")
    c = b.input("c", "bf16[3, 8, 4]")
    n = b.input("n", "bf16[3, 2, 4]")
    p = b.input("p", f"{pos_dt}[1]")
    g = b.build(b.cache_write(c, n, p, axis=1))
    inputs = {"c": np.zeros((3, 8, 4), ml_dtypes.bfloat16), "n": np.ones((3, 2, 4), ml_dtypes.bfloat16),
              "p": np.array([pos], DTYPES[pos_dt].np_dtype)}
    with pytest.raises(RuntimeFailure, match="overflows"):
        ladder.run(g, inputs)
    for target in TARGETS:
        cg = compile_graph(g, target=target, pipeline="")
        for t in (1, 2):
            with pytest.raises(RuntimeFailure, match="overflows the cache of 8"):
                cg.run(inputs, threads=t)
            with pytest.raises(RuntimeFailure, match="overflows"):
                guarded_run(cg, inputs, t, "start")
    inputs["p"] = np.array([6], DTYPES[pos_dt].np_dtype)  # the last position that fits
    out = compile_graph(g, target="cpu", pipeline="").run(inputs)
    assert np.array_equal(out[g.outputs[0]][:, 6:].astype(np.float32), np.ones((3, 2, 4), np.float32))


# -- unpack and pack -------------------------------------------------------------------------------------

def _layouts():
    """Every (layout, type): all base packings with every type they hold, and scaled layouts."""
    out = [(p.name, dt) for p in PACKINGS.values() for dt in sorted(p.dtypes)]
    out += [("nib16+f16", "i4"), ("nib16+f16z", "u4"), ("nib+bf16", "nf4"), ("crumb64+f16", "ternary"),
            ("crumb+f32z", "i2"), ("trit5+f16", "ternary"), ("bit+f16", "i1"), ("nib32+f32", "fp4"),
            ("crumb16+bf16z", "u2")]
    return out


def _ks(layout: str, dt: str) -> list[int]:
    """Row lengths: one, past a block, a partial last block, past one in-order run. Every length for the first
    type a layout holds; the others (same code, another code map) take the partial last block only."""
    p = get_packing(layout)
    blk = p.block
    ks = [3 * blk - 1]
    if dt == sorted(p.dtypes)[0]:
        ks += [1, blk + 3]
        if not hasattr(p, "base") and p.block_bytes == 1:  # in-order layouts: past one run of byte positions
            ks.append(movement.INTERLEAVED_RUN * (blk // p.block_bytes) + 5)
    return ks


@pytest.mark.parametrize("target", TARGETS)
def test_unpack_every_packing(target):
    rng = np.random.default_rng(6)
    b = Builder("unpacks")
    cases = []
    for layout, dt in _layouts():
        for k in _ks(layout, dt):
            rows = 1 if k > 1000 else 3
            t = TensorType(DTYPES[dt], (rows, k), layout)
            name = f"x{len(cases)}"
            cases.append((name, t, b.input(name, t)))
    x1 = b.input("x1d", TensorType(DTYPES["u4"], (5,), "nib16"))  # rank 1
    outs = [b.unpack(x) for _, _, x in cases] + [b.unpack(x1)]
    g = b.build(*outs)
    # random storage bytes: every code (including unused ones like ternary's 3) and random padding
    inputs = {name: rng.integers(0, 256, t.storage_shape).astype(np.uint8) for name, t, _ in cases}
    inputs["x1d"] = rng.integers(0, 256, (16,)).astype(np.uint8)
    ref = check(g, inputs, targets=[target])
    assert len(ref) == len(cases) + 1 and len(cases) > 70


def test_unpack_and_pack_of_tensors_without_rows():
    # (the interpreter cannot unpack these: Packing.unpack reshapes zero rows with -1 and fails)
    b = Builder("no_rows")
    x = b.input("x", TensorType(DTYPES["ternary"], (2, 0, 130), "crumb32"))
    v = b.input("v", "i4[0, 3]")
    g = b.build(b.unpack(x), b.pack(v, layout="nib16"))
    for target in TARGETS:
        cg = compile_graph(g, target=target, pipeline="")
        got = list(cg.run({"x": np.zeros((2, 0, 64), np.uint8), "v": np.zeros((0, 3), ml_dtypes.int4)}).values())
        assert [(a.shape, a.dtype) for a in got] == [((2, 0, 130), np.int8), ((0, 16), np.uint8)]


@pytest.mark.parametrize("target", TARGETS)
def test_pack_run_time_tensors(target):
    rng = np.random.default_rng(7)
    b = Builder("packs")
    inputs, cases = {}, []
    for n, (layout, dt) in enumerate(_layouts()):
        for m, k in enumerate(_ks(layout, dt)[:3]):
            p = get_packing(layout)
            rows = 2
            name = f"x{n}_{m}"
            operands = [b.input(name, f"{dt}[{rows}, {k}]")]
            inputs[name] = rand_values(dt, (rows, k), rng)
            if hasattr(p, "base"):
                for role in ("s", "z")[:1 + p.zero]:
                    sname = f"{role}{n}_{m}"
                    operands.append(b.input(sname, TensorType(p.scale, p.scale_shape((rows, k)))))
                    inputs[sname] = rand_values(p.scale.name, p.scale_shape((rows, k)), rng)
            cases.append((operands, layout))
    outs = [b.pack(*operands, layout=layout) for operands, layout in cases]
    g = b.build(*outs)
    ref = check(g, inputs, targets=[target])
    assert len(ref) == len(outs) > 70


def test_pack_then_unpack_round_trips():
    rng = np.random.default_rng(8)
    b = Builder("roundtrip")
    cases, inputs = [], {}
    for n, (layout, dt) in enumerate(_layouts()):
        if "+" in layout:
            continue
        cases.append((b.input(f"x{n}", f"{dt}[3, 37]"), layout))
        inputs[f"x{n}"] = rand_values(dt, (3, 37), rng)
    outs = [b.unpack(b.pack(x, layout=layout)) for x, layout in cases]
    g = b.build(*outs)
    got = compile_graph(g, target="cpu", pipeline="").run(inputs, threads=2)
    for n, o in zip(inputs, outs):
        assert np.array_equal(got[o.name].view(np.uint8), inputs[n].view(np.uint8)), n


def test_code_map_is_the_reference_decode():
    # the kernels turn a code into its byte by a*code + c (or a table); check against from_codes
    for n in LOW_BIT:
        dt = DTYPES[n]
        m = movement._code_map(dt)
        codes = np.arange(2 ** dt.bits, dtype=np.uint8)
        want = np.asarray(from_codes(codes, dt)).view(np.uint8)
        got = (m[0] * codes.astype(np.int64) + m[1]) % 256 if isinstance(m, tuple) else m
        assert np.array_equal(np.asarray(got, np.uint8), want), n
