"""Generated modules that used to break: long names (a line break turned `params["W"]` into a
tuple key), names that clash with the generated code's own locals, nested common
subexpressions in a kernel, constants and erf, and derivative forms that overflow in float32.
Each module here is checked end to end: it imports, and its gradients match finite differences."""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
from symgrad.codegen.layout import fit
from symgrad.symbolic.errors import ModelError
from symgrad.symbolic.functions import REGISTRY, X, derivative_of
from symgrad.symbolic.scan import zeros

import symgrad as sg
from symgrad import ops as F
from tests.oracle import finite_differences, jiggle, random_batch, run_kwargs

x = sympy.Symbol("x")


def gradients_match(module, dims: dict[str, int], seed: int = 0) -> None:
    """loss_and_grad against five-point differences of `loss` in float64; forward runs too."""
    rng = np.random.default_rng(seed)
    params = jiggle(module.init_params(dims, seed=seed, dtype=np.float64), rng)
    batch = random_batch(module, dims, rng)
    kw = run_kwargs(module, dims)
    loss, grads = module.loss_and_grad(params, batch, **kw)
    assert math.isfinite(loss)
    assert loss == pytest.approx(module.loss(params, batch, training=True, **kw), rel=1e-12)
    noise: dict[str, np.ndarray] = {}
    fd = finite_differences(lambda p: module.loss(p, batch, training=True, **kw), params, limit=24, seed=seed,
                            noise=noise)
    for k in params:
        checked = ~np.isnan(fd[k])
        scale = max(np.abs(fd[k][checked]).max(initial=0), np.abs(grads[k]).max(), 1e-4)
        # relative to the largest entry, plus each difference's own rounding (|loss| eps / h)
        excess = np.abs(grads[k] - fd[k])[checked] - noise[k][checked]
        assert excess.max(initial=0) / scale <= 1e-6, k
    inputs = {k: v for k, v in batch.items() if k not in module.TARGETS}
    assert set(module.forward(params, inputs, **kw)) == set(module.OUTPUTS)


# -- line breaking never changes meaning ------------------------------------------------------
def long(prefix: str, n: int) -> str:
    return f"{prefix}_{'q' * n}"


@pytest.mark.parametrize("line, meaning", [
    (f'{long("W", 60)} = params["{long("W", 60)}"]', "subscript"),
    (f"{long('t', 50)} = ({long('a', 40)} + {long('b', 40)})", "parentheses"),
    (f"{long('t', 50)} = f({long('a', 40)}, {long('b', 40)})", "call"),
    (f"{long('t', 50)} = [{long('a', 40)}, {long('b', 40)}]", "list"),
    (f'{long("t", 30)} = g(h["{long("k", 50)}"], "a, b", {long("c", 30)}[:, 1:2])', "nested"),
    (f"{long('t', 50)} = sum(v * {long('a', 40)} for v in range({long('b', 40)}))", "generator"),
])
def test_breaking_a_long_line_keeps_its_meaning(line, meaning):
    lines = fit(line)
    assert len(lines) > 1
    env = {"params": {long("W", 60): 1}, "f": lambda *a: a, "g": lambda *a: a, "h": {long("k", 50): 2},
           long("a", 40): 3, long("b", 40): 4, long("c", 30): np.arange(6).reshape(3, 2)}
    one, broken = dict(env), dict(env)
    exec(line, one)  # noqa: S102 - our own test lines
    exec("\n".join(lines), broken)  # noqa: S102
    name = line.split(" = ")[0]
    assert repr(one[name]) == repr(broken[name]), meaning


