"""A trained model, loaded from its run folder and used on new rows.

    trained = symgrad.load_trained("runs/mlp_tanh-digits-1")
    trained.predict(rows)          # class names (or values, in the data's units)
    trained.predict_proba(rows)    # one probability per class, columns in `trained.classes` order
    trained.evaluate(rows, labels) # the run's figures on new labelled rows

A run folder is self-contained: `model.npz` holds the parameters, the running averages, the
standardisation and the class names, and `module.py` is a copy of the generated module the
run trained with (for a model file, `model_file.py` keeps the file too). So a run loads on a
machine without the model's source or sympy (a `--dropout/--l2` variant or a model file
that is gone), from any working folder; only numpy is needed to predict.

Rows are raw feature rows, as in the training data (not standardised; an image's pixels or a
sequence's steps flattened, or already in the model's input shape): they get the same
standardisation and reshaping as in training (`training.evaluation.Evaluator`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import pathlib
import sys
import types
from dataclasses import dataclass, field

import numpy as np
from symgrad.codegen import calibration
from symgrad.symbolic.errors import SymgradError
from symgrad.training import checkpoint
from symgrad.training.data import as_rows, encode_targets, label_indices
from symgrad.training.evaluation import Evaluator

MODEL, MODULE, MODEL_FILE = "model.npz", "module.py", "model_file.py"


def import_module_file(path: pathlib.Path) -> types.ModuleType:
    """Import a generated module from a file under a name of its own (a hash of its text), so
    two runs of different models never collide and a run imported twice is one module."""
    text = path.read_bytes()
    name = f"symgrad_run_{path.stem}_{hashlib.sha256(text).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return calibration.install(module)


def run_module(run_dir: pathlib.Path | None, meta: dict) -> types.ModuleType:
    """The generated module a run trained with: its copy in the run folder, else (a run
    written before runs kept one) the built-in of that name."""
    if run_dir is not None and (run_dir / MODULE).is_file():
        return import_module_file(run_dir / MODULE)
    from symgrad.models import BUILTINS

    if meta.get("model") in BUILTINS:
        from symgrad import pipeline

        return pipeline.load_module(meta["model"])
    raise SymgradError(f"{run_dir or 'the run'} holds no {MODULE} and {meta.get('model')!r} is not a "
                       "built-in model, so its generated module cannot be found")


@dataclass
class TrainedModel:
    """What `model.npz` holds, and the generated module to use it with."""

    params: dict[str, np.ndarray]
    state: dict[str, np.ndarray]  # the model's running averages (batch normalisation), if any
    input_mean: np.ndarray  # standardisation of the features, fitted on the training split
    input_std: np.ndarray
    target_mean: np.ndarray | None  # regression targets were standardised too
    target_std: np.ndarray | None
    meta: dict  # model, dims, task, classes, test metrics, the run's settings
    run_dir: pathlib.Path | None = None
    _module: types.ModuleType | None = field(default=None, repr=False)

    # -- what the run was ----------------------------------------------------------------------
    @property
    def classes(self) -> list[str] | None:
        """The class names in label order (the columns of `predict_proba`); None for regression."""
        return self.meta.get("classes")

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def module(self) -> types.ModuleType:
        if self._module is None:
            self._module = run_module(self.run_dir, self.meta)
        return self._module

    @property
    def evaluator(self) -> Evaluator:
        m, config = self.module, self.meta["config"]
        inputs = [k for k in m.INPUTS if k not in m.TARGETS]
        dims = self.meta["dims"]

        def shape(name: str) -> tuple[int, ...]:
            return tuple(d if isinstance(d, int) else dims[d] for d in m.INPUTS[name][1:])

        target = m.TARGETS[0] if m.TARGETS else None
        return Evaluator(m, inputs[0], target, shape(inputs[0]), shape(target) if target else (),
                         np.dtype(config["dtype"]), dict(config["model_hypers"]), self.task, self.classes)

    # -- rows in, predictions out ---------------------------------------------------------------
    def inputs(self, X) -> np.ndarray:
        """Raw feature rows as the model saw them in training (standardised, still flat)."""
        rows = as_rows(X, "rows")
        if rows.shape[1] != len(self.input_mean):
            raise SymgradError(f"the model takes {len(self.input_mean)} features per row; these rows have "
                               f"{rows.shape[1]}")
        return (rows - self.input_mean) / self.input_std

    def targets(self, Y: np.ndarray) -> np.ndarray:
        """A regression model's outputs back in the data's own units."""
        if self.target_mean is None:
            return Y
        return Y * self.target_std + self.target_mean

    def output(self, rows) -> np.ndarray:
        """The model's prediction output (probabilities, or standardised values) for raw rows."""
        return self.evaluator.predict(self.params, self.state, self.inputs(rows))

    def predict_proba(self, rows) -> np.ndarray:
        """(N, classes) probabilities, columns in `classes` order (two columns for a binary model)."""
        if self.task == "regression":
            raise SymgradError("predict_proba is for classifiers; this model does regression (use predict)")
        p = self.output(rows)
        p = p.reshape(len(p), -1)
        return np.concatenate([1 - p, p], axis=1) if self.task == "binary" else p

    def predict(self, rows) -> np.ndarray:
        """Class names (an array of str), or values in the data's units: (N,) for one target,
        (N, targets) for several."""
        if self.task == "regression":
            out = self.output(rows)
            values = self.targets(out.reshape(len(out), -1))
            return values[:, 0] if values.shape[1] == 1 else values
        return np.asarray(self.classes)[self.predict_proba(rows).argmax(axis=1)]

    def evaluate(self, rows, targets) -> dict[str, float]:
        """The run's figures on new labelled rows: loss and r2, or loss, accuracy, per-class
        precision, recall and F1 (and ROC AUC for two classes). `targets`: class names or
        labels, or values in the data's units."""
        X = self.inputs(rows)
        y = np.asarray(targets.to_numpy() if hasattr(targets, "to_numpy") else targets)
        if len(y) != len(X):
            raise SymgradError(f"{len(X)} rows but {len(y)} targets")
        if self.task == "regression":
            Y = (y.reshape(len(y), -1).astype(np.float64) - self.target_mean) / self.target_std
            labels = None
        else:
            labels = label_indices(y, self.classes)
            Y = encode_targets(labels, self.task, len(self.classes), self.evaluator.sparse)
        return self.evaluator.evaluate(self.params, self.state, X, Y, labels)


