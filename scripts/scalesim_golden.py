"""Generate the SCALE-Sim 3.0.0 golden grid that ``tests/test_asic_scalesim.py`` checks ladder's systolic timing
against.

SCALE-Sim needs numpy < 2, so it lives in a side virtualenv::

    python3 -m venv /tmp/scalesim-venv
    /tmp/scalesim-venv/bin/pip install 'numpy<2' scalesim==3.0.0
    /tmp/scalesim-venv/bin/python scripts/scalesim_golden.py -o tests/fixtures/scalesim/golden.csv

For every (dataflow, array shape, GEMM shape, SRAM size) of the grid the script runs SCALE-Sim's GEMM mode once
and records:

* ``compute_cycles``: rows of SCALE-Sim's demand matrices, i.e. the cycles the array computes with its operands
  always on time (fill, steps, drain of every fold);
* ``total_cycles`` and ``stall_cycles``: SCALE-Sim's report, with its double-buffered scratchpads of the given
  size (split evenly between ifmap, filter and ofmap) and its default interface bandwidth (CALC mode).

GEMM convention (SCALE-Sim's ``input_type_gemm``): an M x K operand (ifmap) times a K x N one (filter) gives
M x N; so os maps (S_R, S_C, T) = (M, N, K), ws = (K, N, M), is = (K, M, N).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import os
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

# (rows, cols) of the array, (M, N, K) of the GEMM, scratchpad KB per operand buffer. SCALE-Sim walks every
# operand address, so the grid stays small enough to regenerate in a few minutes.
ARRAYS = [(8, 8), (32, 32), (16, 64), (64, 16), (4, 128)]
GEMMS = [(1, 512, 256), (100, 40, 300), (256, 256, 64), (33, 17, 129), (64, 96, 200)]
BIG = ((64, 256, 1024), [(32, 32), (16, 64)], 16)   # 16 KB each of ifmap / filter / ofmap: 48 KB in all
SRAM_KB = 64
DATAFLOWS = ["os", "ws", "is"]

CONFIG = """[general]
run_name = golden

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : {kb}
FilterSramSzkB : {kb}
OfmapSramSzkB : {kb}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Bandwidth : 10
Dataflow : {df}
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : 10
IfmapSRAMBankNum : 10
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : 10
FilterSRAMBankNum : 10
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : CALC
UseRamulatorTrace : False
"""


def run_case(df: str, rows: int, cols: int, m: int, n: int, k: int, kb: int, work: Path) -> dict:
    from scalesim.scale_sim import scalesim

    tag = f"{df}_{rows}x{cols}_{m}x{n}x{k}_{kb}"
    cfg, topo = work / f"{tag}.cfg", work / f"{tag}.csv"
    cfg.write_text(CONFIG.format(rows=rows, cols=cols, kb=kb, df=df))
    topo.write_text(f"Layer, M, N, K,\ngemm, {m}, {n}, {k},\n")
    layout = work / f"{tag}_layout.csv"   # required by the runner, unused without custom layouts
    layout.write_text("Layer name," + ",".join(["x"] * 20) + ",\ngemm," + ",".join(["1"] * 20) + ",\n")
    out = work / tag
    out.mkdir()
    with redirect_stdout(io.StringIO()):
        sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo),
                       layout=str(layout), input_type_gemm=True)
        sim.run_scale(top_path=str(out))
    layer = sim.runner.single_layer_sim_object_list[0]
    demand = layer.compute_system.get_demand_matrices()[0]
    return {"dataflow": df, "rows": rows, "cols": cols, "m": m, "n": n, "k": k, "sram_kb_per_operand": kb,
            "compute_cycles": int(demand.shape[0]), "total_cycles": int(layer.total_cycles),
            "stall_cycles": int(layer.stall_cycles)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default="tests/fixtures/scalesim/golden.csv")
    args = p.parse_args(argv)
    import scalesim  # noqa: F401  (fail early, with the install hint)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(df, a, g, SRAM_KB) for df, a, g in itertools.product(DATAFLOWS, ARRAYS, GEMMS)]
        cases += [(df, a, BIG[0], BIG[2]) for df, a in itertools.product(DATAFLOWS, BIG[1])]
        for df, (r, c), (m, n, k), kb in cases:
            rows.append(run_case(df, r, c, m, n, k, kb, Path(tmp)))
            print(f"{rows[-1]}", file=sys.stderr)
    os.makedirs(Path(args.output).parent, exist_ok=True)
    with open(args.output, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} cases to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
