"""Every benchmark in one command, and one table: ladder against each peer available on this machine, plus
end-to-end decode tokens/s of the BitNet b1.58 model (ladder.models SIZES) at 1 and 2 threads with peak memory.

    python benchmarks/run_all.py [--quick] [--sizes tiny,small,medium,2b] [--tokens 16] [--threads 1,2]
                                 [--only matmul,pack,lut,sim,e2e]

* Each ``bench_*.py`` beside this file runs as its own process (``--quick`` is passed to those that take it;
  ``bench_pack.py`` gets a smaller matrix instead); its own table is shown as it runs, and the rows an adapter
  below knows how to read go into the summary: microseconds (matmul) or milliseconds (pack) for ladder and for
  each peer the benchmark measured (numpy float32, onnxruntime MatMulNBits, the gguf package's quantizers,
  llama.cpp when given to bench_matmul), with ratios peer / ladder (> 1: ladder is faster). A benchmark without
  an adapter (a new one) still runs; the summary points at its own table.
* End to end: for each size, a fresh process builds the BitNet decoder (prefill and decode step graphs) on
  seeded random weights, compiles it for the cpu target once, and generates greedily (``ladder.generate``) at
  each thread count; the numpy reference interpreter (``--target ref``) is the peer (sizes up to ``medium``: it
  is far too slow at 2B). Peak memory is the process's peak resident set size from
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss``: weights, packing, compilation and the run together.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
RATIO = "{:.2f}x"
REF_SIZES = ("tiny", "small", "medium")  # the numpy interpreter's end-to-end runs stay within seconds


@dataclass
class Row:
    """One summary line: ladder's figure and each peer's (same unit, lower is better unless ``higher``)."""

    bench: str
    case: str
    threads: str
    unit: str
    ladder: float
    peers: dict[str, float] = field(default_factory=dict)
    higher: bool = False
    note: str = ""

    def ratio(self, peer: str) -> float | None:
        """> 1: ladder is faster."""
        p = self.peers.get(peer)
        if p is None or p <= 0 or self.ladder <= 0:
            return None
        return self.ladder / p if self.higher else p / self.ladder


# -- adapters: a benchmark's printed table -> rows --------------------------------------------------------

def _num(tok: str) -> float | None:
    try:
        return float(tok.rstrip("x%"))
    except ValueError:
        return None


_MATMUL = re.compile(r"^(?P<case>\S.*?)\s+(?P<m>\d+) (?P<n>\d+) (?P<k>\d+)\s+(?P<rest>\d.*)$")


def read_matmul(out: str) -> list[Row]:
    """bench_matmul.py: thr, ladder us, GB/s, bound us, %bound, numpy us, np/ld, llama type, llama us, ll/ld,
    ORT bits, ORT us, ORT/ld (continuation lines for a second llama.cpp type start blank and are skipped)."""
    rows = []
    for line in out.splitlines():
        m = _MATMUL.match(line)
        if not m:
            continue
        t = m["rest"].split()
        if len(t) < 13 or _num(t[1]) is None:
            continue
        peers = {name: v for name, v in (("numpy", _num(t[5])), ("llama.cpp", _num(t[8])),
                                          ("onnxruntime", _num(t[11]))) if v is not None}
        note = f"llama.cpp {t[7]}" if "llama.cpp" in peers else ""
        if "onnxruntime" in peers:
            note = (note + "; " if note else "") + f"ORT MatMulNBits {t[10]}"
        rows.append(Row("matmul", f"{m['case']} m{m['m']} n{m['n']} k{m['k']}", t[0], "us", float(t[1]), peers,
                        note=note))
    return rows


_PACK = re.compile(r"^(?P<packing>\S+)\s+(?P<type>\S+)\s+(?P<bits>[\d.]+)\s+(?P<ms>[\d.]+)\s+\d+\s+[\d.]+\s*"
                   r"(?:(?P<fmt>\w+)\s+(?P<peer>[\d.]+)\s+[\d.]+x)?\s*$")


def read_pack(out: str) -> list[Row]:
    """bench_pack.py: packing, type, bits/w, pack ms, Mweights/s, unpack ms, [peer format, peer ms, ratio]."""
    rows = []
    for line in out.splitlines():
        m = _PACK.match(line)
        if m and m["fmt"]:  # only the packings with a peer: the others have nothing to compare with
            rows.append(Row("pack", f"{m['packing']} {m['type']} ({m['bits']} bits/w)", "1", "ms", float(m["ms"]),
                            {"gguf": float(m["peer"])}, note=f"gguf quantize {m['fmt']}"))
    return rows


_LUT = re.compile(r"^(?P<w>[iu]\d|ternary)\s+(?P<n>\d+)\s+(?P<m>\d+)\s+(?P<k>\d+)\s+(?P<thr>\d+)\s+(?P<dec>[\d.]+)\s+"
                  r"(?P<lut>[\d.]+)\s+(?P<np>[\d.]+)\s+\S+\s+\S+\s+(?P<faster>\w+)\s+(?P<model>\w+)\s*$")


def read_lut(out: str) -> list[Row]:
    """bench_lut.py: weights, n, m, k, thr, decode us, lookup us, numpy us, ratios, faster, the cost model's
    pick. ladder's figure is the path the compiler picks (its cost model); the other path is in the note."""
    rows = []
    for line in out.splitlines():
        m = _LUT.match(line)
        if m:
            picked = float(m["lut"] if m["model"] == "lut" else m["dec"])
            rows.append(Row("lut", f"{m['w']} m{m['m']} n{m['n']} k{m['k']} ({m['model']} picked)", m["thr"], "us",
                            picked, {"numpy": float(m["np"])},
                            note=f"decode {m['dec']} us, lookup {m['lut']} us: {m['faster']} is faster"))
    return rows


