"""Markdown for GitHub: `$...$` and `$$...$$` maths (MathJax there), fenced Python code."""
from __future__ import annotations

import re

from symgrad.documents.content import Document, Equation
from symgrad.documents.templating import Renderer, equation_latex

_SPECIAL = re.compile(r"([\\`*_\[\]<>|$])")  # `$` would start maths on GitHub


def slug(title: str) -> str:
    """GitHub's anchor for a heading."""
    s = re.sub(r"[^\w\- ]", "", title.lower())
    return s.replace(" ", "-")


class Markdown(Renderer):
    extension = "md"
    template = "document.md.j2"

    def text(self, s: str) -> str:
        return _SPECIAL.sub(r"\\\1", s)

    def math(self, latex: str) -> str:
        return f"${_table_safe(latex)}$"

    def code(self, s: str) -> str:
        return f"`{s}`"

    def link(self, label: str, target: str) -> str:
        return f"[{self.text(label)}]({target.replace('.html', '.md')})"

    def strong(self, s: str) -> str:
        return f"**{self.text(s)}**"

    def display(self, eq: Equation, boxed: bool = False) -> str:
        boxed = boxed or eq.boxed
        body = equation_latex(eq)
        if boxed:
            body = rf"\boxed{{{body}}}"
        if eq.number is not None:
            body += rf" \tag{{{eq.number}}}"
        return f"$$\n{body}\n$$"

    def context(self, doc: Document) -> dict:
        seen: dict[str, int] = {}
        toc = []
        for s in doc.sections:
            base = slug(s.title)
            n = seen.get(base, 0)
            seen[base] = n + 1
            toc.append((s, base if n == 0 else f"{base}-{n}"))
        return {"toc": toc}


def _table_safe(latex: str) -> str:
    """A `|` would end a table cell; `\\vert` is the same bar."""
    latex = latex.replace(r"\left|", r"\left\vert ").replace(r"\right|", r"\right\vert ")
    return latex.replace("|", r"\vert ")
