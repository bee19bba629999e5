"""Self-attention: a one-head classifier that reads a sequence of tokens (an 8x8 digit as 8
row tokens of 8 pixels) and attends from every token to every other.

Every product is a matrix product between stacks, (B, T, d) @ (B, d, T): the scores
Q K^T / sqrt(d), the softmax over keys, the weighted values A V. Their gradients are again
products between stacks (dQ = G K, dK = G^T Q, dV = A^T G), derived by the same rule.
"""
from __future__ import annotations

import sympy

from symgrad.models import labels
from symgrad.symbolic import ops as F
from symgrad.symbolic.model import Init, Model


def attention_classifier(steps: int = 8, features: int = 8, name: str = "attention_digits",
                         width: int = 32, hidden: int = 64, sparse: bool = False) -> Model:
    """Tokens X (B, T, features) -> embedding E = X W_e + P (with a learnt position P) ->
    one attention head with a residual connection, H = E + softmax(Q K^T / sqrt(d)) V ->
    a relu layer on every token, averaged over the tokens -> softmax classifier."""
    m = Model(name, f"one-head self-attention classifier over {steps} tokens of {features} features: "
              "embedding with learnt positions, scaled dot-product attention with a residual "
              "connection, a relu layer per token, mean over tokens, softmax", task="multiclass")
    B, n_out = m.dims("B n_out")
    d = m.dim("d", default=width)
    n_h = m.dim("n_h", default=hidden)
    X = m.input("X", (B, steps, features))
    Y = labels.target(m, B, n_out, sparse)
    We, P = m.param("We", (features, d)), m.param("P", (steps, d), Init("normal", 0.1))
    Wq, Wk, Wv = (m.param(name, (d, d)) for name in ("Wq", "Wk", "Wv"))
    W1, b1 = m.param("W1", (d, n_h), "he_normal"), m.param("b1", (n_h,), Init("constant", 0.1))
    W2, b2 = m.param("W2", (n_h, n_out)), m.param("b2", (n_out,), "zeros")

    E = m.let("E", X @ We + P)
    Q, K, V = m.let("Q", E @ Wq), m.let("K", E @ Wk), m.let("V", E @ Wv)
    A = m.let("A", F.softmax(Q @ K.mT / sympy.sqrt(d), axis=-1))  # (B, T, T): each query's weights
    H = m.let("H", E + A @ V)
    R = m.let("R", F.relu(H @ W1 + b1))
    z = m.let("z", R.mean(axis=1) @ W2 + b2)
    m.output("P_class", F.softmax(z))
    m.loss(labels.loss(z, Y))
    return m
