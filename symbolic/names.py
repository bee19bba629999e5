"""Which names a model may use: they become Python identifiers in generated source."""
from __future__ import annotations

import builtins
import keyword

from symgrad.symbolic.errors import ModelError

#: Names the generated module itself defines or uses; a model may not take them. The one table:
#: the functions' arguments and fixed locals (`state`, `training`, `ws`, `dt`, ...), the module's
#: imports, constants and functions. Locals the code makes up from a model's names (t1, dL_dz,
#: z_2, carry_h, a loop's `t`) are renamed around the model's names instead (codegen.program).
RESERVED = frozenset({
    "np", "ne", "math", "annotations", "Mapping", "DIMS", "PARAMS", "INPUTS", "OUTPUTS", "HYPERS",
    "TARGETS", "STATES", "OBJECTIVES", "SPEC_HASH", "LOSSES", "TASK", "PREDICTION", "DEFAULT_DIMS",
    "BACKEND", "init_params", "init_state", "forward", "loss", "loss_and_grad", "validate",
    "set_backend", "params", "batch", "inputs", "hypers", "state", "training", "ws", "dims", "seed",
    "dtype", "dt", "rng", "grads", "out", "hvp", "hessian", "vector", "wrt",
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
