"""The modelling language's functions: activations, reductions, softmax, losses, penalties.

Everything here builds graph nodes from primitives; nothing here knows a derivative. Losses are
compositions (mean squared error, cross-entropies through softplus and log-softmax), so their
gradients come out of the same rules as everything else.
"""
from __future__ import annotations

from collections.abc import Iterable

import sympy
from symgrad.symbolic import checks, functions, rules
from symgrad.symbolic.errors import ShapeError, located, user_location
from symgrad.symbolic.functions import define_function
from symgrad.symbolic.graph import ARG, Node, apply, as_node, elementwise
from symgrad.symbolic.shapes import as_dim, fmt_shape, shapes_equal, size

_x = ARG[0]


def _unary(fn: sympy.FunctionClass, name: str):
    def op(x: object) -> Node:
        return elementwise(fn(_x), [x], name)

    op.__name__ = name
    op.__doc__ = f"Elementwise {name}."
    return op


tanh = _unary(sympy.tanh, "tanh")
sigmoid = _unary(functions.sigmoid, "sigmoid")
relu = _unary(functions.relu, "relu")
softplus = _unary(functions.softplus, "softplus")
exp = _unary(sympy.exp, "exp")
log = _unary(sympy.log, "log")
sqrt = _unary(sympy.sqrt, "sqrt")
abs = _unary(sympy.Abs, "abs")  # noqa: A001 - the modelling language's name


def square(x: object) -> Node:
    """Elementwise x**2."""
    return elementwise(_x**2, [x], "square")


def leaky_relu(x: object, alpha: float = 0.01) -> Node:
    """x where x > 0, alpha * x elsewhere (alpha any finite number; with alpha < 0 the
    derivative is written through x, as [y > 0] no longer tells the two sides apart)."""
    alpha = checks.sympy_number(alpha, "leaky_relu: the slope alpha")
    return elementwise(functions.leaky_relu(_x, alpha), [x], "leaky_relu")


ACTIVATIONS = {
    "tanh": tanh, "sigmoid": sigmoid, "relu": relu, "softplus": softplus, "leaky_relu": leaky_relu,
}


def elementwise_function(name: str, definition: sympy.Expr, var: sympy.Symbol, latex: str | None = None):
    """A user's own elementwise function, from a sympy expression of one scalar variable.

    >>> x = sympy.Symbol("x")
    >>> swish = elementwise_function("swish", x * functions.sigmoid(x), x)

    Its derivative is derived by sympy (see `symbolic.functions`), never written by hand.
    """
    fn = define_function(name, definition, var, latex=latex)
    return _unary(fn, name)


# -- structure and reductions ---------------------------------------------------------------
def matmul(a: object, b: object) -> Node:
    return as_node(a) @ as_node(b)


def transpose(x: Node, *perm: int) -> Node:
    return x.transpose(*perm)


def swapaxes(x: Node, axis1: int, axis2: int) -> Node:
    """x with two axes exchanged; `swapaxes(K, -1, -2)` (or `K.mT`) transposes each matrix of a stack."""
    return as_node(x).swapaxes(axis1, axis2)


def reshape(x: Node, shape: Iterable[object]) -> Node:
    return x.reshape(tuple(shape))


def sum(x: Node, axis: int | Iterable[int] | None = None, keepdims: bool = False) -> Node:  # noqa: A001
    return as_node(x).sum(axis, keepdims)


def mean(x: Node, axis: int | Iterable[int] | None = None, keepdims: bool = False) -> Node:
    return as_node(x).mean(axis, keepdims)


def _axis(x: Node, axis: int, what: str) -> int:
    if not isinstance(axis, int) or isinstance(axis, bool) or not -x.ndim <= axis < x.ndim:
        raise ShapeError(located(f"{what}: axis {axis} is out of range for shape {fmt_shape(x.shape)}",
                                 user_location()))
    return axis % x.ndim


