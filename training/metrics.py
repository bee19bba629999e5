"""Metrics that name themselves plainly: accuracy, per-class precision, recall and F1 (and ROC
AUC for two classes) for classification; r2 for regression.

scikit-learn computes r2 (`r2_score`: each target column's r2, averaged) and ROC AUC. The
confusion matrix, from which accuracy and the per-class figures follow, is one `np.bincount`:
`bench/metrics.py` measured scikit-learn's `confusion_matrix` and
`precision_recall_fscore_support` at about 1 ms a call against 20-100 us, which after every
epoch (training and validation splits) would cost a small model's loop a tenth of its time.
"""
from __future__ import annotations

import numpy as np


def predicted_labels(prediction: np.ndarray, task: str) -> np.ndarray:
    """Class labels 0..k-1 from the model's output: a probability of class 1 (binary) or one
    probability per class."""
    if task == "binary":
        return (prediction.reshape(len(prediction), -1)[:, 0] > 0.5).astype(np.int64)
    return prediction.argmax(axis=-1)


def positive_score(prediction: np.ndarray) -> np.ndarray:
    """The score of the second class of a two-class output, for ROC AUC."""
    p = prediction.reshape(len(prediction), -1)
    return p[:, 0] if p.shape[1] == 1 else p[:, 1]


def confusion(guess: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts: rows are true classes, columns predicted ones."""
    k = n_classes
    return np.bincount(k * np.asarray(labels, np.int64) + guess, minlength=k * k).reshape(k, k)


def per_class(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of each class from a confusion matrix (0 where undefined, as
    scikit-learn's `zero_division=0`), and the number of true rows of each."""
    hits = np.diag(matrix).astype(np.float64)
    predicted, true = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, true, out=np.zeros_like(hits), where=true > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "rows": true}


def classification(prediction: np.ndarray, labels: np.ndarray, task: str, classes: list[str],
                   detail: bool = True) -> dict[str, float]:
    """accuracy; with `detail`, also `precision_C`, `recall_C`, `f1_C` for each class name C,
    `f1_macro`, and for two classes `roc_auc` (when both occur among the labels)."""
    guess = predicted_labels(prediction, task)
    matrix = confusion(guess, labels, len(classes))
    out = {"accuracy": float(np.trace(matrix) / max(len(labels), 1))}
    if not detail:
        return out
    table = per_class(matrix)
    for j, name in enumerate(classes):
        for what in ("precision", "recall", "f1"):
            out[f"{what}_{name}"] = float(table[what][j])
    out["f1_macro"] = float(np.mean(table["f1"]))
    if len(classes) == 2 and len(np.unique(labels)) == 2:
        from sklearn.metrics import roc_auc_score

        out["roc_auc"] = float(roc_auc_score(labels, positive_score(prediction)))
    return out


def r2(prediction: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of determination of each target column, averaged over the columns
    (scikit-learn's `r2_score`); a constant column counts as 1 when predicted exactly, else 0."""
    from sklearn.metrics import r2_score

    target = target.reshape(len(target), -1)
    return float(r2_score(target, prediction.reshape(target.shape), force_finite=True))


def report(metrics: dict[str, float], classes: list[str], counts: np.ndarray, title: str) -> str:
    """The per-class table of `classification`'s figures, as text."""
    width = max(12, *(len(c) + 2 for c in classes))
    lines = [f"{title:<{width}} precision  recall      f1    rows"]
    for j, name in enumerate(classes):
        lines.append(f"  {name:<{width - 2}} {metrics[f'precision_{name}']:>9.4f} "
                     f"{metrics[f'recall_{name}']:>7.4f} {metrics[f'f1_{name}']:>7.4f} {int(counts[j]):>7d}")
    return "\n".join(lines)
