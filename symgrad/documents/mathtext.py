"""Small LaTeX helpers shared by the document builders: shapes, numbers, derivative signs.

Everything here returns LaTeX strings that all three formats show as they are (Markdown and
LaTeX directly, HTML through MathML), so it sticks to constructs every one of them handles.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import sympy


def shape(dims: Iterable[sympy.Expr]) -> str:
    """`B \\times n_{in}`; "" for a scalar (renderers write "scalar")."""
    return r" \times ".join(sympy.latex(d) for d in dims)


def concrete_shape(sizes: Iterable[int]) -> str:
    sizes = list(sizes)
    return r" \times ".join(str(s) for s in sizes) if sizes else "1"


def partial(of: str, by: str) -> str:
    """d of / d by, with parentheses around a `by` that is more than a name."""
    return rf"\frac{{\partial {of}}}{{\partial {_group(by)}}}"


def _group(s: str) -> str:
    simple = s.replace(" ", "").replace("{", "").replace("}", "").replace("_", "").replace("\\", "")
    return s if simple.isalnum() or s.startswith(r"\left(") else rf"\left({s}\right)"


def ordinary(d: str) -> str:
    """d/dx for a function of one scalar x."""
    return rf"\frac{{\mathrm{{d}}}}{{\mathrm{{d}}x}} {d}"


def significant(x: float, digits: int = 6) -> str:
    """`-0.0123457`, `3.14159 \\cdot 10^{-7}`: a measured value to `digits` significant digits."""
    if not math.isfinite(x):
        return r"\text{not finite}"
    text = f"{x:.{digits}g}"
    mantissa, _, exponent = text.partition("e")
    return mantissa if not exponent else rf"{mantissa} \cdot 10^{{{int(exponent)}}}"


def power_of_ten(x: float, floor: float) -> str:
    """`3 \\times 10^{-8}` (one significant digit), or `< 10^{-9}` below `floor`.

    One digit, and a floor well above float64 round-off, make the printed value the same on
    every machine: what is left is the finite-difference truncation error, a smooth function of
    the fixed inputs rather than of rounding.
    """
    if not math.isfinite(x):
        return r"\text{not finite}"
    if x < floor:
        return rf"< 10^{{{round(math.log10(floor))}}}"
    mantissa, exponent = f"{x:.0e}".split("e")
    return rf"{mantissa} \times 10^{{{int(exponent)}}}"
