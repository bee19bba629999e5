"""Recurrences: back-propagation through time derived from the cell, checked against finite
differences over random sizes and sequence lengths, and against PyTorch's nn.RNN, nn.LSTM and
nn.GRU with the same weights."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from symgrad.symbolic import ops as F
from symgrad.symbolic.errors import ShapeError
from symgrad.symbolic.graph import topological
from symgrad.symbolic.scan import zeros

import symgrad as sg
from symgrad.models import rnn
from tests.conftest import torch_or_skip
from tests.oracle import finite_differences, relative_error, sympy_gradients


def many_to_many(kind: str, steps, n_in, n_h):
    """Every step's state reaches the loss, so every step's gradient is exercised."""
    m = sg.Model(f"{kind}_probe")
    (B,) = m.dims("B")
    X = m.input("X", (B, steps, n_in))
    R = m.target("R", (B, steps, n_h))
    H = m.let("H", rnn._recurrence(m, kind, X, n_in, n_h))
    m.output("states", H)
    m.loss(sg.sum(H * R))
    return m


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@settings(max_examples=5, deadline=None)
@given(steps=st.integers(1, 6), n_in=st.integers(1, 4), n_h=st.integers(1, 4), seed=st.integers(0, 999))
def test_bptt_matches_finite_differences(kind, steps, n_in, n_h, seed):
    mod = sg.load_module(many_to_many(kind, steps, n_in, n_h))
    rng = np.random.default_rng(seed)
    params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in
              mod.init_params({}, seed=seed, dtype=np.float64).items()}
    batch = {"X": rng.standard_normal((3, steps, n_in)), "R": rng.standard_normal((3, steps, n_h))}
    _, grads = mod.loss_and_grad(params, batch)
    fd = finite_differences(lambda p: mod.loss(p, batch), params)
    for k in params:
        np.testing.assert_allclose(grads[k], fd[k], rtol=1e-6, atol=1e-9, err_msg=k)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_bptt_matches_sympy_on_explicit_matrices(kind):
    """sympy differentiates the loss unrolled over two steps: an oracle with no reverse loop."""
    model = many_to_many(kind, 2, 2, 2)
    mod = sg.load_module(model)
    rng = np.random.default_rng(5)
    params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in
              mod.init_params({}, seed=5, dtype=np.float64).items()}
    batch = {"X": rng.standard_normal((2, 2, 2)), "R": rng.standard_normal((2, 2, 2))}
    _, grads = mod.loss_and_grad(params, batch)
    exact = sympy_gradients(model, params, batch, {"hypers": {}, "state": {}}, {"B": 2})
    for k in params:
        assert relative_error(grads[k], exact[k]) <= 1e-9, k


def _torch_weights(torch, layer, kind, params):
    gates = rnn.GATES[kind]
    cat = lambda base: np.concatenate([params[f"{base}_{g}" if g else base] for g in gates], axis=-1)  # noqa: E731
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.tensor(cat("Wx").T))
        layer.weight_hh_l0.copy_(torch.tensor(cat("Wh").T))
        if kind == "gru":
            layer.bias_ih_l0.copy_(torch.tensor(cat("bx")))
            layer.bias_hh_l0.copy_(torch.tensor(cat("bh")))
        else:
            layer.bias_ih_l0.copy_(torch.tensor(cat("b")))
            layer.bias_hh_l0.zero_()


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_recurrence_matches_pytorch(kind):
    torch = torch_or_skip()
    steps, n_in, n_h = 5, 3, 4
    mod = sg.load_module(many_to_many(kind, steps, n_in, n_h))
    rng = np.random.default_rng(11)
    params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in
              mod.init_params({}, seed=2, dtype=np.float64).items()}
    X, R = rng.standard_normal((2, steps, n_in)), rng.standard_normal((2, steps, n_h))
    layer = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        n_in, n_h, batch_first=True, dtype=torch.float64)
    _torch_weights(torch, layer, kind, params)
    H_torch, _ = layer(torch.tensor(X))
    np.testing.assert_allclose(mod.forward(params, {"X": X})["states"], H_torch.detach().numpy(),
                               rtol=1e-10, atol=1e-12)
    (H_torch * torch.tensor(R)).sum().backward()
    loss, grads = mod.loss_and_grad(params, {"X": X, "R": R})
    assert loss == pytest.approx((H_torch * torch.tensor(R)).sum().item(), rel=1e-10)
    gates = rnn.GATES[kind]
    n = n_h
    for k, g in enumerate(gates):
        name = lambda base, g=g: f"{base}_{g}" if g else base  # noqa: E731
        rows = slice(k * n, (k + 1) * n)
        for ours, theirs in (("Wx", layer.weight_ih_l0), ("Wh", layer.weight_hh_l0)):
            np.testing.assert_allclose(grads[name(ours)], theirs.grad[rows].numpy().T, rtol=1e-9, atol=1e-12)
        if kind == "gru":
            np.testing.assert_allclose(grads[name("bx")], layer.bias_ih_l0.grad[rows].numpy(), rtol=1e-9)
            np.testing.assert_allclose(grads[name("bh")], layer.bias_hh_l0.grad[rows].numpy(), rtol=1e-9)
        else:
            np.testing.assert_allclose(grads[name("b")], layer.bias_ih_l0.grad[rows].numpy(), rtol=1e-9)


def test_lstm_step_uses_one_product_per_input_and_keeps_states():
    src = sg.source(many_to_many("lstm", 4, 3, 2)).split("\ndef hvp(")[0]  # the first-order functions
    forward_loop = src.split("def loss_and_grad(")[1].split("for t in range(4):")[1].split("# ")[0]
    # h_prev [Wh_i Wh_f Wh_g Wh_o] is the loop's one product; x_t Wx was hoisted out of it
    assert forward_loop.count(" @ ") + forward_loop.count(".dot(") == 1
    assert "np.concatenate([t" in src  # the four gate adjoints are joined, not zero-padded and added
    assert "for t in range(4 - 1, -1, -1):" in src
    # the bias is added to x_t Wx for every step at once, leaving one addition in the step
    assert forward_loop.count("_ew") == 8  # the sum, three sigmoids, two tanh, C_t and h_t
    # sequences are step-major: each step's values are written straight into their slices
    for seq in ("states", "C_seq", "lstm_r1_seq"):
        assert f"out={seq}[t])" in forward_loop and f"{seq}[:, t] =" not in src
    before, backward_loop = src.split("for t in range(4 - 1, -1, -1):")
    assert "axis=1, out=dlstm_u1_seq[t])" in backward_loop  # the gate adjoints, joined in place
    assert "np.copyto(t5_T, t5.T)" in before  # W_h^T, made contiguous once (in the workspace)
    assert ".T" not in backward_loop.split("carry_C =")[0]


@pytest.mark.parametrize("first, second", [("lstm", "gru"), ("rnn", "rnn")])
def test_stacked_recurrences_match_finite_differences(first, second):
    """The second layer reads the first's state sequence (a step-major array seen batch-major)
    and hands back its adjoint the same way."""
    m = sg.Model(f"{first}_{second}_stack")
    (B,) = m.dims("B")
    X = m.input("X", (B, 4, 2))
    R = m.target("R", (B, 4, 3))
    if first != second:  # their parameters have different names
        H1 = rnn._recurrence(m, first, X, 2, 3)
    else:  # the lower layer by hand, under names of its own; its states squashed again
        cell = rnn.rnn_cell(m.param("Ux", (2, 3)), m.param("Uh", (3, 3)), m.param("ub", (3,), "zeros"))
        H1 = F.tanh(m.scan(cell, [X], [zeros((B, 3))], name="low")[0])
    H2 = rnn._recurrence(m, second, H1, 3, 3)
    m.output("H2", H2)
    m.loss(sg.sum(H2 * R))
    mod = sg.load_module(m)
    rng = np.random.default_rng(7)
    params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in
              mod.init_params({}, seed=1, dtype=np.float64).items()}
    batch = {"X": rng.standard_normal((2, 4, 2)), "R": rng.standard_normal((2, 4, 3))}
    _, grads = mod.loss_and_grad(params, batch)
    fd = finite_differences(lambda p: mod.loss(p, batch), params)
    for k in params:
        np.testing.assert_allclose(grads[k], fd[k], rtol=1e-6, atol=1e-9, err_msg=k)


def test_cell_reading_a_reshaped_weight_gets_its_transpose_copied_once():
    """The backward step multiplies by the transpose of a weight the cell reads through a
    reshape: the contiguous copy made before the loop needs a name of its own."""
    m = sg.Model("reshaped_cell")
    (B,) = m.dims("B")
    X = m.input("X", (B, 4, 3))
    R = m.target("R", (B, 4, 3))
    V = m.param("V", (9,))
    (H,) = m.scan(lambda x, h: F.tanh(x + h @ V.reshape((3, 3))), [X], [zeros((B, 3))], name="cell")
    m.output("H", H)
    m.loss(sg.sum(H * R))
    source = sg.source(m)
    assert "np.copyto(captured_T, V.reshape(3, 3).T)" in source
    mod = sg.load_module(m)
    rng = np.random.default_rng(5)
    params = {"V": 0.5 * rng.standard_normal(9)}
    batch = {"X": rng.standard_normal((2, 4, 3)), "R": rng.standard_normal((2, 4, 3))}
    _, grads = mod.loss_and_grad(params, batch)
    fd = finite_differences(lambda p: mod.loss(p, batch), params)
    np.testing.assert_allclose(grads["V"], fd["V"], rtol=1e-6, atol=1e-9)


def test_returned_state_sequence_is_batch_major_in_memory():
    """The loop stores states step-major; the caller still gets a C-contiguous (B, T, n) array,
    with step t's states where a plain loop over time puts them."""
    mod = sg.load_module(many_to_many("rnn", 3, 2, 4))
    rng = np.random.default_rng(8)
    params = mod.init_params({}, seed=0, dtype=np.float64)
    X = rng.standard_normal((5, 3, 2))
    states = mod.forward(params, {"X": X})["states"]
    assert states.shape == (5, 3, 4) and states.flags.c_contiguous
    h = np.zeros((5, 4))
    for t in range(3):
        h = np.tanh(X[:, t] @ params["Wx"] + h @ params["Wh"] + params["b"])
        np.testing.assert_allclose(states[:, t], h, rtol=1e-12)


