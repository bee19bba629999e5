"""The equation graph: immutable, hash-consed nodes with numpy-like operators.

A `Node` is one primitive operation applied to other nodes. Nodes are interned: building the
same operation on the same arguments twice returns the same object, so a subexpression that
appears in the forward pass and again in the backward pass (softmax(z), h1, ...) is one node,
computed once by the generated code. That is common-subexpression elimination for free.

Every elementwise operation (+, -, *, /, **, tanh, a user's own function, ...) is one kind of
node, `ew`, that carries a sympy expression of its arguments `x0, x1, ...`; sympy differentiates
and prints it. Everything else (matrix product, reductions, reshapes, softmax, ...) has its own
op name and its own entry in `symbolic.rules.RULES`.
"""
from __future__ import annotations

import atexit
import numbers
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import sympy
from symgrad.symbolic.errors import ModelError, ShapeError, located, user_location
from symgrad.symbolic.shapes import Shape, as_shape, broadcast, fmt_shape, normalize_axes, shapes_equal

#: The scalar variables an `ew` node's expression is written in: x0 is its first argument, ...
ARG = tuple(sympy.Symbol(f"x{i}", real=True) for i in range(64))

LEAF_OPS = ("input", "target", "param", "state", "hyper", "placeholder", "const")

_INTERNED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
# Emptied at exit, while sympy still works: a node freed during interpreter shutdown would
# otherwise hash its sympy key after mpmath is gone ("Exception ignored in ... mpmath").
atexit.register(_INTERNED.clear)


