"""Using trained models and training from Python: predict/evaluate on new rows, self-contained
run folders, arrays and DataFrames in, schedules and clipping (against PyTorch), per-class
metrics (against scikit-learn), and the PyTorch export."""
from __future__ import annotations

import math
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sklearn import datasets
from sklearn import metrics as skm
from symgrad.symbolic.errors import SymgradError
from symgrad.training import metrics, schedules
from symgrad.training.data import load
from symgrad.training.loop import clip_global_norm
from symgrad.training.run import train
from symgrad.training.trained import load_trained

from symgrad.cli import main as symgrad_main
from tests.conftest import torch_or_skip

ROOT = pathlib.Path(__file__).resolve().parent.parent


def cli(capsys, *args) -> tuple[int, str, str]:
    code = symgrad_main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- a trained model on new rows ---------------------------------------------------------------------
def test_cnn_run_predicts_raw_digit_rows_reshaped_like_training(tmp_path, capsys):
    result = train("cnn_digits", epochs=1, out=tmp_path / "run", quiet=True)
    trained = load_trained(tmp_path / "run")
    digits = datasets.load_digits()
    assert trained.classes == [str(d) for d in range(10)]
    proba = trained.predict_proba(digits.data[:50])  # raw 64-column rows become 8x8x1 images
    assert proba.shape == (50, 10) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert list(trained.predict(digits.images[:50])) == list(trained.predict(digits.data[:50]))
    everything = trained.evaluate(digits.data, digits.target)
    assert set(everything) >= {"loss", "accuracy", "f1_macro", "precision_3", "recall_3", "f1_3"}
    assert trained.evaluate(digits.data, [str(t) for t in digits.target]) == everything
    (tmp_path / "rows.csv").write_text("\n".join(",".join(map(str, r)) for r in digits.data[:5]) + "\n")
    code, out, err = cli(capsys, "predict", tmp_path / "run", "--data", tmp_path / "rows.csv")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "prediction," + ",".join(f"p_{d}" for d in range(10)), err
    assert [ln.split(",")[0] for ln in lines[1:]] == list(trained.predict(digits.data[:5]))
    code, out, err = cli(capsys, "evaluate", tmp_path / "run", "--data", "digits")
    summary = out.splitlines()[-1]
    assert code == 0 and summary.startswith(f"accuracy {everything['accuracy']:.4f}  (loss "), err
    assert result.test["accuracy"] <= 1


def test_regression_and_sequence_runs_predict_in_the_datas_units(tmp_path):
    train("rnn_sines", epochs=1, out=tmp_path / "rnn", quiet=True)
    trained = load_trained(tmp_path / "rnn")
    ds = load("sines")
    values = trained.predict(ds.X[:7])
    assert values.shape == (7, 40) and trained.classes is None
    r2 = trained.evaluate(ds.X, ds.y)["r2"]
    assert r2 == pytest.approx(skm.r2_score(ds.y, trained.predict(ds.X)), abs=1e-5)
    with pytest.raises(SymgradError, match="takes 40 features per row; these rows have 3"):
        trained.predict(np.zeros((2, 3)))


def test_a_run_of_a_model_file_loads_after_the_file_is_gone(tmp_path):
    """The run keeps its generated module: another folder, no model file, and no sympy needed."""
    (tmp_path / "src").mkdir()
    model = tmp_path / "src" / "tiny.py"
    model.write_text(textwrap.dedent("""\
        import symgrad as sg
        model = sg.Model("tiny", task="multiclass")
        B, n_in, n_out = model.dims("B n_in n_out")
        X, Y = model.input("X", (B, n_in)), model.target("Y", (B, n_out))
        W, b = model.param("W", (n_in, n_out)), model.param("b", (n_out,), init="zeros")
        z = model.let("z", X @ W + b)
        model.output("P", sg.softmax(z))
        model.loss(sg.softmax_cross_entropy(z, Y))
    """))
    train(str(model), "iris", epochs=3, out=tmp_path / "run", quiet=True)
    train("mlp_tanh", "iris", epochs=2, dropout=0.3, out=tmp_path / "variant", quiet=True)
    assert (tmp_path / "run" / "model_file.py").read_text() == model.read_text()
    shutil.rmtree(tmp_path / "src")
    script = ("import sys, numpy as np, symgrad as sg\n"
              "for run in sys.argv[1:]:\n"
              "    t = sg.load_trained(run)\n"
              "    print(t.meta['model'], list(t.predict(np.ones((2, 4)))))\n"
              "print('sympy' in sys.modules)\n")
    (tmp_path / "elsewhere").mkdir()
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run"), str(tmp_path / "variant")],
                       cwd=tmp_path / "elsewhere", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("tiny [") and lines[1].startswith("mlp_tanh_dropout [")
    assert lines[2] == "False"


