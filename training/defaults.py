"""Default training settings: what `symgrad train MODEL --data NAME` uses when not told.

A built-in model brings its own settings for its own data set (`symgrad.models.BUILTINS`,
field `train`: optimizer, lr, optimizer_hypers, epochs, batch_size); lr and optimizer_hypers
belong to that optimizer. When another optimizer is chosen, its learning rate comes from
`RECOMMENDED_LR` below: one value per optimizer, measured on the digits MLPs (mini-batches of
32, 60 epochs), where each reaches a test accuracy of 0.95 or more. The optimizers' own
HYPERS keep the textbook defaults (Adam's 0.001, ...) that the PyTorch comparison relies on;
these are training advice, not part of the update rules.
"""
from __future__ import annotations

RECOMMENDED_LR = {
    "sgd": 0.1,
    "momentum": 0.01,
    "nesterov": 0.01,
    "adagrad": 0.02,
    "rmsprop": 0.0005,
    "adam": 0.001,
    "adamw": 0.001,
}

FALLBACK = {"optimizer": "sgd", "epochs": 20, "batch_size": 32}  # models without settings


def settings(model_defaults: dict | None, optimizer: str | None) -> dict:
    """Optimizer, learning rate, its other hyper-parameters, epochs and batch size for a
    model (None: not built in)."""
    base = {**FALLBACK, **(model_defaults or {})}
    chosen = optimizer or base["optimizer"]
    own = chosen == base["optimizer"]
    lr = base.get("lr") if own else None
    return {"optimizer": chosen, "lr": RECOMMENDED_LR.get(chosen) if lr is None else lr,
            "optimizer_hypers": dict(base.get("optimizer_hypers", {})) if own else {},
            "epochs": base["epochs"], "batch_size": base["batch_size"]}
