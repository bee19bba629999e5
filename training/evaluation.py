"""From table rows to a model's inputs and from its outputs to figures: the one place that
knows both, used by training (`Trainer`) and by a trained model on new data (`TrainedModel`),
so that a prediction after training sees exactly what evaluation during training saw.

Rows arrive standardised, one row per example (an image's pixels or a sequence's steps
flattened); `Evaluator` reshapes them to the model's input (8x8x1 images for `cnn_digits`, 8
steps of 8 features for `lstm_digits`), casts them to the training dtype, and runs the module
in evaluation mode in chunks of `EVAL_ROWS`, so memory stays bounded.
"""
from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np
from symgrad.training import metrics

EVAL_ROWS = 8192  # evaluation runs in chunks of this many rows


@dataclass
class Evaluator:
    module: types.ModuleType
    input: str  # the model's input name ("X")
    target: str | None  # its target name ("Y"); None for a density model (features only)
    input_shape: tuple[int, ...]  # one row's shape at the input, (8, 8, 1) for cnn_digits
    target_shape: tuple[int, ...]  # one row's target shape; () for integer class labels
    dtype: np.dtype
    hypers: dict[str, float]  # the model's hyper-parameters (a dropout rate, penalties)
    task: str
    classes: list[str] | None = None

    @property
    def sparse(self) -> bool:
        """The target is integer class labels (the module's LABELS), not one-hot rows."""
        return self.target in getattr(self.module, "LABELS", ())

    @property
    def target_dtype(self) -> np.dtype:
        return np.dtype(np.int64) if self.sparse else self.dtype

    @property
    def metric(self) -> str:
        return {"regression": "r2", "density": "nll"}.get(self.task, "accuracy")

    def inputs(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X).astype(self.dtype, copy=False).reshape((-1, *self.input_shape))

    def batch(self, X: np.ndarray, Y: np.ndarray) -> dict[str, np.ndarray]:
        if self.target is None:
            return {self.input: self.inputs(X)}
        Y = np.asarray(Y).astype(self.target_dtype, copy=False)
        return {self.input: self.inputs(X), self.target: Y.reshape((-1, *self.target_shape))}

    def predict(self, params: dict, state: dict, X: np.ndarray) -> np.ndarray:
        """The model's prediction output for every row, in evaluation mode."""
        name = self.module.PREDICTION
        chunks = [self.module.forward(params, {self.input: self.inputs(X[s:s + EVAL_ROWS])}, self.hypers,
                                      state=state)[name] for s in range(0, len(X), EVAL_ROWS)]
        return np.concatenate(chunks)

    def loss(self, params: dict, state: dict, X: np.ndarray, Y: np.ndarray) -> float:
        """The model's own loss over all rows (a mean over chunks, weighted by their rows)."""
        total = 0.0
        for s in range(0, len(X), EVAL_ROWS):
            chunk = self.batch(X[s:s + EVAL_ROWS], Y[s:s + EVAL_ROWS])
            total += self.module.loss(params, chunk, self.hypers, state=state) * len(chunk[self.input])
        return total / len(X)

    def evaluate(self, params: dict, state: dict, X: np.ndarray, Y: np.ndarray,
                 labels: np.ndarray | None, detail: bool = True) -> dict[str, float]:
        """Loss and metrics: r2, or accuracy (with `detail`, per-class precision, recall and F1,
        macro F1, and ROC AUC for two classes)."""
        out = {"loss": self.loss(params, state, X, Y)}
        prediction = self.predict(params, state, X)
        if self.task == "regression":
            out["r2"] = metrics.r2(prediction, Y)
        elif self.task == "density":  # the mean negative log-likelihood of a row (log-density output)
            out["nll"] = float(-np.mean(prediction))
        else:
            out.update(metrics.classification(prediction, labels, self.task, self.classes, detail))
        return out
