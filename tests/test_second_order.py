"""Second order: every built-in module's `hvp` against five-point differences of its own
generated gradient along the vector and against PyTorch's double backward (autograd through
the oracle interpreter, create_graph=True), `hessian` symmetric and equal to stacked HVPs,
per-player HVPs of a GAN, the linear-algebra primitives' HVPs, kinks (relu, abs, max) with a
second derivative of 0, and the Python API."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
from symgrad.symbolic import ops as F

import symgrad as sg
from symgrad.models import BUILTINS
from tests.conftest import torch_or_skip
from tests.oracle import Interpreter, jiggle, leaves_for, random_batch, relative_error, run_kwargs


def committed(name: str):
    return importlib.import_module(f"symgrad.generated.{name}")


def setup(module, seed: int, low: int = 1, high: int = 5):
    rng = np.random.default_rng(seed)
    dims = {d: int(rng.integers(low, high)) for d in module.DIMS}
    return (dims, *fixed_setup(module, dims, seed, rng))


def fixed_setup(module, dims: dict, seed: int, rng=None):
    """Parameters, a batch and a vector at the given dims."""
    rng = np.random.default_rng(seed) if rng is None else rng
    params = jiggle(module.init_params(dims, seed=seed, dtype=np.float64), rng)
    batch = random_batch(module, dims, rng)
    vector = {k: rng.standard_normal(p.shape) for k, p in params.items()}
    return params, batch, vector


def gradient_differences(grad, params: dict, vector: dict, h: float = 1e-4) -> dict:
    """(-g(x+2hv) + 8g(x+hv) - 8g(x-hv) + g(x-2hv)) / 12h: the five-point derivative of the
    gradient along v."""
    gs = [grad({k: p + s * h * vector[k] for k, p in params.items()}) for s in (2, 1, -1, -2)]
    return {k: (-gs[0][k] + 8 * gs[1][k] - 8 * gs[2][k] + gs[3][k]) / (12 * h) for k in gs[0]}


def error(got: dict, want: dict) -> dict:
    """Each parameter's max error relative to its largest entry, but at least a thousandth of
    the largest entry of any parameter (a saturated softmax's bias HVP of 1e-12 beside weights'
    of 30 is rounding noise)."""
    floor = 1e-3 * max(max(np.abs(w).max(initial=0) for w in want.values()), 1e-8)
    return {k: float(np.abs(got[k] - want[k]).max(initial=0)
                     / max(np.abs(want[k]).max(initial=0), np.abs(got[k]).max(initial=0), floor))
            for k in want}


def difference_error(hv: dict, grad, params: dict, vector: dict) -> dict:
    """`error` of hv against the five-point differences at the step (1e-4, 1e-5, 1e-3, 1e-6)
    that agrees best: a max-pooling or relu kink crossed within 2h of the point makes the
    gradient jump, so one step alone may fail a right HVP."""
    best = {k: np.inf for k in hv}
    for h in (1e-4, 1e-5, 1e-3, 1e-6):
        fd = gradient_differences(grad, params, vector, h)
        best = {k: min(best[k], e) for k, e in error(hv, {k: fd[k] for k in hv}).items()}
    return best


@pytest.mark.parametrize("name", list(BUILTINS))
@pytest.mark.parametrize("seed", [0, 1])
def test_hvp_matches_differences_of_the_generated_gradient(name, seed):
    module = committed(name)
    dims, params, batch, vector = setup(module, seed, low=2)
    kw = run_kwargs(module, dims)
    loss, grads, hv = module.hvp(params, batch, vector, **kw)
    loss1, grads1 = module.loss_and_grad(params, batch, **run_kwargs(module, dims))
    assert loss == pytest.approx(loss1, rel=1e-12)
    err = difference_error(hv, lambda p: module.loss_and_grad(p, batch, **run_kwargs(module, dims))[1],
                           params, vector)
    for k in params:
        assert hv[k].shape == params[k].shape and hv[k].dtype == np.float64
        assert relative_error(grads[k], grads1[k]) <= 1e-12, k
        assert err[k] <= 1e-6, (k, dims)


@pytest.mark.parametrize("name", list(BUILTINS))
def test_hvp_matches_pytorch_double_backward(name):
    torch = torch_or_skip()
    model = BUILTINS[name].build()
    module = committed(name)
    dims, params, batch, vector = setup(module, 3, low=2)
    kw = run_kwargs(module, dims)  # dropout off: the oracle draws no masks
    _, _, hv = module.hvp(params, batch, vector, **kw)
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    leaves = leaves_for(module, tparams, {k: torch.tensor(v) for k, v in batch.items()}, kw, lib=torch.tensor)
    (tloss,) = Interpreter("torch").evaluate([model.losses["L"]], leaves, dims)
    names = list(params)
    grads = torch.autograd.grad(tloss, [tparams[k] for k in names], create_graph=True, allow_unused=True)
    inner = sum((g * torch.tensor(vector[k])).sum() for k, g in zip(names, grads, strict=True)
                if g is not None)
    second = torch.autograd.grad(inner, [tparams[k] for k in names], allow_unused=True)
    want = {k: np.zeros_like(params[k]) if h is None else h.numpy()
            for k, h in zip(names, second, strict=True)}
    for k, e in error(hv, want).items():
        assert e <= 1e-9, k


@pytest.mark.parametrize("name", ["logistic_regression", "mlp_relu", "lstm_digits", "gaussian_nll"])
def test_hessian_is_symmetric_and_equals_stacked_hvps(name):
    module = committed(name)
    dims, params, batch, _ = setup(module, 4, low=2, high=4)
    wrt = min(params, key=lambda k: params[k].size)
    H = module.hessian(params, batch, wrt, **run_kwargs(module, dims))
    n = params[wrt].size
    assert H.shape == (n, n)
    columns = []
    for j in range(n):
        e = {k: np.zeros_like(p) for k, p in params.items()}
        e[wrt].reshape(-1)[j] = 1.0
        columns.append(module.hvp(params, batch, e, **run_kwargs(module, dims))[2][wrt].reshape(-1))
    assert np.array_equal(H, np.stack(columns, axis=1))
    assert relative_error(H, H.T) <= 1e-12
    with pytest.raises(KeyError, match="no parameter 'nope'"):
        module.hessian(params, batch, "nope")


def test_gan_hvp_per_player():
    """hvp_L_D is the Hessian of the discriminator's loss in its own parameters only."""
    module = committed("gan_ring")
    dims, params, batch, vector = setup(module, 5, low=2)
    for objective, own in module.OBJECTIVES.items():
        v = {k: vector[k] for k in own}
        loss, grads, hv = getattr(module, f"hvp_{objective}")(params, batch, v)
        assert set(hv) == set(own) == set(grads)

        def grad(p, objective=objective):
            return getattr(module, f"loss_and_grad_{objective}")(p, batch)[1]

        err = difference_error(hv, grad, params, {**{k: np.zeros_like(p) for k, p in params.items()}, **v})
        for k in own:
            assert err[k] <= 1e-6, (objective, k)
        H = getattr(module, f"hessian_{objective}")(params, batch, own[-1])
        assert relative_error(H, H.T) <= 1e-12


