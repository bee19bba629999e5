"""Which LaTeX a model may give for a function's symbol (`define_function(..., latex=...)`).

The string is written as it is into every document: inside `$...$` in Markdown and LaTeX, and
through latex2mathml into HTML. So it must stay a piece of maths: printable ASCII, balanced
braces, no `$` (leaves math mode), `%` (comments out the rest of the line), `#`, `&`, `~`,
`"`, backquotes, `<`, `>`, no `^^` (TeX's way of writing any character, `\\` included), and
only the control sequences below: letters, fonts, accents, spacing and the usual operator
names. `\\input`, `\\write18`, `\\def`, `\\catcode`, `\\end{...}` and every other command are
refused when the function is defined, naming the command.
"""
from __future__ import annotations

import re

from symgrad.symbolic.errors import ModelError, located, user_location

GREEK = ("alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi "
         "pi varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega "
         "Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega")
FONTS = ("mathrm mathit mathbf mathsf mathtt mathcal mathbb mathfrak boldsymbol operatorname "
         "text textrm textit textbf textsf")
ACCENTS = "hat tilde bar overline underline vec dot ddot widehat widetilde breve check acute grave"
SYMBOLS = ("prime ell infty partial nabla star ast dagger cdot circ times pm mp odot oplus otimes "
           "left right big Big bigl bigr Bigl Bigr vert Vert lvert rvert lVert rVert langle rangle "
           "lfloor rfloor lceil rceil quad qquad")
OPERATORS = ("exp log ln lg sin cos tan cot sec csc sinh cosh tanh coth arcsin arccos arctan "
             "max min sup inf arg det")
COMMANDS = frozenset(" ".join((GREEK, FONTS, ACCENTS, SYMBOLS, OPERATORS)).split())
ESCAPED = frozenset("_,;:! {}|")  # `\_`, the spacing commands `\,` `\;` `\:` `\!` `\ `, `\{`, `\}`, `\|`

_PLAIN = re.compile(r"[A-Za-z0-9 _^{}()\[\]',.;:!|+\-*/=\\]*\Z")
_COMMAND = re.compile(r"\\([A-Za-z]+|.?)")


def check_latex(text: object, what: str) -> str:
    """`text` if it is LaTeX maths that symgrad may write into documents, else ModelError
    (naming the user's file and line)."""
    problem = _problem(text, what)
    if problem:
        raise ModelError(located(problem, user_location()))
    return text


def _problem(text: object, what: str) -> str | None:
    if not isinstance(text, str) or not text.strip():
        return f"{what}: its LaTeX must be a non-empty string, not {text!r}"
    bad = next((c for c in text if not _PLAIN.match(c)), None)
    if bad is not None:
        return (f"{what}: its LaTeX {text!r} holds {bad!r}; a function's symbol may use letters, digits, "
                "braces, _ ^ ( ) [ ] ' , . ; : ! | + - * / = and the commands of symgrad.symbolic.texnames")
    if "^^" in text:
        return f"{what}: its LaTeX {text!r} holds '^^', which TeX reads as a character code"
    for m in _COMMAND.finditer(text):
        if m.group(1) not in COMMANDS and m.group(1) not in ESCAPED:
            return (f"{what}: its LaTeX {text!r} uses \\{m.group(1)}, which symgrad does not write into "
                    "documents (allowed: Greek letters, fonts such as \\mathrm and \\operatorname, "
                    "accents, \\text, spacing and operator names)")
    depth = 0
    for m in re.finditer(r"\\.|[{}]", text):
        depth += {"{": 1, "}": -1}.get(m.group(), 0)
        if depth < 0:
            break
    if depth != 0:
        return f"{what}: its LaTeX {text!r} has unbalanced braces"
    return None
