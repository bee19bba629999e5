"""Which names a model may use: they become Python identifiers in generated source."""
from __future__ import annotations

import builtins
import keyword

from symgrad.symbolic.errors import ModelError

#: Names the generated module itself defines or uses; a model may not take them.
RESERVED = frozenset({
    "np", "ne", "math", "annotations", "DIMS", "PARAMS", "INPUTS", "OUTPUTS", "HYPERS",
    "LOSSES", "TASK", "PREDICTION", "DEFAULT_DIMS", "BACKEND", "init_params", "forward",
    "loss", "loss_and_grad", "validate", "set_backend", "params", "batch", "inputs", "hypers",
    "dims", "seed", "dtype", "dt", "rng", "grads", "out",
})


def check_identifier(name: object, what: str) -> str:
    """Return `name` if it is a safe identifier for generated code, else raise ModelError."""
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
        raise ModelError(f"{what} {name!r} is not a valid Python identifier")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ModelError(f"{what} {name!r} is a Python keyword; choose another name")
    if hasattr(builtins, name):
        raise ModelError(f"{what} {name!r} is a Python builtin; choose another name")
    if name.startswith("_"):
        raise ModelError(f"{what} {name!r} starts with '_', which generated code keeps for itself")
    if name in RESERVED:
        raise ModelError(f"{what} {name!r} is used by the generated module; choose another name")
    return name
