"""The numeric check printed in every document: derived gradients against central differences.

It runs the generated module itself (the code the document shows), in float64, at small fixed
dims and a fixed seed, against five-point central differences with h = 1e-3: their truncation
error (h^4) is negligible and their round-off (about 1e-12 here) stays a thousand times below
the printing floor of 1e-9. So what the document prints is the same on every run and every
machine: "< 1e-9" wherever the gradient is right, and a one-digit error only where the
differences themselves are off (a kink such as |w| within 2h of a weight), a smooth function
of the fixed inputs.
"""
from __future__ import annotations

import inspect
import shutil
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from symgrad.pipeline import import_source

STEP = 1e-3  # finite-difference step
FLOOR = 1e-9  # errors below this print as "< 10^-9"
TOLERANCE = 1e-4  # a derived gradient further than this from the differences fails
SEED = 0
FIRST_DIM = 3  # dims get 3, 4, 5, ... in declaration order: distinct, so a transposition shows


@dataclass(frozen=True)
class Result:
    name: str
    shape: tuple[int, ...]
    error: float  # ||derived - differences|| / max(||derived||, ||differences||)

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.error)) and self.error < TOLERANCE


def load(source: str, name: str) -> types.ModuleType:
    """Import generated source through the pipeline, then remove its temporary file."""
    module = import_source(source, f"doc_{name}")
    shutil.rmtree(Path(module.__file__).parent, ignore_errors=True)
    return module


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
        if name in module.TARGETS and module.TASK == "multiclass" and shape:
            value = np.eye(shape[-1])[rng.integers(0, shape[-1], shape[:-1])]
        elif name in module.TARGETS and module.TASK == "binary":
            value = rng.integers(0, 2, shape).astype(np.float64)
        else:
            value = rng.standard_normal(shape)
        batch[name] = value
    return params, batch


def relative_error(derived: np.ndarray, differences: np.ndarray) -> float:
    scale = max(float(np.linalg.norm(derived)), float(np.linalg.norm(differences)))
    diff = float(np.linalg.norm(derived - differences))
    return diff / scale if scale > 0 else diff


def differences(f, x: np.ndarray) -> np.ndarray:
    """Five-point central differences of f() (a scalar or an array) by every entry of x,
    changing x in place and restoring it: result[..., i] is the derivative by the i-th entry."""
    columns = []
    for i in np.ndindex(x.shape):
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
    results = []
    for name, value in params.items():
        fd = differences(lambda: module.loss(params, batch, **options), value).reshape(value.shape)
        results.append(Result(name, value.shape, relative_error(np.asarray(derived[name]), fd)))
    return results


def run(module: types.ModuleType) -> tuple[dict[str, int], list[Result]]:
    dims = check_dims(module)
    rng = np.random.default_rng(SEED)
    params, batch = sample(module, dims, rng)
    return dims, gradients(module, dims, params, batch)
