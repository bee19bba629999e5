"""A derivation shown in a notebook: Jupyter calls `_repr_html_` / `_repr_latex_` (see
`Derivation`), which render the model's document here.

The HTML is the document's page without its `<html>`/`<body>`: its style sheet is scoped to one
`<div class="symgrad-doc">`, so that showing a derivation does not restyle the notebook around it.
The LaTeX form is the equations a notebook's MathJax can show: forward pass and gradients.
"""
from __future__ import annotations

import re

from symgrad.documents import render
from symgrad.documents.build import model_document
from symgrad.documents.content import Document

SCOPE = "symgrad-doc"
_RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")


def scoped_css(css: str) -> str:
    """Every selector of a flat style sheet prefixed with `.symgrad-doc` (body and main become it)."""
    out = []
    for m in _RULE.finditer(css):
        selectors = []
        for sel in m.group(1).split(","):
            sel = sel.strip()
            if not sel:
                continue
            if sel in ("body", "main"):
                selectors.append(f".{SCOPE}")
            else:
                selectors.append(f".{SCOPE} {sel}")
        out.append(f"{', '.join(selectors)} {{{m.group(2)}}}")
    return "\n".join(out)


def html_fragment(doc: Document) -> str:
    page = render(doc, "html", f"symgrad doc {doc.slug} --format html")
    css = re.search(r"<style>(.*?)</style>", page, flags=re.S).group(1)
    main = re.search(r"<main>(.*?)</main>", page, flags=re.S).group(1)
    return f'<div class="{SCOPE}"><style>{scoped_css(css)}</style>{main}</div>'


def derivation_html(derivation) -> str:
    return html_fragment(model_document(derivation.model))


def derivation_latex(derivation) -> str:
    """`$$ lhs = rhs \\tag{n} $$` for every equation, forward and backward, numbered as in the
    document and in the generated code's comments."""
    return "\n".join(f"$$ {derivation.latex(e)} \\tag{{{e.number}}} $$" for e in derivation.equations)
