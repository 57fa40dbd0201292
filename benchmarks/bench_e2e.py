"""End to end against llama.cpp on the same GGUF file, in one run: decode (tg) and prefill (pp) tokens/s of
``ladder`` (the cpu target, the GGUF importer, ``ladder.generate``) and of ``llama-bench``, at 1 and 2 threads,
their ratio (ladder / llama.cpp: > 1 means ladder is faster), ladder's compile time and both peak RSS.

    python benchmarks/bench_e2e.py [--llama-cpp BUILD] [--models small] [--types TQ2_0,Q4_0]
                                   [--threads 1,2] [--pp 64] [--tg 32] [--keep DIR] [--kv state|copy]

The files are made here: seeded random weights written as an F32 GGUF by the ``gguf`` writer (laid out as
llama.cpp's converter lays them out, with a SentencePiece-style vocabulary so llama.cpp loads them), then
``llama-quantize --pure`` to each type (or the ``gguf`` package's quantizer when llama.cpp is not given).
Models (``--models``, comma separated):

* ``llama-small`` / ``bitnet-small``: hidden 512, 4 layers, FFN 1536, vocab 8192 (runs in minutes);
* ``llama-125m``: hidden 768, 12 layers, 12 heads, FFN 2048, vocab 32000;
* ``bitnet-100m``: the same shape as llama.cpp's ``bitnet`` architecture (sub-norms, tied head);
* ``bitnet-2b``: BitNet b1.58 2B4T's shape (hidden 2560, FFN 6912, 30 layers, 20 / 5 heads, vocab 128256);
  only when asked, it needs ~10 GB and a long compile.

``small`` means both small models. Each ladder run happens in a child process so its peak RSS is its own.
ladder's decode rate is ``ladder.generate``'s (the Python loop included) after a prompt of ``--pp`` tokens;
llama-bench's tg runs from an empty cache, its pp is one batch of ``--pp`` tokens. ``--kv copy`` runs ladder
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
        subprocess.run([str(exe), "--pure", str(src), str(dst), qtype], check=True, capture_output=True)
        return
    raise SystemExit(f"making {qtype} files needs llama-quantize: pass --llama-cpp BUILD")


# -- ladder, in a child process -----------------------------------------------------------------------------
def ladder_child(path: str, threads: list[int], pp: int, tg: int, kv: str = "state") -> dict:
    """Compile and run ``path``; the result (times, rates, peak RSS) as a dict."""
    import resource

    from ladder.generate import ModuleRunner, generate, load_model

    prompt = [int(t) for t in np.random.default_rng(1).integers(3, 200, pp)]
    model = load_model(path, prompt_len=pp, context=pp + tg + 1)
    runner = ModuleRunner("cpu", model.weights, max(threads), state=kv == "state")
    compile_s = runner.prepare(model.prefill, model.decode)
    out = {"compile_s": compile_s, "rates": {}}
    for t in threads:
        runner.threads = t
        generate(model.prefill, model.decode, prompt, 3, runner)  # warm up
        best_pp, best_tg = 0.0, 0.0
        for _ in range(2):
            gen = generate(model.prefill, model.decode, prompt, tg + 1, runner)
            best_pp = max(best_pp, gen.prefill_tokens_per_s)
            best_tg = max(best_tg, gen.decode_tokens_per_s or 0.0)
        out["rates"][str(t)] = {"pp": best_pp, "tg": best_tg}
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(cmd: list[str]) -> tuple[str, float]:
    """Run ``cmd``; its stdout and its own peak RSS in MB."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.stdout.read(), p.stderr.read()  # (the child is small-output; wait4 below gives its rusage)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{err[-2000:]}")
    return out, usage.ru_maxrss / 1024


def run_ladder(path: Path, threads: list[int], pp: int, tg: int, kv: str = "state") -> dict:
    out, rss = run_child([sys.executable, __file__, "--child", str(path), "--threads", ",".join(map(str, threads)),
                          "--pp", str(pp), "--tg", str(tg), "--kv", kv])
    res = json.loads(out.strip().splitlines()[-1])
    res["rss_mb"] = rss
    return res