def softmax(x: Node, axis: int = -1) -> Node:
    """exp(x) / sum(exp(x)) along `axis`, computed stably."""
    return apply("softmax", [x], axis=_axis(x, axis, "softmax"))


def log_softmax(x: Node, axis: int = -1) -> Node:
    """x - log(sum(exp(x))) along `axis`, computed stably (log-sum-exp)."""
    return apply("log_softmax", [x], axis=_axis(x, axis, "log_softmax"))


# -- losses ------------------------------------------------------------------------------
def _same_shape(what: str, prediction: Node, target: Node) -> None:
    if not shapes_equal(prediction.shape, target.shape):
        raise ShapeError(located(
            f"{what}: prediction {fmt_shape(prediction.shape)} and target "
            f"{fmt_shape(target.shape)} must have the same shape", user_location()))


def mse(prediction: Node, target: Node) -> Node:
    """Mean squared error over all elements."""
    _same_shape("mse", prediction, target)
    return mean(square(prediction - target))


def binary_cross_entropy_with_logits(logits: Node, target: Node) -> Node:
    """Mean of -[y log sigma(z) + (1 - y) log(1 - sigma(z))] = mean(softplus(z) - y z), stably."""
    _same_shape("binary_cross_entropy_with_logits", logits, target)
    return mean(softplus(logits) - target * logits)


def softmax_cross_entropy(logits: Node, target: Node, axis: int = -1) -> Node:
    """-sum(y * log_softmax(z)) averaged over every axis but the class axis (log-sum-exp form)."""
    _same_shape("softmax_cross_entropy", logits, target)
    axis = _axis(logits, axis, "softmax_cross_entropy")
    count = size(logits.shape) / logits.shape[axis]
    return (target * log_softmax(logits, axis)).sum() * (-1 / count)


def gather(x: Node, labels: Node, axis: int = -1) -> Node:
    """The entry of `x` along `axis` that each integer label names: x[b, labels[b]] for a
    matrix of scores and one label per row (np.take_along_axis, torch.gather)."""
    if not isinstance(labels, Node) or not labels.is_integer:
        raise ShapeError(located(f"gather: the labels must be integer class labels "
                                 f"(model.target(..., integer=True)), not {labels!r}", user_location()))
    return apply("gather", [x, labels], axis=_axis(x, axis, "gather"))


def sparse_softmax_cross_entropy(logits: Node, labels: Node, axis: int = -1) -> Node:
    """-log_softmax(z)[label], averaged over the rows: softmax cross-entropy on integer class
    labels 0..k-1 (torch.nn.functional.cross_entropy with class indices), no one-hot target."""
    if not isinstance(labels, Node) or not labels.is_integer:
        raise ShapeError(located("sparse_softmax_cross_entropy: the labels must be integer class labels, "
                                 "declared with model.target(name, shape, integer=True); for one-hot "
                                 "targets use softmax_cross_entropy", user_location()))
    axis = _axis(logits, axis, "sparse_softmax_cross_entropy")
    picked = gather(log_softmax(logits, axis), labels, axis)
    return picked.sum() * (-1 / size(labels.shape))


def l2(x: Node) -> Node:
    """Sum of squares, ||x||^2 (add `lam * l2(W)` to a loss for weight decay)."""
    return square(x).sum()


def l1(x: Node) -> Node:
    """Sum of absolute values, ||x||_1."""
    return abs(x).sum()


# -- images (layout NHWC: batch, height, width, channels; kernels HWIO) --------------------------
def _image_error(what: str, message: str) -> ShapeError:
    return ShapeError(located(f"{what}: {message}", user_location()))


