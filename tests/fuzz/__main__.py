"""The long fuzz driver: N inputs (or a time budget) per surface, each checked in a worker process, so that an
abort (SIGABRT from LLVM, SIGSEGV) or a hang is counted and the run goes on. The ``diff`` surface runs random
valid graphs through the reference and compiled code and counts a disagreement as an "other exception"
(tests/fuzz/diff_inputs.py says what agreeing means).

    python tests/fuzz --surface all --seconds 180          # three minutes per surface
    python tests/fuzz --surface gguf -n 5000 --start 100000 --save /tmp/fuzz-finds

Per surface it prints: inputs, ok, LadderErrors, other exceptions, hangs, aborts, and the distinct findings.
Input number K of a surface is always the same input (``<surface>_inputs.make_input(K)``), so a finding is
reproduced from its number; with ``--save`` the inputs that were not ok or a LadderError are written out too.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
SURFACES = ("text", "gguf", "safetensors", "diff")
SUFFIX = {"text": ".lir", "gguf": ".gguf", "safetensors": ".safetensors", "diff": ".lir"}


def _module(surface: str):
    sys.path.insert(0, str(TESTS))
    import importlib

    return importlib.import_module(f"fuzz.{surface}_inputs")


def make_input(surface: str, k: int, cache: dict):
    mod = _module(surface)
    if surface == "gguf":
        cache.setdefault("seeds", mod.seeds())
        return mod.make_input(k, cache["seeds"])
    return mod.make_input(k)


def worker(surface: str) -> None:
    """Read input numbers on stdin, answer one JSON line each: {"kind": ok|ladder|other|hang, "error": ...}."""
    sys.path.insert(0, str(TESTS))
    from fuzz.guard import outcome

    mod = _module(surface)
    cache: dict = {}
    folder = tempfile.mkdtemp(prefix=f"ladder-fuzz-{surface}-")
    path = os.path.join(folder, "input" + SUFFIX[surface])
    for line in sys.stdin:
        k = int(line)
        data = make_input(surface, k, cache)
        if surface == "text":  # parse, print and re-parse (test_fuzz.check_text), then run
            from test_fuzz import check_text
            kind, err = outcome(lambda t: (check_text(t), mod.check_runs(t)), data, seconds=60)
        else:
            with open(path, "wb") as fh:
                fh.write(data.encode() if isinstance(data, str) else data)
            kind, err = outcome(mod.check, path, seconds=60)
        error = None if err is None else f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
        print(json.dumps({"k": k, "kind": kind, "error": error}), flush=True)


class Worker:
    def __init__(self, surface: str):
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).parent), "--worker", surface],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, k: int, timeout: float) -> dict:
        self.proc.stdin.write(f"{k}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.stop()
            return {"k": k, "kind": "hang", "error": f"no answer in {timeout} s (killed)"}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            why = f"signal {-code}" if code < 0 else f"exit code {code}"
            return {"k": k, "kind": "abort", "error": f"the worker died: {why}"}
        return json.loads(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def run_surface(surface: str, n: int | None, seconds: float | None, start: int, timeout: float,
                save: Path | None) -> Counter:
    counts: Counter = Counter()
    findings: Counter = Counter()
    first: dict[str, int] = {}
    w = Worker(surface)
    t0 = time.time()
    k = start
    cache: dict = {}
    try:
        while (n is None or k - start < n) and (seconds is None or time.time() - t0 < seconds):
            if not w.alive():
                w = Worker(surface)
            r = w.ask(k, timeout)
            counts[r["kind"]] += 1
            if r["kind"] in ("other", "hang", "abort"):
                key = f"{r['kind']}: {r['error']}"
                findings[key] += 1
                first.setdefault(key, k)
                if save is not None:
                    save.mkdir(parents=True, exist_ok=True)
                    data = make_input(surface, k, cache)
                    (save / f"{surface}-{k}{SUFFIX[surface]}").write_bytes(
                        data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
                if r["kind"] != "other":
                    w.stop()
            k += 1
    finally:
        w.stop()
    total = sum(counts.values())
    took = time.time() - t0
    print(f"{surface:12s} inputs {total:6d}  ok {counts['ok']:6d}  LadderErrors {counts['ladder']:6d}  "
          f"other exceptions {counts['other']:4d}  hangs {counts['hang']:3d}  aborts {counts['abort']:3d}  "
          f"(inputs {start}..{k - 1}, {took:.0f} s, {total / max(took, 1e-9):.0f}/s)", flush=True)
    for key, c in findings.most_common():
        print(f"    {c:5d} x {key}  (first: input {first[key]})")
    return counts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python tests/fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--surface", choices=SURFACES + ("all",), default="all")
    ap.add_argument("-n", type=int, help="inputs per surface")
    ap.add_argument("--seconds", type=float, help="time per surface (with -n: whichever ends first)")
    ap.add_argument("--start", type=int, default=0, help="the first input number")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds one input may take before it is a hang")
    ap.add_argument("--save", type=Path, help="write the inputs that were not ok or a LadderError here")
    ap.add_argument("--worker", choices=SURFACES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if args.n is None and args.seconds is None:
        args.n = 1000
    bad = 0
    for s in (SURFACES if args.surface == "all" else (args.surface,)):
        c = run_surface(s, args.n, args.seconds, args.start, args.timeout, args.save)
        bad += c["other"] + c["hang"] + c["abort"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
