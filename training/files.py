"""The user's own data: a CSV or NPZ file read into a table, and columns picked by flags.

Everything that can be wrong with a file (missing, unreadable, ragged rows, a word where a
number belongs, an unknown column) is found here, before any training starts, and reported
as one `SymgradError` naming the file, the line and the column.

Column choice (`--features`, `--target`): a comma-separated list of column names (from a
CSV header), indices (0-based, negative from the end) and ranges `START:STOP` (end not
included, as in Python). A name wins over an index when a header holds it. By default the
target is the last column and the features are all the others. In an NPZ file with several
arrays the flags name arrays instead (default `X` and `y`); an NPZ file with one 2-D array
is a table like a CSV file without a header.
"""
from __future__ import annotations

import csv
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from symgrad.symbolic.errors import SymgradError

FEATURE_KEYS = ("X", "x", "features", "data")
TARGET_KEYS = ("y", "Y", "target", "targets", "labels")


@dataclass
class Table:
    """Columns of a file: numbers where they parse, else the text (for class labels)."""

    path: pathlib.Path
    names: list[str] | None  # from a header, if the file has one
    columns: list[np.ndarray]  # float64 where every cell is a number, else str
    lines: list[int]  # the file line of each row, for messages

    def label(self, j: int) -> str:
        return repr(self.names[j]) if self.names else str(j)


@dataclass
class Columns:
    """What a file gives to training: feature matrix and raw target (numbers or labels)."""

    X: np.ndarray  # (N, features), float64
    y: np.ndarray  # (N,) or (N, targets): float64, or str labels
    feature_names: list[str]
    target_names: list[str]
    lines: list[int] | None = None  # the file line (CSV) or row number (NPZ) of each row


def read(path: str | pathlib.Path, features: str | None = None, target: str | None = None,
         with_target: bool = True) -> Columns:
    """Read a .csv or .npz file and pick its feature and target columns; `with_target=False`
    (a density model's rows): features only, by default every column."""
    path = _data_file(path)
    if path.suffix.lower() == ".csv":
        return pick(read_csv(path), features, target, with_target)
    return read_npz(path, features, target, with_target)