def test_a_gan_run_loads_and_samples(tmp_path, capsys):
    result = train("gan_ring", steps=20, out=tmp_path / "gan", quiet=True)
    assert result.summary.startswith("modes covered ")
    assert {p.name for p in (tmp_path / "gan").iterdir()} == {"config.json", "metrics.csv", "model.npz",
                                                             "module.py", "samples.png"}
    gan = load_trained(tmp_path / "gan")
    samples = gan.sample(30, seed=1)
    assert samples.shape == (30, 2) and np.array_equal(samples, gan.sample(30, seed=1))
    code, out, err = cli(capsys, "sample", tmp_path / "gan", "-n", "4")
    assert code == 0 and out.splitlines()[0] == "x0,x1" and len(out.splitlines()) == 5, err
    code, out, err = cli(capsys, "predict", tmp_path / "gan", "--data", "digits")
    assert code == 1 and "is a GAN run" in err


# -- data from Python ----------------------------------------------------------------------------------
def test_train_takes_arrays(tmp_path):
    iris = datasets.load_iris()
    result = train("softmax_regression", data=(iris.data, iris.target_names[iris.target]), epochs=30,
                   out=tmp_path / "a", quiet=True)
    assert result.config["data"] == "arrays (150 rows)" and result.test["accuracy"] > 0.7
    assert load_trained(tmp_path / "a").classes == ["setosa", "versicolor", "virginica"]
    again = train("softmax_regression", data=(iris.data, iris.target_names[iris.target]), epochs=30,
                  out=tmp_path / "b", quiet=True)
    assert all(np.array_equal(again.params[k], v) for k, v in result.params.items())
    with pytest.raises(SymgradError, match="pass the same data again"):
        train("softmax_regression", resume=tmp_path / "a", epochs=31, quiet=True)
    with pytest.raises(SymgradError, match="X has 150 rows but y has 3"):
        train("softmax_regression", data=(iris.data, [0, 1, 2]), quiet=True)


