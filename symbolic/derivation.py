"""The derivation: forward equations, backward steps and gradients, numbered and printable.

`derive(model)` is the pure function from equations to everything downstream: the code
generator lowers `Derivation.gradients`, and documents print `forward`, `backward` and
`gradients`. Both read the same object, so they cannot disagree, and the equation numbers the
generated code cites in its comments are the ones documents show.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from symgrad.symbolic.autodiff import Accumulation, Step, reverse_mode
from symgrad.symbolic.errors import ModelError, SymgradWarning
from symgrad.symbolic.graph import ARG, Node, broadcast_to, const, has_modes, specialize, topological
from symgrad.symbolic.model import Model
from symgrad.symbolic.printing import Printer, latex_name
from symgrad.symbolic.rules import Y


@dataclass(frozen=True)
class Numbered:
    """One numbered equation `lhs = rhs`, forward or backward."""

    number: int
    lhs_text: str
    lhs_latex: str
    node: Node  # the right-hand side
    kind: str  # "let", "output", "loss", "step" or "sum"
    step: Step | Accumulation | None = None


@dataclass
class Derivation:
    model: Model
    loss_name: str
    wrt: tuple[str, ...]
    forward: list[Numbered]
    backward: list[Numbered]
    gradients: dict[str, Node]  # parameter name -> dL/dparam
    names: dict[Node, tuple[str, str]]  # node -> (text name, LaTeX name)
    owners: dict[Node, int] = field(default_factory=dict)  # node -> number of its equation
    train: dict[Node, Node] = field(default_factory=dict)  # equation node -> training form
    evaluate: dict[Node, Node] = field(default_factory=dict)  # equation node -> evaluation form
    has_modes: bool = False  # does anything differ between training and evaluation?

    @property
    def loss(self) -> Node:
        """The loss as training computes it (the one the gradients are of)."""
        return self.train[self.model.loss_nodes[self.loss_name]]

    @property
    def updates(self) -> dict[str, Node]:
        """State name -> its new value after a training step (running averages)."""
        return {name: self.train[node] for name, node in self.model.updates.items()}

    def outputs(self, training: bool) -> dict[str, Node]:
        forms = self.train if training else self.evaluate
        return {name: forms[node] for name, node in self.model.outputs.items()}

    def loss_in(self, training: bool) -> Node:
        return (self.train if training else self.evaluate)[self.model.loss_nodes[self.loss_name]]

    @property
    def printer(self) -> Printer:
        return Printer(self.names)

    @property
    def equations(self) -> list[Numbered]:
        return self.forward + self.backward

    def rhs(self, eq: Numbered, kind: str = "text") -> str:
        """The right-hand side; a node another equation computes prints by its name."""
        own = self.owners.get(eq.node) == eq.number
        p = self.printer
        return p.text(eq.node, expand=own) if kind == "text" else p.latex(eq.node, expand=own)

    def text(self, eq: Numbered) -> str:
        return f"{eq.lhs_text} {'<-' if eq.kind == 'update' else '='} {self.rhs(eq, 'text')}"

    def latex(self, eq: Numbered) -> str:
        arrow = r"\leftarrow" if eq.kind == "update" else "="
        return f"{eq.lhs_latex} {arrow} {self.rhs(eq, 'latex')}"

    def local_derivative(self, step: Step, kind: str = "latex") -> str | None:
        """An elementwise step's local derivative printed with the step's own operands."""
        if step.local is None:
            return None
        symbols = dict(zip(ARG, step.node.args, strict=False)) | {Y: step.node}
        return self.printer.expr(step.local, symbols, kind)

    def equation_number(self, node: Node) -> int | None:
        return self.owners.get(node)

    # a notebook shows a derivation as its document (symgrad.documents.notebook)
    def _repr_html_(self) -> str:
        from symgrad.documents.notebook import derivation_html

        return derivation_html(self)

    def _repr_latex_(self) -> str:
        from symgrad.documents.notebook import derivation_latex

        return derivation_latex(self)

    def __str__(self) -> str:
        lines = [f"derivation of {self.model.name}: {self.loss_name} w.r.t. {', '.join(self.wrt)}",
                 "forward:"]
        lines += [f"  ({e.number}) {self.text(e)}" for e in self.forward]
        lines.append("backward:")
        for e in self.backward:
            rule = e.step.rule if isinstance(e.step, Step) else "sum of contributions"
            lines.append(f"  ({e.number}) {self.text(e)}    [{rule}]")
        lines.append("gradients:")
        lines += [f"  {p}: {self.names[g][0]}" for p, g in self.gradients.items()]
        return "\n".join(lines)


def _adjoint_names(base: str, base_latex: str, is_param: bool, loss: str) -> tuple[str, str]:
    """dL_dW1 / dL/dW1 for parameters, dL_dz1 / delta_z1 for intermediates."""
    if is_param:
        return f"d{loss}_d{base}", rf"\frac{{\partial {latex_name(loss)}}}{{\partial {base_latex}}}"
    return f"d{loss}_d{base}", rf"\delta_{{{base_latex}}}"


def _nameable(node: Node) -> bool:
    return not (node.op == "const" or node.op == "broadcast_to" and node.args[0].op == "const")


def derive(model: Model, loss: str | None = None, wrt: list[str] | None = None) -> Derivation:
    """Derive the gradient of a loss of `model` w.r.t. parameters (all of them by default)."""
    model.check()
    losses = model.loss_nodes
    loss = loss or next(iter(model.losses))
    if loss not in losses:
        raise ModelError(f"model {model.name!r} has no loss {loss!r}; it has {', '.join(losses)}")
    params = model.params
    if wrt is None:
        wrt = list(model.objectives.get(loss, params))
    wrt = list(wrt)
    for p in wrt:
        if p not in params:
            raise ModelError(f"model {model.name!r} has no parameter {p!r} to differentiate by")
    roots = [eq.node for eq in model.equations]
    train, evaluate = specialize(roots, True), specialize(roots, False)
    grads = reverse_mode(train[losses[loss]], [params[p] for p in wrt])

    names: dict[Node, tuple[str, str]] = {}
    for leaf_name, leaf in model.leaves.items():
        names[leaf] = (leaf_name, latex_name(leaf_name))
    for eq in model.equations:
        names[eq.node] = (eq.name, latex_name(eq.name))
    for eq in model.equations:  # the training form of an equation carries its name too
        if not train[eq.node].is_leaf:
            names.setdefault(train[eq.node], (eq.name, latex_name(eq.name)))
    for node in topological(roots):
        if node.op == "dropout_mask":
            names[node] = (node.attr("name"), rf"M_{{{node.attr('name').removeprefix('mask')}}}")
    gradients: dict[str, Node] = {}
    for p in wrt:
        g = grads.adjoints.get(params[p])
        if g is None:
            warnings.warn(SymgradWarning(
                f"model {model.name!r}: parameter {p!r} never reaches the loss {loss!r}; "
                "its gradient is always zero"), stacklevel=2)
            g = broadcast_to(const(0), params[p].shape)
        gradients[p] = g
        if _nameable(g):
            names.setdefault(g, _adjoint_names(p, latex_name(p), True, loss))
    for node, adj in grads.adjoints.items():
        if node in names and not node.is_leaf and adj not in names and _nameable(adj):
            names[adj] = _adjoint_names(names[node][0], names[node][1], False, loss)

    printer = Printer(names)
    forward, owners, number = [], {}, 0
    for eq in model.equations:
        number += 1
        lhs = eq.target if eq.kind == "update" else eq.name
        forward.append(Numbered(number, lhs, latex_name(lhs), eq.node, eq.kind))
        _claim(eq.node, number, owners, names)
        _claim(train[eq.node], number, owners, names)
        _claim(evaluate[eq.node], number, owners, names)

    backward = []
    for step in grads.steps:
        number += 1
        if isinstance(step, Step):
            node, target = step.contribution, step.node.args[step.arg]
            whole = grads.adjoints.get(target) is node  # the only contribution: it is the adjoint
            kind = "step"
        else:
            node, target, whole, kind = step.total, step.node, True, "sum"
        if whole and target in names:
            lhs = _adjoint_names(*names[target], target.op == "param", loss)
        else:
            t = printer.text(target)
            of = rf"\partial \left({printer.latex(target)}\right)"
            lhs = (f"d{loss}/d({t})", rf"\frac{{\partial {latex_name(loss)}}}{{{of}}}")
            if not whole:
                lhs = (f"{lhs[0]} += ...", rf"{lhs[1]} \mathrel{{+}}=")
        backward.append(Numbered(number, lhs[0], lhs[1], node, kind, step))
        _claim(node, number, owners, names)
    return Derivation(model, loss, tuple(wrt), forward, backward, gradients, names, owners,
                      train, evaluate, has_modes(roots))


def _claim(root: Node, number: int, owners: dict[Node, int], names: dict) -> None:
    """Mark the nodes an equation computes (down to other named nodes) as owned by it.

    The walk stops at nodes owned already: an earlier claim left everything below them owned,
    named or a leaf, so nothing there changes hands, and each claim costs its new nodes only."""
    for node in topological([root], stop=owners.keys()):
        if node.is_leaf or node in owners:
            continue
        if node is not root and node in names:
            continue
        owners[node] = number