def kinked_model():
    m = sg.Model("kinks")
    B, n = m.dims("B n")
    X, W = m.input("X", (B, n)), m.param("W", (n, n))
    h = X @ W
    m.loss(sg.sum(sg.relu(h) * h) + sg.sum(sg.abs(h) * h) + sg.sum(F.max(h * h, 1)))
    return m


def test_kinks_have_a_second_derivative_of_zero_almost_everywhere():
    """relu, abs and max: their second derivative is 0 away from the kinks (DiracDelta lowered
    as 0), as in PyTorch; the generated HVP still matches differences of the gradient."""
    module = sg.load_module(kinked_model())
    assert "DiracDelta" not in sg.source(kinked_model())
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((3, 3))}
    batch = {"X": rng.standard_normal((4, 3))}
    vector = {"W": rng.standard_normal((3, 3))}
    _, _, hv = module.hvp(params, batch, vector)
    err = difference_error(hv, lambda p: module.loss_and_grad(p, batch)[1], params, vector)
    assert err["W"] <= 1e-6


def test_linear_algebra_hvps_match_differences():
    """Every linear-algebra primitive's generated HVP (see test_linalg's cases) against the
    five-point derivative of its generated gradient."""
    from tests.test_linalg import CASES, module_for, values

    rng = np.random.default_rng(11)
    for case in CASES:
        for stacked in (False, True):
            _, module = module_for(case, stacked)
            dims = {"b": int(rng.integers(1, 3)), "n": int(rng.integers(1, 4)), "k": int(rng.integers(1, 3))}
            params, batch = values(case, stacked, dims, rng)
            vector = {k: rng.standard_normal(p.shape) for k, p in params.items()}
            _, _, hv = module.hvp(params, batch, vector)
            err = difference_error(hv, lambda p, m=module, b=batch: m.loss_and_grad(p, b)[1], params, vector)
            for k in params:
                assert err[k] <= 1e-6, (case, stacked, k, dims)


def test_python_api():
    model = BUILTINS["logistic_regression"].build()
    h = sg.hvp(model)
    assert set(h.products) == set(model.params) and h.inner.shape == ()
    hs = sg.hessian(model, wrt="W")
    assert hs.wrt == "W" and "def hessian(" in sg.generate(hs)
    with pytest.raises(sg.ModelError, match="no parameter 'V'"):
        sg.hessian(model, wrt="V")


def test_jacobian_of_softmax_is_diag_p_minus_p_p_transposed():
    """sg.jacobian(model, of=, wrt=) generates jacobian_<of>_<wrt>: for softmax(z), the
    textbook diag(p) - p p^T; and for an MLP's output w.r.t. its input, central differences."""
    m = sg.Model("softmax_alone")
    (n,) = m.dims("n")
    z = m.input("z", (1, n))
    m.param("unused", (1,))
    m.output("p", sg.softmax(z, axis=1))
    m.loss(sg.sum(m.params["unused"]))
    module = sg.load_module(sg.jacobian(m, of="p", wrt="z"))
    z0 = np.array([[0.3, -1.2, 2.0, 0.1]])
    J = module.jacobian_p_z({"unused": np.zeros(1)}, {"z": z0})
    p = np.exp(z0[0]) / np.exp(z0[0]).sum()
    assert relative_error(J, np.diag(p) - np.outer(p, p)) <= 1e-14
    with pytest.raises(sg.ModelError, match="no output 'q'"):
        sg.jacobian(m, of="q", wrt="z")


