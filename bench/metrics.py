"""Benchmark: the per-epoch metrics, scikit-learn against numpy written out, beside an epoch.

Training evaluates the training and the validation split after every epoch. This script times
what that costs each way on the digits MLP's splits (1,168 and 270 rows, 10 classes) and on
rnn_sines' (40 target columns), and prints each as a share of one training epoch of the digits
MLP (its `Trainer.run_epoch`), which decides whether scikit-learn's validation overhead matters:

* accuracy: `np.mean(guess == labels)` / `sklearn.metrics.accuracy_score`
* confusion matrix: `np.bincount` of `k * label + guess` / `sklearn.metrics.confusion_matrix`
* per-class precision, recall, F1: from that matrix / `precision_recall_fscore_support`
* r2 (per column, averaged): numpy / `sklearn.metrics.r2_score`

Samples alternate between the variants (round-robin), so the machine's changing load reaches
all alike; the table gives the median and the spread (10th-90th percentile) per call.

    python bench/metrics.py
"""
from __future__ import annotations

import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402
from symgrad.training.data import load, prepare  # noqa: E402
from symgrad.training.loop import TrainConfig, Trainer  # noqa: E402

from symgrad import pipeline  # noqa: E402

ROUNDS = 41


def numpy_confusion(labels: np.ndarray, guess: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(k * labels + guess, minlength=k * k).reshape(k, k)


def numpy_prf(labels: np.ndarray, guess: np.ndarray, k: int) -> np.ndarray:
    m = numpy_confusion(labels, guess, k)
    tp = np.diag(m).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.nan_to_num(tp / m.sum(axis=0))
        r = np.nan_to_num(tp / m.sum(axis=1))
        f = np.nan_to_num(2 * p * r / (p + r))
    return np.stack([p, r, f])


def numpy_r2(y: np.ndarray, p: np.ndarray) -> float:
    ss_res = ((y - p) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1 - ss_res / ss_tot))


def main() -> None:
    module = pipeline.load_module("mlp_tanh")
    trainer = Trainer(module, prepare(load("digits"), 0), TrainConfig(epochs=1000, optimizer="adamw"))
    trainer.run_epoch()
    rng = np.random.default_rng(0)
    cases = {}
    for split in ("train", "val"):
        labels = getattr(trainer.data, split).labels
        guess = np.where(rng.random(len(labels)) < 0.9, labels, rng.integers(0, 10, len(labels)))
        cases[split] = (labels, guess)
    y = rng.standard_normal((180, 40))
    p = y + 0.1 * rng.standard_normal(y.shape)
    assert abs(numpy_r2(y, p) - skm.r2_score(y, p)) < 1e-12
    labels, guess = cases["val"]
    assert np.array_equal(numpy_confusion(labels, guess, 10),
                          skm.confusion_matrix(labels, guess, labels=range(10)))
    assert np.allclose(numpy_prf(labels, guess, 10),
                       skm.precision_recall_fscore_support(labels, guess, labels=range(10),
                                                           zero_division=0)[:3])
    variants = {"epoch of the digits MLP (Trainer.run_epoch)": trainer.run_epoch}
    for split, (labels, guess) in cases.items():
        n = f"{split} ({len(labels)} rows)"
        variants |= {
            f"accuracy, numpy, {n}": lambda a=labels, b=guess: np.mean(a == b),
            f"accuracy, sklearn, {n}": lambda a=labels, b=guess: skm.accuracy_score(a, b),
            f"confusion, numpy, {n}": lambda a=labels, b=guess: numpy_confusion(a, b, 10),
            f"confusion, sklearn, {n}": lambda a=labels, b=guess: skm.confusion_matrix(
                a, b, labels=range(10)),
            f"P/R/F1, numpy, {n}": lambda a=labels, b=guess: numpy_prf(a, b, 10),
            f"P/R/F1, sklearn, {n}": lambda a=labels, b=guess: skm.precision_recall_fscore_support(
                a, b, labels=range(10), zero_division=0),
        }
    variants |= {"r2, numpy, 180 x 40": lambda: numpy_r2(y, p),
                 "r2, sklearn, 180 x 40": lambda: skm.r2_score(y, p)}
    times = {k: [] for k in variants}
    for _ in range(ROUNDS):
        for name, f in variants.items():
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    epoch = statistics.median(times["epoch of the digits MLP (Trainer.run_epoch)"])
    print(f"{'variant':<48} {'median us':>10} {'p10-p90 us':>16} {'of an epoch':>12}")
    for name, t in times.items():
        t = sorted(t)
        med, lo, hi = statistics.median(t), t[len(t) // 10], t[-len(t) // 10]
        print(f"{name:<48} {med * 1e6:>10.0f} {f'{lo * 1e6:.0f}-{hi * 1e6:.0f}':>16} {med / epoch:>11.1%}")


if __name__ == "__main__":
    main()
