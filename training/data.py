"""Data for training: bundled data sets and the user's files, splits, standardisation,
target encoding, batches.

scikit-learn's bundled data sets load from its own package files, with no network access.
Splits are seeded and stratified: each split keeps the class mix (classification) or the
spread of the target over its quintiles (regression), so a small test split such as iris's
30 rows or diabetes's 88 is not skewed by chance. Standardisation
statistics come from the training split only, so nothing about the validation or test rows
leaks into training.
"""
from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
from symgrad.symbolic.errors import SymgradError
from symgrad.training import files

BUNDLED = {
    "digits": "multiclass", "iris": "multiclass", "wine": "multiclass",
    "breast_cancer": "binary", "diabetes": "regression",
    "sines": "regression",  # generated here: next-value prediction on sine mixtures
    "gaussian": "density",  # generated here: correlated Gaussian rows, no target
}
TASKS = ("regression", "binary", "multiclass", "density")  # density: features only, no target


@dataclass
class Dataset:
    name: str
    task: str  # "multiclass", "binary", "regression" or "density"
    X: np.ndarray  # (N, features), float64
    y: np.ndarray  # (N,) class labels 0..k-1, (N, targets) float64 for regression, (N, 0) for density
    classes: list[str] | None = None  # the name of each class label, in label order
    feature_names: list[str] = field(default_factory=list)
    lines: list[int] | None = None  # a file's line (CSV) or row number (NPZ) of each row, for messages

    def where(self, row: int) -> str:
        """Where a row came from, as messages cite it: `data.csv:7`, `data.npz: row 7`, `arrays: row 6`."""
        if self.lines is None:
            return f"{self.name}: row {row}"
        if self.name.lower().endswith(".csv"):
            return f"{self.name}:{self.lines[row]}"
        return f"{self.name}: row {self.lines[row]}"

    @property
    def n_classes(self) -> int | None:
        if self.task in ("regression", "density"):
            return None
        return len(self.classes) if self.classes else int(self.y.max()) + 1

    def fingerprint(self) -> str:
        """A hash of the rows, so that a resumed run can tell that its data changed."""
        h = hashlib.sha256()
        for a in (self.X, self.y):
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        return h.hexdigest()[:16]


def resolve(data, task: str | None = None, features=None, target=None) -> Dataset:
    """The data a run trains on, from what a user may hand over: a bundled data set's name, a
    .csv/.npz path, a `Dataset`, an `(X, y)` pair of arrays, or a pandas DataFrame (with
    `features=`/`target=` naming columns; default: the last column is the target). Its task
    follows the model's where the labels allow: two classes train a softmax model too."""
    if isinstance(data, Dataset):
        ds = data
    elif isinstance(data, (str, pathlib.PurePath)):
        ds = load(str(data), task, features, target)
    elif hasattr(data, "columns") and hasattr(data, "to_numpy"):
        ds = from_frame(data, task, features, target)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        if features is not None or target is not None:
            raise SymgradError("features= and target= choose columns of a file or a DataFrame; "
                               "(X, y) arrays are features and target already")
        ds = from_arrays(data[0], data[1], task)
    else:
        raise SymgradError("data must be a bundled data set's name, a .csv/.npz path, a pair (X, y) of "
                           f"arrays or a pandas DataFrame, not {type(data).__name__}")
    return fit_task(ds, task)


def fit_task(ds: Dataset, task: str | None) -> Dataset:
    """Two classes are both a binary and a two-class multiclass problem: take the model's view."""
    if task in ("binary", "multiclass") and ds.task in ("binary", "multiclass") and ds.task != task \
            and ds.n_classes == 2:
        return replace(ds, task=task)
    return ds


def as_rows(X, what: str) -> np.ndarray:
    """Feature rows as a float64 (N, features) array: an array of two or more axes (an image
    or a sequence per row is flattened), a list of rows, or a DataFrame."""
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    try:
        rows = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise SymgradError(f"{what} must hold numbers only") from None
    if rows.ndim < 2:
        raise SymgradError(f"{what} must be a 2-D array of rows (N, features), not of shape {rows.shape}; "
                           "a single row is rows[None]")
    rows = rows.reshape(len(rows), -1)
    bad = np.argwhere(~np.isfinite(rows))
    if len(bad):
        raise SymgradError(f"{what}: row {bad[0][0]}, column {bad[0][1]} holds {rows[tuple(bad[0])]}")
    return rows


