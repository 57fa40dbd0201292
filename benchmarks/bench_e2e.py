"""End to end against llama.cpp on the same GGUF file, in one run: decode (tg) and prefill (pp) tokens/s of
``ladder`` (the cpu target, the GGUF importer, ``ladder.generate``) and of ``llama-bench``, at 1 and 2 threads,
their ratio (ladder / llama.cpp: > 1 means ladder is faster), ladder's compile time and both peak RSS.

    python benchmarks/bench_e2e.py [--llama-cpp BUILD] [--models small] [--types TQ2_0,Q4_0]
                                   [--threads 1,2] [--pp 64,512] [--tg 32] [--keep DIR] [--kv state|copy]

The files are made here: seeded random weights written as an F32 GGUF by the ``gguf`` writer (laid out as
llama.cpp's converter lays them out, with a SentencePiece-style vocabulary so llama.cpp loads them), then
``llama-quantize --pure`` to each type (or the ``gguf`` package's quantizer when llama.cpp is not given); a
K-quant mix (``Q4_K_M``, ``Q5_K_S``, ...) is llama-quantize's own mix, as downloaded files are.
Models (``--models``, comma separated):

* ``llama-small`` / ``bitnet-small``: hidden 512, 4 layers, FFN 1536, vocab 8192 (runs in minutes);
* ``llama-125m``: hidden 768, 12 layers, 12 heads, FFN 2048, vocab 32000;
* ``bitnet-100m``: the same shape as llama.cpp's ``bitnet`` architecture (sub-norms, tied head);
* ``bitnet-2b``: BitNet b1.58 2B4T's shape (hidden 2560, FFN 6912, 30 layers, 20 / 5 heads, vocab 128256);
  only when asked, it needs ~10 GB and a long compile.

The peer: llama.cpp built from the ``llama-cpp-python`` source package (its ``vendor/llama.cpp``), ``cmake
-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF``, targets ``llama-bench llama-quantize``. On a
Xeon with AMX whose virtual machine faults on AMX tile loads (llama-bench dies of SIGILL in
``ggml_backend_amx_mul_mat``), build it instead with ``-DGGML_NATIVE=OFF`` and the host's other extensions
named (``-DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON
-DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON``, AMX off): ladder uses no AMX either.

``small`` means both small models. Each ladder run happens in a child process so its peak RSS is its own.
ladder's decode rate is ``ladder.generate``'s (the Python loop included) after a prompt of the first ``--pp``
tokens; its prefill rate for each ``--pp`` is one chunk of that many tokens; llama-bench's tg runs from an
empty cache, its pp is one batch of ``--pp`` tokens. Each rate is the best of its repetitions on both sides
(llama-bench's three samples, ladder's two runs); ``--rounds N`` measures each file N times, the two in turns.

Also printed: the % of the bandwidth bound of each decode rate (the bytes a decode step reads, every weight
tensor but the embedding table (which a tied head reads whole) and the KV cache at the decode's average
length, against this machine's read bandwidth measured here, numpy sums over 1 GiB in 1 or 2 threads, in a
child process), and
ladder's load + compile time cold (an empty compiled-code cache) and from the cache (a second process). ``--kv copy`` runs ladder
with the KV cache passed through Python every step (``ModuleRunner(state=False)``: each step copies every
cache) instead of held in the compiled modules and updated in place (``state``, the default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Shape:
    arch: str          # llama | bitnet (llama.cpp's architecture names)
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    context: int = 2048


MODELS = {
    "llama-small": Shape("llama", 8192, 512, 4, 8, 4, 1536),
    "bitnet-small": Shape("bitnet", 8192, 512, 4, 8, 4, 1536),
    "llama-125m": Shape("llama", 32000, 768, 12, 12, 4, 2048),
    "bitnet-100m": Shape("bitnet", 32000, 768, 12, 12, 4, 2048),
    "bitnet-2b": Shape("bitnet", 128256, 2560, 30, 20, 5, 6912, 4096),
}
GROUPS = {"small": ["llama-small", "bitnet-small"], "default": ["llama-125m", "bitnet-100m"]}
TYPES = ["TQ1_0", "TQ2_0", "Q4_0", "Q8_0"]


# -- making the files ---------------------------------------------------------------------------------------
def tensors(s: Shape, seed: int = 0):
    """The model's float32 tensors by GGUF name, yielded one at a time (a 2B model's F32 file is 10 GB; its
    tensors are never all in memory at once)."""
    rng = np.random.default_rng(seed)
    d, f, kvd = s.hidden, s.ffn, s.kv_heads * s.hidden // s.heads
    bitnet = s.arch == "bitnet"

    def mat(n, k):
        if bitnet:  # ternary values times a power of two, as a BitNet checkpoint's
            return (rng.integers(-1, 2, (n, k), dtype=np.int8) * np.float32(1 / 16))
        return rng.standard_normal((n, k), dtype=np.float32) * np.float32(1 / np.sqrt(k))

    def norm(n):
        return rng.uniform(0.8, 1.2, n).astype(np.float32)

    yield "token_embd.weight", rng.standard_normal((s.vocab, d), dtype=np.float32) * np.float32(0.1 if bitnet else 1)
    for i in range(s.layers):
        p = f"blk.{i}"
        yield f"{p}.attn_norm.weight", norm(d)
        yield f"{p}.attn_q.weight", mat(d, d)
        yield f"{p}.attn_k.weight", mat(kvd, d)
        yield f"{p}.attn_v.weight", mat(kvd, d)
        yield f"{p}.attn_output.weight", mat(d, d)
        yield f"{p}.ffn_norm.weight", norm(d)
        yield f"{p}.ffn_gate.weight", mat(f, d)
        yield f"{p}.ffn_up.weight", mat(f, d)
        yield f"{p}.ffn_down.weight", mat(d, f)
        if bitnet:
            yield f"{p}.attn_sub_norm.weight", norm(d)
            yield f"{p}.ffn_sub_norm.weight", norm(f)
    yield "output_norm.weight", norm(d)
    if not bitnet:  # llama.cpp's bitnet projects with token_embd
        yield "output.weight", mat(s.vocab, d)


def write_f32(path: Path, s: Shape) -> None:
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), s.arch)
    w.add_name(f"ladder-bench-{s.arch}")
    w.add_block_count(s.layers)
    w.add_context_length(s.context)
    w.add_embedding_length(s.hidden)
    w.add_feed_forward_length(s.ffn)
    w.add_head_count(s.heads)
    w.add_head_count_kv(s.kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(0)
    pieces = [f"▁p{i}" for i in range(s.vocab - 259)]
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + pieces)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(pieces))])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(pieces))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    for name, a in tensors(s):
        w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def quantize(src: Path, dst: Path, qtype: str, llama_cpp: Path | None) -> None:
    if llama_cpp is not None:
        exe = llama_cpp / "bin" / "llama-quantize"
        # one type for every tensor, but a K-quant mix (Q4_K_M, Q5_K_S, ...) is llama-quantize's own mix: Q4_K_M
        # keeps some projections and the embedding / head in Q6_K, as the files users download do
        pure = [] if qtype.endswith(("_S", "_M", "_L")) else ["--pure"]
        subprocess.run([str(exe), *pure, str(src), str(dst), qtype], check=True, capture_output=True)
        return
    raise SystemExit(f"making {qtype} files needs llama-quantize: pass --llama-cpp BUILD")


# -- ladder, in a child process -----------------------------------------------------------------------------
def ladder_child(path: str, threads: list[int], pps: list[int], tg: int, kv: str = "state",
                 compile_only: bool = False) -> dict:
    """Load, compile and run ``path``; the result (times, rates, peak RSS) as a dict. ``compile_only``: load
    and compile the first prompt's prefill step and the decode step, nothing more."""
    from ladder.generate import ModuleRunner, generate, load_model

    context = max(pps) + tg + 1
    prompts = {pp: [int(t) for t in np.random.default_rng(1).integers(3, 200, pp)] for pp in pps}
    t0 = time.perf_counter()
    models = {pps[0]: load_model(path, prompt_len=pps[0], context=context)}
    load_s = time.perf_counter() - t0
    runner = ModuleRunner("cpu", models[pps[0]].weights, max(threads), state=kv == "state")
    compile_s = runner.prepare(models[pps[0]].prefill, models[pps[0]].decode)
    out = {"load_s": load_s, "compile_s": compile_s, "rates": {}}
    if compile_only:
        return out
    decode = models[pps[0]].decode  # one decode module (and KV cache) for every prompt length
    for pp in pps[1:]:  # its prefill graph compiled with the first load's weights (the same names): one copy
        models[pp] = load_model(path, prompt_len=pp, context=context)
        runner.prepare(models[pp].prefill)
    for t in threads:
        runner.threads = t
        rates = out["rates"][str(t)] = {}
        for i, pp in enumerate(pps):
            m = models[pp]
            generate(m.prefill, decode, prompts[pp], 3, runner)  # warm up
            best_pp, best_tg = 0.0, 0.0
            for _ in range(2):
                gen = generate(m.prefill, decode, prompts[pp], (tg if i == 0 else 0) + 1, runner)
                best_pp = max(best_pp, gen.prefill_tokens_per_s)
                best_tg = max(best_tg, gen.decode_tokens_per_s or 0.0)
            rates[f"pp{pp}"] = best_pp
            if i == 0:
                rates["tg"] = best_tg
    return out


