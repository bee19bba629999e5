"""The built-in models, each written only in the modelling language, and their registry."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from symgrad.models import attention, classic, cnn, gan, gaussian, mlp, rnn
from symgrad.symbolic.model import Model


@dataclass(frozen=True)
class BuiltIn:
    build: Callable[[], Model]
    summary: str
    data: str  # the bundled data set `symgrad train` uses by default
    train: dict = field(default_factory=dict)  # default training settings for that data
    # the same model with regularisers added to its equations: variant(l1=, l2=, dropout=) -> Model;
    # `symgrad train --l1/--l2/--dropout` derives it when the model itself lacks the term
    variant: Callable[..., Model] | None = None
    # the same classifier on integer class labels, `symgrad train --sparse-labels` (an MLP's:
    # variant(sparse=True, ...), which keeps its regularisers)
    sparse: Callable[[], Model] | None = None


# AdamW's decoupled weight decay regularises the digits MLPs: test accuracy at seed 0 0.9778
# (tanh), 0.9806 (relu), 0.9750 (sigmoid), the README's table (tests/test_readme.py checks it).
MLP_DIGITS = {"optimizer": "adamw", "lr": 0.002, "optimizer_hypers": {"weight_decay": 0.2},
              "epochs": 60, "batch_size": 32}

def _named(name: str, build: Callable[[], Model]) -> Callable[[], Model]:
    """`build`, with the model remembering that `symgrad derive NAME` builds it again."""
    def named() -> Model:
        model = build()
        model.origin = name
        return model

    return named


BUILTINS: dict[str, BuiltIn] = {
    "linear_regression": BuiltIn(classic.linear_regression, "linear regression, mean squared error",
                                 "diabetes", {"lr": 0.05, "epochs": 60, "batch_size": 32}),
    "logistic_regression": BuiltIn(classic.logistic_regression,
                                   "logistic regression, binary cross-entropy on logits",
                                   "breast_cancer", {"lr": 0.1, "epochs": 40, "batch_size": 32},
                                   classic.logistic_regression),
    "softmax_regression": BuiltIn(classic.softmax_regression,
                                  "softmax regression, softmax cross-entropy on logits",
                                  "iris", {"lr": 0.1, "epochs": 300, "batch_size": 16},
                                  sparse=lambda: classic.softmax_regression(sparse=True)),
    **{f"mlp_{act}": BuiltIn((lambda a: lambda: mlp.mlp(a))(act),
                             f"two-hidden-layer perceptron with {act}, softmax cross-entropy",
                             "digits", MLP_DIGITS, (lambda a: lambda **terms: mlp.mlp(a, **terms))(act),
                             (lambda a: lambda: mlp.mlp(a, sparse=True))(act))
       for act in ("tanh", "relu", "sigmoid")},
    "mlp_regularised": BuiltIn(
        lambda: mlp.mlp("tanh", "mlp_regularised", dropout=True, batchnorm=True, l1=True, l2=True),
        "tanh perceptron with batch normalisation, dropout, L1 and L2 penalties", "digits",
        {"lr": 0.05, "epochs": 40, "batch_size": 64},
        sparse=lambda: mlp.mlp("tanh", "mlp_regularised_sparse", dropout=True, batchnorm=True, l1=True,
                               l2=True, sparse=True)),
    "cnn_digits": BuiltIn(lambda: cnn.cnn(8, name="cnn_digits"),
                          "convolutional network for 8x8 digits (conv-relu-pool twice, dense softmax)",
                          "digits", {"lr": 0.05, "epochs": 30, "batch_size": 32},
                          sparse=lambda: cnn.cnn(8, name="cnn_digits_sparse", sparse=True)),
    "lstm_digits": BuiltIn(lambda: rnn.classifier("lstm", name="lstm_digits"),
                           "LSTM reading each 8x8 digit row by row (8 steps of 8 features)", "digits",
                           {"optimizer": "adam", "lr": 0.005, "epochs": 30, "batch_size": 32},
                           sparse=lambda: rnn.classifier("lstm", name="lstm_digits_sparse", sparse=True)),
    "gru_digits": BuiltIn(lambda: rnn.classifier("gru", name="gru_digits"),
                          "GRU reading each 8x8 digit row by row (8 steps of 8 features)", "digits",
                          {"optimizer": "adam", "lr": 0.005, "epochs": 30, "batch_size": 32},
                          sparse=lambda: rnn.classifier("gru", name="gru_digits_sparse", sparse=True)),
    "rnn_sines": BuiltIn(lambda: rnn.sequence_regressor("lstm", name="rnn_sines"),
                         "many-to-many LSTM predicting the next value of a sine mixture at every step",
                         "sines", {"optimizer": "adam", "lr": 0.01, "epochs": 30, "batch_size": 32}),
    "attention_digits": BuiltIn(attention.attention_classifier,
                                "one-head self-attention over the 8 rows of a digit as tokens, softmax",
                                "digits", {"optimizer": "adam", "lr": 0.003, "epochs": 30, "batch_size": 32},
                                sparse=lambda: attention.attention_classifier(name="attention_digits_sparse",
                                                                              sparse=True)),
    "gaussian_nll": BuiltIn(gaussian.gaussian_nll,
                            "multivariate Gaussian by maximum likelihood: learnt mean and Cholesky factor",
                            "gaussian", {"optimizer": "adam", "lr": 0.01, "epochs": 60, "batch_size": 128}),
    "gan_ring": BuiltIn(gan.gan, "GAN (relu generator, leaky-relu discriminator) for the ring of 8 Gaussians",
                        "ring", {"steps": 12000, "batch_size": 256, "lr": 3e-4, "beta1": 0.5}),
}


BUILTINS = {name: replace(b, build=_named(name, b.build)) for name, b in BUILTINS.items()}


def build(name: str) -> Model:
    return BUILTINS[name].build()
