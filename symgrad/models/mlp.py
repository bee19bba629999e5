"""A perceptron with two hidden layers: a choice of activation, and optional regularisation
(dropout, batch normalisation, L1 and L2 penalties) written into its equations."""
from __future__ import annotations

from collections.abc import Callable

from symgrad.models import labels
from symgrad.symbolic import ops as F
from symgrad.symbolic.errors import ModelError
from symgrad.symbolic.model import Init, Model


def penalties(m: Model, weights: list, l1: bool, l2: bool):
    """`l1 * sum|W| + l2 * sum W^2` over the weight matrices, with run-time coefficients."""
    terms = []
    if l1:
        lam = m.hyper("l1", 1e-5)
        terms.append(lam * sum((F.l1(w) for w in weights[1:]), F.l1(weights[0])))
    if l2:
        lam = m.hyper("l2", 1e-4)
        terms.append(lam * sum((F.l2(w) for w in weights[1:]), F.l2(weights[0])))
    return terms


def mlp(activation: str | Callable = "tanh", name: str | None = None, *, dropout: bool = False,
        batchnorm: bool = False, l1: bool = False, l2: bool = False, sparse: bool = False) -> Model:
    """X -> act(X W1 + b1) -> act(. W2 + b2) -> softmax(. W3 + b3), softmax cross-entropy.

    `activation` is a built-in name (tanh, relu, sigmoid, softplus, leaky_relu) or any
    elementwise function, such as one made by `symgrad.elementwise_function`. `dropout` adds
    inverted dropout after each hidden layer (rate: the hyper-parameter `dropout`),
    `batchnorm` normalises each hidden pre-activation, `l1`/`l2` add weight penalties;
    `sparse` trains on integer class labels (`symgrad.models.labels`).
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
    extras = [w for w, on in (("dropout", dropout), ("batchnorm", batchnorm), ("l1", l1), ("l2", l2),
                                          ("sparse", sparse)) if on]
    m = Model(name or "_".join(["mlp", label, *extras]),
              f"perceptron with two {label} hidden layers and softmax cross-entropy"
              + (f", with {', '.join(extras)}" if extras else ""), task="multiclass")
    B, n_in = m.dims("B n_in")
    n_h1, n_h2 = m.dim("n_h1", default=128), m.dim("n_h2", default=64)
    n_out = m.dim("n_out")
    X = m.input("X", (B, n_in))
    Y = labels.target(m, B, n_out, sparse)
    rate = m.hyper("dropout", 0.2) if dropout else None
    # Batch normalisation's shift beta replaces a hidden layer's bias (whose gradient would be 0).
    W1, b1 = m.param("W1", (n_in, n_h1), init), None if batchnorm else m.param("b1", (n_h1,), bias)
    W2, b2 = m.param("W2", (n_h1, n_h2), init), None if batchnorm else m.param("b2", (n_h2,), bias)
    W3, b3 = m.param("W3", (n_h2, n_out)), m.param("b3", (n_out,), "zeros")

    def hidden(k: int, x, W, b):
        if batchnorm:
            z = m.let(f"z{k}", x @ W)
            z = m.let(f"n{k}", m.batchnorm(z, f"bn{k}"))
        else:
            z = m.let(f"z{k}", x @ W + b)
        h = act(z)
        if dropout:
            h = m.dropout(h, rate)
        return m.let(f"h{k}", h)

    h1 = hidden(1, X, W1, b1)
    h2 = hidden(2, h1, W2, b2)
    z3 = m.let("z3", h2 @ W3 + b3)
    m.output("P", F.softmax(z3))
    loss = labels.loss(z3, Y)
    for term in penalties(m, [W1, W2, W3], l1, l2):
        loss = loss + term
    m.loss(loss)
    return m