def from_arrays(X, y, task: str | None, name: str = "arrays") -> Dataset:
    """A data set from arrays: X of shape (N, ...) and y of N class labels (numbers or words),
    one-hot rows, or regression values (N,) or (N, targets)."""
    if task is None:
        raise SymgradError("the model declares no task, so the target array cannot be read; give the "
                           "model one: Model(name, task='multiclass'|'binary'|'regression')")
    rows = as_rows(X, "X")
    y = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
    if len(y) != len(rows):
        raise SymgradError(f"X has {len(rows)} rows but y has {len(y)}")
    if y.dtype.kind in "biuf":
        y = y.astype(np.float64)
    elif y.dtype.kind in "USO":
        y = y.astype(str)
    else:
        raise SymgradError(f"y holds {y.dtype} values; expected numbers or class names")
    labels, classes = encode_labels(y, task, "y")
    return Dataset(f"{name} ({len(rows)} rows)", task, rows, labels, classes,
                   [f"x{j}" for j in range(rows.shape[1])])


def from_frame(frame, task: str | None, features=None, target=None) -> Dataset:
    """A data set from a pandas DataFrame (any object with `columns` and `to_numpy`); columns
    are chosen as in a CSV file with a header (names, indices, ranges)."""
    if task is None:
        raise SymgradError("the model declares no task, so the target column cannot be read; give the "
                           "model one: Model(name, task='multiclass'|'binary'|'regression')")
    names = [str(c) for c in frame.columns]
    columns = []
    for j in range(len(names)):
        column = np.asarray(frame.iloc[:, j].to_numpy() if hasattr(frame, "iloc") else frame.to_numpy()[:, j])
        columns.append(column.astype(np.float64) if column.dtype.kind in "biuf" else column.astype(str))
    table = files.Table("DataFrame", names, columns, list(range(len(frame))))
    picked = files.pick(table, features, target)
    y, classes = encode_labels(picked.y, task, f"DataFrame: target {', '.join(picked.target_names)}")
    return Dataset(f"DataFrame ({len(picked.X)} rows)", task, picked.X, y, classes, picked.feature_names)


def label_indices(values, classes: list[str]) -> np.ndarray:
    """Class labels 0..k-1 of targets given as class names, as labels, or as one-hot rows."""
    y = np.asarray(values)
    if y.ndim == 2 and y.shape[1] == len(classes) and y.shape[1] > 1:
        return y.argmax(axis=1).astype(np.int64)
    y = y.reshape(len(y))
    names = y.astype(str) if y.dtype.kind in "USO" else None
    if names is None:
        if y.dtype.kind not in "biuf" or not np.all(y == np.round(y)):
            raise SymgradError(f"targets must be class names or whole-number labels of {', '.join(classes)}")
        names = np.array([str(int(v)) for v in y])
    index = {c: j for j, c in enumerate(classes)}
    if all(n in index for n in names):
        return np.array([index[n] for n in names], dtype=np.int64)
    if y.dtype.kind in "biuf" and np.all((y >= 0) & (y < len(classes))):  # labels of named classes
        return y.astype(np.int64)
    unknown = next(n for n in names if n not in index)
    raise SymgradError(f"unknown class {unknown!r}; the model knows {', '.join(classes)}")


def load(spec: str, task: str | None = None, features: str | None = None,
         target: str | None = None) -> Dataset:
    """A bundled data set by name, or a .csv/.npz file whose target is read for `task`
    (the model's task: it decides whether the target holds classes or values)."""
    if spec in BUNDLED:
        if features is not None or target is not None:
            raise SymgradError("--features and --target choose columns of a CSV or NPZ file; "
                               f"{spec!r} is a bundled data set")
        return load_bundled(spec)
    if not files.is_file_spec(spec):
        raise SymgradError(f"unknown data set {spec!r}; bundled ones are {', '.join(BUNDLED)} "
                           "(or give a .csv/.npz file)")
    if task is None:
        raise SymgradError(f"the model declares no task, so the target of {spec} cannot be read; "
                           "give the model one: Model(name, task='multiclass'|'binary'|'regression')")
    if task == "density":
        return _density_file(spec, features, target)
    columns = files.read(spec, features, target)
    y, classes = encode_labels(columns.y, task, f"{spec}: target {', '.join(columns.target_names)}")
    return Dataset(str(spec), task, columns.X, y, classes, columns.feature_names, columns.lines)


