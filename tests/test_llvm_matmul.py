"""LLVM lowerings of matmul, qmatmul and qmatmul_i8 against the reference interpreter.

Integer paths (integer matmul, qmatmul_i8) must be bit-exact. Float paths compare with
|y - ref| <= 1e-4 * sum_k |x||w| (+ one ulp of the result type for f16/bf16): both sides add the same
f32 products (the weights dequantized exactly as the reference does), only the summation order differs
(8-lane FMA accumulators vs BLAS), and the worst-case rounding error of a K-term f32 sum is about
K * 2^-24 * sum|x||w|, < 1e-4 * sum|x||w| for K <= 1600 and in practice far below it (errors are random).

Many ops go into one graph so each target compiles once.
"""

from __future__ import annotations

import ctypes
import mmap

import numpy as np
import pytest

import ladder
from ladder.backends.llvm.compiler import compile_graph
from ladder.packing import PACKINGS, from_codes
from ladder.target import get_target
from ladder.types import DTYPES

TARGETS = ["cpu", "cpu:generic"]
INT_W = ["ternary", "i2", "u2", "i4", "u4", "i1", "u1"]
FLOAT_W = INT_W + ["nf4", "fp4"]
SCALED = ["nib16+f16", "crumb32+f16", "nib32+bf16z", "crumb64+f32", "nib+f16", "crumb16+f16z"]


def rand_w(rng, dt, shape):
    codes = rng.integers(0, 3 if dt.name == "ternary" else 2 ** dt.bits, shape).astype(np.uint8)
    return from_codes(codes, dt)


def tname(t):
    return f"{t[0]}[{', '.join(map(str, t[1]))}]" if t[2] is None else f"{t[0]}<{t[2]}>[{', '.join(map(str, t[1]))}]"


class G:
    """A graph under construction: inputs, params, ops and outputs."""

    def __init__(self):
        self.inputs, self.lines, self.outs, self.weights, self.feeds, self.i = [], [], [], {}, {}, 0
        self.meta = {}

    def input(self, arr, dt):
        n = f"in{len(self.inputs)}"
        self.inputs.append(f"%{n}: {dt}[{', '.join(map(str, arr.shape))}]")
        self.feeds[n] = arr
        return n

    def param(self, arr, dt):
        n = f"w{self.i}"
        self.i += 1
        self.lines.append(f"%{n} = param @{n} : {dt}[{', '.join(map(str, arr.shape))}]")
        self.weights[n] = arr
        return n

    def op(self, text, out_t, tol=None):
        n = f"y{len(self.outs)}"
        self.lines.append(f"%{n} = {text} : {out_t}")
        self.outs.append((n, out_t))
        self.meta[n] = tol
        return n

    def graph(self):
        sig = ", ".join(self.inputs)
        rets = ", ".join(t for _, t in self.outs)
        body = "\n  ".join(self.lines)
        return ladder.parse(f"graph @g({sig}) -> ({rets}) {{\n  {body}\n  return "
                            f"{', '.join('%' + n for n, _ in self.outs)}\n}}")


def check(gb: G, targets=TARGETS, threads=(1, 2)):
    g = gb.graph()
    ref = ladder.run(g, gb.feeds, weights=gb.weights)
    for target in targets:
        cg = compile_graph(g, gb.weights, target=target, pipeline="")
        results = [cg.run(gb.feeds, threads=t) for t in threads]
        for n, _ in gb.outs:
            for r in results[1:]:
                assert np.array_equal(r[n], results[0][n], equal_nan=True), f"{target} {n}: threads differ"
            got, want, tol = results[0][n], ref[n], gb.meta[n]
            assert got.shape == want.shape and got.dtype == want.dtype, n
            if tol is None:
                assert np.array_equal(got, want), f"{target} {n}: not bit-exact ({gb.lines})"
            else:
                err = np.abs(got.astype(np.float64) - want.astype(np.float64))
                assert np.all(err <= tol), f"{target} {n}: max excess {np.max(err - tol)}"
    return ref


