"""examples/inspect_passes.ipynb runs top to bottom without an error (nbclient, a kernel on this very
interpreter) and shows what it promises: per-pass diffs, pictures of the graph, the packed layout, a kernel's
code."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NOTEBOOK = EXAMPLES / "inspect_passes.ipynb"
FUSED = ("qmatmul_i8", "lut_matmul")  # the matmul kernel the cpu pipeline leaves: decode or table lookup


def kernel_manager(folder: Path) -> KernelManager:
    """A kernel started with this interpreter (so it imports the ladder under test), whatever kernels the
    machine has registered under the name python3."""
    spec = folder / "kernels" / "ladder-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "ladder test", "language": "python"}))
    return KernelManager(kernel_name="ladder-test",
                         kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(folder / "kernels")]))


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # what is checked below must come from this run
    client = NotebookClient(nb, km=kernel_manager(tmp_path_factory.mktemp("jupyter")), timeout=120,
                            resources={"metadata": {"path": str(EXAMPLES)}})
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError naming the cell when any cell fails
    return nb, time.perf_counter() - t0


def _texts(nb) -> list[str]:
    out = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            out.append("".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream"))
    return out


def test_runs_without_errors_and_fast(executed):
    nb, seconds = executed
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert seconds < 30, f"the notebook took {seconds:.1f} s"


def test_shows_each_pass_with_its_diff(executed):
    text = "\n".join(_texts(executed[0]))
    assert "==== legalize-types" in text and "+  %w.packed = pack %w" in text
    assert "==== fuse" in text and "+  %y = qmatmul_i8" in text  # (a later `lut` pass may rewrite it)
    assert "max relative difference native vs reference" in text


def test_draws_the_graph_before_and_after(executed):
    """Two PNG pictures from ladder.drawing (whose geometry tests/test_drawing.py checks), the second smaller:
    the pipeline fused the matmul chain."""
    import base64
    import io

    pngs = [o.data["image/png"] for c in executed[0].cells if c.cell_type == "code" for o in c.outputs
            if o.output_type == "display_data" and "image/png" in o.data]
    assert len(pngs) == 2
    from matplotlib.image import imread

    before, after = (imread(io.BytesIO(base64.b64decode(p)), format="png") for p in pngs)
    assert before.shape[0] > after.shape[0] > 200  # fewer rows of boxes after fusion
    text = "\n".join(_texts(executed[0]))
    import re

    after_ops = re.search(r"before the pipeline: 9 ops; after: (\d+) ops", text)
    assert after_ops and int(after_ops.group(1)) < 9


def test_shows_the_packed_layout_and_a_kernel(executed):
    text = "\n".join(_texts(executed[0]))
    assert "byte  holds positions" in text and "   0  k=0 (" in text
    if "packing crumb32:" in text:  # the AVX2 layout (bitnet.cpp's I2_S order)
        assert "k=0 (11000000), k=32 (00110000), k=64 (00001100), k=96 (00000011)" in text
    assert any(f"define void @k_{k}_y(" in text for k in FUSED)
    assert "multiply-accumulate" in text


def test_asic_cells_run_when_the_target_is_there(executed):
    program, plot = _texts(executed[0])[-2:]
    if "not installed" in program:
        assert "not installed" in plot
        return
    assert "lmma" in program and "functional simulator vs reference: max relative difference" in program
    assert "cycles at" in plot
    svgs = [o.data["image/svg+xml"] for o in executed[0].cells[-1].outputs if o.output_type == "display_data"]
    assert len(svgs) == 2 and all("qmatmul_i8" in svg and "<rect" in svg for svg in svgs)
