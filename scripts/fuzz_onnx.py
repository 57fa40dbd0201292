"""Fuzz the ONNX importer for longer than the test suite does, in child processes so that an abort (a crash
of the process, not an exception) is counted rather than ending the run.

    python scripts/fuzz_onnx.py --seeds 0:20 --per-seed 300 [--target cpu]

Prints, per surface: inputs, ok, LadderErrors, other exceptions (with the first few), aborts. The mutator and
the seed models are tests/test_onnx_fuzz.py's."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def _chunk(seed, n, target, q):
    import test_onnx_fuzz as fz

    counts, others = fz.run_fuzz(n, seed, target=target)
    q.put((counts, [(t, m) for t, m, _ in others]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0:10", help="first:last (exclusive) seeds, one child process each")
    ap.add_argument("--per-seed", type=int, default=300)
    ap.add_argument("--target", default="ref", help="ref (import + reference run) or a cpu target (compile too)")
    a = ap.parse_args()
    lo, hi = (int(v) for v in a.seeds.split(":"))
    total = {"inputs": 0, "ok": 0, "ladder": 0, "other": 0, "aborts": 0}
    others = []
    ctx = mp.get_context("spawn")
    for seed in range(lo, hi):
        q = ctx.Queue()
        p = ctx.Process(target=_chunk, args=(seed, a.per_seed, a.target, q))
        p.start()
        p.join()
        if p.exitcode != 0:
            total["aborts"] += 1
            print(f"seed {seed}: the child died (exit code {p.exitcode})", flush=True)
            continue
        counts, oth = q.get()
        for k, v in counts.items():
            total[k] += v
        others += oth
        print(f"seed {seed}: {counts}", flush=True)
    print(f"onnx: inputs {total['inputs']}, ok {total['ok']}, LadderErrors {total['ladder']}, "
          f"other exceptions {total['other']}, aborted chunks {total['aborts']}")
    for t, m in others[:10]:
        print(f"  {t}: {m}")


if __name__ == "__main__":
    main()
