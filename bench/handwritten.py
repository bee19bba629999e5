"""The reference the benchmark compares against: the MLP written by hand in plain numpy.

X -> tanh(X W1 + b1) -> tanh(. W2 + b2) -> z3 = . W3 + b3, softmax cross-entropy with one-hot
targets Y, mean over the batch: what a competent person writes without a tool. Forward with
`@` and `np.tanh`, a stable log-softmax (shifted by the row max), the backward pass by hand
(softmax - Y, tanh' = 1 - tanh^2), arrays allocated freely. The parameters use the generated
modules' names and layout (W of shape (n_in, n_out), the batch along axis 0).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def loss_and_grad(params: Mapping[str, np.ndarray], X: np.ndarray, Y: np.ndarray
                  ) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and gradients of the tanh MLP; each row of Y is one-hot (sums to 1)."""
    W1, b1, W2, b2, W3, b3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    n = X.shape[0]
    # forward
    h1 = np.tanh(X @ W1 + b1)
    h2 = np.tanh(h1 @ W2 + b2)
    z3 = h2 @ W3 + b3
    s = z3 - z3.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    loss = -(Y * logp).sum() / n
    # backward
    d3 = (np.exp(logp) - Y) / n
    d2 = (d3 @ W3.T) * (1 - h2 * h2)
    d1 = (d2 @ W2.T) * (1 - h1 * h1)
    grads = {
        "W1": X.T @ d1, "b1": d1.sum(axis=0),
        "W2": h1.T @ d2, "b2": d2.sum(axis=0),
        "W3": h2.T @ d3, "b3": d3.sum(axis=0),
    }
    return float(loss), grads
