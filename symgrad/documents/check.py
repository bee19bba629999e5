"""The numeric check printed in every document: derived gradients against finite differences.

It runs the generated module itself (the code the document shows), in float64, at small fixed
dims and a fixed seed, against five-point central differences with h = 1e-5 (small enough that
a kink of relu, |w| or a max pool is almost never crossed; truncation error h^4 is nil). Their
round-off, about 1e-10 relative here, is what a model document's table shows, to one digit (a
measured number, whose digit can change with the BLAS library: the freshness test lets those
rows differ); a wrong gradient shows an error far above it. The primer's prose prints errors
against the floor of 1e-6, so its text is the same on every machine.

A large parameter is checked at a fixed random sample of its entries, which keeps a document of
a convolutional network quick to build.
"""
from __future__ import annotations

import inspect
import types
from dataclasses import dataclass

import numpy as np

from symgrad.pipeline import import_source

STEP = 1e-5  # finite-difference step
FLOOR = 1e-6  # the primer's errors below this print as "< 10^-6"
SHOWN = 1e-15  # a model document prints every error down to this (round-off of float64)
TOLERANCE = 1e-4  # a derived gradient further than this from the differences fails
SCALE = 1e-3  # the smallest gradient norm an error is relative to (a zero gradient is not noise)
SEED = 0
FIRST_DIM = 3  # dims get 3, 4, 5, ... in declaration order: distinct, so a transposition shows
ALL_UP_TO = 64  # parameters with at most this many entries are checked at every entry
SAMPLE = 32  # ... larger ones at this many, chosen at random (seed SEED)


@dataclass(frozen=True)
class Result:
    name: str
    shape: tuple[int, ...]
    error: float  # ||derived - differences|| / max(||derived||, ||differences||, SCALE)
    checked: int = 0  # how many entries were compared
    entry: tuple[int, ...] = ()  # the checked entry with the largest difference quotient ...
    derived: float = 0.0  # ... its derived value
    difference: float = 0.0  # ... and its finite difference

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.error)) and self.error < TOLERANCE


def load(source: str, name: str) -> types.ModuleType:
    """Import generated source through the pipeline (from memory: no file is left behind)."""
    return import_source(source, f"doc_{name}")


def check_dims(module: types.ModuleType) -> dict[str, int]:
    return {name: FIRST_DIM + i for i, name in enumerate(module.DIMS)}


def concrete(shape: tuple, dims: dict[str, int]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else dims[d] for d in shape)


def sample(module: types.ModuleType, dims: dict[str, int], rng: np.random.Generator) -> tuple[dict, dict]:
    """Parameters near their initial values and a batch shaped like the model's task."""
    params = module.init_params(dims, seed=SEED, dtype=np.float64)
    params = {k: np.array(v + 0.1 * rng.standard_normal(v.shape)) for k, v in params.items()}
    batch = {}
    for name, shape in module.INPUTS.items():
        shape = concrete(shape, dims)
        if name in getattr(module, "LABELS", ()):  # integer labels: the prediction's last axis counts classes
            value = rng.integers(0, concrete(module.OUTPUTS[module.PREDICTION], dims)[-1], shape)
        elif name in module.TARGETS and module.TASK == "multiclass" and shape:
            value = np.eye(shape[-1])[rng.integers(0, shape[-1], shape[:-1])]
        elif name in module.TARGETS and module.TASK == "binary":
            value = rng.integers(0, 2, shape).astype(np.float64)
        else:
            value = rng.standard_normal(shape)
        batch[name] = value
    return params, batch


def relative_error(derived: np.ndarray, differences: np.ndarray) -> float:
    scale = max(float(np.linalg.norm(derived)), float(np.linalg.norm(differences)), SCALE)
    return float(np.linalg.norm(derived - differences)) / scale


def entries(shape: tuple[int, ...], rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Every index of a small parameter; a sorted random sample of a large one's."""
    every = list(np.ndindex(shape))
    if len(every) <= ALL_UP_TO:
        return every
    picked = sorted(rng.choice(len(every), size=SAMPLE, replace=False))
    return [every[i] for i in picked]


def differences(f, x: np.ndarray, where: list[tuple[int, ...]] | None = None) -> np.ndarray:
    """Five-point central differences of f() (a scalar or an array) by the entries `where` of x
    (all of them by default), changing x in place and restoring it: result[..., k] is the
    derivative by the k-th entry."""
    columns = []
    for i in (list(np.ndindex(x.shape)) if where is None else where):
        old = x[i]
        values = []
        for k in (2, 1, -1, -2):
            x[i] = old + k * STEP
            values.append(np.asarray(f(), dtype=np.float64))
        x[i] = old
        columns.append((-values[0] + 8 * values[1] - 8 * values[2] + values[3]) / (12 * STEP))
    return np.stack(columns, axis=-1)


def training_options(module: types.ModuleType, dims: dict[str, int], function) -> dict:
    """What a module's function needs to compute the training loss repeatably: training mode,
    a fixed seed for random masks (the same masks on every call) and a state to read."""
    accepted = inspect.signature(function).parameters
    options = {}
    if "training" in accepted:
        options["training"] = True
    if "rng" in accepted:
        options["rng"] = SEED
    if "state" in accepted and hasattr(module, "init_state"):
        options["state"] = module.init_state(dims, np.float64)
    return options


def gradients(module: types.ModuleType, dims: dict[str, int], params: dict, batch: dict) -> list[Result]:
    """One result per parameter: the module's loss_and_grad against differences of its loss,
    both in training mode (the gradient is the training loss's)."""
    _, derived = module.loss_and_grad(params, batch, **training_options(module, dims, module.loss_and_grad))
    options = training_options(module, dims, module.loss)
    rng = np.random.default_rng(SEED)
    results = []
    for name, value in params.items():
        where = entries(value.shape, rng)
        fd = differences(lambda: module.loss(params, batch, **options), value, where)
        g = np.asarray(derived[name])
        picked = np.array([g[i] for i in where])
        k = int(np.argmax(np.abs(fd))) if len(where) else 0
        results.append(Result(name, value.shape, relative_error(picked, fd), len(where),
                              tuple(int(i) for i in where[k]), float(picked[k]), float(fd[k])))
    return results


def run(module: types.ModuleType) -> tuple[dict[str, int], list[Result]]:
    dims = check_dims(module)
    rng = np.random.default_rng(SEED)
    params, batch = sample(module, dims, rng)
    return dims, gradients(module, dims, params, batch)
