"""A complete LaTeX document (article class, packages from TeX Live's base set only).

It compiles with pdflatex: amsmath for `\\tag` and `\\boxed`, amssymb for `\\mathbb`, longtable for
the tables, hyperref so that every `(N)` is a link to its equation.
"""
from __future__ import annotations

from symgrad.documents.content import Equation
from symgrad.documents.templating import Renderer, equation_latex

_ESCAPES = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
            "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\~{}", "<": r"\textless{}", ">": r"\textgreater{}"}


class Latex(Renderer):
    extension = "tex"
    template = "document.tex.j2"

    def text(self, s: str) -> str:
        return "".join(_ESCAPES.get(c, c) for c in s)

    def math(self, latex: str) -> str:
        return f"${latex}$"

    def code(self, s: str) -> str:
        return rf"\texttt{{{self.text(s)}}}"

    def strong(self, s: str) -> str:
        return rf"\textbf{{{self.text(s)}}}"

    def ref(self, number: str, anchor: str) -> str:
        return rf"\hyperref[{anchor}]{{({number})}}"

    def display(self, eq: Equation, boxed: bool = False) -> str:
        boxed = boxed or eq.boxed
        body = equation_latex(eq)
        if boxed:
            body = rf"\boxed{{{body}}}"
        if eq.number is None:
            return f"\\begin{{equation*}}\n{body}\n\\end{{equation*}}"
        return f"\\begin{{equation*}}\n{body} \\tag{{{eq.number}}}\\label{{{eq.anchor}}}\n\\end{{equation*}}"
