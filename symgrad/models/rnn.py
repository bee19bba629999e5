"""Recurrent networks whose cells are written as the textbooks (and PyTorch) write them.

Each cell reads one time step x_t and the previous state(s) and returns the new state(s);
`Model.scan` runs it over axis 1 of (B, T, features) sequences and derives back-propagation
through time. The input projection x_t W_x (+ b) of every gate is one matrix product, which
`scan` hoists out of the loop and computes for all time steps at once.
"""
from __future__ import annotations

from symgrad.models import labels
from symgrad.symbolic import ops as F
from symgrad.symbolic.model import Model
from symgrad.symbolic.scan import zeros


def rnn_cell(Wx, Wh, b):
    """h_t = tanh(x_t Wx + h_{t-1} Wh + b)."""
    def cell(x, h):
        return F.tanh(x @ Wx + h @ Wh + b)
    return cell


def lstm_cell(Wx, Wh, b):
    """Gates i, f, g, o from one product each for input and state (PyTorch's order):
    C_t = sigma(f) C_{t-1} + sigma(i) tanh(g),  h_t = sigma(o) tanh(C_t). The cell state is C
    (as in Olah's diagrams), so that it never shares a name with a model's bias c."""
    def cell(x, h, C):
        i, f, g, o = F.split(x @ Wx + h @ Wh + b, 4)
        C_new = F.sigmoid(f) * C + F.sigmoid(i) * F.tanh(g)
        return F.sigmoid(o) * F.tanh(C_new), C_new
    return cell


def gru_cell(Wx, Wh, bx, bh):
    """PyTorch's GRU: r, z = sigma(x Wx_rz + bx_rz + h Wh_rz + bh_rz),
    n = tanh(x Wx_n + bx_n + r (h Wh_n + bh_n)),  h_t = (1 - z) n + z h_{t-1}."""
    def cell(x, h):
        xr, xz, xn = F.split(x @ Wx + bx, 3)
        hr, hz, hn = F.split(h @ Wh + bh, 3)
        r, z = F.sigmoid(xr + hr), F.sigmoid(xz + hz)
        n = F.tanh(xn + r * hn)
        return (1 - z) * n + z * h
    return cell


GATES = {"rnn": ("",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def _gate_params(m: Model, base: str, shape, gates, init="glorot_uniform"):
    """One parameter per gate (shapes stay in plain dims), joined side by side so that each
    time step computes every gate with one matrix product."""
    parts = [m.param(f"{base}_{g}" if g else base, shape, init) for g in gates]
    return parts[0] if len(parts) == 1 else F.concat(parts, axis=-1)


def _recurrence(m: Model, kind: str, X, n_in, n_h):
    """The recurrent layer's parameters and its state sequence H (B, T, n_h)."""
    B = X.shape[0]
    gates = GATES[kind]
    Wx = _gate_params(m, "Wx", (n_in, n_h), gates)
    Wh = _gate_params(m, "Wh", (n_h, n_h), gates)
    if kind == "gru":
        bx = _gate_params(m, "bx", (n_h,), gates, "zeros")
        bh = _gate_params(m, "bh", (n_h,), gates, "zeros")
        (H,) = m.scan(gru_cell(Wx, Wh, bx, bh), [X], [zeros((B, n_h))], name="gru")
        return H
    b = _gate_params(m, "b", (n_h,), gates, "zeros")
    if kind == "lstm":
        H, _ = m.scan(lstm_cell(Wx, Wh, b), [X], [zeros((B, n_h)), zeros((B, n_h))], name="lstm")
        return H
    (H,) = m.scan(rnn_cell(Wx, Wh, b), [X], [zeros((B, n_h))], name="rnn")
    return H


def classifier(kind: str, steps: int = 8, features: int = 8, name: str | None = None,
               hidden: int = 64, sparse: bool = False) -> Model:
    """Reads a sequence (an 8x8 digit row by row: 8 steps of 8 features) and classifies it
    from the last state."""
    m = Model(name or f"{kind}_classifier",
              f"{kind.upper()} classifier: reads {steps} steps of {features} features, classifies "
              "from the last hidden state with a softmax layer", task="multiclass")
    B, n_out = m.dims("B n_out")
    n_h = m.dim("n_h", default=hidden)
    X = m.input("X", (B, steps, features))
    Y = labels.target(m, B, n_out, sparse)
    H = m.let("H", _recurrence(m, kind, X, features, n_h))
    W, c = m.param("W", (n_h, n_out)), m.param("c", (n_out,), "zeros")
    z = m.let("z", F.last_step(H) @ W + c)
    m.output("P", F.softmax(z))
    m.loss(labels.loss(z, Y))
    return m


def sequence_regressor(kind: str, steps: int = 40, name: str | None = None, hidden: int = 32) -> Model:
    """Many to many: predicts the next value of a 1-D sequence at every step, so the loss
    reaches every step's output and the gradient flows through every step."""
    m = Model(name or f"{kind}_next_value",
              f"{kind.upper()} next-value predictor: one output per step, mean squared error over all "
              "steps", task="regression")
    (B,) = m.dims("B")
    n_h = m.dim("n_h", default=hidden)
    X = m.input("X", (B, steps, 1))
    Y = m.target("Y", (B, steps, 1))
    H = m.let("H", _recurrence(m, kind, X, 1, n_h))
    W, c = m.param("W", (n_h, 1)), m.param("c", (1,), "zeros")
    Yhat = m.output("Yhat", H @ W + c)
    m.loss(F.mse(Yhat, Y))
    return m