_SIM = re.compile(r"^(?P<model>\S+) \((?P<what>[^)]*)\) on (?P<hw>\S+):")
_SIM_TOTAL = re.compile(r"lowering \+ sim\s+(?P<s>[\d.]+) s\s+->\s+(?P<note>.*)$")


def read_sim(out: str) -> list[Row]:
    """bench_sim.py: per model and config, seconds to lower and simulate one token (no peer)."""
    rows, head = [], None
    for line in out.splitlines():
        h, t = _SIM.match(line), _SIM_TOTAL.search(line)
        if h:
            head = f"{h['model']} on {h['hw']}: lower + simulate a token"
        elif t and head:
            rows.append(Row("sim", head, "1", "s", float(t["s"]), note=t["note"].strip()))
    return rows


@dataclass(frozen=True)
class Bench:
    script: str
    quick: tuple[str, ...]           # arguments for --quick (when the script takes no --quick flag)
    read: Callable[[str], list[Row]] | None


BENCHES = {
    "matmul": Bench("bench_matmul.py", ("--quick", "--repeat", "3", "--rounds", "1"), read_matmul),
    "pack": Bench("bench_pack.py", ("--rows", "1024", "--cols", "4096", "--repeat", "1"), read_pack),
    "lut": Bench("bench_lut.py", ("--quick",), read_lut),
    "sim": Bench("bench_sim.py", ("--quick",), read_sim),
}


def _takes(script: Path, flag: str) -> bool:
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    return flag in out.stdout


