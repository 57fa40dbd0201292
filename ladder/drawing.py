"""Pictures of a graph: a layered layout drawn with matplotlib (the ``plots`` extra).

The layout is the usual one for dataflow (Sugiyama's): every node gets a row below all its operands (inputs on
top, the weight side (params and what only they feed) just above its first user, the returned values in a row
of their own at the bottom); an
edge spanning several rows passes through a narrow slot reserved in each row it crosses, so that it never runs
through a box; the order within rows is improved by barycenter sweeps to uncross edges; x positions pull each
node toward its neighbours without overlapping. Boxes are as wide as their labels in a monospace font, so no
label is cut off. ``layered_layout`` is plain Python (tests check its geometry); ``draw`` renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ir import Graph

LOWBIT = {"pack", "unpack", "qmatmul", "qmatmul_i8", "dequant", "quantize", "lut_precompute", "lut_matmul"}
FILL = {"input": "#dbe9f6", "output": "#dbf0dd", "param": "#eeeeee", "lowbit": "#fbd9a5", "op": "#ffffff"}

CHAR_W = 0.6  # advance of a monospace character, in font sizes (DejaVu Sans Mono: 0.602)
TITLE_PT, SUB_PT = 11.0, 8.5
BOX_H, PAD_X = 34.0, 10.0
ROW_GAP, NODE_GAP, SLOT_W = 44.0, 18.0, 6.0


@dataclass
class Node:
    key: tuple
    title: str
    subtitle: str
    style: str  # a key of FILL; "slot" for the passage of a long edge through a row
    width: float
    row: int = 0
    x: float = 0.0  # centre

    @property
    def left(self) -> float:
        return self.x - self.width / 2

    @property
    def right(self) -> float:
        return self.x + self.width / 2


@dataclass
class Layout:
    nodes: dict[tuple, Node]
    rows: list[list[tuple]]
    edges: list[list[tuple[float, float]]] = field(default_factory=list)  # polylines, top to bottom

    def y_top(self, row: int) -> float:
        return row * (BOX_H + ROW_GAP)

    @property
    def width(self) -> float:
        return max(n.right for n in self.nodes.values()) + NODE_GAP

    @property
    def height(self) -> float:
        return self.y_top(len(self.rows) - 1) + BOX_H

    def boxes(self) -> list[tuple[tuple, float, float, float, float]]:
        """(key, left, top, right, bottom) of every box (slots excluded); y grows downward."""
        return [(k, n.left, self.y_top(n.row), n.right, self.y_top(n.row) + BOX_H)
                for k, n in self.nodes.items() if n.style != "slot"]


def _label_width(title: str, subtitle: str) -> float:
    return max(len(title) * TITLE_PT, len(subtitle) * SUB_PT) * CHAR_W + 2 * PAD_X


def _nodes_and_edges(graph: Graph) -> tuple[dict[tuple, Node], list[tuple[tuple, tuple]]]:
    nodes, edges = {}, []
    for v in graph.inputs:
        nodes[("in", v.name)] = Node(("in", v.name), f"%{v.name}", str(v.type), "input", 0)
    for n in graph.nodes():
        op = graph.op(n)
        title = op.kind + (f" @{op.attr['ref']}" if op.kind == "param" else "")
        names = ", ".join(f"%{r.name}" for r in op.results)
        style = "param" if op.kind in ("param", "const") else "lowbit" if op.kind in LOWBIT else "op"
        types = ", ".join(str(r.type) for r in op.results)
        nodes[("op", n)] = Node(("op", n), title, f"{names} : {types}", style, 0)
        for name in op.operands:  # one edge per pair of boxes, however many values flow between them
            src = graph.producer(name)
            edge = (("in", name) if src is None else ("op", src), ("op", n))
            if edge not in edges:
                edges.append(edge)
    for i, name in enumerate(graph.outputs):
        key = ("out", i)
        nodes[key] = Node(key, "return", f"%{name} : {graph.type_of(name)}", "output", 0)
        src = graph.producer(name)
        edges.append((("in", name) if src is None else ("op", src), key))
    for node in nodes.values():
        node.width = _label_width(node.title, node.subtitle)
    return nodes, edges


def _assign_rows(nodes: dict, edges: list) -> None:
    preds: dict[tuple, list] = {k: [] for k in nodes}
    succs: dict[tuple, list] = {k: [] for k in nodes}
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    inner = [k for k in nodes if k[0] != "out"]  # inputs, then ops in topological order
    for k in inner:
        nodes[k].row = 1 + max((nodes[p].row for p in preds[k]), default=-1)
    # the weight side (params, consts and what only they feed, like a dequant) sits right above its first
    # user, not up among the inputs: short edges instead of long ones
    weight_side = {}
    for k in inner:
        weight_side[k] = k[0] == "op" and all(weight_side[p] for p in preds[k])
    for k in reversed(inner):
        users = [nodes[s].row for s in succs[k] if s[0] != "out"]
        if weight_side[k] and users:
            nodes[k].row = min(users) - 1
    last = max((nodes[k].row for k in inner), default=-1)
    for k in nodes:
        if k[0] == "out":
            nodes[k].row = last + 1
    first = min(n.row for n in nodes.values())
    for n in nodes.values():  # a graph without inputs may leave row 0 empty
        n.row -= first


def _crossings(rows: list[list[tuple]], chains: list[list[tuple]]) -> int:
    """Pairs of segments between the same two rows that cross, for this order within rows."""
    pos = {k: i for row in rows for i, k in enumerate(row)}
    segs: dict[int, list] = {}
    row_of = {k: r for r, row in enumerate(rows) for k in row}
    for chain in chains:
        for a, b in zip(chain, chain[1:]):
            segs.setdefault(row_of[a], []).append((pos[a], pos[b]))
    return sum((a1 - a2) * (b1 - b2) < 0 for s in segs.values() for i, (a1, b1) in enumerate(s)
               for a2, b2 in s[i + 1:])


def layered_layout(graph: Graph, sweeps: int = 12) -> Layout:
    """Rows, order within rows and x positions for every box, and each edge's route as a polyline."""
    nodes, edges = _nodes_and_edges(graph)
    _assign_rows(nodes, edges)
    chains = []  # each edge as the keys it passes: source, slots, target
    for i, (a, b) in enumerate(edges):
        chain = [a]
        for r in range(nodes[a].row + 1, nodes[b].row):
            key = ("slot", i, r)
            nodes[key] = Node(key, "", "", "slot", SLOT_W, r)
            chain.append(key)
        chains.append(chain + [b])
    rows: list[list[tuple]] = [[] for _ in range(max(n.row for n in nodes.values()) + 1)]
    for k, n in nodes.items():
        rows[n.row].append(k)
    up: dict[tuple, list] = {k: [] for k in nodes}
    down: dict[tuple, list] = {k: [] for k in nodes}
    for chain in chains:
        for a, b in zip(chain, chain[1:]):
            down[a].append(b)
            up[b].append(a)

    best, best_x = [list(r) for r in rows], _crossings(rows, chains)
    for sweep in range(sweeps):  # barycenter ordering, alternately from the top and from the bottom
        rng = range(1, len(rows)) if sweep % 2 == 0 else range(len(rows) - 2, -1, -1)
        for r in rng:
            ref = rows[r - 1] if sweep % 2 == 0 else rows[r + 1]
            pos = {k: i for i, k in enumerate(ref)}
            nbrs = up if sweep % 2 == 0 else down
            old = {k: i for i, k in enumerate(rows[r])}
            rows[r].sort(key=lambda k: (sum(pos[m] for m in nbrs[k]) / len(nbrs[k]) if nbrs[k] else old[k], old[k]))
        c = _crossings(rows, chains)
        if c < best_x:
            best, best_x = [list(r) for r in rows], c
    rows = best

    _place_x(nodes, rows, up, down)
    layout = Layout(nodes, rows)
    layout.edges = [_route(layout, chain, up, down) for chain in chains]
    return layout


