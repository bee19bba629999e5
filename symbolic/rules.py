"""The rule table: for every primitive, its shape rule, its vector-Jacobian product, and its
printed forms. This file holds the only hand-written calculus in symgrad.

Each VJP is written in matrix notation with the same operators a model uses, so the backward
pass is itself a graph of primitives: shape-checked as it is built, printable in documents,
lowered by the same code generator, and differentiable again (Hessians need no new rules).

Conventions: `g` is the incoming adjoint dL/dy (the shape of the node's output `y`); a VJP
returns one contribution per argument, with the argument's shape, or None where no gradient
flows. Broadcasting is undone in one place, `unbroadcast`, instead of in every rule.
Elementwise functions bring no rule of their own: `ew` differentiates their sympy expression.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy
from symgrad.symbolic.errors import ShapeError
from symgrad.symbolic.graph import ARG, Node, apply, broadcast_to, elementwise
from symgrad.symbolic.shapes import (
    Shape,
    broadcast,
    broadcast_axes,
    dims_equal,
    fmt_shape,
    shapes_equal,
    size,
)

#: Stands for the node's own output y in an elementwise local derivative (tanh' = 1 - y^2).
Y = sympy.Symbol("y", real=True)
#: Stands for the incoming adjoint in an elementwise VJP.
G = sympy.Symbol("g", real=True)


@dataclass(frozen=True)
class Rule:
    label: str  # the rule's name in documents: "matrix product", "reduction", ...
    shape: Callable[..., Shape]  # (argument shapes, **attrs) -> output shape, or ShapeError
    vjp: Callable[[Node, Node], list[Node | None]]  # (g, node) -> one contribution per argument
    text: Callable[..., str]  # (node, printed args) -> plain text
    latex: Callable[..., str]  # (node, printed args) -> LaTeX


# -- helpers shared by several rules ------------------------------------------------------
def unbroadcast(g: Node, shape: Shape) -> Node:
    """Sum an adjoint over the axes that broadcasting stretched, so it has `shape` again."""
    if shapes_equal(g.shape, shape):
        return g
    axes = broadcast_axes(shape, g.shape)
    s = g.sum(axes) if axes else g
    return s if shapes_equal(s.shape, shape) else s.reshape(shape)


def _keepdims_shape(shape: Shape, axes: tuple[int, ...]) -> Shape:
    return tuple(sympy.Integer(1) if i in axes else d for i, d in enumerate(shape))


def _spread(g: Node, node: Node) -> Node:
    """Broadcast a reduction's adjoint back over the reduced axes of its argument."""
    x = node.args[0]
    axes, keepdims = node.attr("axes"), node.attr("keepdims")
    if not keepdims and axes and g.ndim:
        g = g.reshape(_keepdims_shape(x.shape, axes))
    return broadcast_to(g, x.shape)


def local_derivative(expr: sympy.Expr, i: int) -> sympy.Expr:
    """d expr / d x_i, written through the node's output Y where the function allows it."""
    d = _no_deltas(sympy.diff(expr, ARG[i]))
    if isinstance(expr, (sympy.Function, sympy.Pow)) and not expr.is_Atom:
        d = d.subs(expr, Y)
    return d


def _no_deltas(d: sympy.Expr) -> sympy.Expr:
    """The derivative of a kink's step (relu', abs' = sign) is a DiracDelta: 0 almost
    everywhere, which is what PyTorch and JAX give as the second derivative of relu or abs."""
    if d.has(sympy.DiracDelta):
        d = d.replace(lambda e: isinstance(e, sympy.DiracDelta), lambda e: sympy.S.Zero)
    return d


# -- elementwise --------------------------------------------------------------------------
def _ew_shape(shapes: list[Shape], expr: sympy.Expr) -> Shape:
    out = broadcast(shapes)
    if out is None:
        raise ShapeError("shapes do not broadcast: " + " and ".join(map(fmt_shape, shapes)))
    return out


def _ew_vjp(g: Node, node: Node) -> list[Node | None]:
    expr, n = node.attr("expr"), len(node.args)
    out = []
    for i, a in enumerate(node.args):
        local = local_derivative(expr, i)
        rename = {ARG[j]: ARG[j + 1] for j in range(n)} | {Y: ARG[n + 1], G: ARG[0]}
        contribution = elementwise((G * local).xreplace(rename), [g, *node.args, node])
        out.append(unbroadcast(contribution, a.shape))
    return out


# -- matrix product -----------------------------------------------------------------------
def _matmul_shape(shapes: list[Shape]) -> Shape:
    """numpy's matmul: vectors, matrices, and stacks of matrices whose leading axes broadcast."""
    a, b = shapes
    if not a or not b:
        raise ShapeError("a matrix product needs operands with at least one axis")
    inner = b[0] if len(b) == 1 else b[-2]
    if not dims_equal(a[-1], inner):
        raise ShapeError(f"inner dims differ: {a[-1]} != {inner}")
    if len(b) <= 2:  # a stack of rows (or one row) times a matrix or a vector
        return a[:-1] + b[1:]
    if len(a) == 1:  # a vector times a stack of matrices
        return b[:-2] + b[-1:]
    return _stack_axes(a[:-2], b[:-2]) + (a[-2], b[-1])


