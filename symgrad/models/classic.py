"""Linear, logistic and softmax regression."""
from __future__ import annotations

from symgrad.models import labels
from symgrad.symbolic import ops as F
from symgrad.symbolic.model import Model


def _affine(name: str, description: str, task: str, sparse: bool = False
            ) -> tuple[Model, object, object, object]:
    m = Model(name, description, task=task)
    B, n_in, n_out = m.dims("B n_in n_out")
    X = m.input("X", (B, n_in))
    Y = labels.target(m, B, n_out, sparse, "one-hot" if task == "multiclass" else None)
    W = m.param("W", (n_in, n_out))
    b = m.param("b", (n_out,), init="zeros")
    return m, X, Y, X @ W + b


def linear_regression() -> Model:
    m, X, Y, affine = _affine("linear_regression", "linear regression with mean squared error",
                              "regression")
    Yhat = m.output("Yhat", affine)
    m.loss(F.mse(Yhat, Y))
    return m


def logistic_regression() -> Model:
    m, X, Y, affine = _affine("logistic_regression",
                              "logistic regression with binary cross-entropy on logits", "binary")
    z = m.let("z", affine)
    m.output("p", F.sigmoid(z))
    m.loss(F.binary_cross_entropy_with_logits(z, Y))
    return m


def softmax_regression(sparse: bool = False) -> Model:
    """`sparse`: on integer class labels (`symgrad.models.labels`)."""
    m, X, Y, affine = _affine("softmax_regression_sparse" if sparse else "softmax_regression",
                              "softmax regression with softmax cross-entropy on logits", "multiclass", sparse)
    z = m.let("z", affine)
    m.output("P", F.softmax(z))
    m.loss(labels.loss(z, Y))
    return m
