"""ladder.drawing: the layered layout's geometry (no edge through a box, no overlapping boxes, labels inside
their boxes, one edge per dataflow link) on the shipped examples, and the picture it renders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ladder
from ladder import drawing

pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GRAPHS = ["bitlinear.lir", "int4_mlp.lir", "binary_mlp.lir", "bitnet_layer.lir"]


def _fused_bitlinear():
    return ladder.PassManager("legalize-types{target=cpu:avx2},fuse").run(ladder.parse(EXAMPLES / "bitlinear.lir"))


NO_INPUTS = """graph @consts() -> (f32[2], f32[2]) {
  %c = const 1.0 : f32[2]
  %d = relu %c : f32[2]
  return %d, %c
}
"""


def graphs():
    return [(name, ladder.parse(EXAMPLES / name)) for name in GRAPHS] + [
        ("bitlinear fused", _fused_bitlinear()), ("no inputs", ladder.parse(NO_INPUTS))]


@pytest.fixture(scope="module", params=graphs(), ids=lambda p: p[0])
def laid_out(request):
    name, g = request.param
    return g, drawing.layered_layout(g)


def _flatten(points):
    """The drawn edge as a dense polyline (curves sampled as matplotlib draws them)."""
    path = drawing.edge_path(points)
    (poly,) = path.to_polygons(closed_only=False)
    dense = [poly[0]]
    for a, b in zip(poly, poly[1:]):
        dense += [a + (b - a) * t for t in np.linspace(0, 1, 12)[1:]]
    return np.array(dense)


def test_edges_never_run_through_a_box(laid_out):
    g, layout = laid_out
    boxes = layout.boxes()
    for pts in layout.edges:
        line = _flatten(pts)
        for key, left, top, right, bottom in boxes:
            inside = (line[:, 0] > left + 0.5) & (line[:, 0] < right - 0.5) & \
                     (line[:, 1] > top + 0.5) & (line[:, 1] < bottom - 0.5)
            assert not inside.any(), f"an edge from {pts[0]} to {pts[-1]} crosses the box of {key}"


def test_edges_are_the_dataflow_links(laid_out):
    """Each edge starts on the bottom side of its producer and ends on the top side of its user: the picture
    shows exactly the uses of the graph (no chain the graph does not have)."""
    g, layout = laid_out
    boxes = {k: (l, t, r, b) for k, l, t, r, b in layout.boxes()}

    def box_at(x, y, side):
        hits = [k for k, (l, t, r, b) in boxes.items() if l <= x <= r and abs((b if side == "bottom" else t) - y) < 1e-6]
        assert len(hits) == 1, (x, y, side, hits)
        return hits[0]

    drawn = {(box_at(*pts[0], "bottom"), box_at(*pts[-1], "top")) for pts in layout.edges}
    want = set()
    for n in g.nodes():
        for name in g.op(n).operands:
            src = g.producer(name)
            want.add((("in", name) if src is None else ("op", src), ("op", n)))
    for i, name in enumerate(g.outputs):
        src = g.producer(name)
        want.add((("in", name) if src is None else ("op", src), ("out", i)))
    assert drawn == want and len(layout.edges) == len(want)
    for pts in layout.edges:  # always downward
        assert all(b[1] >= a[1] for a, b in zip(pts, pts[1:]))


def test_boxes_do_not_overlap_and_rows_follow_the_dataflow(laid_out):
    g, layout = laid_out
    boxes = layout.boxes()
    for i, (ka, la, ta, ra, ba) in enumerate(boxes):
        for kb, lb, tb, rb, bb in boxes[i + 1:]:
            assert ra <= lb or rb <= la or ba <= tb or bb <= ta, f"{ka} overlaps {kb}"
    for n in g.nodes():
        for name in g.op(n).operands:
            src = g.producer(name)
            key = ("in", name) if src is None else ("op", src)
            assert layout.nodes[key].row < layout.nodes[("op", n)].row


def test_labels_fit_inside_their_boxes():
    """Rendered, every label's extent lies inside its box (no label cut off, however long its type)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.patches import FancyBboxPatch

    for name, g in graphs():
        if name not in ("bitlinear.lir", "bitlinear fused"):  # the longest labels (ternary<crumb32>[64, 128])
            continue
        fig = drawing.draw(g, name)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        ax = fig.axes[0]
        patches = [p for p in ax.patches if isinstance(p, FancyBboxPatch)]
        labels = [t for t in ax.texts if t.get_zorder() == 4]  # the title is not a label
        assert len(labels) == 2 * len(patches) == 2 * len(drawing.layered_layout(g).boxes())
        for i, patch in enumerate(patches):
            box = patch.get_window_extent(renderer)
            for text in labels[2 * i:2 * i + 2]:
                ext = text.get_window_extent(renderer)
                assert box.x0 < ext.x0 and ext.x1 < box.x1 and box.y0 < ext.y0 and ext.y1 < box.y1, \
                    f"{name}: label '{text.get_text()}' leaves its box"


def test_weight_side_sits_above_its_user():
    """A param (and a dequant fed only by params) is drawn right above the op using it, not among the inputs."""
    g = ladder.parse(EXAMPLES / "int4_mlp.lir")
    layout = drawing.layered_layout(g)
    for n in g.nodes():
        op = g.op(n)
        if op.kind in ("param", "dequant"):
            users = [layout.nodes[("op", u)].row for u in g.users(op.results[0].name)]
            assert layout.nodes[("op", n)].row == min(users) - 1, op.describe()


def test_png_is_a_picture():
    data = drawing.png(_fused_bitlinear(), "after")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
