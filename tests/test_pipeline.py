"""The pipeline from Python: model files beside their helpers, warnings that reach the user,
generated modules that say how to write them again, default dims, and a clean exit."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import symgrad.generated.mlp_tanh as mlp_tanh
from symgrad.symbolic.errors import SymgradWarning

import symgrad as sg
from symgrad import pipeline

ROOT = pathlib.Path(__file__).resolve().parent.parent

LAYERS = '''\
import symgrad as sg


def dense(m, x, name, n_in, n_out):
    W = m.param(f"W_{name}", (n_in, n_out))
    b = m.param(f"b_{name}", (n_out,), init="zeros")
    return x @ W + b
'''

NET = '''\
import symgrad as sg
from layers import dense

model = sg.Model("two_layer", task="multiclass")
B, n_in, n_out = model.dims("B n_in n_out")
n_h = model.dim("n_h", default=16)
X, Y = model.input("X", (B, n_in)), model.target("Y", (B, n_out))
h = model.let("h", sg.tanh(dense(model, X, "1", n_in, n_h)))
z = model.let("z", dense(model, h, "2", n_h, n_out))
model.output("P", sg.softmax(z))
model.loss(sg.softmax_cross_entropy(z, Y))
'''


def test_init_params_fills_in_the_default_dims():
    params = mlp_tanh.init_params({"n_in": 64, "n_out": 10})  # n_h1, n_h2 from DEFAULT_DIMS
    assert params["W1"].shape == (64, 128) and params["W2"].shape == (128, 64)
    params = mlp_tanh.init_params({"n_in": 64, "n_out": 10, "n_h1": 7})  # a given dim wins
    assert params["W1"].shape == (64, 7)
    with pytest.raises(ValueError, match="dim 'n_in' is missing"):
        mlp_tanh.init_params({"n_out": 10})


def test_a_model_file_imports_a_module_beside_it(tmp_path, monkeypatch):
    (tmp_path / "layers.py").write_text(LAYERS)
    (tmp_path / "net.py").write_text(NET)
    monkeypatch.chdir(ROOT)  # not the file's folder
    before = list(sys.path)
    model = pipeline.resolve(str(tmp_path / "net.py"))
    assert sorted(model.params) == ["W_1", "W_2", "b_1", "b_2"]
    assert sys.path == before  # the folder was on the path only while the file ran
    r = subprocess.run([sys.executable, "-m", "symgrad", "derive", "net.py", "--out", "gen"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    header = (tmp_path / "gen" / "two_layer.py").read_text().splitlines()[4]
    # named after Model("two_layer"), and the header gives the command that writes it again
    assert header == "Do not edit: `symgrad derive net.py` writes this file again, byte for byte."
    r = subprocess.run([sys.executable, "-m", "symgrad", "derive", "net.py", "--out", "gen"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "wrote gen/two_layer.py", r.stderr


def test_headers_say_how_each_module_is_written_again():
    builtin = pipeline.source("softmax_regression").splitlines()[4]
    assert builtin == ("Do not edit: `symgrad derive softmax_regression` writes this file again, "
                       "byte for byte.")
    m = sg.BUILTINS["softmax_regression"].build()
    m.origin = None  # as built in a script
    assert sg.source(m).splitlines()[4] == ("Do not edit: `symgrad.write(model)` with this model writes this "
                                            "file again, byte for byte.")
    m.origin = "my models/net.py"  # not plain: the path stays out of the source
    assert "net.py" not in sg.source(m).splitlines()[4]


def test_load_module_shows_the_warning_the_command_line_shows():
    m = sg.Model("unused_param", task="regression")
    B, n = m.dims("B n")
    X, y = m.input("X", (B, n)), m.target("y", (B, 1))
    W, _ = m.param("W", (n, 1)), m.param("spare", (1,))
    z = m.let("z", X @ W)
    m.output("p", z)
    m.loss(sg.mse(z, y))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        module = sg.load_module(m)
    assert [str(w.message) for w in caught if issubclass(w.category, SymgradWarning)] == [
        "model 'unused_param': parameter 'spare' never reaches the loss 'L'; its gradient is always zero"]
    params = module.init_params({"n": 3})
    assert np.all(module.loss_and_grad(params, {"X": np.ones((2, 3)), "y": np.ones((2, 1))})[1]["spare"] == 0)


def test_the_readme_model_then_scikit_learn_exits_cleanly(tmp_path):
    """Nodes freed at interpreter exit used to hash sympy numbers after mpmath was gone."""
    script = textwrap.dedent('''\
        import sympy
        import symgrad as sg
        m = sg.Model("mlp", task="multiclass")
        B, n_in, n_out = m.dims("B n_in n_out")
        n_h = m.dim("n_h", default=64)
        X, Y = m.input("X", (B, n_in)), m.target("Y", (B, n_out))
        W1, b1 = m.param("W1", (n_in, n_h)), m.param("b1", (n_h,), init="zeros")
        W2, b2 = m.param("W2", (n_h, n_out)), m.param("b2", (n_out,), init="zeros")
        x = sympy.Symbol("x")
        swish = sg.elementwise_function("swish", x / (1 + sympy.exp(-x)), x)
        z1 = m.let("z1", X @ W1 + b1)
        h1 = m.let("h1", swish(z1))
        z2 = m.let("z2", h1 @ W2 + b2)
        m.output("P", sg.softmax(z2))
        m.loss(sg.softmax_cross_entropy(z2, Y) + 1e-4 * sg.l2(W1))
        d = sg.derive(m)  # a derivation still held when the interpreter exits
        module = sg.load_module(m)
        import sklearn.datasets
    ''')
    r = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