def test_long_names_in_every_slot():
    m = sg.Model(long("model", 80), "every name in this model is long")
    B, n, k = m.dims([long("B", 60), long("n", 60), long("k", 60)])
    X_, Y = m.input(long("X", 90), (B, n)), m.target(long("Y", 90), (B, k))
    W, b = m.param(long("W", 50), (n, k)), m.param(long("b", 50), (k,), init="zeros")
    rate = m.hyper(long("rate", 50), 0.25)
    z = m.let(long("z", 80), X_ @ W + b)
    a = m.let(long("a", 80), m.batchnorm(z, long("bn", 40)))
    act = sg.elementwise_function(long("act", 60), x * sympy.tanh(x) / 2 + x, x)
    d = m.let(long("d", 80), m.dropout(act(a), rate))
    m.output(long("P", 80), sg.softmax(d))
    m.loss(sg.softmax_cross_entropy(d, Y) + 1e-3 * sg.l2(W), name=long("L", 60))
    m.objective(sg.l2(b), long("objective", 60), wrt=[b])
    dims = {str(B): 4, str(n): 3, str(k): 2}
    for backend in ("numpy", "numexpr"):
        source = sg.source(m, backend)
        assert any(line.rstrip().endswith("params[") for line in source.splitlines())  # broken, still right
        module = sg.load_module(m, backend)
        gradients_match(module, dims)
        params = module.init_params(dims, dtype=np.float64)
        value, grads = getattr(module, f"loss_and_grad_{long('objective', 60)}")(params, {})
        np.testing.assert_allclose(grads[long("b", 50)], 2 * params[long("b", 50)])


def test_long_names_in_a_recurrence():
    m = sg.Model(long("rnn", 60))
    B, T, n, h = m.dims(["B", long("T", 60), long("n", 60), long("h", 60)])
    X_, y = m.input(long("X", 90), (B, T, n)), m.target(long("y", 90), (B, 1))
    Wx, Wh = m.param(long("Wx", 50), (n, h)), m.param(long("Wh", 50), (h, h))
    Wo = m.param(long("Wo", 50), (h, 1))

    def cell(input_at_this_step_of_the_sequence_qqqqqqqqqqqqqqqqqqqqqq,
             previous_hidden_state_qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq):
        return F.tanh(input_at_this_step_of_the_sequence_qqqqqqqqqqqqqqqqqqqqqq @ Wx
                      + previous_hidden_state_qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq @ Wh)

    (H,) = m.scan(cell, [X_], [zeros((B, h))], name=long("cell", 40))
    prediction = m.let(long("prediction", 80), F.last_step(H) @ Wo)
    m.output(long("y_hat", 80), prediction)
    m.loss(sg.mse(prediction, y))
    gradients_match(sg.load_module(m, "numpy"), {"B": 2, str(T): 3, str(n): 2, str(h): 3})


# -- names from the generated code's own vocabulary -------------------------------------------
@pytest.mark.parametrize("name", ["ws", "state", "training", "init_state", "dt", "rng", "params"])
def test_the_generated_codes_fixed_names_are_reserved(name):
    m = sg.Model("m")
    with pytest.raises(ModelError, match="used by the generated module"):
        m.param(name, (3,))


def test_names_the_generated_code_makes_up_do_not_collide_dense():
    """dims t1, dL_dz, t; an input named like the dropout mask; a let named like a parameter's
    gradient (dL_dt2) and like a generated temporary (t3); a target like a renamed local (z_2)."""
    m = sg.Model("clash_dense")
    t1, dL_dz, t = m.dims("t1 dL_dz t")
    mask1, z_2 = m.input("mask1", (t1, dL_dz)), m.target("z_2", (t1, t))
    t2, b = m.param("t2", (dL_dz, t)), m.param("b", (t,), init="zeros")
    z = m.let("z", mask1 @ t2 + b)
    m.let("dL_dt2", z * 2)
    a = m.let("a", m.batchnorm(z, "bn"))
    t3 = m.let("t3", m.dropout(sg.tanh(a), 0.3))
    m.output("step", sg.softmax(t3))
    m.loss(sg.softmax_cross_entropy(t3, z_2))
    for backend in ("numpy", "numexpr"):
        gradients_match(sg.load_module(m, backend), {"t1": 4, "dL_dz": 3, "t": 2})


