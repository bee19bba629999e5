"""Integer class labels: the sparse softmax cross-entropy (gather of the log-softmax; its VJP
scatters the adjoint back) against central finite differences in float64, against
torch.nn.functional.cross_entropy with class indices, against sympy, and against the one-hot
model it equals; then training from Python and from the command line on integer labels."""
from __future__ import annotations

import numpy as np
import pytest
from symgrad.symbolic.errors import ShapeError, SymgradError

import symgrad as sg
from symgrad import pipeline
from symgrad.models import BUILTINS
from tests.conftest import torch_or_skip
from tests.oracle import (
    Interpreter,
    finite_differences,
    jiggle,
    leaves_for,
    random_batch,
    relative_error,
    run_kwargs,
    sympy_gradients,
)

SPARSE = ["softmax_regression", "mlp_relu", "cnn_digits"]
_MODULES: dict[str, tuple] = {}


def sparse_module(name: str):
    """The built-in's variant on integer labels: (model, module), derived once per session."""
    if name not in _MODULES:
        model = BUILTINS[name].sparse()
        _MODULES[name] = (model, pipeline.load_module(model))
    return _MODULES[name]


def _dims(module, rng) -> dict[str, int]:
    dims = {d: int(rng.integers(1, 7)) for d in module.DIMS}
    return {**dims, **{d: max(n, 2) for d, n in dims.items() if d == "n_out"}}


def _logits(model) -> object:
    """The node the loss reads its scores from (the argument of the log-softmax)."""
    (loss,) = model.losses.values()
    node = next(n for n in sg.symbolic.graph.topological([loss]) if n.op == "log_softmax")
    return node.args[0]


@pytest.mark.parametrize("name", SPARSE)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_gradient_matches_finite_differences_and_torch_cross_entropy(name, seed):
    torch = torch_or_skip()
    model, module = sparse_module(name)
    assert module.LABELS == ("y",) and module.INPUTS["y"] == ("B",)
    rng = np.random.default_rng(seed)
    dims = _dims(module, rng)
    params = jiggle(module.init_params(dims, seed=seed, dtype=np.float64), rng)
    batch = random_batch(module, dims, rng)
    assert batch["y"].dtype.kind == "i"
    kw = run_kwargs(module, dims)
    loss, grads = module.loss_and_grad(params, batch, **kw)

    fd = finite_differences(lambda p: module.loss(p, batch, **kw), params, limit=40, seed=seed)
    for k in params:
        checked = ~np.isnan(fd[k])
        scale = max(np.abs(fd[k][checked]).max(), np.abs(grads[k]).max(), 1e-4)
        assert np.abs(grads[k] - fd[k])[checked].max() / scale <= 1e-6, (k, dims)

    # PyTorch: the logits by autograd through the same equations, the loss by its own cross_entropy
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    leaves = leaves_for(module, tparams, {"X": torch.tensor(batch["X"])}, kw, lib=torch.tensor)
    (z,) = Interpreter("torch").evaluate([_logits(model)], leaves, dims)
    tloss = torch.nn.functional.cross_entropy(z, torch.tensor(batch["y"]))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    for k in params:
        assert relative_error(grads[k], tparams[k].grad.numpy()) <= 1e-10, k


@pytest.mark.parametrize("name", ["softmax_regression", "mlp_relu"])
def test_sparse_model_equals_the_one_hot_model(name):
    """Same parameters, labels y against one-hot rows eye(k)[y]: the same loss and gradients."""
    _, sparse = sparse_module(name)
    dense = sg.load_module(name)
    rng = np.random.default_rng(5)
    dims = {"n_in": 5, "n_out": 4, "n_h1": 6, "n_h2": 3}
    params = jiggle(sparse.init_params(dims, seed=1, dtype=np.float64), rng)
    X, y = rng.standard_normal((9, 5)), rng.integers(0, 4, 9)
    loss, grads = sparse.loss_and_grad(params, {"X": X, "y": y})
    loss_dense, grads_dense = dense.loss_and_grad(params, {"X": X, "Y": np.eye(4)[y]})
    assert loss == pytest.approx(loss_dense, rel=1e-14)
    for k in params:
        np.testing.assert_allclose(grads[k], grads_dense[k], rtol=1e-12, atol=1e-15)


def test_sparse_gradient_matches_sympy():
    model, module = sparse_module("softmax_regression")
    rng = np.random.default_rng(3)
    dims = {"B": 3, "n_in": 2, "n_out": 3}
    params = jiggle(module.init_params(dims, seed=3, dtype=np.float64), rng)
    batch = random_batch(module, dims, rng)
    _, grads = module.loss_and_grad(params, batch)
    exact = sympy_gradients(model, params, batch, run_kwargs(module, dims), dims)
    for k in params:
        assert relative_error(grads[k], exact[k]) <= 1e-12, k


def test_the_derivation_prints_gather_and_its_scatter():
    d = sg.derive(BUILTINS["softmax_regression"].sparse())
    text = "\n".join(d.text(e) for e in d.equations)
    assert "gather(log_softmax(z, axis=1), y, axis=1)" in text
    assert "scatter(" in text


def test_labels_only_index():
    m = sg.Model("bad", task="multiclass")
    B, n = m.dims("B n")
    y = m.target("y", (B,), integer=True)
    z = m.input("z", (B, n))
    with pytest.raises(ShapeError, match="integer class labels, which only index"):
        y * 2.0
    with pytest.raises(ShapeError, match="labels must be integer class labels"):
        sg.sparse_softmax_cross_entropy(z, m.target("Y", (B, n)))
    with pytest.raises(ShapeError, match=r"must have the shape \(B,\)"):
        sg.sparse_softmax_cross_entropy(z, m.target("y2", (n,), integer=True))


