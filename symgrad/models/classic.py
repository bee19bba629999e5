"""Linear, logistic and softmax regression."""
from __future__ import annotations

from symgrad.models import labels
from symgrad.models.mlp import penalties
from symgrad.symbolic import ops as F
from symgrad.symbolic.errors import ModelError
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


def logistic_regression(l1: bool = False, l2: bool = False, dropout: bool = False) -> Model:
    """`l1`/`l2`: penalties on W (not b), as scikit-learn's LogisticRegression penalises;
    `symgrad train --l1/--l2` trains this variant."""
    if dropout:
        raise ModelError("--dropout needs a hidden layer to drop units from; logistic_regression has "
                         "none (try --l2, or an MLP)")
    extras = [name for name, on in (("l1", l1), ("l2", l2)) if on]
    m, X, Y, affine = _affine("_".join(["logistic_regression", *extras]),
                              "logistic regression with binary cross-entropy on logits"
                              + (f", with {', '.join(extras)}" if extras else ""), "binary")
    z = m.let("z", affine)
    m.output("p", F.sigmoid(z))
    loss = F.binary_cross_entropy_with_logits(z, Y)
    for term in penalties(m, [m.leaves["W"]], l1, l2):
        loss = loss + term
    m.loss(loss)
    return m


def softmax_regression(sparse: bool = False) -> Model:
    """`sparse`: on integer class labels (`symgrad.models.labels`)."""
    m, X, Y, affine = _affine("softmax_regression_sparse" if sparse else "softmax_regression",
                              "softmax regression with softmax cross-entropy on logits", "multiclass", sparse)
    z = m.let("z", affine)
    m.output("P", F.softmax(z))
    m.loss(labels.loss(z, Y))
    return m
