"""Forward outputs against a direct evaluation of the equations; dtypes kept end to end."""
from __future__ import annotations

import numpy as np
import pytest

from symgrad.models import BUILTINS
from tests.conftest import built
from tests.oracle import Interpreter, jiggle, leaves_for, random_batch, run_kwargs


@pytest.mark.parametrize("name", list(BUILTINS))
@pytest.mark.parametrize("backend", ["auto", "numpy", "numexpr"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("training", [False, True])
def test_forward_and_loss_match_direct_evaluation(name, backend, seed, training):
    model, _, module = built(name, backend)
    rng = np.random.default_rng(seed)
    dims = {d: int(rng.integers(2, 12)) for d in module.DIMS}
    params = jiggle(module.init_params(dims, seed=seed, dtype=np.float64), rng)
    batch = random_batch(module, dims, rng)
    kw = run_kwargs(module, dims)
    for k in kw["state"]:  # running statistics away from their initial values
        kw["state"][k] += rng.uniform(0.1, 0.5, kw["state"][k].shape)
    roots = list(model.outputs.values()) + [model.losses["L"]]
    leaves = leaves_for(module, params, batch, kw)
    *outputs, loss = Interpreter("numpy", training).evaluate(roots, leaves, dims)
    got = module.forward(params, batch, training=training, **kw)
    assert list(got) == list(model.outputs)
    for (key, want), value in zip(got.items(), outputs, strict=True):
        np.testing.assert_allclose(want, value, rtol=1e-10, atol=1e-12, err_msg=key)
    assert module.loss(params, batch, training=training, **kw) == pytest.approx(float(loss), rel=1e-10)


@pytest.mark.parametrize("name", list(BUILTINS))
@pytest.mark.parametrize("backend", ["numpy", "numexpr"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept_end_to_end(name, backend, dtype):
    _, _, module = built(name, backend)
    dims = {d: 5 for d in module.DIMS}
    rng = np.random.default_rng(0)
    params = module.init_params(dims, seed=0, dtype=dtype)
    batch = random_batch(module, dims, rng, dtype=np.float64)  # inputs are cast to the params' dtype
    kw = run_kwargs(module, dims, dtype)
    loss, grads = module.loss_and_grad(params, batch, **kw)
    assert isinstance(loss, float) and np.isfinite(loss)
    for k, g in grads.items():
        assert g.dtype == dtype and g.shape == params[k].shape, k
    for k, v in module.forward(params, batch, **kw).items():
        assert v.dtype == dtype, k
    if dtype == np.float32:  # float32 agrees with float64 to float32 precision
        p64 = {k: v.astype(np.float64) for k, v in params.items()}
        loss64, grads64 = module.loss_and_grad(p64, batch, **run_kwargs(module, dims))
        assert loss == pytest.approx(loss64, rel=1e-4)
        for k in grads:
            np.testing.assert_allclose(grads[k], grads64[k], rtol=2e-3, atol=1e-5)


def test_auto_backend_switches_engine_by_size(monkeypatch):
    """The auto rule dispatches per kernel; both engines give the same numbers."""
    _, _, module = built("mlp_tanh", "auto")
    dims = {"B": 64, "n_in": 16, "n_h1": 32, "n_h2": 16, "n_out": 4}
    rng = np.random.default_rng(1)
    params = jiggle(module.init_params(dims, dtype=np.float64), rng)
    batch = random_batch(module, dims, rng)
    calls = []
    import numexpr

    real = numexpr.evaluate
    monkeypatch.setattr(module.ne, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    before = dict(module._NUMEXPR_FROM)
    try:  # through the setter, which also tells the kernels whether numexpr may run at all
        module.set_numexpr_thresholds({k: None for k in before})
        l_numpy, g_numpy = module.loss_and_grad(params, batch)
        assert not calls
        module.set_numexpr_thresholds({k: 1 for k in before})
        l_ne, g_ne = module.loss_and_grad(params, batch)
        assert calls
    finally:
        module.set_numexpr_thresholds(before)
    assert l_ne == pytest.approx(l_numpy, rel=1e-12)
    for k in g_numpy:
        np.testing.assert_allclose(g_ne[k], g_numpy[k], rtol=1e-10, atol=1e-13)


def test_set_backend_validates():
    _, _, module = built("mlp_tanh", "auto")
    with pytest.raises(ValueError, match="backend must be one of"):
        module.set_backend("cuda")
    _, _, numpy_only = built("mlp_tanh", "numpy")
    assert not hasattr(numpy_only, "ne")
    with pytest.raises(ValueError):
        numpy_only.set_backend("numexpr")


def test_validate_reports_inconsistent_dims():
    _, _, module = built("mlp_tanh", "auto")
    dims = {"B": 3, "n_in": 4, "n_h1": 5, "n_h2": 6, "n_out": 2}
    params = module.init_params(dims)
    assert module.validate(params) == {"n_in": 4, "n_h1": 5, "n_h2": 6, "n_out": 2}
    with pytest.raises(ValueError, match="'X' has 7 along axis 1, but dim n_in is 4"):
        module.validate(params, {"X": np.zeros((3, 7)), "Y": np.zeros((3, 2))})
    with pytest.raises(KeyError, match="'Y' is missing"):
        module.validate(params, {"X": np.zeros((3, 4))})
    assert module.validate(params, {"X": np.zeros((3, 4))}, targets=False)["B"] == 3
    with pytest.raises(ValueError, match="dim 'n_in' is missing"):  # n_h1, n_h2 have defaults
        module.init_params({"n_h1": 5, "n_out": 2})


def test_init_params_is_seeded_and_dtype_independent():
    _, _, module = built("mlp_relu", "auto")
    dims = {"n_in": 6, "n_h1": 5, "n_h2": 4, "n_out": 3}
    a, b = module.init_params(dims, seed=4), module.init_params(dims, seed=4)
    c = module.init_params(dims, seed=5, dtype=np.float64)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.allclose(a["W1"], c["W1"])
    np.testing.assert_allclose(module.init_params(dims, seed=4, dtype=np.float64)["W1"], a["W1"], rtol=1e-6)
    assert np.all(a["b1"] == np.float32(0.1))  # rectifier biases start slightly positive


def test_set_backend_routes_an_auto_modules_kernels(monkeypatch):
    """Forcing an engine on an auto module reaches every kernel, whatever the thresholds say."""
    _, _, module = built("mlp_tanh", "auto")
    dims = {"B": 8, "n_in": 5, "n_h1": 6, "n_h2": 4, "n_out": 3}
    rng = np.random.default_rng(2)
    params = module.init_params(dims, dtype=np.float64)
    batch = random_batch(module, dims, rng)
    calls = []
    import numexpr

    real = numexpr.evaluate
    monkeypatch.setattr(module.ne, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    try:
        module.set_backend("numexpr")
        l_ne, g_ne = module.loss_and_grad(params, batch)
        assert calls
        calls.clear()
        module.set_backend("numpy")
        l_np, g_np = module.loss_and_grad(params, batch)
        assert not calls
    finally:
        module.set_backend("auto")
    assert l_ne == pytest.approx(l_np, rel=1e-12)
    for k in g_np:
        np.testing.assert_allclose(g_ne[k], g_np[k], rtol=1e-10, atol=1e-13)