def test_regrouped_sum_leaves_the_bias_out_of_the_cell():
    """x Wx + h Wh + b is built as (x Wx + h Wh) + b; scan gathers x Wx + b, so the bias is
    hoisted with the input product and the cell reads only W_h."""
    for kind in ("rnn", "lstm"):
        model = many_to_many(kind, 3, 2, 2)
        (scan,) = [n for n in topological([model.losses["L"]]) if n.op == "scan"]
        read = {n.name for n in topological(scan.attr("cell").captured) if n.op == "param"}
        assert read and all(name.startswith("Wh") for name in read), read


def test_scan_errors_name_the_layer_and_shapes():
    m = sg.Model("bad_scan")
    B, T, n = m.dims("B T n")
    X = m.input("X", (B, T, n))
    W = m.param("W", (n, n))
    with pytest.raises(ShapeError, match=r"scan 'rnn': state 'h' starts with shape \(B, n\) but the cell "
                                         r"returns \(B, 1\)"):
        m.scan(lambda x, h: (x @ W).sum(1, keepdims=True), [X], [zeros((B, n))], name="rnn")
    with pytest.raises(ShapeError, match="takes 1 arguments, but there are 1 sequences and 1 states"):
        m.scan(lambda x: x, [X], [zeros((B, n))], name="rnn")


