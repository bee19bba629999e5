"""A vector- and matrix-calculus primer, derived by symgrad: classic results, each from its definition.

Each example is an ordinary `Model` over vectors (1-D tensors; a matrix product with a vector
operand follows numpy), and its page is built by the same sections as a network's document:
symbols, equations, the backward steps, the gradients and a numeric check of the generated
code. The textbook form of each result is written here only as a second opinion: the document
prints how far the derived gradient is from it at the check's values.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from symgrad.documents import check, mathtext
from symgrad.documents.build import (
    Part,
    backward_section,
    check_row,
    check_section,
    forward_section,
    gradient_section,
    notation,
    prepare,
    symbol_sections,
)
from symgrad.documents.content import CheckRow, Document, Inline, Section, prose
from symgrad.symbolic import __version__
from symgrad.symbolic import ops as F
from symgrad.symbolic.model import Model


@dataclass(frozen=True)
class Example:
    slug: str
    title: str
    build: Callable[[], Model]
    intro: tuple[str, ...]  # prose (content markup)
    textbook: str  # the textbook form of the result, LaTeX
    textbook_value: Callable[[dict, dict], dict[str, np.ndarray]]  # params, batch -> gradients
    jacobian: bool = False  # also assemble and check the whole Jacobian
    # the textbook Hessian: (LaTeX, params, batch -> {name: (n, n) Hessian}), row-major
    hessian: tuple[str, Callable[[dict, dict], dict[str, np.ndarray]]] | None = None


# -- the examples' models ----------------------------------------------------------------------
def jacobian_model() -> Model:
    m = Model("jacobian_softmax", "the Jacobian of f(x) = softmax(W x + c)")
    n, k = m.dims("n m")
    W, c, u = m.input("W", (k, n)), m.input("c", (k,)), m.input("u", (k,))
    x = m.param("x", (n,))
    s = m.let("s", W @ x + c)
    p = m.output("p", F.softmax(s))
    m.loss(u @ p)
    return m


def quadratic_model() -> Model:
    m = Model("quadratic_form", "the quadratic form x^T A x")
    (n,) = m.dims("n")
    A, x = m.input("A", (n, n)), m.param("x", (n,))
    m.loss(x @ (A @ x))
    return m


def least_squares_model() -> Model:
    m = Model("least_squares", "the squared residual ||A x - b||^2")
    n, k = m.dims("n m")
    A, b, x = m.input("A", (k, n)), m.input("b", (k,)), m.param("x", (n,))
    r = m.let("r", A @ x - b)
    m.loss(F.sum(F.square(r)))
    return m


def tanh_unit_model() -> Model:
    m = Model("tanh_unit", "a read-out of a tanh layer, a^T tanh(W x + b)")
    n, k = m.dims("n m")
    a = m.input("a", (k,))
    W, b, x = m.param("W", (k, n)), m.param("b", (k,)), m.param("x", (n,))
    h = m.let("h", F.tanh(W @ x + b))
    m.loss(a @ h)
    return m


def trace_model() -> Model:
    m = Model("trace_product", "the trace of a product, tr(A X B)")
    n, k, j = m.dims("n k m")
    A, X, Bm = m.input("A", (j, n)), m.param("X", (n, k)), m.input("B", (k, j))
    m.loss(F.trace(A @ X @ Bm))
    return m


def logdet_model() -> Model:
    m = Model("log_determinant", "the log-determinant log |det X|")
    (n,) = m.dims("n")
    X = m.param("X", (n, n))
    m.loss(F.logdet(X))
    return m


def inverse_model() -> Model:
    m = Model("matrix_inverse", "a read-out of the inverse, sum(C * X^{-1})")
    (n,) = m.dims("n")
    C, X = m.input("C", (n, n)), m.param("X", (n, n))
    m.loss(F.sum(C * F.inv(X)))
    return m


def _logdet_hessian(X: np.ndarray) -> np.ndarray:
    """d^2 log|det X| / dX_kl dX_ij = -(X^{-1})_li (X^{-1})_jk, as an (n^2, n^2) matrix."""
    inv = np.linalg.inv(X)
    n = X.shape[0]
    return -np.einsum("li,jk->klij", inv, inv).reshape(n * n, n * n)


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max())
    return e / e.sum()


def _jacobian_textbook(params: dict, batch: dict) -> dict[str, np.ndarray]:
    p = _softmax(batch["W"] @ params["x"] + batch["c"])
    return {"J": (np.diag(p) - np.outer(p, p)) @ batch["W"]}


def _tanh_textbook(params: dict, batch: dict) -> dict[str, np.ndarray]:
    W, b, x, a = params["W"], params["b"], params["x"], batch["a"]
    delta = a * (1 - np.tanh(W @ x + b) ** 2)
    return {"W": np.outer(delta, x), "b": delta, "x": W.T @ delta}


EXAMPLES = (
    Example(
        "jacobian", "The Jacobian of a vector function", jacobian_model,
        ("A function $f: \\mathbb{R}^{n} \\to \\mathbb{R}^{m}$ has the Jacobian "
         "$J \\in \\mathbb{R}^{m \\times n}$ with $J_{ij} = \\frac{\\partial f_{i}}{\\partial x_{j}}$ "
         "(numerator layout: one row per output). Here $f(x) = \\operatorname{softmax}(W x + c)$, "
         "built from a matrix product, a broadcast sum and a softmax.",
         "Reverse mode never forms $J$. It computes one vector-Jacobian product $u^{\\top} J$ at a "
         "time: the gradient of the scalar $L = u^{\\top} f(x)$. So symgrad derives that gradient "
         "for a free vector $u$; with $u = e_{i}$, the $i$-th unit vector, it is row $i$ of $J$, and "
         "$m$ such products give the whole Jacobian. The check below assembles $J$ that way from the "
         "generated code and compares it with central differences of $f$ itself."),
        "J = \\left(\\operatorname{diag}(p) - p p^{\\top}\\right) W", _jacobian_textbook, jacobian=True),
    Example(
        "quadratic", "The gradient of a quadratic form", quadratic_model,
        ("$L = x^{\\top} A x$ for a square matrix $A$, not necessarily symmetric. $x$ appears twice, "
         "so its gradient is the sum of two contributions, one through each use.",),
        "\\frac{\\partial L}{\\partial x} = \\left(A + A^{\\top}\\right) x",
        lambda params, batch: {"x": (batch["A"] + batch["A"].T) @ params["x"]},
        hessian=("A + A^{\\top}", lambda params, batch: {"x": batch["A"] + batch["A"].T})),
    Example(
        "least-squares", "The gradient of a squared residual", least_squares_model,
        ("$L = \\lVert A x - b \\rVert^{2} = \\sum_{i} r_{i}^{2}$ with the residual $r = A x - b$: "
         "the loss of linear least squares.",),
        "\\frac{\\partial L}{\\partial x} = 2 A^{\\top} \\left(A x - b\\right)",
        lambda params, batch: {"x": 2 * batch["A"].T @ (batch["A"] @ params["x"] - batch["b"])},
        hessian=("2 A^{\\top} A", lambda params, batch: {"x": 2 * batch["A"].T @ batch["A"]})),
    Example(
        "tanh-unit", "The gradients of a tanh layer's read-out", tanh_unit_model,
        ("$L = a^{\\top} \\tanh(W x + b)$: one tanh layer read out by a fixed vector $a$, "
         "differentiated with respect to its input $x$ and its parameters $W$ and $b$. The "
         "gradient by $W$ is an outer product of two vectors.",),
        "\\frac{\\partial L}{\\partial W} = \\delta x^{\\top}, \\quad \\frac{\\partial L}{\\partial b} = "
        "\\delta, \\quad \\frac{\\partial L}{\\partial x} = W^{\\top} \\delta "
        "\\quad \\text{with} \\quad \\delta = a \\odot \\left(1 - \\tanh^{2}(W x + b)\\right)",
        _tanh_textbook),
    Example(
        "trace", "The gradient of a trace", trace_model,
        ("$L = \\operatorname{tr}(A X B)$, the sum of the diagonal of a product. The trace's rule "
         "sends the adjoint $1$ back as the identity, "
         "$\\operatorname{tr}(dY) = \\operatorname{tr}(I\\, dY)$; "
         "through the two matrix products the identity drops out, and what is left is a product of "
         "the transposed neighbours of $X$.",),
        "\\frac{\\partial L}{\\partial X} = A^{\\top} B^{\\top}",
        lambda params, batch: {"X": batch["A"].T @ batch["B"].T}),
    Example(
        "log-determinant", "The gradient of a log-determinant", logdet_model,
        ("$L = \\log\\left|\\det X\\right|$ for an invertible square matrix $X$ (computed from its "
         "LU factorisation, so neither the determinant nor its logarithm overflows). Jacobi's formula "
         "$d \\det X = \\det X \\operatorname{tr}(X^{-1} dX)$ gives "
         "$d \\log\\left|\\det X\\right| = \\operatorname{tr}(X^{-1} dX)$, whatever the sign of the "
         "determinant.",),
        "\\frac{\\partial L}{\\partial X} = X^{-\\top}",
        lambda params, batch: {"X": np.linalg.inv(params["X"]).T},
        hessian=("\\left(H v\\right)_{X} = -X^{-\\top} V^{\\top} X^{-\\top}",
                 lambda params, batch: {"X": _logdet_hessian(params["X"])})),
    Example(
        "inverse", "The gradient through a matrix inverse", inverse_model,
        ("$L = \\sum_{ij} C_{ij} (X^{-1})_{ij}$: a fixed read-out $C$ of the inverse. Differentiating "
         "$X X^{-1} = I$ gives $d X^{-1} = -X^{-1}\\, dX\\, X^{-1}$, so an adjoint $G$ of $X^{-1}$ "
         "reaches $X$ as $-X^{-\\top} G X^{-\\top}$; here $G = C$.",),
        "\\frac{\\partial L}{\\partial X} = -X^{-\\top} C X^{-\\top}",
        lambda params, batch: {"X": -np.linalg.inv(params["X"]).T @ batch["C"]
                               @ np.linalg.inv(params["X"]).T}),
)


# -- the checks only the primer makes -------------------------------------------------------------
def _values(part: Part) -> tuple[object, dict, dict]:
    module = part.module
    rng = np.random.default_rng(check.SEED)
    params, batch = check.sample(module, part.dims, rng)
    return module, params, batch


def _jacobian_row(module, params: dict, batch: dict) -> CheckRow:
    """J assembled from m vector-Jacobian products against central differences of f."""
    k = batch["u"].shape[0]
    rows = [module.loss_and_grad(params, {**batch, "u": np.eye(k)[i]})[1]["x"] for i in range(k)]
    derived = np.stack(rows)
    fd = check.differences(lambda: module.forward(params, batch)["p"], params["x"])
    error = check.relative_error(derived, fd)
    return check_row("J", check.Result("J", derived.shape, error, derived.size))


def _textbook_note(example: Example, part: Part, module, params: dict, batch: dict) -> Inline:
    want = example.textbook_value(params, batch)
    if example.jacobian:
        k = batch["u"].shape[0]
        got = {"J": np.stack([module.loss_and_grad(params, {**batch, "u": np.eye(k)[i]})[1]["x"]
                              for i in range(k)])}
    else:
        got = module.loss_and_grad(params, batch)[1]
    error = max(check.relative_error(np.asarray(got[name]), value) for name, value in want.items())
    return prose(f"In textbook form, ${example.textbook}$. At the check's values it agrees with the "
                 f"derived result to a relative difference of "
                 f"${mathtext.power_of_ten(error, check.FLOOR)}$.")


def _example_sections(example: Example) -> list[Section]:
    prefix = f"{example.slug}-"
    part = prepare(example.build(), prefix, batch=None)
    module, params, batch = _values(part)
    level = 3
    sections = [Section(example.slug, example.title, 2, tuple(prose(p, prefix) for p in example.intro))]
    sections += symbol_sections(part, level, prefix)
    sections += [forward_section(part, level, prefix), backward_section(part, level, prefix),
                 gradient_section(part, level, prefix)]
    checked = check_section(part, level, prefix)
    rows = checked.items
    if example.jacobian:
        rows = rows + (_jacobian_row(module, params, batch),)
    note = _textbook_note(example, part, module, params, batch)
    sections.append(Section(checked.id, checked.title, level, checked.paragraphs, kind="check",
                            items=rows, after=(note,)))
    if example.hessian is not None:
        from symgrad.documents.second_order import second_order_sections

        sections += second_order_sections(part, level, prefix, textbook=example.hessian)
    return sections


def primer_document() -> Document:
    sections = [notation(None, None, (prose(
        "**Jacobians.** A vector function's Jacobian is written in numerator layout, one row per "
        "output: $J_{ij} = \\frac{\\partial f_{i}}{\\partial x_{j}}$. The gradient of a scalar is then "
        "the transpose of its one-row Jacobian, which is why gradients above have the shape of what "
        "they differentiate by."),))]
    for example in EXAMPLES:
        sections += _example_sections(example)
    summary = (
        prose("Classic results of vector and matrix calculus, each derived by symgrad from its "
              "definition with the same rule table and the same reverse mode that differentiate the "
              "networks: the Jacobian of a vector function, the gradients of $x^{\\top} A x$, "
              "$\\lVert A x - b \\rVert^{2}$ and $a^{\\top} \\tanh(W x + b)$, and of "
              "$\\operatorname{tr}(A X B)$, $\\log\\left|\\det X\\right|$ and a read-out of "
              "$X^{-1}$; and the Hessians of $x^{\\top} A x$, $\\lVert A x - b \\rVert^{2}$ and "
              "$\\log\\left|\\det X\\right|$, derived as Hessian-vector products."),
        prose("Every step is shown as the tool took it, and every result is checked numerically "
              "against central differences of the generated code."),
    )
    return Document("primer", "A vector-calculus primer, derived by symgrad", summary, tuple(sections),
                    f"symgrad {__version__}")
