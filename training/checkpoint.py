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
import math
import pathlib
import warnings
import zipfile

import numpy as np
from symgrad.codegen.atomic import write_bytes
from symgrad.symbolic.errors import SymgradError, SymgradWarning

META = "meta.json"
FORMAT = 2  # bumped when the layout changes
READABLE = (1, 2)  # 1: before epoch records held `batch_loss` (model files read the same)


def save(path: str | pathlib.Path, arrays: dict[str, np.ndarray], meta: dict) -> pathlib.Path:
    """Write arrays and JSON-ready metadata to `path` in one atomic step. A NaN or an infinity
    in the metadata (a test loss that overflowed) is written as null, with a warning naming it:
    JSON has no such numbers, and the arrays must not be lost for want of them."""
    if META in arrays:
        raise ValueError(f"{META} is reserved for the metadata")
    buffer = io.BytesIO()
    meta, replaced = finite_json(meta)
    if replaced:
        more = f" and {len(replaced) - 3} more" if len(replaced) > 3 else ""
        message = f"{pathlib.Path(path).name}: {', '.join(replaced[:3])}{more} not finite, written as null"
        warnings.warn(SymgradWarning(message), stacklevel=2)
    text = json.dumps({"format": FORMAT, **meta}, sort_keys=True, allow_nan=False)
    np.savez(buffer, **{META: np.array(text)}, **arrays)
    return write_bytes(path, buffer.getvalue())


def finite_json(value, where: str = "") -> tuple[object, list[str]]:
    """`value` with every non-finite float replaced by None, and where each was (`test.loss=nan`)."""
    if isinstance(value, dict):
        out, replaced = {}, []
        for k, v in value.items():
            out[k], more = finite_json(v, f"{where}.{k}" if where else str(k))
            replaced += more
        return out, replaced
    if isinstance(value, (list, tuple)):
        out, replaced = [], []
        for i, v in enumerate(value):
            item, more = finite_json(v, f"{where}[{i}]")
            out.append(item)
            replaced += more
        return out, replaced
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None, [f"{where}={float(value)}"]
    return value, []


def read_arrays(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, read without pickle; a file that is no such archive
    (damaged, truncated, a lone .npy, pickled objects) is one `SymgradError`, never numpy's
    advice to load it with pickle."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as raw, np.load(raw, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise SymgradError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise SymgradError(f"cannot read {path}: it is a folder, not a file") from None
    except OSError as e:
        raise SymgradError(f"cannot read {path}: {e.strerror or 'not an .npz archive'}") from None
    except (ValueError, EOFError, AttributeError, TypeError, KeyError, zipfile.BadZipFile):
        # a lone .npy has no `with`; pickled data raises ValueError with numpy's pickle advice
        raise SymgradError(f"cannot read {path}: it is not an .npz archive of numeric arrays (damaged, "
                           "truncated, Python objects, or another kind of file)") from None


def load(path: str | pathlib.Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and metadata of a file `save` wrote."""
    path = pathlib.Path(path)
    arrays = read_arrays(path)
    if META not in arrays:
        raise SymgradError(f"{path} was not written by symgrad (it has no {META})")
    try:
        meta = json.loads(str(arrays.pop(META)))
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise SymgradError(f"cannot read {path}: its {META} is damaged")
    if meta.get("format") not in READABLE:
        raise SymgradError(f"{path} has format {meta.get('format')}; this symgrad reads formats "
                           f"{', '.join(map(str, READABLE))}")
    return arrays, meta