def run_child(cmd: list[str], env: dict | None = None) -> tuple[str, float]:
    """Run ``cmd``; its stdout and its own peak RSS in MB."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = p.stdout.read(), p.stderr.read()  # (the child is small-output; wait4 below gives its rusage)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-2000:]}")
    return out, usage.ru_maxrss / 1024


def run_ladder(path: Path, threads: list[int], pps: list[int], tg: int, kv: str = "state") -> dict:
    """ladder in a child process with an empty compiled-code cache, then (the rates' run done) a second child
    that loads and compiles again from that cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        cmd = [sys.executable, __file__, "--child", str(path), "--threads", ",".join(map(str, threads)),
               "--pp", ",".join(map(str, pps)), "--tg", str(tg), "--kv", kv]
        out, rss = run_child(cmd, env)
        res = json.loads(out.strip().splitlines()[-1])
        res["rss_mb"] = rss
        again, _ = run_child(cmd + ["--compile-only"], env)
        cached = json.loads(again.strip().splitlines()[-1])
        res["cached_s"] = cached["load_s"] + cached["compile_s"]
    return res


def run_llama_bench(path: Path, llama_cpp: Path, threads: list[int], pps: list[int], tg: int) -> dict:
    exe = llama_cpp / "bin" / "llama-bench"
    out, rss = run_child([str(exe), "-m", str(path), "-t", ",".join(map(str, threads)),
                          "-p", ",".join(map(str, pps)), "-n", str(tg), "-r", "3", "-o", "json"])
    rates: dict[str, dict] = {str(t): {} for t in threads}
    for row in json.loads(out):
        kind = f"pp{row['n_prompt']}" if row["n_gen"] == 0 else "tg"
        # the best of its repetitions, as ladder's rate is the best of its runs (not the mean: a noisy machine
        # would count against the peer only)
        rates[str(row["n_threads"])][kind] = max(row.get("samples_ts") or [row["avg_ts"]])
    return {"rates": rates, "rss_mb": rss}


def best_of(a: dict | None, b: dict | None) -> dict | None:
    """Two rounds' results of one side merged: each rate the higher, each time the lower, each RSS the higher."""
    if a is None or b is None:
        return a or b
    out = dict(a)
    out["rates"] = {t: {k: max(v, b["rates"][t].get(k, 0.0)) for k, v in r.items()} for t, r in a["rates"].items()}
    for k in ("load_s", "compile_s", "cached_s"):
        if k in a:
            out[k] = min(a[k], b[k])
    out["rss_mb"] = max(a["rss_mb"], b["rss_mb"])
    return out


# -- the bandwidth bound ------------------------------------------------------------------------------------
def read_bandwidth(threads: list[int], gib: float = 1.0) -> dict[str, float]:
    """This machine's read bandwidth in GB/s at each thread count: the best of 5 numpy sums over ``gib`` GiB of
    int64 split between the threads (numpy releases the GIL in a sum)."""
    from concurrent.futures import ThreadPoolExecutor

    a = np.ones(int(gib * 2**30) // 8, np.int64)
    out = {}
    for t in threads:
        parts = np.array_split(a, t)
        with ThreadPoolExecutor(t) as pool:
            best = min(_timed(lambda: list(pool.map(np.sum, parts))) for _ in range(5))
        out[str(t)] = a.nbytes / best / 1e9
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def decode_bytes(path: Path, s: Shape, positions: float) -> float:
    """Bytes a decode step reads: every tensor of the file but the embedding table (unless the head is tied to
    it), one embedding row aside, and a f16 KV cache of ``positions`` positions."""
    from gguf import GGUFReader

    r = GGUFReader(str(path))
    sizes = {t.name: int(t.n_bytes) for t in r.tensors}
    tied = "output.weight" not in sizes
    weights = sum(n for name, n in sizes.items() if tied or name != "token_embd.weight")
    kv = s.layers * 2 * s.kv_heads * (s.hidden // s.heads) * 2 * positions
    return weights + kv


# -- the table ----------------------------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def table(rows: list[dict], threads: list[int], pps: list[int], bandwidth: dict[str, float]) -> str:
    def rates(r, kind):
        return " / ".join(f"{r['rates'][str(t)][kind]:.1f}" if r else "-" for t in threads)

    def ratio(row, kind):
        if not row["peer"]:
            return "-"
        return " / ".join(f"{row['ladder']['rates'][str(t)][kind] / row['peer']['rates'][str(t)][kind]:.2f}x"
                          for t in threads)

    def bound(row, who):
        r = row[who]
        if not r:
            return "-"
        return " / ".join(f"{100 * r['rates'][str(t)]['tg'] * row['step_bytes'] / (bandwidth[str(t)] * 1e9):.0f}%"
                          for t in threads)

    th = " / ".join(map(str, threads))
    kinds = ["tg"] + [f"pp{p}" for p in pps]
    head = "| file (MiB) | " + " | ".join(f"llama.cpp {k} | ladder {k} | ratio {k}" for k in kinds) + \
        " | % of bandwidth bound tg, llama.cpp / ladder | ladder load + compile, cold / cached | " \
        "RSS ladder / llama.cpp (MB) |"
    lines = [f"tokens/s at {th} threads; ratio = ladder / llama.cpp", head,
             "|" + "---|" * (3 * len(kinds) + 4)]
    for row in rows:
        p, lad = row["peer"], row["ladder"]
        cells = [f"{row['name']} ({row['mib']:.0f})"]
        for k in kinds:
            cells += [rates(p, k), rates(lad, k), ratio(row, k)]
        cells += [f"{bound(row, 'peer')} // {bound(row, 'ladder')}",
                  f"{lad['load_s'] + lad['compile_s']:.1f} / {lad['cached_s']:.1f} s",
                  f"{lad['rss_mb']:.0f} / {p['rss_mb']:.0f}" if p else f"{lad['rss_mb']:.0f} / -"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-cpp", type=Path, default=Path("/tmp/llama.cpp-build") if
                    Path("/tmp/llama.cpp-build/bin/llama-bench").exists() else None,
                    help="a llama.cpp build folder holding bin/llama-bench and bin/llama-quantize")
    ap.add_argument("--models", default="small", help=f"comma separated: {', '.join([*GROUPS, *MODELS])}")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--pp", default="64,512", help="prompt tokens (prefill rates), comma separated; the decode "
                    "rate is measured after the first")
    ap.add_argument("--tg", type=int, default=32, help="decoded tokens (decode rate)")
    ap.add_argument("--keep", type=Path, help="keep the GGUF files in this folder (and reuse them)")
    ap.add_argument("--kv", choices=("state", "copy"), default="state",
                    help="ladder's KV cache: held in the modules (state) or passed through Python (copy)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure each file this many times, llama.cpp and ladder in turns, and keep each side's "
                         "best rates (a shared VM's speed drifts by tens of percent between minutes)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--bandwidth", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--write-f32", help=argparse.SUPPRESS)
    ap.add_argument("--step-bytes", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    pps = [int(p) for p in args.pp.split(",")]
    if args.bandwidth:
        print(json.dumps(read_bandwidth(threads)))
        return 0
    if args.step_bytes:
        print(decode_bytes(Path(args.step_bytes), MODELS[args.models], pps[0] + args.tg / 2))
        return 0
    if args.write_f32:
        write_f32(Path(args.write_f32), MODELS[args.models])
        return 0
    if args.child:
        print(json.dumps(ladder_child(args.child, threads, pps, args.tg, args.kv, args.compile_only)))
        return 0
    names = [m for g in args.models.split(",") for m in GROUPS.get(g, [g])]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model {unknown[0]}; known: {', '.join([*GROUPS, *MODELS])}")
    types = args.types.split(",")
    print(f"cpu: {cpu_name()}; llama.cpp: {args.llama_cpp or 'not given (ladder only)'}", flush=True)
    # in a child: a child's peak RSS starts from this process's (Linux keeps it across fork and exec), so
    # whatever is big is done in children
    bandwidth = json.loads(run_child([sys.executable, __file__, "--bandwidth", "--threads", args.threads])[0])
    print("read bandwidth: " + ", ".join(f"{bw:.1f} GB/s at {t} thread(s)" for t, bw in bandwidth.items()),
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            f32 = folder / f"{name}-F32.gguf"
            if not f32.exists():  # in a child too: this process stays small (see the bandwidth above)
                t0 = time.perf_counter()
                run_child([sys.executable, __file__, "--write-f32", str(f32), "--models", name])
                print(f"wrote {f32.name} in {time.perf_counter() - t0:.1f} s", flush=True)
            for qtype in types:
                path = folder / f"{name}-{qtype}.gguf"
                if not path.exists():
                    quantize(f32, path, qtype, args.llama_cpp)
                step = run_child([sys.executable, __file__, "--step-bytes", str(path), "--models", name,
                                  "--pp", args.pp, "--tg", str(args.tg)])[0]
                row = {"name": f"{name} {qtype}", "mib": path.stat().st_size / 2**20, "step_bytes": float(step)}
                row["peer"] = row["ladder"] = None
                for _ in range(args.rounds):  # the two sides in turns: a slow spell of the machine hits both
                    if args.llama_cpp:
                        row["peer"] = best_of(row["peer"], run_llama_bench(path, args.llama_cpp, threads, pps,
                                                                           args.tg))
                    row["ladder"] = best_of(row["ladder"], run_ladder(path, threads, pps, args.tg, args.kv))
                rows.append(row)
                print(json.dumps(row), flush=True)
            if not args.keep:
                f32.unlink()
    print(table(rows, threads, pps, bandwidth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
