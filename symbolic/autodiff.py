"""Reverse mode over the equation graph: the only place the chain rule is applied.

Walk the nodes that lie between the parameters and the loss in reverse topological order;
give each node's adjoint (the sum of what its consumers sent it) to its rule's VJP; send the
results on to its arguments. Every rule application and every sum of several contributions is
recorded as a step, so documents can show the backward pass exactly as it was derived.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy
from symgrad.symbolic.graph import Node, apply, broadcast_to, const, topological
from symgrad.symbolic.rules import local_derivative, rule_for


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
    return pullback({loss: const(1)}, wrt)


def pullback(seeds: dict[Node, Node], wrt: list[Node], second_order: bool = False) -> Gradients:
    """Adjoints of every node between `wrt` and the seeded outputs, given each output's
    incoming adjoint (1 for a scalar loss; a placeholder in a recurrent cell's backward).

    A node with several outputs (a scan) is read through `item` nodes: the adjoints of its
    items are collected per output and handed to its rule together. With `second_order`, a
    scan's VJP is written as a scan of its own, which differentiates again (see
    `symbolic.scan.differentiable_vjp`).
    """
    order = topological(seeds)
    targets = set(wrt)
    needed: set[Node] = set()
    for node in order:  # nodes that depend on something we differentiate with respect to
        if node in targets or any(a in needed for a in node.args):
            needed.add(node)
    contributions: dict[Node, list[Node]] = {out: [g] for out, g in seeds.items()}
    per_output: dict[Node, dict[int, Node]] = {}
    adjoints: dict[Node, Node] = {}
    steps: list[Step | Accumulation] = []
    for node in reversed(order):
        if node not in needed:
            continue
        if node.op in MULTI_OUTPUT:  # its items left one adjoint per output
            if node not in per_output:
                continue
            total = tuple(per_output[node].get(k) for k in range(len(node.attr("shapes"))))
            if second_order and node.op == "scan":
                from symgrad.symbolic.scan import differentiable_vjp

                parts = differentiable_vjp(total, node)
            else:
                parts = rule_for(node).vjp(total, node)
            _send(node, parts, needed, contributions, steps)
            continue
        terms = contributions.get(node)
        if not terms:
            continue
        total = accumulate(terms)
        if len(terms) > 1:
            steps.append(Accumulation(node, tuple(terms), total))
        adjoints[node] = total
        if node.is_leaf:
            continue
        if node.op == "item":
            per_output.setdefault(node.args[0], {})[node.attr("index")] = total
            continue
        _send(node, rule_for(node).vjp(total, node), needed, contributions, steps)
    return Gradients(adjoints, steps)


#: Primitives that produce several arrays; `item` nodes select them.
MULTI_OUTPUT = ("scan", "scan_vjp")


def _send(node: Node, parts, needed, contributions, steps) -> None:
    rule = rule_for(node)
    for i, part in enumerate(parts):
        arg = node.args[i]
        if part is None or arg not in needed:
            continue
        local = local_derivative(node.attr("expr"), i) if node.op == "ew" else None
        label = rule.label
        if node.op == "ew" and arg.shape != node.shape:
            label = "broadcast (summed over the stretched axes)"
        steps.append(Step(node, i, label, local, part))
        contributions.setdefault(arg, []).append(part)


def accumulate(terms: list[Node]) -> Node:
    """The sum of several contributions. Slices padded back to full size along one axis
    (the gates of an LSTM taken from one product) are joined into one concatenation instead
    of adding zero-padded arrays."""
    try:
        joined = _join_pads(terms)
    except TypeError:  # dims whose order sympy cannot decide: add the plain way
        joined = None
    if joined is not None:
        return joined
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def _join_pads(terms: list[Node]) -> Node | None:
    pads = [t for t in terms if t.op == "pad"]
    if len(pads) > 1 and len({(t.attr("axis"), t.shape) for t in pads}) == 1:
        axis, size = pads[0].attr("axis"), pads[0].shape[pads[0].attr("axis")]
        spans = sorted((t.attr("before"), t) for t in pads)
        pieces, at = [], 0
        for start, t in spans:
            if start < at:
                break  # overlapping pieces: add them the plain way
            if start > at:
                pieces.append(zeros_like_slice(t, axis, start - at))
            pieces.append(t.args[0])
            at = start + t.args[0].shape[axis]
        else:
            if at <= size:
                if at < size:
                    pieces.append(zeros_like_slice(pads[0], axis, size - at))
                joined = apply("concat", pieces, axis=axis)
                rest = [t for t in terms if t.op != "pad"]
                return accumulate([joined, *rest]) if rest else joined
    return None


def zeros_like_slice(t: Node, axis: int, width) -> Node:
    shape = tuple(width if i == axis else d for i, d in enumerate(t.shape))
    return broadcast_to(const(0), shape)