def _stack_axes(a: Shape, b: Shape) -> Shape:
    """The leading (stack) axes of two operands, broadcast together."""
    lead = broadcast([a, b])
    if lead is None:
        raise ShapeError(f"the stacks' leading axes {fmt_shape(a)} and {fmt_shape(b)} do not broadcast")
    return lead


def _flat(x: Node) -> Node:
    """Fold all leading axes into one: (..., k) -> (M, k)."""
    return x if x.ndim <= 2 else x.reshape((size(x.shape[:-1]), x.shape[-1]))


def _column(x: Node) -> Node:
    """(..., n) -> (..., n, 1): a vector (or a stack of them) as a column."""
    return x.reshape(x.shape + (sympy.Integer(1),))


def _row(x: Node) -> Node:
    """(..., n) -> (..., 1, n)."""
    return x.reshape(x.shape[:-1] + (sympy.Integer(1),) + x.shape[-1:])


def _matmul_vjp(g: Node, node: Node) -> list[Node | None]:
    a, b = node.args
    if a.ndim >= 2 and b.ndim == 2:  # (stack of rows) times a matrix: one 2-D product each way
        return [g @ b.T, _flat(a).T @ _flat(g)]
    if a.ndim >= 2 and b.ndim == 1:  # matrix (or stack) times vector
        return [_column(g) * b, _flat(a).T @ g.reshape((size(g.shape),))]
    if a.ndim == 1 and b.ndim == 2:  # row vector times matrix
        return [b @ g, _column(a) * g]
    if a.ndim == 1 and b.ndim == 1:  # dot product of two vectors
        return [g * b, g * a]
    if a.ndim == 1:  # vector times a stack of matrices: a is read as one row
        return [unbroadcast((b @ _column(g)).reshape(b.shape[:-1]), a.shape), _column(a) * _row(g)]
    # stacks of matrices: per matrix, dA = G B^T and dB = A^T G, summed over broadcast axes
    return [unbroadcast(g @ b.mT, a.shape), unbroadcast(a.mT @ g, b.shape)]


# -- structural ops -----------------------------------------------------------------------
def _transpose_shape(shapes: list[Shape], perm: tuple[int, ...]) -> Shape:
    (x,) = shapes
    if sorted(perm) != list(range(len(x))):
        raise ShapeError(f"axes {perm} are not a permutation of the {len(x)} axes")
    return tuple(x[p] for p in perm)


def _reshape_shape(shapes: list[Shape], shape: Shape) -> Shape:
    (x,) = shapes
    if not dims_equal(size(x), size(shape)):
        raise ShapeError(f"cannot reshape {fmt_shape(x)} to {fmt_shape(shape)}: sizes differ")
    return shape


def _broadcast_shape(shapes: list[Shape], shape: Shape) -> Shape:
    (x,) = shapes
    out = broadcast([x, shape])
    if out is None or not shapes_equal(out, shape):
        raise ShapeError(f"cannot broadcast {fmt_shape(x)} to {fmt_shape(shape)}")
    return shape


def _reduce_shape(shapes: list[Shape], axes: tuple[int, ...], keepdims: bool) -> Shape:
    (x,) = shapes
    return _keepdims_shape(x, axes) if keepdims else tuple(d for i, d in enumerate(x) if i not in axes)


def _axis_shape(shapes: list[Shape], axis: int) -> Shape:
    (x,) = shapes
    if not -len(x) <= axis < len(x):
        raise ShapeError(f"axis {axis} is out of range for shape {fmt_shape(x)}")
    return x


def _max_vjp(g: Node, node: Node) -> list[Node | None]:
    """The adjoint goes to the maximal entries (shared equally between ties). The share,
    adjoint / number of ties, is taken on the reduced shape (a pooling window's one value),
    so only the final product runs over the full input."""
    x = node.args[0]
    top = _spread(node, node)  # the max, broadcast back over the reduced axes
    hit = elementwise(sympy.Piecewise((1, sympy.Eq(ARG[0], ARG[1])), (0, True)), [x, top])
    count = hit.sum(node.attr("axes"), node.attr("keepdims"))
    return [_spread(g / count, node) * hit]


def _window_out(size: sympy.Expr, k: int, stride: int, padding: int, what: str) -> sympy.Expr:
    padded = size + 2 * padding
    if padded.is_Integer and int(padded) < k:
        raise ShapeError(f"the {k}x{k} {what} window is larger than the padded input ({padded})")
    return sympy.floor((padded - k) / stride) + 1


