"""Batch normalisation's backward pass in the compact form textbooks print, found in the graph.

Reverse mode takes batch norm's adjoint through its pieces (the division, the square root, the
variance, the mean, ...), a dozen steps whose sum no reader recognises. Textbooks (Ioffe and
Szegedy, 2015) collect them into one line: with x̂ = (z - μ)/s, s = √(σ² + ε) and
δ_x̂ = γ ⊙ δ_y,

    δ_z = (B δ_x̂ - Σ_B δ_x̂ - x̂ ⊙ Σ_B (δ_x̂ ⊙ x̂)) / (B s).

This module finds the pattern in a derivation's training graph by its structure (a mean over
the batch axes, the mean square of the centred value around it, a division by the square root of
that plus a positive constant, times a scale), whatever the model calls its pieces; builds that
form from the model's own nodes, so that it prints with the model's names; and checks it: the
pattern alone, with its incoming adjoint as an input, is derived by the same rule table and
generated as a module, whose derived gradient is compared with the compact form at random values.
The document shows the rewrite only where that check passes.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import sympy

from symgrad.codegen.emit import generate
from symgrad.documents import check
from symgrad.symbolic.derivation import Derivation, Numbered, derive
from symgrad.symbolic.errors import SymgradWarning
from symgrad.symbolic.graph import ARG, Node, elementwise, rebuild, topological
from symgrad.symbolic.model import Model
from symgrad.symbolic.printing import Printer

#: the compact form must agree with the derived adjoint to this relative error (float64)
AGREES = 1e-12


@dataclass(frozen=True)
class Pattern:
    """One batch normalisation in a training graph: y = γ ⊙ (z - μ) / s (+ a shift)."""

    z: Node  # what is normalised
    axes: tuple[int, ...]  # the axes the statistics run over (all but the features)
    count: sympy.Expr  # how many values each statistic averages (B for a (B, n) input)
    mean: Node  # μ
    centred: Node  # z - μ
    variance: Node  # σ²
    root: Node  # s = √(σ² + ε)
    scale: Node | None  # γ (None: no scale)
    normalised: Node  # γ ⊙ (z - μ) / s, the node whose adjoint δ_y starts the compact form


def _mean_of(node: Node) -> tuple[Node, tuple[int, ...], sympy.Expr] | None:
    """(x, axes, count) when `node` is sum(x, axes) / count, the mean over those axes."""
    if node.op != "ew" or len(node.args) != 1 or node.args[0].op != "sum":
        return None
    total = node.args[0]
    x, axes = total.args[0], tuple(total.attr("axes"))
    if total.attr("keepdims"):
        return None
    count = sympy.Mul(*(x.shape[a] for a in axes))
    if sympy.simplify(node.attr("expr") - ARG[0] / count) != 0:
        return None
    return x, axes, count


def _flat(node: Node, atoms: dict[Node, sympy.Symbol]) -> sympy.Expr | None:
    """`node` as one sympy expression of `atoms`, through elementwise nodes only."""
    if node in atoms:
        return atoms[node]
    if node.op == "const":
        return sympy.sympify(node.attr("value"))
    if node.op != "ew":
        return None
    parts = [_flat(a, atoms) for a in node.args]
    if any(p is None for p in parts):
        return None
    return node.attr("expr").subs(dict(zip(ARG, parts, strict=False)), simultaneous=True)


def find(loss: Node) -> list[Pattern]:
    """Every batch normalisation in the graph of `loss` (training form), in graph order."""
    order = topological([loss])
    consumers: dict[Node, list[Node]] = {}
    for n in order:
        for a in set(n.args):
            consumers.setdefault(a, []).append(n)
    found = []
    for mean in order:
        if (m := _mean_of(mean)) is None:
            continue
        z, axes, count = m
        centred = next((c for c in consumers.get(mean, ()) if c.op == "ew" and c.args == (z, mean)
                        and c.attr("expr") == ARG[0] - ARG[1]), None)
        if centred is None:
            continue
        pattern = _complete(z, axes, count, mean, centred, consumers)
        if pattern is not None and _closed(pattern, consumers):
            found.append(pattern)
    return found


def _complete(z, axes, count, mean, centred, consumers) -> Pattern | None:
    """The variance, root and scaled quotient that follow a mean and its centred value."""
    c = sympy.Symbol("c", real=True)
    for square in consumers.get(centred, ()):
        if square.op != "ew" or _flat(square, {centred: c}) != c**2:
            continue
        for total in consumers.get(square, ()):
            for variance in consumers.get(total, ()):
                if _mean_of(variance) != (square, axes, count):
                    continue
                root = _root(variance, consumers)
                if root is None:
                    continue
                quotient = _quotient(centred, root, consumers)
                if quotient is not None:
                    normalised, scale = quotient
                    return Pattern(z, axes, count, mean, centred, variance, root, scale, normalised)
    return None


def _root(variance: Node, consumers) -> Node | None:
    """s = √(σ² + ε) with ε a positive number, reached through elementwise nodes."""
    v = sympy.Symbol("v", positive=True)
    frontier = list(consumers.get(variance, ()))
    for _ in range(3):
        nxt = []
        for n in frontier:
            e = _flat(n, {variance: v})
            if e is None:
                continue
            eps = sympy.simplify(e**2 - v)
            if isinstance(e, sympy.Pow) and e.exp == sympy.Rational(1, 2) and eps.is_number and eps > 0:
                return n
            nxt += consumers.get(n, [])
        frontier = nxt
    return None


def _quotient(centred: Node, root: Node, consumers) -> tuple[Node, Node | None] | None:
    """The first node above `centred` that is (z - μ)/s, or γ (z - μ)/s with γ a leaf that
    holds one value per feature; and that γ."""
    c, s = sympy.symbols("c s", real=True)
    frontier = list(consumers.get(centred, ()))
    for _ in range(3):
        nxt = []
        for n in frontier:
            leaves = [a for a in n.args if a.is_leaf and a.op != "const"] + \
                     [b for a in n.args if a.op == "ew" for b in a.args if b.is_leaf and b.op != "const"]
            for scale in (None, *dict.fromkeys(leaves)):
                atoms = {centred: c, root: s}
                g = sympy.Symbol("g", real=True)
                if scale is not None:
                    atoms[scale] = g
                e = _flat(n, atoms)
                want = c / s if scale is None else g * c / s
                if e is not None and sympy.simplify(e - want) == 0:
                    return n, scale
            nxt += consumers.get(n, [])
        frontier = nxt
    return None


def _closed(p: Pattern, consumers) -> bool:
    """z reaches the loss only through the pattern, and nothing outside the pattern reads its
    inner values: then δ_z is the pattern's adjoint alone, and the compact form is all of it."""
    inner: set[Node] = set()
    for n in topological([p.normalised]):
        if n is p.z or any(a in inner or a is p.z for a in n.args):
            inner.add(n)
    inner.discard(p.z)
    outside = [n for n in (*inner - {p.normalised}, p.z) if not set(consumers.get(n, ())) <= inner]
    return not outside


