"""Packing throughput: every packing on a 4096 x 14336 weight matrix, and a 2B ternary model's weights.

    python benchmarks/bench_pack.py [--rows 4096 --cols 14336] [--repeat 3]

Side by side, in one run, with the peer that packs the same kinds of weights in Python: the ``gguf``
package's numpy quantizers (llama.cpp's formats: TQ2_0, TQ1_0, Q4_0), when it is installed
(``pip install gguf``). They also compute block scales from float input, so their work is a superset of
ladder's (which packs codes whose scales are already known); the ratio says how the two compare at
producing the bytes a kernel reads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ladder.models import SIZES
from ladder.packing import PACKINGS
from ladder.target import get_target
from ladder.types import DTYPES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import call_seconds  # noqa: E402  (a sibling module)


def best_of(fn, repeat: int) -> float:
    return min(call_seconds(fn, repeat))


def random_values(dt, shape, rng):
    if dt.kind == "table":
        return rng.integers(0, 16, shape, dtype=np.uint8)
    vals = np.asarray(dt.values, dtype=np.float32)
    return vals[rng.integers(0, len(vals), shape)].astype(dt.np_dtype)


# (ladder type, packing name without its block size) -> the llama.cpp format holding the same codes at the same bit width
PEER_FORMATS = {("ternary", "crumb"): "TQ2_0", ("ternary", "trit"): "TQ1_0", ("i4", "nib"): "Q4_0"}


def gguf_quantize():
    try:
        from gguf import GGMLQuantizationType
        from gguf import quants
    except ImportError:
        return None
    return lambda floats, name: quants.quantize(floats, GGMLQuantizationType[name])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=14336)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    shape = (args.rows, args.cols)
    n = args.rows * args.cols
    rng = np.random.default_rng(0)
    peer = gguf_quantize()

    print(f"packing a {args.rows} x {args.cols} matrix ({n / 1e6:.1f} M weights), best of {args.repeat}")
    header = (f"{'packing':<9} {'type':<8} {'bits/w':>6} {'pack ms':>9} {'Mweights/s':>11} {'unpack ms':>10}  "
              f"peer (gguf numpy quantizer, ms)  peer/ladder")
    print(header)
    print("-" * len(header))
    for dname in ("ternary", "i2", "u2", "i4", "u4", "nf4", "fp4", "i1", "u1"):
        dt = DTYPES[dname]
        values = random_values(dt, shape, rng)
        floats = dt.to_values(values) * np.float32(0.02)
        peer_ms = {}
        for (pdt, _), fmt in PEER_FORMATS.items():
            if peer is not None and pdt == dname:
                peer_ms[fmt] = best_of(lambda: peer(floats, fmt), 1) * 1e3
        for p in PACKINGS.values():
            if not p.accepts(dt):
                continue
            t_pack = best_of(lambda: p.pack(values, dt), args.repeat)
            storage = p.pack(values, dt)
            t_unpack = best_of(lambda: p.unpack(storage, shape, dt), 1)
            fmt = PEER_FORMATS.get((dname, p.name.rstrip("0123456789")))
            peer_cols = f"{fmt} {peer_ms[fmt]:>8.0f}{'':<16}  {peer_ms[fmt] / (t_pack * 1e3):>6.1f}x" \
                if fmt in peer_ms else ""
            print(f"{p.name:<9} {dname:<8} {p.bits_per_weight(dt):>6.2f} {t_pack * 1e3:>9.1f} "
                  f"{n / t_pack / 1e6:>11.0f} {t_unpack * 1e3:>10.1f}  {peer_cols}")

    # A BitNet b1.58 2B model's ternary matrices, packed with the host cpu target's preferred packing.
    cfg = SIZES["2b"]
    target = get_target("cpu")
    dt = DTYPES["ternary"]
    packing = target.packing_for(dt)
    d, f, kv = cfg.hidden, cfg.ffn, cfg.kv_heads * cfg.head_dim
    layer = [(d, d), (kv, d), (kv, d), (d, d), (f, d), (f, d), (d, f)]
    mats = [random_values(dt, s, rng) for s in layer]
    t0 = time.perf_counter()
    for _ in range(cfg.layers):
        for m in mats:
            packing.pack(m, dt)
    total = time.perf_counter() - t0
    count = cfg.layers * sum(a * b for a, b in layer)
    print(f"\nBitNet b1.58 2B: {count / 1e9:.2f} G ternary weights in {cfg.layers} layers packed as {packing.name} "
          f"(target {target.name}) in {total:.1f} s ({count / total / 1e6:.0f} M weights/s)")


if __name__ == "__main__":
    main()