def test_train_takes_a_pandas_dataframe(tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas is not installed (symgrad reads DataFrames when it is)")
    iris = datasets.load_iris(as_frame=True).frame
    iris["species"] = np.array(["a", "b", "c"])[iris.pop("target")]
    result = train("softmax_regression", data=iris, target="species", epochs=20, out=tmp_path, quiet=True)
    assert isinstance(iris, pd.DataFrame) and result.config["target"] == "species"
    assert list(load_trained(tmp_path).predict(iris.iloc[:2, :4])) == list(
        load_trained(tmp_path).predict(iris.iloc[:2, :4].to_numpy()))


def test_a_softmax_model_trains_on_two_classes(tmp_path):
    result = train("softmax_regression", "breast_cancer", epochs=5, out=tmp_path, quiet=True)
    assert result.config["model"] == "softmax_regression" and "roc_auc" in result.test
    assert load_trained(tmp_path).predict_proba(datasets.load_breast_cancer().data[:3]).shape == (3, 2)


# -- metrics ------------------------------------------------------------------------------------------
def test_per_class_metrics_and_auc_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    proba = rng.dirichlet(np.ones(3), 200)
    got = metrics.classification(proba, labels, "multiclass", ["a", "b", "c"])
    p, r, f, _ = skm.precision_recall_fscore_support(labels, proba.argmax(1), labels=[0, 1, 2],
                                                     zero_division=0)
    for j, c in enumerate("abc"):
        mine = (got[f"precision_{c}"], got[f"recall_{c}"], got[f"f1_{c}"])
        assert mine == pytest.approx((p[j], r[j], f[j]))
    assert got["accuracy"] == skm.accuracy_score(labels, proba.argmax(1))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(labels, proba.argmax(1), average="macro"))
    np.testing.assert_array_equal(metrics.confusion(proba.argmax(1), labels, 3),
                                  skm.confusion_matrix(labels, proba.argmax(1)))
    binary = rng.random((100, 1))
    truth = (rng.random(100) < binary[:, 0]).astype(int)
    got = metrics.classification(binary, truth, "binary", ["no", "yes"])
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(truth, binary[:, 0]))
    y = rng.standard_normal((50, 3)) * [1, 10, 100]
    guess = y + rng.standard_normal(y.shape) * [0.5, 5, 10]
    assert metrics.r2(guess, y) == pytest.approx(skm.r2_score(y, guess))  # each column's r2, averaged
    pooled = 1 - ((y - guess) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    assert abs(metrics.r2(guess, y) - pooled) > 0.05


# -- schedules and clipping, against PyTorch ---------------------------------------------------------------
def _torch_rates(torch, make, steps_per_epoch, epochs, losses=None):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = make(opt)
    rates = []
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            if losses is None and not isinstance(sched, torch.optim.lr_scheduler.StepLR):
                sched.step()
        if isinstance(sched, torch.optim.lr_scheduler.StepLR):
            sched.step()
        elif losses is not None:
            sched.step(losses[epoch])
    return rates


def test_schedules_give_pytorchs_rates():
    torch = torch_or_skip()
    lr = torch.optim.lr_scheduler
    spe, epochs = 3, 12

    def ours(spec, losses=None):
        s, rates = schedules.parse(spec), []
        for e in range(epochs):
            rates += [s.factor(e * spe + k, spe, epochs) for k in range(1, spe + 1)]
            if losses is not None:
                s.end_epoch(losses[e])
        return rates

    assert ours("step:every=4,gamma=0.5") == pytest.approx(
        _torch_rates(torch, lambda o: lr.StepLR(o, 4, 0.5), spe, epochs))
    assert ours("cosine") == pytest.approx(
        _torch_rates(torch, lambda o: lr.CosineAnnealingLR(o, spe * epochs), spe, epochs), abs=1e-12)
    warm = ours("cosine:warmup=2")
    assert warm[:6] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1]) and warm[6] == 1
    losses = [5, 4, 4, 4, 4, 3.9999, 4, 4, 4, 4, 4, 4]
    assert ours("plateau:patience=2,factor=0.5", losses) == pytest.approx(
        _torch_rates(torch, lambda o: lr.ReduceLROnPlateau(o, patience=2, factor=0.5), spe, epochs, losses))
    with pytest.raises(SymgradError, match="unknown schedule 'cos'"):
        schedules.parse("cos")


def test_clipping_matches_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    ts = [torch.nn.Parameter(torch.zeros(v.shape)) for v in grads.values()]
    for t, g in zip(ts, grads.values(), strict=True):
        t.grad = torch.tensor(g.copy())
    norm = torch.nn.utils.clip_grad_norm_(ts, 0.5)
    assert clip_global_norm(grads, 0.5) == pytest.approx(float(norm))
    for t, g in zip(ts, grads.values(), strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)


def test_a_scheduled_clipped_run_resumes_exactly(tmp_path):
    settings = dict(data="iris", epochs=6, schedule="plateau:patience=0,factor=0.5", clip_norm=0.5,
                    optimizer="adam", lr=0.02, quiet=True, threads=1)
    whole = train("mlp_tanh", out=tmp_path / "whole", **settings)
    rates = [r.lr for r in whole.history]
    assert rates[0] == 0.02 and min(rates) < 0.02  # the plateau cut the rate
    train("mlp_tanh", out=tmp_path / "cut", **{**settings, "epochs": 3})
    resumed = train("mlp_tanh", resume=tmp_path / "cut", epochs=6, quiet=True)
    for k in whole.params:
        np.testing.assert_array_equal(resumed.params[k], whole.params[k])
    assert [r.lr for r in resumed.history] == rates