def test_names_the_generated_code_makes_up_do_not_collide_in_a_loop():
    """A time dim named t (the loop variable), parameters named like the cell's placeholders
    (x_t, h_prev), a target and a let named like the loop's sequences (h_seq, dx_seq)."""
    m = sg.Model("clash_loop")
    B, t, n, h = m.dims("B t n h")
    X_, h_seq = m.input("X", (B, t, n)), m.target("h_seq", (B, 1))
    x_t, h_prev, carry_h = m.param("x_t", (n, h)), m.param("h_prev", (h, h)), m.param("carry_h", (h, 1))
    (H,) = m.scan(lambda x, h: F.tanh(x @ x_t + h @ h_prev), [X_], [zeros((B, h))], name="rnn")
    dx_seq = m.let("dx_seq", F.last_step(H) @ carry_h)
    m.output("step", dx_seq)
    m.loss(sg.mse(dx_seq, h_seq))
    for backend in ("numpy", "numexpr"):
        gradients_match(sg.load_module(m, backend), {"B": 2, "t": 3, "n": 2, "h": 3})


# -- custom functions: nested temporaries, constants, erf, float32 extremes ---------------------
FUNCTIONS = {
    "mish": x * sympy.tanh(sympy.log(1 + sympy.exp(x))),
    "gelu_tanh": x / 2 * (1 + sympy.tanh(sympy.sqrt(2 / sympy.pi) * (x + sympy.Float("0.044715") * x**3))),
    "cosh_sum": x / 2 + sympy.cosh(x / 2) + sympy.cosh(x / 2) ** 2,
    "gelu": x / 2 * (1 + sympy.erf(x / sympy.sqrt(2))),
    "scaled_by_e_and_pi": sympy.E * x + sympy.pi * x**2 / 10,
}


def _one_layer(name: str):
    fn = sg.elementwise_function(name, FUNCTIONS[name], x)
    m = sg.Model(f"net_{name}", task="regression")
    B, n = m.dims("B n")
    X_, y = m.input("X", (B, n)), m.target("y", (B, 1))
    W, b = m.param("W", (n, 2)), m.param("b", (2,), init="zeros")
    h = m.let("h", fn(X_ @ W + b))
    prediction = m.let("prediction", h @ m.param("V", (2, 1)))
    m.output("y_hat", prediction)
    m.loss(sg.mse(prediction, y))
    return m


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_user_functions_generate_kernels_that_run(name):
    m = _one_layer(name)
    value = sympy.lambdify(x, FUNCTIONS[name], "mpmath")
    for backend in ("numpy", "numexpr"):
        module = sg.load_module(m, backend)
        gradients_match(module, {"B": 3, "n": 2}, seed=1)
        params = module.init_params({"n": 2}, dtype=np.float64)
        inputs = {"X": np.array([[0.3, -1.2], [2.0, 0.5], [-3.0, 1.5]])}
        hidden = inputs["X"] @ params["W"] + params["b"]
        want = np.array([[float(value(v)) for v in row] for row in hidden]) @ params["V"]
        np.testing.assert_allclose(module.forward(params, inputs)["y_hat"], want, rtol=1e-12)


def test_exact_gelu_matches_pytorch():
    from tests.conftest import torch_or_skip

    torch = torch_or_skip()
    module = sg.load_module(_one_layer("gelu"), "numpy")
    params = jiggle(module.init_params({"n": 3}, dtype=np.float64), np.random.default_rng(2))
    batch = random_batch(module, {"B": 5, "n": 3}, np.random.default_rng(3))
    loss, grads = module.loss_and_grad(params, batch)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    h = torch.nn.functional.gelu(torch.tensor(batch["X"]) @ tp["W"] + tp["b"])
    t_loss = ((h @ tp["V"] - torch.tensor(batch["y"])) ** 2).mean()
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=1e-12)
    for k in params:
        np.testing.assert_allclose(grads[k], tp[k].grad.numpy(), rtol=1e-10, atol=1e-12)


