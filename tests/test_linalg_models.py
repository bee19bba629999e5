"""The built-in models that need linear algebra: the Gaussian fitted by maximum likelihood
(its learnt covariance reaches the sample covariance; a density model trains from the command
line, from bundled or file data) and the self-attention classifier (checked against PyTorch's
own scaled dot-product attention, and trained past a stated accuracy)."""
from __future__ import annotations

import numpy as np
import pytest
from symgrad.symbolic.errors import SymgradError
from symgrad.training.data import gaussian, load_bundled, prepare

import symgrad as sg
from symgrad.cli import main
from tests.conftest import torch_or_skip


def test_gaussian_nll_learns_the_sample_mean_and_covariance(tmp_path):
    """The maximum-likelihood fit of a Gaussian is the sample mean and the (biased) sample
    covariance; the default training gets both to within 3% of the covariance's size."""
    run = sg.train("gaussian_nll", seed=0, out=tmp_path, quiet=True)
    X = prepare(load_bundled("gaussian"), seed=0).train.X  # the rows training saw (standardised)
    S, mean = np.cov(X.T, bias=True), X.mean(axis=0)
    Sigma = sg.load_module("gaussian_nll").forward(run.params, {"X": X[:1].astype(np.float32)})["Sigma"]
    assert np.linalg.norm(Sigma - S) / np.linalg.norm(S) < 0.03, (Sigma, S)
    assert np.abs(run.params["mu"] - mean).max() < 0.03
    best = 0.5 * np.linalg.slogdet(S)[1] + 2 + 2 * np.log(2 * np.pi)  # the NLL at the optimum
    assert run.test["nll"] == pytest.approx(run.test["loss"], rel=1e-5)
    assert abs(run.test["nll"] - best) < 0.1, run.summary
    assert run.summary.startswith("test nll ")


def test_gaussian_log_density_matches_scipy():
    """The output logp (through a solve) and the loss (through the inverse and the trace) are
    the same likelihood, and both are scipy's multivariate normal."""
    stats = pytest.importorskip("scipy.stats")
    module = sg.load_module("gaussian_nll")
    rng = np.random.default_rng(0)
    params = {"mu": rng.standard_normal(4), "W": rng.standard_normal((4, 4)),
              "d": 0.3 * rng.standard_normal(4)}
    X = gaussian(rows=50).X
    out = module.forward(params, {"X": X})
    L = np.tril(params["W"], -1) + np.diag(np.exp(params["d"]))
    want = stats.multivariate_normal(params["mu"], L @ L.T).logpdf(X)
    np.testing.assert_allclose(out["logp"], want, rtol=1e-10)
    assert module.loss(params, {"X": X}) == pytest.approx(-want.mean(), rel=1e-10)


def test_a_density_model_trains_from_a_csv_file(tmp_path, capsys):
    path = tmp_path / "rows.csv"
    rows = gaussian(rows=300).X
    path.write_text("a,b,c,d\n" + "".join(",".join(f"{v:.6f}" for v in r) + "\n" for r in rows))
    code = main(["train", "gaussian_nll", "--data", str(path), "--epochs", "3",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0 and out[-1].startswith("test nll ")
    with pytest.raises(SymgradError, match="a density model has no target"):
        sg.train("gaussian_nll", data=str(path), target="d", out=tmp_path / "other", quiet=True)


def test_attention_matches_pytorch_scaled_dot_product_attention():
    """The generated classifier's probabilities against the same network built around
    torch.nn.functional.scaled_dot_product_attention (softmax(Q K^T / sqrt(d)) V)."""
    torch = torch_or_skip()
    module = sg.load_module("attention_digits")
    dims = {"d": 5, "n_h": 6, "n_out": 3}
    rng = np.random.default_rng(1)
    params = {k: v + 0.1 * rng.standard_normal(v.shape)
              for k, v in module.init_params(dims, seed=1, dtype=np.float64).items()}
    X = rng.standard_normal((4, 8, 8))
    t = {k: torch.tensor(v) for k, v in params.items()}
    E = torch.tensor(X) @ t["We"] + t["P"]
    H = E + torch.nn.functional.scaled_dot_product_attention(E @ t["Wq"], E @ t["Wk"], E @ t["Wv"])
    z = torch.relu(H @ t["W1"] + t["b1"]).mean(dim=1) @ t["W2"] + t["b2"]
    want = torch.softmax(z, dim=-1).numpy()
    np.testing.assert_allclose(module.forward(params, {"X": X})["P_class"], want, rtol=1e-10, atol=1e-13)


@pytest.mark.slow
def test_attention_classifier_trains_past_the_stated_accuracy(tmp_path):
    run = sg.train("attention_digits", seed=0, out=tmp_path, quiet=True)
    assert run.test["accuracy"] >= 0.95, run.summary
