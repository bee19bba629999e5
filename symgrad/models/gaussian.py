"""A multivariate Gaussian fitted by maximum likelihood: a density model, with no target.

The covariance is Sigma = L L^T with a learnt Cholesky factor L: its strictly lower triangle
is free, its diagonal exp(d) positive, so Sigma stays symmetric positive definite whatever the
optimizer does. The loss is the textbook negative log-likelihood of a batch,

    L = 1/2 log |det Sigma| + 1/2 tr(Sigma^{-1} S) + n/2 log(2 pi),  S = (X - mu)^T (X - mu) / B,

whose gradient 1/2 Sigma^{-1} - 1/2 Sigma^{-1} S Sigma^{-1} (in Sigma) vanishes where Sigma
equals the sample covariance S: training drives Sigma there.
"""
from __future__ import annotations

import sympy

from symgrad.symbolic import ops as F
from symgrad.symbolic.model import Model


def gaussian_nll(name: str = "gaussian_nll") -> Model:
    m = Model(name, "multivariate Gaussian fitted by maximum likelihood: learnt mean and Cholesky "
              "factor of the covariance, negative log-likelihood of a batch", task="density")
    B, n = m.dims("B n")
    X = m.input("X", (B, n))
    mu = m.param("mu", (n,), "zeros")
    W = m.param("W", (n, n), "zeros")  # L's strictly lower triangle (the rest of W is unused)
    d = m.param("d", (n,), "zeros")  # the log of L's diagonal
    L = m.let("L_Sigma", F.tril(W, -1) + F.diag(F.exp(d)))  # the Cholesky factor
    Sigma = m.output("Sigma", L @ L.T, prediction=False)
    D = m.let("D", X - mu)
    log_2pi = sympy.log(2 * sympy.pi)
    # each row's squared Mahalanobis distance, through a solve (Sigma^{-1} is not formed here)
    q = m.let("q", F.sum(D * F.solve(Sigma, D.T).T, axis=1))
    m.output("logp", -(q + F.logdet(Sigma) + n * log_2pi) / 2, prediction=True)
    S = m.let("S", D.T @ D / B)  # the batch's scatter about mu
    m.loss((F.logdet(Sigma) + F.trace(F.inv(Sigma) @ S) + n * log_2pi) / 2)
    return m