def test_swish_derivative_stays_finite_at_extreme_float32_inputs():
    swish = sg.elementwise_function("swish", x / (1 + sympy.exp(-x)), x)
    m = sg.Model("swish_extremes")
    B, n = m.dims("B n")
    X_, W = m.input("X", (B, n)), m.param("W", (n, 1))
    m.loss(swish(X_ @ W).sum())
    module = sg.load_module(m, "numpy")
    xs = np.array([[90.0], [120.0], [200.0], [1000.0], [-90.0], [-200.0], [0.5]], dtype=np.float32)
    with np.errstate(over="ignore"):  # exp(200) and cosh(100) overflow on the way to finite values
        _, grads = module.loss_and_grad({"W": np.ones((1, 1), np.float32)}, {"X": xs})
    # d/dW sum(swish(x W)) at W = 1 is sum(x swish'(x)); swish' is 1 far right, 0 far left
    exact = sympy.lambdify(x, sympy.diff(x / (1 + sympy.exp(-x)), x), "mpmath")
    want = sum(float(v) * float(exact(float(v))) for v in xs[:, 0])
    assert np.isfinite(grads["W"]).all()
    assert grads["W"][0, 0] == pytest.approx(want, rel=1e-5)
    form = derivative_of(REGISTRY["swish"])
    expanded = form.replace(lambda e: e.func is REGISTRY["swish"], lambda e: e.expanded())
    f32 = sympy.lambdify(X, expanded, "numpy")
    with np.errstate(all="ignore"):
        assert np.isfinite(f32(np.linspace(-200, 200, 81, dtype=np.float32))).all(), form


def test_leaky_relu_of_leaky_relu_shares_its_condition_inline():
    """cse pulled the shared condition (a > 0) of two fused leaky relus out as a temporary,
    which the numpy writer cannot hold in a buffer: the model could not be generated."""
    m = sg.Model("leaky_twice", task="regression")
    B, n = m.dims("B n")
    X_, y = m.input("X", (B, n)), m.target("y", (B, 1))
    z = m.let("z", sg.leaky_relu(sg.leaky_relu(X_ @ m.param("W", (n, 1)), 0.5), 0.5))
    m.output("y_hat", z)
    m.loss(sg.mse(z, y))
    for backend in ("numpy", "numexpr"):
        gradients_match(sg.load_module(m, backend), {"B": 4, "n": 3}, seed=3)


# -- the finite-difference check itself: its rounding is allowed for, real errors are not -------
def _loud_loss_model() -> sg.Model:
    """A loss near 1e3 and a parameter whose gradient is near 1e-5, under the scale floor 1e-4:
    its finite difference carries rounding near 1e3 eps / h = 2e-8, however right the derived
    gradient is (1e-10 of the floor was once all the check allowed)."""
    m = sg.Model("loud_loss", task="regression")
    B, n = m.dims("B n")
    X_, y = m.input("X", (B, n)), m.target("y", (B, 1))
    W, c = m.param("W", (n, 1)), m.param("c", (3,))
    prediction = m.let("prediction", X_ @ W)
    m.output("y_hat", prediction)
    m.loss(1000 * sg.mse(prediction, y) + 1e-5 * sg.l2(c))
    return m


def test_gradients_match_allows_for_finite_difference_rounding():
    gradients_match(sg.load_module(_loud_loss_model(), "numpy"), {"B": 5, "n": 3}, seed=4)


class _Skewed:
    """A module whose loss_and_grad is off by one part in `by` for one parameter."""

    def __init__(self, module, name: str, by: float):
        self.module, self.name, self.by = module, name, by

    def __getattr__(self, attr):
        return getattr(self.module, attr)

    def loss_and_grad(self, params, batch, **kw):
        loss, grads = self.module.loss_and_grad(params, batch, **kw)
        return loss, {**grads, self.name: grads[self.name] * (1 + self.by)}


@pytest.mark.parametrize("name", ["W", "c"])
def test_gradients_match_still_catches_a_small_error(name):
    module = sg.load_module(_loud_loss_model(), "numpy")
    with pytest.raises(AssertionError, match=name):
        gradients_match(_Skewed(module, name, 1e-4 if name == "W" else 0.5), {"B": 5, "n": 3}, seed=4)


