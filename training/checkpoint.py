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

import numpy as np

from codegen.atomic import write_bytes
from symbolic.errors import SymgradError

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


def save_model(path: str | pathlib.Path, params: dict[str, np.ndarray], meta: dict,
               extras: dict[str, np.ndarray]) -> pathlib.Path:
    """The trained model: parameters under their own names (`np.load(path)["W1"]` works),
    preprocessing arrays under dotted names no parameter can have (`input.mean`)."""
    clash = set(params) & set(extras)
    if clash:
        raise ValueError(f"names used twice: {sorted(clash)}")
    return save(path, {**params, **extras}, meta)


def load_model(path: str | pathlib.Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """(parameters, preprocessing arrays, metadata) of a `model.npz`."""
    arrays, meta = load(path)
    params = {k: v for k, v in arrays.items() if "." not in k}
    extras = {k: v for k, v in arrays.items() if "." in k}
    return params, extras, meta