def test_unusual_learning_rate_warns_and_bad_flags_are_one_line(tmp_path, capsys):
    code, out, err = cli(capsys, "train", "softmax_regression", "--optimizer", "adam", "--lr", "0.5",
                         "--epochs", "1", "--out", tmp_path / "a", "--quiet")
    assert code == 0 and err.splitlines() == ["symgrad: warning: learning rate 0.5 is far above the usual "
                                              "range of adam (1e-05 to 0.03); its recommended rate is 0.001"]
    assert len(out.splitlines()) == 1 and out.startswith("test accuracy ")  # --quiet: the summary only
    for flags, message in ((["--schedule", "step:every=0"], "every must be a positive whole number"),
                           (["--clip-norm", "-1"], "clip norm must be a positive number"),
                           (["--threads", "0"], "threads must be a positive integer")):
        code, out, err = cli(capsys, "train", "softmax_regression", *flags, "--out", tmp_path / "b")
        assert code == 1 and len(err.splitlines()) == 1 and message in err, err


# -- PyTorch export ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("model, options", [
    ("softmax_regression", {}), ("linear_regression", {}), ("mlp_relu", {"dropout": 0.2}),
    ("mlp_regularised", {}), ("cnn_digits", {}), ("lstm_digits", {}), ("gru_digits", {}), ("rnn_sines", {}),
])
def test_export_loads_into_the_matching_torch_model(tmp_path, capsys, model, options):
    torch = torch_or_skip()
    nn = torch.nn
    data = {"softmax_regression": "iris", "linear_regression": "diabetes", "rnn_sines": "sines"}.get(
        model, "digits")
    train(model, data, epochs=1, out=tmp_path / "run", quiet=True, **options)
    code, out, err = cli(capsys, "export", tmp_path / "run")
    assert code == 0 and out.startswith(f"wrote {tmp_path / 'run' / 'model.pt'}"), err
    trained = load_trained(tmp_path / "run")
    sd = torch.load(tmp_path / "run" / "model.pt")
    n_in = len(trained.input_mean)
    if model in ("softmax_regression", "linear_regression"):
        net = nn.Linear(n_in, sd["weight"].shape[0])
    elif model == "mlp_relu":
        net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 64), nn.ReLU(),
                            nn.Dropout(0.2), nn.Linear(64, 10))
    elif model == "mlp_regularised":
        net = nn.Sequential(nn.Linear(64, 128, bias=False), nn.BatchNorm1d(128), nn.Tanh(), nn.Dropout(0.2),
                            nn.Linear(128, 64, bias=False), nn.BatchNorm1d(64), nn.Tanh(), nn.Dropout(0.2),
                            nn.Linear(64, 10))
    elif model == "cnn_digits":
        net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(128, 10))
    else:
        class Recurrent(nn.Module):
            def __init__(self):
                super().__init__()
                kind = nn.GRU if model == "gru_digits" else nn.LSTM
                n_h = 32 if model == "rnn_sines" else 64
                self.rnn = kind(1 if model == "rnn_sines" else 8, n_h, batch_first=True)
                self.fc = nn.Linear(n_h, 1 if model == "rnn_sines" else 10)

            def forward(self, x):
                out, _ = self.rnn(x)
                return self.fc(out) if model == "rnn_sines" else self.fc(out[:, -1])
        net = Recurrent()
    net = net.float()  # the exported tensors are the run's float32
    net.load_state_dict(sd)
    net.eval()
    rows = load(data).X[:20]
    x = torch.tensor(trained.inputs(rows), dtype=torch.float32)
    x = {"cnn_digits": lambda v: v.reshape(-1, 8, 8, 1).permute(0, 3, 1, 2),
         "lstm_digits": lambda v: v.reshape(-1, 8, 8), "gru_digits": lambda v: v.reshape(-1, 8, 8),
         "rnn_sines": lambda v: v.reshape(-1, 40, 1)}.get(model, lambda v: v)(x)
    with torch.no_grad():
        logits = net(x).double().numpy()
    ours = trained.output(rows).reshape(len(rows), -1)
    theirs = logits.reshape(len(rows), -1)
    if trained.task == "multiclass":
        theirs = np.exp(theirs - theirs.max(1, keepdims=True))
        theirs /= theirs.sum(1, keepdims=True)
    np.testing.assert_allclose(theirs, ours, rtol=2e-4, atol=2e-5)
    assert math.isfinite(float(theirs.sum())) and os.path.getsize(tmp_path / "run" / "model.pt") > 0
