"""Training with generated modules: data, optimizers (derived update kernels), the loop.

`train` (a whole run: data, loop, checkpoints, plots, summary; `training.run`) and
`load_trained` (a run's trained model, `training.trained`) load on first use, so that
importing an optimizer kernel from `training.kernels` stays numpy-only.
"""

_LAZY = {"train": "symgrad.training.run", "load_trained": "symgrad.training.trained"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'symgrad.training' has no attribute {name!r}")