def test_empty_sequence_at_run_time_is_a_clear_error():
    m = sg.Model("runtime_empty")
    B, T = m.dims("B T")
    X = m.input("X", (B, T, 2))
    W, U = m.param("W", (2, 3)), m.param("U", (3, 3))
    (H,) = m.scan(lambda x, h: F.tanh(x @ W + h @ U), [X], [zeros((B, 3))], name="rnn")
    m.loss(sg.sum(H))
    mod = sg.load_module(m)
    params = mod.init_params({})
    with pytest.raises(ValueError, match="scan rnn: the time axis has length 0"):
        mod.loss_and_grad(params, {"X": np.zeros((2, 0, 2))})
    loss, grads = mod.loss_and_grad(params, {"X": np.ones((2, 3, 2))})
    assert np.isfinite(loss) and grads["U"].shape == (3, 3)


def test_weight_gradients_read_the_stored_sequences_in_place():
    """sum_t h_{t-1}^T g_t (zero initial state) is one product of views of the stored states
    and adjoints, and x W_x's gradient takes its rows step-major: the (T, B, 4h) adjoints are
    read where the loop stored them, never copied batch-major; the gradients match finite
    differences (any T, T = 1 included) and stay the same to rounding."""
    src = sg.source(many_to_many("lstm", 4, 3, 2)).split("def loss_and_grad(")[1].split("def hvp(")[0]
    assert "np.tensordot(" not in src and "np.concatenate([np.broadcast_to(0.0" not in src
    assert "= states[:-1].reshape(-1, states.shape[-1]).T.dot(" in src
    assert "dlstm_u1_seq[1:].reshape(-1, dlstm_u1_seq.shape[-1])" in src
    # X is copied step-major into the workspace; the adjoints are read where they lie
    assert ".reshape(4, B, 3), X.swapaxes(0, 1))" in src and ".T.dot(dlstm_u1_seq.reshape(4*B, 8))" in src
    rng = np.random.default_rng(3)
    for steps in (1, 3):
        mod = sg.load_module(many_to_many("lstm", steps, 3, 2))
        params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in
                  mod.init_params({}, seed=2, dtype=np.float64).items()}
        batch = {"X": rng.standard_normal((2, steps, 3)), "R": rng.standard_normal((2, steps, 2))}
        _, grads = mod.loss_and_grad(params, batch)
        fd = finite_differences(lambda p, m=mod, b=batch: m.loss(p, b), params)
        for k in params:
            np.testing.assert_allclose(grads[k], fd[k], rtol=1e-6, atol=1e-9, err_msg=k)