def run_llama_bench(path: Path, llama_cpp: Path, threads: list[int], pp: int, tg: int) -> dict:
    exe = llama_cpp / "bin" / "llama-bench"
    out, rss = run_child([str(exe), "-m", str(path), "-t", ",".join(map(str, threads)), "-p", str(pp),
                          "-n", str(tg), "-r", "3", "-o", "json"])
    rates: dict[str, dict] = {str(t): {} for t in threads}
    for row in json.loads(out):
        kind = "pp" if row["n_gen"] == 0 else "tg"
        rates[str(row["n_threads"])][kind] = row["avg_ts"]
    return {"rates": rates, "rss_mb": rss}


# -- the table ----------------------------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def table(rows: list[dict], threads: list[int]) -> str:
    def rates(r, kind):
        return " / ".join(f"{r['rates'][str(t)][kind]:.1f}" if r else "-" for t in threads)

    def ratio(row, kind):
        if not row["peer"]:
            return "-"
        return " / ".join(f"{row['ladder']['rates'][str(t)][kind] / row['peer']['rates'][str(t)][kind]:.2f}x"
                          for t in threads)

    th = " / ".join(map(str, threads))
    head = (f"| file (MiB) | llama.cpp tg | ladder tg | ratio tg | llama.cpp pp | ladder pp | ratio pp | "
            f"ladder compile | RSS ladder / llama.cpp (MB) |")
    lines = [f"tokens/s at {th} threads; ratio = ladder / llama.cpp", head, "|" + "---|" * 9]
    for row in rows:
        p, lad = row["peer"], row["ladder"]
        lines.append(f"| {row['name']} ({row['mib']:.0f}) | {rates(p, 'tg')} | {rates(lad, 'tg')} | "
                     f"{ratio(row, 'tg')} | {rates(p, 'pp')} | {rates(lad, 'pp')} | {ratio(row, 'pp')} | "
                     f"{lad['compile_s']:.1f} s | {lad['rss_mb']:.0f} / {p['rss_mb']:.0f} |" if p else
                     f"| {row['name']} ({row['mib']:.0f}) | - | {rates(lad, 'tg')} | - | - | {rates(lad, 'pp')} | - | "
                     f"{lad['compile_s']:.1f} s | {lad['rss_mb']:.0f} / - |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-cpp", type=Path, default=Path("/tmp/llama.cpp-build") if
                    Path("/tmp/llama.cpp-build/bin/llama-bench").exists() else None,
                    help="a llama.cpp build folder holding bin/llama-bench and bin/llama-quantize")
    ap.add_argument("--models", default="small", help=f"comma separated: {', '.join([*GROUPS, *MODELS])}")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--pp", type=int, default=64, help="prompt tokens (prefill rate)")
    ap.add_argument("--tg", type=int, default=32, help="decoded tokens (decode rate)")
    ap.add_argument("--keep", type=Path, help="keep the GGUF files in this folder (and reuse them)")
    ap.add_argument("--kv", choices=("state", "copy"), default="state",
                    help="ladder's KV cache: held in the modules (state) or passed through Python (copy)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    if args.child:
        print(json.dumps(ladder_child(args.child, threads, args.pp, args.tg, args.kv)))
        return 0
    names = [m for g in args.models.split(",") for m in GROUPS.get(g, [g])]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model {unknown[0]}; known: {', '.join([*GROUPS, *MODELS])}")
    types = args.types.split(",")
    print(f"cpu: {cpu_name()}; llama.cpp: {args.llama_cpp or 'not given (ladder only)'}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            f32 = folder / f"{name}-F32.gguf"
            if not f32.exists():
                t0 = time.perf_counter()
                write_f32(f32, MODELS[name])
                print(f"wrote {f32.name} in {time.perf_counter() - t0:.1f} s", flush=True)
            for qtype in types:
                path = folder / f"{name}-{qtype}.gguf"
                if not path.exists():
                    quantize(f32, path, qtype, args.llama_cpp)
                row = {"name": f"{name} {qtype}", "mib": path.stat().st_size / 2**20}
                row["peer"] = run_llama_bench(path, args.llama_cpp, threads, args.pp, args.tg) \
                    if args.llama_cpp else None
                row["ladder"] = run_ladder(path, threads, args.pp, args.tg, args.kv)
                rows.append(row)
                print(json.dumps(row), flush=True)
            if not args.keep:
                f32.unlink()
    print(table(rows, threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
