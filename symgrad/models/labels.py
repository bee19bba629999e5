"""A classifier's target and loss, on one-hot rows or on integer class labels.

`sparse=True` declares the target as integer labels `y` (one per row) and trains with the
sparse softmax cross-entropy (`gather` of the log-softmax, like PyTorch's `cross_entropy` with
class indices); otherwise the target is one-hot rows `Y`. The two losses are equal: only the
target's form and the backward pass's gather/scatter differ.
"""
from __future__ import annotations

from symgrad.symbolic import ops as F
from symgrad.symbolic.graph import Node
from symgrad.symbolic.model import Model


def target(m: Model, B, n_out, sparse: bool, rows: str | None = "one-hot") -> Node:
    """Integer labels `y` (B,), or rows `Y` (B, n_out) declared `rows` (one-hot by default)."""
    return m.target("y", (B,), integer=True) if sparse else m.target("Y", (B, n_out), rows=rows)


def loss(logits: Node, target: Node) -> Node:
    if target.is_integer:
        return F.sparse_softmax_cross_entropy(logits, target)
    return F.softmax_cross_entropy(logits, target)
