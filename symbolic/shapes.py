"""Shapes made of symbolic dims, and the rules that combine them.

A shape is a tuple of sympy expressions: dim symbols such as `B` or `n_in`, integers, or products
of those (a flattened image has `C*H*W` features). Two dims are equal when sympy says their
difference is zero, so `H*W*C` and `C*H*W` agree.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable

import sympy

Shape = tuple[sympy.Expr, ...]


def make_dim(name: str) -> sympy.Symbol:
    """A dim symbol: a positive integer whose value is bound when the generated code runs."""
    return sympy.Symbol(name, integer=True, positive=True)


def as_dim(d: object) -> sympy.Expr:
    if isinstance(d, bool):
        raise TypeError(f"a dim must be an int or a dim symbol, not {d!r}")
    if isinstance(d, int):
        if d < 1:
            raise ValueError(f"a dim must be a positive integer, not {d}")
        return sympy.Integer(d)
    if isinstance(d, sympy.Expr):
        return d
    raise TypeError(f"a dim must be an int or a dim symbol, not {d!r}")


def as_shape(shape: Iterable[object]) -> Shape:
    return tuple(as_dim(d) for d in shape)


def dims_equal(a: sympy.Expr, b: sympy.Expr) -> bool:
    return a == b or _equal_forms(a, b)


@functools.lru_cache(maxsize=4096)
def _equal_forms(a: sympy.Expr, b: sympy.Expr) -> bool:
    """Whether two dims are the same expression. A polynomial in the dims (products, sums and
    integer or rational coefficients: nearly every dim) has one expanded form, so comparing
    expansions decides it; anything else (floor of a stride's quotient) asks `simplify`. Cached:
    code generation compares the same few dims thousands of times."""
    if a.is_polynomial() and b.is_polynomial():
        return sympy.expand(a) == sympy.expand(b)
    return sympy.simplify(a - b) == 0


def shapes_equal(a: Shape, b: Shape) -> bool:
    return len(a) == len(b) and all(dims_equal(x, y) for x, y in zip(a, b, strict=True))


def fmt_shape(shape: Shape) -> str:
    """`(B, n_in)`; a scalar prints as `()`."""
    inner = ", ".join(str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def size(shape: Shape) -> sympy.Expr:
    return sympy.Mul(*shape) if shape else sympy.Integer(1)


def broadcast(shapes: Iterable[Shape]) -> Shape | None:
    """numpy's broadcasting over symbolic dims (align trailing axes; a 1 stretches); None if they clash."""
    shapes = list(shapes)
    ndim = max((len(s) for s in shapes), default=0)
    out: list[sympy.Expr] = []
    for axis in range(ndim):
        dim: sympy.Expr = sympy.Integer(1)
        for s in shapes:
            k = axis - (ndim - len(s))
            if k < 0 or s[k] == 1:
                continue
            if dim == 1:
                dim = s[k]
            elif not dims_equal(dim, s[k]):
                return None
        out.append(dim)
    return tuple(out)


def broadcast_axes(small: Shape, big: Shape) -> tuple[int, ...]:
    """Axes of `big` that broadcasting `small` to `big` stretched: the ones to sum a gradient over."""
    lead = len(big) - len(small)
    return tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(small) if d == 1 and big[lead + i] != 1
    )


def normalize_axes(axis: int | Iterable[int] | None, ndim: int) -> tuple[int, ...]:
    """Axes as a sorted tuple of non-negative ints; None means all of them."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = set()
    for a in axes:
        if not isinstance(a, int) or not -ndim <= a < ndim:
            raise ValueError(f"axis {a!r} is out of range for a tensor with {ndim} axes")
        out.add(a % ndim)
    return tuple(sorted(out))
