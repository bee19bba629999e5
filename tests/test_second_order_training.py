"""Second-order optimizers (training.second_order): newton, newton-cg and lbfgs, full batch."""
from __future__ import annotations

import numpy as np
import pytest
import symgrad.generated.logistic_regression as logistic
import symgrad.generated.softmax_regression as softmax
from symgrad.symbolic.errors import SymgradError
from symgrad.training import checkpoint
from symgrad.training.data import prepare, resolve
from symgrad.training.run import train
from symgrad.training.second_order import Curvature, Flat, Problem, SecondOrder, cg_direction

from symgrad.cli import main as symgrad_main


def curvature_of(module, batch):
    return Curvature(lambda p: module.loss_and_grad(p, batch), lambda p, v: module.hvp(p, batch, v)[2])


def logistic_problem(seed: int, B: int = 40, n_in: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(B, n_in))
    Y = (rng.random((B, 1)) < 0.5).astype(float)  # random labels: not separable, a finite optimum
    params = {"W": rng.normal(scale=0.3, size=(n_in, 1)), "b": rng.normal(scale=0.3, size=(1,))}
    return X, Y, params


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_newton_step_equals_a_numpy_solve_of_the_damped_system(seed):
    """The step is x + d with (H + lambda I) d = -g, H and g written out by hand for logistic
    regression: A^T diag(p (1 - p)) A / B and A^T (p - y) / B with A = [X 1]."""
    X, Y, params = logistic_problem(seed, n_in=2 + seed)
    damping = 0.05
    A = np.hstack([X, np.ones((len(X), 1))])
    p = 1 / (1 + np.exp(-(A @ np.concatenate([params["W"][:, 0], params["b"]]))))
    H = A.T @ (A * (p * (1 - p))[:, None]) / len(X)
    g = A.T @ (p - Y[:, 0]) / len(X)
    d = np.linalg.solve(H + damping * np.eye(len(g)), -g)

    opt = SecondOrder("newton")
    state = opt.init_state(params)
    state["W"]["damping"][...] = damping
    x0 = np.concatenate([params["W"][:, 0], params["b"]])
    opt.step(params, None, state, 1, None, curvature=curvature_of(logistic, {"X": X, "Y": Y}))
    np.testing.assert_allclose(np.concatenate([params["W"][:, 0], params["b"]]), x0 + d, rtol=1e-10,
                               atol=1e-12)
    # Levenberg-Marquardt: the actual decrease against the quadratic model's sets the next lambda
    def f(x):
        z = A @ x
        return np.mean(np.logaddexp(0, z) - Y[:, 0] * z)

    rho = (f(x0 + d) - f(x0)) / (g @ d + 0.5 * d @ H @ d)
    factor = 2 / 3 if rho > 0.75 else 1.5 if rho < 0.25 else 1.0
    assert float(state["W"]["damping"]) == pytest.approx(damping * factor, rel=1e-12)


def test_the_assembled_hessian_equals_finite_differences_of_the_gradient():
    """All parameters together (W and b of softmax regression, the blocks between them too)."""
    rng = np.random.default_rng(3)
    batch = {"X": rng.normal(size=(12, 4)), "Y": np.eye(3)[rng.integers(0, 3, 12)]}
    params = softmax.init_params({"n_in": 4, "n_out": 3}, seed=1, dtype=np.float64)
    flat = Flat(params)
    problem = Problem(curvature_of(softmax, batch), flat)
    x = flat.flat(params)
    H = problem.hessian(x)
    eps = 1e-5
    fd = np.empty_like(H)
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = eps
        fd[:, j] = (problem.loss_and_grad(x + e)[1] - problem.loss_and_grad(x - e)[1]) / (2 * eps)
    np.testing.assert_allclose(H, fd, atol=1e-8)


