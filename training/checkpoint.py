"""Checkpoints and the trained model as .npz files, written atomically.

A file here is one `.npz` archive: the arrays under their own keys, and everything else
(configuration, counters, generator state, history) as JSON text under `meta.json`. Writing
goes to a temporary file that is renamed over the old one (`codegen.atomic`), so a run killed
at any instant leaves either the previous checkpoint or the new one, never a torn file. The
archive loads without pickle, so opening one cannot run code.
"""
from __future__ import annotations

import io
import json
import pathlib
import zipfile
from dataclasses import dataclass

import numpy as np
from symgrad.codegen.atomic import write_bytes
from symgrad.symbolic.errors import SymgradError

META = "meta.json"
FORMAT = 1  # bumped when the layout changes


def save(path: str | pathlib.Path, arrays: dict[str, np.ndarray], meta: dict) -> pathlib.Path:
    """Write arrays and JSON-ready metadata to `path` in one atomic step."""
    if META in arrays:
        raise ValueError(f"{META} is reserved for the metadata")
    buffer = io.BytesIO()
    text = json.dumps({"format": FORMAT, **meta}, sort_keys=True, allow_nan=False)
    np.savez(buffer, **{META: np.array(text)}, **arrays)
    return write_bytes(path, buffer.getvalue())


def load(path: str | pathlib.Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and metadata of a file `save` wrote."""
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise SymgradError(f"{path} does not exist") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise SymgradError(f"cannot read {path}: {e}") from None
    if META not in arrays:
        raise SymgradError(f"{path} was not written by symgrad (it has no {META})")
    meta = json.loads(str(arrays.pop(META)))
    if meta.get("format") != FORMAT:
        raise SymgradError(f"{path} has format {meta.get('format')}; this symgrad reads format {FORMAT}")
    return arrays, meta


@dataclass
class TrainedModel:
    """What `model.npz` holds: enough to predict on new raw rows with the generated module."""

    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]  # the model's running averages (batch normalisation), if any
    input_mean: np.ndarray  # standardisation of the features, fitted on the training split
    input_std: np.ndarray
    target_mean: np.ndarray | None  # regression targets were standardised too
    target_std: np.ndarray | None
    meta: dict  # model, dims, task, classes, test metrics, the run's settings

    def inputs(self, X: np.ndarray) -> np.ndarray:
        """Raw feature rows as the model saw them in training."""
        return (np.asarray(X, dtype=np.float64) - self.input_mean) / self.input_std

    def targets(self, Y: np.ndarray) -> np.ndarray:
        """A regression model's outputs back in the data's own units."""
        if self.target_mean is None:
            return Y
        return Y * self.target_std + self.target_mean


def save_model(path: str | pathlib.Path, model: TrainedModel) -> pathlib.Path:
    """Parameters under their own names (`np.load(path)["W1"]` works); state and
    preprocessing under dotted names that no parameter can have (`state.bn1_mean`, `input.mean`)."""
    arrays = {**model.params, **{f"state.{k}": v for k, v in model.state.items()},
              "input.mean": model.input_mean, "input.std": model.input_std}
    if model.target_mean is not None:
        arrays.update({"target.mean": model.target_mean, "target.std": model.target_std})
    return save(path, arrays, model.meta)


def load_model(path: str | pathlib.Path) -> TrainedModel:
    """The trained model in a `model.npz`."""
    arrays, meta = load(path)
    try:
        return TrainedModel({k: v for k, v in arrays.items() if "." not in k},
                            {k[6:]: v for k, v in arrays.items() if k.startswith("state.")},
                            arrays["input.mean"], arrays["input.std"], arrays.get("target.mean"),
                            arrays.get("target.std"), meta)
    except KeyError as e:
        raise SymgradError(f"{path} is not a trained model (it has no {e.args[0]})") from None
