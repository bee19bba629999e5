"""Every built-in model's generated gradient, for every backend, against three oracles:
central finite differences in float64, sympy differentiating the loss symbolically at tiny
dims, and PyTorch autograd (when installed) -- over random dim sizes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symgrad.models import BUILTINS
from tests.conftest import built, torch_or_skip
from tests.oracle import (
    Interpreter,
    finite_differences,
    jiggle,
    leaves_for,
    random_batch,
    relative_error,
    run_kwargs,
    sympy_gradients,
)

TOL = 1e-6


def _dims(module, draw_size) -> dict[str, int]:
    return {d: draw_size() for d in module.DIMS}


@pytest.mark.parametrize("name", list(BUILTINS))
@pytest.mark.parametrize("backend", ["auto", "numpy", "numexpr"])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_gradient_matches_finite_differences(name, backend, data):
    _, _, module = built(name, backend)
    dims = {d: data.draw(st.integers(1, 6), label=d) for d in module.DIMS}
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    rng = np.random.default_rng(seed)
    params = jiggle(module.init_params(dims, seed=seed, dtype=np.float64), rng)
    batch = random_batch(module, dims, rng)
    # dropout at a real rate: masks come from rng=None (seed 0), the same on every call
    kw = run_kwargs(module, dims, **({"dropout": 0.3} if "dropout" in module.HYPERS else {}))
    kw["hypers"].update({k: 0.01 for k in ("l1", "l2") if k in module.HYPERS})
    loss, grads = module.loss_and_grad(params, batch, **kw)
    assert loss == pytest.approx(module.loss(params, batch, training=True, **kw), rel=1e-12)
    fd = finite_differences(lambda p: module.loss(p, batch, training=True, **kw), params, limit=48, seed=seed)
    for k in params:
        assert grads[k].shape == params[k].shape and grads[k].dtype == np.float64
        # absolute noise of the differences is ~1e-11; compare relative to the gradient's size,
        # but never demand more than that noise allows on a near-zero gradient
        checked = ~np.isnan(fd[k])
        scale = max(np.abs(fd[k][checked]).max(), np.abs(grads[k]).max(), 1e-4)
        assert np.abs(grads[k] - fd[k])[checked].max() / scale <= TOL, (k, dims)


def _small(name: str) -> bool:
    """Models whose dims can all be tiny. Image models have fixed sizes and recurrences fixed
    lengths, too big for sympy (an LSTM over 40 steps nests 40 levels deep); test_rnn checks
    the cells against sympy at two steps."""
    model = BUILTINS[name].build()
    shapes = [leaf.shape for leaf in model.leaves.values()]
    return not any(d.is_Integer and d > 4 for shape in shapes for d in shape)


@pytest.mark.parametrize("name", [n for n in BUILTINS if _small(n)])
def test_gradient_matches_sympy_on_explicit_matrices(name):
    model, _, module = built(name, "auto")
    rng = np.random.default_rng(7)
    dims = {d: 2 for d in module.DIMS}
    params = jiggle(module.init_params(dims, seed=3, dtype=np.float64), rng)
    batch = random_batch(module, dims, rng)
    kw = run_kwargs(module, dims)
    _, grads = module.loss_and_grad(params, batch, **kw)
    exact = sympy_gradients(model, params, batch, run_kwargs(module, dims), dims)
    for k in params:
        assert relative_error(grads[k], exact[k]) <= 1e-9, k


@pytest.mark.parametrize("name", list(BUILTINS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_matches_pytorch_autograd(name, seed):
    torch = torch_or_skip()
    model, _, module = built(name, "auto")
    rng = np.random.default_rng(seed)
    dims = {d: int(rng.integers(1, 9)) for d in module.DIMS}
    params = jiggle(module.init_params(dims, seed=seed, dtype=np.float64), rng)
    batch = random_batch(module, dims, rng)
    kw = run_kwargs(module, dims)
    loss, grads = module.loss_and_grad(params, batch, **kw)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    leaves = leaves_for(module, tparams, {k: torch.tensor(v) for k, v in batch.items()},
                        run_kwargs(module, dims), lib=torch.tensor)
    (tloss,) = Interpreter("torch").evaluate([model.losses["L"]], leaves, dims)
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-10)
    for k in params:
        assert relative_error(grads[k], tparams[k].grad.numpy()) <= 1e-8, k