def _check_window(kh: int, kw: int, stride: int, padding: int) -> None:
    for name, v, low in (("kernel height", kh, 1), ("kernel width", kw, 1), ("stride", stride, 1),
                         ("padding", padding, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ShapeError(f"{name} must be an integer >= {low}, not {v!r}")


def _im2col_shape(shapes: list[Shape], kh: int, kw: int, stride: int, padding: int) -> Shape:
    (x,) = shapes
    if len(x) != 4:
        raise ShapeError(f"expected a (batch, height, width, channels) image, got shape {fmt_shape(x)}")
    _check_window(kh, kw, stride, padding)
    b, h, w, c = x
    oh = _window_out(h, kh, stride, padding, "kernel")
    ow = _window_out(w, kw, stride, padding, "kernel")
    return (b, oh, ow, sympy.Integer(kh * kw) * c)


def _col2im_shape(shapes: list[Shape], kh: int, kw: int, stride: int, padding: int, image: Shape) -> Shape:
    (cols,) = shapes
    h, w, c = image
    expect = _im2col_shape([(cols[0], h, w, c)], kh, kw, stride, padding)
    if not shapes_equal(tuple(cols), expect):
        image = fmt_shape((cols[0], h, w, c))
        raise ShapeError(f"patches {fmt_shape(cols)} do not come from an image {image}")
    return (cols[0], h, w, c)


def _im2col_vjp(g: Node, node: Node) -> list[Node | None]:
    """im2col is linear; its transpose, col2im, adds every patch entry back where it came from."""
    x = node.args[0]
    return [apply("col2im", [g], image=tuple(x.shape[1:]), **_window(node))]


def _col2im_vjp(g: Node, node: Node) -> list[Node | None]:
    return [apply("im2col", [g], **_window(node))]


def _window(node: Node) -> dict:
    return {k: node.attr(k) for k in ("kh", "kw", "stride", "padding")}


def _window_latex(node: Node) -> str:
    s = f"{node.attr('kh')}\\times{node.attr('kw')}"
    if node.attr("stride") != 1:
        s += f", s={node.attr('stride')}"
    if node.attr("padding"):
        s += f", p={node.attr('padding')}"
    return s


def _slice_shape(shapes: list[Shape], axis: int, start, stop) -> Shape:
    (x,) = shapes
    if not 0 <= axis < len(x):
        raise ShapeError(f"axis {axis} is out of range for shape {fmt_shape(x)}")
    width = sympy.sympify(stop) - sympy.sympify(start)
    if width.is_positive is False or (sympy.sympify(stop) - x[axis]).is_positive:
        raise ShapeError(f"slice {start}:{stop} does not fit axis {axis} of shape {fmt_shape(x)}")
    return tuple(width if i == axis else d for i, d in enumerate(x))


def _pad_shape(shapes: list[Shape], axis: int, before, after) -> Shape:
    (x,) = shapes
    return tuple(d + before + after if i == axis else d for i, d in enumerate(x))


def _concat_shape(shapes: list[Shape], axis: int) -> Shape:
    first = shapes[0]
    for s in shapes[1:]:
        same = len(s) == len(first) and all(
            dims_equal(a, b) for i, (a, b) in enumerate(zip(s, first, strict=True)) if i != axis)
        if not same:
            raise ShapeError(f"cannot join {fmt_shape(first)} and {fmt_shape(s)} along axis {axis}")
    total = sum((s[axis] for s in shapes), sympy.Integer(0))
    return tuple(total if i == axis else d for i, d in enumerate(first))


def _slice_vjp(g: Node, node: Node) -> list[Node | None]:
    x, axis = node.args[0], node.attr("axis")
    after = x.shape[axis] - node.attr("stop")
    return [apply("pad", [g], axis=axis, before=node.attr("start"), after=sympy.sympify(after))]


def _pad_vjp(g: Node, node: Node) -> list[Node | None]:
    x, axis, before = node.args[0], node.attr("axis"), node.attr("before")
    return [apply("slice", [g], axis=axis, start=before, stop=before + x.shape[axis])]


def _concat_vjp(g: Node, node: Node) -> list[Node | None]:
    axis, at, out = node.attr("axis"), sympy.Integer(0), []
    for x in node.args:
        out.append(apply("slice", [g], axis=axis, start=at, stop=at + x.shape[axis]))
        at = at + x.shape[axis]
    return out


def _range_text(node: Node, show=str) -> str:
    return ", ".join([":"] * node.attr("axis") + [f"{show(node.attr('start'))}:{show(node.attr('stop'))}"])


def _softmax_vjp(g: Node, node: Node) -> list[Node | None]:
    axis = node.attr("axis")
    return [node * (g - (g * node).sum(axis, keepdims=True))]


def _log_softmax_vjp(g: Node, node: Node) -> list[Node | None]:
    from symgrad.symbolic.ops import exp

    axis = node.attr("axis")
    return [g - exp(node) * g.sum(axis, keepdims=True)]


# -- indexing by integer class labels ------------------------------------------------------------
def _without(shape: Shape, axis: int) -> Shape:
    return shape[:axis] + shape[axis + 1:]


def _gather_shape(shapes: list[Shape], axis: int) -> Shape:
    x, labels = shapes
    if not shapes_equal(_without(x, axis), labels):
        raise ShapeError(f"the labels {fmt_shape(labels)} must have the shape {fmt_shape(_without(x, axis))} "
                         f"(the values without axis {axis})")
    return labels


def _scatter_shape(shapes: list[Shape], axis: int, size) -> Shape:
    g, labels = shapes
    if not shapes_equal(g, labels):
        raise ShapeError(f"the values {fmt_shape(g)} and the labels {fmt_shape(labels)} must have one shape")
    return g[:axis] + (size,) + g[axis:]


def _factor(latex: str) -> str:
    """A printed operand in parentheses when a sign or a sum would run into the product."""
    return rf"\left({latex}\right)" if latex.startswith("-") or " + " in latex or " - " in latex else latex


def _gather_vjp(g: Node, node: Node) -> list[Node | None]:
    """y = x[..., labels, ...]: the adjoint goes back to the picked entries, zero elsewhere."""
    x, labels = node.args
    axis = node.attr("axis")
    return [apply("scatter", [g, labels], axis=axis, size=x.shape[axis]), None]


def _scatter_vjp(g: Node, node: Node) -> list[Node | None]:
    """scatter is linear in its values; its transpose picks the same entries again."""
    return [apply("gather", [g, node.args[1]], axis=node.attr("axis")), None]


# -- linear algebra ---------------------------------------------------------------------------
# Every operation acts on the last one or two axes and maps over any leading (stack) axes, as
# numpy.linalg does. VJPs are matrix identities written with the same primitives (inv, matmul,
# transposes), so the backward graph differentiates again with no new rule.
def _square(x: Shape, what: str) -> None:
    if len(x) < 2 or not dims_equal(x[-1], x[-2]):
        raise ShapeError(f"{what} needs a square matrix (or a stack of them), not shape {fmt_shape(x)}")


def _square_shape(shapes: list[Shape], **attrs) -> Shape:
    (x,) = shapes
    _square(x, "this operation")
    return x


def _per_matrix_shape(shapes: list[Shape]) -> Shape:
    """A scalar per square matrix: trace, det, log|det|."""
    (x,) = shapes
    _square(x, "this operation")
    return x[:-2]


def _per_matrix(g: Node) -> Node:
    """A per-matrix scalar (shape (...)) made to broadcast against (..., n, n)."""
    return g if not g.ndim else g.reshape(g.shape + (sympy.Integer(1), sympy.Integer(1)))


def _eye_shape(shapes: list[Shape], n: sympy.Expr) -> Shape:
    return (n, n)


def eye(n: sympy.Expr) -> Node:
    return apply("eye", [], n=n)


def _diag_shape(shapes: list[Shape]) -> Shape:
    (x,) = shapes
    if not x:
        raise ShapeError("diag needs a vector (or a stack of them), not a scalar")
    return x + x[-1:]


def _diagonal_shape(shapes: list[Shape]) -> Shape:
    (x,) = shapes
    _square(x, "diagonal")
    return x[:-1]


def _outer_shape(shapes: list[Shape]) -> Shape:
    a, b = shapes
    if not a or not b:
        raise ShapeError("outer needs two vectors (or stacks of them)")
    return _stack_axes(a[:-1], b[:-1]) + (a[-1], b[-1])


def _outer_vjp(g: Node, node: Node) -> list[Node | None]:
    a, b = node.args
    if node.ndim == 2:  # d a = G b, d b = G^T a
        return [g @ b, a @ g]
    return [unbroadcast((g @ _column(b)).reshape(g.shape[:-1]), a.shape),
            unbroadcast((_row(a) @ g).reshape(g.shape[:-2] + g.shape[-1:]), b.shape)]


def _tril_shape(shapes: list[Shape], k: int) -> Shape:
    (x,) = shapes
    if len(x) < 2:
        raise ShapeError(f"tril needs a matrix (or a stack of them), not shape {fmt_shape(x)}")
    return x


def _trace_vjp(g: Node, node: Node) -> list[Node | None]:
    """d tr(X) = tr(I dX): the adjoint times the identity."""
    return [_per_matrix(g) * eye(node.args[0].shape[-1])]


def _det_vjp(g: Node, node: Node) -> list[Node | None]:
    """Jacobi's formula: d det X = det X tr(X^{-1} dX), so the adjoint is g det(X) X^{-T}."""
    return [_per_matrix(g * node) * inv(node.args[0]).mT]


def _logdet_vjp(g: Node, node: Node) -> list[Node | None]:
    """d log|det X| = tr(X^{-1} dX): the adjoint is g X^{-T}."""
    return [_per_matrix(g) * inv(node.args[0]).mT]


def inv(x: Node) -> Node:
    return apply("inv", [x])


def _inv_vjp(g: Node, node: Node) -> list[Node | None]:
    """d X^{-1} = -X^{-1} dX X^{-1}, so the adjoint is -X^{-T} G X^{-T}."""
    return [-(node.mT @ g @ node.mT)]


def _solve_shape(shapes: list[Shape]) -> Shape:
    a, b = shapes
    _square(a, "solve's left operand")
    if len(b) == 1:  # a vector right-hand side (numpy: only a 1-D b is a vector)
        if not dims_equal(a[-1], b[0]):
            raise ShapeError(f"the right-hand side has {b[0]} rows, the matrix {a[-1]}")
        return a[:-1]
    if not dims_equal(a[-1], b[-2]):
        raise ShapeError(f"the right-hand side has {b[-2]} rows, the matrix {a[-1]}")
    return _stack_axes(a[:-2], b[:-2]) + b[-2:]


def _solve_vjp(g: Node, node: Node) -> list[Node | None]:
    """X = A^{-1} B: dB = A^{-T} G (a second solve, with A^T), dA = -dB X^T."""
    a, b = node.args
    if b.ndim == 1:  # a vector right-hand side: as a column where A is a stack
        gb = apply("solve", [a.mT, g]) if a.ndim == 2 else apply("solve", [a.mT, _column(g)]).reshape(g.shape)
        return [-apply("outer", [gb, node]), unbroadcast(gb, b.shape)]
    gb = apply("solve", [a.mT, g])
    return [unbroadcast(-(gb @ node.mT), a.shape), unbroadcast(gb, b.shape)]


def _cholesky_vjp(g: Node, node: Node) -> list[Node | None]:
    """L = chol(S), S symmetric: dS = sym(L^{-T} Phi(L^T G) L^{-1}), where Phi keeps the lower
    triangle and halves the diagonal, and sym(M) = (M + M^T)/2 (Murray 2016, as PyTorch)."""
    n = node.shape[-1]
    p = node.mT @ g
    phi = apply("tril", [p], k=0) - sympy.Rational(1, 2) * p * eye(n)
    m = inv(node).mT @ phi @ inv(node)
    return [sympy.Rational(1, 2) * (m + m.mT)]


# -- einsum -----------------------------------------------------------------------------------
# A restricted einsum: explicit output, letters only, no letter repeated within one operand (no
# diagonals), every letter of an operand either kept or shared with another operand (no sum of
# one operand alone), two or more operands. Then the VJP for operand i is again such an einsum,
# of the adjoint with the other operands: `out,others->in_i`.
def parse_einsum(spec: str) -> tuple[list[str], str]:
    """The operands' subscripts and the output's, of a spec such as "bij,bjk->bik"."""
    inputs, arrow, output = spec.replace(" ", "").partition("->")
    if not arrow or not all(c.isascii() and c.isalpha() for c in inputs.replace(",", "") + output):
        raise ShapeError(f"einsum spec {spec!r} must read like 'ij,jk->ik': letters, commas and an "
                         "explicit '->' output (no '...')")
    return inputs.split(","), output


def _einsum_shape(shapes: list[Shape], spec: str) -> Shape:
    subs, out = parse_einsum(spec)
    if len(subs) != len(shapes) or len(shapes) < 2:
        raise ShapeError(f"einsum spec {spec!r} names {len(subs)} operands for {len(shapes)}; it takes "
                         "two or more (one operand: use transpose or sum)")
    size_of: dict[str, sympy.Expr] = {}
    for k, (sub, shape) in enumerate(zip(subs, shapes, strict=True)):
        if len(sub) != len(shape) or len(set(sub)) != len(sub):
            raise ShapeError(f"einsum operand {k + 1} has shape {fmt_shape(shape)} but subscripts {sub!r} "
                             "(one distinct letter per axis)")
        for c, d in zip(sub, shape, strict=True):
            if not dims_equal(size_of.setdefault(c, d), d):
                raise ShapeError(f"einsum letter {c!r} has size {size_of[c]} and {d}")
    for k, sub in enumerate(subs):
        alone = [c for c in sub if c not in out and sum(c in other for other in subs) == 1]
        if alone:
            raise ShapeError(f"einsum letter {alone[0]!r} of operand {k + 1} is summed in that operand "
                             "alone; sum it first (its gradient would not be an einsum)")
    if len(set(out)) != len(out) or any(c not in size_of for c in out):
        raise ShapeError(f"einsum output {out!r} must name distinct letters of the operands")
    return tuple(size_of[c] for c in out)


def _einsum_vjp(g: Node, node: Node) -> list[Node | None]:
    subs, out = parse_einsum(node.attr("spec"))
    grads = []
    for i, sub in enumerate(subs):
        others = [k for k in range(len(subs)) if k != i]
        spec = ",".join([out] + [subs[k] for k in others]) + "->" + sub
        grads.append(apply("einsum", [g, *(node.args[k] for k in others)], spec=spec))
    return grads


def _einsum_latex(node: Node, *args: str) -> str:
    """Index notation: [sum_j A_ij B_jk]_ik."""
    subs, out = parse_einsum(node.attr("spec"))
    summed = "".join(dict.fromkeys(c for sub in subs for c in sub if c not in out))
    factors = " ".join(f"{{{a}}}_{{{sub}}}" if sub else a for a, sub in zip(args, subs, strict=True))
    body = rf"\sum_{{{summed}}} {factors}" if summed else factors
    return rf"\left[{body}\right]_{{{out}}}" if out else body


# -- printed forms --------------------------------------------------------------------------
def _axes_latex(node: Node) -> str:
    """The reduced axes, named by their dims (sum over B prints as sum_B); an axis of a fixed
    size by its position, since a number alone would read as a bound (max over axis 3)."""
    shape = node.args[0].shape
    return ",".join(rf"\text{{axis }}{i}" if getattr(shape[i], "is_Integer", False) else sympy.latex(shape[i])
                    for i in node.attr("axes"))


def _sum_latex(node: Node, a: str) -> str:
    return rf"\sum_{{{_axes_latex(node)}}} {a}"


def _sum_text(node: Node, a: str) -> str:
    return f"sum({a}, axis={_axes_text(node.attr('axes'))})"


def _axes_text(axes: tuple[int, ...]) -> str:
    return str(axes[0]) if len(axes) == 1 else str(axes)


def _matmul_latex(node: Node, a: str, b: str) -> str:
    return rf"{a}^{{\top}} {b}" if node.args[0].ndim == 1 else f"{a} {b}"


def swaps_last_two(node: Node) -> bool:
    """A transpose of each matrix of a stack (x.mT): the last two axes swapped, no others."""
    perm, n = node.attr("perm"), node.ndim
    return n >= 2 and tuple(perm) == tuple(range(n - 2)) + (n - 1, n - 2)


def _transpose_text(node: Node, a: str) -> str:
    if node.ndim == 2:
        return f"{a}.T"
    return f"{a}.mT" if swaps_last_two(node) else f"{a}.transpose{node.attr('perm')}"


def _transpose_latex(node: Node, a: str) -> str:
    if swaps_last_two(node):  # a matrix, or each matrix of a stack
        return rf"{a}^{{\top}}"
    return rf"\operatorname{{transpose}}_{{{node.attr('perm')}}}\left({a}\right)"


def _shape_latex(shape: Shape) -> str:
    return r"\left(" + ", ".join(sympy.latex(d) for d in shape) + r"\right)"



def _upright(name: str) -> str:
    """A cell's name as an upright subscript: \\mathrm with its underscores escaped, which both
    pdflatex and latex2mathml read (\\text{gru_back} stops pdflatex)."""
    return r"\mathrm{" + name.replace("_", r"\_") + "}"

RULES: dict[str, Rule] = {
    # op             label                 shape rule         VJP
    "ew": Rule("elementwise function", _ew_shape, _ew_vjp,
               text=None, latex=None),  # printed through sympy, see symbolic.printing
    "matmul": Rule("matrix product", _matmul_shape, _matmul_vjp,
                   text=lambda n, a, b: f"{a} @ {b}", latex=_matmul_latex),
    "transpose": Rule("transpose", _transpose_shape,
                      lambda g, n: [g.transpose(sorted(range(g.ndim), key=n.attr("perm").__getitem__))],
                      text=_transpose_text, latex=_transpose_latex),
    "reshape": Rule("reshape", _reshape_shape,
                    lambda g, n: [g.reshape(n.args[0].shape)],
                    text=lambda n, a: f"{a}.reshape{fmt_shape(n.shape)}",
                    latex=lambda n, a: rf"\operatorname{{reshape}}\left({a}, {_shape_latex(n.shape)}\right)"),
    "broadcast_to": Rule("broadcast", _broadcast_shape,
                         lambda g, n: [unbroadcast(g, n.args[0].shape)],
                         text=lambda n, a: f"broadcast({a}, {fmt_shape(n.shape)})",
                         latex=lambda n, a: rf"\operatorname{{broadcast}}_{{{_shape_latex(n.shape)}}}"
                                            rf"\left({a}\right)"),
    "sum": Rule("reduction (sum)", _reduce_shape, lambda g, n: [_spread(g, n)],
                text=_sum_text, latex=_sum_latex),
    "softmax": Rule("softmax", _axis_shape, _softmax_vjp,
                    text=lambda n, a: f"softmax({a}, axis={n.attr('axis')})",
                    latex=lambda n, a: rf"\operatorname{{softmax}}\left({a}\right)"),
    "log_softmax": Rule("log-softmax", _axis_shape, _log_softmax_vjp,
                        text=lambda n, a: f"log_softmax({a}, axis={n.attr('axis')})",
                        latex=lambda n, a: rf"\log\operatorname{{softmax}}\left({a}\right)"),
    # the entry of each row that an integer label names (torch.gather, np.take_along_axis)
    "gather": Rule("entry picked by the labels", _gather_shape, _gather_vjp,
                   text=lambda n, a, y: f"gather({a}, {y}, axis={n.attr('axis')})",
                   latex=lambda n, a, y: rf"\left[{a}\right]_{{{y}}}"),
    # its transpose: each value placed at its label, zeros elsewhere (onehot(y) * g)
    "scatter": Rule("values placed at the labels", _scatter_shape, _scatter_vjp,
                    text=lambda n, g, y: f"scatter({g}, {y}, {n.attr('size')}, axis={n.attr('axis')})",
                    latex=lambda n, g, y: rf"\operatorname{{onehot}}\left({y}\right) \odot {_factor(g)}"),
}


def _not_differentiable(g: Node, node: Node) -> list[Node | None]:
    return [None] * len(node.args)


def _unspecialized(g: Node, node: Node) -> list[Node | None]:
    from symgrad.symbolic.errors import RuleError

    raise RuleError("a training/evaluation choice must be specialized before differentiation")


def _same_shapes(shapes: list[Shape]) -> Shape:
    return shapes[0]


def _given_shape(shapes: list[Shape], shape: Shape, **attrs) -> Shape:
    return shape


def _scan_vjp(cotangents, node: Node) -> list[Node | None]:
    from symgrad.symbolic.scan import scan_vjp

    return scan_vjp(cotangents, node)


def _no_second_order(g, node: Node) -> list[Node | None]:
    from symgrad.symbolic.errors import RuleError

    raise RuleError("derivatives of back-propagation through time (second order through a scan) "
                    "are not supported")


RULES.update({
    # a recurrence over time (symbolic.scan): several outputs, read through `item`
    "scan": Rule("recurrence over time (scan)", lambda shapes, **attrs: (), _scan_vjp,
                 text=lambda n, *a: f"scan[{n.attr('cell').name}]({', '.join(a)})",
                 latex=lambda n, *a: rf"\operatorname{{scan}}_{{{_upright(n.attr('cell').name)}}}"
                                     rf"\left({', '.join(a)}\right)"),
    "scan_vjp": Rule("back-propagation through time", lambda shapes, **attrs: (), _no_second_order,
                     text=lambda n, *a: f"bptt[{n.attr('cell').name}](...)",
                     latex=lambda n, *a: rf"\operatorname{{BPTT}}_{{{_upright(n.attr('cell').name)}}}"
                                         r"\left(\dots\right)"),
    "item": Rule("output of a scan", lambda shapes, **attrs: (), _no_second_order,
                 text=lambda n, a: f"{a}[{n.attr('index')}]",
                 latex=lambda n, a: rf"{{{a}}}_{{{n.attr('index')}}}"),
    "slice": Rule("slice", _slice_shape, _slice_vjp,
                  text=lambda n, a: f"{a}[{_range_text(n)}]",
                  latex=lambda n, a: rf"{{{a}}}_{{[{_range_text(n, sympy.latex)}]}}"),
    # the order of one axis reversed (a scan's back-propagation run as a scan of its own)
    "flip": Rule("reversal of an axis", _axis_shape, lambda g, n: [apply("flip", [g], axis=n.attr("axis"))],
                 text=lambda n, a: f"flip({a}, axis={n.attr('axis')})",
                 latex=lambda n, a: rf"\operatorname{{flip}}_{{{n.attr('axis')}}}\left({a}\right)"),
    "pad": Rule("zero padding", _pad_shape, _pad_vjp,
                text=lambda n, a: f"pad({a}, axis={n.attr('axis')}, {n.attr('before')}, {n.attr('after')})",
                latex=lambda n, a: rf"\operatorname{{pad}}_{{{sympy.latex(n.attr('before'))},"
                                   rf"{sympy.latex(n.attr('after'))}}}\left({a}\right)"),
    "concat": Rule("concatenation", _concat_shape, _concat_vjp,
                   text=lambda n, *a: f"concat([{', '.join(a)}], axis={n.attr('axis')})",
                   latex=lambda n, *a: r"\left[" + r" \;\middle|\; ".join(a) + r"\right]"),
    "max": Rule("reduction (max)", _reduce_shape, _max_vjp,
                text=lambda n, a: f"max({a}, axis={_axes_text(n.attr('axes'))})",
                latex=lambda n, a: rf"\max_{{{_axes_latex(n)}}} {a}"),
    # image patches as rows (kh, kw, channels): a convolution is im2col(X) K, a matrix product
    "im2col": Rule("image patches (im2col)", _im2col_shape, _im2col_vjp,
                   text=lambda n, a: f"im2col({a}, {n.attr('kh')}x{n.attr('kw')}, stride={n.attr('stride')}, "
                                     f"padding={n.attr('padding')})",
                   latex=lambda n, a: rf"\operatorname{{im2col}}_{{{_window_latex(n)}}}\left({a}\right)"),
    # the transpose of im2col: patch entries summed back into the image they came from
    "col2im": Rule("patches back to the image (col2im)", _col2im_shape, _col2im_vjp,
                   text=lambda n, a: f"col2im({a}, {n.attr('kh')}x{n.attr('kw')}, stride={n.attr('stride')}, "
                                     f"padding={n.attr('padding')})",
                   latex=lambda n, a: rf"\operatorname{{col2im}}_{{{_window_latex(n)}}}\left({a}\right)"),
    # a choice between a training and an evaluation form (see graph.select_mode)
    "mode": Rule("training/evaluation choice", _same_shapes, _unspecialized,
                 text=lambda n, a, b: f"{{train: {a}; eval: {b}}}",
                 latex=lambda n, a, b: rf"\begin{{cases}} {a} & \text{{training}} \\ {b} & "
                                       rf"\text{{evaluation}} \end{{cases}}"),
    # inverted-dropout mask: 0 with probability `rate`, else 1/(1 - rate); random, so no gradient
    "dropout_mask": Rule("dropout mask", _given_shape, _not_differentiable,
                         text=lambda n, rate: n.attr("name"),
                         latex=lambda n, rate: rf"M_{{{n.attr('name').removeprefix('mask')}}}"),
})


def _tril_latex(node: Node, a: str) -> str:
    sub = f"_{{{node.attr('k')}}}" if node.attr("k") else ""
    return rf"\operatorname{{tril}}{sub}\left({a}\right)"


def _function(name: str, latex: str):
    """The printed forms of a function of one matrix: name(X) and its LaTeX operator."""
    return {"text": lambda n, a: f"{name}({a})", "latex": lambda n, a: rf"{latex}\left({a}\right)"}


RULES.update({
    # linear algebra on the last two axes (stacks of matrices map over their leading axes)
    "eye": Rule("identity matrix", _eye_shape, lambda g, n: [],
                text=lambda n: f"eye({n.attr('n')})", latex=lambda n: "I"),
    "trace": Rule("trace", _per_matrix_shape, _trace_vjp, **_function("trace", r"\operatorname{tr}")),
    "diag": Rule("diagonal matrix", _diag_shape, lambda g, n: [apply("diagonal", [g])],
                 **_function("diag", r"\operatorname{diag}")),
    "diagonal": Rule("diagonal of a matrix", _diagonal_shape, lambda g, n: [apply("diag", [g])],
                     **_function("diagonal", r"\operatorname{diagonal}")),
    "outer": Rule("outer product", _outer_shape, _outer_vjp,
                  text=lambda n, a, b: f"outer({a}, {b})", latex=lambda n, a, b: rf"{a} {b}^{{\top}}"),
    "tril": Rule("lower triangle", _tril_shape, lambda g, n: [apply("tril", [g], k=n.attr("k"))],
                 text=lambda n, a: f"tril({a}, {n.attr('k')})" if n.attr("k") else f"tril({a})",
                 latex=_tril_latex),
    "det": Rule("determinant", _per_matrix_shape, _det_vjp, **_function("det", r"\det")),
    "logdet": Rule("log |determinant|", _per_matrix_shape, _logdet_vjp,
                   text=lambda n, a: f"logdet({a})",
                   latex=lambda n, a: rf"\log\left|\det\left({a}\right)\right|"),
    # X^{-1}; the printer writes inv(X)^T as X^{-T} and solve(A^T, B) as A^{-T} B
    "inv": Rule("matrix inverse", _square_shape, _inv_vjp,
                text=lambda n, a: f"inv({a})", latex=lambda n, a: f"{a}^{{-1}}"),
    # A^{-1} B by an LU solve, never forming the inverse
    "solve": Rule("linear solve", _solve_shape, _solve_vjp,
                  text=lambda n, a, b: f"solve({a}, {b})", latex=lambda n, a, b: f"{a}^{{-1}} {b}"),
    # a contraction written in index notation (see parse_einsum for what it accepts)
    "einsum": Rule("index contraction (einsum)", _einsum_shape, _einsum_vjp,
                   text=lambda n, *a: f"einsum({n.attr('spec')!r}, {', '.join(a)})", latex=_einsum_latex),
    # the Cholesky factor of the symmetric part (S + S^T)/2: lower triangular, S = L L^T
    "cholesky": Rule("Cholesky factor", _square_shape, _cholesky_vjp,
                     **_function("cholesky", r"\operatorname{chol}")),
})


def rule_for(node: Node) -> Rule:
    from symgrad.symbolic.errors import RuleError

    try:
        return RULES[node.op]
    except KeyError:
        raise RuleError(f"no differentiation rule for operation {node.op!r}") from None


__all__ = ["RULES", "Rule", "rule_for", "unbroadcast", "local_derivative", "Y", "G", "apply"]
