"""Elementwise functions: derivatives derived by sympy in the cheapest verified form, and
numerically sound at extreme inputs in both engines."""
from __future__ import annotations

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st
from symgrad.codegen.kernels import build_kernel
from symgrad.codegen.lowering import HELPERS
from symgrad.symbolic import functions
from symgrad.symbolic.functions import X, derivative_of
from symgrad.symbolic.graph import ARG
from symgrad.symbolic.rules import Y, local_derivative

import symgrad as sg


def test_sigmoid_derivative_is_written_through_its_output():
    d = derivative_of(functions.sigmoid)
    s = functions.sigmoid(X)
    assert sympy.simplify(d - s * (1 - s)) == 0
    assert d.free_symbols == {X} and d.has(functions.sigmoid)


def test_tanh_exp_sqrt_local_derivatives_use_the_forward_value():
    assert local_derivative(sympy.tanh(ARG[0]), 0) == 1 - Y**2
    assert local_derivative(sympy.exp(ARG[0]), 0) == Y
    assert local_derivative(sympy.sqrt(ARG[0]), 0) == 1 / (2 * Y)
    assert local_derivative(functions.relu(ARG[0]), 0) == sympy.Heaviside(Y, 0)


def test_softplus_derivative_is_recognised_as_sigmoid():
    assert derivative_of(functions.softplus) == functions.sigmoid(X)


def test_user_function_derivative_is_derived_and_checked():
    x = sympy.Symbol("x")
    swish = sg.elementwise_function("swish_t", x / (1 + sympy.exp(-x)), x)
    fn = functions.REGISTRY["swish_t"]
    d = derivative_of(fn)
    exact = sympy.diff(x / (1 + sympy.exp(-x)), x)
    for v in (-3.0, -0.5, 0.0, 0.7, 4.0):
        got = float(d.xreplace({X: v}).replace(lambda e: isinstance(e, functions.ElementwiseFunction),
                                               lambda e: e.expanded()).evalf())
        assert got == pytest.approx(float(exact.subs(x, v)), rel=1e-12)
    assert swish is not None


def _kernel_values(expr, inputs: dict[str, np.ndarray], engine: str) -> np.ndarray:
    names = tuple(sorted(inputs))
    k = build_kernel(expr, names)
    out = np.empty_like(next(iter(inputs.values())))
    if engine == "numexpr":
        import numexpr as ne

        local = dict(inputs) | {c: out.dtype.type(float(v)) for c, v in k.numexpr_constants.items()}
        return ne.evaluate(k.numexpr_source, local_dict=local, out=out)
    env = {"np": np, "out": out, **inputs}
    exec(HELPERS["_zeros"], env)
    exec("\n".join(k.numpy_lines), env)
    return out


a, b = sympy.symbols("a b", real=True)