@dataclass(frozen=True)
class Compact:
    """The compact form's pieces, as nodes (so they print with the model's names)."""

    xhat: Node  # (z - μ) / s
    dxhat: Node  # γ ⊙ δ_y
    value: Node  # (B δ_x̂ - Σ δ_x̂ - x̂ ⊙ Σ (δ_x̂ ⊙ x̂)) / (B s)


def compact(p: Pattern, incoming: Node) -> Compact:
    """The textbook form of δ_z, given δ_y (the adjoint of the normalised value)."""
    xhat = elementwise(ARG[0] / ARG[1], [p.centred, p.root])
    dxhat = incoming if p.scale is None else elementwise(ARG[0] * ARG[1], [p.scale, incoming])
    plain = dxhat.sum(p.axes)
    along = elementwise(ARG[0] * ARG[1], [dxhat, xhat]).sum(p.axes)
    n = p.count
    value = elementwise((n * ARG[0] - ARG[1] - ARG[2] * ARG[3]) / (n * ARG[4]),
                        [dxhat, plain, xhat, along, p.root])
    return Compact(xhat, dxhat, value)


def verify(p: Pattern, dims: dict[sympy.Symbol, str], name: str) -> float:
    """The relative error between the rule table's δ_z and the compact form, both run as
    generated code at random values: the pattern alone becomes a small model with z and γ as
    parameters and δ_y as an input G, whose loss Σ G ⊙ y gives y the adjoint G."""
    aux = Model(f"{name}_batchnorm_check", "batch normalisation alone", task="regression")
    declared = {s: aux.dim(dims[s]) for s in sorted(p.z.shape, key=str) if s in dims}
    if any(declared[s] != s for s in declared):
        return math.inf
    z = aux.param("z", p.z.shape)
    swap = {p.z: z}
    if p.scale is not None:
        swap[p.scale] = aux.param("gamma", p.scale.shape, init="ones")
    G = aux.input("G", p.normalised.shape)
    moved = _substitute(p, swap)
    aux.output("compact", compact(moved, G).value)
    aux.loss((G * moved.normalised).sum())
    module = check.load(generate(derive(aux), second_order=False), aux.name)
    sizes = check.check_dims(module)
    rng = np.random.default_rng(check.SEED)
    params, batch = check.sample(module, sizes, rng)
    _, grads = module.loss_and_grad(params, batch)
    out = module.forward(params, batch)["compact"]
    return check.relative_error(np.asarray(grads["z"]), np.asarray(out))