def bound(x, w_vals, rtol=1e-4, ulp=0.0, want=None):
    """1e-4 * sum_k |x||w| per output (w as [N, K])."""
    x = np.abs(x.astype(np.float64))
    w = np.abs(w_vals.astype(np.float64))
    b = rtol * (x @ w.T) + 1e-30
    return b


def deq_rows(w, dt, s):
    return dt.to_values(w) * s


# -- qmatmul_i8: every integer packing, bit-exact ------------------------------------------------------------

def _i8_cases(gb, rng, M, N, K, xbatch=()):
    x = rng.integers(-128, 128, xbatch + (M, K)).astype(np.int8)
    xn = gb.input(x, "i8")
    s1 = gb.input(rng.random(xbatch + (M, 1)).astype(np.float32) + 0.1, "f32")
    s1t = f"f32[{', '.join(map(str, xbatch + (M, 1)))}]"
    out = f"f32[{', '.join(map(str, xbatch + (M, N)))}]"
    for dname in INT_W:
        dt = DTYPES[dname]
        for p in PACKINGS.values():
            if not p.accepts(dt):
                continue
            w = gb.param(rand_w(rng, dt, (N, K)), dname)
            s2 = gb.param(rng.random(N).astype(np.float32) + 0.5, "f32")
            pk = f"p{w}"
            gb.lines.append(f"%{pk} = pack %{w} {{layout = \"{p.name}\"}} : {dname}<{p.name}>[{N}, {K}]")
            gb.op(f"qmatmul_i8 %{xn}, %{pk}, %{s1}, %{s2} {{transpose_b = true}}", out)
    del s1t
    return x


@pytest.mark.parametrize("M, N, K", [(3, 5, 300), (1, 3, 1), (5, 1, 129)])
def test_qmatmul_i8_every_packing_bit_exact(M, N, K):
    rng = np.random.default_rng(M * 100 + K)
    gb = G()
    _i8_cases(gb, rng, M, N, K)
    check(gb)


def test_qmatmul_i8_batch_epilogue_unpacked_and_transpose_false():
    rng = np.random.default_rng(7)
    gb = G()
    B, M, N, K = 2, 6, 9, 700
    x = gb.input(rng.integers(-128, 128, (B, M, K)).astype(np.int8), "i8")
    s1 = gb.input(rng.random((B, M, 1)).astype(np.float32), "f32")
    s2 = gb.param(rng.random(N).astype(np.float32), "f32")
    for i, (dname, lay) in enumerate([("ternary", "crumb32"), ("i4", "nib32"), ("u2", "crumb64"), ("i2", "crumb16")]):
        w = gb.param(rand_w(rng, DTYPES[dname], (N, K)), dname)
        gb.lines.append(f"%p{w} = pack %{w} {{layout = \"{lay}\"}} : {dname}<{lay}>[{N}, {K}]")
        epi = ["relu", "relu2", "neg", "silu"][i]
        gb.op(f"qmatmul_i8 %{x}, %p{w}, %{s1}, %{s2} {{transpose_b = true, epilogue = [\"{epi}\"]}}",
              f"f32[{B}, {M}, {N}]")
    # libm's f64 exp/tanh/erf vs numpy's: identical after rounding to f32 in all but rare ties; allow 2 ulp
    for epi in ("gelu", "sigmoid", "tanh", "exp"):
        w = gb.param(rand_w(rng, DTYPES["ternary"], (N, K)), "ternary")
        gb.lines.append(f"%p{w} = pack %{w} {{layout = \"crumb32\"}} : ternary<crumb32>[{N}, {K}]")
        s2e = gb.param(np.full(N, 1e-3, np.float32), "f32")
        gb.op(f"qmatmul_i8 %{x}, %p{w}, %{s1}, %{s2e} {{transpose_b = true, epilogue = [\"{epi}\"]}}",
              f"f32[{B}, {M}, {N}]", tol=np.float32(4e-7) * 4)
    # unpacked weights, transpose_b false (the generic path)
    wk = gb.param(rand_w(rng, DTYPES["i4"], (K, N)), "i4")
    gb.op(f"qmatmul_i8 %{x}, %{wk}, %{s1}, %{s2} {{transpose_b = false}}", f"f32[{B}, {M}, {N}]")
    check(gb)


