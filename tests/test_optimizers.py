"""Optimizers from derived kernels, step by step against the textbook formulas (written out
here in plain numpy) and against PyTorch's optimizer of the same name."""
from __future__ import annotations

import numpy as np
import pytest
from symgrad.training import optimizers

from tests.conftest import torch_or_skip


def textbook(name: str, h: dict):
    """One step of each rule, in numpy, as the papers / torch.optim documentation write it."""
    def sgd(p, g, s, t):
        return p - h["lr"] * g

    def momentum(p, g, s, t):
        s["v"] = h["mu"] * s["v"] + g
        return p - h["lr"] * s["v"]

    def nesterov(p, g, s, t):
        s["v"] = h["mu"] * s["v"] + g
        return p - h["lr"] * (g + h["mu"] * s["v"])

    def adagrad(p, g, s, t):
        s["s"] = s["s"] + g * g
        return p - h["lr"] * g / (np.sqrt(s["s"]) + h["eps"])

    def rmsprop(p, g, s, t):
        s["s"] = h["alpha"] * s["s"] + (1 - h["alpha"]) * g * g
        return p - h["lr"] * g / (np.sqrt(s["s"]) + h["eps"])

    def adam(p, g, s, t, decay=0.0):
        p = p * (1 - h["lr"] * decay)
        s["m"] = h["beta1"] * s["m"] + (1 - h["beta1"]) * g
        s["v"] = h["beta2"] * s["v"] + (1 - h["beta2"]) * g * g
        m_hat = s["m"] / (1 - h["beta1"] ** t)
        v_hat = s["v"] / (1 - h["beta2"] ** t)
        return p - h["lr"] * m_hat / (np.sqrt(v_hat) + h["eps"])

    def adamw(p, g, s, t):
        return adam(p, g, s, t, h["weight_decay"])

    return locals()[name]


@pytest.mark.parametrize("name", list(optimizers.OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_matches_textbook_over_several_steps(name, dtype):
    opt = optimizers.load(name)
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((4, 3)).astype(dtype), "b": rng.standard_normal(3).astype(dtype)}
    hypers = dict(opt.HYPERS)
    state = opt.init_state(params)
    ref = {k: v.astype(np.float64) for k, v in params.items()}
    ref_state = {k: {s: np.zeros_like(v) for s in opt.STATE} for k, v in ref.items()}
    rule = textbook(name, hypers)
    for t in range(1, 6):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
        before = {k: v for k, v in params.items()}
        opt.step(params, grads, state, t)
        for k in params:
            assert params[k] is before[k] and params[k].dtype == dtype  # updated in place
            ref[k] = rule(ref[k], grads[k].astype(np.float64), ref_state[k], t)
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(params[k], ref[k], rtol=tol, atol=tol, err_msg=f"{name} step {t}")
            for s in opt.STATE:
                np.testing.assert_allclose(state[k][s], ref_state[k][s], rtol=tol, atol=tol)


def test_step_rejects_views_it_cannot_update_in_place():
    opt = optimizers.load("sgd")
    W = np.ones((4, 4))[:, :2]
    with pytest.raises(ValueError, match="writeable C-contiguous"):
        opt.step({"W": W}, {"W": np.ones((4, 2))}, opt.init_state({"W": W}), 1)


@pytest.mark.parametrize("name", list(optimizers.OPTIMIZERS))
def test_optimizer_matches_pytorch(name):
    torch = torch_or_skip()
    opt = optimizers.load(name)
    h = dict(opt.HYPERS)
    factory = {
        "sgd": lambda ps: torch.optim.SGD(ps, lr=h["lr"]),
        "momentum": lambda ps: torch.optim.SGD(ps, lr=h["lr"], momentum=h.get("mu", 0)),
        "nesterov": lambda ps: torch.optim.SGD(ps, lr=h["lr"], momentum=h.get("mu", 0), nesterov=True),
        "adagrad": lambda ps: torch.optim.Adagrad(ps, lr=h["lr"], eps=h.get("eps", 0)),
        "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=h["lr"], alpha=h.get("alpha", 0),
                                                  eps=h.get("eps", 0)),
        "adam": lambda ps: torch.optim.Adam(ps, lr=h["lr"], betas=(h.get("beta1", 0), h.get("beta2", 0)),
                                            eps=h.get("eps", 0)),
        "adamw": lambda ps: torch.optim.AdamW(ps, lr=h["lr"], betas=(h.get("beta1", 0), h.get("beta2", 0)),
                                              eps=h.get("eps", 0), weight_decay=h.get("weight_decay", 0)),
    }[name]
    rng = np.random.default_rng(1)
    params = {"W": rng.standard_normal((5, 2)), "b": rng.standard_normal(2)}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    topt = factory(list(tparams.values()))
    state = opt.init_state(params)
    for t in range(1, 8):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        opt.step(params, grads, state, t)
        for k, p in tparams.items():
            p.grad = torch.tensor(grads[k])
        topt.step()
        for k in params:
            np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name} step {t}")


def test_unknown_optimizer_is_a_clear_error():
    from symgrad.symbolic.errors import SymgradError

    with pytest.raises(SymgradError, match="unknown optimizer 'bfgs'; choose one of sgd.*lbfgs"):
        optimizers.load("bfgs")