@pytest.mark.parametrize("alpha", [-2, -0.5, 0, 0.2, 1, 3.5])
def test_leaky_relu_is_right_for_every_slope(alpha):
    """x for x > 0, alpha x elsewhere, for any finite alpha: a negative slope makes y > 0 on
    both sides, so its derivative cannot be read off [y > 0] (that form gave wrong gradients)."""
    m = sg.Model("leaky_slope", task="regression")
    B, n = m.dims("B n")
    X_, y = m.input("X", (B, n)), m.target("y", (B, 1))
    W, b = m.param("W", (n, 3)), m.param("b", (3,))
    h = m.let("h", sg.leaky_relu(X_ @ W + b, alpha))
    z = m.let("z", sg.leaky_relu(h @ m.param("V", (3, 1)), alpha))
    m.output("y_hat", z)
    m.loss(sg.mse(z, y))
    for backend in ("numpy", "numexpr"):
        module = sg.load_module(m, backend)
        gradients_match(module, {"B": 8, "n": 3}, seed=5)
        params = {"W": np.eye(3), "b": np.zeros(3), "V": np.ones((3, 1))}
        xs = np.array([[-2.0, 0.0, 0.0], [0.0, 3.0, -1.0]])
        want = np.where(xs > 0, xs, alpha * xs).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(module.forward(params, {"X": xs})["y_hat"],
                                   np.where(want > 0, want, alpha * want))


# -- kernels the property test found broken (SYMGRAD_PROPERTY_EXAMPLES=300, several seeds) --------
@pytest.mark.parametrize("inner, outer", [(0, 0), (0, 0.5), (-1, 0), (0, -1)])
def test_a_condition_sympy_folds_into_if_then_else_lowers(inner, outer):
    """leaky_relu(leaky_relu(x, 0), .) > 0 comes back from sympy as ITE(x > 0, x > 0, False):
    the printers wrote `ITE(...)` into the module (a NameError in numpy, numexpr failed)."""
    m = sg.Model("leaky_folded", task="regression")
    B, n = m.dims("B n")
    X_, y = m.input("X", (B, n)), m.target("y", (B, 1))
    z = m.let("z", sg.leaky_relu(sg.leaky_relu(X_ @ m.param("W", (n, 1)), inner), outer))
    m.output("y_hat", z)
    m.loss(sg.mse(z, y))
    for backend in ("numpy", "numexpr"):
        gradients_match(sg.load_module(m, backend), {"B": 6, "n": 3}, seed=3)


def test_a_constant_through_a_defined_function_lowers():
    """(X W) * 0 folds to the constant 0, and tanh(leaky_relu(0, 0)) reached the constant
    printer, which could not evaluate leaky_relu."""
    m = sg.Model("constant_leaky", task="regression")
    B, n = m.dims("B n")
    X_, y = m.input("X", (B, n)), m.target("y", (B, 1))
    W, b = m.param("W", (n, 1)), m.param("b", (1,))
    z = m.let("z", X_ @ W + b + sg.tanh(sg.leaky_relu((X_ @ W) * 0, 0)))
    m.output("y_hat", z)
    m.output("flat", sg.tanh(sg.leaky_relu((X_ @ W) * 0, 0)))
    m.loss(sg.mse(z, y))
    for backend in ("numpy", "numexpr"):
        module = sg.load_module(m, backend)
        gradients_match(module, {"B": 4, "n": 2}, seed=1)
        params = {"W": np.ones((2, 1)), "b": np.full(1, 0.5)}
        out = module.forward(params, {"X": np.ones((3, 2))})
        np.testing.assert_allclose(out["y_hat"], 2.5)
        np.testing.assert_array_equal(out["flat"], np.zeros((3, 1)))


def test_a_kernel_of_eleven_operands_runs_in_numexpr():
    """Two batch normalisations in evaluation form fuse into one kernel of 11 operands; the
    11th was named k, which the numexpr form's typed-constant local `k` replaced."""
    m = sg.Model("two_norms")
    B, n, k = m.dims("B n k")
    X_, Y = m.input("X", (B, n)), m.target("Y", (B, k))
    W, b = m.param("W", (n, k)), m.param("b", (k,))
    z = m.let("z", (X_ @ W + b) * m.hyper("h", 0.9))
    z = m.let("z2", m.batchnorm(m.batchnorm(z, "bn1"), "bn2"))
    m.output("P", sg.tanh(z))
    m.loss(sg.mse(z, Y))
    assert "    k: np.ndarray," not in sg.source(m, "numexpr")
    for backend in ("numpy", "numexpr"):
        module = sg.load_module(m, backend)
        gradients_match(module, {"B": 4, "n": 2, "k": 3}, seed=2)
        state = module.init_state({"k": 3}, np.float64)
        params = jiggle(module.init_params({"n": 2, "k": 3}, dtype=np.float64), np.random.default_rng(0))
        module.forward(params, {"X": np.ones((2, 2))}, state=state)  # the 11-operand kernel