@dataclass
class TrainedGAN:
    """A GAN run: its parameters and generator."""

    params: dict[str, np.ndarray]
    meta: dict
    run_dir: pathlib.Path | None = None

    @property
    def module(self) -> types.ModuleType:
        return run_module(self.run_dir, self.meta)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n samples of the generator, from standard normal noise drawn with `seed`."""
        from symgrad.training.gan import generate

        m = self.module
        noise = np.random.default_rng(seed).standard_normal((n, m.INPUTS["Z"][1])).astype(np.float32)
        return generate(m, self.params, noise)


def save_model(path: str | pathlib.Path, model: TrainedModel) -> pathlib.Path:
    """Parameters under their own names (`np.load(path)["W1"]` works); state and
    preprocessing under dotted names that no parameter can have (`state.bn1_mean`, `input.mean`)."""
    arrays = {**model.params, **{f"state.{k}": v for k, v in model.state.items()},
              "input.mean": model.input_mean, "input.std": model.input_std}
    if model.target_mean is not None:
        arrays.update({"target.mean": model.target_mean, "target.std": model.target_std})
    return checkpoint.save(path, arrays, model.meta)


def load_trained(run_dir_or_file: str | pathlib.Path) -> TrainedModel | TrainedGAN:
    """The trained model of a run (its RUN_DIR, or the model.npz itself); a GAN run gives a
    `TrainedGAN`, which samples."""
    path = pathlib.Path(run_dir_or_file)
    if path.is_dir():
        run_dir, path = path, path / MODEL
    else:
        run_dir = path.parent
    arrays, meta = checkpoint.load(path)
    if meta.get("kind") == "gan":
        return TrainedGAN(arrays, meta, run_dir)
    try:
        return TrainedModel({k: v for k, v in arrays.items() if "." not in k},
                            {k[6:]: v for k, v in arrays.items() if k.startswith("state.")},
                            arrays["input.mean"], arrays["input.std"], arrays.get("target.mean"),
                            arrays.get("target.std"), meta, run_dir)
    except KeyError as e:
        raise SymgradError(f"{path} is not a trained model (it has no {e.args[0]})") from None
