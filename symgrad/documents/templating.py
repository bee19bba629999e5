"""What every format's renderer shares: the jinja2 environment and the inline-markup walk.

A renderer says how to write text, inline maths, code and a reference in its format; the
template (one per format, in `templates/`) lays out the document's sections with them.
"""
from __future__ import annotations

import pathlib

import jinja2

from symgrad.documents.content import Document, Equation, Inline

TEMPLATES = pathlib.Path(__file__).with_name("templates")


class Renderer:
    """Base of the three renderers; subclasses fill in the format-specific methods."""

    extension: str
    template: str

    def __init__(self) -> None:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), trim_blocks=True, lstrip_blocks=True,
            keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False,
        )
        env.filters.update(text=self.text, math=self.math, inline=self.inline, code=self.code,
                           display=self.display)
        self.env = env

    # -- the format: subclasses override ------------------------------------------------------
    def text(self, s: str) -> str:
        raise NotImplementedError

    def math(self, latex: str) -> str:
        raise NotImplementedError

    def code(self, s: str) -> str:
        raise NotImplementedError

    def strong(self, s: str) -> str:
        raise NotImplementedError

    def ref(self, number: str, anchor: str) -> str:
        return self.text(f"({number})")

    def link(self, label: str, target: str) -> str:
        return self.text(label)

    def display(self, eq: Equation, boxed: bool = False) -> str:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def inline(self, value: Inline) -> str:
        out = []
        for kind, v in value.parts:
            if kind == "text":
                out.append(self.text(v))
            elif kind == "math":
                out.append(self.math(v))
            elif kind == "code":
                out.append(self.code(v))
            elif kind == "strong":
                out.append(self.strong(v))
            elif kind == "link":
                label, target = v.split("|", 1)
                out.append(self.link(label, target))
            else:
                number, anchor = v.split("|", 1)
                out.append(self.ref(number, anchor))
        return "".join(out)

    def context(self, doc: Document) -> dict:
        return {}

    def render(self, doc: Document, command: str) -> str:
        """The document's text; `command` is the command line that writes it again."""
        template = self.env.get_template(self.template)
        return template.render(doc=doc, command=command, **self.context(doc))


def equation_latex(eq: Equation) -> str:
    """`lhs = rhs` as one LaTeX string."""
    return f"{eq.lhs} {eq.relation} {eq.rhs}"
