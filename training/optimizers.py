"""Optimizers, each written as update equations in the modelling language.

An optimizer is a `Model` with one parameter tensor `p`, its gradient `g`, state tensors and
scalar hyper-parameters, and `update` equations. The code generator turns each into a module
under `training/kernels/` whose `step()` updates every parameter and its state in place with
fused kernels (one kernel per updated tensor; numpy or numexpr by the same measured rule as
the models). Nothing here is executed as numpy: the equations are the single source of truth.

The rules follow PyTorch's definitions (torch.optim), so the two can be compared step by step.
"""
from __future__ import annotations

import importlib

from symgrad.codegen import calibration
from symgrad.symbolic import ops as F
from symgrad.symbolic.errors import SymgradError
from symgrad.symbolic.model import Model
from symgrad.training import second_order


def _base(name: str, description: str, lr: float) -> tuple[Model, object, object, object]:
    o = Model(name, description)
    (n,) = o.dims("n")
    p = o.param("p", (n,))
    g = o.input("g", (n,))
    lr_ = o.hyper("lr", lr)
    return o, p, g, lr_


def sgd() -> Model:
    o, p, g, lr = _base("sgd", "plain stochastic gradient descent: p <- p - lr g", 0.1)
    o.update(p, p - lr * g)
    return o


def momentum() -> Model:
    o, p, g, lr = _base("momentum", "SGD with (heavy-ball) momentum", 0.05)
    v = o.state("v", (o.dim_symbols["n"],))
    mu = o.hyper("mu", 0.9)
    v_new = o.update(v, mu * v + g)
    o.update(p, p - lr * v_new)
    return o


def nesterov() -> Model:
    o, p, g, lr = _base("nesterov", "SGD with Nesterov momentum (the look-ahead form)", 0.05)
    v = o.state("v", (o.dim_symbols["n"],))
    mu = o.hyper("mu", 0.9)
    v_new = o.update(v, mu * v + g)
    o.update(p, p - lr * (g + mu * v_new))
    return o


def adagrad() -> Model:
    o, p, g, lr = _base("adagrad", "Adagrad: per-coordinate steps scaled by all past squared gradients",
                        0.05)
    s = o.state("s", (o.dim_symbols["n"],))
    eps = o.hyper("eps", 1e-10)
    s_new = o.update(s, s + F.square(g))
    o.update(p, p - lr * g / (F.sqrt(s_new) + eps))
    return o


def rmsprop() -> Model:
    o, p, g, lr = _base("rmsprop", "RMSProp: steps scaled by a running mean of squared gradients",
                        0.001)
    s = o.state("s", (o.dim_symbols["n"],))
    alpha, eps = o.hyper("alpha", 0.99), o.hyper("eps", 1e-8)
    s_new = o.update(s, alpha * s + (1 - alpha) * F.square(g))
    o.update(p, p - lr * g / (F.sqrt(s_new) + eps))
    return o


def _adam(name: str, description: str, decoupled_decay: bool) -> Model:
    o, p, g, lr = _base(name, description, 0.001)
    n = o.dim_symbols["n"]
    m, v = o.state("m", (n,)), o.state("v", (n,))
    b1, b2 = o.hyper("beta1", 0.9), o.hyper("beta2", 0.999)
    eps = o.hyper("eps", 1e-8)
    t = o.hyper("t", 1)  # the step count, from 1; `step()` passes it
    if decoupled_decay:
        wd = o.hyper("weight_decay", 0.01)
        p = o.let("p_decayed", p * (1 - lr * wd))
    m_new = o.update(m, b1 * m + (1 - b1) * g)
    v_new = o.update(v, b2 * v + (1 - b2) * F.square(g))
    m_hat = o.let("m_hat", m_new / (1 - b1**t))
    v_hat = o.let("v_hat", v_new / (1 - b2**t))
    o.update(o.leaves["p"], p - lr * m_hat / (F.sqrt(v_hat) + eps))
    return o


def adam() -> Model:
    return _adam("adam", "Adam: bias-corrected running moments of the gradient", False)


def adamw() -> Model:
    return _adam("adamw", "AdamW: Adam with decoupled weight decay", True)


OPTIMIZERS = {f.__name__: f for f in (sgd, momentum, nesterov, adagrad, rmsprop, adam, adamw)}


#: every optimizer training offers: the update rules above, then the second-order methods
#: (`training.second_order`: full batch, from the generated module's hvp)
CHOICES = (*OPTIMIZERS, *second_order.NAMES)


def load(name: str):
    """The generated update module of an optimizer (committed under training/kernels/), or a
    second-order method, which has the same NAME, HYPERS, init_state and step, and FULL_BATCH."""
    if name in second_order.NAMES:
        return second_order.SecondOrder(name)
    if name not in OPTIMIZERS:
        raise SymgradError(f"unknown optimizer {name!r}; choose one of {', '.join(CHOICES)}")
    return calibration.install(importlib.import_module(f"symgrad.training.kernels.{name}"))
