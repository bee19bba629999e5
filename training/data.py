"""Data for training: bundled data sets, splits, standardisation, target encoding, batches.

scikit-learn's bundled data sets load from its own package files, with no network access.
Standardisation statistics come from the training split only, so nothing about the
validation or test rows leaks into training.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from symbolic.errors import SymgradError

BUNDLED = {
    "digits": "multiclass", "iris": "multiclass", "wine": "multiclass",
    "breast_cancer": "binary", "diabetes": "regression",
}


@dataclass
class Dataset:
    name: str
    task: str  # "multiclass", "binary" or "regression"
    X: np.ndarray  # (N, features), float64
    y: np.ndarray  # (N,) class labels 0..k-1, or (N, targets) for regression

    @property
    def n_classes(self) -> int | None:
        return int(self.y.max()) + 1 if self.task == "multiclass" else None


def load_bundled(name: str) -> Dataset:
    if name not in BUNDLED:
        raise SymgradError(f"unknown data set {name!r}; bundled ones are {', '.join(BUNDLED)} "
                           "(or give a .csv/.npz file)")
    try:
        from sklearn import datasets
    except ImportError:  # pragma: no cover - the train extra installs it
        raise SymgradError("bundled data sets need scikit-learn: pip install 'symgrad[train]'") from None
    bunch = getattr(datasets, f"load_{name}")()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target)
    if BUNDLED[name] == "regression":
        y = y.reshape(len(y), -1).astype(np.float64)
    else:
        y = y.astype(np.int64)
    return Dataset(name, BUNDLED[name], X, y)


@dataclass
class Split:
    X: np.ndarray
    Y: np.ndarray  # encoded for the model: one-hot (N, k), (N, 1) for binary, (N, t) regression
    labels: np.ndarray | None  # class labels for classification metrics

    def __len__(self) -> int:
        return len(self.X)


@dataclass
class Prepared:
    train: Split
    val: Split
    test: Split
    mean: np.ndarray
    std: np.ndarray
    task: str


def encode_targets(y: np.ndarray, task: str, n_classes: int | None) -> np.ndarray:
    if task == "multiclass":
        return np.eye(n_classes)[y]
    if task == "binary":
        return y.reshape(-1, 1).astype(np.float64)
    return y.reshape(len(y), -1).astype(np.float64)


def prepare(ds: Dataset, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.2,
            standardize: bool = True) -> Prepared:
    """Shuffle with `seed`, split train/val/test, standardise with training statistics."""
    n = len(ds.X)
    n_test = max(1, int(round(n * test_fraction)))
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_test - n_val < 1:
        raise SymgradError(f"data set {ds.name!r} has too few rows ({n}) to split")
    order = np.random.default_rng(seed).permutation(n)
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    X_train = ds.X[parts["train"]]
    mean = X_train.mean(axis=0) if standardize else np.zeros(ds.X.shape[1])
    std = X_train.std(axis=0) if standardize else np.ones(ds.X.shape[1])
    std = np.where(std > 0, std, 1.0)  # constant columns (blank digit pixels) stay as they are
    if ds.task == "regression" and standardize:
        y_train = ds.y[parts["train"]]
        y_mean, y_std = y_train.mean(axis=0), y_train.std(axis=0)
        y_std = np.where(y_std > 0, y_std, 1.0)
        y_all = (ds.y - y_mean) / y_std
    else:
        y_all = ds.y
    k = ds.n_classes
    splits = {}
    for key, idx in parts.items():
        labels = ds.y[idx] if ds.task != "regression" else None
        splits[key] = Split((ds.X[idx] - mean) / std, encode_targets(y_all[idx], ds.task, k), labels)
    return Prepared(splits["train"], splits["val"], splits["test"], mean, std, ds.task)


def batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled index batches covering all n rows; the last one may be smaller."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]