@pytest.mark.parametrize("name", ["logistic_regression", "linear_regression"])
def test_closed_form_hessian_is_found_and_matches_the_generated_hessian(name):
    """Logistic regression: X^T diag(p (1 - p)) X / (B n_out); least squares: 2 X^T X / (B n_out),
    per output column; the curvature d evaluated by the oracle interpreter."""
    from symgrad.symbolic.second_order import closed_form_hessian

    model = BUILTINS[name].build()
    d = sg.derive(model)
    cf = closed_form_hessian(d, "W")
    assert cf is not None and closed_form_hessian(d, "b") is None
    assert closed_form_hessian(sg.derive(BUILTINS["softmax_regression"].build()), "W") is None  # not diagonal
    module = committed(name)
    dims, params, batch, _ = setup(module, 6, low=2)
    (curv,) = Interpreter("numpy").evaluate([cf.d], {**params, **batch}, dims)
    X = batch["X"]
    curv = np.broadcast_to(curv, (X.shape[0], params["W"].shape[1]))
    n_in, n_out = params["W"].shape
    H = module.hessian(params, batch, "W").reshape(n_in, n_out, n_in, n_out)
    for a in range(n_out):
        for b in range(n_out):
            want = X.T @ (curv[:, a:a + 1] * X) if a == b else np.zeros((n_in, n_in))
            assert relative_error(H[:, a, :, b], want) <= 1e-12
    if name == "logistic_regression":
        p = 1 / (1 + np.exp(-(X @ params["W"] + params["b"])))
        assert relative_error(curv, p * (1 - p) / (X.shape[0] * n_out)) <= 1e-12


@pytest.mark.parametrize("name", ["cnn_digits", "lstm_digits", "gru_digits", "attention_digits", "mlp_tanh"])
def test_hvp_results_do_not_share_memory_with_a_later_call(name):
    """hvp keeps its temporaries (patch matrices, products over every patch or step, a dense
    model's (batch, features) arrays) in a workspace across calls: nothing it returns may be
    one of them."""
    module = committed(name)
    dims = {d: 3 for d in module.DIMS}
    (p1, b1, v1), (p2, b2, v2) = (fixed_setup(module, dims, seed) for seed in (7, 8))
    loss, grads, hv = module.hvp(p1, b1, v1, **run_kwargs(module, dims))
    kept = {k: (g.copy(), hv[k].copy()) for k, g in grads.items()}
    module.hvp(p2, b2, v2, **run_kwargs(module, dims))
    for k, (g, h) in kept.items():
        np.testing.assert_array_equal(grads[k], g, err_msg=k)
        np.testing.assert_array_equal(hv[k], h, err_msg=k)


def test_products_read_transposed_are_computed_the_other_way_round():
    """(A B)^T that only a transpose reads becomes B^T A^T (laid out as it is read); a product
    something else reads too stays as it is."""
    from symgrad.symbolic.graph import placeholder
    from symgrad.symbolic.second_order import simplified

    A, Bm = placeholder("A", (3, 4)), placeholder("Bm", (4, 5))
    roots = simplified({"r": (A @ Bm).T * 2})
    (product,) = [n for n in roots["r"].args if n.op == "matmul"]
    assert product.args == (Bm.T, A.T)
    both = simplified({"r": (A @ Bm).T * 2, "s": (A @ Bm) + 1})
    assert both["r"].args[0].op == "transpose" and both["r"].args[0].args[0].op == "matmul"


def test_a_sum_of_zeros_is_zeros():
    from symgrad.symbolic.graph import broadcast_to, const, placeholder
    from symgrad.symbolic.second_order import simplified

    x = placeholder("x", (3, 2, 4))
    r = simplified({"r": broadcast_to(const(0), (3, 2, 4)).sum(axis=1), "s": x.sum(axis=1)})
    assert r["r"].op == "broadcast_to" and r["r"].args[0].attr("value") == 0 and r["r"].shape == (3, 4)
    assert r["s"].op == "sum"


def test_stacks_of_patches_and_steps_count_as_large():
    """A (16*B, 144) stack of patches and an (8*B, n_h) stack of time steps are large; a
    batch's (B, n_h) rows are not."""
    import sympy
    from symgrad.codegen.program import is_large

    B, n_h = (sympy.Symbol(s, integer=True, positive=True) for s in ("B", "n_h"))
    assert is_large((16 * B, 32)) and is_large((144, 16 * B)) and is_large((8 * B, n_h))
    assert not is_large((B, 32)) and not is_large((B, n_h)) and not is_large((n_h, n_h))
