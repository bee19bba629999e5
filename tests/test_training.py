"""Training runs end to end: the run folder, exact resumption, early stopping, divergence,
bad input, the accuracy targets of the default settings, and each optimizer on the digits MLP."""
from __future__ import annotations

import csv
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import symgrad.generated.linear_regression as linear_module
import symgrad.generated.mlp_regularised as regularised_module
from symgrad.symbolic.errors import SymgradError
from symgrad.training import checkpoint, optimizers
from symgrad.training.data import load, prepare, split_indices
from symgrad.training.loop import Diverged, TrainConfig, Trainer
from symgrad.training.run import RUN_FILES, load_trained, train

from symgrad import pipeline
from symgrad.cli import main as symgrad_main

ROOT = pathlib.Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^test (accuracy|r2) -?\d\.\d{4}  \(test loss \d+\.\d{4}[;,] ")


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "symgrad", "train", *args], capture_output=True,
                          text=True, cwd=ROOT, **kwargs)


def main(capsys, *args) -> tuple[int, list[str], list[str]]:
    """`symgrad train ARGS` in this process: exit status, stdout lines, stderr lines."""
    code = symgrad_main(["train", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def snapshot_files(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def metrics_rows(run_dir: pathlib.Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def without_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# -- the loop itself --------------------------------------------------------------------------------
def test_training_is_reproducible_for_a_seed():
    def final(seed):
        module = pipeline.load_module("softmax_regression")
        t = Trainer(module, prepare(load("iris"), seed=seed), TrainConfig(epochs=3, seed=seed))
        t.fit()
        return t.params

    a, b, c = final(3), final(3), final(4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["W"], c["W"])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_trainer_keeps_dtype(dtype):
    module = pipeline.load_module("logistic_regression")
    t = Trainer(module, prepare(load("breast_cancer"), seed=0), TrainConfig(epochs=1, dtype=dtype))
    t.fit()
    assert all(p.dtype == np.dtype(dtype) for p in t.params.values())
    assert all(s.dtype == np.dtype(dtype) for st in t.state.values() for s in st.values())


def test_model_state_is_updated_in_training_and_used_in_evaluation():
    module = pipeline.load_module("mlp_regularised")
    t = Trainer(module, prepare(load("iris"), seed=0), TrainConfig(epochs=2, batch_size=16))
    fresh = {k: v.copy() for k, v in t.model_state.items()}
    t.fit()
    assert set(t.model_state) == {"bn1_mean", "bn1_var", "bn2_mean", "bn2_var"}
    assert all(not np.array_equal(fresh[k], v) for k, v in t.model_state.items())
    before = t.evaluate(t.data.val)
    assert t.evaluate(t.data.val) == before  # evaluation mode: no masks, no state updates


# -- a run and its folder -------------------------------------------------------------------------
def test_run_folder_holds_metrics_plots_model_and_checkpoint(tmp_path, capsys):
    result = train("softmax_regression", "iris", epochs=4, out=tmp_path / "run", progress=True)
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == sorted(RUN_FILES)  # module.py too: self-contained
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [ln.split()[:2] for ln in lines[:4]] == [["epoch", f"{e}/4"] for e in range(1, 5)]
    assert lines[4:] == result.report.splitlines()  # per class: precision, recall, F1, rows
    assert lines[4].split() == ["test", "split", "precision", "recall", "f1", "rows"]
    assert [ln.split()[0] for ln in lines[5:]] == ["setosa", "versicolor", "virginica"]
    bar = captured.err.split("\r")  # the tqdm bar: steps of the run, running loss, validation metric
    last = re.compile(r"epoch 4/4: 100%.* 28/28 .*step/s, batch loss \d\.\d{4}, val acc \d\.\d{4}\]")
    assert any(last.match(s) for s in bar)
    # drawn as epoch 1 ends (7 steps: 97 rows in batches of 16): the label names the epoch under way
    assert any(re.match(r"epoch 2/4: .* 7/28 ", s) for s in bar), bar
    assert not any(re.match(r"epoch 1/4: .* ([7-9]|1[0-4])/28 ", s) for s in bar), bar
    rows = metrics_rows(run)
    per_class = [f"val_{m}_{c}" for c in ("setosa", "versicolor", "virginica")
                 for m in ("precision", "recall", "f1")]
    assert list(rows[0]) == ["epoch", "steps", "batch_loss", "train_loss", "train_accuracy", "val_loss",
                             "val_accuracy", *per_class, "val_f1_macro", "lr", "seconds"]
    for row, record in zip(rows, result.history, strict=True):  # train, val: measured alike
        assert float(row["train_loss"]) == record.train["loss"]
        assert float(row["val_loss"]) == record.val["loss"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["val_loss"]) for r in rows] == [h.val["loss"] for h in result.history]
    for png in ("curves.png", "confusion.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SUMMARY.match(result.summary) and result.summary.startswith("test accuracy ")
    assert float(result.summary.split()[2]) == pytest.approx(result.test["accuracy"], abs=5e-5)
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*"))


def test_model_npz_predicts_raw_rows_like_the_run(tmp_path):
    result = train("softmax_regression", "iris", epochs=5, seed=2, out=tmp_path)
    model = load_trained(tmp_path)
    for k, v in result.params.items():
        np.testing.assert_array_equal(model.params[k], v)
    assert model.meta["classes"] == ["setosa", "versicolor", "virginica"]
    assert np.load(tmp_path / "model.npz")["W"].shape == (4, 3)  # plain numpy reads it too
    ds = load("iris")
    test_rows = split_indices(ds, 2, 0.15, 0.2)["test"]
    module = pipeline.load_module("softmax_regression")
    P = module.forward(model.params, {"X": model.inputs(ds.X[test_rows]).astype(np.float32)})["P"]
    assert np.mean(P.argmax(axis=1) == ds.y[test_rows]) == result.test["accuracy"]


def test_regression_run_reports_r2_and_unstandardises(tmp_path):
    result = train("linear_regression", "diabetes", epochs=3, out=tmp_path)
    assert result.summary.startswith("test r2 ") and "r2" in result.test
    assert not (tmp_path / "confusion.png").exists() and (tmp_path / "curves.png").exists()
    model = load_trained(tmp_path)
    assert model.target_mean is not None
    np.testing.assert_allclose(model.targets(np.zeros((1, 1))), model.target_mean.reshape(1, 1))


def test_a_csv_file_with_chosen_columns_trains_from_the_command_line(tmp_path, capsys):
    ds = load("iris")
    names = ["setosa", "versicolor", "virginica"]
    lines = ["id,sl,sw,pl,pw,species"] + [f"{i},{','.join(map(str, x))},{names[y]}"
                                           for i, (x, y) in enumerate(zip(ds.X, ds.y, strict=True))]
    (tmp_path / "iris.csv").write_text("\n".join(lines) + "\n")
    code, out, err = main(capsys, "softmax_regression", "--data", tmp_path / "iris.csv", "--features",
                          "sl,sw,pl,pw", "--target", "species", "--epochs", "150", "--out", tmp_path / "run")
    assert code == 0, err
    assert out[-1].startswith("test accuracy ") and float(out[-1].split()[2]) >= 0.85
    assert load_trained(tmp_path / "run").meta["classes"] == names


# -- exact resumption -----------------------------------------------------------------------------
def test_resume_after_an_interruption_is_bit_for_bit(tmp_path, monkeypatch):
    """Dropout masks, batch-norm running averages and Adam's moments all carry over."""
    settings = dict(data="iris", optimizer="adam", lr=0.01, epochs=6, batch_size=16, seed=5)
    whole = train("mlp_regularised", out=tmp_path / "whole", quiet=True, **settings)

    real, calls = regularised_module.loss_and_grad, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 22:  # in the middle of epoch 4 (96 rows: 6 batches an epoch)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(regularised_module, "loss_and_grad", interrupted)
    with pytest.raises(KeyboardInterrupt, match="continue with --resume .*checkpoint of epoch 3"):
        train("mlp_regularised", out=tmp_path / "cut", quiet=True, **settings)
    monkeypatch.setattr(regularised_module, "loss_and_grad", real)
    assert checkpoint.load(tmp_path / "cut" / "checkpoint.npz")[1]["epoch"] == 3
    assert len(metrics_rows(tmp_path / "cut")) == 3
    resumed = train("mlp_regularised", resume=tmp_path / "cut", quiet=True)

    for name in whole.params:
        np.testing.assert_array_equal(resumed.params[name], whole.params[name])
    a, meta_a = checkpoint.load(tmp_path / "whole" / "checkpoint.npz")
    b, meta_b = checkpoint.load(tmp_path / "cut" / "checkpoint.npz")
    assert set(a) == set(b) and any(k.startswith("model_state/") for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (meta_a["rng"], meta_a["model_rng"], meta_a["steps"]) == (meta_b["rng"], meta_b["model_rng"],
                                                                      meta_b["steps"])
    rows_whole, rows_cut = metrics_rows(tmp_path / "whole"), metrics_rows(tmp_path / "cut")
    assert without_seconds(rows_whole) == without_seconds(rows_cut)
    assert resumed.test == whole.test


def test_resume_after_sigkill_from_the_command_line(tmp_path):
    """A run killed at an arbitrary moment (even while writing) resumes to the same parameters."""
    run = tmp_path / "killed"
    args = ["mlp_tanh", "--epochs", "12", "--seed", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "symgrad", "train", *args, "--out", str(run)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "checkpoint.npz").exists() and checkpoint.load(run / "checkpoint.npz")[1]["epoch"] >= 2:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    epoch = checkpoint.load(run / "checkpoint.npz")[1]["epoch"]
    assert 2 <= epoch < 12 and not (run / "model.npz").exists()
    r = cli(*args, "--resume", str(run))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == f"resuming {run} after epoch {epoch} (step {epoch * 37})"
    whole = train("mlp_tanh", epochs=12, seed=1, out=tmp_path / "whole", quiet=True)
    kept = load_trained(run)
    for name, value in whole.params.items():
        np.testing.assert_array_equal(kept.params[name], value)
    assert r.stdout.splitlines()[-1].split()[2] == whole.summary.split()[2]


def test_resume_may_raise_epochs_and_then_equals_the_longer_run(tmp_path):
    train("logistic_regression", epochs=2, out=tmp_path / "a", quiet=True)
    longer = train("logistic_regression", epochs=5, resume=tmp_path / "a", quiet=True)
    whole = train("logistic_regression", epochs=5, out=tmp_path / "b", quiet=True)
    for k in whole.params:
        np.testing.assert_array_equal(longer.params[k], whole.params[k])
    assert len(metrics_rows(tmp_path / "a")) == 5


def test_resume_refuses_other_settings_and_touches_nothing(tmp_path):
    train("logistic_regression", epochs=2, lr=0.05, out=tmp_path, quiet=True)
    before = snapshot_files(tmp_path)
    with pytest.raises(SymgradError, match=r"cannot resume with lr 0.1: the run used 0.05 "
                                           r"\(only epochs, patience and threads may change\)"):
        train("logistic_regression", lr=0.1, resume=tmp_path, quiet=True)
    with pytest.raises(SymgradError, match="cannot resume with optimizer 'adam'"):
        train("logistic_regression", optimizer="adam", resume=tmp_path, quiet=True)
    with pytest.raises(SymgradError, match="the run trained logistic_regression, not mlp_tanh"):
        train("mlp_tanh", resume=tmp_path, quiet=True)
    with pytest.raises(SymgradError, match="cannot resume with optimizer_hypers mu=0.5"):
        train("logistic_regression", optimizer_hypers={"mu": 0.5}, resume=tmp_path, quiet=True)
    assert snapshot_files(tmp_path) == before
    (tmp_path / "empty").mkdir()
    with pytest.raises(SymgradError, match="empty holds no checkpoint.npz"):
        train("logistic_regression", resume=tmp_path / "empty", quiet=True)


def test_regularisation_flags_train_the_builtins_variant_with_those_terms(tmp_path, capsys):
    """--l2/--dropout on a model without those terms derive its variant with them; at rate and
    coefficient 0 the variant is the plain model, and a real L2 coefficient shrinks the weights."""
    plain = train("mlp_tanh", "digits", epochs=2, out=tmp_path / "plain", quiet=True)
    zero = train("mlp_tanh", "digits", epochs=2, l2=0.0, dropout=0.0, out=tmp_path / "zero", quiet=True)
    assert zero.config["model"] == "mlp_tanh_dropout_l2"
    assert zero.config["model_hypers"] == {"l2": 0.0, "dropout": 0.0}
    for k in plain.params:
        np.testing.assert_allclose(zero.params[k], plain.params[k], rtol=1e-4, atol=1e-5, err_msg=k)
    code, out, err = main(capsys, "mlp_tanh", "--epochs", "2", "--l2", "0.05", "--out", tmp_path / "l2")
    assert code == 0 and SUMMARY.match(out[-1]), err
    shrunk = load_trained(tmp_path / "l2" / "model.npz").params
    norm = lambda p: sum(float(np.sum(p[k] ** 2)) for k in ("W1", "W2", "W3"))  # noqa: E731
    assert norm(shrunk) < 0.9 * norm(plain.params)
    # a resumed run rebuilds the same variant from its settings, with no flags given again
    longer = train("mlp_tanh", epochs=3, resume=tmp_path / "l2", quiet=True)
    assert longer.config["model"] == "mlp_tanh_l2" and len(longer.history) == 3


@pytest.mark.parametrize("args, message", [
    (["mlp_tanh", "--dropout", "1.5"], "dropout must be in [0, 1), not 1.5"),
    (["mlp_tanh", "--l1", "-1"], "l1 must be a non-negative number, not -1.0"),
    (["linear_regression", "--l2", "0.1"], "--l2 needs a l2 term in the equations of linear_regression"),
])
def test_regularisation_flags_reject_bad_values_and_models(tmp_path, capsys, args, message):
    code, out, lines = main(capsys, *args, "--out", tmp_path / "run")
    assert code == 1 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_folder_holding_a_run_is_not_overwritten(tmp_path):
    train("softmax_regression", epochs=1, out=tmp_path, quiet=True)
    before = snapshot_files(tmp_path)
    with pytest.raises(SymgradError, match=f"{tmp_path} holds another run .*--resume {tmp_path}"):
        train("softmax_regression", epochs=1, out=tmp_path, quiet=True)
    assert snapshot_files(tmp_path) == before


def test_default_run_folder_is_fresh_under_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = train("softmax_regression", epochs=1, quiet=True)
    second = train("softmax_regression", epochs=1, quiet=True)
    assert (first.run_dir, second.run_dir) == (pathlib.Path("runs/softmax_regression-iris-1"),
                                               pathlib.Path("runs/softmax_regression-iris-2"))


# -- early stopping ----------------------------------------------------------------------------------
def test_early_stopping_keeps_the_best_epoch(tmp_path):
    settings = dict(data="wine", optimizer="adam", lr=0.01, seed=0)
    result = train("mlp_tanh", epochs=100, patience=3, out=tmp_path / "es", quiet=True, **settings)
    losses = [h.val["loss"] for h in result.history]
    assert result.stopped_early and len(losses) == result.best_epoch + 3 < 100
    assert result.best_epoch == 1 + int(np.argmin(losses))
    assert "stopped early after epoch" in result.summary
    best = train("mlp_tanh", epochs=result.best_epoch, out=tmp_path / "best", quiet=True, **settings)
    for k in best.params:  # the kept parameters are exactly those of the best epoch
        np.testing.assert_array_equal(result.params[k], best.params[k])
        np.testing.assert_array_equal(load_trained(tmp_path / "es").params[k], best.params[k])
    assert result.test == best.test


# -- divergence --------------------------------------------------------------------------------------
def _poison(monkeypatch, at_call: int, what: str):
    real, calls = linear_module.loss_and_grad, []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss, grads = real(*args, **kwargs)
        if len(calls) == at_call:
            if what == "loss":
                return float("nan"), grads
            grads["W"][3, 0] = np.inf
        return loss, grads

    monkeypatch.setattr(linear_module, "loss_and_grad", poisoned)


@pytest.mark.parametrize("what, message", [
    ("grad", r"the gradient of parameter W holds inf at index \(3, 0\) at epoch 2, step 12 \(batch 3 of 9\)"),
    ("loss", r"the loss is nan at epoch 2, step 12 \(batch 3 of 9\)"),
])
def test_nan_or_inf_stops_with_epoch_step_and_parameter_and_keeps_the_last_checkpoint(
        tmp_path, monkeypatch, what, message):
    _poison(monkeypatch, 12, what)
    with pytest.raises(Diverged, match=message + r".*; the checkpoint of epoch 1 stays in "):
        train("linear_regression", epochs=5, out=tmp_path, quiet=True)
    assert checkpoint.load(tmp_path / "checkpoint.npz")[1]["epoch"] == 1
    assert len(metrics_rows(tmp_path)) == 1 and not (tmp_path / "model.npz").exists()


def test_a_learning_rate_that_explodes_is_one_clear_line(tmp_path, capsys):
    code, out, lines = main(capsys, "linear_regression", "--lr", "1e30", "--out", tmp_path / "run")
    assert code == 1 and len(lines) == 2, lines
    assert lines.pop(0) == ("symgrad: warning: learning rate 1e+30 is far above the usual range of sgd "
                            "(0.001 to 1); its recommended rate is 0.1")
    assert re.match(r"symgrad train: error: the loss is (inf|nan) at epoch 1, step \d+ \(batch \d+ of 9\)",
                    lines[0])
    assert "no checkpoint was written, so the empty run folder" in lines[0]
    assert re.search(r"the largest parameter entry is W\[\d+, 0\] = ", lines[0])  # the README's promise
    assert not (tmp_path / "run").exists()


# -- bad input: one line, before anything is written ------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["mlp_tanh", "--data", "missing.csv"], "data file missing.csv does not exist"),
    (["softmax_regression", "--data", "{csv}", "--target", "kind"],
     "has no column 'kind'; its columns are a, b, y"),
    (["softmax_regression", "--data", "{bad}"], "column 'b' holds 'x', which is not a number"),
    (["mlp_tanh", "--dim", "n_in=10"],
     "the data has 64 feature columns for input X, but the model expects 10 (dim n_in)"),
    (["mlp_tanh", "--lr", "-0.5"], "learning rate must be a positive number, not -0.5"),
    (["mlp_tanh", "--epochs", "0"], "epochs must be a positive integer, not 0"),
    (["mlp_tanh", "--opt", "momentum=0.9"], "optimizer adamw has no hyper-parameter 'momentum'"),
    (["mlp_tanh", "--hyper", "dropout=0.5"], "the model has no hyper-parameter 'dropout'; it has none"),
    (["mlp_tanh", "--resume", "{tmp}/nowhere"], "cannot resume: {tmp}/nowhere is not a folder"),
    (["mlp_tanh", "--patience", "0"], "patience must be a positive integer"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    (tmp_path / "good.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,6,2\n7,8,0\n9,1,1\n2,3,2\n" * 3)
    (tmp_path / "bad.csv").write_text("a,b,y\n1,2,0\n3,x,1\n")
    subst = {"{csv}": str(tmp_path / "good.csv"), "{bad}": str(tmp_path / "bad.csv"), "{tmp}": str(tmp_path)}
    args = [subst.get(a, a.replace("{tmp}", str(tmp_path))) for a in args]
    code, out, lines = main(capsys, *args, *([] if "--resume" in args else ["--out", tmp_path / "run"]))
    assert code == 1 and len(lines) == 1 and not out, lines
    assert lines[0].startswith("symgrad train: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in lines[0]
    assert not (tmp_path / "run").exists()


# -- the optimizers (the defaults' figures: tests/test_readme.py) -------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", list(optimizers.OPTIMIZERS))
def test_each_optimizer_trains_the_digits_mlp(tmp_path, name):
    """With its recommended learning rate, in a sixth of the default 60 epochs."""
    result = train("mlp_tanh", "digits", optimizer=name, epochs=10, seed=0, out=tmp_path, quiet=True)
    assert result.config["optimizer"] == name
    assert result.test["accuracy"] >= 0.95, result.summary