def _substitute(p: Pattern, swap: dict[Node, Node]) -> Pattern:
    """The pattern with some leaves replaced, rebuilt through the graph's constructors."""
    new: dict[Node, Node] = {}
    for n in topological([p.normalised]):
        new[n] = swap[n] if n in swap else n if n.is_leaf else rebuild(n, [new[a] for a in n.args])
    return Pattern(new[p.z], p.axes, p.count, new[p.mean], new[p.centred], new[p.variance],
                   new[p.root], None if p.scale is None else new[p.scale], new[p.normalised])


def textbook(d: Derivation, pattern: Pattern, incoming: Numbered | None, s: str = "s",
             names: dict[Node, tuple[str, str]] | None = None) -> tuple[str, list[str]] | None:
    """The compact form (LaTeX) of the adjoint of the normalised `pattern.z`, and the sentences
    that derive it and report its check; `incoming` is the equation of the normalised value's
    adjoint; `names` the document's names (the derivation's by default). None where that
    adjoint has no equation or where the check fails (with a warning)."""
    if incoming is None:
        return None
    z = pattern.z
    model = d.model
    error = verify(pattern, {sym: name for name, sym in model.dim_symbols.items()}, model.name)
    if not error < AGREES:
        warnings.warn(SymgradWarning(
            f"model {model.name!r}: the compact form of batch normalisation's gradient differs from the "
            f"derived one (relative error {error:.1e}); the document shows the derived form only"),
            stacklevel=2)
        return None
    form = compact(pattern, incoming.node)
    names = dict(d.names if names is None else names)
    zl = Printer(names).latex(z)
    # the adjoint the form starts from, by its own name where a step passed it on unchanged
    start, cited = Printer(names).latex(incoming.node), d.owners.get(incoming.node, incoming.number)
    names.setdefault(form.xhat, (f"{z.name or 'z'}_hat", rf"\hat{{{zl}}}"))
    xl = names[form.xhat][1]
    names.setdefault(form.dxhat, (f"d_{z.name or 'z'}_hat", rf"\delta_{{{xl}}}"))
    p = Printer(names)
    dx, mu, var = names[form.dxhat][1], p.latex(pattern.mean), p.latex(pattern.variance)
    total = r"\sum_{" + ",".join(sympy.latex(z.shape[a]) for a in pattern.axes) + "}"
    n, root = sympy.latex(pattern.count), p.latex(pattern.root, expand=True)
    scale = "" if pattern.scale is None else rf"{p.latex(pattern.scale)} \odot "
    said = [
        f"In textbook form (batch normalisation, recognised in the graph): with the normalised value "
        f"${xl} = {p.latex(form.xhat, expand=True)}$, ${s} = {root}$ and ${dx} = {scale}{start}$ "
        f"(#{cited}), the sum collapses to the last form.",
        f"Why it is the same sum: the steps reach ${zl}$ along three paths, through ${zl} - {mu}$ "
        f"directly, through ${var}$ and through ${mu}$. Collected, "
        rf"$\delta_{{{var}}} = -\frac{{1}}{{2 {s}^{{3}}}} {total} "
        rf"\left({dx} \odot \left({zl} - {mu}\right)\right)$ "
        rf"and $\delta_{{{mu}}} = -\frac{{1}}{{{s}}} {total} {dx} - \frac{{2}}{{{n}}} \delta_{{{var}}} "
        rf"{total} \left({zl} - {mu}\right)$, whose second term is 0: centred values sum to 0 over "
        rf"the batch, so the variance's path adds nothing to the mean's adjoint. Then "
        rf"$\delta_{{{zl}}} = \frac{{{dx}}}{{{s}}} + \frac{{2}}{{{n}}} \delta_{{{var}}} \odot "
        rf"\left({zl} - {mu}\right) + \frac{{\delta_{{{mu}}}}}{{{n}}}$, and with ${zl} - {mu} = {s} {xl}$ "
        "these three terms are the three terms of the compact form.",
        f"Checked while this document was built: batch normalisation alone, derived by the same rule "
        f"table and run as generated code in float64 at random values (seed {check.SEED}), gives the "
        f"same adjoint of ${zl}$ as the compact form to a relative error below "
        f"$10^{{{round(math.log10(AGREES))}}}$.",
    ]
    return p.latex(form.value, expand=True), said