def _pack(nodes: dict, row: list[tuple], want: dict[tuple, float]) -> None:
    """Put the row's nodes as near their wanted x as their order and spacing allow (two sweeps, then the mean)."""
    if not row:
        return
    gap = lambda a, b: (nodes[a].width + nodes[b].width) / 2 + NODE_GAP  # noqa: E731
    right = [want[row[0]]]
    for a, b in zip(row, row[1:]):
        right.append(max(want[b], right[-1] + gap(a, b)))
    left = [want[row[-1]]]
    for a, b in zip(reversed(row[:-1]), reversed(row[1:])):
        left.append(min(want[a], left[-1] - gap(a, b)))
    left.reverse()
    xs = [(lo + hi) / 2 for lo, hi in zip(left, right)]
    for i in range(1, len(row)):  # the mean of two feasible placements can still crowd: push right
        xs[i] = max(xs[i], xs[i - 1] + gap(row[i - 1], row[i]))
    for k, x in zip(row, xs):
        nodes[k].x = x


def _place_x(nodes: dict, rows: list[list[tuple]], up: dict, down: dict, rounds: int = 8) -> None:
    for row in rows:
        _pack(nodes, row, {k: 0.0 for k in row})
    for i in range(rounds):
        order = range(1, len(rows)) if i % 2 == 0 else range(len(rows) - 2, -1, -1)
        for r in order:
            want = {}
            for k in rows[r]:
                nb = up[k] + down[k]
                want[k] = sum(nodes[m].x for m in nb) / len(nb) if nb else nodes[k].x
            _pack(nodes, rows[r], want)
    shift = NODE_GAP - min(n.left for n in nodes.values())
    for n in nodes.values():
        n.x += shift


