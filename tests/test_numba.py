"""The numba backend: its modules compute what the numpy ones compute (every built-in kind of
kernel: bias rows, keepdims columns, scalars, relu's max, dropout masks, recurrences,
convolutions), and their gradients match central finite differences."""
from __future__ import annotations

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from symgrad.models import BUILTINS  # noqa: E402
from tests.conftest import built  # noqa: E402
from tests.oracle import finite_differences, jiggle, random_batch, relative_error, run_kwargs  # noqa: E402

MODELS = ["mlp_relu", "mlp_regularised", "lstm_digits", "gru_digits", "cnn_digits", "gaussian_nll",
          "attention_digits"]


def _case(name: str, dtype, seed: int):
    _, _, reference = built(name, "numpy")
    rng = np.random.default_rng(seed)
    dims = {**reference.DEFAULT_DIMS, **{d: int(rng.integers(2, 5)) for d in reference.DIMS
                                         if d not in reference.DEFAULT_DIMS}}
    params = jiggle(reference.init_params(dims, seed=seed, dtype=dtype), rng)
    batch = random_batch(reference, dims, rng, dtype)
    return reference, dims, params, batch


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_numba_module_matches_numpy_module(name, dtype, tol):
    assert name in BUILTINS
    reference, dims, params, batch = _case(name, dtype, seed=3)
    _, _, module = built(name, "numba")
    assert "numba" in vars(module) and module.BACKEND == "numba"
    kw = run_kwargs(reference, dims, dtype)
    want_loss, want = reference.loss_and_grad(params, batch, **kw)
    kw = run_kwargs(reference, dims, dtype)
    got_loss, got = module.loss_and_grad(params, batch, **kw)
    assert got_loss == pytest.approx(want_loss, rel=tol, abs=tol)
    for k, g in want.items():
        assert got[k].dtype == g.dtype == dtype, k
        scale = max(1.0, float(np.abs(g).max()))
        np.testing.assert_allclose(got[k], g, rtol=tol, atol=tol * scale, err_msg=k)


@pytest.mark.parametrize("name", ["mlp_relu", "lstm_digits"])
def test_numba_gradients_match_finite_differences(name):
    reference, dims, params, batch = _case(name, np.float64, seed=5)
    _, _, module = built(name, "numba")
    kw = run_kwargs(reference, dims)
    _, grads = module.loss_and_grad(params, batch, **kw)
    diffs = finite_differences(lambda p: module.loss(p, batch, training=True, **run_kwargs(reference, dims)),
                               params)
    for k, g in grads.items():
        mask = ~np.isnan(diffs[k])
        assert relative_error(g[mask], diffs[k][mask]) < 1e-6, k


def test_numba_kernel_follows_numpy_on_division_by_zero_and_broadcasting():
    """A compiled kernel's loop indexes a bias row, a keepdims column and a scalar the way
    numpy broadcasts them, and x/0 is inf or nan as in numpy, never ZeroDivisionError."""
    import sympy
    from symgrad.codegen.numba_kernels import numba_lines, operand_layout

    a, b, c, d = (sympy.Symbol(s, real=True) for s in "abcd")
    out_shape = (sympy.Symbol("B"), sympy.Symbol("n"))
    layouts = tuple(operand_layout(s, out_shape) for s in (out_shape, (out_shape[1],), (out_shape[0], 1), ()))
    body = numba_lines((a + b) / c * d, ("a", "b", "c", "d"), frozenset("d"), 2, layouts)
    source = "def kernel(a, b, c, d, out):\n" + "".join(f"    {line}\n" for line in body) + "    return out\n"
    space = {"np": np}
    exec(source, space)  # noqa: S102 - the text numba_lines wrote, from symbols made here
    kernel = numba.njit(error_model="numpy")(space["kernel"])
    rng = np.random.default_rng(0)
    A, bias, col = rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal((4, 1))
    col[1, 0] = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        want = (A + bias) / col * 2.5
    got = kernel(A, bias, col, 2.5, np.empty((4, 3)))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=1e-15)


@pytest.mark.parametrize("name", MODELS)
def test_numba_hvp_and_hessian_match_the_numpy_module_and_differences(name):
    """The second-order functions under the numba backend: hvp equal to the numpy module's
    (float64, 1e-10) and to five-point differences of the numba module's own gradient; hessian
    equal to the numpy module's."""
    from tests.test_second_order import difference_error

    reference, dims, params, batch = _case(name, np.float64, seed=7)
    _, _, module = built(name, "numba")
    vector = {k: np.random.default_rng(8).standard_normal(p.shape) for k, p in params.items()}
    want_loss, want_grads, want = reference.hvp(params, batch, vector, **run_kwargs(reference, dims))
    got_loss, got_grads, got = module.hvp(params, batch, vector, **run_kwargs(reference, dims))
    assert got_loss == pytest.approx(want_loss, rel=1e-12)
    for k in params:
        scale = max(1.0, float(np.abs(want[k]).max()))
        np.testing.assert_allclose(got[k], want[k], rtol=1e-10, atol=1e-10 * scale, err_msg=k)
        np.testing.assert_allclose(got_grads[k], want_grads[k], rtol=1e-10, atol=1e-10, err_msg=k)
    err = difference_error(got, lambda p: module.loss_and_grad(p, batch, **run_kwargs(reference, dims))[1],
                           params, vector)
    assert max(err.values()) <= 1e-6, err
    wrt = min(params, key=lambda k: params[k].size)  # the smallest: a bias or a gain
    np.testing.assert_allclose(module.hessian(params, batch, wrt, **run_kwargs(reference, dims)),
                               reference.hessian(params, batch, wrt, **run_kwargs(reference, dims)),
                               rtol=1e-10, atol=1e-10)
