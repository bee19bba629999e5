"""Dropout, batch normalisation and weight penalties, written in the model equations and
derived like everything else: modes, masks, running statistics, gradients."""
from __future__ import annotations

import numpy as np
import pytest

import symgrad as sg
from tests.conftest import built, torch_or_skip
from tests.oracle import finite_differences


def bn_model():
    m = sg.Model("bn_probe")
    B, n, k = m.dims("B n k")
    X, R = m.input("X", (B, n)), m.target("R", (B, k))
    W = m.param("W", (n, k))
    z = m.let("z", X @ W)
    h = m.let("h", m.batchnorm(z, "bn"))
    m.output("h_out", h)
    m.loss(sg.sum(sg.tanh(h) * R))
    return m


def dropout_model():
    m = sg.Model("dropout_probe")
    B, n = m.dims("B n")
    X = m.input("X", (B, n))
    W = m.param("W", (n,), init="ones")
    rate = m.hyper("rate", 0.25)
    h = m.let("h", m.dropout(X * W, rate))
    m.output("kept", h)
    m.loss(sg.sum(h))
    return m


def test_batchnorm_matches_pytorch_in_training_and_evaluation():
    torch = torch_or_skip()
    mod = sg.load_module(bn_model())
    rng = np.random.default_rng(0)
    X, R = rng.standard_normal((7, 4)), rng.standard_normal((7, 3))
    params = {"W": rng.standard_normal((4, 3)), "bn_gamma": rng.uniform(0.5, 2, 3),
              "bn_beta": rng.standard_normal(3)}
    state = mod.init_state({"k": 3}, np.float64)
    loss, grads = mod.loss_and_grad(params, {"X": X, "R": R}, state=state)

    bn = torch.nn.BatchNorm1d(3, eps=1e-5, momentum=0.1, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(params["bn_gamma"]))
        bn.bias.copy_(torch.tensor(params["bn_beta"]))
    W = torch.tensor(params["W"], requires_grad=True)
    tloss = (torch.tanh(bn(torch.tensor(X) @ W)) * torch.tensor(R)).sum()
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    np.testing.assert_allclose(grads["W"], W.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["bn_gamma"], bn.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["bn_beta"], bn.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(state["bn_mean"], bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(state["bn_var"], bn.running_var.numpy(), rtol=1e-12)  # unbiased, as torch

    bn.eval()
    out = mod.forward(params, {"X": X}, state=state)["h_out"]
    np.testing.assert_allclose(out, bn(torch.tensor(X) @ W).detach().numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="pass state="):
        mod.forward(params, {"X": X})


def test_batchnorm_gradient_matches_finite_differences():
    mod = sg.load_module(bn_model())
    rng = np.random.default_rng(1)
    batch = {"X": rng.standard_normal((5, 3)), "R": rng.standard_normal((5, 2))}
    params = {"W": rng.standard_normal((3, 2)), "bn_gamma": rng.uniform(0.5, 2, 2),
              "bn_beta": rng.standard_normal(2)}
    _, grads = mod.loss_and_grad(params, batch)
    fd = finite_differences(lambda p: mod.loss(p, batch, training=True), params)
    for k in params:
        np.testing.assert_allclose(grads[k], fd[k], rtol=1e-7, atol=1e-9, err_msg=k)


def test_dropout_masks_are_inverted_seeded_and_off_in_evaluation():
    mod = sg.load_module(dropout_model())
    X = np.ones((400, 50), dtype=np.float32)
    params = {"W": np.ones(50, dtype=np.float32)}
    train = mod.forward(params, {"X": X}, training=True, rng=3)["kept"]
    assert train.dtype == np.float32
    assert set(np.unique(train)) == {0.0, np.float32(1 / 0.75)}  # zero, or scaled by 1/(1-rate)
    assert abs((train == 0).mean() - 0.25) < 0.01
    np.testing.assert_array_equal(train, mod.forward(params, {"X": X}, training=True, rng=3)["kept"])
    assert not np.array_equal(train, mod.forward(params, {"X": X}, training=True, rng=4)["kept"])
    np.testing.assert_array_equal(mod.forward(params, {"X": X})["kept"], X)  # evaluation: identity
    loss, grads = mod.loss_and_grad(params, {"X": X}, rng=3)
    assert loss == pytest.approx(float(train.sum()), rel=1e-5)
    np.testing.assert_allclose(grads["W"], train.sum(axis=0), rtol=1e-5)  # d/dW sum(X W M) = sum(X M)
    half = mod.forward(params, {"X": X}, {"rate": 0.5}, training=True, rng=3)["kept"]
    assert abs((half == 0).mean() - 0.5) < 0.01
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\)"):
        mod.loss_and_grad(params, {"X": X}, {"rate": 1.0})


def test_dropout_rate_is_checked_when_written():
    m = sg.Model("bad_dropout")
    B, n = m.dims("B n")
    X = m.input("X", (B, n))
    with pytest.raises(sg.ModelError, match=r"in \[0, 1\)"):
        m.dropout(X, 1.5)


def test_penalties_add_their_derived_gradients():
    _, _, mod = built("mlp_regularised", "auto")
    dims = {"B": 6, "n_in": 5, "n_h1": 4, "n_h2": 3, "n_out": 3}
    rng = np.random.default_rng(2)
    params = {k: v + 0.2 * rng.standard_normal(v.shape) for k, v in
              mod.init_params(dims, seed=2, dtype=np.float64).items()}
    batch = {"X": rng.standard_normal((6, 5)), "Y": np.eye(3)[rng.integers(0, 3, 6)]}
    base = {"dropout": 0.0, "l1": 0.0, "l2": 0.0}
    _, g0 = mod.loss_and_grad(params, batch, base)
    _, g2 = mod.loss_and_grad(params, batch, {**base, "l2": 0.1})
    _, g1 = mod.loss_and_grad(params, batch, {**base, "l1": 0.1})
    for w in ("W1", "W2", "W3"):
        np.testing.assert_allclose(g2[w] - g0[w], 0.2 * params[w], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(g1[w] - g0[w], 0.1 * np.sign(params[w]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g2["b3"], g0["b3"])  # biases are not penalised


def test_training_mode_updates_running_statistics_only_with_a_state():
    _, _, mod = built("mlp_regularised", "auto")
    dims = {"B": 8, "n_in": 5, "n_h1": 4, "n_h2": 3, "n_out": 3}
    params = mod.init_params(dims, seed=0, dtype=np.float64)
    X = np.random.default_rng(0).standard_normal((8, 5)) + 3.0
    batch = {"X": X, "Y": np.eye(3)[[0, 1, 2] * 2 + [0, 1]]}
    state = mod.init_state(dims, np.float64)
    before = {k: v.copy() for k, v in state.items()}
    mod.loss_and_grad(params, batch, state=state)
    assert not np.allclose(state["bn1_mean"], before["bn1_mean"])
    assert np.all(state["bn1_var"] > 0)
    l_a, _ = mod.loss_and_grad(params, batch)  # no state: a throwaway one, same loss
    l_b, _ = mod.loss_and_grad(params, batch, state=mod.init_state(dims, np.float64))
    assert l_a == l_b