def _port(layout: Layout, key: tuple, other: tuple, nbrs: dict) -> float:
    """Where an edge meets a box: the box's edges spread along its side in the order of their other ends."""
    node = layout.nodes[key]
    if node.style == "slot":
        return node.x
    ends = sorted(nbrs[key], key=lambda m: layout.nodes[m].x)
    i = ends.index(other)
    return node.left + node.width * (i + 1) / (len(ends) + 1)


def _route(layout: Layout, chain: list[tuple], up: dict, down: dict) -> list[tuple[float, float]]:
    pts = []
    for j, key in enumerate(chain):
        node, top = layout.nodes[key], layout.y_top(layout.nodes[key].row)
        if j > 0:
            pts.append((_port(layout, key, chain[j - 1], up), top))
        if j < len(chain) - 1:
            pts.append((_port(layout, key, chain[j + 1], down), top + BOX_H))
    return pts


def edge_path(points: list[tuple[float, float]]):
    """A matplotlib Path: vertical inside a row (slots), an S-curve across each gap between rows. The curve's
    control points keep to the gap's height, so it never enters a row."""
    from matplotlib.path import Path

    verts, codes = [points[0]], [Path.MOVETO]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 == x1:
            verts.append((x1, y1))
            codes.append(Path.LINETO)
        else:
            mid = (y0 + y1) / 2
            verts += [(x0, mid), (x1, mid), (x1, y1)]
            codes += [Path.CURVE4] * 3
    return Path(verts, codes)


def draw(graph: Graph, title: str | None = None):
    """A matplotlib Figure of ``graph`` (1 unit = 1 point, so labels keep their size whatever the graph)."""
    from matplotlib.figure import Figure  # not pyplot: no backend is chosen, no global figure kept
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    layout = layered_layout(graph)
    head = 24.0 if title else 0.0
    w, h = layout.width, layout.height + 2 * NODE_GAP + head
    fig = Figure(figsize=(w / 72, h / 72), dpi=110)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, w)
    ax.set_ylim(layout.height + NODE_GAP, -NODE_GAP - head)  # y grows downward, as in the layout
    ax.axis("off")
    if title:
        ax.text(NODE_GAP, -NODE_GAP - head / 2, title, fontsize=12, va="center", family="sans-serif")
    for pts in layout.edges:
        ax.add_patch(FancyArrowPatch(path=edge_path(pts), arrowstyle="-|>", mutation_scale=9, color="#555555",
                                     linewidth=1.0, shrinkA=0, shrinkB=0, zorder=1))
    for key, left, top, right, bottom in layout.boxes():
        node = layout.nodes[key]
        rounded = node.style in ("input", "output")
        ax.add_patch(FancyBboxPatch((left, top), right - left, bottom - top, zorder=2, linewidth=1.0,
                                    boxstyle=f"round,pad=0,rounding_size={BOX_H / 2 if rounded else 4}",
                                    facecolor=FILL[node.style], edgecolor="#333333"))
        ax.text(node.x, top + 13, node.title, fontsize=TITLE_PT, family="monospace", ha="center", va="center",
                zorder=4)
        ax.text(node.x, top + 26, node.subtitle, fontsize=SUB_PT, family="monospace", ha="center", va="center",
                color="#333333", zorder=4)
    return fig


def png(graph: Graph, title: str | None = None) -> bytes:
    """``draw(graph)`` as PNG bytes."""
    import io

    buf = io.BytesIO()
    draw(graph, title).savefig(buf, format="png")
    return buf.getvalue()
