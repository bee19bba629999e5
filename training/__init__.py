"""Training with generated modules: data, optimizers (derived update kernels), the loop.

`train` (a whole run: data, loop, checkpoints, plots, summary) and `load_trained` (the
model.npz of a run) live in `training.run`; they load on first use, so that importing an
optimizer kernel from `training.kernels` stays numpy-only.
"""


def __getattr__(name: str):
    if name in ("train", "load_trained"):
        from symgrad.training import run

        return getattr(run, name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")
