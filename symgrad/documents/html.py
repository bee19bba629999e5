"""One self-contained HTML page: MathML from latex2mathml, Pygments colours, inline CSS.

Nothing is fetched when the page is viewed: no scripts, fonts or style sheets from elsewhere.
Browsers lay MathML out natively; a few LaTeX constructs are rewritten first because
latex2mathml or MathML Core renders them poorly (see `mathml`).
"""
from __future__ import annotations

import html
import re

from latex2mathml.converter import convert
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from symgrad.documents import linebreak
from symgrad.documents.content import Document, Equation
from symgrad.documents.sanitize import mathml as allowed_mathml
from symgrad.documents.templating import Renderer, equation_latex
from symgrad.symbolic.errors import SymgradError

_OPERATOR_WITH_UNDERSCORE = re.compile(r"\\operatorname\{([^{}]*\\_[^{}]*)\}")
_NAMED_OPERATOR = re.compile(r"<mo>([A-Za-z]{2,})</mo>")
_OPERATOR_WITH_DIGIT = re.compile(r"\\operatorname\{([A-Za-z]+\d\w*)\}")  # im2col: one upright word


def mathml(latex: str, display: bool = False) -> str:
    """MathML for a LaTeX formula; a formula latex2mathml cannot read is an error, not a guess."""
    source = _OPERATOR_WITH_UNDERSCORE.sub(r"\\mathrm{\1}", _unstretch(latex))
    source = source.replace("\\log\\operatorname", "\\log\\,\\operatorname")
    source = _OPERATOR_WITH_DIGIT.sub(r"\\text{\1}", source)
    try:
        out = convert(source, display="block" if display else "inline")
    except Exception as e:  # latex2mathml raises its own exception types and bare ones
        raise SymgradError(f"cannot convert LaTeX to MathML: {latex!r} ({type(e).__name__})") from None
    # MathML Core has no double-struck variant: write the character itself.
    out = out.replace('<mn mathvariant="double-struck">1</mn>', "<mn>\U0001d7d9</mn>")
    # A function name (softmax, broadcast) is an identifier, not an operator with its spacing;
    # fences hug what they enclose.
    out = _NAMED_OPERATOR.sub(r"<mi>\1</mi>", out)
    out = out.replace('fence="true" form="prefix">', 'fence="true" form="prefix" lspace="0" rspace="0">') \
             .replace('fence="true" form="postfix">', 'fence="true" form="postfix" lspace="0" rspace="0">')
    return allowed_mathml(out)  # latex2mathml copies \text{...} as it is: no tag may come of it


_FENCE = re.compile(r"\\(left|right)(\\[A-Za-z]+|[()\[\]|.])")
_TALL = ("\\frac", "\\sum", "\\begin", "\\prod", "\\int", "\\boxed", "\\middle")


def _unstretch(latex: str) -> str:
    """`\\left( x \\right)` -> `( x )` where nothing tall is inside: stretchy fences get wide side
    bearings in browsers' MathML fonts even at their natural size."""
    pairs, stack = [], []
    for m in _FENCE.finditer(latex):
        if m.group(1) == "left":
            stack.append(m)
        elif stack:
            pairs.append((stack.pop(), m))
    drop = set()
    for left, right in pairs:
        inner = latex[left.end():right.start()]
        if left.group(2) != "." and right.group(2) != "." and not any(t in inner for t in _TALL):
            drop |= {left.start(), right.start()}
    out, pos = [], 0
    for m in _FENCE.finditer(latex):
        if m.start() in drop:
            out.append(latex[pos:m.start()])
            out.append(m.group(2) + (" " if m.group(2).startswith("\\") else ""))
            pos = m.end()
    out.append(latex[pos:])
    return "".join(out)


#: widths in the estimate of `linebreak.width`: a display line, and an inline formula that gets a
#: scroll box of its own (the text column is 58rem)
DISPLAY_BUDGET, WIDE_INLINE = 80, 70


def _plain_fences(latex: str) -> str:
    """Fences that a line break separated: plain parentheses, which MathML sizes to their line."""
    for old, new in ((r"\left(", "("), (r"\right)", ")"), (r"\left[", "["), (r"\right]", "]"),
                     (r"\left\{", r"\{"), (r"\right\}", r"\}"), (r"\left|", "|"), (r"\right|", "|"),
                     (r"\middle|", "|"), (r"\left.", ""), (r"\right.", "")):
        latex = latex.replace(old, new)
    return latex


class Html(Renderer):
    extension = "html"
    template = "document.html.j2"

    def __init__(self) -> None:
        super().__init__()
        self.formatter = HtmlFormatter(cssclass="code", style="default")

    def text(self, s: str) -> str:
        return html.escape(s, quote=False)

    def math(self, latex: str) -> str:
        if linebreak.width(latex) > WIDE_INLINE:  # scrolls in its own box, never widens the page
            return f'<span class="wide">{mathml(latex)}</span>'
        return mathml(latex)

    def code(self, s: str) -> str:
        return f"<code>{html.escape(s, quote=False)}</code>"

    def strong(self, s: str) -> str:
        return f"<strong>{self.text(s)}</strong>"

    def link(self, label: str, target: str) -> str:
        return f'<a href="{html.escape(target)}">{self.text(label)}</a>'

    def ref(self, number: str, anchor: str) -> str:
        return f'<a class="ref" href="#{anchor}">({number})</a>'

    def display(self, eq: Equation, boxed: bool = False) -> str:
        """One line, or several cut before top-level operators, each its own MathML block."""
        boxed = boxed or eq.boxed
        number = f'<span class="eqno">({eq.number})</span>' if eq.number is not None else ""
        cls = "eq gradient" if boxed else "eq"
        parts = linebreak.lines(equation_latex(eq), DISPLAY_BUDGET)
        if len(parts) == 1:
            body = mathml(parts[0], display=True)
        else:
            body = "".join(f'<div class="line">{mathml(_plain_fences(p), display=True)}</div>' for p in parts)
        return f'<div class="{cls}" id="{eq.anchor}"><div class="eqmath">{body}</div>{number}</div>'

    def highlight(self, source: str) -> str:
        return highlight(source, PythonLexer(), self.formatter)

    def context(self, doc: Document) -> dict:
        return {"code_css": self.formatter.get_style_defs(".code"), "highlight": self.highlight}
