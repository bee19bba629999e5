"""The notation section of one document: only the operators that document prints, each defined.

Which operators appear is read off the derivation's graphs (forward and backward), so a
convolutional network's document defines im2col and col2im (with a worked 3x3 example) and
an MLP's does not; a model with dropout says what its masks are, one with batch
normalisation what the small constant under its square root is for.
"""
from __future__ import annotations

import sympy

from symgrad.documents.content import Inline, prose
from symgrad.symbolic.derivation import Derivation
from symgrad.symbolic.graph import Node, topological
from symgrad.symbolic.printing import latex_number

IM2COL_EXAMPLE = (
    r"\operatorname{im2col}_{2\times2}\begin{pmatrix} x_{11} & x_{12} & x_{13} \\ x_{21} & x_{22} & x_{23} "
    r"\\ x_{31} & x_{32} & x_{33} \end{pmatrix} = \begin{pmatrix} x_{11} & x_{12} & x_{21} & x_{22} \\ "
    r"x_{12} & x_{13} & x_{22} & x_{23} \\ x_{21} & x_{22} & x_{31} & x_{32} \\ x_{22} & x_{23} & x_{32} "
    r"& x_{33} \end{pmatrix}")


def _nodes(d: Derivation) -> list[Node]:
    roots = [e.node for e in d.equations] + list(d.train.values())
    return topological(roots)


def _exprs(nodes: list[Node]) -> list[sympy.Expr]:
    return [n.attr("expr") for n in nodes if n.op == "ew"]


def _hadamard(nodes: list[Node]) -> bool:
    for n in nodes:
        if n.op != "ew":
            continue
        tensors = {s for s, a in zip(sorted(n.attr("expr").free_symbols, key=str), n.args, strict=False)
                   if a.shape}
        for term in sympy.preorder_traversal(n.attr("expr")):
            if isinstance(term, sympy.Mul) and len(term.free_symbols & tensors) >= 2:
                return True
    return False


def _epsilons(exprs: list[sympy.Expr]) -> list[str]:
    """Small positive constants added to a value (batch normalisation's epsilon, under a root)."""
    found = []
    for e in exprs:
        for a in [e, *e.atoms(sympy.Add)]:
            if isinstance(a, sympy.Add):
                found += [latex_number(c) for c in a.args if isinstance(c, sympy.Float) and 0 < c < 1e-3]
    return list(dict.fromkeys(found))


