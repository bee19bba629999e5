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
from symgrad.codegen.atomic import write_bytes
from symgrad.symbolic.errors import SymgradError

META = "meta.json"
FORMAT = 2  # bumped when the layout changes
READABLE = (1, 2)  # 1: before epoch records held `batch_loss` (model files read the same)


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
    if meta.get("format") not in READABLE:
        raise SymgradError(f"{path} has format {meta.get('format')}; this symgrad reads formats "
                           f"{', '.join(map(str, READABLE))}")
    return arrays, meta
