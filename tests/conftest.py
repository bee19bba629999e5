"""Shared fixtures: every built-in model's module, generated fresh for each backend."""
from __future__ import annotations

import os
import warnings

import pytest
from hypothesis import settings
from symgrad.codegen.emit import BACKENDS, generate
from symgrad.symbolic.derivation import derive

from symgrad.models import BUILTINS
from symgrad.pipeline import import_source

# CI replays the same examples every run (a red run must be reproducible); elsewhere they vary.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

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


def torch_or_skip():
    """PyTorch, or a visible skip (an error in CI, where .ci/run installs it)."""
    try:
        import torch
    except ImportError:
        if os.environ.get("SYMGRAD_REQUIRE_TORCH"):
            pytest.fail("PyTorch is required here (SYMGRAD_REQUIRE_TORCH is set) but not installed")
        pytest.skip("PyTorch is not installed: pip install 'symgrad[torch]' to run this oracle")
    torch.set_default_dtype(torch.float64)
    return torch
