"""A perceptron with two hidden layers and a choice of activation."""
from __future__ import annotations

from collections.abc import Callable

from symbolic import ops as F
from symbolic.errors import ModelError
from symbolic.model import Init, Model


def mlp(activation: str | Callable = "tanh", name: str | None = None) -> Model:
    """X -> act(X W1 + b1) -> act(. W2 + b2) -> softmax(. W3 + b3), softmax cross-entropy.

    `activation` is a built-in name (tanh, relu, sigmoid, softplus, leaky_relu) or any
    elementwise function, such as one made by `symgrad.elementwise_function`.
    """
    if isinstance(activation, str):
        if activation not in F.ACTIVATIONS:
            raise ModelError(f"unknown activation {activation!r}; choose one of {', '.join(F.ACTIVATIONS)}")
        act = F.ACTIVATIONS[activation]
        label = activation
    else:
        act, label = activation, getattr(activation, "__name__", "custom")
    rectifier = label in ("relu", "leaky_relu")
    init = "he_normal" if rectifier else "glorot_uniform"
    # Rectifier units start slightly active (bias 0.1) so that few are dead from the first step.
    bias = Init("constant", 0.1) if rectifier else Init("zeros")
    m = Model(name or f"mlp_{label}",
              f"perceptron with two {label} hidden layers and softmax cross-entropy", task="multiclass")
    B, n_in = m.dims("B n_in")
    n_h1, n_h2 = m.dim("n_h1", default=128), m.dim("n_h2", default=64)
    n_out = m.dim("n_out")
    X = m.input("X", (B, n_in))
    Y = m.target("Y", (B, n_out))
    W1, b1 = m.param("W1", (n_in, n_h1), init), m.param("b1", (n_h1,), bias)
    W2, b2 = m.param("W2", (n_h1, n_h2), init), m.param("b2", (n_h2,), bias)
    W3, b3 = m.param("W3", (n_h2, n_out)), m.param("b3", (n_out,), "zeros")
    z1 = m.let("z1", X @ W1 + b1)
    h1 = m.let("h1", act(z1))
    z2 = m.let("z2", h1 @ W2 + b2)
    h2 = m.let("h2", act(z2))
    z3 = m.let("z3", h2 @ W3 + b3)
    m.output("P", F.softmax(z3))
    m.loss(F.softmax_cross_entropy(z3, Y))
    return m