def sines(rows: int = 1200, steps: int = 40, seed: int = 20261126) -> Dataset:
    """Sequences of two summed sines (random frequency, phase and amplitude each); the target
    at every step is the next value. Generated, the same on every machine (fixed seed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps + 1) * 0.25
    freq = rng.uniform(0.3, 1.5, (rows, 2, 1))
    phase = rng.uniform(0, 2 * np.pi, (rows, 2, 1))
    amp = rng.uniform(0.3, 1.0, (rows, 2, 1))
    wave = (amp * np.sin(freq * t + phase)).sum(axis=1)  # (rows, steps + 1)
    names = [f"x{k}" for k in range(steps)]
    return Dataset("sines", "regression", wave[:, :-1], wave[:, 1:], None, names)


def _density_file(spec: str, features: str | None, target: str | None) -> Dataset:
    """A density model's rows from a file: the columns --features names, by default all of them."""
    if target is not None:
        raise SymgradError("a density model has no target; --target is refused (name the columns "
                           "with --features)")
    columns = files.read(spec, features, None, with_target=False)
    return Dataset(str(spec), "density", columns.X, columns.y, None, columns.feature_names, columns.lines)


def gaussian(rows: int = 2000, seed: int = 20261127) -> Dataset:
    """Rows of a 4-D Gaussian with a fixed mean and strongly correlated coordinates (correlations
    from -0.6 to 0.8). Generated, the same on every machine (fixed seed)."""
    rng = np.random.default_rng(seed)
    mean = np.array([1.0, -2.0, 0.5, 3.0])
    factor = np.array([[1.0, 0.0, 0.0, 0.0], [0.8, 0.6, 0.0, 0.0], [-0.5, 0.3, 0.8, 0.0],
                       [0.2, -0.7, 0.4, 0.5]]) * np.array([[2.0], [1.0], [0.5], [1.5]])
    X = mean + rng.standard_normal((rows, 4)) @ factor.T
    return Dataset("gaussian", "density", X, np.zeros((rows, 0)), None, [f"x{k}" for k in range(4)])


def load_bundled(name: str) -> Dataset:
    if name not in BUNDLED:
        raise SymgradError(f"unknown data set {name!r}; bundled ones are {', '.join(BUNDLED)} "
                           "(or give a .csv/.npz file)")
    if name == "sines":
        return sines()
    if name == "gaussian":
        return gaussian()
    try:
        from sklearn import datasets
    except ImportError:  # pragma: no cover - the train extra installs it
        raise SymgradError("bundled data sets need scikit-learn: pip install 'symgrad[train]'") from None
    bunch = getattr(datasets, f"load_{name}")()
    X = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target)
    names = [str(f) for f in getattr(bunch, "feature_names", range(X.shape[1]))]
    if BUNDLED[name] == "regression":
        return Dataset(name, "regression", X, y.reshape(len(y), -1).astype(np.float64), None, names)
    classes = [str(c) for c in bunch.target_names]
    return Dataset(name, BUNDLED[name], X, y.astype(np.int64), classes, names)


