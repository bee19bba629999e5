"""Convolution and pooling: derived through im2col, checked against finite differences, a
plain patch-by-patch evaluation, and PyTorch's conv2d / max_pool2d / avg_pool2d."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from symgrad.symbolic import ops as F
from symgrad.symbolic.errors import ShapeError
from symgrad.symbolic.graph import apply

import symgrad as sg
from tests.conftest import torch_or_skip
from tests.oracle import Interpreter, finite_differences, sympy_gradients


def conv_model(h, w, c, o, k, stride, padding, pool):
    """scale -> conv -> tanh -> pool -> weighted sum: every primitive of a CNN in one small loss.
    The scale S in front makes the convolution's input gradient needed (as in a CNN's second
    layer), so the generated col2im of G K^T is exercised too."""
    m = sg.Model("conv_probe")
    (B,) = m.dims("B")
    X = m.input("X", (B, h, w, c))
    S = m.param("S", (h, w, c), "ones")
    K = m.param("K", (k, k, c, o), "he_normal")
    a = m.let("a", sg.tanh(F.conv2d(X * S, K, stride=stride, padding=padding)))
    kind, _, tiled = pool.partition("_")  # windows of 2 that overlap (stride 1) or tile (stride 2)
    pool_fn = {"max": F.max_pool2d, "avg": F.avg_pool2d}.get(kind)
    p = a if pool == "none" else m.let("p", pool_fn(a, 2, 2 if tiled else 1))
    R = m.target("R", tuple(p.shape))
    m.output("pooled", p)
    m.loss(sg.sum(p * R))
    return m


CASES = st.tuples(st.integers(3, 7), st.integers(3, 7), st.integers(1, 3), st.integers(1, 3),
                  st.integers(1, 3), st.integers(1, 2), st.integers(0, 1),
                  st.sampled_from(["max", "avg", "max_tiled", "avg_tiled", "none"]))


@settings(max_examples=16, deadline=None)
@given(CASES, st.integers(0, 1000))
@example((6, 4, 2, 2, 3, 1, 1, "max_tiled"), 1)  # 6x4 maps pooled by tiling 2x2 windows
@example((6, 4, 2, 2, 3, 1, 1, "avg_tiled"), 2)
def test_conv_pool_gradients_match_finite_differences(case, seed):
    h, w, c, o, k, stride, padding, pool = case
    out_h, out_w = ((n + 2 * padding - k) // stride + 1 for n in (h, w))
    assume(k <= min(h, w) + 2 * padding and (pool == "none" or min(out_h, out_w) >= 2))
    model = conv_model(h, w, c, o, k, stride, padding, pool)
    mod = sg.load_module(model)
    rng = np.random.default_rng(seed)
    params = {"K": rng.standard_normal((k, k, c, o)), "S": 1 + 0.3 * rng.standard_normal((h, w, c))}
    shape = (2,) + tuple(int(d) for d in model.leaves["R"].shape[1:])
    batch = {"X": rng.standard_normal((2, h, w, c)), "R": rng.standard_normal(shape)}
    loss, grads = mod.loss_and_grad(params, batch)
    leaves = {**params, **batch}
    (want,) = Interpreter("numpy").evaluate([model.losses["L"]], leaves, {"B": 2})
    assert loss == pytest.approx(float(want), rel=1e-10)
    fd = finite_differences(lambda p: mod.loss(p, batch), params)
    for name in params:
        np.testing.assert_allclose(grads[name], fd[name], rtol=1e-6, atol=1e-8, err_msg=name)
    assert "_col2im_matmul(" in sg.source(model)


@pytest.mark.parametrize("k, stride, padding", [(3, 1, 1), (3, 2, 0), (2, 1, 0), (5, 2, 2), (1, 1, 0)])
def test_conv2d_matches_pytorch(k, stride, padding):
    torch = torch_or_skip()
    rng = np.random.default_rng(k * 10 + stride)
    x = rng.standard_normal((3, 9, 7, 2))
    kern = rng.standard_normal((k, k, 2, 4))
    m = sg.Model("conv_torch")
    (B,) = m.dims("B")
    X = m.input("X", (B, 9, 7, 2))
    K = m.param("K", (k, k, 2, 4))
    y = m.let("y", F.conv2d(X, K, stride, padding))
    G = m.target("G", tuple(y.shape))
    m.output("y_out", y)
    m.loss(sg.sum(y * G))
    mod = sg.load_module(m)
    G_val = rng.standard_normal((3,) + tuple(int(d) for d in y.shape[1:]))
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)  # NCHW
    tk = torch.tensor(kern.transpose(3, 2, 0, 1), requires_grad=True)  # OIHW
    ty = torch.nn.functional.conv2d(tx, tk, stride=stride, padding=padding)
    np.testing.assert_allclose(mod.forward({"K": kern}, {"X": x})["y_out"],
                               ty.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
    (ty * torch.tensor(G_val.transpose(0, 3, 1, 2))).sum().backward()
    _, grads = mod.loss_and_grad({"K": kern}, {"X": x, "G": G_val})
    np.testing.assert_allclose(grads["K"], tk.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["max", "avg"])
# an 8x6 image with 2x2 windows of stride 2 takes the tiling path (a reshape, no im2col)
@pytest.mark.parametrize("size, stride, h", [(2, 2, 7), (2, 2, 8), (3, 1, 7), (2, 1, 7), (3, 2, 7)])
def test_pooling_matches_pytorch_forward_and_input_gradient(kind, size, stride, h):
    torch = torch_or_skip()
    rng = np.random.default_rng(size + 7 * stride)
    x = rng.standard_normal((2, h, 6, 3))
    m = sg.Model("pool_torch")
    (B,) = m.dims("B")
    X = m.input("X", (B, h, 6, 3))
    S = m.param("S", (h, 6, 3), "ones")  # a parameter in front, so the input gradient is returned
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    y = m.let("y", pool(X * S, size, stride))
    G = m.target("G", tuple(y.shape))
    m.output("y_out", y)
    m.loss(sg.sum(y * G))
    mod = sg.load_module(m)
    G_val = rng.standard_normal((2,) + tuple(int(d) for d in y.shape[1:]))
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    fn = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
    ty = fn(tx, size, stride)
    np.testing.assert_allclose(mod.forward({"S": np.ones((h, 6, 3))}, {"X": x})["y_out"],
                               ty.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-12)
    (ty * torch.tensor(G_val.transpose(0, 3, 1, 2))).sum().backward()
    _, grads = mod.loss_and_grad({"S": np.ones((h, 6, 3))}, {"X": x, "G": G_val})
    # dL/dS = sum over the batch of x * dL/d(x S): recover dL/dx from it and compare
    dx_torch = tx.grad.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(grads["S"], (dx_torch * x).sum(axis=0), rtol=1e-10, atol=1e-12)


def test_im2col_and_col2im_are_adjoint():
    rng = np.random.default_rng(0)
    m = sg.Model("adjoint")
    (B,) = m.dims("B")
    X = m.input("X", (B, 6, 5, 2))
    cols = apply("im2col", [X], kh=3, kw=2, stride=2, padding=1)
    back = apply("col2im", [cols], kh=3, kw=2, stride=2, padding=1, image=X.shape[1:])
    x = rng.standard_normal((2, 6, 5, 2))
    interp = Interpreter("numpy")
    (c,) = interp.evaluate([cols], {"X": x}, {"B": 2})
    y = rng.standard_normal(c.shape)
    Y = m.input("Yc", tuple(cols.shape))
    (xy,) = interp.evaluate([apply("col2im", [Y], kh=3, kw=2, stride=2, padding=1, image=X.shape[1:])],
                            {"Yc": y}, {"B": 2})
    assert float((c * y).sum()) == pytest.approx(float((x * xy).sum()), rel=1e-12)
    assert back.shape == X.shape


def test_bad_convolutions_are_clear_errors():
    m = sg.Model("bad_conv")
    (B,) = m.dims("B")
    X = m.input("X", (B, 4, 4, 3))
    with pytest.raises(ShapeError, match=r"the 7x7 kernel window is larger than the padded input \(6\)"):
        F.conv2d(X, m.param("K", (7, 7, 3, 2)), padding=1)
    with pytest.raises(ShapeError, match="stride must be an integer >= 1, not 0"):
        F.conv2d(X, m.param("K2", (3, 3, 3, 2)), stride=0)
    with pytest.raises(ShapeError, match="image .* has 3 channels, kernel .* expects 5"):
        F.conv2d(X, m.param("K3", (3, 3, 5, 2)))
    with pytest.raises(ShapeError, match="expected a \\(batch, height, width, channels\\) image"):
        F.max_pool2d(m.input("V", (B, 4)))
    with pytest.raises(ShapeError, match="window is larger than the padded input"):
        F.max_pool2d(X, 5)


def test_cnn_digits_module_against_pytorch():
    torch = torch_or_skip()
    from tests.conftest import built

    model, _, mod = built("cnn_digits", "auto")
    rng = np.random.default_rng(3)
    params = {k: v + 0.05 * rng.standard_normal(v.shape) for k, v in
              mod.init_params({"n_out": 10}, seed=3, dtype=np.float64).items()}
    X = rng.standard_normal((5, 8, 8, 1))
    Y = np.eye(10)[rng.integers(0, 10, 5)]
    loss, grads = mod.loss_and_grad(params, {"X": X, "Y": Y})
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    nnf = torch.nn.functional
    h = torch.tensor(X.transpose(0, 3, 1, 2))
    for K, c in (("K1", "c1"), ("K2", "c2")):
        h = nnf.max_pool2d(nnf.relu(nnf.conv2d(h, t[K].permute(3, 2, 0, 1), padding=1)
                                    + t[c].reshape(1, -1, 1, 1)), 2)
    z = h.permute(0, 2, 3, 1).reshape(5, -1) @ t["W"] + t["b"]
    tloss = nnf.cross_entropy(z, torch.tensor(Y))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-10)
    for k in params:
        np.testing.assert_allclose(grads[k], t[k].grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=k)


def test_conv_gradient_matches_sympy_on_a_tiny_image():
    model = conv_model(3, 3, 1, 2, 2, 1, 1, "avg")
    mod = sg.load_module(model)
    rng = np.random.default_rng(5)
    params = {"K": rng.standard_normal((2, 2, 1, 2)), "S": 1 + 0.3 * rng.standard_normal((3, 3, 1))}
    batch = {"X": rng.standard_normal((1, 3, 3, 1)), "R": rng.standard_normal((1, 3, 3, 2))}
    _, grads = mod.loss_and_grad(params, batch)
    exact = sympy_gradients(model, params, batch, {"hypers": {}, "state": {}}, {"B": 1})
    for name in params:
        np.testing.assert_allclose(grads[name], exact[name], rtol=1e-10, err_msg=name)


def test_bias_row_kernels_run_on_rows_of_pixels(monkeypatch):
    """relu(conv + c) over a 16-channel image runs on (-1, 512) views with c tiled (`_by_rows`):
    the same numbers as the kernel over the image, bit for bit, and a view that is not
    contiguous still runs as it is."""
    from symgrad.codegen import program

    m = sg.Model("bias_rows")
    (B,) = m.dims("B")
    X = m.input("X", (B, 8, 8, 3))
    K = m.param("K", (3, 3, 3, 16), "he_normal")
    c = m.param("c", (16,), "normal")
    a = m.let("a", sg.relu(F.conv2d(X, K, padding=1) + c))
    R = m.target("R", tuple(a.shape))
    m.loss(sg.sum(a * R))
    source = sg.source(m)
    assert "_by_rows(_ew1, 512, " in source
    wide = sg.load_module(m)
    monkeypatch.setattr(program, "ROW_WIDTH", 0)
    plain = sg.load_module(m)
    assert "_by_rows(" not in sg.source(m) and not hasattr(plain, "_by_rows")
    rng = np.random.default_rng(0)
    params = wide.init_params({}, seed=1, dtype=np.float32)
    batch = {"X": rng.standard_normal((5, 8, 8, 3)).astype(np.float32),
             "R": rng.standard_normal((5, 8, 8, 16)).astype(np.float32)}
    loss, grads = wide.loss_and_grad(params, batch)
    want_loss, want = plain.loss_and_grad(params, batch)
    assert loss == want_loss
    for name in want:
        np.testing.assert_array_equal(grads[name], want[name], err_msg=name)
    image = rng.standard_normal((5, 16, 8, 8)).astype(np.float32).transpose(0, 2, 3, 1)  # a view
    out = np.empty((5, 8, 8, 16), np.float32)
    got = wide._by_rows(wide._ew1, 512, out, image, params["c"])
    np.testing.assert_array_equal(got, np.maximum(image + params["c"], 0))
