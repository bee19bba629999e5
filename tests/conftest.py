"""Shared fixtures: every built-in model's module, generated fresh for each backend."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings

import pytest
from hypothesis import settings
from symgrad.codegen import calibration
from symgrad.codegen.emit import BACKENDS, generate
from symgrad.symbolic.derivation import derive

from symgrad.models import BUILTINS
from symgrad.pipeline import import_source

# CI replays the same examples every run (a red run must be reproducible); elsewhere they vary.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# The suite never writes to the user's cache folder: calibration goes to a scratch folder
# (inherited by the commands tests start), stating numpy for every kernel, so figures do not
# hang on what a measurement under the suite's own load would pick. test_calibration measures.
_SCRATCH_CACHE = tempfile.mkdtemp(prefix="symgrad-test-cache-")
os.environ[calibration.ENV_CACHE] = _SCRATCH_CACHE
calibration.save({"float32": {"light": None, "heavy": None}, "float64": {"light": None, "heavy": None},
                  "key": calibration.key(), "format": calibration.FORMAT, "sizes": [0, 0], "repeats": 0,
                  "seconds": 0.0})
atexit.register(shutil.rmtree, _SCRATCH_CACHE, ignore_errors=True)

_CACHE: dict = {}


def built(name: str, backend: str):
    """(model, derivation, generated module) for a built-in, generated once per session."""
    key = (name, backend)
    if key not in _CACHE:
        model = BUILTINS[name].build()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            derivation = derive(model)
        module = import_source(generate(derivation, backend), f"{name}_{backend}")
        _CACHE[key] = (model, derivation, module)
    return _CACHE[key]


@pytest.fixture(params=list(BUILTINS))
def model_name(request):
    return request.param


# numba modules compile each kernel (seconds a module): tests/test_numba.py checks them
@pytest.fixture(params=[b for b in BACKENDS if b != "numba"])
def backend(request):
    return request.param


def torch_or_skip(purpose: str = "to run this oracle"):
    """PyTorch, or a visible skip (an error in CI, where .ci/run installs it)."""
    try:
        import torch
    except ImportError:
        if os.environ.get("SYMGRAD_REQUIRE_TORCH"):
            pytest.fail("PyTorch is required here (SYMGRAD_REQUIRE_TORCH is set) but not installed")
        pytest.skip(f"PyTorch is not installed: pip install 'symgrad[torch]' {purpose}")
    torch.set_default_dtype(torch.float64)
    return torch
