"""Every user mistake the modelling language catches, with a message a person can act on."""
from __future__ import annotations

import warnings

import pytest
import sympy
from symgrad.symbolic.errors import ModelError, ShapeError, SymgradWarning

import symgrad as sg


def small():
    m = sg.Model("m")
    B, n, k = m.dims("B n k")
    return m, B, n, k


def test_matrix_product_shape_mismatch_names_operands_shapes_and_line():
    m, B, n, k = small()
    X = m.input("X", (B, n))
    W = m.param("W", (k, k))
    with pytest.raises(ShapeError) as e:
        X @ W
    msg = str(e.value)
    assert "matrix product" in msg and "X (B, n)" in msg and "W (k, k)" in msg
    assert "inner dims differ: n != k" in msg
    assert "test_errors.py:" in msg  # the user's own line


def test_broadcast_mismatch_names_both_shapes():
    m, B, n, k = small()
    X, b = m.input("X", (B, n)), m.param("b", (k,))
    with pytest.raises(ShapeError, match=r"shapes do not broadcast in X \(B, n\) \+ b \(k,\)"):
        X + b


def test_loss_must_be_a_scalar():
    m, B, n, k = small()
    X = m.input("X", (B, n))
    W = m.param("W", (n, k))
    with pytest.raises(ShapeError, match=r"loss 'L' must be a scalar, but its shape is \(B, k\)"):
        m.loss(X @ W)


def test_loss_shapes_of_prediction_and_target_must_agree():
    m, B, n, k = small()
    Y = m.target("Y", (B, k))
    z = m.input("X", (B, n))
    with pytest.raises(ShapeError, match=r"softmax_cross_entropy: prediction \(B, n\) and target \(B, k\)"):
        sg.softmax_cross_entropy(z, Y)


@pytest.mark.parametrize("bad, why", [
    ("2x", "not a valid Python identifier"), ("lambda", "Python keyword"), ("sum", "Python builtin"),
    ("_hidden", "starts with '_'"), ("params", "used by the generated module"), ("a-b", "not a valid"),
    ("naïve", "not a valid"), ("x; import os", "not a valid"),
])
def test_bad_names_are_rejected(bad, why):
    m, B, n, k = small()
    with pytest.raises(ModelError, match=why):
        m.param(bad, (n,))


def test_duplicate_and_unknown_names():
    m, B, n, k = small()
    m.param("W", (n, k))
    with pytest.raises(ModelError, match="'W': the name is already used"):
        m.input("W", (B, n))
    with pytest.raises(ModelError, match="already used"):
        m.dim("n")
    with pytest.raises(ModelError, match="unknown dim 'q'"):
        m.input("X", ("B", "q"))
    other = sg.Model("other")
    (d,) = other.dims("d")
    with pytest.raises(ModelError, match="unknown dim d"):
        m.input("Z", (d,))


def test_equation_using_another_models_tensor():
    m, B, n, k = small()
    other = sg.Model("other")
    (d,) = other.dims("n")
    V = other.param("V", (d,))
    with pytest.raises(ModelError, match="uses V, which model 'm' does not declare"):
        m.let("h", sg.tanh(V))


def test_model_without_loss_or_with_unknown_loss():
    m, B, n, k = small()
    m.param("W", (n,))
    with pytest.raises(ModelError, match="has no loss"):
        sg.derive(m)


def test_parameter_that_never_reaches_the_loss_warns():
    m, B, n, k = small()
    X, Y = m.input("X", (B, n)), m.target("Y", (B, k))
    W, V = m.param("W", (n, k)), m.param("V", (n, k))
    m.loss(sg.mse(X @ W, Y))
    with pytest.warns(SymgradWarning, match="parameter 'V' never reaches the loss 'L'"):
        d = sg.derive(m)
    with pytest.warns(SymgradWarning, match="parameter 'V' never reaches"):  # loading says it too
        module = sg.load_module(m)
    import numpy as np

    params = module.init_params({"n": 3, "k": 2})
    _, grads = module.loss_and_grad(params, {"X": np.ones((4, 3)), "Y": np.ones((4, 2))})
    assert np.all(grads["V"] == 0) and grads["V"].shape == (3, 2) and grads["V"].dtype == np.float32
    assert d.gradients["V"].shape == V.shape


def test_user_function_must_be_of_one_variable():
    x, y = sympy.symbols("x y")
    with pytest.raises(ModelError, match="may only use x, but also uses y"):
        sg.elementwise_function("twovar", x * y, x)
    f = sg.elementwise_function("cube_test", x**3, x)
    assert sg.elementwise_function("cube_test", x**3, x) is not None
    with pytest.raises(ModelError, match="already defined"):
        sg.elementwise_function("cube_test", x**2, x)
    assert f is not None


def test_invalid_shapes_and_inits():
    m, B, n, k = small()
    with pytest.raises(ModelError, match="shape must be a tuple"):
        m.param("W", n)
    with pytest.raises(ModelError, match="positive integer"):
        m.param("W2", (0, n))
    with pytest.raises(ModelError, match="init must be one of"):
        m.param("W3", (n,), init="xavier")
    with pytest.raises(ModelError, match="task must be one of"):
        sg.Model("t", task="ranking")


def test_reshape_and_axes_are_checked():
    m, B, n, k = small()
    X = m.input("X", (B, n))
    with pytest.raises(ShapeError, match="cannot reshape"):
        X.reshape(B, k)
    with pytest.raises(ShapeError, match="axis 2 is out of range"):
        sg.softmax(X, axis=2)


def test_no_rule_for_an_unknown_primitive_is_a_clear_error():
    from symgrad.symbolic.errors import RuleError
    from symgrad.symbolic.graph import Node
    from symgrad.symbolic.rules import rule_for

    with pytest.raises(RuleError, match="no differentiation rule for operation 'fft'"):
        rule_for(Node.make("fft", (), {}, ()))


def test_warnings_do_not_escape_as_errors_in_normal_models():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sg.derive(sg.BUILTINS["mlp_tanh"].build())