@pytest.mark.parametrize("engine", ["numpy", "numexpr"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_forms_at_extreme_inputs(engine, dtype):
    x = np.array([-1e4, -800.0, -88.0, -30.0, -1.0, 0.0, 1.0, 30.0, 88.0, 800.0, 1e4], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow, no NaN
        sig = _kernel_values(functions.sigmoid(a), {"a": x}, engine)
        sp = _kernel_values(functions.softplus(a), {"a": x}, engine)
        th = _kernel_values(1 - sympy.tanh(a) ** 2, {"a": x}, engine)
    assert np.all(np.isfinite(sig)) and np.all((sig >= 0) & (sig <= 1))
    assert sig[0] == 0 and sig[-1] == 1 and sig[5] == pytest.approx(0.5)
    assert np.all(np.isfinite(sp)) and sp[-1] == pytest.approx(1e4) and sp[0] == 0
    assert sp[5] == pytest.approx(np.log(2), rel=1e-6)
    assert np.all(np.isfinite(th)) and th[0] == 0 and th[5] == 1
    assert sig.dtype == sp.dtype == dtype


def test_log_softmax_and_softmax_survive_huge_logits():
    m = sg.Model("lse")
    B, k = m.dims("B k")
    Z, Y_ = m.input("Z", (B, k)), m.target("Y", (B, k))
    W = m.param("W", (k,), init="ones")
    z = m.let("z", Z * W)
    m.output("P", sg.softmax(z))
    m.loss(sg.softmax_cross_entropy(z, Y_))
    mod = sg.load_module(m)
    params = {"W": np.ones(3)}
    batch = {"Z": np.array([[1000.0, 0.0, -1000.0], [5e4, 5e4, 0.0]]), "Y": np.eye(3)[[0, 1]]}
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grads = mod.loss_and_grad(params, batch)
        P = mod.forward(params, batch)["P"]
    assert loss == pytest.approx(np.log(2) / 2)
    np.testing.assert_allclose(P, [[1, 0, 0], [0.5, 0.5, 0]], atol=1e-12)
    assert np.all(np.isfinite(grads["W"]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=1, max_size=20),
       st.lists(st.floats(-50, 50), min_size=1, max_size=20))
def test_numpy_and_numexpr_kernels_agree(xs, ys):
    n = min(len(xs), len(ys))
    A, B = np.array(xs[:n]), np.array(ys[:n])
    for expr in (a * b * (1 - b), functions.softplus(a) - a * b, (sympy.exp(a) * b - a) / 3,
                 a * sympy.Heaviside(b, 0), functions.leaky_relu(a, sympy.Rational(1, 50)) + b**2,
                 sympy.sqrt(sympy.Abs(a) + 1) - 2 / (1 + b**2), sympy.Max(a + b, 0) - sympy.Min(a, 0)):
        with np.errstate(over="ignore"):
            np.testing.assert_allclose(_kernel_values(expr, {"a": A, "b": B}, "numpy"),
                                       _kernel_values(expr, {"a": A, "b": B}, "numexpr"),
                                       rtol=1e-12, atol=1e-12, err_msg=str(expr))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_compares_with_shared_read_only_zeros(dtype):
    k = build_kernel(sympy.Max(a + b, 0), ("a", "b"))
    assert "np.maximum(out, _zeros(out), out=out)" in k.numpy_lines  # positional: deprecated in numpy 2.4
    x = np.linspace(-2, 2, 12, dtype=dtype).reshape(3, 4)
    np.testing.assert_array_equal(_kernel_values(sympy.Max(a + b, 0), {"a": x, "b": x}, "numpy"),
                                  np.maximum(2 * x, 0))
    env = {"np": np}
    exec(HELPERS["_zeros"], env)
    small, large = env["_zeros"](x[:1]), env["_zeros"](x)
    assert large.shape == x.shape and large.dtype == dtype and not large.any()
    assert small.shape == (1, 4) and not large.flags.writeable


def test_in_place_kernels_are_only_used_where_safe():
    k = build_kernel(a * b * (1 - b), ("a", "b"))
    assert not ({"a", "b"} & k.alias_safe)  # both are read after the first write to out
    k = build_kernel(sympy.tanh(a + b), ("a", "b"))
    assert k.alias_safe == {"a", "b"}


def test_numpy_form_multiplies_a_factor_into_a_sum_with_a_number_only():
    k = build_kernel(a * (1 - b**2), ("a", "b"))  # tanh's adjoint: no Python number operand
    assert k.numpy_lines == ["np.square(b, out)", "np.multiply(out, a, out)", "np.subtract(a, out, out)"]
    values = {"a": np.linspace(-3, 3, 7), "b": np.array([-1.0, -0.999, -0.5, 0.0, 0.5, 0.999, 1.0])}
    np.testing.assert_allclose(_kernel_values(a * (1 - b**2), values, "numpy"),
                               values["a"] * (1 - values["b"] ** 2), rtol=1e-13, atol=0)
    k = build_kernel((a - b) * (a + b), ("a", "b"))  # an exact difference is never multiplied out
    assert not any("np.square" in line for line in k.numpy_lines)
    for gate in (1 - b, b - 1):  # nor 1 - b: exact for a gate near 1, where a - a*b cancels
        k = build_kernel(a * gate, ("a", "b"))
        assert k.numpy_lines[0].startswith("np.subtract("), k.numpy_lines
        near_one = np.float32(1) - np.array([1e-4, 3e-5, 6e-8], np.float32)
        values = {"a": np.full(3, 3.0, np.float32), "b": near_one}
        got = _kernel_values(a * gate, values, "numpy")
        exact = 3.0 * (1 - values["b"].astype(np.float64)) * (1 if gate == 1 - b else -1)
        np.testing.assert_allclose(got, exact, rtol=2e-7, atol=0)


@pytest.mark.parametrize("shape", [(32, 10), (128, 16), (16, 3), (15, 10), (32, 17), (4, 5, 10), (7,)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rowmax_is_the_max_along_the_last_axis(shape, dtype):
    env = {"np": np}
    exec(HELPERS["_rowmax"], env)
    x = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    if x.size > 20:  # NaN comes through as numpy's max gives it
        x.reshape(-1)[::7] = np.nan
    got = env["_rowmax"](x)
    np.testing.assert_array_equal(got, x.max(axis=-1, keepdims=True))
    assert got.dtype == dtype and got.shape == (*shape[:-1], 1)


@pytest.mark.parametrize("shape", [(32, 10), (7, 3), (128, 16), (15, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("into_logits", [False, True])
def test_softmax_xent_is_the_cross_entropy_and_its_adjoint(shape, dtype, into_logits):
    """_softmax_xent's sum(y * log_softmax(z)) and scale * (sum(y) * softmax(z) - y) against the
    log-sum-exp form in float64, with soft targets, rows of huge and of tiny logits, and confident
    rows whose per-row loss is small (where a form without the max shift loses its digits)."""
    env = {"np": np}
    for name in ("_ones", "_rowmax", "_softmax_xent"):
        exec(HELPERS[name], env)
    rng = np.random.default_rng(5)
    z = rng.standard_normal(shape) * 4
    z[0] = 1000.0 * np.sign(rng.standard_normal(shape[1]))  # exp overflows unshifted
    z[1] = -5e4 + rng.standard_normal(shape[1])  # and underflows
    z[2] = 0.0
    z[2, 0] = 8.0  # softmax 1 - 3e-4 (k = 2): a confident row
    y = rng.uniform(0.05, 1.0, shape)
    y /= y.sum(axis=1, keepdims=True)
    y[2] = np.eye(shape[1])[0]
    zd, yd = z.astype(dtype), y.astype(dtype)
    z, y = zd.astype(np.float64), yd.astype(np.float64)  # the reference sees the same inputs
    s = z - z.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    want_total = np.sum(y * logp)
    want_adjoint = (y.sum(axis=1, keepdims=True) * np.exp(logp) - y) / shape[0]
    out = zd.copy() if into_logits else None
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        total, adjoint = env["_softmax_xent"](zd, yd, 1.0 / shape[0], out=out)
    assert adjoint.dtype == dtype and np.asarray(total).dtype == dtype
    assert adjoint is out if into_logits else adjoint is not zd
    eps = float(np.finfo(dtype).eps)
    assert total == pytest.approx(want_total, rel=20 * eps)
    np.testing.assert_allclose(adjoint, want_adjoint, rtol=0, atol=20 * eps / shape[0])
    confident = env["_softmax_xent"](zd[2:3], yd[2:3], 1.0)[0]  # a small loss, kept to its digits
    assert -confident == pytest.approx(-logp[2, 0], rel=1e-3 if dtype == np.float32 else 1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_broadcast_operand_is_spread_into_out_first(dtype):
    """A kernel over a small array spreads its broadcast operand (a bias row, a column) into
    `out` by assignment, then combines arrays of one shape (numpy's ufuncs take a slow path for
    a broadcast operand); the values are numpy's broadcasting ones, and the operands read after
    the spread may not share memory with `out`."""
    a, b, c = sympy.symbols("a b c", real=True)
    k = build_kernel(sympy.tanh(a + b), ("a", "b"), broadcast=frozenset({"b"}))
    assert k.numpy_lines == ["out[...] = b", "np.add(out, a, out)", "np.tanh(out, out)"]
    assert k.alias_safe == {"b"}
    plain = build_kernel(sympy.tanh(a + b), ("a", "b"))  # operands of the output's shape
    assert plain.numpy_lines == ["np.add(a, b, out)", "np.tanh(out, out)"]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 4)).astype(dtype)
    for shape in [(4,), (5, 1), (1, 4)]:
        y = rng.standard_normal(shape).astype(dtype)
        z = rng.standard_normal((5, 4)).astype(dtype)
        for expr, want in [(sympy.tanh(a + b), np.tanh(x + y)), (a - b, x - y), (b - a, y - x),
                           (a * b * c, x * y * z), (-a - b, -x - y), (c * (a - b), z * (x - y))]:
            k = build_kernel(expr, ("a", "b", "c"), broadcast=frozenset({"b"}))
            assert k.numpy_lines[0] == "out[...] = b", (expr, k.numpy_lines)
            env = {"np": np}
            lines = "".join(f"    {ln}\n" for ln in k.numpy_lines)
            exec(f"def f(a, b, c, out):\n{lines}    return out\n", env)
            got = env["f"](x, y, z, np.empty_like(x))
            np.testing.assert_allclose(got, want, rtol=2 * np.finfo(dtype).eps, err_msg=str(expr))
