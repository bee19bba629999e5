"""The references the benchmark compares against, written by hand in plain numpy.

`loss_and_grad`, the MLP:

X -> tanh(X W1 + b1) -> tanh(. W2 + b2) -> z3 = . W3 + b3, softmax cross-entropy with one-hot
targets Y, mean over the batch: what a competent person writes without a tool. Forward with
`@` and `np.tanh`, a stable log-softmax (shifted by the row max), the backward pass by hand
(softmax - Y, tanh' = 1 - tanh^2), arrays allocated freely. The parameters use the generated
modules' names and layout (W of shape (n_in, n_out), the batch along axis 0).

`lstm_loss_and_grad`, the LSTM classifier of bench/models.py, tuned as far as we could take
numpy: the numpy floor for that model, to tell the generated code's overhead from numpy's own.

`cnn_loss_and_grad`, the CNNs of bench/models.py, written with the same algorithms as the
generated module but arrays allocated per call.
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


def _patches(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """3x3 patches of x (B, H, W, C) at padding 1 into out (B, H, W, 9*C), ordered (kh, kw, C)."""
    n, h, w, c = x.shape
    padded = np.zeros((n, h + 2, w + 2, c), x.dtype)
    padded[:, 1:h + 1, 1:w + 1] = x
    cols = out.reshape(n, h, w, 3, 3, c)
    for i in range(3):
        for j in range(3):
            cols[:, :, :, i, j] = padded[:, i:i + h, j:j + w]
    return out


def _conv_relu_pool(x: np.ndarray, K: np.ndarray, bias: np.ndarray):
    """relu(conv3x3(x, pad 1) + bias) pooled by tiling 2x2 windows: (patches, activation, pooled)."""
    n, h, w, c = x.shape
    cols = _patches(x, np.empty((n, h, w, 9 * c), x.dtype))
    a = np.dot(cols.reshape(-1, 9 * c), K.reshape(9 * c, -1)).reshape(n, h, w, -1)
    a += bias
    np.maximum(a, 0, out=a)
    windows = a.reshape(n, h // 2, 2, w // 2, 2, -1)
    pooled = np.maximum(windows[:, :, 0, :, 0], windows[:, :, 0, :, 1])
    np.maximum(pooled, windows[:, :, 1, :, 0], out=pooled)
    np.maximum(pooled, windows[:, :, 1, :, 1], out=pooled)
    return cols, a, pooled


def _pool_relu_back(a: np.ndarray, pooled: np.ndarray, d_pooled: np.ndarray) -> np.ndarray:
    """Adjoint of relu then 2x2 max pooling: each window's adjoint shared among its maxima, and
    relu' folded into that share (a maximum is positive exactly when its window's max is)."""
    n, h2, w2, c = pooled.shape
    windows = a.reshape(n, h2, 2, w2, 2, c)
    hit = windows == pooled.reshape(n, h2, 1, w2, 1, c)
    count = hit[:, :, 0, :, 0] + hit[:, :, 0, :, 1].astype(a.dtype)
    count += hit[:, :, 1, :, 0]
    count += hit[:, :, 1, :, 1]
    share = d_pooled / count
    share *= pooled > 0
    return np.multiply(hit, share.reshape(n, h2, 1, w2, 1, c), dtype=a.dtype).reshape(a.shape)


def _patches_back(g: np.ndarray, K: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The input's adjoint of a 3x3 convolution at padding 1: one product per kernel offset,
    added where its patches came from."""
    n, h, w, c = shape
    rows = g.reshape(-1, g.shape[-1])
    K = K.reshape(9, c, -1)
    out = np.zeros((n, h + 2, w + 2, c), g.dtype)
    for i in range(3):
        for j in range(3):
            out[:, i:i + h, j:j + w] += np.dot(rows, K[3 * i + j].T).reshape(n, h, w, c)
    return out[:, 1:h + 1, 1:w + 1]


def cnn_loss_and_grad(params: Mapping[str, np.ndarray], X: np.ndarray, Y: np.ndarray
                      ) -> tuple[float, dict[str, np.ndarray]]:
    """The CNN of symgrad.models.cnn (two conv 3x3 pad 1 -> relu -> max pool 2 blocks, dense
    softmax) on (B, H, W, 1) images, parameters named and laid out as the generated module's
    (HWIO kernels K1, K2; biases c1, c2; W, b). Written as a careful person would with numpy's
    usual means (im2col products, pooling on a reshape, relu' folded into the pooling's
    adjoint), arrays allocated per call like the MLP's: a reference, not a floor."""
    K1, c1, K2, c2, W, b = (params[k] for k in ("K1", "c1", "K2", "c2", "W", "b"))
    n = X.shape[0]
    cols1, a1, p1 = _conv_relu_pool(X, K1, c1)
    cols2, a2, p2 = _conv_relu_pool(p1, K2, c2)
    flat = p2.reshape(n, -1)
    z = flat @ W + b
    shifted = z - z.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -(Y * logp).sum() / n
    dz = (np.exp(logp) - Y) / n
    da2 = _pool_relu_back(a2, p2, (dz @ W.T).reshape(p2.shape))
    rows2 = da2.reshape(-1, da2.shape[-1])
    dp1 = _patches_back(da2, K2, p1.shape)
    da1 = _pool_relu_back(a1, p1, dp1)
    rows1 = da1.reshape(-1, da1.shape[-1])
    grads = {"K1": (cols1.reshape(-1, cols1.shape[-1]).T @ rows1).reshape(K1.shape), "c1": rows1.sum(axis=0),
             "K2": (cols2.reshape(-1, cols2.shape[-1]).T @ rows2).reshape(K2.shape), "c2": rows2.sum(axis=0),
             "W": flat.T @ dz, "b": dz.sum(axis=0)}
    return float(loss), grads
