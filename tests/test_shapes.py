"""Dim equality: the cached expanded-form comparison code generation relies on agrees with
sympy's `simplify` on the dims models write (products, sums, strided quotients)."""
from __future__ import annotations

import sympy
from symgrad.symbolic.shapes import dims_equal, make_dim, shapes_equal

B, C, H, W, n = (make_dim(s) for s in ("B", "C", "H", "W", "n"))


def test_polynomial_dims_compare_by_expanded_form():
    assert dims_equal(C * H * W, W * C * H)
    assert dims_equal(2 * n, n + n)
    assert dims_equal((n + 1) * (n - 1), n**2 - 1)
    assert dims_equal(H * (W + 2) - 2 * H, H * W)
    assert not dims_equal(n, B)
    assert not dims_equal(2 * n, n + 1)
    assert not dims_equal(H * W, H + W)
    assert shapes_equal((B, C * H * W), (B, H * W * C))
    assert not shapes_equal((B, n), (B, n, 1))


def test_non_polynomial_dims_fall_back_to_simplify():
    out = sympy.floor((H + 2 - 3) / 2) + 1
    assert dims_equal(out, sympy.floor((H - 1) / 2) + 1)
    assert not dims_equal(out, H)
    for a, b in ((out, out + 0), (sympy.floor(H / 2) * 2, 2 * sympy.floor(H / 2))):
        assert dims_equal(a, b) == (sympy.simplify(a - b) == 0)