def test_cg_solves_a_positive_definite_system_and_stops_at_negative_curvature():
    rng = np.random.default_rng(0)
    Q = rng.normal(size=(30, 30))
    H = Q @ Q.T / 30 + 0.1 * np.eye(30)
    g = rng.normal(size=30)
    d, dHd = cg_direction(lambda v: H @ v, g, 0.5, np.zeros(30), 200)
    exact = np.linalg.solve(H + 0.5 * np.eye(30), -g)
    np.testing.assert_allclose(d, exact, rtol=1e-3, atol=1e-3 * np.abs(exact).max())
    assert dHd == pytest.approx(d @ H @ d, rel=1e-8)
    indefinite = -np.eye(30)
    d, _ = cg_direction(lambda v: indefinite @ v, g, 0.5, np.zeros(30), 50)
    assert g @ d < 0  # still a descent direction (the gradient's)


@pytest.fixture
def breast_cancer_train():
    ds = prepare(resolve("breast_cancer", "binary"), 0, 0.15, 0.2, per_column=True, sparse=False,
                 dtype="float64")
    return ds.train.X, ds.train.Y.reshape(-1)


@pytest.mark.parametrize("optimizer", ["newton", "lbfgs"])
def test_l2_logistic_regression_reaches_scikit_learns_optimum(tmp_path, optimizer, breast_cancer_train):
    """The training split is linearly separable (newton reaches training accuracy 1 without a
    penalty), so the unpenalised optimum lies at infinity; with an L2 penalty on W both
    minimise the same strictly convex objective: ours, mean BCE + l2 ||W||^2, is
    scikit-learn's ||w||^2 / 2 + C sum BCE divided by C B, for C = 1 / (2 l2 B)."""
    from sklearn.linear_model import LogisticRegression

    l2 = 1e-3
    result = train("logistic_regression", optimizer=optimizer, seed=0, l2=l2, dtype="float64",
                   out=tmp_path / "run", quiet=True)
    X, y = breast_cancer_train
    sk = LogisticRegression(C=1 / (2 * l2 * len(X)), tol=1e-12, max_iter=100_000).fit(X, y)

    def objective(w, b):
        z = X @ np.reshape(w, -1) + b[0]
        return np.mean(np.logaddexp(0, z) - y * z) + l2 * np.sum(np.square(w))

    ours, theirs = objective(result.params["W"], result.params["b"]), objective(sk.coef_, sk.intercept_)
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert result.history[-1].train["loss"] == pytest.approx(theirs, rel=1e-6)  # what metrics.csv holds
    assert len(result.history) == 10


def test_newton_logistic_regression_meets_issue_11(tmp_path):
    """Defaults and seed 0: test accuracy >= 0.95 within 10 epochs, each step lowers the loss."""
    result = train("logistic_regression", optimizer="newton", seed=0, out=tmp_path / "run", quiet=True)
    assert len(result.history) == 10 and result.history[-1].steps == 10  # one full-batch step an epoch
    losses = [r.train["loss"] for r in result.history]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))
    assert result.test["accuracy"] >= 0.95
    assert result.history[-1].train["accuracy"] == 1.0  # separable: no finite unpenalised optimum


def test_each_optimizer_from_the_command_line(tmp_path, capsys):
    for optimizer, model in (("newton", "softmax_regression"), ("lbfgs", "logistic_regression"),
                             ("newton-cg", "logistic_regression")):
        out = tmp_path / optimizer
        code = symgrad_main(["train", model, "--optimizer", optimizer, "--epochs", "3", "--opt", "lr=0.8"
                             if optimizer != "lbfgs" else "iterations=5", "--out", str(out), "--quiet"])
        lines = capsys.readouterr().out.strip().splitlines()
        assert code == 0
        assert f"{optimizer} lr " in lines[-1] and "3 epochs" in lines[-1]
        rows = (out / "metrics.csv").read_text().splitlines()
        assert len(rows) == 4 and rows[-1].startswith("3,3,")  # epoch 3, step 3