def conv2d(x: Node, kernel: Node, stride: int = 1, padding: int = 0) -> Node:
    """2-D cross-correlation (deep learning's "convolution") of a (B, H, W, C) image with a
    (kh, kw, C, O) kernel: `im2col(x) @ kernel` as (kh*kw*C, O), so (B, OH, OW, O)."""
    x, kernel = as_node(x), as_node(kernel)
    if kernel.ndim != 4:
        raise _image_error("conv2d", f"kernel must be (kh, kw, in_channels, out_channels), "
                                     f"got shape {fmt_shape(kernel.shape)}")
    kh, kw, c, o = kernel.shape
    if not (kh.is_Integer and kw.is_Integer):
        raise _image_error("conv2d", f"kernel height and width must be numbers, not {kh} and {kw}")
    if x.ndim == 4 and not shapes_equal((x.shape[3],), (c,)):
        raise _image_error("conv2d", f"image {fmt_shape(x.shape)} has {x.shape[3]} channels, "
                                     f"kernel {fmt_shape(kernel.shape)} expects {c}")
    cols = apply("im2col", [x], kh=int(kh), kw=int(kw), stride=stride, padding=padding)
    return cols @ kernel.reshape((kh * kw * c, o))


def _pool(x: Node, size: int, stride: int | None, what: str) -> tuple[Node, tuple[int, ...]]:
    """The windows of x and the axes that run over one window.

    Windows that tile the image (stride = size, dividing height and width) are a reshape,
    (B, H/size, size, W/size, size, C), reduced over axes 2 and 4: no copy of the image, and the
    adjoint lands back in the image's own layout. Other windows are im2col's patches,
    (B, OH, OW, size*size, C), reduced over axis 3."""
    x = as_node(x)
    if x.ndim != 4:
        raise _image_error(what, "expected a (batch, height, width, channels) image, "
                                 f"got {fmt_shape(x.shape)}")
    stride = size if stride is None else stride
    b, h, w, c = x.shape
    if isinstance(size, int) and size >= 1 and stride == size and all(
            d.is_Integer and int(d) % size == 0 for d in (h, w)):
        return x.reshape((b, h // size, size, w // size, size, c)), (2, 4)
    cols = apply("im2col", [x], kh=size, kw=size, stride=stride, padding=0)
    b, oh, ow, _ = cols.shape
    return cols.reshape((b, oh, ow, size * size, c)), (3,)


def max_pool2d(x: Node, size: int = 2, stride: int | None = None) -> Node:
    """Maximum over each size x size window (stride defaults to size)."""
    windows, axes = _pool(x, size, stride, "max_pool2d")
    return apply("max", [windows], axes=axes, keepdims=False)


def avg_pool2d(x: Node, size: int = 2, stride: int | None = None) -> Node:
    """Mean over each size x size window (stride defaults to size)."""
    windows, axes = _pool(x, size, stride, "avg_pool2d")
    return windows.mean(axes)


def flatten(x: Node) -> Node:
    """(B, ...) -> (B, product of the rest)."""
    x = as_node(x)
    return x.reshape((x.shape[0], size(x.shape[1:])))


def max(x: Node, axis: int | Iterable[int] | None = None, keepdims: bool = False) -> Node:  # noqa: A001
    """Maximum along axes; the gradient goes to the maximal entries."""
    from symgrad.symbolic.shapes import normalize_axes

    x = as_node(x)
    return apply("max", [x], axes=normalize_axes(axis, x.ndim), keepdims=keepdims)


# -- sequences ----------------------------------------------------------------------------------
def take(x: Node, axis: int, start, stop) -> Node:
    """x[..., start:stop, ...] along one axis (start and stop may be expressions of dims)."""
    x = as_node(x)
    axis = _axis(x, axis, "take")
    start, stop = (checks.int_or_dim(v, f"take: {k}") for k, v in (("start", start), ("stop", stop)))
    if start.is_negative or stop.is_negative:  # counting from the end is numpy's, not take's
        raise ShapeError(located(f"take: start and stop must not be negative, not {start} and {stop}",
                                 user_location()))
    return apply("slice", [x], axis=axis, start=start, stop=stop)


def concat(xs: list[Node], axis: int = -1) -> Node:
    """Join tensors along an axis."""
    xs = [as_node(x) for x in xs]
    return apply("concat", xs, axis=_axis(xs[0], axis, "concat"))


def last_step(seq: Node) -> Node:
    """The last time step of a (B, T, ...) sequence: (B, ...)."""
    seq = as_node(seq)
    T = seq.shape[1]
    step = take(seq, 1, T - 1, T)
    return step.reshape(seq.shape[:1] + seq.shape[2:])


def split(x: Node, parts: int, axis: int = -1) -> list[Node]:
    """`parts` equal slices along an axis (the gates of one LSTM product)."""
    x = as_node(x)
    parts = checks.positive_int(parts, "split: parts")
    axis = _axis(x, axis, "split")
    width = x.shape[axis] / parts
    if not (sympy.Integer(parts) * width - x.shape[axis]) == 0 or width.is_Integer is False and \
            not isinstance(width, (sympy.Symbol, sympy.Mul)):
        raise ShapeError(located(f"split: axis {axis} of {fmt_shape(x.shape)} does not divide into {parts}",
                                 user_location()))
    return [take(x, axis, k * width, (k + 1) * width) for k in range(parts)]


# -- linear algebra (on the last two axes; leading axes are a stack, as in numpy.linalg) ---------
def eye(n: object) -> Node:
    """The n x n identity matrix (n a dim or an int)."""
    try:
        n = as_dim(n)
    except (TypeError, ValueError) as e:
        raise ShapeError(located(f"eye: {e}", user_location())) from None
    return rules.eye(n)


def trace(x: Node) -> Node:
    """tr(X), the sum of the diagonal: (..., n, n) -> (...)."""
    return apply("trace", [as_node(x)])


def diag(x: Node) -> Node:
    """The diagonal matrix with x on its diagonal: (..., n) -> (..., n, n)."""
    return apply("diag", [as_node(x)])


def diagonal(x: Node) -> Node:
    """The diagonal of a square matrix: (..., n, n) -> (..., n)."""
    return apply("diagonal", [as_node(x)])


def outer(a: Node, b: Node) -> Node:
    """a b^T: (..., m) and (..., n) -> (..., m, n)."""
    return apply("outer", [as_node(a), as_node(b)])


def tril(x: Node, k: int = 0) -> Node:
    """The lower triangle of a matrix, from diagonal k on (k = -1: strictly below); zeros above."""
    if not isinstance(k, int) or isinstance(k, bool):
        raise ShapeError(located(f"tril: k must be an integer, not {k!r}", user_location()))
    return apply("tril", [as_node(x)], k=k)


def det(x: Node) -> Node:
    """The determinant: (..., n, n) -> (...)."""
    return apply("det", [as_node(x)])


def logdet(x: Node) -> Node:
    """log |det X|, through numpy's slogdet (no overflow); -inf for a singular matrix."""
    return apply("logdet", [as_node(x)])


def inv(x: Node) -> Node:
    """X^{-1}. A singular matrix is an error at run time, naming the equation."""
    return apply("inv", [as_node(x)])


def solve(a: Node, b: Node) -> Node:
    """A^{-1} B without forming the inverse. B is (..., n, k), or a vector (n,) (numpy's rule:
    only a 1-D right-hand side is a vector)."""
    return apply("solve", [as_node(a), as_node(b)])


def cholesky(s: Node) -> Node:
    """L, lower triangular with a positive diagonal, with L L^T = (S + S^T)/2 (the symmetric
    part of S, so the gradient is symmetric, as PyTorch's). S must be positive definite."""
    return apply("cholesky", [as_node(s)])


def einsum(spec: str, *xs: Node) -> Node:
    """A contraction in index notation, `einsum("bij,bjk->bik", A, B)`, restricted so that its
    gradient is again an einsum: two or more operands, an explicit output, letters only, no
    letter twice in one operand, and every letter kept or shared with another operand."""
    if not isinstance(spec, str):
        raise ShapeError(located(f"einsum: the spec must be a string, not {spec!r}", user_location()))
    return apply("einsum", [as_node(x) for x in xs], spec=spec.replace(" ", ""))