class Node:
    """One operation of the graph. Build nodes with operators and `symbolic.ops`, not directly."""

    __slots__ = ("op", "args", "attrs", "shape", "origin", "__weakref__")
    __array_priority__ = 1000  # numpy scalars on the left defer to Node's operators

    op: str
    args: tuple[Node, ...]
    attrs: tuple[tuple[str, Any], ...]
    shape: Shape
    origin: str | None

    # -- construction -------------------------------------------------------------------
    @staticmethod
    def make(op: str, args: Sequence[Node], attrs: dict[str, Any], shape: Shape) -> Node:
        key = (op, tuple(args), tuple(sorted(attrs.items())), tuple(shape))
        node = _INTERNED.get(key)
        if node is None:
            node = object.__new__(Node)
            node.op, node.args, node.attrs, node.shape = op, tuple(args), key[2], tuple(shape)
            node.origin = user_location()
            _INTERNED[key] = node
        return node

    def attr(self, key: str) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        raise KeyError(f"{self.op} node has no attribute {key!r}")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> str | None:
        """The name of a leaf (input, target, param, state, hyper, placeholder); else None."""
        return self.attr("name") if self.op in LEAF_OPS[:6] else None

    @property
    def is_leaf(self) -> bool:
        return self.op in LEAF_OPS

    @property
    def is_integer(self) -> bool:
        """An input or target of integer class labels (`model.target(..., integer=True)`)."""
        return ("integer", True) in self.attrs

    def __repr__(self) -> str:
        from symgrad.symbolic.printing import text

        return f"<{self.op} {text(self)} : {fmt_shape(self.shape)}>"

    def __bool__(self) -> bool:
        raise TypeError("a symbolic tensor has no truth value; use symgrad's functions, not `if`")

    # -- operators ----------------------------------------------------------------------
    def __add__(self, other: object) -> Node:
        return elementwise(ARG[0] + ARG[1], [self, other], "+")

    def __radd__(self, other: object) -> Node:
        return elementwise(ARG[0] + ARG[1], [other, self], "+")

    def __sub__(self, other: object) -> Node:
        return elementwise(ARG[0] - ARG[1], [self, other], "-")

    def __rsub__(self, other: object) -> Node:
        return elementwise(ARG[0] - ARG[1], [other, self], "-")

    def __mul__(self, other: object) -> Node:
        return elementwise(ARG[0] * ARG[1], [self, other], "*")

    def __rmul__(self, other: object) -> Node:
        return elementwise(ARG[0] * ARG[1], [other, self], "*")

    def __truediv__(self, other: object) -> Node:
        return elementwise(ARG[0] / ARG[1], [self, other], "/")

    def __rtruediv__(self, other: object) -> Node:
        return elementwise(ARG[0] / ARG[1], [other, self], "/")

    def __pow__(self, other: object) -> Node:
        return elementwise(ARG[0] ** ARG[1], [self, other], "**")

    def __neg__(self) -> Node:
        return elementwise(-ARG[0], [self], "-")

    def __matmul__(self, other: object) -> Node:
        return matmul(self, as_node(other))

    def __rmatmul__(self, other: object) -> Node:
        return matmul(as_node(other), self)

    @property
    def T(self) -> Node:  # noqa: N802 - numpy's name
        return self.transpose()

    @property
    def mT(self) -> Node:  # noqa: N802 - numpy's and PyTorch's name
        """The transpose of each matrix of a stack: the last two axes swapped."""
        if self.ndim < 2:
            raise ShapeError(located(f"mT needs a matrix or a stack of matrices, not shape "
                                     f"{fmt_shape(self.shape)}", user_location()))
        return self.swapaxes(-2, -1)

    def swapaxes(self, axis1: int, axis2: int) -> Node:
        """x with two axes exchanged (numpy's swapaxes)."""
        perm = list(range(self.ndim))
        try:
            i, j = (normalize_axes(a, self.ndim)[0] for a in (axis1, axis2))
        except ValueError as e:
            where = user_location()
            raise ShapeError(located(f"swapaxes of shape {fmt_shape(self.shape)}: {e}", where)) from None
        perm[i], perm[j] = perm[j], perm[i]
        return self.transpose(tuple(perm))

    def transpose(self, *perm: int) -> Node:
        perm = tuple(perm[0]) if len(perm) == 1 and not isinstance(perm[0], int) else perm
        perm = perm or tuple(reversed(range(self.ndim)))
        if perm == tuple(range(self.ndim)):
            return self
        if self.op == "transpose":  # compose the two permutations
            inner = self.attr("perm")
            return self.args[0].transpose(tuple(inner[p] for p in perm))
        return apply("transpose", [self], perm=perm)

    def reshape(self, *shape: object) -> Node:
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        try:
            shape = as_shape(shape)
        except (TypeError, ValueError) as e:
            raise ShapeError(located(f"reshape of {fmt_shape(self.shape)}: {e}", user_location())) from None
        if shapes_equal(shape, self.shape):
            return self
        if self.op == "reshape":  # a reshape of a reshape is one reshape
            return self.args[0].reshape(shape)
        return apply("reshape", [self], shape=shape)

    def sum(self, axis: int | Iterable[int] | None = None, keepdims: bool = False) -> Node:
        axes = normalize_axes(axis, self.ndim)
        if not axes:
            return self
        factor = _constant_factor(self)
        if factor is not None:  # sum(c * x) = c * sum(x): keeps constants out of reductions
            return elementwise(factor * ARG[0], [self.args[0].sum(axes, keepdims)])
        return apply("sum", [self], axes=axes, keepdims=keepdims)

    def mean(self, axis: int | Iterable[int] | None = None, keepdims: bool = False) -> Node:
        axes = normalize_axes(axis, self.ndim)
        count = sympy.Mul(*(self.shape[a] for a in axes))
        return self.sum(axes, keepdims) / const(count)


# -- constructors -----------------------------------------------------------------------
def const(value: object) -> Node:
    """A scalar constant: a finite number, or a sympy expression of dims (such as 1/B). A string
    is refused, never parsed; the model checks which symbols an expression may use."""
    from symgrad.symbolic import checks

    v = value if isinstance(value, sympy.Expr) else sympy.sympify(checks.finite_number(value, "a constant"))
    if not isinstance(v, sympy.Expr) or v.free_symbols - {s for s in v.free_symbols if s.is_integer}:
        raise ModelError(located(f"a constant must be a number or an expression of dims, not {value!r}",
                                 user_location()))
    problem = checks.bad_atoms(v, v.free_symbols)  # its numbers: finite and real (oo, zoo, nan, I are not)
    if problem or v.is_number and not (v.is_real and v.is_finite):
        raise ModelError(located(f"a constant must be a finite real number, not {v}", user_location()))
    return Node.make("const", (), {"value": v}, ())


