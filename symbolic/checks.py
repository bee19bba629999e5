"""What a value inside a model may be, checked when the model is built.

Generated source holds only what these checks let through: every sympy Symbol of every
expression, shape and attribute is a dim the model declared (a validated identifier) or one
of the graph's own argument symbols, and every number is a finite real. A string never
reaches sympy's parser: where a number is expected only numbers, dims and hypers are taken.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import sympy
from symgrad.symbolic.errors import ModelError, located, user_location


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def finite_number(value: object, what: str) -> float | int:
    """`value` as a Python int or float if it is a finite real number (never a string)."""
    if isinstance(value, sympy.Basic):
        if not (isinstance(value, sympy.Expr) and value.is_number and value.is_real):
            raise ModelError(located(f"{what} must be a finite number, not {_show(value)}", user_location()))
        value = int(value) if value.is_Integer else float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ModelError(located(f"{what} must be a finite number, not {type(value).__name__} "
                                 f"{_show(value)}", user_location()))
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise ModelError(located(f"{what} must be a finite number, not {_show(value)}", user_location()))
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def sympy_number(value: object, what: str) -> sympy.Expr:
    """A finite real number as an exact sympy number (0.01 -> 1/100, as nsimplify gives it)."""
    number = finite_number(value, what)
    return sympy.Integer(number) if isinstance(number, int) else sympy.nsimplify(number)


def int_or_dim(value: object, what: str) -> sympy.Expr:
    """An int or a sympy expression (of dims: the model checks which) for a slice bound or a size."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return sympy.Integer(int(value))
    if isinstance(value, sympy.Expr):
        return value
    raise ModelError(located(f"{what} must be an int or an expression of dims, not "
                             f"{type(value).__name__} {_show(value)}", user_location()))


def positive_int(value: object, what: str, least: int = 1) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < least:
        raise ModelError(located(f"{what} must be an int of at least {least}, not {_show(value)}",
                                 user_location()))
    return int(value)


def bad_atoms(expr: sympy.Basic, allowed: Iterable[sympy.Symbol]) -> str | None:
    """Why `expr` may not reach generated code, or None: a symbol not in `allowed`, a number
    that is not finite and real, or a name-bearing sympy object (an undefined function)."""
    allowed = set(allowed)
    for s in expr.free_symbols:
        if s not in allowed:
            return f"symbol {_show(str(s))} is not a dim of the model (declare it with model.dim)"
    for atom in expr.atoms(sympy.Number, sympy.NumberSymbol, sympy.core.numbers.ImaginaryUnit):
        if atom.is_NumberSymbol:  # pi, E: a checked float when printed
            continue
        if not (atom.is_real and atom.is_finite) or atom.has(sympy.nan):
            return f"the number {atom} is not finite"
    undefined = expr.atoms(sympy.core.function.AppliedUndef)
    if undefined:
        return f"the undefined function {_show(str(next(iter(undefined)).func))} has no code"
    return None


def values_in(attr: object) -> Iterable[sympy.Basic]:
    """The sympy objects inside a node attribute (a number, a shape tuple, ...)."""
    if isinstance(attr, sympy.Basic):
        yield attr
    elif isinstance(attr, (tuple, list)):
        for a in attr:
            yield from values_in(a)
