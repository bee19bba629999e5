"""The document as plain data: what every format shows, before any format is chosen.

`build.py` fills these records from a derivation; `markdown.py`, `html.py` and `latex.py` only
lay them out. Keeping the content format-free is what makes the three documents say the same
thing. Prose is written in a tiny markup that every renderer understands:

* `$...$` is inline LaTeX maths,
* backticks mark code,
* `**...**` is strong text,
* `[text](target)` links to another document beside this one (a relative file name),
* `(#N)` cites equation N of the current part (a link where the format has links); N may be
  dotted, `(#1.2)`, for an equation shown under equation 1 (a recurrence's cell).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

#: One piece of running text: ("text", s), ("math", latex), ("code", s), ("strong", s),
#: ("ref", "N|anchor") or ("link", "text|target").
Fragment = tuple[str, str]

_MARKUP = re.compile(r"\$([^$]+)\$|`([^`]+)`|\(#(\d+(?:\.\d+)?)\)|\*\*([^*]+)\*\*"
                     r"|\[([^\]$]+)\]\(([\w.#-]+)\)")


@dataclass(frozen=True)
class Inline:
    """A run of text with inline maths, code and equation references."""

    parts: tuple[Fragment, ...]

    @property
    def plain(self) -> str:
        return "".join(f"({v.split('|')[0]})" if k == "ref" else v.split("|")[0] if k == "link" else v
                       for k, v in self.parts)


def prose(text: str, anchor_prefix: str = "") -> Inline:
    """Parse the markup described in the module docstring."""
    parts: list[Fragment] = []
    pos = 0
    for m in _MARKUP.finditer(text):
        if m.start() > pos:
            parts.append(("text", text[pos:m.start()]))
        if m.group(1) is not None:
            parts.append(("math", m.group(1)))
        elif m.group(2) is not None:
            parts.append(("code", m.group(2)))
        elif m.group(3) is not None:
            parts.append(("ref", f"{m.group(3)}|{anchor_prefix}eq-{m.group(3)}"))
        elif m.group(4) is not None:
            parts.append(("strong", m.group(4)))
        else:
            parts.append(("link", f"{m.group(5)}|{m.group(6)}"))
        pos = m.end()
    if pos < len(text):
        parts.append(("text", text[pos:]))
    return Inline(tuple(parts))


@dataclass(frozen=True)
class Equation:
    """A numbered display equation `lhs = rhs` (or an unnumbered one when number is None)."""

    number: int | str | None  # str: a dotted number such as "1.2" (a cell's equation under (1))
    anchor: str
    lhs: str  # LaTeX
    rhs: str  # LaTeX; may hold several `= ...` parts
    relation: str = "="
    shape: str = ""  # LaTeX, e.g. "B \times n_{\mathrm{out}}"; "" for a scalar
    boxed: bool = False  # a result the reader looks for (a gradient)


@dataclass(frozen=True)
class SymbolRow:
    symbol: str  # LaTeX
    role: str  # input, target, parameter, hyper-parameter, state, intermediate, output, loss
    shape: str  # LaTeX
    meaning: Inline


@dataclass(frozen=True)
class DimRow:
    symbol: str  # LaTeX
    meaning: Inline
    check_value: int | None  # the size the numeric check uses


@dataclass(frozen=True)
class Step:
    """One backward equation, with what a reader needs to follow it."""

    number: int
    rule: str  # the rule's label from the rule table, or "sum of contributions"
    compact: bool  # the adjoint passes through unchanged (a local derivative of 1)
    lead: Inline  # through which forward operation, into which argument
    details: tuple[Inline, ...]  # incoming adjoint, rule, scalar derivatives, local derivative
    equation: Equation
    #: steps with a local derivative of 1 whose adjoint this step starts from: shown inside it,
    #: each still with its own number and anchor
    folded: tuple[Step, ...] = ()


@dataclass(frozen=True)
class Gradient:
    parameter: str  # LaTeX of the parameter
    equation: Equation  # the highlighted gradient formula
    computed_in: int | None  # the backward equation computing it; None for a zero gradient
    computed_anchor: str = ""


@dataclass(frozen=True)
class CheckRow:
    name: str  # LaTeX
    shape: str  # concrete, e.g. "4 x 5" written as LaTeX
    error: str  # LaTeX, e.g. "5 \times 10^{-7}" or "< 10^{-6}"
    passed: bool
    entries: str = "all"  # which entries were compared: "all" or "32 of 4608"
    entry: str = ""  # LaTeX: the entry shown, e.g. "(2, 0)"
    analytic: str = ""  # LaTeX: the derived gradient there
    difference: str = ""  # LaTeX: the finite difference there


@dataclass(frozen=True)
class NumericCheck:
    intro: tuple[Inline, ...]
    rows: tuple[CheckRow, ...]
    passed: bool


@dataclass(frozen=True)
class CodeBlock:
    numbers: tuple[int, ...]  # the equations the block implements (empty: setup / return)
    caption: Inline
    code: str


@dataclass(frozen=True)
class Figure:
    """A drawing of the network, made three ways (see `figure.py`)."""

    title: str
    svg: str  # inline SVG for HTML
    latex: str  # boxes in base LaTeX for the PDF
    text: str  # a line of text for Markdown


@dataclass(frozen=True)
class Section:
    """A heading and its content; `kind` says which payload the renderer lays out."""

    id: str
    title: str
    level: int  # 2 for a top-level section, 3 below it
    paragraphs: tuple[Inline, ...] = ()
    bullets: tuple[Inline, ...] = ()
    kind: str = "text"  # text, dims, symbols, equations, steps, gradients, check, code
    items: tuple = ()
    after: tuple[Inline, ...] = ()  # paragraphs after the payload
    #: running text with displayed equations and code, in order (a derivation told as a textbook
    #: tells it); shown after the bullets, before the payload
    blocks: tuple[Inline | Equation | CodeBlock, ...] = ()
    figure: Figure | None = None  # shown after the paragraphs


@dataclass(frozen=True)
class Document:
    slug: str  # file name without extension
    title: str
    summary: tuple[Inline, ...]
    sections: tuple[Section, ...]
    generator: str  # "symgrad 0.1.0": written into every format's header comment
