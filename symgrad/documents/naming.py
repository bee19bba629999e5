"""Names for the backward steps of a model that names few intermediates, so each step is short.

A step's formula is printed from the graph: whatever has no name is written out in full. In a
model that names nothing between its layers (a GAN's discriminator), the steps then carry the
whole network in every line: the adjoint an earlier step computed appears again, expanded, in
every step after it, and the value a step flows through is a formula a line long. Two kinds of
names fix that, both chosen here once per document:

* a forward value the steps go through or into whose formula is long gets a name u_1, u_2, ...
  (bottom-up, so a name's own formula uses the names before it), defined once before the steps;
  its adjoint is then delta_{u_k}. The loss's own parts keep their formulas: a textbook writes
  the loss out;
* a backward result whose formula is long is printed, in the steps after its own, by the name
  its equation gives it (its left-hand side): the reader finds it under that equation's number.

Short values keep their formulas: -Y/B reads better than its name.
"""
from __future__ import annotations

from symgrad.documents.shorten import fresh_name, trivial, view_of_leaf
from symgrad.symbolic.autodiff import Accumulation
from symgrad.symbolic.derivation import Derivation
from symgrad.symbolic.graph import Node, topological
from symgrad.symbolic.printing import Printer

FORWARD_LONG = 40  # a forward value whose formula is longer than this (LaTeX chars) is named ...
BACKWARD_LONG = 60  # a backward result longer than this prints by its equation's name


def targets(d: Derivation) -> list[Node]:
    """The forward values the steps go through or send an adjoint into, in graph order."""
    seen: dict[Node, None] = {}
    for e in d.backward:
        s = e.step
        seen[s.node] = None
        if not isinstance(s, Accumulation):  # a step through a node also sends into its argument
            seen[s.node.args[s.arg]] = None
    wanted = set(seen)
    return [n for n in topological(list(seen)) if n in wanted]


Names = dict[Node, tuple[str, str]]  # node -> (text name, LaTeX name), as a Printer takes them


def forward_names(d: Derivation, taken: set[str]) -> tuple[Names, list[tuple[str, Node]]]:
    """The derivation's names plus u_k for the long unnamed forward values the steps print, and
    those new names' definitions (LaTeX name, node) in an order where each comes before its use."""
    names = dict(d.names)
    added: list[tuple[str, Node]] = []
    count = 0
    losses = {e.number for e in d.forward if e.kind == "loss"}
    for n in targets(d):
        if n in names or trivial(n) or view_of_leaf(n) or n.op in ("scan", "item"):
            continue
        if d.owners.get(n) in losses:
            continue  # ... unless it is a part of the loss, which reads best written out
        if len(Printer(names).latex(n, expand=True)) <= FORWARD_LONG:
            continue
        count, names[n] = fresh_name("u", "u", count, taken)
        added.append((names[n][1], n))
    return names, added


def adjoint_name(target: str) -> str:
    """The adjoint of a value named `target` (LaTeX), as the derivation writes it."""
    return rf"\delta_{{{target}}}"
