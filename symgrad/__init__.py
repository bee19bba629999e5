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

Everything symgrad installs lives under this one name: the engine is `symgrad.symbolic`
(modelling language, rules, derivation), `symgrad.codegen` (lowering and emission),
`symgrad.training` (data, optimizers, the loop) and `symgrad.generated` (the built-in models'
modules). The names below load on first use, so importing a generated module or an optimizer
kernel (`symgrad.generated.mlp_tanh`) stays numpy-only and fast.
"""
from __future__ import annotations

import importlib

#: public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "__version__": "symgrad.symbolic",
    **dict.fromkeys(("Derivation", "derive"), "symgrad.symbolic.derivation"),
    **dict.fromkeys(("ModelError", "RuleError", "ShapeError", "SymgradError", "SymgradWarning"),
                    "symgrad.symbolic.errors"),
    **dict.fromkeys(("Init", "Model"), "symgrad.symbolic.model"),
    **dict.fromkeys((
        "abs", "binary_cross_entropy_with_logits", "elementwise_function", "exp", "l1", "l2",
        "leaky_relu", "log", "log_softmax", "matmul", "mean", "mse", "relu", "reshape", "sigmoid",
        "softmax", "softmax_cross_entropy", "softplus", "sqrt", "square", "sum", "tanh", "transpose",
        "gather", "sparse_softmax_cross_entropy",  # integer class labels
        # linear algebra
        "cholesky", "det", "diag", "diagonal", "einsum", "eye", "inv", "logdet", "outer", "solve", "swapaxes",
        "trace", "tril",
    ), "symgrad.symbolic.ops"),
    **dict.fromkeys(("BACKENDS", "generate"), "symgrad.codegen.emit"),
    **dict.fromkeys(("hessian", "hvp", "jacobian"), "symgrad.symbolic.second_order"),
    "BUILTINS": "symgrad.models",
    **dict.fromkeys(("load_module", "resolve", "source", "write"), "symgrad.pipeline"),
    "train": "symgrad.training.run",
    "sweep": "symgrad.training.sweep",
    **dict.fromkeys(("TrainedModel", "load_trained"), "symgrad.training.trained"),
}
#: `symgrad.ops` is the modelling language's whole vocabulary (`from symgrad import ops as F`)
_SUBMODULES = {"ops": "symgrad.symbolic.ops"}

# `from symgrad import *` takes the API but not the names that shadow Python's builtins.
__all__ = sorted(n for n in _EXPORTS if n not in ("__version__", "abs", "sum"))


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    else:
        raise AttributeError(f"module 'symgrad' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
