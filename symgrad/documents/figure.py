"""A figure of the network: its inputs and equations as boxes with their shapes, in layers.

Each forward equation is a box (its name, what it applies, its shape) placed one layer below
the deepest value it reads, with an arrow from each value it reads. The same layout is drawn
three ways: an inline SVG for HTML (no script, no external renderer), boxes in a LaTeX
`tabular` for the PDF (base LaTeX has no drawing package), and a list for Markdown.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import sympy

from symgrad.documents.content import Figure
from symgrad.symbolic.derivation import Derivation
from symgrad.symbolic.graph import Node, topological

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 190, 44, 26, 34, 10
MAX_PER_ROW = 5
OP_LABELS = {"matmul": "product", "log_softmax": "log-softmax", "im2col": "conv", "max": "max pool"}


@dataclass
class Box:
    name: str  # plain text
    latex: str
    what: str  # plain text: "tanh", "softmax", "input"
    shape: str  # plain text, e.g. "B×n_h1"
    reads: list[int]  # indices of the boxes it reads
    layer: int = 0
    x: float = 0
    y: float = 0


def _plain_shape(shape) -> str:
    return "×".join(str(s) for s in shape) if shape else "scalar"


def _what(d: Derivation, number: int, node: Node) -> str:
    owned = [n for n in topological([node]) if d.owners.get(n) == number]
    labels = []
    for n in owned:
        if n.op == "ew":
            for f in sorted(n.attr("expr").atoms(sympy.Function), key=lambda f: type(f).__name__):
                labels.append(type(f).__name__.replace("_", " ").lower())
        elif n.op in ("matmul", "softmax", "log_softmax", "im2col", "max", "scan", "sum"):
            labels.append(f"{n.attr('cell').name} scan" if n.op == "scan" else OP_LABELS.get(n.op, n.op))
    labels = list(dict.fromkeys(labels))
    return ", ".join(labels[:3]) if labels else "view"


def boxes(d: Derivation) -> list[Box]:
    model = d.model
    out: list[Box] = []
    index: dict[Node, int] = {}
    for name, leaf in model.data.items():
        if leaf.op != "input":
            continue
        index[leaf] = len(out)
        out.append(Box(name, d.printer.latex(leaf), "input", _plain_shape(leaf.shape), []))
    for e in d.forward:
        node = d.train.get(e.node, e.node)
        reads = sorted({index[n] for n in topological([node]) if n in index and n is not node})
        what = "loss" if e.kind in ("loss", "objective") else _what(d, e.number, node)
        box = Box(e.lhs_text, e.lhs_latex, what, _plain_shape(e.node.shape), reads)
        box.layer = 1 + max((out[i].layer for i in reads), default=-1)
        index[e.node] = index[node] = len(out)
        out.append(box)
    # a value reads its nearest named values only: drop a read that another read already implies
    for b in out:
        implied = {j for i in b.reads for j in _ancestors(out, i)}
        b.reads = [i for i in b.reads if i not in implied]
    return out


def _ancestors(out: list[Box], i: int) -> set[int]:
    seen, stack = set(), list(out[i].reads)
    while stack:
        j = stack.pop()
        if j not in seen:
            seen.add(j)
            stack.extend(out[j].reads)
    return seen


def _rows(bs: list[Box]) -> list[list[int]]:
    rows: list[list[int]] = []
    for layer in sorted({b.layer for b in bs}):
        members = [i for i, b in enumerate(bs) if b.layer == layer]
        for k in range(0, len(members), MAX_PER_ROW):
            rows.append(members[k:k + MAX_PER_ROW])
    return rows


def svg(bs: list[Box], title: str) -> str:
    rows = _rows(bs)
    width = max(len(r) for r in rows) * (BOX_W + GAP_X) - GAP_X + 2 * MARGIN
    height = len(rows) * (BOX_H + GAP_Y) - GAP_Y + 2 * MARGIN
    for r, members in enumerate(rows):
        span = len(members) * (BOX_W + GAP_X) - GAP_X
        left = (width - span) / 2
        for k, i in enumerate(members):
            bs[i].x, bs[i].y = left + k * (BOX_W + GAP_X), MARGIN + r * (BOX_H + GAP_Y)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="figure" viewBox="0 0 {width:g} {height:g}" '
             f'width="{width:g}" height="{height:g}" role="img" aria-label="{html.escape(title)}">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
             'fill="#555"/></marker></defs>']
    for b in bs:
        for i in b.reads:
            a = bs[i]
            x1, y1, x2, y2 = a.x + BOX_W / 2, a.y + BOX_H, b.x + BOX_W / 2, b.y
            # an arrow that skips a layer bends out to the side it comes from, around the boxes
            side = 0 if b.layer - a.layer < 2 else (1 if x1 >= width / 2 else -1) * (BOX_W + GAP_X)
            parts.append(f'<path d="M {x1:g} {y1:g} C {x1 + side:g} {y1 + GAP_Y:g} {x2 + side:g} '
                         f'{y2 - GAP_Y:g} {x2:g} {y2:g}" fill="none" stroke="#555" stroke-width="1.2" '
                         'marker-end="url(#arrow)"/>')
    for b in bs:
        fill = "#eef4fb" if b.what == "input" else "#fff8dc" if b.what == "loss" else "#f6f6f6"
        parts.append(f'<rect x="{b.x:g}" y="{b.y:g}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" '
                     'stroke="#8a8a8a"/>')
        parts.append(f'<text x="{b.x + BOX_W / 2:g}" y="{b.y + 18:g}" text-anchor="middle" '
                     f'font-size="14" font-family="Georgia, serif">{html.escape(b.name)}: '
                     f'{html.escape(b.what)}</text>')
        parts.append(f'<text x="{b.x + BOX_W / 2:g}" y="{b.y + 36:g}" text-anchor="middle" '
                     f'font-size="12" font-family="DejaVu Sans Mono, monospace" fill="#444">'
                     f'{html.escape(b.shape)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _tex_text(s: str) -> str:
    return s.replace("\\", "").replace("_", r"\_").replace("×", r"$\times$").replace("&", r"\&")


def latex(bs: list[Box]) -> str:
    """Layers as rows of framed boxes, an arrow between rows; each box says what it reads."""
    lines = [r"\begin{center}\small"]
    for r, members in enumerate(_rows(bs)):
        if r:
            lines.append(r"\\[-0.2em]$\downarrow$\\[-0.2em]")
        cells = []
        for i in members:
            b = bs[i]
            reads = ", ".join(f"${bs[j].latex}$" for j in b.reads)
            src = rf"\\ \scriptsize from {reads}" if reads else ""
            cells.append(rf"\fbox{{\begin{{tabular}}{{c}}${b.latex}$: {_tex_text(b.what)}\\ "
                         rf"\scriptsize {_tex_text(b.shape)}{src}\end{{tabular}}}}")
        lines.append(r"\ ".join(cells))
    lines.append(r"\end{center}")
    return "\n".join(lines)


def text(bs: list[Box]) -> str:
    out = []
    for b in bs:
        reads = ", ".join(bs[j].name for j in b.reads)
        out.append(f"{b.name} ({b.what}, {b.shape})" + (f" from {reads}" if reads else ""))
    chain = all(len(b.reads) <= 1 for b in bs) and len(_rows(bs)) == len(bs)
    return " → ".join(out) if chain else "; ".join(out)


def figure(d: Derivation) -> Figure:
    bs = boxes(d)
    title = f"The network {d.model.name}: every input and equation with its shape"
    return Figure(title, svg(bs, title), latex(bs), text(bs))
