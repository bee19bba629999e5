"""Metrics that name themselves plainly: accuracy for classification, r2 for regression."""
from __future__ import annotations

import numpy as np


def accuracy(prediction: np.ndarray, labels: np.ndarray, task: str) -> float:
    """Share of rows whose predicted class is the label (probabilities in, labels 0..k-1)."""
    if task == "binary":
        guess = (prediction.reshape(len(prediction), -1)[:, 0] > 0.5).astype(np.int64)
    else:
        guess = prediction.argmax(axis=-1)
    return float(np.mean(guess == labels))


def r2(prediction: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of determination, 1 - SS_res / SS_tot, over all target columns."""
    prediction = prediction.reshape(target.shape)
    ss_res = float(np.sum((target - prediction) ** 2))
    ss_tot = float(np.sum((target - target.mean(axis=0)) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0


def confusion(prediction: np.ndarray, labels: np.ndarray, n_classes: int, task: str) -> np.ndarray:
    guess = ((prediction.reshape(len(prediction), -1)[:, 0] > 0.5).astype(np.int64) if task == "binary"
             else prediction.argmax(axis=-1))
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (labels, guess), 1)
    return out