def _data_file(path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    if path.suffix.lower() not in (".csv", ".npz"):
        raise SymgradError(f"data file {path} is neither .csv nor .npz")
    if not path.is_file():
        raise SymgradError(f"data file {path} does not exist")
    return path


# -- CSV ---------------------------------------------------------------------------------------
def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_csv(path: pathlib.Path) -> Table:
    """A CSV file (comma, semicolon or tab separated) as columns; a first row is a header
    when it holds words where the second row holds numbers."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SymgradError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows, lines = [], []
    for number, row in enumerate(csv.reader(text.splitlines(), dialect), start=1):
        if row and any(cell.strip() for cell in row):
            rows.append([cell.strip() for cell in row])
            lines.append(number)
    if not rows:
        raise SymgradError(f"{path} holds no rows")
    names = None
    if len(rows) > 1 and len(rows[0]) == len(rows[1]) and any(
            _number(a) is None and _number(b) is not None for a, b in zip(rows[0], rows[1], strict=True)):
        names, rows, lines = rows[0], rows[1:], lines[1:]
        seen = set()
        for name in names:
            if name in seen:
                raise SymgradError(f"{path}:{lines[0] - 1}: column name {name!r} appears twice")
            seen.add(name)
    width = len(names) if names else len(rows[0])
    for row, line in zip(rows, lines, strict=True):
        if len(row) != width:
            raise SymgradError(f"{path}:{line}: {len(row)} fields, but the file has {width} columns")
    columns = []
    for j in range(width):
        cells = [row[j] for row in rows]
        values = [_number(c) for c in cells]
        if all(v is not None for v in values):
            columns.append(np.array(values, dtype=np.float64))
        else:
            columns.append(np.array(cells, dtype=str))
    return Table(path, names, columns, lines)


# -- NPZ ---------------------------------------------------------------------------------------
def read_npz(path: pathlib.Path, features: str | None, target: str | None,
             with_target: bool = True) -> Columns:
    """Named arrays (features and target as keys), or one 2-D array used as a table."""
    arrays = _load_npz(path)
    keys = sorted(arrays)
    x_key = features if features in arrays else (
        next((k for k in FEATURE_KEYS if k in arrays), None) if features is None else None)
    y_key = target if target in arrays else (
        next((k for k in TARGET_KEYS if k in arrays), None) if target is None else None)
    if not with_target and x_key is not None and (features is not None or len(arrays) > 1):
        X = _numeric(path, x_key, arrays[x_key]).reshape(len(arrays[x_key]), -1)
        _finite(path, x_key, X)
        return Columns(X, np.zeros((len(X), 0)), [f"{x_key}[{j}]" for j in range(X.shape[1])], [])
    if x_key is not None and y_key is not None:
        X, y = arrays[x_key], arrays[y_key]
        if len(X) != len(y):
            raise SymgradError(f"{path}: array {x_key!r} has {len(X)} rows but {y_key!r} has {len(y)}")
        X = _numeric(path, x_key, X).reshape(len(X), -1)
        if y.ndim > 2:
            raise SymgradError(f"{path}: target array {y_key!r} has {y.ndim} axes; expected 1 or 2")
        if y.dtype.kind in "biuf":
            y = y.astype(np.float64)
        elif y.dtype.kind in "US":
            y = y.astype(str)
        else:
            raise SymgradError(f"{path}: target array {y_key!r} holds {y.dtype} values")
        _finite(path, x_key, X)
        width = y.shape[1] if y.ndim == 2 else 1
        return Columns(X, y, [f"{x_key}[{j}]" for j in range(X.shape[1])],
                       [y_key] if y.ndim == 1 else [f"{y_key}[{j}]" for j in range(width)])
    tables = [k for k in keys if arrays[k].ndim == 2]
    if len(arrays) == 1 and tables:
        table = arrays[tables[0]]
        if table.dtype.kind in "US":
            columns = [table[:, j].astype(str) for j in range(table.shape[1])]
        else:
            table = _numeric(path, tables[0], table)
            columns = [table[:, j] for j in range(table.shape[1])]
        rows = list(range(1, len(table) + 1))
        return pick(Table(path, None, columns, rows), features, target, with_target)
    missing = [f"{name or default!r} for the {what}" for what, name, key, default in
               (("features", features, x_key, "X"), ("target", target, y_key, "y")) if key is None]
    raise SymgradError(f"{path} has no array {' and no array '.join(missing)}; its arrays are "
                       f"{', '.join(keys)} (name them with --features KEY --target KEY)")


def _load_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
    from symgrad.training.checkpoint import read_arrays

    arrays = read_arrays(path)
    if not arrays:
        raise SymgradError(f"{path} holds no arrays")
    return arrays


def _numeric(path: pathlib.Path, key: str, a: np.ndarray) -> np.ndarray:
    if a.dtype.kind not in "biuf":
        raise SymgradError(f"{path}: array {key!r} holds {a.dtype} values, not numbers")
    return a.astype(np.float64)


def _finite(path: pathlib.Path, key: str, a: np.ndarray) -> None:
    bad = np.argwhere(~np.isfinite(a))
    if len(bad):
        where = tuple(bad[0].tolist())
        raise SymgradError(f"{path}: array {key!r} holds {a[where]} at index {where}")


# -- column choice -----------------------------------------------------------------------------
def select(table: Table, spec: str | Sequence[str | int], flag: str) -> list[int]:
    """Column indices named by a flag's value: names, indices and START:STOP ranges,
    comma-separated (or, from Python, a list of them)."""
    width = len(table.columns)
    chosen: list[int] = []
    tokens = spec.split(",") if isinstance(spec, str) else [str(t) for t in spec]
    for token in (t.strip() for t in tokens):
        if not token:
            raise SymgradError(f"{flag} {spec!r}: an empty column name")
        if table.names and token in table.names:
            chosen.append(table.names.index(token))
            continue
        if ":" in token:
            start, _, stop = token.partition(":")
            try:
                indices = range(width)[slice(int(start) if start else None, int(stop) if stop else None)]
            except ValueError:
                raise SymgradError(f"{flag}: {token!r} is not a range of column indices") from None
            if not indices:
                raise SymgradError(f"{flag}: range {token!r} holds no columns of the {width} in {table.path}")
            chosen.extend(indices)
            continue
        try:
            index = int(token)
        except ValueError:
            known = f"its columns are {', '.join(table.names)}" if table.names else "it has no header"
            raise SymgradError(f"{flag}: {table.path} has no column {token!r}; {known}") from None
        if not -width <= index < width:
            raise SymgradError(f"{flag}: column {index} is out of range; {table.path} has {width} columns")
        chosen.append(index % width)
    if len(set(chosen)) != len(chosen):
        raise SymgradError(f"{flag} {spec!r} names a column twice")
    return chosen


def pick(table: Table, features: str | None, target: str | None, with_target: bool = True) -> Columns:
    """Feature and target columns of a table (no target: `with_target=False`); features must be
    finite numbers."""
    width = len(table.columns)
    if not with_target:
        targets = []
    else:
        targets = select(table, target, "--target") if target is not None else [width - 1]
    if features is not None:
        chosen = select(table, features, "--features")
        both = sorted(set(chosen) & set(targets))
        if both:
            raise SymgradError(f"column {table.label(both[0])} is both a feature and the target")
    else:
        chosen = [j for j in range(width) if j not in targets]
    if not chosen:
        raise SymgradError(f"{table.path} has no feature columns besides the target")
    X = feature_matrix(table, chosen)
    if not targets:
        y = np.zeros((len(X), 0))
    elif len(targets) == 1:
        y = table.columns[targets[0]]
    else:
        kinds = {table.columns[j].dtype.kind for j in targets}
        if kinds != {"f"}:
            raise SymgradError(f"{table.path}: several target columns must all hold numbers")
        y = np.stack([table.columns[j] for j in targets], axis=1)
    names = table.names or [str(j) for j in range(width)]
    return Columns(X, y, [names[j] for j in chosen], [names[j] for j in targets], list(table.lines))


def feature_matrix(table: Table, chosen: list[int]) -> np.ndarray:
    """The chosen columns as a float64 matrix; each must hold finite numbers only."""
    for j in chosen:
        column = table.columns[j]
        if column.dtype.kind != "f":
            row = next(i for i, cell in enumerate(column) if _number(cell) is None)
            cell = str(column[row])
            what = "is empty" if cell == "" else f"holds {cell!r}, which is not a number"
            raise SymgradError(f"{table.path}:{table.lines[row]}: column {table.label(j)} {what}")
        bad = np.flatnonzero(~np.isfinite(column))
        if len(bad):
            raise SymgradError(f"{table.path}:{table.lines[bad[0]]}: column {table.label(j)} holds "
                               f"{column[bad[0]]}, not a finite number")
    return np.stack([table.columns[j] for j in chosen], axis=1)


def read_features(path: str | pathlib.Path, features: str | None, width: int) -> np.ndarray:
    """Feature rows of a file that may hold no target (rows to predict): the columns named
    by `features`; else all columns when there are `width` of them, else all but the last.
    In an NPZ file: the array named by `features` (default X), or its one 2-D array."""
    path = _data_file(path)
    if path.suffix.lower() == ".npz":
        arrays = _load_npz(path)
        key = features if features is not None else next(
            (k for k in FEATURE_KEYS if k in arrays), next(iter(arrays)) if len(arrays) == 1 else None)
        if key not in arrays:
            raise SymgradError(f"{path} has no array {key or 'X'!r}; its arrays are "
                               f"{', '.join(sorted(arrays))} (name it with --features KEY)")
        X = _numeric(path, key, arrays[key]).reshape(len(arrays[key]), -1)
        _finite(path, key, X)
        return X
    table = read_csv(path)
    if features is not None:
        chosen = select(table, features, "--features")
    else:
        count = len(table.columns)
        chosen = list(range(count if count == width else count - 1))
    return feature_matrix(table, chosen)


def is_file_spec(spec: str) -> bool:
    """Whether a --data value means a file rather than a bundled data set."""
    return pathlib.Path(spec).suffix.lower() in (".csv", ".npz") or "/" in spec or "\\" in spec
