"""Matmul kernels side by side, in one run: ladder's LLVM lowerings (compile_graph) of qmatmul_i8 / qmatmul over
packed low-bit weights vs numpy float32 (BLAS), llama.cpp's CPU MUL_MAT and ONNX Runtime's MatMulNBits on the
same shapes, at 1 and 2 threads, as microseconds per op and ratios peer/ladder (> 1: ladder is faster).

    python benchmarks/bench_matmul.py [--repeat 10] [--quick] [--hot] [--threads 1,2]
                                      [--llama-cpp PATH/TO/test-backend-ops] [--no-ort]
    python benchmarks/bench_matmul.py --gguf [--shapes MxNxK,...] [--threads 1,2] [--act f32,q8] [--types ...]

``--gguf`` times Q8_0, Q4_0 and TQ2_0 projections as the GGUF importer builds them (codes + f16 scales per
block + dequant + matmul, through the default pipeline), with float activations (the importer's form before
llama.cpp's int8 activations) and with them (``qmatmul_q8``: Q8_0 blocks for Q8_0 / Q4_0, Q8_K for TQ2_0), as
microseconds and GB/s of the file's weight bytes (34 bytes per 32 Q8_0 weights, 18 for Q4_0, 66 per 256 TQ2_0)
and GFLOP/s (2 m n k per op). A 125M llama's prefill: ``--gguf --hot --act q8 --shapes
64x768x768,64x2048x768,1x768x768,1x2048x768``; its decode: ``--shapes 1x768x768,1x2048x768,1x768x2048,1x32000x768``.

Shapes are (m tokens, n outputs, k): GEMV m = 1 with k = 4096 and 14336, GEMM m = 32, k = 4096, n = 4096
(llama.cpp's notation swaps the names: its m = 4096 outputs, n = tokens).

Equal work: every column takes f32 activations and returns f32. The ladder "i8" rows are the graph
``x f32 -> quantize {absmax, i8} (per token) -> qmatmul_i8`` and their time includes that quantization, as
llama.cpp's MUL_MAT (it quantizes activations to Q8_0/Q8_K inside the op) and ORT's MatMulNBits with
accuracy_level 4 (int8 activations, quantized inside the op) do. The ladder "f32" rows run qmatmul on float
activations (no quantization). numpy is a plain float32 GEMM on unquantized weights.

Caches: ladder and ORT graphs hold enough independent copies of the op (different weights, same x, each copy
quantizes x again) to exceed the last-level cache, so GEMV figures are DRAM-bound throughput; the time printed
is per op. llama.cpp's ``test-backend-ops perf`` repeats one op on the same weights, so its weights stay in
the cache when they fit (32 MiB L3 here: everything at k = 4096 except F32); ``--hot`` runs ladder and ORT the
same way (one copy) for a like-for-like comparison. "bound us" is the packed-weight bytes over the machine's
read bandwidth (``--bandwidth``, GB/s at 1 and 2 threads), the DRAM floor for a GEMV.

llama.cpp: pass a ``test-backend-ops`` binary built from llama.cpp (e.g. the ``vendor/llama.cpp`` of the
llama-cpp-python sdist, ``cmake -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=ON``, target test-backend-ops). Its
built-in perf cases lack these shapes, so the cases are given with ``--test-file`` (one generic MUL_MAT per
line). It has no thread option: it uses hardware_concurrency() / 2 threads, so the thread count is set by
preloading a tiny shim (compiled here with ``cc``) whose ``get_nprocs`` returns 2 x threads.
ORT: used when ``onnxruntime`` and ``onnx`` import; a one-node-per-copy MatMulNBits model, block 32,
symmetric (no zero points), 4-bit and 2-bit. numpy's BLAS threads are set with threadpoolctl when installed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from ladder.backends.llvm.compiler import compile_graph

import ladder
from ladder.frontends.gguf import STORED
from ladder.packing import from_codes, get_packing
from ladder.target import get_target
from ladder.types import DTYPES

CACHE_BYTES = 64 << 20

# (label, op, weight dtype, layout, llama.cpp types of the same bit width or fewer, ORT MatMulNBits bits)
CASES = [
    ("ternary crumb32 q+i8", "qmatmul_i8", "ternary", "crumb32", ("TQ2_0", "TQ1_0"), 2),
    ("ternary trit5 q+i8", "qmatmul_i8", "ternary", "trit5", ("TQ1_0",), None),
    ("int2 crumb32 q+i8", "qmatmul_i8", "i2", "crumb32", ("TQ2_0",), 2),
    ("int4 nib32 q+i8", "qmatmul_i8", "i4", "nib32", ("Q4_0",), 4),
    ("ternary crumb32 f32", "qmatmul", "ternary", "crumb32", ("TQ2_0", "TQ1_0"), 2),
    ("int4 nib32 f32", "qmatmul", "i4", "nib32", ("Q4_0",), 4),
    ("int4 nib16+f16 f32", "qmatmul", "i4", "nib16+f16", ("Q4_0",), 4),
    ("int8 q+i8", "qmatmul_i8", "i8", None, ("Q8_0",), None),
    ("f32 matmul", "matmul", "f32", None, ("F32",), None),
]

# ggml_type ids (stable: they are stored in GGUF files) -> (id, elements per block, bytes per block)
GGML_TYPES = {"F32": (0, 1, 4), "Q4_0": (2, 32, 18), "Q8_0": (8, 32, 34), "TQ1_0": (34, 256, 54),
              "TQ2_0": (35, 256, 66)}
GGML_OP_MUL_MAT = 29  # enum ggml_op in ggml.h (llama.cpp 2025/2026); checked against the op name printed

SHIM_C = r"""
#include <stdlib.h>
int get_nprocs(void) { const char *s = getenv("BENCH_NPROCS"); return s ? atoi(s) : 1; }
int get_nprocs_conf(void) { return get_nprocs(); }
"""


ROUNDS = 3  # every figure is the best of this many rounds (--rounds): the machine is shared and noisy


def timeit(fn, repeat: int) -> float:
    """Mean seconds per call over ``repeat`` calls, best of ROUNDS rounds."""
    fn()
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t0) / repeat)
    return best


def blas_threads(n: int):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(n)


def n_copies(wbytes: int, hot: bool) -> int:
    return 1 if hot else max(1, CACHE_BYTES // wbytes + 1)


def build(op, dname, layout, m, n, k, rng, hot=False):
    """The graph of one case: enough copies of the op to exceed the cache (one when hot), compiled."""
    dt = DTYPES[dname]
    p = get_packing(layout) if layout else None
    wbytes = n * (p.row_bytes(k, dt) if p else k * dt.bits // 8)
    copies = n_copies(wbytes, hot)
    lines, weights, outs = [], {}, []
    for c in range(copies):
        if dt.is_float:
            weights[f"w{c}"] = rng.standard_normal((n, k)).astype(dt.np_dtype)
        else:
            codes = rng.integers(0, 3 if dname == "ternary" else 2 ** dt.bits, (n, k)).astype(np.uint8)
            weights[f"w{c}"] = from_codes(codes, dt)
        stored = {t.name: v for t, v in STORED.items()}.get(qtype)  # the packing the importer keeps the bytes in
        attr = f' {{stored = "{stored}"}}' if stored else ""
        lines.append(f"%w{c} = param @w{c}{attr} : {dname}[{n}, {k}]")
        if p is not None and "+" in layout:
            weights[f"bs{c}"] = (rng.random((n, p.blocks(k))) + 0.5).astype(np.float16)
            lines.append(f"%bs{c} = param @bs{c} : f16[{n}, {p.blocks(k)}]")
            lines.append(f"%p{c} = pack %w{c}, %bs{c} {{layout = \"{layout}\"}} : {dname}<{layout}>[{n}, {k}]")
            lines.append(f"%y{c} = qmatmul %x, %p{c} {{transpose_b = true, group = {p.block}}} : f32[{m}, {n}]")
        else:
            if p is not None:
                lines.append(f"%p{c} = pack %w{c} {{layout = \"{layout}\"}} : {dname}<{layout}>[{n}, {k}]")
            w = f"p{c}" if p is not None else f"w{c}"  # int8 and f32 weights are used as they are
            if op == "matmul":
                lines.append(f"%y{c} = matmul %x, %{w} {{transpose_b = true}} : f32[{m}, {n}]")
            elif op == "qmatmul_i8":  # each copy quantizes x itself: equal work to a peer's op
                lines.append(f"%xq{c}, %xs{c} = quantize %x {{dtype = i8, scheme = \"absmax\"}} "
                             f": i8[{m}, {k}], f32[{m}, 1]")
                lines.append(f"%y{c} = qmatmul_i8 %xq{c}, %{w}, %xs{c}, %s2 {{transpose_b = true}} : f32[{m}, {n}]")
            else:
                lines.append(f"%y{c} = qmatmul %x, %p{c}, %s2r {{transpose_b = true}} : f32[{m}, {n}]")
        outs.append(f"y{c}")
    weights["s2"] = np.ones(1, np.float32)
    weights["s2r"] = np.ones((n, 1), np.float32)
    head = ["%s2 = param @s2 : f32[1]", f"%s2r = param @s2r : f32[{n}, 1]"]
    text = (f"graph @b(%x: f32[{m}, {k}]) -> ({', '.join(f'f32[{m}, {n}]' for _ in outs)}) {{\n  "
            + "\n  ".join(head + lines) + f"\n  return {', '.join('%' + o for o in outs)}\n}}")
    g = ladder.parse(text)
    feeds = {"x": rng.standard_normal((m, k)).astype(np.float32)}
    return compile_graph(g, weights, pipeline=""), feeds, copies, wbytes


# -- GGUF Q8_0 / Q4_0 weights as the GGUF importer builds them ---------------------------------------------

# ggml type -> (ladder code dtype, bytes per block, weights per block, the activations its dot product takes)
GGUF_CASES = {"Q8_0": ("i8", 34, 32, "q8_0"), "Q4_0": ("i4", 18, 32, "q8_0"), "TQ2_0": ("ternary", 66, 256, "q8_k"),
              "TQ1_0": ("ternary", 54, 256, "q8_k")}
GGUF_SHAPES = [(1, 2048, 2048), (1, 768, 2048), (32, 2048, 2048), (32, 768, 2048)]


def gguf_text(qtype: str, act: str, m: int, n: int, k: int, copies: int) -> str:
    """The graph frontends/gguf.py makes for ``copies`` projections of one x by Q8_0/Q4_0/TQ2_0 weights: codes
    + f16 scales per block + dequant + matmul{transpose_b}; ``act = "q8_0"`` feeds x through llama.cpp's Q8_0
    activation quantization first (absmax i8 per 32, the scale rounded to f16), ``act = "q8_k"`` through its Q8_K
    one (absmax i8 per 256, an f32 scale), once per copy (equal work to a peer's op, which quantizes its input
    itself); ``act = "f32"`` keeps float activations."""
    dname, _, blk, _ = GGUF_CASES[qtype]
    nb = k // blk
    lines = []
    for c in range(copies):
        stored = {t.name: v for t, v in STORED.items()}.get(qtype)  # the packing the importer keeps the bytes in
        attr = f' {{stored = "{stored}"}}' if stored else ""
        lines.append(f"%w{c} = param @w{c}{attr} : {dname}[{n}, {k}]")
        lines.append(f"%s{c} = param @s{c} : f16[{n}, {nb}]")
        lines.append(f"%d{c} = dequant %w{c}, %s{c} {{group = {blk}, dtype = f32}} : f32[{n}, {k}]")
        xin = "%x"
        if act in ("q8_0", "q8_k"):
            lines.append(f"%xq{c}, %xs{c} = quantize %x {{scheme = \"absmax\", dtype = i8, group = {blk}}} "
                         f": i8[{m}, {k}], f32[{m}, {nb}]")
            xr = f"%xs{c}"
            if act == "q8_0":  # Q8_0's scale is f16
                lines.append(f"%xh{c} = cast %xs{c} {{dtype = f16}} : f16[{m}, {nb}]")
                lines.append(f"%xr{c} = cast %xh{c} {{dtype = f32}} : f32[{m}, {nb}]")
                xr = f"%xr{c}"
            lines.append(f"%xd{c} = dequant %xq{c}, {xr} {{group = {blk}, dtype = f32}} : f32[{m}, {k}]")
            xin = f"%xd{c}"
        lines.append(f"%y{c} = matmul {xin}, %d{c} {{transpose_b = true}} : f32[{m}, {n}]")
    outs = ", ".join(f"f32[{m}, {n}]" for _ in range(copies))
    return (f"graph @g(%x: f32[{m}, {k}]) -> ({outs}) {{\n  " + "\n  ".join(lines)
            + f"\n  return {', '.join(f'%y{c}' for c in range(copies))}\n}}")


def build_gguf(qtype, act, m, n, k, rng, hot=False, pipeline=None):
    """One GGUF case compiled with the default pipeline (or ``pipeline``): (module, feeds, copies, weight bytes
    in the file's format)."""
    dname, blk_bytes, blk, _ = GGUF_CASES[qtype]
    wbytes = n * k // blk * blk_bytes
    copies = n_copies(wbytes, hot)
    weights = {}
    for c in range(copies):
        lo, hi = {"i8": (-127, 128), "i4": (-8, 8), "ternary": (-1, 2)}[dname]
        weights[f"w{c}"] = rng.integers(lo, hi, (n, k)).astype(DTYPES[dname].np_dtype)
        weights[f"s{c}"] = (rng.random((n, k // blk)) * 0.01 + 0.001).astype(np.float16)
    g = ladder.parse(gguf_text(qtype, act, m, n, k, copies))
    feeds = {"x": rng.standard_normal((m, k)).astype(np.float32)}
    return compile_graph(g, weights, pipeline=pipeline), feeds, copies, wbytes


def gguf_main(args, thread_counts, bw) -> None:
    """``--gguf``: Q8_0, Q4_0 and TQ2_0 projections as imported from a GGUF file, float activations or the ones
    llama.cpp's dot product takes (Q8_0 for Q8_0 / Q4_0, Q8_K for TQ2_0: ``--act q8``)."""
    rng = np.random.default_rng(0)
    shapes = GGUF_SHAPES
    if args.shapes:
        shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    hdr = (f"{'type':<5} {'act':<5} {'kernel':<11} {'shape m n k':<15} {'thr':>3} {'us':>8} {'GB/s':>6} {'%bound':>6} "
           f"{'GFLOP/s':>7}")
    print(hdr)
    print("-" * len(hdr))
    for m, n, k in shapes:
        for qtype in args.types.split(","):
            for act in args.act.split(","):
                act = GGUF_CASES[qtype][3] if act == "q8" else act
                if act not in ("f32", GGUF_CASES[qtype][3]):
                    continue
                cg, feeds, copies, wbytes = build_gguf(qtype, act, m, n, k, rng, args.hot)
                kinds = sorted({op.kind for op in cg.graph.ops() if "matmul" in op.kind})
                for threads in thread_counts:
                    t = timeit(lambda cg=cg, feeds=feeds, threads=threads: cg.run(feeds, threads=threads),
                               args.repeat) / copies * 1e6
                    bound = wbytes / (bw[min(threads, len(bw)) - 1] * 1e9) * 1e6
                    print(f"{qtype:<5} {act:<5} {','.join(kinds):<11} {f'{m} {n} {k}':<15} {threads:>3} {t:>8.1f} "
                          f"{wbytes / t / 1e3:>6.2f} {100 * bound / t:>5.0f}% {2 * m * n * k / t / 1e3:>7.1f}")
        print()


# -- llama.cpp test-backend-ops ----------------------------------------------------------------------------

def ggml_bytes(tname: str, n: int, k: int) -> int:
    _, blk, size = GGML_TYPES[tname]
    return n * (k // blk) * size


def _nprocs_shim(workdir: Path) -> Path | None:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return None
    src, lib = workdir / "nprocs.c", workdir / "libnprocs.so"
    src.write_text(SHIM_C)
    r = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(lib), str(src)],
                       capture_output=True, text=True, check=False)
    return lib if r.returncode == 0 else None


class LlamaCpp:
    """Runs ``test-backend-ops perf -b CPU --test-file`` over generic MUL_MAT cases; us per call."""

    def __init__(self, exe: str, workdir: Path):
        self.exe = str(Path(exe).resolve())
        self.workdir = workdir
        self.shim = _nprocs_shim(workdir)
        self.default_threads = max(1, (os.cpu_count() or 2) // 2)
        self.note = ""

    def can_run(self, threads: int) -> bool:
        return self.shim is not None or threads == self.default_threads

    def run(self, m: int, n: int, k: int, types, threads: int) -> dict[str, float]:
        """Times ``types`` for out[n_tok=m, n] = x[m, k] @ W[n, k]^T at ``threads``; {type: us}."""
        lines = []
        for t in types:
            tid, blk, size = GGML_TYPES[t]
            rs = (k // blk) * size
            lines.append(f"{GGML_OP_MUL_MAT} 0 {n} {m} 1 1 0 2 "
                         f"{tid} {k} {n} 1 1 {size} {rs} {rs * n} {rs * n} "
                         f"0 {k} {m} 1 1 4 {4 * k} {4 * k * m} {4 * k * m} bench_{t}")
        path = self.workdir / f"cases_{m}_{n}_{k}.txt"
        path.write_text("\n".join(lines) + "\n")
        env = dict(os.environ)
        if self.shim is not None:
            env["LD_PRELOAD"] = f"{self.shim} {env['LD_PRELOAD']}" if env.get("LD_PRELOAD") else str(self.shim)
            env["BENCH_NPROCS"] = str(2 * threads)
        out = {}
        for _ in range(ROUNDS):  # each run averages >= 1 s per case; keep the best run per case
            r = subprocess.run([self.exe, "perf", "-b", "CPU", "-o", "MUL_MAT", "--test-file", str(path)],
                               capture_output=True, text=True, env=env, timeout=1800, check=False)
            for line in r.stdout.splitlines():
                mt = re.search(r"^\s*(\w+)\(name=bench_(\w+),.*?([\d.]+) us/run", line)
                if mt:
                    if mt.group(1) != "MUL_MAT":
                        raise SystemExit(f"llama.cpp: GGML_OP_MUL_MAT is not {GGML_OP_MUL_MAT} in this build "
                                         f"(the case ran as {mt.group(1)}); update GGML_OP_MUL_MAT from its ggml.h")
                    out[mt.group(2)] = min(out.get(mt.group(2), float("inf")), float(mt.group(3)))
        if not out:
            self.note = f"llama.cpp produced no timings (exit {r.returncode}): {(r.stderr or r.stdout)[-400:]}"
        return out


# -- ONNX Runtime MatMulNBits ------------------------------------------------------------------------------

def ort_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def ort_bytes(bits: int, n: int, k: int, block: int = 32) -> int:
    return n * (k // block) * (block * bits // 8 + 4)  # packed codes + one f32 scale per block


def ort_time(m, n, k, bits, threads, repeat, rng, hot=False, block=32) -> float | None:
    """us per MatMulNBits op (accuracy_level 4: int8 activations), None if ORT refuses the model."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    copies = n_copies(ort_bytes(bits, n, k, block), hot)
    nb, blob = k // block, block * bits // 8
    inits, nodes, outs = [], [], []
    for c in range(copies):
        inits.append(numpy_helper.from_array(rng.integers(0, 256, (n, nb, blob), dtype=np.uint8), f"B{c}"))
        inits.append(numpy_helper.from_array(((rng.random(n * nb) + 0.5) * 0.01).astype(np.float32), f"S{c}"))
        nodes.append(helper.make_node("MatMulNBits", ["A", f"B{c}", f"S{c}"], [f"Y{c}"], domain="com.microsoft",
                                      K=k, N=n, bits=bits, block_size=block, accuracy_level=4))
        outs.append(helper.make_tensor_value_info(f"Y{c}", TensorProto.FLOAT, [m, n]))
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
                              outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - an unsupported bit width
        return None
    feeds = {"A": rng.standard_normal((m, k)).astype(np.float32)}
    return timeit(lambda: sess.run(None, feeds), repeat) / copies * 1e6


# -- the table ---------------------------------------------------------------------------------------------

def _f(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)


def _r(peer, ours):
    return "-" if peer is None or ours is None else f"{peer / ours:.2f}x"


def main(argv=None) -> None:
    global ROUNDS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="best of this many rounds (llama.cpp: whole runs)")
    ap.add_argument("--quick", action="store_true", help="GEMV k = 4096 only")
    ap.add_argument("--hot", action="store_true", help="one copy of the weights for ladder and ORT (cache-hot, "
                                                        "as llama.cpp's test-backend-ops measures)")
    ap.add_argument("--shapes", help="MxNxK,... (m tokens, n outputs) instead of the default three")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma separated")
    ap.add_argument("--llama-cpp", metavar="TEST_BACKEND_OPS", help="path to llama.cpp's test-backend-ops")
    ap.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime even when installed")
    ap.add_argument("--bandwidth", default="14.2,28.3",
                    help="measured DRAM read GB/s at 1, 2, ... threads, for the 'bound us' column")
    ap.add_argument("--gguf", action="store_true",
                    help="Q8_0 and Q4_0 weights as the GGUF importer builds them (n k = 2048 2048 and 768 2048, m = 1 "
                         "and 32), float activations and llama.cpp's Q8_0 ones, through the default pipeline")
    ap.add_argument("--act", default="f32,q8", help="--gguf activations: f32 and/or q8 (the int8 blocks of each type's "
                    "llama.cpp dot product, qmatmul_q8: q8_0 for Q8_0 and Q4_0, q8_k for TQ2_0; or name q8_0 / q8_k)")
    ap.add_argument("--types", default="Q8_0,Q4_0,TQ2_0", help="--gguf weight types, comma separated")
    args = ap.parse_args(argv)
    ROUNDS = max(1, args.rounds)
    thread_counts = [int(t) for t in args.threads.split(",")]
    bw = [float(b) for b in args.bandwidth.split(",")]
    if args.gguf:
        return gguf_main(args, thread_counts, bw)
    target = get_target("cpu")
    rng = np.random.default_rng(0)
    tmp = tempfile.TemporaryDirectory(prefix="bench_matmul_")
    llama = LlamaCpp(args.llama_cpp, Path(tmp.name)) if args.llama_cpp else None
    use_ort = not args.no_ort and ort_available()
    print(f"host {target.cpu_name} ({target.name}; i8-madd {target.supports('i8-madd')}, "
          f"fma {target.supports('f32-fma')}); weights {'cache-hot (one copy)' if args.hot else 'cold (copies > LLC)'}")
    print(f"peers: llama.cpp {'yes' if llama else 'no (--llama-cpp)'}"
          f"{'' if not llama or llama.shim else ' (no C compiler for the thread shim: its default threads only)'}"
          f", onnxruntime {'yes' if use_ort else 'no'}")
    hdr = (f"{'case':<22} {'shape m n k':<17} {'thr':>3} {'ladder us':>9} {'GB/s':>5} {'bound us':>8} {'%bound':>6} "
           f"{'numpy us':>8} {'np/ld':>6} {'llama':>6} {'llama us':>8} {'ll/ld':>6} {'ORT':>5} {'ORT us':>7} "
           f"{'ORT/ld':>6}")
    print(hdr)
    print("-" * len(hdr))
    shapes = [(1, 4096, 4096)] + ([] if args.quick else [(1, 4096, 14336), (32, 4096, 4096)])
    if args.shapes:
        shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    for m, n, k in shapes:
        shape = f"{m} {n} {k}"
        wf = [rng.standard_normal((n, k)).astype(np.float32) for _ in range(n_copies(n * k * 4, args.hot))]
        xf = rng.standard_normal((m, k)).astype(np.float32)
        t_np, t_ll, t_ort = {}, {}, {}
        for threads in thread_counts:
            it = iter(range(10 ** 9))
            with blas_threads(threads):
                t_np[threads] = timeit(lambda xf=xf, wf=wf, it=it: xf @ wf[next(it) % len(wf)].T,
                                       max(3, args.repeat)) * 1e6
            if llama and llama.can_run(threads):
                t_ll[threads] = llama.run(m, n, k, list(GGML_TYPES), threads)
            if use_ort:
                for bits in sorted({c[5] for c in CASES if c[5]}):
                    t_ort[threads, bits] = ort_time(m, n, k, bits, threads, max(3, args.repeat), rng, args.hot)

        for label, op, dname, layout, ll_types, bits in CASES:
            try:
                cg, feeds, copies, wbytes = build(op, dname, layout, m, n, k, rng, args.hot)
            except Exception as e:  # noqa: BLE001 - a packing this backend does not lower yet
                print(f"{label:<22} {shape:<17} skipped: {type(e).__name__}: {str(e)[:80]}")
                continue
            for threads in thread_counts:
                t = timeit(lambda cg=cg, feeds=feeds, threads=threads: cg.run(feeds, threads=threads),
                           args.repeat) / copies * 1e6
                bound = wbytes / (bw[min(threads, len(bw)) - 1] * 1e9) * 1e6
                o = t_ort.get((threads, bits))
                for i, lt in enumerate(ll_types):
                    lu = t_ll.get(threads, {}).get(lt)
                    lead = (f"{label:<22} {shape:<17} {threads:>3} {t:>9.0f} {wbytes / t / 1e3:>5.1f} {bound:>8.0f} "
                            f"{100 * bound / t:>5.0f}% {t_np[threads]:>8.0f} {_r(t_np[threads], t):>6}"
                            if i == 0 else f"{'':<22} {shape:<17} {threads:>3} {'':>9} {'':>5} {'':>8} {'':>6} "
                                           f"{'':>8} {'':>6}")
                    tail = f" {f'{bits}-bit' if bits else '-':>5} {_f(o):>7} {_r(o, t):>6}" if i == 0 else ""
                    print(f"{lead} {lt:>6} {_f(lu):>8} {_r(lu, t):>6}{tail}")

        print()
    if llama:
        bounds = ", ".join(f"{t} {ggml_bytes(t, 4096, 4096) / 2 ** 20:.1f} MiB" for t in GGML_TYPES)
        print(f"llama.cpp weight bytes at n = k = 4096: {bounds} (its 'bound' is for its own bytes; ll/ld > 1: "
              f"ladder faster). {llama.note}")
    if use_ort:
        print("ORT: MatMulNBits block 32, accuracy_level 4, bytes = codes + f32 scale per block.")


if __name__ == "__main__":
    main()
