"""The benchmark's hand-written numpy reference computes the same loss and gradients as the
generated module (a correctness check of the reference, not a timing)."""
from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest
from symgrad.generated import mlp_tanh

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _handwritten():
    spec = importlib.util.spec_from_file_location("bench_handwritten", ROOT / "bench" / "handwritten.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_handwritten_reference_matches_generated_gradients(dtype, tol):
    dims = {"n_in": 12, "n_h1": 9, "n_h2": 7, "n_out": 5}
    rng = np.random.default_rng(3)
    params = mlp_tanh.init_params(dims, seed=1, dtype=dtype)
    params = {k: (rng.uniform(-0.2, 0.2, v.shape).astype(dtype) if k.startswith("b") else v)
              for k, v in params.items()}
    X = rng.standard_normal((6, dims["n_in"])).astype(dtype)
    Y = np.eye(dims["n_out"], dtype=dtype)[rng.integers(0, dims["n_out"], 6)]
    loss, grads = mlp_tanh.loss_and_grad(params, {"X": X, "Y": Y})
    hand_loss, hand_grads = _handwritten().loss_and_grad(params, X, Y)
    assert hand_loss == pytest.approx(loss, rel=tol, abs=tol)
    assert set(hand_grads) == set(grads)
    for k, g in grads.items():
        assert hand_grads[k].dtype == g.dtype == dtype
        np.testing.assert_allclose(hand_grads[k], g, rtol=tol, atol=tol, err_msg=k)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_handwritten_lstm_matches_generated_gradients(dtype, tol):
    import symgrad as sg
    from symgrad.models import rnn

    module = sg.load_module(rnn.classifier("lstm", steps=5, features=4, hidden=6, name="bench_lstm_small"))
    rng = np.random.default_rng(4)
    params = module.init_params({"n_out": 3, "n_h": 6}, seed=2, dtype=dtype)
    params = {k: (rng.uniform(-0.3, 0.3, v.shape).astype(dtype) if k[0] in "bc" else v)
              for k, v in params.items()}
    X = rng.standard_normal((7, 5, 4)).astype(dtype)
    Y = np.eye(3, dtype=dtype)[rng.integers(0, 3, 7)]
    loss, grads = module.loss_and_grad(params, {"X": X, "Y": Y})
    hand_loss, hand_grads = _handwritten().lstm_loss_and_grad(params, X, Y)
    assert hand_loss == pytest.approx(loss, rel=tol, abs=tol)
    assert set(hand_grads) == set(grads)
    for k, g in grads.items():
        assert hand_grads[k].dtype == dtype, k
        np.testing.assert_allclose(hand_grads[k], g, rtol=tol, atol=tol, err_msg=k)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 2e-5)])
def test_handwritten_cnn_matches_generated_gradients(dtype, tol):
    from symgrad.generated import cnn_digits

    rng = np.random.default_rng(6)
    params = cnn_digits.init_params({"n_out": 4}, seed=3, dtype=dtype)
    X = rng.standard_normal((5, 8, 8, 1)).astype(dtype)
    Y = np.eye(4, dtype=dtype)[rng.integers(0, 4, 5)]
    loss, grads = cnn_digits.loss_and_grad(params, {"X": X, "Y": Y})
    hand_loss, hand_grads = _handwritten().cnn_loss_and_grad(params, X, Y)
    assert hand_loss == pytest.approx(loss, rel=tol, abs=tol)
    assert set(hand_grads) == set(grads)
    for k, g in grads.items():
        assert hand_grads[k].dtype == dtype, k
        np.testing.assert_allclose(hand_grads[k], g, rtol=tol, atol=tol, err_msg=k)


def _bench_module(name: str):
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module


def test_json_records_of_a_measurement(tmp_path):
    import json

    timing = _bench_module("timing")
    a = np.ones(1000)
    samples, _ = timing.measure({"generated auto": lambda: a * 2.0, "matmuls only": lambda: a @ a,
                                 "not recorded": lambda: a + 1.0}, rounds=5)
    names = {"generated auto": "generated", "matmuls only": "floor"}
    rows = timing.records("mlp_tiny", "float64", samples, names)
    path = tmp_path / "out.json"
    timing.write_json(str(path), rows)
    back = json.loads(path.read_text())
    assert back == rows
    assert [(r["case"], r["dtype"], r["variant"]) for r in back] == [
        ("mlp_tiny", "float64", "generated"), ("mlp_tiny", "float64", "floor")]
    for r in back:
        assert set(r) == {"case", "dtype", "variant", "median_us", "best_us"}
        assert 0 < r["best_us"] <= r["median_us"]


def test_generation_benchmark_writes_its_curve(tmp_path):
    import json

    generation = _bench_module("generation")
    path = tmp_path / "gen.json"
    assert generation.main(["--mlp", "1", "3", "--lstm", "1", "--repeats", "1", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert [(r["case"], r["layers"]) for r in rows] == [("mlp_1", 1), ("mlp_3", 3), ("lstm_1", 1)]
    assert rows[0]["nodes"] < rows[1]["nodes"]  # two more layers, more nodes
    assert all(r["derive_s"] > 0 and r["generate_s"] > 0 for r in rows)


def test_compare_times_module_files_against_the_products(capsys):
    compare = _bench_module("compare")
    module = str(ROOT / "generated" / "mlp_tanh.py")
    assert compare.main([module, module, "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("1: mlp_tanh.py") == 2 and out.count("2: mlp_tanh.py") == 2  # float32, float64
    assert "x matmuls" in out


@pytest.mark.parametrize("case", ["mlp", "cnn", "lstm"])
def test_hvp_benchmark_jax_models_compute_the_generated_loss_and_hvp(case):
    """The JAX column of bench/hvp.py times the same model: its loss and jvp-of-grad H v equal
    the generated module's (on a small batch)."""
    pytest.importorskip("jax", reason="JAX is optional (pip install -e .[bench]); its benchmark column "
                                      "is not checked here")
    bench = _bench_module("hvp")
    _, name, dims, _ = bench.CASES[case]
    module = importlib.import_module(f"symgrad.generated.{name}")
    params, batch, vector = bench.inputs(module, dims, 3)
    loss, _, hv = module.hvp(params, batch, vector)
    _, result, info = bench.jax_hvp(case, params, vector, batch["X"], batch["Y"])
    jax_loss, jax_hv = result()
    assert jax_loss == pytest.approx(loss, rel=1e-10)
    for k, h in hv.items():
        np.testing.assert_allclose(jax_hv[k], h, rtol=1e-8, atol=1e-10 * np.abs(h).max(), err_msg=k)
    assert info["compile_s"] > 0


def test_a_column_whose_variant_is_absent_says_why(capsys):
    timing = _bench_module("timing")
    timing.table("t", {"a": [1e-3, 1.1e-3, 0.9e-3]}, {"a": 0.0}, {"a": "x a", "jax": "x jax"},
                 missing="not installed")
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[-2:] == ["x", "jax"] and lines[2].endswith("not installed")


def test_compare_writes_and_times_a_models_case(tmp_path, capsys):
    """`--case cnn8 --generate FILE` writes this checkout's module of the case, and `--case`
    times module files of it against the case's products alone."""
    compare = _bench_module("compare")
    path = tmp_path / "cnn8.py"
    assert compare.main(["--case", "cnn8", "--generate", str(path)]) == 0
    assert "def loss_and_grad(" in path.read_text()
    assert compare.main(["--case", "cnn8", str(path), str(path), "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("1: cnn8.py") == 2 and out.count("2: cnn8.py") == 2  # float32, float64
    assert "digits CNN 8x8" in out and "x matmuls" in out