def operator_bullets(d: Derivation) -> tuple[Inline, ...]:
    """One bullet per operator the document prints, in a reading order."""
    nodes = _nodes(d)
    ops = {n.op for n in nodes}
    exprs = _exprs(nodes)
    out: list[str] = []
    if "matmul" in ops or "transpose" in ops:
        out.append("$U V$ is a matrix product and $U^{\\top}$ a transpose.")
    if _hadamard(nodes):
        out.append("$U \\odot V$ is the elementwise (Hadamard) product of two arrays of the same shape.")
    if "sum" in ops:
        out.append("$\\sum_{B} U$ sums $U$ over its axis of length $B$ ($\\sum_{B,n}$ over two axes; "
                   "an axis of fixed size is named by its position, $\\sum_{\\text{axis }1}$). A sum over "
                   "the last axis that is then combined with a full array keeps that axis with length 1: "
                   "$\\sum_{n} U$ of a $B \\times n$ array $U$ is a $B \\times 1$ column, repeated across "
                   "the $n$ columns where it meets a $B \\times n$ array.")
    if "broadcast_to" in ops or any(n.op == "ew" and any(a.shape and a.shape != n.shape for a in n.args)
                                    for n in nodes):
        out.append("Broadcasting: where an elementwise operation combines arrays of different shapes, "
                   "the smaller one is repeated along the axes it lacks (a bias $b$ of shape $n$ added "
                   "to every row of a $B \\times n$ array). "
                   "$\\operatorname{broadcast}_{\\left(B, n\\right)}\\left(u\\right)$ writes the repetition "
                   "out; its adjoint sums over the repeated axes.")
    if any(e.atoms(sympy.Heaviside) or e.atoms(sympy.Piecewise) for e in exprs):
        out.append("$\\mathbb{1}\\left[t > 0\\right]$ is 1 where $t > 0$ and 0 elsewhere; a derivative "
                   "written with cases takes the first value where its condition holds (a kink gets the "
                   "second).")
    if ops & {"softmax", "log_softmax"}:
        out.append("$\\operatorname{softmax}$ and $\\log\\operatorname{softmax}$ act along the last "
                   "(class) axis: $\\operatorname{softmax}(z)_{j} = e^{z_{j}} / \\sum_{k} e^{z_{k}}$ for "
                   "every row.")
    if "reshape" in ops:
        out.append("$\\operatorname{reshape}\\left(U, (\\dots)\\right)$ reads the same entries in "
                   "row-major order (the last axis fastest, as numpy does) into the given shape.")
    if "slice" in ops:
        out.append("${U}_{[:, a:b]}$ takes the entries $a, a+1, \\dots, b-1$ along one axis (counted "
                   "from 0, the end excluded, as in numpy); ${U}_{[:, 7:8]}$ of a sequence is its last "
                   "step when it has 8.")
    if "pad" in ops:
        out.append("$\\operatorname{pad}_{a,b}\\left(U\\right)$ puts $a$ zero slices before $U$ and "
                   "$b$ after it along the axis a slice was taken from: the adjoint of a slice.")
    if "concat" in ops:
        out.append("$\\left[U \\;\\middle|\\; V\\right]$ joins arrays side by side along their last "
                   "axis (one product $x [W_{i} | W_{f}]$ computes $x W_{i}$ and $x W_{f}$ at once).")
    if "max" in ops:
        out.append("$\\max_{\\text{axis }2,\\text{axis }4} U$ takes the largest entry over the listed "
                   "axes: max pooling, after a reshape that puts each window's entries on their own "
                   "axes. Its adjoint goes to the entry that won (the indicator of the maximum).")
    if ops & {"im2col", "col2im"}:
        out.append("$\\operatorname{im2col}_{k\\times k, p}\\left(X\\right)$ pads each image with $p$ zeros "
                   "on every side and writes every $k \\times k$ window (all channels) as one row, so a "
                   "convolution is one matrix product $\\operatorname{im2col}(X) K$ with the kernel "
                   "reshaped to $(k k C) \\times O$. $\\operatorname{col2im}$ is its adjoint: it adds "
                   "every row's entries back onto the pixels they were read from. For one 3 × 3 channel "
                   f"and 2 × 2 windows: ${IM2COL_EXAMPLE}$; col2im of a $4 \\times 4$ array gives back a "
                   "3 × 3 image whose centre $x_{22}$ receives the sum of four entries, one from every "
                   "window that read it.")
    if "dropout_mask" in ops:
        masks = [n for n in nodes if n.op == "dropout_mask"]
        rate = masks[0].args[0] if masks and masks[0].args else None
        p = "p"
        default = d.model.hyper_defaults.get(rate.name) if rate is not None and rate.is_leaf else None
        given = (f" (the hyper-parameter `{rate.name}`, {default:g} by default)"
                 if default is not None else "")
        names = ", ".join(f"${d.printer.latex(m)}$" for m in masks)
        out.append(f"{names}: dropout masks, drawn afresh in every training step. Each entry is "
                   f"independently 0 with probability ${p}${given} and $1/(1-{p})$ otherwise, so that "
                   "its expected value is 1 (inverted dropout): $M = B / (1-p)$ with "
                   "$B \\sim \\operatorname{Bernoulli}(1-p)$ entrywise. A mask is a constant of the step: "
                   "the adjoint is multiplied by it. In evaluation there is no mask.")
    if "mode" in ops:
        out.append("A value written with cases training / evaluation is computed one way in training "
                   "(batch statistics, dropout) and another in evaluation (running statistics, no "
                   "dropout); the gradients are those of the training form.")
    for eps in _epsilons(exprs):
        out.append(f"${eps}$ under a square root next to a variance is the usual $\\epsilon$: it keeps "
                   "the division finite when a feature does not vary over the batch.")
    if "scan" in ops:
        out.append("$\\operatorname{scan}_{\\text{cell}}\\left(\\dots\\right)_{k}$ runs a cell over the "
                   "time axis and gives its $k$-th state sequence; the cell's own equations are numbered "
                   "under the scan's equation.")
    if ops & {"inv", "solve"}:
        out.append("$A^{-1}$ is a matrix inverse and $A^{-\\top}$ the inverse of the transpose; "
                   "$A^{-1} B$ is computed as a linear solve.")
    if "logdet" in ops:
        out.append("$\\log\\left|\\det\\left(A\\right)\\right|$ is the log of the absolute determinant.")
    if "trace" in ops:
        out.append("$\\operatorname{tr}\\left(A\\right)$ is the trace, the sum of the diagonal.")
    if "tril" in ops:
        out.append("$\\operatorname{tril}\\left(A\\right)$ keeps the lower triangle of $A$ and zeroes "
                   "the rest.")
    if "einsum" in ops:
        out.append("A formula with indices sums over every index that is not on the left-hand side "
                   "(Einstein's convention, as `numpy.einsum`).")
    if any(isinstance(f, sympy.Function) for e in exprs for f in e.atoms(sympy.Function)):
        out.append("An elementwise function applies to every entry; its local derivative is the scalar "
                   "derivative sympy computed, applied entry by entry.")
    return tuple(prose(b) for b in out)


def primer_note() -> Inline:
    return prose("**New to matrix calculus?** [The vector-calculus primer](primer.html) beside this "
                 "document (`symgrad doc primer` writes it) derives the rules used here, from the "
                 "Jacobian of a vector function to the gradient through a matrix inverse, each "
                 "checked numerically.")
