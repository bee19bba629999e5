"""Derivation documents: every model's derivation, step by step, in Markdown, HTML and LaTeX.

    from symgrad.documents import document, render
    doc = document("mlp_tanh")                 # plain data: sections, symbols, steps, check
    text = render(doc, "html")                 # one self-contained page

`symgrad doc MODEL --format md|html|tex` is the command-line form (see `cli.py`).
"""
from __future__ import annotations

from symgrad.documents.content import Document

FORMATS = ("md", "html", "tex")
PRIMER = "primer"  # the model name that means the vector-calculus primer


def renderer(fmt: str):
    """The renderer of one format (imported lazily: HTML needs latex2mathml and pygments)."""
    if fmt == "md":
        from symgrad.documents.markdown import Markdown

        return Markdown()
    if fmt == "html":
        try:
            from symgrad.documents.html import Html
        except ImportError as e:
            from symgrad.symbolic.errors import SymgradError

            raise SymgradError(f"HTML documents need {e.name}: pip install 'symgrad[docs]'") from None
        return Html()
    if fmt == "tex":
        from symgrad.documents.latex import Latex

        return Latex()
    from symgrad.symbolic.errors import SymgradError

    raise SymgradError(f"unknown document format {fmt!r}; choose one of {', '.join(FORMATS)}")


def document(spec) -> Document:
    """The document of a built-in model name, a model file's path, a Model, or "primer"."""
    if spec == PRIMER:
        from symgrad.documents.primer import primer_document

        return primer_document()
    from symgrad.documents.build import model_document
    from symgrad.models import BUILTINS
    from symgrad.pipeline import resolve

    model = resolve(spec)
    note = None
    if isinstance(spec, str) and spec in BUILTINS:
        from symgrad.documents.content import prose

        note = prose(f"The module is committed as `generated/{spec}.py`; `symgrad derive {spec}` writes "
                     "it again from the same derivation as this document.")
    return model_document(model, note)


def command_for(spec: str, fmt: str) -> str:
    return f"symgrad doc {spec} --format {fmt}"


def render(doc: Document, fmt: str, command: str | None = None) -> str:
    """The document as the text of one file, stamped on its first line (codegen/stamp.py) so
    that `symgrad doc` later overwrites it, and nothing else."""
    from symgrad.codegen.stamp import stamp
    from symgrad.documents.sanitize import check_command

    return stamp(renderer(fmt).render(doc, check_command(command or command_for(doc.slug, fmt))), fmt)


__all__ = ["FORMATS", "PRIMER", "Document", "document", "render", "renderer", "command_for"]
