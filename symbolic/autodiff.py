"""Reverse mode over the equation graph: the only place the chain rule is applied.

Walk the nodes that lie between the parameters and the loss in reverse topological order;
give each node's adjoint (the sum of what its consumers sent it) to its rule's VJP; send the
results on to its arguments. Every rule application and every sum of several contributions is
recorded as a step, so documents can show the backward pass exactly as it was derived.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from symbolic.graph import Node, const, topological
from symbolic.rules import local_derivative, rule_for


@dataclass(frozen=True)
class Step:
    """One application of the chain rule: the adjoint of `node` sent to its argument `arg`."""

    node: Node  # the forward node whose adjoint is propagated
    arg: int  # which of its arguments receives the contribution
    rule: str  # the rule's label, e.g. "matrix product"
    local: sympy.Expr | None  # an elementwise node's local derivative (in x_i and y), else None
    contribution: Node  # the term added to the argument's adjoint


@dataclass(frozen=True)
class Accumulation:
    """A node used several times: its adjoint is the sum of its consumers' contributions."""

    node: Node
    terms: tuple[Node, ...]
    total: Node


@dataclass
class Gradients:
    adjoints: dict[Node, Node]  # every node on a path to the loss -> dL/d(node)
    steps: list[Step | Accumulation]  # in the order they were derived (loss first)


def reverse_mode(loss: Node, wrt: list[Node]) -> Gradients:
    """dL/d(node) for every node between `wrt` and `loss` (a scalar)."""
    order = topological([loss])
    targets = set(wrt)
    needed: set[Node] = set()
    for node in order:  # nodes that depend on something we differentiate with respect to
        if node in targets or any(a in needed for a in node.args):
            needed.add(node)
    contributions: dict[Node, list[Node]] = {loss: [const(1)]}
    adjoints: dict[Node, Node] = {}
    steps: list[Step | Accumulation] = []
    for node in reversed(order):
        terms = contributions.get(node)
        if node not in needed or not terms:
            continue
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        if len(terms) > 1:
            steps.append(Accumulation(node, tuple(terms), total))
        adjoints[node] = total
        if node.is_leaf:
            continue
        rule = rule_for(node)
        for i, part in enumerate(rule.vjp(total, node)):
            arg = node.args[i]
            if part is None or arg not in needed:
                continue
            local = local_derivative(node.attr("expr"), i) if node.op == "ew" else None
            label = rule.label
            if node.op == "ew" and arg.shape != node.shape:
                label = "broadcast (summed over the stretched axes)"
            steps.append(Step(node, i, label, local, part))
            contributions.setdefault(arg, []).append(part)
    return Gradients(adjoints, steps)