@pytest.mark.parametrize("labels, message", [
    (np.array([0, -1, 2]), "holds the label -1; class labels start at 0"),
    (np.array([0.0, 1.5, 2.0]), "needs integer class labels"),
    (np.array([0, 1, 3]), "class label 3 is out of range for 3 classes"),
])
def test_generated_code_refuses_bad_labels(labels, message):
    _, module = sparse_module("softmax_regression")
    params = module.init_params({"n_in": 2, "n_out": 3}, dtype=np.float64)
    with pytest.raises(ValueError, match=message):
        module.loss(params, {"X": np.ones((3, 2)), "y": labels})


def test_whole_float_labels_are_accepted():
    _, module = sparse_module("softmax_regression")
    params = module.init_params({"n_in": 2, "n_out": 3}, dtype=np.float64)
    X = np.ones((3, 2))
    assert module.loss(params, {"X": X, "y": np.array([0.0, 2.0, 1.0])}) == \
        module.loss(params, {"X": X, "y": np.array([0, 2, 1])})


def _iris():
    from sklearn.datasets import load_iris

    iris = load_iris()
    return iris.data, iris.target


def test_train_on_integer_labels_from_python_matches_one_hot(tmp_path):
    X, y = _iris()
    common = dict(data=(X, y), epochs=20, seed=0, quiet=True)
    sparse = sg.train("softmax_regression", sparse_labels=True, out=tmp_path / "sparse", **common)
    dense = sg.train("softmax_regression", out=tmp_path / "dense", **common)
    assert sparse.config["model"] == "softmax_regression_sparse"
    assert sparse.test["loss"] == pytest.approx(dense.test["loss"], rel=1e-5)
    assert sparse.test["accuracy"] == dense.test["accuracy"]
    trained = sg.load_trained(tmp_path / "sparse")
    assert trained.module.LABELS == ("y",)
    one_hot = sg.load_trained(tmp_path / "dense")
    assert trained.evaluate(X, y)["loss"] == pytest.approx(one_hot.evaluate(X, y)["loss"], rel=1e-5)
    assert list(trained.predict(X)) == list(one_hot.predict(X))


def test_a_model_file_with_integer_labels_trains_from_the_command_line(tmp_path, capsys):
    from symgrad.cli import main

    (tmp_path / "labels_model.py").write_text('''\
import symgrad as sg

model = sg.Model("labels_model", task="multiclass")
B, n_in, n_out = model.dims("B n_in n_out")
X, y = model.input("X", (B, n_in)), model.target("y", (B,), integer=True)
W, b = model.param("W", (n_in, n_out)), model.param("b", (n_out,), init="zeros")
z = model.let("z", X @ W + b)
model.output("P", sg.softmax(z))
model.loss(sg.sparse_softmax_cross_entropy(z, y))
''')
    out = tmp_path / "run"
    assert main(["train", str(tmp_path / "labels_model.py"), "--data", "iris", "--epochs", "30", "--quiet",
                 "--out", str(out)]) == 0
    assert "test accuracy 0." in capsys.readouterr().out
    assert main(["evaluate", str(out), "--data", "iris"]) == 0


def test_sparse_labels_needs_a_classifier_with_a_variant():
    with pytest.raises(SymgradError, match="--sparse-labels: linear_regression has no integer target"):
        sg.train("linear_regression", epochs=1, sparse_labels=True, quiet=True)


def test_the_backward_graph_differentiates_again():
    """scatter's VJP is gather: reverse mode over the backward graph gives the Hessian-vector
    product (evaluated by the oracle), checked against differences of the generated gradient.
    The loss squares the picked log-probabilities, so the adjoint scatter places depends on the
    parameters and the second pass goes through scatter's own VJP."""
    from symgrad.symbolic.autodiff import reverse_mode
    from symgrad.symbolic.graph import Node, topological

    m = sg.Model("squared_picks", task="multiclass")
    B, n_in, n_out = m.dims("B n_in n_out")
    X, y = m.input("X", (B, n_in)), m.target("y", (B,), integer=True)
    W = m.param("W", (n_in, n_out))
    z = m.let("z", sg.tanh(X @ W))
    m.output("P", sg.softmax(z))
    m.loss(sg.mean(sg.square(sg.gather(sg.log_softmax(z), y))))
    module = pipeline.load_module(m)
    d = sg.derive(m)
    v_W = Node.make("input", (), {"name": "v_W"}, m.params["W"].shape)
    (hv_node,) = [reverse_mode(sg.sum(v_W * d.gradients["W"]), [m.params["W"]]).adjoints[m.params["W"]]]
    assert any(n.op == "gather" and n.args[0].op != "log_softmax" for n in topological([hv_node]))
    rng = np.random.default_rng(2)
    dims = {"B": 5, "n_in": 3, "n_out": 4}
    W0 = rng.standard_normal((3, 4))
    batch = {"X": rng.standard_normal((5, 3)), "y": rng.integers(0, 4, 5)}
    v = rng.standard_normal((3, 4))
    (hv,) = Interpreter("numpy").evaluate([hv_node], {"W": W0, **batch, "v_W": v}, dims)
    h = 1e-5
    fd = (module.loss_and_grad({"W": W0 + h * v}, batch)[1]["W"]
          - module.loss_and_grad({"W": W0 - h * v}, batch)[1]["W"]) / (2 * h)
    assert relative_error(np.broadcast_to(hv, fd.shape), fd) <= 1e-6
