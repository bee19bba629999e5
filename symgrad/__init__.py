"""symgrad: write a network's equations once; get every gradient derived, documented,
generated as a fast numpy/numexpr module, and trained.

    import symgrad as sg
    m = sg.Model("logreg", task="binary")
    B, n = m.dims("B n")
    X, y = m.input("X", (B, n)), m.target("y", (B, 1))
    W, b = m.param("W", (n, 1)), m.param("b", (1,), init="zeros")
    z = m.let("z", X @ W + b)
    m.output("p", sg.sigmoid(z))
    m.loss(sg.binary_cross_entropy_with_logits(z, y))
    print(sg.derive(m))              # the derivation, step by step
    module = sg.load_module(m)       # the generated code, imported
    run = sg.train(m, data="breast_cancer", epochs=40, out="runs/logreg")  # RUN_DIR with plots
"""
from codegen.emit import BACKENDS, generate
from symbolic import __version__
from symbolic.derivation import Derivation, derive
from symbolic.errors import ModelError, RuleError, ShapeError, SymgradError, SymgradWarning
from symbolic.model import Init, Model
from symbolic.ops import (
    abs,
    binary_cross_entropy_with_logits,
    elementwise_function,
    exp,
    l1,
    l2,
    leaky_relu,
    log,
    log_softmax,
    matmul,
    mean,
    mse,
    relu,
    reshape,
    sigmoid,
    softmax,
    softmax_cross_entropy,
    softplus,
    sqrt,
    square,
    sum,
    tanh,
    transpose,
)
from symgrad.models import BUILTINS
from symgrad.pipeline import load_module, resolve, source, write
from training.run import load_trained, train

__all__ = [
    "__version__", "Derivation", "derive", "ModelError", "RuleError", "ShapeError", "SymgradError",
    "SymgradWarning", "Init", "Model", "abs", "binary_cross_entropy_with_logits",
    "elementwise_function", "exp", "l1", "l2", "leaky_relu", "log", "log_softmax", "matmul", "mean",
    "mse", "relu", "reshape", "sigmoid", "softmax", "softmax_cross_entropy", "softplus", "sqrt",
    "square", "sum", "tanh", "transpose", "BACKENDS", "generate", "load_module", "resolve",
    "source", "write", "BUILTINS", "train", "load_trained",
]
