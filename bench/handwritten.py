"""The references the benchmark compares against, written by hand in plain numpy.

`loss_and_grad`, the MLP:

X -> tanh(X W1 + b1) -> tanh(. W2 + b2) -> z3 = . W3 + b3, softmax cross-entropy with one-hot
targets Y, mean over the batch: what a competent person writes without a tool. Forward with
`@` and `np.tanh`, a stable log-softmax (shifted by the row max), the backward pass by hand
(softmax - Y, tanh' = 1 - tanh^2), arrays allocated freely. The parameters use the generated
modules' names and layout (W of shape (n_in, n_out), the batch along axis 0).

`lstm_loss_and_grad`, the LSTM classifier of bench/models.py, tuned as far as we could take
numpy: the numpy floor for that model, to tell the generated code's overhead from numpy's own.
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


LSTM_GATES = ("i", "f", "o", "g")  # the three sigmoid gates side by side: one call for all three


def lstm_loss_and_grad(params: Mapping[str, np.ndarray], X: np.ndarray, Y: np.ndarray
                       ) -> tuple[float, dict[str, np.ndarray]]:
    """LSTM (PyTorch's cell, zero initial states) over X (B, T, F), softmax layer on the last
    state; parameters named as the generated module's (Wx_i, ..., b_o, W, c).

    Sequences step-major so every step's slice is contiguous; x_t Wx + b for all steps in one
    product; each step's gates computed in place in the stored gate array; the backward
    step's factors that do not depend on the incoming adjoint computed for all steps at once."""
    join = lambda base, axis: np.concatenate([params[f"{base}_{g}"] for g in LSTM_GATES], axis)  # noqa: E731
    Wx, Wh, b, W, c = join("Wx", 1), join("Wh", 1), join("b", 0), params["W"], params["c"]
    n, steps, features = X.shape
    h_dim, dt = Wh.shape[0], X.dtype
    i_, f_, o_ = slice(0, h_dim), slice(h_dim, 2 * h_dim), slice(2 * h_dim, 3 * h_dim)
    g_ = slice(3 * h_dim, 4 * h_dim)
    Xs = np.ascontiguousarray(X.transpose(1, 0, 2))
    U = np.dot(Xs.reshape(steps * n, features), Wx).reshape(steps, n, 4 * h_dim)
    U += b
    gates = np.empty((steps, n, 4 * h_dim), dt)  # i, f, o, g after their activations
    C, TC, H = (np.empty((steps, n, h_dim), dt) for _ in range(3))
    h, c_prev, tmp = np.zeros((n, h_dim), dt), np.zeros((n, h_dim), dt), np.empty((n, h_dim), dt)
    for t in range(steps):
        z = gates[t]
        np.dot(h, Wh, out=z)
        z += U[t]
        s = z[:, :3 * h_dim]  # sigmoid(s) = (tanh(s / 2) + 1) / 2
        np.multiply(s, 0.5, out=s)
        np.tanh(s, out=s)
        s += 1.0
        s *= 0.5
        np.tanh(z[:, g_], out=z[:, g_])
        np.multiply(z[:, f_], c_prev, out=C[t])
        np.multiply(z[:, i_], z[:, g_], out=tmp)
        C[t] += tmp
        np.tanh(C[t], out=TC[t])
        np.multiply(z[:, o_], TC[t], out=H[t])
        h, c_prev = H[t], C[t]
    z = h @ W + c
    shifted = z - z.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -(Y * logp).sum() / n
    dz = (np.exp(logp) - Y) / n
    # the factors of each step's backward that do not depend on the incoming adjoints
    gi, gf, go, gg = gates[..., i_], gates[..., f_], gates[..., o_], gates[..., g_]
    C_prev = np.concatenate([np.zeros((1, n, h_dim), dt), C[:-1]])
    to_c = go * (1 - TC * TC)
    d_i, d_f, d_o, d_g = gi * (1 - gi) * gg, gf * (1 - gf) * C_prev, go * (1 - go) * TC, (1 - gg * gg) * gi
    Wh_T = np.ascontiguousarray(Wh.T)
    dZ = np.empty((steps, n, 4 * h_dim), dt)
    dh, dc = dz @ W.T, np.zeros((n, h_dim), dt)
    for t in range(steps - 1, -1, -1):
        dc_t = dh * to_c[t]
        dc_t += dc
        d = dZ[t]
        np.multiply(dc_t, d_i[t], out=d[:, i_])
        np.multiply(dc_t, d_f[t], out=d[:, f_])
        np.multiply(dh, d_o[t], out=d[:, o_])
        np.multiply(dc_t, d_g[t], out=d[:, g_])
        dh = np.dot(d, Wh_T)
        dc = np.multiply(dc_t, gf[t], out=dc_t)
    H_prev = np.concatenate([np.zeros((1, n, h_dim), dt), H[:-1]])
    dZ_rows = dZ.reshape(steps * n, 4 * h_dim)
    joined = {"Wx": Xs.reshape(steps * n, features).T @ dZ_rows,
              "Wh": np.tensordot(H_prev, dZ, axes=([0, 1], [0, 1])), "b": dZ_rows.sum(axis=0)}
    grads = {"W": h.T @ dz, "c": dz.sum(axis=0)}
    for base, value in joined.items():
        for k, g in enumerate(LSTM_GATES):
            grads[f"{base}_{g}"] = value[..., k * h_dim:(k + 1) * h_dim]
    return float(loss), grads