# -- take bounds that fit some dim values only ---------------------------------------------------
def _take_model(start, stop) -> sg.Model:
    m = sg.Model("take_some_dims", task="regression")
    B, n, k = m.dims("B n k")
    X_, y = m.input("X", (B, n)), m.target("y", (B, k))
    z = m.let("z", X_ @ m.param("W", (n, k)))
    z2 = m.let("z2", z + F.take(z, 1, start(k), stop(k)).sum(axis=1, keepdims=True))
    m.output("y_hat", z2)
    m.loss(sg.mse(z2, y))
    return m


@pytest.mark.parametrize("start, stop, text, fits, misfits", [
    (lambda k: 3, lambda k: k - 1, "3:k-1", 6, [3, 4]),  # width k - 4: negative, then empty
    (lambda k: k - 2, lambda k: k, "k-2:k", 3, [1]),  # a start of -1 would count from the end
    (lambda k: 1, lambda k: 2 * k - 3, "1:2\\*k-3", 3, [4, 5]),  # past the end of the axis
    (lambda k: 2, lambda k: k, "2:k", 4, [2]),  # take(x, 1, 2, k) is valid for k >= 3
], ids=["empty-or-negative", "negative-start", "past-the-end", "valid-for-k-from-3"])
def test_take_bounds_that_fit_some_dims_only_are_checked_at_the_call(start, stop, text, fits, misfits):
    """The shape rule refuses only bounds that can never fit; numpy would clip the others, or
    count a negative start from the end, and fail later about broadcasting (or compute a wrong
    value). The generated module checks them once its dims are bound, in one clear line."""
    m = _take_model(start, stop)
    for backend in ("numpy", "numexpr"):
        module = sg.load_module(m, backend)
        gradients_match(module, {"B": 3, "n": 2, "k": fits})
        for k in misfits:
            dims = {"B": 3, "n": 2, "k": k}
            params = module.init_params(dims, dtype=np.float64)
            batch = random_batch(module, dims, np.random.default_rng(0))
            message = (rf"^model 'take_some_dims': take z\[:, {text}\] \(eq\. \d+\) needs "
                       rf"0 <= .+; here k = {k}$")
            for name, args in (("loss_and_grad", (params, batch)), ("loss", (params, batch)),
                               ("forward", (params, {"X": batch["X"]})), ("hvp", (params, batch, params))):
                with pytest.raises(ValueError, match=message):
                    getattr(module, name)(*args)


def test_take_bounds_that_always_fit_are_not_checked():
    source = sg.source(_take_model(lambda k: 0, lambda k: k), "numpy")
    assert "needs 0 <=" not in source
    source = sg.source(_take_model(lambda k: 1, lambda k: k), "numpy")  # k = 1 leaves nothing
    assert "if not 0 <= 1 < k <= k:" in source


@pytest.mark.parametrize("alpha, other_form", [(-0.5, True), (0.2, False)])
def test_a_document_says_which_leaky_relu_derivative_the_code_uses(alpha, other_form):
    from symgrad.documents import document, render

    m = sg.Model("leaky_doc", task="regression")
    B, n = m.dims("B n")
    X_, y = m.input("X", (B, n)), m.target("y", (B, 1))
    z = m.let("z", sg.leaky_relu(X_ @ m.param("W", (n, 1)), alpha))
    m.output("y_hat", z)
    m.loss(sg.mse(z, y))
    text = render(document(m), "md")
    assert ("that form does not hold, and the code uses" in text) == other_form
