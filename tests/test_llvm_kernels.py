"""The first LLVM kernel: qmatmul_i8 over I2_S-blocked ternary weights, bit-exact against the interpreter."""

import numpy as np
import pytest

import ladder
from ladder.backends.llvm.jit import Module
from ladder.backends.llvm.kernels import QMATMUL_I8_CTYPE, qmatmul_i8_ternary_crumb
from ladder.target import get_target

HOST = get_target("cpu")
PATHS = [pytest.param(False, id="generic"),
         pytest.param(True, id="avx2-madd", marks=pytest.mark.skipif(
             not HOST.supports("i8-madd"), reason="host CPU has no AVX2 vpmaddubsw"))]
SHAPES = [(1, 1, 1), (1, 7, 37), (3, 5, 128), (2, 9, 300), (4, 64, 1000), (1, 33, 513)]


@pytest.fixture(scope="module", params=PATHS)
def kernel(request):
    text, name = qmatmul_i8_ternary_crumb(32, madd=request.param)
    target = HOST if request.param else get_target("cpu:generic")
    return Module.compile(text, target).function(name, QMATMUL_I8_CTYPE)


def reference(x, w, s1, s2):
    """The interpreter running qmatmul_i8 over the same packed weights."""
    M, K = x.shape
    N = w.shape[0]
    g = ladder.parse(f"""graph @g(%x: i8[{M}, {K}], %w: ternary[{N}, {K}], %s1: f32[{M}, 1], %s2: f32[1]) -> f32[{M}, {N}] {{
  %p = pack %w {{layout = "crumb32"}} : ternary<crumb32>[{N}, {K}]
  %y = qmatmul_i8 %x, %p, %s1, %s2 {{transpose_b = true}} : f32[{M}, {N}]
  return %y
}}""")
    return ladder.run(g, {"x": x, "w": w, "s1": s1[:, None], "s2": s2})["y"]


def call(kernel, x, wp, s1, s2, n_begin=None, n_end=None, canary=7):
    M, K = x.shape
    N, row = wp.shape
    kp = row * 4
    xp = np.zeros((M, kp), np.int8)
    xp[:, :K] = x
    # y with canary rows before and after: the kernel must write only its own [M, n_begin:n_end] cells
    buf = np.full(M * N + 64, canary, np.float32)
    y = buf[32:32 + M * N]
    xsum = x.sum(axis=1, dtype=np.int32)
    kernel(xp.ctypes.data, wp.ctypes.data, s1.ctypes.data, s2.ctypes.data, xsum.ctypes.data, y.ctypes.data,
           M, N, kp, 0 if n_begin is None else n_begin, N if n_end is None else n_end)
    assert np.all(buf[:32] == canary) and np.all(buf[32 + M * N:] == canary)
    return y.reshape(M, N)


@pytest.mark.parametrize("M, N, K", SHAPES)
def test_bit_exact_against_the_interpreter(kernel, M, N, K):
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    s1 = rng.random(M).astype(np.float32) + 0.1
    s2 = np.array([0.37], np.float32)
    wp = ladder.packing.get_packing("crumb32").pack(w, ladder.DTYPES["ternary"])
    assert np.array_equal(call(kernel, x, wp, s1, s2), reference(x, w, s1, s2))


def test_extreme_values_do_not_overflow(kernel):
    K = 4096
    x = np.full((1, K), -128, np.int8)
    w = np.full((2, K), -1, np.int8)
    w[1] = 1
    wp = ladder.packing.get_packing("crumb32").pack(w, ladder.DTYPES["ternary"])
    y = call(kernel, x, wp, np.ones(1, np.float32), np.ones(1, np.float32))
    assert y.tolist() == [[128.0 * K, -128.0 * K]]


def test_row_range_writes_only_its_rows(kernel):
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (2, 100)).astype(np.int8)
    w = rng.integers(-1, 2, (10, 100)).astype(np.int8)
    wp = ladder.packing.get_packing("crumb32").pack(w, ladder.DTYPES["ternary"])
    s1, s2 = np.ones(2, np.float32), np.ones(1, np.float32)
    y = call(kernel, x, wp, s1, s2, 3, 7, canary=-5.0)
    full = reference(x, w, s1, s2)
    assert np.array_equal(y[:, 3:7], full[:, 3:7])
    assert np.all(y[:, :3] == -5.0) and np.all(y[:, 7:] == -5.0)


def test_module_exposes_ir_and_assembly():
    text, name = qmatmul_i8_ternary_crumb(32, madd=HOST.supports("i8-madd"))
    mod = Module.compile(text, HOST)
    assert f"define void @{name}" in mod.ir()
    if HOST.supports("i8-madd"):
        assert "vpmaddubsw" in mod.asm()
    with pytest.raises(ladder.LadderError):
        mod.function("missing", QMATMUL_I8_CTYPE)


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_threads_give_identical_results(kernel, threads):
    from ladder.backends.llvm.runtime import parallel_rows

    rng = np.random.default_rng(threads)
    M, N, K = 3, 97, 450
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    w = rng.integers(-1, 2, (N, K)).astype(np.int8)
    s1, s2 = rng.random(M).astype(np.float32), np.array([1.5], np.float32)
    wp = ladder.packing.get_packing("crumb32").pack(w, ladder.DTYPES["ternary"])
    kp = wp.shape[1] * 4
    xp = np.zeros((M, kp), np.int8)
    xp[:, :K] = x
    xsum = x.sum(axis=1, dtype=np.int32)
    y = np.full((M, N), np.nan, np.float32)
    parallel_rows(kernel, [xp.ctypes.data, wp.ctypes.data, s1.ctypes.data, s2.ctypes.data, xsum.ctypes.data,
                           y.ctypes.data, M, N, kp], N, threads)
    assert np.array_equal(y, reference(x, w, s1, s2))


def test_split_covers_every_row_once():
    from ladder.backends.llvm.runtime import split

    for n in (0, 1, 5, 64, 97):
        for parts in (1, 2, 3, 16):
            ranges = split(n, parts, align=4)
            rows = [r for lo, hi in ranges for r in range(lo, hi)]
            assert rows == list(range(n)) and len(ranges) <= parts
            assert all(lo % 4 == 0 for lo, _ in ranges)
