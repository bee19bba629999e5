"""The linear-algebra primitives (trace, diag, diagonal, eye, outer, tril, det, logdet, inv,
solve, cholesky), on matrices and on stacks of them: each primitive's generated VJP against
central finite differences in float64 over random sizes, against PyTorch autograd through
torch.trace / torch.linalg.*, and (trace, det, inv, logdet, solve) against sympy on explicit
small matrices; forward values against numpy and torch; singular and ill-conditioned inputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from symgrad.symbolic import ops as F
from symgrad.symbolic.errors import ShapeError

import symgrad as sg
from tests.conftest import torch_or_skip
from tests.oracle import Interpreter, finite_differences, relative_error, sympy_gradients

# name -> (operands: name -> kind of value, the expression). Kinds: "square" a well-conditioned
# matrix, "spd" symmetric positive definite, "vec" a vector, "rhs" a right-hand side (n, k).
CASES = {
    "trace": ({"X": "square"}, lambda a: F.trace(a["X"])),
    "diag": ({"v": "vec"}, lambda a: F.diag(a["v"])),
    "diagonal": ({"X": "square"}, lambda a: F.diagonal(a["X"])),
    "outer": ({"v": "vec", "w": "vec"}, lambda a: F.outer(a["v"], a["w"])),
    "tril": ({"X": "square"}, lambda a: F.tril(a["X"])),
    "tril_strict": ({"X": "square"}, lambda a: F.tril(a["X"], -1)),
    "det": ({"X": "square"}, lambda a: F.det(a["X"])),
    "logdet": ({"X": "square"}, lambda a: F.logdet(a["X"])),
    "inv": ({"X": "square"}, lambda a: F.inv(a["X"])),
    "solve": ({"X": "square", "R": "rhs"}, lambda a: F.solve(a["X"], a["R"])),
    "solve_vector": ({"X": "square", "u": "vec1"}, lambda a: F.solve(a["X"], a["u"])),
    "cholesky": ({"S": "spd"}, lambda a: F.cholesky(a["S"])),
    "eye_scaled": ({"X": "square"}, lambda a: sg.sum(a["X"]) * F.eye(a["X"].shape[-1]) + a["X"]),
    "matmul_stacks": ({"X": "square", "R": "rhs"}, lambda a: a["X"] @ a["R"]),
    "matmul_broadcast": ({"M": "square_one", "R": "rhs"}, lambda a: a["M"] @ a["R"]),  # (1, n, n) @ (b, n, k)
    "vector_times_stack": ({"u": "vec1", "R": "rhs"}, lambda a: a["u"] @ a["R"]),
    "stack_transposed": ({"R": "rhs", "X": "square"}, lambda a: a["R"].mT @ a["X"] @ a["R"]),
}
SYMPY_CASES = ("trace", "det", "inv", "logdet", "solve", "solve_vector", "diag", "outer")


def build(case: str, stacked: bool) -> sg.Model:
    """sum(C * f) + sum(f * f) / 2 for the primitive f: the adjoint reaching f is C + f, an
    arbitrary tensor, and the second term exercises f's value too. Stacked: operands get a
    leading axis b (the vector right-hand side `u` stays one vector, broadcast)."""
    kinds, expr = CASES[case]
    m = sg.Model(f"linalg_{case}{'_stacked' if stacked else ''}")
    b, n, k = m.dims("b n k")
    lead = (b,) if stacked else ()
    shapes = {"square": lead + (n, n), "spd": lead + (n, n), "vec": lead + (n,), "rhs": lead + (n, k),
              "vec1": (n,), "square_one": (1,) * stacked + (n, n)}
    operands = {name: m.param(name, shapes[kind]) for name, kind in kinds.items()}
    f = m.output("f", expr(operands))
    C = m.input("C", f.shape)
    m.loss(sg.sum(C * f) + sg.sum(f * f) / 2)
    return m


_MODULES: dict = {}


def module_for(case: str, stacked: bool):
    key = (case, stacked)
    if key not in _MODULES:
        model = build(case, stacked)
        _MODULES[key] = (model, sg.load_module(model))
    return _MODULES[key]


def values(case: str, stacked: bool, dims: dict[str, int], rng: np.random.Generator) -> tuple[dict, dict]:
    b, n, k = dims["b"], dims["n"], dims["k"]
    lead = (b,) if stacked else ()
    params = {}
    for name, kind in CASES[case][0].items():
        if kind == "square_one":
            x = rng.standard_normal((1,) * stacked + (n, n))
        elif kind == "square":  # well-conditioned; a random sign flip of a row makes det negative
            x = rng.standard_normal(lead + (n, n)) + 2 * n * np.eye(n)
            x[..., 0, :] *= rng.choice([-1.0, 1.0], size=lead + (1,))
        elif kind == "spd":
            a = rng.standard_normal(lead + (n, n))
            x = a @ np.swapaxes(a, -1, -2) + n * np.eye(n)
        elif kind == "rhs":
            x = rng.standard_normal(lead + (n, k))
        elif kind == "vec1":
            x = rng.standard_normal((n,))
        else:
            x = rng.standard_normal(lead + (n,))
        params[name] = x
    model, module = module_for(case, stacked)
    shape = tuple(d if isinstance(d, int) else dims[d] for d in module.INPUTS["C"])
    return params, {"C": rng.standard_normal(shape)}


SIZES = st.fixed_dictionaries({"b": st.integers(1, 3), "n": st.integers(1, 4), "k": st.integers(1, 3)})


@pytest.mark.parametrize("stacked", [False, True], ids=["matrix", "stack"])
@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=5, deadline=None)
@given(dims=SIZES, seed=st.integers(0, 2**31 - 1))
def test_vjp_matches_finite_differences(case, stacked, dims, seed):
    model, module = module_for(case, stacked)
    rng = np.random.default_rng(seed)
    params, batch = values(case, stacked, dims, rng)
    loss, grads = module.loss_and_grad(params, batch)
    assert loss == pytest.approx(module.loss(params, batch), rel=1e-12)
    fd = finite_differences(lambda p: module.loss(p, batch), params, limit=64, seed=seed)
    for name in params:
        assert grads[name].shape == params[name].shape and grads[name].dtype == np.float64
        checked = ~np.isnan(fd[name])
        scale = max(np.abs(fd[name][checked]).max(initial=0), np.abs(grads[name]).max(), 1e-4)
        assert np.abs(grads[name] - fd[name])[checked].max(initial=0) / scale <= 1e-6, (name, dims)


@pytest.mark.parametrize("stacked", [False, True], ids=["matrix", "stack"])
@pytest.mark.parametrize("case", list(CASES))
def test_vjp_and_values_match_pytorch(case, stacked):
    torch = torch_or_skip()
    model, module = module_for(case, stacked)
    sizes = ({"b": 2, "n": 3, "k": 2}, {"b": 3, "n": 4, "k": 1}, {"b": 1, "n": 1, "k": 3})
    for seed, dims in enumerate(sizes):
        rng = np.random.default_rng(seed)
        params, batch = values(case, stacked, dims, rng)
        loss, grads = module.loss_and_grad(params, batch)
        tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        leaves = {**tparams, **{k: torch.tensor(v) for k, v in batch.items()}}
        tf, tloss = Interpreter("torch").evaluate([model.outputs["f"], model.losses["L"]], leaves, dims)
        tloss.backward()
        assert loss == pytest.approx(tloss.item(), rel=1e-10)
        f = module.forward(params, batch)["f"]
        assert relative_error(np.asarray(f), tf.detach().numpy()) <= 1e-12
        (nf,) = Interpreter("numpy").evaluate([model.outputs["f"]], {**params, **batch}, dims)
        assert relative_error(np.asarray(f), np.asarray(nf)) <= 1e-12
        for name in params:
            assert relative_error(grads[name], tparams[name].grad.numpy()) <= 1e-9, (name, dims)


@pytest.mark.parametrize("case", SYMPY_CASES)
def test_vjp_matches_sympy_on_explicit_matrices(case):
    model, module = module_for(case, False)
    dims = {"b": 1, "n": 2, "k": 2}
    params, batch = values(case, False, dims, np.random.default_rng(3))
    _, grads = module.loss_and_grad(params, batch)
    exact = sympy_gradients(model, params, batch, {"hypers": {}, "state": {}}, dims)
    for name in params:
        assert relative_error(grads[name], exact[name]) <= 1e-10, name


def test_textbook_forms_in_the_derivation():
    """d tr(A X B)/dX = A^T B^T, d log|det X|/dX = X^{-T}, d X^{-1}: -X^{-T} G X^{-T}: the
    derivation prints them as a textbook writes them."""
    m = sg.Model("forms")
    n, k = m.dims("n k")
    X, A, Bm, G = m.param("X", (n, n)), m.input("A", (k, n)), m.input("Bm", (n, k)), m.input("G", (n, n))
    m.loss(F.trace(A @ X @ Bm) + F.logdet(X) + sg.sum(G * F.inv(X)))
    d = sg.derive(m)
    latex = [d.latex(e) for e in d.backward]
    text = str(d)
    assert "A.T @ Bm.T" in text and "-(inv(X).T @ G @ inv(X).T)" in text
    assert r"A^{\top} Bm^{\top}" in "\n".join(latex)
    assert any(line.endswith(r"= X^{-\top}") for line in latex)
    assert any(r"- X^{-\top} G X^{-\top}" in line for line in latex)
    assert r"\operatorname{tr}\left(A X Bm\right)" in d.latex(d.forward[0])
    assert r"\log\left|\det\left(X\right)\right|" in d.latex(d.forward[0])


def test_solve_adjoint_prints_as_a_transposed_inverse():
    m = sg.Model("solve_forms")
    (n,) = m.dims("n")
    A, b, c = m.param("A", (n, n)), m.input("b", (n,)), m.input("c", (n,))
    m.loss(c @ F.solve(A, b))
    d = sg.derive(m)
    assert any(r"A^{-\top} c" in d.latex(e) for e in d.backward)


# -- singular and ill-conditioned inputs ----------------------------------------------------------
SINGULAR = np.array([[1.0, 2.0], [2.0, 4.0]])


def _raises_like_torch(fn, torch_fn, match: str):
    torch = torch_or_skip()
    with pytest.raises(np.linalg.LinAlgError, match=match):
        fn()
    with pytest.raises(RuntimeError):  # PyTorch refuses too
        torch_fn(torch)


def test_inv_of_a_singular_matrix_names_the_equation():
    model, module = module_for("inv", False)
    batch = {"C": np.ones((2, 2))}
    _raises_like_torch(lambda: module.loss_and_grad({"X": SINGULAR}, batch),
                       lambda t: t.linalg.inv(t.tensor(SINGULAR)),
                       r"equation \(1\): inv\(X\): the matrix is singular$")


@pytest.mark.parametrize("dtype, small", [(np.float64, 1e-17), (np.float32, 1e-8)])
def test_inv_of_a_matrix_singular_to_working_precision_is_refused(dtype, small):
    """No digit of the inverse would be right: an error, not 1e17 of noise."""
    model, module = module_for("inv", False)
    X = np.array([[1.0, 0.0], [0.0, small]], dtype=dtype)
    with pytest.raises(np.linalg.LinAlgError, match="singular to float(32|64) precision"):
        module.loss({"X": X}, {"C": np.ones((2, 2), dtype=dtype)})


def test_solve_with_a_singular_matrix_names_the_equation():
    model, module = module_for("solve", False)
    params = {"X": SINGULAR, "R": np.ones((2, 1))}
    _raises_like_torch(lambda: module.loss(params, {"C": np.ones((2, 1))}),
                       lambda t: t.linalg.solve(t.tensor(SINGULAR), t.ones(2, 1, dtype=t.float64)),
                       r"equation \(1\): solve\(X, R\): the matrix is singular$")


def test_cholesky_of_an_indefinite_matrix_names_the_equation():
    model, module = module_for("cholesky", False)
    S = np.array([[1.0, 2.0], [2.0, 1.0]])
    _raises_like_torch(lambda: module.loss({"S": S}, {"C": np.ones((2, 2))}),
                       lambda t: t.linalg.cholesky(t.tensor(S)),
                       r"equation \(1\): cholesky\(S\): the matrix is not positive definite$")


def test_logdet_and_det_of_a_singular_matrix_are_minus_inf_and_zero_as_in_pytorch():
    torch = torch_or_skip()
    _, logdet = module_for("logdet", False)
    _, det = module_for("det", False)
    with np.errstate(invalid="ignore"):  # the loss C f + f^2/2 is -inf + inf there
        f = logdet.forward({"X": SINGULAR}, {"C": np.float64(1)})["f"]
    assert f == -np.inf == torch.linalg.slogdet(torch.tensor(SINGULAR)).logabsdet.item()
    assert det.forward({"X": SINGULAR}, {"C": np.float64(1)})["f"] == 0 == torch.linalg.det(
        torch.tensor(SINGULAR)).item()
    # the gradient X^{-T} does not exist there: a clear error, not infinities
    with pytest.raises(np.linalg.LinAlgError, match="singular"), np.errstate(invalid="ignore"):
        logdet.loss_and_grad({"X": SINGULAR}, {"C": np.float64(1)})


def test_nan_passes_through_for_the_training_loop_to_report():
    model, module = module_for("inv", False)
    X = np.array([[np.nan, 1.0], [1.0, 2.0]])
    assert np.isnan(module.loss({"X": X}, {"C": np.ones((2, 2))}))


# -- shape errors -----------------------------------------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda Y, X, v, w: F.inv(v), r"inverse of v \(n,\): this operation needs a square matrix"),
    (lambda Y, X, v, w: F.det(X), r"X \(n, k\): this operation needs a square matrix"),
    (lambda Y, X, v, w: F.solve(Y, w), "the right-hand side has k rows, the matrix n"),
    (lambda Y, X, v, w: F.diag(F.trace(Y)), "diag needs a vector"),
    (lambda Y, X, v, w: F.tril(v), "tril needs a matrix"),
    (lambda Y, X, v, w: F.outer(F.trace(Y), v), "outer needs two vectors"),
])
def test_shape_errors_name_the_operation(make, message):
    m = sg.Model("bad")
    n, k = m.dims("n k")
    operands = m.param("Y", (n, n)), m.param("X", (n, k)), m.param("v", (n,)), m.param("w", (k,))
    with pytest.raises(ShapeError, match=message):
        make(*operands)


def test_batched_matmul_shapes():
    m = sg.Model("bmm")
    b, t, d, e = m.dims("b t d e")
    Q, K = m.input("Q", (b, t, d)), m.input("K", (b, t, d))
    assert (Q @ K.mT).shape == (b, t, t)
    assert (Q @ m.input("W", (d, e))).shape == (b, t, e)
    assert (m.input("P", (1, t, d)) @ K.mT).shape == (b, t, t)
    assert (m.input("u", (t,)) @ K).shape == (b, d)
    with pytest.raises(ShapeError, match="inner dims differ"):
        Q @ K
    with pytest.raises(ShapeError, match="do not broadcast"):
        m.input("Z", (e, t, d)) @ K.mT
