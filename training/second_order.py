"""Second-order optimizers: full-batch steps from the curvature of the generated `hvp`.

Each epoch is one step on the whole training split (the loop gives `step` a `Curvature`: the
full-batch loss, gradient and H v of the model at any point).

* `newton`: the exact Hessian of all parameters together (n HVPs, one per unit vector),
  the damped system (H + lambda I) d = -g solved by Cholesky, then a backtracking (Armijo)
  line search from the step `lr` d. lambda shrinks by 3 after a full step and grows by 3 after
  a shortened one (Levenberg-Marquardt); an indefinite H + lambda I grows it tenfold until the
  solve gives a descent direction. For models with few parameters (at most `MAX_NEWTON`):
  linear, logistic and softmax regression.
* `newton-cg`: Hessian-free (Martens 2010): truncated conjugate gradient on
  (H + lambda I) d = -g using only HVPs, warm-started from 0.95 times the last direction,
  stopped by Martens' relative-progress test, after `cg_iters` iterations, or at negative
  curvature; lambda follows the ratio of the actual to the predicted decrease (x 2/3 above
  3/4, x 3/2 below 1/4); then the same line search.
* `lbfgs`: scipy's L-BFGS-B on the full-batch loss and gradient, `iterations` of it per epoch.
  Its curvature pairs start afresh each epoch, so a resumed run continues exactly.

All work in float64 whatever the training dtype (float32 curvature loses the digits a solve
needs) and write the result back in the parameters' dtype. `lr` scales the step taken.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from symgrad.symbolic.errors import SymgradError

HYPERS = {
    "newton": {"lr": 1.0, "damping": 1e-4},
    "newton-cg": {"lr": 1.0, "damping": 1.0, "cg_iters": 50},
    "lbfgs": {"lr": 1.0, "iterations": 20, "memory": 10},
}
NAMES = tuple(HYPERS)
MAX_NEWTON = 2000  # parameters: the Hessian has n^2 entries and costs n HVPs an epoch
ARMIJO, HALVINGS = 1e-4, 40


@dataclass
class Curvature:
    """The full-batch loss and gradient, and H v, at given parameters (float64 dicts)."""

    loss_and_grad: Callable[[dict], tuple[float, dict]]
    hvp: Callable[[dict, dict], dict]


class Flat:
    """Parameters as one float64 vector and back, in the order of the parameter dict."""

    def __init__(self, like: dict[str, np.ndarray]):
        self.shapes = {k: v.shape for k, v in like.items()}
        self.size = sum(int(np.prod(s)) for s in self.shapes.values())

    def flat(self, arrays: dict) -> np.ndarray:
        return np.concatenate([np.asarray(arrays[k], dtype=np.float64).reshape(-1) for k in self.shapes])

    def unflat(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out, at = {}, 0
        for k, shape in self.shapes.items():
            n = int(np.prod(shape))
            out[k] = x[at:at + n].reshape(shape)
            at += n
        return out


class Problem:
    """The loss, gradient and H v as functions of the flat vector."""

    def __init__(self, curvature: Curvature, flat: Flat):
        self.curvature, self.f = curvature, flat

    def loss(self, x: np.ndarray) -> float:
        return float(self.curvature.loss_and_grad(self.f.unflat(x))[0])

    def loss_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grads = self.curvature.loss_and_grad(self.f.unflat(x))
        return float(loss), self.f.flat(grads)

    def hv(self, x: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self.f.flat(self.curvature.hvp(self.f.unflat(x), self.f.unflat(v)))

    def hessian(self, x: np.ndarray) -> np.ndarray:
        """Column j is H e_j; symmetrised (the two triangles agree to rounding)."""
        n = x.size
        H, e = np.empty((n, n)), np.zeros(n)
        for j in range(n):
            e[j] = 1.0
            H[:, j] = self.hv(x, e)
            e[j] = 0.0
        return (H + H.T) / 2


class SecondOrder:
    """What the training loop uses of an optimizer (NAME, HYPERS, init_state, step), plus
    FULL_BATCH: one step an epoch, given the curvature of the whole training split."""

    FULL_BATCH = True

    def __init__(self, name: str):
        if name not in HYPERS:
            raise SymgradError(f"unknown second-order optimizer {name!r}; choose one of {', '.join(NAMES)}")
        self.NAME = name
        self.HYPERS = dict(HYPERS[name])

    def check(self, hypers: dict | None) -> dict[str, float]:
        """The hyper-parameters with defaults filled in; a bad value is one clear line."""
        h = {**self.HYPERS, **(hypers or {})}
        for key in ("lr", "damping"):
            if key in h and not (math.isfinite(h[key]) and h[key] > 0):
                raise SymgradError(f"optimizer {self.NAME}: {key} must be a positive number, not {h[key]!r}")
        for key in ("cg_iters", "iterations", "memory"):
            if key in h and not (math.isfinite(h[key]) and float(h[key]).is_integer() and h[key] >= 1):
                raise SymgradError(f"optimizer {self.NAME}: {key} must be a positive whole number, "
                                   f"not {h[key]!r}")
        return h

    def init_state(self, params: dict[str, np.ndarray], hypers: dict | None = None
                   ) -> dict[str, dict[str, np.ndarray]]:
        """lambda (kept with the first parameter; from `hypers`' damping, the starting value)
        and, for newton-cg, the last direction."""
        h = self.check(hypers)
        n = Flat(params).size
        if self.NAME == "newton" and n > MAX_NEWTON:
            raise SymgradError(f"newton forms the full {n}x{n} Hessian, and this model has {n} parameters "
                               f"(newton's limit is {MAX_NEWTON}); use --optimizer newton-cg (Hessian-free, "
                               "HVPs only) or lbfgs")
        state: dict[str, dict[str, np.ndarray]] = {k: {} for k in params}
        if self.NAME != "lbfgs" and params:
            state[next(iter(params))]["damping"] = np.array(h["damping"], dtype=np.float64)
        if self.NAME == "newton-cg":
            for k, p in params.items():
                state[k]["direction"] = np.zeros(p.shape, dtype=np.float64)
        return state

    def step(self, params: dict, grads: dict, state: dict, t: int, hypers: dict | None, *,
             curvature: Curvature) -> None:
        """One full-batch step, in place. `grads` (the loop's, in the training dtype) is not
        used: the gradient is taken again in float64 at the same point."""
        h = self.check(hypers)
        flat = Flat(params)
        problem = Problem(curvature, flat)
        x = flat.flat(params)
        if self.NAME == "lbfgs":
            x_new = lbfgs(problem, x, h)
        else:
            f0, g = problem.loss_and_grad(x)
            damping = state[next(iter(params))]["damping"]
            if self.NAME == "newton":
                d, dHd = newton_direction(problem.hessian(x), g, float(damping))
            else:
                warm = 0.95 * flat.flat({k: state[k]["direction"] for k in params})
                d, dHd = cg_direction(lambda v: problem.hv(x, v), g, float(damping), warm, int(h["cg_iters"]))
                for k, v in flat.unflat(d).items():
                    state[k]["direction"][...] = v
            alpha, f_new = line_search(problem, x, f0, g, d, float(h["lr"]))
            x_new = x + alpha * d
            # Levenberg-Marquardt (Martens' constants): the ratio of the actual decrease to the
            # quadratic model's steers lambda
            predicted = alpha * (g @ d) + 0.5 * alpha**2 * dHd
            rho = (f_new - f0) / predicted if predicted < 0 else 0.0
            damping[...] = max(float(damping) * (2 / 3 if rho > 0.75 else 1.5 if rho < 0.25 else 1.0), 1e-12)
        for k, v in flat.unflat(x_new).items():
            np.copyto(params[k], v, casting="unsafe")




def newton_direction(H: np.ndarray, g: np.ndarray, damping: float) -> tuple[np.ndarray, float]:
    """d solving (H + lambda I) d = -g, lambda raised tenfold until H + lambda I is positive
    definite (Cholesky succeeds), so d is a descent direction; and d^T H d."""
    n = g.size
    while True:
        try:
            L = np.linalg.cholesky(H + damping * np.eye(n))
        except np.linalg.LinAlgError:
            damping = max(damping * 10, 1e-8)
            continue
        d = -np.linalg.solve(L.T, np.linalg.solve(L, g))
        return d, float(d @ H @ d)


def cg_direction(hv: Callable[[np.ndarray], np.ndarray], g: np.ndarray, damping: float,
                 start: np.ndarray, iters: int) -> tuple[np.ndarray, float]:
    """Truncated CG on (H + lambda I) d = -g from `start`; d and d^T H d (from the residual,
    no extra HVP)."""
    def A(v: np.ndarray) -> np.ndarray:
        return hv(v) + damping * v

    d = start.copy()
    r = -g - A(d)
    p, rr = r.copy(), r @ r
    values: list[float] = []
    for i in range(iters):
        Ap = A(p)
        curvature = p @ Ap
        if curvature <= 0:  # negative curvature along p: keep what was found so far
            break
        alpha = rr / curvature
        d += alpha * p
        r -= alpha * Ap
        # Martens' test: stop when the quadratic model q(d) = g^T d + d^T A d / 2 (A d = -g - r)
        # gained less than 5e-4 k of its value over the last k = max(10, i/10) iterations
        values.append(float(g @ d + 0.5 * d @ (-g - r)))
        k = max(10, i // 10)
        if i > k and values[-1] < 0 and (values[-1] - values[-1 - k]) / values[-1] < 5e-4 * k:
            break
        rr_new = r @ r
        if rr_new <= 1e-30 * max(g @ g, 1e-300):
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    if not g @ d < 0:  # no descent direction found: the gradient's
        d = -g.copy()
        return d, float(d @ hv(d))
    Ad = -g - r if values else A(d)
    return d, float(d @ Ad - damping * (d @ d))


def line_search(problem: Problem, x: np.ndarray, f0: float, g: np.ndarray, d: np.ndarray,
                lr: float) -> tuple[float, float]:
    """Backtracking from the step lr d, halving until the Armijo condition holds; the step
    length and the loss there (0 and f0 when none of the halvings lowers the loss: at the
    optimum to rounding)."""
    slope = float(g @ d)
    alpha = lr
    for _ in range(HALVINGS):
        f = problem.loss(x + alpha * d)
        if math.isfinite(f) and f <= f0 + ARMIJO * alpha * slope:
            return alpha, f
        alpha /= 2
    return 0.0, f0


def lbfgs(problem: Problem, x: np.ndarray, h: dict) -> np.ndarray:
    from scipy.optimize import minimize

    result = minimize(problem.loss_and_grad, x, jac=True, method="L-BFGS-B",
                      options={"maxiter": int(h["iterations"]), "maxcor": int(h["memory"]),
                               "ftol": 1e-15, "gtol": 1e-12})
    return x + float(h["lr"]) * (result.x - x)