def as_node(x: object) -> Node:
    if isinstance(x, Node):
        return x
    if isinstance(x, (int, float, sympy.Expr)) and not isinstance(x, bool):
        return const(x)
    if isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)):
        return const(float(x))  # a numpy number, a Fraction (a bool is not a number here)
    shown = repr(x) if len(repr(x)) <= 60 else repr(x)[:57] + "..."
    raise ModelError(located(f"cannot use {type(x).__name__} {shown} in an equation; use a tensor or a "
                             "number", user_location()))


#: The operations whose second operand is integer class labels (an index, not a number).
INDEXING = ("gather", "scatter")


def _only_indices(args: Sequence[Node], indexing: bool) -> None:
    """Integer labels index (gather, scatter) and nothing else: arithmetic on them is a mistake."""
    for i, a in enumerate(args):
        if a.is_integer and not (indexing and i == 1):
            raise ShapeError(located(f"{a.name} holds integer class labels, which only index "
                                     "(sparse_softmax_cross_entropy, gather); declare a one-hot target "
                                     "to compute with it", user_location()))


def apply(op: str, args: Sequence[Node], **attrs: Any) -> Node:
    """Build a non-elementwise node, checking its operands with the op's shape rule."""
    from symgrad.symbolic.rules import RULES

    rule = RULES[op]
    _only_indices(args, op in INDEXING)
    try:
        shape = rule.shape([a.shape for a in args], **attrs)
    except ShapeError as e:
        operands = ", ".join(f"{_text(a)} {fmt_shape(a.shape)}" for a in args)
        raise ShapeError(located(f"{rule.label} of {operands}: {e}", user_location())) from None
    return Node.make(op, args, attrs, shape)


def matmul(a: Node, b: Node) -> Node:
    """a @ b, shape-checked. A product with the identity, or a scalar times it (the adjoint of
    a trace), is the other operand (scaled): so d tr(A X B)/dX comes out as A^T B^T."""
    product = apply("matmul", [a, b])
    for eye, other in ((a, b), (b, a)):
        scale = _identity_scale(eye)
        if scale is not None and shapes_equal(other.shape, product.shape):
            return other if scale.op == "const" and scale.attr("value") == 1 else scale * other
    return product


def _identity_scale(x: Node) -> Node | None:
    """c where x is the identity matrix times a scalar c (1 for the identity itself), else None."""
    if x.op == "eye":
        return const(1)
    if x.op == "ew" and len(x.args) == 1 and x.args[0].op == "eye":  # c I for a constant c
        factor = _constant_factor(x)
        return None if factor is None else const(factor)
    if x.op == "ew" and x.attr("expr") == ARG[0] * ARG[1] and len(x.args) == 2:
        for e, c in (x.args, x.args[::-1]):
            if e.op == "eye" and not c.shape:
                return c
    return None


def elementwise(expr: sympy.Expr, args: Sequence[object], what: str = "elementwise op") -> Node:
    """An elementwise node computing `expr` (written in ARG[0], ARG[1], ...) with broadcasting.

    Constant arguments are folded into the expression, a repeated argument is passed once, and
    arguments the expression no longer mentions are dropped (keeping the broadcast shape), so
    `1 * x`, `x + 0` and `x * x` come out as `x`, `x` and `x**2`.
    """
    nodes = [as_node(a) for a in args]
    _only_indices(nodes, False)
    shape = broadcast(n.shape for n in nodes)
    if shape is None:
        operands = f" {what} ".join(f"{_text(n)} {fmt_shape(n.shape)}" for n in nodes)
        raise ShapeError(
            located(f"shapes do not broadcast in {operands}", user_location())
        ) from None
    subs: dict[sympy.Symbol, sympy.Expr] = {}
    kept: list[Node] = []
    for i, n in enumerate(nodes):
        if n.op == "broadcast_to" and n.args[0].op == "const":
            n = n.args[0]  # the result's shape is restored below
        if n.op == "const":
            subs[ARG[i]] = n.attr("value")
        elif n in kept:
            subs[ARG[i]] = ARG[kept.index(n)]
        else:
            subs[ARG[i]] = ARG[len(kept)]
            kept.append(n)
    expr = sympy.sympify(expr).xreplace(subs)
    used = [i for i in range(len(kept)) if ARG[i] in expr.free_symbols]
    if len(used) < len(kept):
        expr = expr.xreplace({ARG[i]: ARG[j] for j, i in enumerate(used)})
        kept = [kept[i] for i in used]
    if not kept:
        result = const(expr)
    elif expr == ARG[0]:
        result = kept[0]
    else:
        inner = broadcast(n.shape for n in kept)
        result = Node.make("ew", kept, {"expr": expr}, inner)
    if not shapes_equal(result.shape, shape):
        result = broadcast_to(result, shape)
    return result