@pytest.mark.parametrize("optimizer, model, settings", [
    ("newton", "softmax_regression", {}),
    ("lbfgs", "logistic_regression", {"optimizer_hypers": {"iterations": 3}}),
    ("newton-cg", "mlp_tanh", {"optimizer_hypers": {"cg_iters": 4}, "dims": {"n_h1": 8, "n_h2": 6},
                               "dropout": 0.1}),
])
def test_resume_is_bit_for_bit(tmp_path, optimizer, model, settings):
    whole = train(model, optimizer=optimizer, epochs=4, out=tmp_path / "whole", quiet=True, **settings)
    train(model, optimizer=optimizer, epochs=2, out=tmp_path / "cut", quiet=True, **settings)
    resumed = train(model, epochs=4, resume=tmp_path / "cut", quiet=True)
    for k, v in whole.params.items():
        np.testing.assert_array_equal(resumed.params[k], v)
    a, _ = checkpoint.load(tmp_path / "whole" / "checkpoint.npz")
    b, _ = checkpoint.load(tmp_path / "cut" / "checkpoint.npz")
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert [r.train for r in resumed.history] == [r.train for r in whole.history]


@pytest.mark.parametrize("kwargs, message", [
    ({"model": "mlp_tanh", "optimizer": "newton"},
     r"^newton forms the full 17226x17226 Hessian, and this model has 17226 parameters \(newton's limit is "
     r"2000\); use --optimizer newton-cg"),
    ({"optimizer": "newton", "batch_size": 16},
     "^--batch-size does not apply to optimizer newton: it steps on"),
    ({"optimizer": "lbfgs", "schedule": "cosine"}, "^--schedule does not apply to optimizer lbfgs"),
    ({"optimizer": "newton-cg", "clip_norm": 1.0}, "^--clip-norm does not apply to optimizer newton-cg"),
    ({"optimizer": "newton-cg", "optimizer_hypers": {"cg_iters": 0}},
     "^optimizer newton-cg: cg_iters must be a positive whole number, not 0"),
    ({"optimizer": "newton", "optimizer_hypers": {"mu": 0.9}},
     "^optimizer newton has no hyper-parameter 'mu'; it has lr, damping$"),
    ({"optimizer": "newton", "dropout": 0.2}, "^--dropout needs a hidden layer to drop units from"),
])
def test_settings_that_do_not_fit_are_refused_in_one_line(tmp_path, kwargs, message):
    kwargs = {"model": "logistic_regression", **kwargs}
    with pytest.raises(SymgradError, match=message) as e:
        train(kwargs.pop("model"), out=tmp_path / "run", quiet=True, **kwargs)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_data_parallel_second_order_is_refused(tmp_path):
    with pytest.raises(SymgradError, match="^optimizer lbfgs trains in one process"):
        train("logistic_regression", optimizer="lbfgs", workers=2, out=tmp_path / "run", quiet=True)


def test_sparse_labels_train_exactly_as_one_hot_targets(tmp_path):
    """Integer labels reach the float64 curvature as integers (not cast to floats)."""
    sparse = train("softmax_regression", optimizer="newton", sparse_labels=True, epochs=4, out=tmp_path / "s",
                   quiet=True)
    dense = train("softmax_regression", optimizer="newton", epochs=4, out=tmp_path / "d", quiet=True)
    for k, v in dense.params.items():
        np.testing.assert_allclose(sparse.params[k], v, rtol=1e-5, atol=1e-6)
    assert sparse.test["accuracy"] == dense.test["accuracy"]


@pytest.mark.slow
def test_newton_cg_trains_the_digits_mlp_past_0_95(tmp_path):
    """Issue 11's target for newton-cg, with its defaults (30 epochs, 50 CG iterations)."""
    result = train("mlp_tanh", optimizer="newton-cg", seed=0, out=tmp_path / "run", quiet=True)
    assert result.test["accuracy"] > 0.95
