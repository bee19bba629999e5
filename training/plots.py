"""PNG plots of a run: loss and metric curves, and a confusion matrix.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend, no
display needed) and written atomically, so a plot is either the old one or the new one.
"""
from __future__ import annotations

import io
import pathlib
from collections.abc import Sequence

import numpy as np
from symgrad.codegen.atomic import write_bytes
from symgrad.symbolic.errors import SymgradError


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - the train extra installs it
        raise SymgradError("plots need matplotlib: pip install 'symgrad[train]'") from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _write(fig, path: str | pathlib.Path) -> pathlib.Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return write_bytes(path, buffer.getvalue())


def curves(rows: Sequence[dict], metric: str, path: str | pathlib.Path, title: str = "",
           best_epoch: int | None = None) -> pathlib.Path:
    """Training and validation loss (left) and metric (right) per epoch, both measured at the
    epoch's end in evaluation mode; the loss panel adds the mean mini-batch loss (training mode,
    dropout on, parameters moving) as a dashed line."""
    fig = _figure(10, 4)
    from matplotlib.ticker import MaxNLocator
    epochs = [r["epoch"] for r in rows]
    for ax, key, label in zip(fig.subplots(1, 2), ("loss", metric), ("loss", metric), strict=True):
        marker = "." if len(rows) < 30 else None
        ax.plot(epochs, [r[f"train_{key}"] for r in rows], label="training", marker=marker)
        ax.plot(epochs, [r[f"val_{key}"] for r in rows], label="validation", marker=marker)
        if key == "loss" and "batch_loss" in rows[0]:
            ax.plot(epochs, [r["batch_loss"] for r in rows], label="mini-batches (training mode)",
                    linestyle="--", color="tab:blue", alpha=0.5)
        ax.set_title(f"{label} at the end of each epoch (evaluation mode)", fontsize=9)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        losses = [r[f"{s}_loss"] for r in rows for s in ("train", "val")]
        if key == "loss" and min(losses) > 0 and max(losses) > 20 * min(losses):
            ax.set_yscale("log")  # a loss falling by orders of magnitude stays readable
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _write(fig, path)


def confusion(matrix: np.ndarray, classes: Sequence[str], path: str | pathlib.Path,
              title: str = "") -> pathlib.Path:
    """A confusion matrix: rows are true classes, columns predicted ones, counts in cells."""
    k = len(classes)
    size = min(12.0, 3.0 + 0.5 * k)
    fig = _figure(size, size)
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ticks = np.arange(k)
    ax.set_xticks(ticks, labels=list(classes), rotation=45 if max(map(len, classes)) > 3 else 0, ha="right"
                  if max(map(len, classes)) > 3 else "center")
    ax.set_yticks(ticks, labels=list(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    high = matrix.max() if matrix.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                    color="white" if matrix[i, j] > high / 2 else "black", fontsize=9)
    ax.set_title(title or "confusion matrix")
    return _write(fig, path)


def scatter(real: np.ndarray, fake: np.ndarray, path: str | pathlib.Path, title: str = "",
            centers: np.ndarray | None = None) -> pathlib.Path:
    """2-D samples: the real data and the generator's, one over the other."""
    fig = _figure(6, 6)
    ax = fig.subplots()
    ax.scatter(real[:, 0], real[:, 1], s=4, alpha=0.3, label="real", color="tab:blue")
    ax.scatter(fake[:, 0], fake[:, 1], s=4, alpha=0.3, label="generated", color="tab:orange")
    if centers is not None:
        ax.scatter(centers[:, 0], centers[:, 1], marker="x", color="black", label="modes")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    ax.set_title(title or "real and generated samples")
    return _write(fig, path)


def sweep_curves(curves: dict[str, Sequence[tuple[int, float, float]]], metric: str, path: str | pathlib.Path,
                 best: str | None = None, title: str = "") -> pathlib.Path:
    """Validation loss (left) and metric (right) per epoch of every run of a sweep, one line
    per run (`curves`: run name -> (epoch, val loss, val metric) rows); the best run bold."""
    fig = _figure(11, 4.5)
    from matplotlib.ticker import MaxNLocator
    axes = fig.subplots(1, 2)
    for name, rows in curves.items():
        epochs = [r[0] for r in rows]
        style = {"linewidth": 2.5, "zorder": 3} if name == best else {"linewidth": 1, "alpha": 0.7}
        label = f"{name} (best)" if name == best else name
        for ax, column in zip(axes, (1, 2), strict=True):
            ax.plot(epochs, [r[column] for r in rows], label=label, **style)
    for ax, label in zip(axes, ("loss", metric), strict=True):
        ax.set_title(f"validation {label} at the end of each epoch", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {label}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if len(curves) <= 16:
        axes[1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return _write(fig, path)