def test_hvp_sums_the_recurrent_weights_second_adjoint_after_the_loop():
    """In an LSTM classifier's hvp the second backward loop's carried adjoint of h is also
    stored (the adjoint of the first backward loop's incoming sequence), so the recurrent
    weight's part, sum_t a_t^T c_t with c_t that sequence one step later (zero at the first
    step), is one product after the loop into the workspace instead of a product and an
    addition a step; H v matches central differences of the gradient (T = 1: empty stacks)."""
    src = sg.source(rnn.classifier("lstm", steps=3, features=2, hidden=4)).split("def hvp(")[1]
    assert "np.add(d_captured1" not in src
    assert "d_lstm_u1_seq[:-1].reshape(-1, d_lstm_u1_seq.shape[-1]).T,\n" \
           "        dct_h_seq[1:].reshape(-1, dct_h_seq.shape[-1]),\n        out=d_captured1," in src
    rng = np.random.default_rng(5)
    for steps in (1, 3):
        mod = sg.load_module(rnn.classifier("lstm", steps=steps, features=2, hidden=4))
        params = {k: v + 0.3 * rng.standard_normal(v.shape) for k, v in
                  mod.init_params({"n_out": 3}, seed=1, dtype=np.float64).items()}
        batch = {"X": rng.standard_normal((5, steps, 2)), "Y": np.eye(3)[rng.integers(0, 3, 5)]}
        vector = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        _, _, hv = mod.hvp(params, batch, vector)
        h = 1e-5
        plus = mod.loss_and_grad({k: p + h * vector[k] for k, p in params.items()}, batch)[1]
        minus = mod.loss_and_grad({k: p - h * vector[k] for k, p in params.items()}, batch)[1]
        for k in params:
            np.testing.assert_allclose(hv[k], (plus[k] - minus[k]) / (2 * h), rtol=1e-5, atol=1e-8,
                                       err_msg=f"{k}, {steps} steps")