def encode_labels(y: np.ndarray, task: str, what: str) -> tuple[np.ndarray, list[str] | None]:
    """Raw target values as the task needs them: values (N, t) for regression; labels 0..k-1
    and the class names for classification (from numbers, words, or one-hot columns)."""
    if task not in TASKS:
        raise SymgradError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    if task == "regression":
        if y.dtype.kind != "f":
            raise SymgradError(f"{what} holds words, but a regression model needs numbers")
        bad = np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).all(axis=1))
        if len(bad):
            raise SymgradError(f"{what}: row {bad[0]} is not a finite number")
        return y.reshape(len(y), -1).astype(np.float64), None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:  # one-hot rows
        if y.dtype.kind != "f" or not np.all((y == 0) | (y == 1)) or not np.all(y.sum(axis=1) == 1):
            raise SymgradError(f"{what}: several target columns must be one-hot rows for a {task} model")
        labels, classes = y.argmax(axis=1), [str(j) for j in range(y.shape[1])]
    else:
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                bad = y[~(np.isfinite(y) & (y == np.round(y)))][0]
                raise SymgradError(f"{what} holds {bad}, but a {task} model needs class labels "
                                   "(whole numbers or words)")
            values, labels = np.unique(y, return_inverse=True)
            classes = [str(int(v)) for v in values]
        else:
            values, labels = np.unique(y, return_inverse=True)
            classes = [str(v) for v in values]
    if len(classes) < 2:
        raise SymgradError(f"{what} holds one class only ({classes[0]!r}); a {task} model needs two or more")
    if task == "binary" and len(classes) != 2:
        raise SymgradError(f"{what} holds {len(classes)} classes, but a binary model needs exactly two "
                           "(train a multiclass model instead)")
    return labels.astype(np.int64), classes


@dataclass
class Split:
    X: np.ndarray
    # encoded for the model: one-hot (N, k) or integer labels (N,), (N, 1) for binary, (N, t) regression
    Y: np.ndarray
    labels: np.ndarray | None  # class labels for classification metrics

    def __len__(self) -> int:
        return len(self.X)


@dataclass
class Prepared:
    train: Split
    val: Split
    test: Split
    mean: np.ndarray  # of the training features, subtracted from every row
    std: np.ndarray
    task: str
    classes: list[str] | None = None
    y_mean: np.ndarray | None = None  # regression targets are standardised too
    y_std: np.ndarray | None = None


def encode_targets(y: np.ndarray, task: str, n_classes: int | None, sparse: bool = False) -> np.ndarray:
    """Targets as the model takes them; `sparse`: integer class labels as they are (a model
    with an integer target, trained by the sparse softmax cross-entropy)."""
    if sparse:
        return np.asarray(y, dtype=np.int64)
    if task == "multiclass":
        return np.eye(n_classes)[y]
    if task == "binary":
        return y.reshape(-1, 1).astype(np.float64)
    return y.reshape(len(y), -1).astype(np.float64)  # regression values; density: (N, 0)