def run_bench(name: str, bench: Bench, quick: bool, threads: str) -> tuple[str, float, int]:
    """Run one benchmark, echoing its output; returns (output, seconds, exit code)."""
    script = HERE / bench.script
    args: list[str] = []
    if quick:
        args = list(bench.quick) if bench.quick[0] != "--quick" or _takes(script, "--quick") else []
    if _takes(script, "--threads"):
        args += ["--threads", threads]
    print(f"\n=== {bench.script} {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=HERE.parent)
    lines = []
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    code = proc.wait()
    return "".join(lines), time.perf_counter() - t0, code


# -- end to end ----------------------------------------------------------------------------------------------

def e2e_one(size: str, tokens: int, threads: list[int], with_ref: bool) -> dict:
    """Build, compile and run one model size in this process; the figures as a dict (printed as JSON)."""
    import numpy as np  # noqa: F401  (imported here: the parent process stays light)

    from ladder import weights
    from ladder.generate import ModuleRunner, generate
    from ladder.models import SIZES, bitnet_decoder

    cfg = SIZES[size]
    prompt = [1, 2, 3, 4]
    t0 = time.perf_counter()
    prefill, decode = bitnet_decoder(cfg, len(prompt), "prefill"), bitnet_decoder(cfg, 1, "decode")
    w = weights.random(decode, 0)
    build_s = time.perf_counter() - t0
    runner = ModuleRunner("cpu", w)
    out = {"size": size, "params": cfg.ternary_params(), "build_s": build_s,
           "compile_s": runner.prepare(prefill, decode), "runs": []}
    ids = None
    for t in threads:
        runner.threads = t
        gen = generate(prefill, decode, prompt, tokens, runner)
        ids = ids or gen.ids
        out["runs"].append({"threads": t, "prefill": gen.prefill_tokens_per_s, "decode": gen.decode_tokens_per_s,
                            "same_ids": gen.ids == ids})
    if with_ref:
        ref_runner = ModuleRunner("ref", w)
        ref_runner.prepare(prefill, decode)
        ref = generate(prefill, decode, prompt, min(tokens, 6), ref_runner)
        out["ref_decode"] = ref.decode_tokens_per_s
        out["ref_same_ids"] = ref.ids == ids[:len(ref.ids)]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return out


def _millions(n: int) -> str:
    return f"{n / 1e6:,.1f}" if n < 1e7 else f"{n / 1e6:,.0f}"


def run_e2e(sizes: list[str], tokens: int, threads: str) -> list[Row]:
    rows = []
    for size in sizes:
        print(f"\n=== end to end: BitNet '{size}', {tokens} new tokens, threads {threads}", flush=True)
        cmd = [sys.executable, __file__, "--e2e-size", size, "--tokens", str(tokens), "--threads", threads]
        if size in REF_SIZES:
            cmd.append("--e2e-ref")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        result = next((json.loads(ln[4:]) for ln in proc.stdout.splitlines() if ln.startswith("E2E ")), None)
        if proc.returncode or result is None:
            print(f"failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
            continue
        print(f"{_millions(result['params'])} M ternary weights; built in {result['build_s']:.1f} s, compiled in "
              f"{result['compile_s']:.1f} s; peak RSS {result['peak_rss_mb']:,.0f} MB")
        for run in result["runs"]:
            peers = {"numpy": result["ref_decode"]} if "ref_decode" in result else {}
            same = run["same_ids"] and result.get("ref_same_ids", True)
            note = (f"prefill {run['prefill']:,.0f} tok/s; peak RSS {result['peak_rss_mb']:,.0f} MB"
                    + ("" if same else "; TOKENS DIFFER"))
            print(f"  {run['threads']} thread(s): decode {run['decode']:,.1f} tok/s, {note}")
            rows.append(Row("e2e decode", f"BitNet {size} ({_millions(result['params'])} M)", str(run["threads"]),
                            "tok/s", run["decode"], peers, higher=True, note=note))
    return rows


# -- the summary table -----------------------------------------------------------------------------------------

def _fmt(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:,.0f}"


def summary(rows: list[Row], notes: list[str]) -> str:
    peers = sorted({p for r in rows for p in r.peers}, key=["numpy", "onnxruntime", "llama.cpp", "gguf"].index)
    head = ["benchmark", "case", "thr", "unit", "ladder"]
    for p in peers:
        head += [p, f"{p}/ladder" if p != "numpy" else "numpy/ladder"]
    head.append("note")
    table = [head]
    for r in rows:
        line = [r.bench, r.case, r.threads, r.unit, _fmt(r.ladder)]
        for p in peers:
            v, q = r.peers.get(p), r.ratio(p)
            line += [_fmt(v) if v is not None else "-", RATIO.format(q) if q is not None else "-"]
        table.append(line + [r.note])
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    text = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(line)).rstrip() for line in table]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text + [""] + notes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: each benchmark's quick subset, tiny model")
    ap.add_argument("--sizes", help="BitNet sizes end to end, comma separated (default tiny,small,medium; "
                                    "--quick: tiny); 2b needs about 10 GB of memory")
    ap.add_argument("--tokens", type=int, help="new tokens per end-to-end run (default 16; --quick: 4)")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma separated")
    ap.add_argument("--only", help=f"run only these, comma separated: {', '.join(BENCHES)}, e2e")
    ap.add_argument("--e2e-size", help=argparse.SUPPRESS)   # the child process of one end-to-end run
    ap.add_argument("--e2e-ref", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    tokens = args.tokens or (4 if args.quick else 16)
    if args.e2e_size:
        print("E2E " + json.dumps(e2e_one(args.e2e_size, tokens, threads, args.e2e_ref)))
        return 0

    from ladder.models import SIZES

    sizes = (args.sizes or ("tiny" if args.quick else "tiny,small,medium")).split(",")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        ap.error(f"unknown size {unknown[0]}; sizes: {', '.join(SIZES)}")
    only = set(args.only.split(",")) if args.only else set(BENCHES) | {"e2e"}
    if only - set(BENCHES) - {"e2e"}:
        ap.error(f"--only takes {', '.join(BENCHES)}, e2e; not {', '.join(sorted(only - set(BENCHES) - {'e2e'}))}")
    rows: list[Row] = []
    notes = []
    for name, bench in BENCHES.items():
        if name not in only:
            continue
        if not (HERE / bench.script).exists():
            notes.append(f"{bench.script}: not present")
            continue
        out, seconds, code = run_bench(name, bench, args.quick, args.threads)
        read = bench.read(out) if bench.read else []
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        notes.append(f"{bench.script}: {status}, {seconds:.0f} s, "
                     + (f"{len(read)} rows in the summary" if bench.read else "its own table above (no adapter)"))
        rows += read
    if "e2e" in only:
        rows += run_e2e(sizes, tokens, args.threads)
        notes.append("e2e: decode tokens/s of ladder.generate on the cpu target; numpy = the reference interpreter "
                     "(ladder --target ref); peak RSS = getrusage ru_maxrss of the process running that size alone")
    print("\n=== summary (ratios peer/ladder for times, ladder/peer for tokens/s: > 1 means ladder is faster)")
    print(summary(rows, notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
