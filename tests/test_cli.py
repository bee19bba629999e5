"""The command line: every command works; every mistake is one line and a non-zero exit."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "symgrad", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT)


def test_list_names_every_builtin():
    r = run("list")
    assert r.returncode == 0
    for name in ("linear_regression", "logistic_regression", "softmax_regression", "mlp_tanh"):
        assert name in r.stdout


@pytest.mark.parametrize("backend", ["auto", "numpy", "numexpr"])
def test_derive_writes_module(tmp_path, backend):
    r = run("derive", "logistic_regression", "--backend", backend, "--out", str(tmp_path), "--show")
    assert r.returncode == 0, r.stderr
    assert "dL_dW = X.T @ dL_dz" in r.stdout  # the derivation, printed
    src = (tmp_path / "logistic_regression.py").read_text()
    assert f'BACKEND = "{backend}"' in src


def test_help_everywhere():
    for args in ([], ["derive"], ["train"], ["list"]):
        r = run(*args, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["derive", "no_such_model"], "unknown model 'no_such_model'"),
    (["derive", "missing.py"], "model file missing.py does not exist"),
    (["derive", "mlp_tanh", "--backend", "cuda"], "invalid choice: 'cuda'"),
    (["train", "mlp_tanh", "--data", "mnist"], "unknown data set 'mnist'"),
    (["train", "mlp_tanh", "--epochs", "x"], "invalid int value: 'x'"),
    (["train", "mlp_tanh", "--lr", "-1"], "learning rate must be a positive number"),
    (["train", "mlp_tanh", "--data", "diabetes"], "does not fit data task 'regression'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(args, message):
    r = run(*args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr


def test_user_model_file_with_a_mistake_reports_file_and_line(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text(textwrap.dedent("""\
        import symgrad as sg
        model = sg.Model("mine")
        B, n, k = model.dims("B n k")
        X = model.input("X", (B, n))
        W = model.param("W", (k, k))
        z = model.let("z", X @ W)
    """))
    r = run("derive", str(f), "--out", str(tmp_path))
    assert r.returncode == 1
    assert r.stderr.strip() == (f"symgrad derive: error: {f}:6: matrix product of X (B, n), W (k, k): "
                                "inner dims differ: n != k")
    assert not (tmp_path / "mine.py.tmp").exists()


def test_user_model_file_derives_and_trains(tmp_path):
    f = tmp_path / "swish_net.py"
    f.write_text(textwrap.dedent("""\
        import sympy
        import symgrad as sg

        x = sympy.Symbol("x")
        swish = sg.elementwise_function("swish", x / (1 + sympy.exp(-x)), x)

        model = sg.Model("swish_net", task="multiclass")
        B, n_in, n_out = model.dims("B n_in n_out")
        n_h = model.dim("n_h", default=32)
        X, Y = model.input("X", (B, n_in)), model.target("Y", (B, n_out))
        W1, b1 = model.param("W1", (n_in, n_h)), model.param("b1", (n_h,), init="zeros")
        W2, b2 = model.param("W2", (n_h, n_out)), model.param("b2", (n_out,), init="zeros")
        h = model.let("h", swish(X @ W1 + b1))
        z = model.let("z", h @ W2 + b2)
        model.output("P", sg.softmax(z))
        model.loss(sg.softmax_cross_entropy(z, Y))
    """))
    r = run("derive", str(f), "--out", str(tmp_path))  # the model file itself is in the way
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr
    assert "elementwise_function" in f.read_text()
    r = run("derive", str(f), "--out", str(tmp_path / "gen"))
    assert r.returncode == 0, r.stderr
    assert "def loss_and_grad(" in (tmp_path / "gen" / "swish_net.py").read_text()
    r = run("train", str(f), "--data", "iris", "--epochs", "40", "--lr", "0.1", "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    acc = float(r.stdout.strip().splitlines()[-1].split()[2])
    assert acc >= 0.8


def test_train_prints_epochs_and_test_metric(tmp_path):
    r = run("train", "softmax_regression", "--epochs", "3", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert [ln.split()[1] for ln in lines[:3]] == ["1/3", "2/3", "3/3"]
    assert lines[-1].startswith("test accuracy ")
