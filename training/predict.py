"""`symgrad predict`, `symgrad evaluate` and `symgrad sample`: a finished run on new data.

    symgrad predict RUN_DIR --data new.csv [--out preds.csv]   # class (or value) per row, probabilities
    symgrad evaluate RUN_DIR --data labelled.csv               # the run's metrics on these rows
    symgrad sample RUN_DIR -n 1000 [--out samples.csv]         # a GAN run's generator

Rows go through the run's own standardisation and reshaping (`TrainedModel`). Columns are
chosen as in training (`--features`, `--target`); by default a file that holds exactly the
model's features is all features, and otherwise its last column is the target (for a run
that trained on a file, its own `--features` and `--target` are the defaults).
"""
from __future__ import annotations

import argparse
import csv
import io
import pathlib

import numpy as np
from symgrad.codegen.atomic import write_text
from symgrad.symbolic.errors import SymgradError
from symgrad.training import data as D
from symgrad.training import files, metrics
from symgrad.training.trained import TrainedGAN, TrainedModel, load_trained


def add_commands(sub) -> None:
    p = sub.add_parser("predict",
                       help="predict with a trained run on new rows (class or value, probabilities)")
    _run_and_data(p, labelled=False)
    p.add_argument("--out", metavar="FILE", help="write the predictions to this CSV file (default: stdout)")
    p.set_defaults(run=predict_command)
    p = sub.add_parser("evaluate", help="a trained run's metrics on new labelled rows")
    _run_and_data(p, labelled=True)
    p.set_defaults(run=evaluate_command)
    p = sub.add_parser("sample", help="draw samples from a trained GAN run's generator")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a finished GAN run")
    p.add_argument("-n", "--samples", type=int, default=1000, metavar="N", help="how many (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    p.add_argument("--out", metavar="FILE", help="write the samples to this CSV file (default: stdout)")
    p.set_defaults(run=sample_command)


def _run_and_data(p: argparse.ArgumentParser, labelled: bool) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a finished run (it holds model.npz)")
    p.add_argument("--data", required=True, metavar="NAME|FILE",
                   help=f"a .csv/.npz file{' with targets' if labelled else ''}, or a bundled data set")
    p.add_argument("--features", metavar="COLS", help="feature columns (names, indices, START:STOP ranges; "
                   "NPZ: an array name); default: the run's own, else see `symgrad predict --help`")
    if labelled:
        p.add_argument("--target", metavar="COLS", help="target column(s) (NPZ: an array name); "
                       "default: the run's own, else the last column")


def _trained(run_dir: str, kind: type):
    path = pathlib.Path(run_dir)
    if not path.exists():
        raise SymgradError(f"run folder {run_dir} does not exist")
    trained = load_trained(path)
    if not isinstance(trained, kind):
        raise SymgradError(f"{run_dir} is a GAN run: draw from it with `symgrad sample {run_dir}`"
                           if kind is TrainedModel else f"{run_dir} is not a GAN run; use `symgrad predict`")
    return trained


def _columns(trained: TrainedModel, spec: str, flag: str, given: str | None) -> str | None:
    """A column choice: given, else the run's own when it trained on a file."""
    config = trained.meta["config"]
    if given is not None or spec in D.BUNDLED or not files.is_file_spec(config["data"]):
        return given
    return config.get(flag)


def read(trained: TrainedModel, spec: str, features: str | None, target: str | None,
         labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw feature rows (and raw targets) of a bundled data set or a file."""
    if spec in D.BUNDLED:
        ds = D.load_bundled(spec)
        y = ds.y if ds.task == "regression" else np.asarray(ds.classes)[ds.y]
        return ds.X, y
    if not files.is_file_spec(spec):
        raise SymgradError(f"unknown data set {spec!r}; bundled ones are {', '.join(D.BUNDLED)} "
                           "(or give a .csv/.npz file)")
    features = _columns(trained, spec, "features", features)
    if not labelled:
        return files.read_features(spec, features, len(trained.input_mean)), None
    columns = files.read(spec, features, _columns(trained, spec, "target", target))
    return columns.X, columns.y


def _write_or_print(text: str, out: str | None) -> None:
    if out is None:
        print(text, end="")
        return
    try:
        write_text(out, text)
    except OSError as e:
        raise SymgradError(f"cannot write {out}: {e.strerror}") from None
    print(f"wrote {out}")


def _csv(header: list[str], rows) -> str:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue()


def predict_command(args: argparse.Namespace) -> int:
    trained = _trained(args.run_dir, TrainedModel)
    X, _ = read(trained, args.data, args.features, None, labelled=False)
    if trained.task == "regression":
        values = trained.predict(X).reshape(len(X), -1)
        width = values.shape[1]
        header = ["prediction"] if width == 1 else [f"prediction_{j}" for j in range(width)]
        rows = [[repr(float(v)) for v in row] for row in values]
    else:
        proba = trained.predict_proba(X)
        names = np.asarray(trained.classes)[proba.argmax(axis=1)]
        header = ["prediction", *(f"p_{c}" for c in trained.classes)]
        rows = [[name, *(f"{p:.6g}" for p in row)] for name, row in zip(names, proba, strict=True)]
    _write_or_print(_csv(header, rows), args.out)
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    trained = _trained(args.run_dir, TrainedModel)
    X, y = read(trained, args.data, args.features, args.target, labelled=True)
    result = trained.evaluate(X, y)
    metric = "r2" if trained.task == "regression" else "accuracy"
    extra = ""
    if trained.task != "regression":
        counts = np.bincount(D.label_indices(y, trained.classes), minlength=len(trained.classes))
        print(metrics.report(result, trained.classes, counts, "per class"))
        extra = f", macro F1 {result['f1_macro']:.4f}" + (
            f", ROC AUC {result['roc_auc']:.4f}" if "roc_auc" in result else "")
    print(f"{metric} {result[metric]:.4f}  (loss {result['loss']:.4f}{extra}; {len(X)} rows of {args.data}; "
          f"{trained.meta['model']} of {args.run_dir})")
    return 0


def sample_command(args: argparse.Namespace) -> int:
    trained = _trained(args.run_dir, TrainedGAN)
    if args.samples < 1:
        raise SymgradError(f"-n must be a positive integer, not {args.samples}")
    samples = trained.sample(args.samples, args.seed)
    _write_or_print(_csv([f"x{j}" for j in range(samples.shape[1])],
                         [[repr(float(v)) for v in row] for row in samples]), args.out)
    return 0