def placeholder(name: str, shape: Shape) -> Node:
    """A stand-in for a value bound later (one time step of a sequence, a carried state)."""
    return Node.make("placeholder", (), {"name": name}, tuple(shape))


def broadcast_to(x: Node, shape: Shape) -> Node:
    if shapes_equal(x.shape, shape):
        return x
    return apply("broadcast_to", [x], shape=tuple(shape))


def _constant_factor(x: Node) -> sympy.Expr | None:
    """c when x is `c * y` for a constant c (a number or an expression of dims), else None."""
    if x.op != "ew" or len(x.args) != 1:
        return None
    c = x.attr("expr") / ARG[0]
    return None if c.free_symbols & set(ARG) or c == 1 else c


def _text(n: Node) -> str:
    from symgrad.symbolic.printing import text

    return text(n)


def topological(roots: Iterable[Node], stop: frozenset | set = frozenset()) -> list[Node]:
    """Every node the roots depend on, each after its arguments, in a deterministic order;
    the arguments of nodes in `stop` (values bound elsewhere) are not visited."""
    order: list[Node] = []
    seen: set[Node] = set()
    for root in roots:
        stack: list[tuple[Node, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if node in seen:
                continue
            seen.add(node)
            stack.append((node, True))
            if node not in stop:
                stack.extend((a, False) for a in reversed(node.args) if a not in seen)
    return order


# -- training and evaluation modes ------------------------------------------------------------
def select_mode(train: Node, evaluate: Node) -> Node:
    """A value that differs between training and evaluation (dropout, batch statistics).

    Mode nodes never reach differentiation or code generation: `specialize` replaces each by
    one of its branches first, so a model is two ordinary graphs that share everything else.
    """
    from symgrad.symbolic.errors import ShapeError

    train, evaluate = as_node(train), as_node(evaluate)
    if not shapes_equal(train.shape, evaluate.shape):
        raise ShapeError(located(f"training and evaluation forms differ in shape: "
                                 f"{fmt_shape(train.shape)} vs {fmt_shape(evaluate.shape)}",
                                 user_location()))
    return Node.make("mode", (train, evaluate), {}, train.shape)


def rebuild(node: Node, args: Sequence[Node]) -> Node:
    """`node` with new arguments, through the same constructors (so simplifications rerun)."""
    args = tuple(args)
    if args == node.args:
        return node
    if node.op == "ew":
        return elementwise(node.attr("expr"), args)
    if node.op in ("scan", "scan_vjp", "item"):  # shapes come from attributes, not a rule
        return Node.make(node.op, args, dict(node.attrs), node.shape)
    return apply(node.op, list(args), **dict(node.attrs))


def specialize(roots: Iterable[Node], training: bool) -> dict[Node, Node]:
    """Every node under `roots` -> its form in training (or evaluation) mode."""
    out: dict[Node, Node] = {}
    for node in topological(roots):
        if node.op == "mode":
            out[node] = out[node.args[0] if training else node.args[1]]
        else:
            out[node] = rebuild(node, [out[a] for a in node.args])
    return out


def has_modes(roots: Iterable[Node]) -> bool:
    return any(n.op == "mode" for n in topological(roots))