def test_qmatmul_i8_extremes_do_not_overflow():
    gb = G()
    K = 4096
    x = np.full((1, K), -128, np.int8)
    xn = gb.input(x, "i8")
    one = gb.param(np.ones(1, np.float32), "f32")
    for dname, lay, lo, hi in [("ternary", "crumb32", -1, 1), ("i4", "nib32", -8, 7), ("u4", "nib16", 0, 15),
                               ("i2", "crumb64", -2, 1)]:
        w = np.full((2, K), lo, DTYPES[dname].np_dtype)
        w[1] = hi
        wn = gb.param(w, dname)
        gb.lines.append(f"%p{wn} = pack %{wn} {{layout = \"{lay}\"}} : {dname}<{lay}>[2, {K}]")
        gb.op(f"qmatmul_i8 %{xn}, %p{wn}, %{one}, %{one} {{transpose_b = true}}", "f32[1, 2]")
    ref = check(gb, targets=["cpu"])
    assert ref["y1"].tolist() == [[128.0 * 8 * K, -128.0 * 7 * K]]


# -- qmatmul (float): every packing x every dtype it accepts ------------------------------------------------

def _float_case(gb, rng, x, xn, dname, layout, N, K, mode="row", epi=()):
    """Add one qmatmul; returns nothing (its tolerance is computed from the dequantized weights)."""
    dt = DTYPES[dname]
    wv = rand_w(rng, dt, (N, K))
    w = gb.param(wv, dname)
    vals = dt.to_values(wv).astype(np.float32)
    attrs = "transpose_b = true"
    if layout and "+" in layout:
        from ladder.packing import get_packing
        p = get_packing(layout)
        nb = p.blocks(K)
        sdt = p.scale
        s = (rng.random((N, nb)) + 0.5).astype(sdt.np_dtype)
        ops = [s]
        if p.zero:
            ops.append((rng.random((N, nb)) * 3).astype(sdt.np_dtype))
        names = [gb.param(a, sdt.name) for a in ops]
        gb.lines.append(f"%p{w} = pack %{w}, {', '.join('%' + n for n in names)} {{layout = \"{layout}\"}} : "
                        f"{dname}<{layout}>[{N}, {K}]")
        zm = "original" if p.zero else "none"
        attrs += f", axis = -1, group = {p.block}, zero_mode = \"{zm}\""
        sfull = np.repeat(ops[0].astype(np.float32), p.block, axis=1)[:, :K]
        zfull = np.repeat(ops[1].astype(np.float32), p.block, axis=1)[:, :K] if p.zero else 0
        deq = (vals - zfull) * sfull
        operands = f"%{xn}, %p{w}"
    else:
        if mode == "row":
            s = (rng.random((N, 1)) + 0.5).astype(np.float32)
            zs, zm, group = None, "none", 0
        elif mode == "group32":
            s = (rng.random((N, -(-K // 32))) + 0.5).astype(np.float32)
            zs, zm, group = None, "none", 32
        elif mode in ("original", "rescale"):
            s = (rng.random((N, -(-K // 64))) + 0.5).astype(np.float32)
            zs, zm, group = (rng.random(s.shape) * 4).round().astype(np.float32), mode, 64
        elif mode == "tensor":
            s = np.array([[0.7]], np.float32)
            zs, zm, group = None, "none", -1
        sn = gb.param(s, "f32")
        operands = f"%{xn}, %p{w}, %{sn}" if layout else f"%{xn}, %{w}, %{sn}"
        if zs is not None:
            operands += f", %{gb.param(zs, 'f32')}"
        if layout:
            gb.lines.append(f"%p{w} = pack %{w} {{layout = \"{layout}\"}} : {dname}<{layout}>[{N}, {K}]")
        attrs += f", axis = -1, group = {group}, zero_mode = \"{zm}\""
        rep = lambda a: np.repeat(a, group, axis=1)[:, :K] if group > 0 else a  # noqa: E731
        deq = vals * rep(s) if zm == "none" else ((vals - rep(zs)) * rep(s) if zm == "original"
                                                   else vals * rep(s) - rep(zs))
    if epi:
        attrs += ", epilogue = [" + ", ".join(f'"{e}"' for e in epi) + "]"
    lead = x.shape[:-1]
    tol = bound(x.reshape(-1, K), deq).reshape(lead + (N,))
    if epi:
        tol = tol * 3 + 1e-6
    gb.op(f"qmatmul {operands} {{{attrs}}}", f"f32[{', '.join(map(str, lead + (N,)))}]", tol=tol)


@pytest.mark.parametrize("M, N, K", [(5, 4, 333), (1, 2, 1), (1, 3, 160)])
def test_qmatmul_every_packing_and_dtype(M, N, K):
    rng = np.random.default_rng(K)
    gb = G()
    x = rng.standard_normal((M, K)).astype(np.float32)
    xn = gb.input(x, "f32")
    for dname in FLOAT_W:
        for p in PACKINGS.values():
            if p.accepts(DTYPES[dname]):
                _float_case(gb, rng, x, xn, dname, p.name, N, K)
    check(gb)


def test_qmatmul_granularities_block_scales_batch_epilogues():
    rng = np.random.default_rng(3)
    gb = G()
    N, K = 7, 520
    x = rng.standard_normal((2, 5, K)).astype(np.float32)
    xn = gb.input(x, "f32")
    for lay in SCALED:
        _float_case(gb, rng, x, xn, "i4" if lay.startswith("nib") else "ternary", lay, N, K)
    for mode in ("group32", "original", "rescale", "tensor"):
        for dname, lay in (("u4", "nib32"), ("u2", "crumb32"), ("i4", None)):
            _float_case(gb, rng, x, xn, dname, lay, N, K, mode=mode)
    for epi in (("relu",), ("gelu",), ("silu", "neg"), ("relu2",)):
        _float_case(gb, rng, x, xn, "ternary", "crumb32", N, K, epi=epi)
    check(gb)


def test_qmatmul_f16_bf16_activations():
    rng = np.random.default_rng(4)
    for xdt in ("f16", "bf16"):
        gb = G()
        M, N, K = 3, 4, 200
        x = rng.standard_normal((M, K)).astype(DTYPES[xdt].np_dtype)
        xn = gb.input(x, xdt)
        w = rand_w(rng, DTYPES["i4"], (N, K))
        wn = gb.param(w, "i4")
        s = gb.param((rng.random((N, 1)) + 0.5).astype(np.float32), "f32")
        gb.lines.append(f"%p = pack %{wn} {{layout = \"nib32\"}} : i4<nib32>[{N}, {K}]")
        ref = None
        deq = DTYPES["i4"].to_values(w) * gb.weights[s]
        ulp = 2.0 ** (-10 if xdt == "f16" else -7)
        tol = bound(x.astype(np.float32), deq)
        ref = (x.astype(np.float32) @ deq.T.astype(np.float32))
        gb.op(f"qmatmul %{xn}, %p, %{s} {{transpose_b = true}}", f"{xdt}[{M}, {N}]",
              tol=tol + 2 * ulp * np.abs(ref))
        check(gb, threads=(1,))


# -- plain matmul ------------------------------------------------------------------------------------------

def test_matmul_float_and_int_broadcast():
    rng = np.random.default_rng(5)
    gb = G()
    a = rng.standard_normal((2, 1, 3, 37)).astype(np.float32)
    bt = rng.standard_normal((4, 5, 37)).astype(np.float32)
    an, bn = gb.input(a, "f32"), gb.input(bt, "f32")
    gb.op(f"matmul %{an}, %{bn} {{transpose_b = true}}", "f32[2, 4, 3, 5]",
          tol=1e-4 * np.abs(a) @ np.swapaxes(np.abs(bt), -1, -2) + 1e-30)
    b2 = rng.standard_normal((37, 6)).astype(np.float32)
    b2n = gb.input(b2, "f32")
    gb.op(f"matmul %{an}, %{b2n}", "f32[2, 1, 3, 6]", tol=1e-4 * np.abs(a) @ np.abs(b2) + 1e-30)
    ai = rng.integers(-128, 128, (3, 50)).astype(np.int8)
    bi = rng.integers(-(2 ** 31), 2 ** 31 - 1, (50, 4)).astype(np.int32)  # wraps
    ain, bin_ = gb.input(ai, "i8"), gb.input(bi, "i32")
    gb.op(f"matmul %{ain}, %{bin_}", "i32[3, 4]")
    bu = rng.integers(0, 256, (4, 50)).astype(np.uint8)
    gb.op(f"matmul %{ain}, %{gb.input(bu, 'u8')} {{transpose_b = true}}", "i32[3, 4]")
    tw = rand_w(rng, DTYPES["ternary"], (50, 4))
    gb.op(f"matmul %{ain}, %{gb.param(tw, 'ternary')}", "i32[3, 4]")
    h = rng.standard_normal((3, 20)).astype(np.float16)
    hb = rng.standard_normal((20, 2)).astype(np.float16)
    ref_h = h.astype(np.float32) @ hb.astype(np.float32)
    gb.op(f"matmul %{gb.input(h, 'f16')}, %{gb.input(hb, 'f16')}", "f16[3, 2]",
          tol=1e-4 * np.abs(h.astype(np.float32)) @ np.abs(hb.astype(np.float32)) + 2 ** -10 * np.abs(ref_h))
    check(gb)


def test_zero_sizes():
    rng = np.random.default_rng(6)
    gb = G()
    x0 = gb.input(np.zeros((0, 64), np.int8), "i8")
    s = gb.param(np.ones(1, np.float32), "f32")
    w = gb.param(rand_w(rng, DTYPES["ternary"], (3, 64)), "ternary")
    gb.lines.append(f"%p = pack %{w} {{layout = \"crumb32\"}} : ternary<crumb32>[3, 64]")
    gb.op(f"qmatmul_i8 %{x0}, %p, %{s}, %{s} {{transpose_b = true}}", "f32[0, 3]")
    xk = gb.input(np.zeros((2, 0), np.float32), "f32")
    gb.op(f"matmul %{xk}, %{gb.input(np.zeros((0, 3), np.float32), 'f32')}", "f32[2, 3]")
    check(gb, targets=["cpu"])


# -- generated code stays inside its buffers ---------------------------------------------------------------

libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE = mmap.PAGESIZE


class Guarded:
    """An array whose last byte sits just before a PROT_NONE page (reading past it faults), with canary bytes
    in front (writes before it are detected)."""

    def __init__(self, arr):
        arr = np.ascontiguousarray(arr)
        n = arr.nbytes
        pages = -(-(n + 64) // PAGE) + 1
        self.mm = mmap.mmap(-1, pages * PAGE)
        buf = np.frombuffer(self.mm, np.uint8)
        base = buf.ctypes.data
        assert libc.mprotect(base + (pages - 1) * PAGE, PAGE, 0) == 0
        self.start = (pages - 1) * PAGE - n
        buf[:self.start] = 0xA5
        self.arr = buf[self.start:self.start + n].view(arr.dtype).reshape(arr.shape)
        self.arr[...] = arr
        self.buf = buf

    @property
    def ptr(self):
        return self.arr.ctypes.data

    def canary_ok(self):
        return bool(np.all(self.buf[:self.start] == 0xA5))


@pytest.mark.parametrize("target", TARGETS)
def test_canary_guard_every_kernel(target):
    """Every step's kernel called on guarded buffers (reads past the end fault; writes outside are seen)."""
    rng = np.random.default_rng(8)
    for M, N, K in [(1, 1, 1), (5, 3, 129), (2, 2, 512), (1, 1, 640)]:
        gb = G()
        _i8_cases(gb, rng, M, N, K)
        x = rng.standard_normal((M, K)).astype(np.float32)
        xn = gb.input(x, "f32")
        for dname, lay in (("ternary", "crumb32"), ("i4", "nib16+f16"), ("u4", "nib64"), ("u2", "crumb16+f16z"),
                           ("nf4", "nib32"), ("ternary", "trit5"), ("i4", "planes")):
            _float_case(gb, rng, x, xn, dname, lay, N, K)
        xi = gb.input(rng.integers(-128, 128, (M, K)).astype(np.int8), "i8")  # unpacked int8 weights
        wi = gb.param(rng.integers(-128, 128, (N, K)).astype(np.int8), "i8")
        si = gb.param(rng.random(N).astype(np.float32), "f32")
        s1i = gb.input(rng.random((M, 1)).astype(np.float32), "f32")
        gb.op(f"qmatmul_i8 %{xi}, %{wi}, %{s1i}, %{si} {{transpose_b = true}}", f"f32[{M}, {N}]")
        for tb in (True, False):  # the dense f32 kernels
            wf = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
            tol = 1e-4 * (np.abs(x) @ np.abs(wf if tb else wf.T).T) + 1e-30
            gb.op(f"matmul %{xn}, %{gb.param(wf, 'f32')} {{transpose_b = {str(tb).lower()}}}", f"f32[{M}, {N}]",
                  tol=tol)
        g = gb.graph()
        cg = compile_graph(g, gb.weights, target=target, pipeline="")
        ref = ladder.run(g, gb.feeds, weights=gb.weights)
        env = dict(gb.feeds)
        env.update({k: v for k, v in cg.fixed_outputs.items()})
        from ladder.interpreter import Session
        fixed = Session(cg.graph, gb.weights).fixed
        for step in cg.steps:
            ins = [Guarded(fixed[o] if o in fixed else env[o]) for o in step.op.operands]
            r = step.op.results[0]
            out = Guarded(np.full(r.type.storage_shape, np.nan, r.type.storage_np_dtype))
            step.fn(*[a.ptr for a in ins], out.ptr, 0, step.spec.work)
            assert all(a.canary_ok() for a in ins + [out]), step.op.describe()
            tol = gb.meta[r.name]
            if tol is None:
                assert np.array_equal(out.arr, ref[r.name])
            else:
                assert np.all(np.abs(out.arr - ref[r.name]) <= tol)


def test_fast_path_uses_madd_and_default_pipeline_fuses():
    """The default pipeline fuses into qmatmul_i8; the kernel multiplies with the instruction the target's
    capabilities say (asked of the target, never assumed of the host), and named CPUs pick theirs."""
    host = get_target("cpu")
    rng = np.random.default_rng(9)
    M, N, K = 2, 8, 256
    w = rand_w(rng, DTYPES["ternary"], (N, K))
    g = ladder.parse(f"""graph @g(%x: i8[{M}, {K}], %s1: f32[{M}, 1]) -> f32[{M}, {N}] {{
  %w = param @w : ternary[{N}, {K}]
  %s2 = param @s2 : f32[1]
  %m = matmul %x, %w {{transpose_b = true}} : i32[{M}, {N}]
  %c = cast %m {{dtype = "f32"}} : f32[{M}, {N}]
  %a = mul %c, %s1 : f32[{M}, {N}]
  %y = mul %a, %s2 : f32[{M}, {N}]
  return %y
}}""")
    weights = {"w": w, "s2": np.array([0.5], np.float32)}
    feeds = {"x": rng.integers(-128, 128, (M, K)).astype(np.int8), "s1": rng.random((M, 1)).astype(np.float32)}
    cg = compile_graph(g, weights)
    assert [s.op.kind for s in cg.steps] == ["qmatmul_i8"]
    assert np.array_equal(cg.run(feeds)["y"], ladder.run(g, feeds, weights=weights)["y"])
    def multiply(target):
        return "vpdpbusd" if target.supports("i8-dot") else "vpmaddubsw" if target.supports("i8-madd") else None

    if multiply(host):
        assert multiply(host) in cg.source("asm")
    for cpu, want in (("haswell", "vpmaddubsw"), ("znver4", "vpdpbusd"), ("alderlake", "vpdpbusd")):
        target = get_target(f"cpu:{cpu}")
        assert multiply(target) == want
        assert want in compile_graph(g, weights, target=target, jit=False).source("asm"), cpu


@pytest.mark.parametrize("M, N, K", [(1, 7, 4096), (1, 9, 4096 + 96 + 5), (9, 5, 640 + 64 + 33), (35, 6, 512)])
def test_fast_path_row_groups_partial_blocks_threads(M, N, K):
    """The fast kernels' groups of weight rows (N not a multiple of the group), tiles of x rows (M not a multiple
    of the tile), the partial last block (K not a multiple of the block: whole 32-code groups as vectors, the
    rest one by one), trit5's multiply-free decode, and threads 1 and 2: bit-exact (integer) or within the
    float bound, identical whatever the thread count."""
    rng = np.random.default_rng(M * 7 + N + K)
    gb = G()
    x = rng.integers(-128, 128, (M, K)).astype(np.int8)
    x[0, :min(K, 300)] = -128  # the most negative sums
    xn = gb.input(x, "i8")
    s1 = gb.input(rng.random((M, 1)).astype(np.float32) + 0.1, "f32")
    for dname, lay in (("ternary", "crumb32"), ("i2", "crumb32"), ("u2", "crumb64"), ("i4", "nib32"),
                       ("u4", "nib64"), ("ternary", "trit5"), ("i4", "nib16")):
        dt = DTYPES[dname]
        w = gb.param(rand_w(rng, dt, (N, K)), dname)
        s2 = gb.param(rng.random(N).astype(np.float32) + 0.5, "f32")
        gb.lines.append(f"%p{w} = pack %{w} {{layout = \"{lay}\"}} : {dname}<{lay}>[{N}, {K}]")
        gb.op(f"qmatmul_i8 %{xn}, %p{w}, %{s1}, %{s2} {{transpose_b = true}}", f"f32[{M}, {N}]")
    xf = rng.standard_normal((M, K)).astype(np.float32)
    xfn = gb.input(xf, "f32")
    for dname, lay in (("ternary", "trit5"), ("ternary", "crumb32"), ("i4", "nib32")):
        for mode in ("row", "group32", "original"):
            _float_case(gb, rng, xf, xfn, dname, lay, N, K, mode=mode)
    check(gb, targets=["cpu"])


def test_vnni_dot_product_for_avx512_and_madd_for_avx2():
    """cpu:avx512 (VNNI) multiplies int8 by one vpdpbusd per 32 codes; cpu:avx2 by vpmaddubsw + vpmaddwd. Both
    compile ahead of time on any host; where the host has VNNI, the native target runs the VNNI kernels
    through every other test of this file."""
    rng = np.random.default_rng(11)
    N, K = 8, 256
    g = ladder.parse(f"""graph @g(%x: i8[1, {K}], %s1: f32[1, 1]) -> f32[1, {N}] {{
  %w = param @w : ternary[{N}, {K}]
  %s2 = param @s2 : f32[1]
  %p = pack %w {{layout = "crumb32"}} : ternary<crumb32>[{N}, {K}]
  %y = qmatmul_i8 %x, %p, %s1, %s2 {{transpose_b = true}} : f32[1, {N}]
  return %y
}}""")
    weights = {"w": rand_w(rng, DTYPES["ternary"], (N, K)), "s2": np.array([0.5], np.float32)}
    asm512 = compile_graph(g, weights, target="cpu:avx512", pipeline="", jit=False).source("asm")
    asm2 = compile_graph(g, weights, target="cpu:avx2", pipeline="", jit=False).source("asm")
    assert "vpdpbusd" in asm512 and "vpmaddubsw" not in asm512
    assert "vpmaddubsw" in asm2 and "vpdpbusd" not in asm2