def split_indices(ds: Dataset, seed: int, val_fraction: float, test_fraction: float
                  ) -> dict[str, np.ndarray]:
    """Seeded train/val/test row indices, stratified by class or by target quintile
    (scikit-learn's `train_test_split(stratify=)`: the test rows first, then the validation
    rows from the rest). Data too small to stratify (a class with a single row, fewer test rows
    than classes) is split without strata."""
    for name, f in (("validation", val_fraction), ("test", test_fraction)):
        if not 0 < f < 1:
            raise SymgradError(f"the {name} fraction must lie between 0 and 1, not {f!r}")
    if val_fraction + test_fraction >= 1:
        raise SymgradError("the validation and test fractions leave no rows for training")
    from sklearn.model_selection import train_test_split

    if ds.task == "regression":  # strata: quintiles of the first target
        y = ds.y.reshape(len(ds.y), -1)[:, 0]
        strata = np.searchsorted(np.quantile(y, [0.2, 0.4, 0.6, 0.8]), y, side="right")
    elif ds.task == "density":  # no target: one stratum
        strata = np.zeros(len(ds.X), dtype=np.int64)
    else:
        strata = ds.y
    state = int(streams(seed)[0].generate_state(1)[0])

    def cut(rows: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        try:
            return train_test_split(rows, test_size=fraction, stratify=strata[rows], random_state=state)
        except ValueError:  # too small to stratify
            try:
                return train_test_split(rows, test_size=fraction, random_state=state)
            except ValueError:
                return rows, rows[:0]

    rest, test = cut(np.arange(len(ds.X)), test_fraction)
    train, val = cut(rest, val_fraction / (1 - test_fraction))
    out = {"train": train, "val": val, "test": test}
    if min(len(v) for v in out.values()) < 1:
        raise SymgradError(f"data set {ds.name!r} has too few rows ({len(ds.X)}) to split into "
                           "training, validation and test rows")
    return out


def prepare(ds: Dataset, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.2,
            standardize: bool = True, per_column: bool = True, sparse: bool = False,
            dtype: str = "float32") -> Prepared:
    """Split with `seed`, standardise with training statistics, encode targets.

    `per_column=False` standardises with one mean and deviation over all columns: for
    images and sequences, whose columns are pixels or time steps of one quantity (per-pixel
    statistics would blow a rarely lit border pixel up to dozens of deviations). `sparse`: class
    labels stay integers (a model whose target is integer labels), else one-hot rows. A value
    that the standardisation or the training `dtype` cannot hold (1e308, or 1e39 in float32)
    is refused here, naming its row and column, before anything is trained or written."""
    parts = split_indices(ds, seed, val_fraction, test_fraction)
    X_train = ds.X[parts["train"]]
    axis = 0 if per_column else None
    ones = np.ones(ds.X.shape[1])
    with np.errstate(over="ignore", invalid="ignore"):
        mean = X_train.mean(axis=axis) * ones if standardize else 0 * ones
        std = X_train.std(axis=axis) * ones if standardize else ones
    _check_scale(ds, ds.X, parts["train"], mean, std, dtype, "column", ds.feature_names)
    std = np.where(std > 0, std, 1.0)  # constant columns (blank digit pixels) stay as they are
    y_mean = y_std = None
    y_all = ds.y
    if ds.task == "regression" and standardize:
        y_train = ds.y[parts["train"]]
        y_ones = np.ones(y_train.shape[1])
        with np.errstate(over="ignore", invalid="ignore"):
            y_mean, y_std = y_train.mean(axis=axis) * y_ones, y_train.std(axis=axis) * y_ones
        _check_scale(ds, ds.y, parts["train"], y_mean, y_std, dtype, "target column", None)
        y_std = np.where(y_std > 0, y_std, 1.0)
        y_all = (ds.y - y_mean) / y_std
    k = ds.n_classes
    splits = {}
    for key, idx in parts.items():
        labels = ds.y[idx] if ds.task in ("binary", "multiclass") else None
        splits[key] = Split((ds.X[idx] - mean) / std, encode_targets(y_all[idx], ds.task, k, sparse), labels)
    classes = ds.classes or ([str(c) for c in range(k)] if k else None)
    return Prepared(splits["train"], splits["val"], splits["test"], mean, std, ds.task, classes,
                    y_mean, y_std)


def _check_scale(ds: Dataset, values: np.ndarray, train: np.ndarray, mean: np.ndarray, std: np.ndarray,
                 dtype: str, what: str, names: list[str] | None) -> None:
    """Refuse the first value whose column statistics overflow (the training split's mean or
    deviation is not finite) or whose standardised value the training dtype cannot hold."""
    if not values.size:
        return
    limit = float(np.finfo(dtype).max)

    def refuse(row: int, j: int, why: str) -> None:
        column = repr(names[j]) if names and j < len(names) else str(j)
        raise SymgradError(f"{ds.where(row)}: {what} {column} holds {values[row, j]:g}, {why}; rescale the "
                           "column (or drop the row) before training")

    for j in np.flatnonzero(~(np.isfinite(mean) & np.isfinite(std))):
        row = int(train[np.argmax(np.abs(values[train, j]))])
        refuse(row, int(j), "too large to standardise (the mean or deviation of the training rows overflows)")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        scaled = np.abs(values - mean) / np.where(std > 0, std, 1.0)
    bad = np.argwhere(~(scaled <= limit))
    if len(bad):
        row, j = (int(i) for i in bad[0])
        refuse(row, j, f"{scaled[row, j]:.3g} deviations from the training mean, beyond the range of "
                       f"{dtype} ({limit:.3g})")


def streams(seed: int) -> list[np.random.SeedSequence]:
    """Independent random streams of one seed: [0] splits the data, [1] shuffles batches,
    [2] draws the model's own randomness (dropout masks). Initialisation draws from the seed
    itself, inside the generated module. Separate streams keep the split from echoing the
    first shuffle or the initial weights, and adding dropout from changing the batches."""
    return np.random.SeedSequence(seed).spawn(3)


def batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled index batches covering all n rows; the last one may be smaller."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]
