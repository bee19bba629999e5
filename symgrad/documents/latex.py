"""A complete LaTeX document (article class, packages from TeX Live's base set only).

It compiles with pdflatex: amsmath for `\\tag` and `\\boxed`, amssymb for `\\mathbb`, longtable for
the tables, hyperref so that every `(N)` is a link to its equation.
"""
from __future__ import annotations

from symgrad.documents import linebreak
from symgrad.documents.content import Equation
from symgrad.documents.templating import Renderer, equation_latex

_ESCAPES = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
            "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}", "<": r"\textless{}", ">": r"\textgreater{}"}


#: a display line's width budget, in the estimate of `linebreak.width` (A4, 11 pt, 2.2 cm margins)
DISPLAY_BUDGET = 62


class Latex(Renderer):
    extension = "tex"
    template = "document.tex.j2"

    def text(self, s: str) -> str:
        return "".join(_ESCAPES.get(c, c) for c in s)

    def math(self, latex: str) -> str:
        # fixed-size fences and breaks allowed after commas let TeX break a long formula inside
        # its parentheses; one with a part TeX cannot break (cases) is scaled to the line if wider
        body = linebreak.unfenced(latex).replace(", ", r",\allowbreak ")
        if r"\begin{" in latex:
            return rf"\symgradinline{{{body}}}"
        return f"${body}$"

    def code(self, s: str) -> str:
        return rf"\texttt{{{self.text(s)}}}"

    def strong(self, s: str) -> str:
        return rf"\textbf{{{self.text(s)}}}"

    def link(self, label: str, target: str) -> str:
        return rf"\href{{{self.text(target.replace('.html', '.pdf'))}}}{{{self.text(label)}}}"

    def ref(self, number: str, anchor: str) -> str:
        return rf"\hyperref[{anchor}]{{({number})}}"

    def display(self, eq: Equation, boxed: bool = False) -> str:
        """One line, or several cut before top-level operators (`gather*`, the tag on the last);
        a line that cannot be cut narrow enough is scaled to the text width (`\\symgradfit`)."""
        boxed = boxed or eq.boxed
        body = equation_latex(eq)
        tag = "" if eq.number is None else f" \\tag{{{eq.number}}}\\label{{{eq.anchor}}}"
        parts = linebreak.lines(body, DISPLAY_BUDGET)
        if len(parts) == 1:
            body = rf"\boxed{{{body}}}" if boxed else body
            return f"\\begin{{equation*}}\n\\symgradfit{{{body}}}{tag}\n\\end{{equation*}}"
        parts = [linebreak.unfenced(p) for p in parts]
        rows = [rf"\symgradfit{{{parts[0]}}}"] + [rf"\symgradfit{{\qquad {p}}}" for p in parts[1:]]
        return "\\begin{gather*}\n" + " \\\\\n".join(rows) + f"{tag}\n\\end{{gather*}}"
