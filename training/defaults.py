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
    # second order (training.second_order): lr scales the step the curvature gives, which a
    # line search then shortens where it must; 1 is the method's own step
    "newton": 1.0,
    "newton-cg": 1.0,
    "lbfgs": 1.0,
}

# A second-order epoch is one full-batch step (lbfgs: `iterations` of them), not a pass of
# mini-batch steps, so a model's own epoch count does not carry over; these do, measured at
# seed 0: newton on logistic_regression/breast_cancer passes 0.95 test accuracy by epoch 2
# and reaches its optimum's loss to 1e-6 relative by epoch 10; newton-cg the digits MLP
# past 0.95 in 30.
SECOND_ORDER_EPOCHS = {"newton": 10, "newton-cg": 30, "lbfgs": 10}

# The learning rates each optimizer is commonly used with (PyTorch's and the papers' defaults
# lie inside, so do every built-in model's settings). A rate outside trains, but rarely well:
# AdamW at SGD's 0.1 leaves the digits MLP at 0.51 accuracy. `usual_lr_warning` says so.
USUAL_LR = {
    "sgd": (1e-3, 1.0),
    "momentum": (1e-4, 0.5),
    "nesterov": (1e-4, 0.5),
    "adagrad": (1e-3, 1.0),
    "rmsprop": (1e-5, 0.03),
    "adam": (1e-5, 0.03),
    "adamw": (1e-5, 0.03),
    "newton": (0.1, 1.0),
    "newton-cg": (0.1, 1.0),
    "lbfgs": (0.1, 1.0),
}

FALLBACK = {"optimizer": "sgd", "epochs": 20, "batch_size": 32}  # models without settings


def settings(model_defaults: dict | None, optimizer: str | None) -> dict:
    """Optimizer, learning rate, its other hyper-parameters, epochs and batch size for a
    model (None: not built in)."""
    base = {**FALLBACK, **(model_defaults or {})}
    chosen = optimizer or base["optimizer"]
    own = chosen == base["optimizer"]
    lr = base.get("lr") if own else None
    epochs = base["epochs"] if own else SECOND_ORDER_EPOCHS.get(chosen, base["epochs"])
    return {"optimizer": chosen, "lr": RECOMMENDED_LR.get(chosen) if lr is None else lr,
            "optimizer_hypers": dict(base.get("optimizer_hypers", {})) if own else {},
            "epochs": epochs, "batch_size": base["batch_size"]}


def usual_lr_warning(optimizer: str, lr: float) -> str | None:
    """A sentence when `lr` lies outside the optimizer's usual range, else None."""
    low, high = USUAL_LR.get(optimizer, (0.0, float("inf")))
    if low <= lr <= high:
        return None
    side = "above" if lr > high else "below"
    return (f"learning rate {lr:g} is far {side} the usual range of {optimizer} ({low:g} to {high:g}); "
            f"its recommended rate is {RECOMMENDED_LR[optimizer]:g}")


def describe(train: dict) -> str:
    """A built-in's training settings in words: `adamw lr 0.002 (weight_decay 0.2), 60 epochs,
    batch size 32`."""
    if "steps" in train:  # a GAN trains in alternating steps
        return (f"adam lr {train['lr']:g} (beta1 {train['beta1']:g}), {train['steps']} steps, "
                f"batch size {train['batch_size']}")
    chosen = settings(train, None)
    extra = ", ".join(f"{k} {v:g}" for k, v in chosen["optimizer_hypers"].items())
    return (f"{chosen['optimizer']} lr {chosen['lr']:g}{f' ({extra})' if extra else ''}, "
            f"{chosen['epochs']} epochs, batch size {chosen['batch_size']}")
