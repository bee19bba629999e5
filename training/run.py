"""A training run from start to finish, the same from Python and from `symgrad train`.

    from symgrad.training import train
    result = train("mlp_tanh", data="digits", optimizer="adam", seed=0, out="runs/adam")
    result.test["accuracy"], result.run_dir
    train("softmax_regression", data=(X, y))          # arrays; or a DataFrame with target=

Order of business: every setting, the model, the data and the run folder are checked before
anything is written, so a mistake costs nothing. Then each epoch ends with an atomic
checkpoint and a metrics row; the end writes the model, the plots and a one-line summary.

The run folder (RUN_DIR) holds:
  config.json     the settings of the run
  metrics.csv     one row per epoch: training and validation loss and metrics, learning rate, seconds
  checkpoint.npz  everything needed to continue exactly (parameters, optimizer state, step,
                  epoch, shuffling generator state, schedule state, history, best epoch),
                  rewritten each epoch
  model.npz       the trained parameters, the standardisation and class names, test metrics
  module.py       a copy of the generated module the run trained with (model_file.py: the
                  model file too, for a model file): the run loads without the model's source
  curves.png      loss and metric per epoch; confusion.png for classification (test split)

Resuming (`resume=RUN_DIR`) restores the checkpoint and continues bit for bit as if the run
had never stopped. Only `epochs`, `patience` and `threads` may differ from the original run;
every other setting is the run's own and must not be contradicted. `epochs` is the total, so
fewer than the run has trained is refused, and config.json records the total it finished with.

Files: every one is replaced whole (`codegen.atomic`); the run folder is checked to take files
before training; a failed write (disk full, name too long) is one `WriteError` line that says
which checkpoint stays. A run that fails before its first checkpoint removes the empty folder
it created, so no empty run folders pile up.

Early stopping (`patience=N`): the run stops after N epochs without a lower validation loss,
and the parameters of the best epoch are the ones kept in model.npz and tested.

A model with objectives (a GAN) trains by alternating steps instead (`training.gan`).
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import pathlib
import time
import types
import warnings
from dataclasses import dataclass, field

import numpy as np
from symgrad.codegen import atomic
from symgrad.codegen.atomic import write_text
from symgrad.symbolic.errors import SymgradError, SymgradWarning
from symgrad.training import checkpoint, defaults, metrics, plots, second_order
from symgrad.training.data import Prepared, prepare, resolve
from symgrad.training.loop import REGULARISERS, Diverged, EpochRecord, TrainConfig, Trainer
from symgrad.training.parallel import WorkersLost
from symgrad.training.progress import Progress
from symgrad.training.trained import MODEL, MODEL_FILE, MODULE, TrainedModel, load_trained, save_model

CHECKPOINT, METRICS, CONFIG = "checkpoint.npz", "metrics.csv", "config.json"
CURVES, CONFUSION = "curves.png", "confusion.png"
RUN_FILES = (CONFIG, METRICS, CHECKPOINT, MODEL, MODULE, CURVES, CONFUSION)
RESUMABLE = ("epochs", "patience", "threads")  # settings a resumed run may change
FROM_PYTHON = ("arrays", "DataFrame")  # data that lives in the caller's memory, not in a name
GAN_ONLY, EPOCHS_ONLY = ("steps",), ("epochs", "patience", "resume", "features", "target", "optimizer",
                                      "dims", "model_hypers", "optimizer_hypers", "l1", "l2", "dropout",
                                      "schedule", "clip_norm", "val_fraction", "test_fraction", "dtype",
                                      "sparse_labels")

__all__ = ["RunResult", "load_trained", "train"]


@dataclass
class RunResult:
    run_dir: pathlib.Path
    metric: str  # "accuracy" or "r2"
    test: dict[str, float]  # loss and metrics on the test split (per class too, for classification)
    history: list[EpochRecord]
    params: dict[str, np.ndarray]  # the kept parameters (the best epoch's with patience)
    summary: str  # the closing line, "test accuracy 0.9722  (...)"
    best_epoch: int
    stopped_early: bool
    config: dict = field(default_factory=dict)
    report: str = ""  # per-class precision, recall and F1 on the test split, as a table


def train(model, data=None, *, optimizer: str | None = None,
          lr: float | None = None, epochs: int | None = None, batch_size: int | None = None,
          seed: int | None = None, patience: int | None = None,
          features=None, target=None,
          val_fraction: float | None = None, test_fraction: float | None = None,
          optimizer_hypers: dict[str, float] | None = None, model_hypers: dict[str, float] | None = None,
          dims: dict[str, int] | None = None, dtype: str | None = None,
          out: str | pathlib.Path | None = None, resume: str | pathlib.Path | None = None,
          progress: bool | None = None, quiet: bool = False, l1: float | None = None,
          l2: float | None = None, dropout: float | None = None, schedule=None,
          sparse_labels: bool | None = None,
          clip_norm: float | None = None, threads: int | None = None, steps: int | None = None,
          workers: int | None = None, scheduler: str | None = None):
    """Train `model` (a built-in name, a model file, a `Model` or a generated module) and
    return the result (a `RunResult`; a `training.gan.GanResult` for a GAN).

    `data`: a bundled data set's name, a .csv/.npz path, `(X, y)` arrays, or a pandas
    DataFrame (`features=`/`target=` name its columns, as they name a file's). Every setting
    left as None takes its default: the model's own (`symgrad list`), the recommended
    learning rate of the optimizer, or the resumed run's. `out` is the run folder (default:
    a fresh `runs/MODEL-DATA-N`); `resume` continues the run in a folder.
    `progress`: show a bar (None: when stderr is a terminal or in a notebook); `quiet`:
    print nothing. `l1`, `l2`, `dropout`: the coefficients and the rate of the model's
    regularisers; a built-in that lacks one of these terms trains its variant with the terms
    in its equations. `schedule`: a learning-rate schedule (`training.schedules`, e.g.
    "cosine:warmup=5"); `clip_norm`: rescale gradients whose global L2 norm exceeds it;
    `threads`: BLAS (and numexpr) threads while training (None: the libraries' default).
    `sparse_labels`: a built-in classifier trains its variant on integer class labels (the
    sparse softmax cross-entropy, no one-hot targets); a model whose target is declared
    `integer=True` does so anyway.
    `workers`, `scheduler`: data-parallel training on Dask (`training.parallel`), each step's
    batch split over a local cluster of `workers` processes, or over the workers of the running
    cluster at `scheduler`.
    A GAN takes `steps`, `lr`, `batch_size`, `seed`, `out`, `quiet` and `threads`.
    """
    module = _load_module(model)
    given = {k: v for k, v in dict(
        data=data, optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
        patience=patience, features=features, target=target, val_fraction=val_fraction,
        test_fraction=test_fraction, optimizer_hypers=optimizer_hypers or None,
        model_hypers=model_hypers or None, dims=dims or None, dtype=dtype, resume=resume, l1=l1, l2=l2,
        dropout=dropout, schedule=schedule, clip_norm=clip_norm, threads=threads, steps=steps,
        sparse_labels=sparse_labels or None).items()
        if v is not None}
    _check_threads(threads)
    placement = None
    if workers is not None or scheduler is not None:
        from symgrad.training.cluster import check_placement

        check_placement(workers, scheduler)
        placement = {"workers": workers, "scheduler": scheduler}
    if getattr(module, "OBJECTIVES", None):  # several players: a GAN trains by alternating steps
        if placement is not None:
            raise SymgradError("GAN training runs in one process; --workers and --scheduler are for "
                               "models that train in epochs")
        return _train_gan(model, module, given, out, quiet)
    if steps is not None:
        raise SymgradError("--steps is for GANs; this model trains in --epochs")
    with _thread_limit(threads):
        return _train_epochs(model, module, given, out, resume, progress, quiet, placement)


def _train_epochs(model, base: types.ModuleType, given: dict, out, resume, progress, quiet,
                  placement: dict | None = None) -> RunResult:
    regularisers = _regularisers(**{k: given.pop(k, None) for k in REGULARISERS})
    sparse = given.pop("sparse_labels", False)
    if regularisers:
        given["model_hypers"] = {**regularisers, **given.get("model_hypers", {})}
    if "schedule" in given:
        from symgrad.training import schedules

        given["schedule"] = schedules.parse(given["schedule"]).spec
    given.pop("resume", None)
    if resume is not None and out is not None and pathlib.Path(out) != pathlib.Path(resume):
        raise SymgradError("give either --out (a new run) or --resume (an old one), not both")
    saved = _open_resume(pathlib.Path(resume)) if resume is not None else None
    if saved is not None:  # the resumed run's regularisers select the same variant
        regularisers = {k: v for k, v in saved[1]["config"]["model_hypers"].items() if k in REGULARISERS}
        if sparse and not saved[1]["config"].get("sparse_labels", False):
            raise SymgradError("cannot resume with --sparse-labels: the run trained on one-hot targets")
        sparse = saved[1]["config"].get("sparse_labels", False)
    module = _with_regularisers(model, base, regularisers, sparse)
    settings = _settings(model, module, given, saved)
    full_batch = settings["optimizer"] in second_order.NAMES
    if full_batch:
        _check_full_batch(settings["optimizer"], given if saved is None else {}, placement)
    if module is not base:
        settings["variant_of"] = _model_name(base)
    if sparse:
        settings["sparse_labels"] = True
    config = TrainConfig(epochs=settings["epochs"], batch_size=settings["batch_size"], seed=settings["seed"],
                         optimizer=settings["optimizer"], lr=settings["lr"],
                         optimizer_hypers=settings["optimizer_hypers"], model_hypers=settings["model_hypers"],
                         dims=settings["dims"], dtype=settings["dtype"], patience=settings["patience"],
                         schedule=settings["schedule"], clip_norm=settings["clip_norm"])
    config.check()
    unusual = defaults.usual_lr_warning(config.optimizer, config.lr) if saved is None else None
    if unusual is not None:
        warnings.warn(SymgradWarning(unusual), stacklevel=3)
    dataset = settings.pop("_dataset")
    inputs = [k for k in module.INPUTS if k not in module.TARGETS]
    per_column = len(inputs) != 1 or len(module.INPUTS[inputs[0]]) <= 2  # a table, not an image/sequence
    prepared = prepare(dataset, config.seed, settings["val_fraction"], settings["test_fraction"],
                       per_column=per_column, sparse=bool(getattr(module, "LABELS", ())), dtype=config.dtype)
    if full_batch:  # one step an epoch on the whole training split
        config.batch_size = settings["batch_size"] = len(prepared.train)
    trainer = Trainer(module, prepared, config)
    settings["dims"] = {k: v for k, v in trainer.dims.items() if k != module.INPUTS[trainer.input][0]}
    settings["lr"] = trainer.lr
    settings["spec_hash"] = getattr(module, "SPEC_HASH", None)
    settings["data_fingerprint"] = dataset.fingerprint()
    sources = {MODULE: module_source(module)}
    if isinstance(model, (str, pathlib.PurePath)) and str(model).endswith(".py"):
        sources[MODEL_FILE] = pathlib.Path(model).read_text()
    if saved is not None:
        run_dir, created = pathlib.Path(resume), False
        arrays, meta = saved
        _check_same_run(meta["config"], settings)
        trainer.restore(arrays, meta)
        if config.epochs < trainer.epoch:
            raise SymgradError(f"cannot resume with epochs {config.epochs}: the run has trained "
                               f"{trainer.epoch} epochs already (give {trainer.epoch} to finish it as it "
                               "is, or more to train on)")
        _writable(run_dir)
        atomic.remove_stale(run_dir, RUN_FILES)  # a write that a kill interrupted
    else:
        run_dir, created = _claim_run_dir(out, settings)
    settings.pop("shards", None)  # a resumed data-parallel run may go on in one process
    if placement is None:
        return _run(trainer, prepared, settings, run_dir, progress, quiet, sources, created)
    from symgrad.training.cluster import connect, worker_addresses
    from symgrad.training.parallel import DataParallel

    with connect(**placement) as client:
        shards = placement["workers"] or len(worker_addresses(client))
        settings["shards"] = shards
        trainer.parallel = DataParallel(client, module, shards, trainer.input, trainer.target)
        return _run(trainer, prepared, settings, run_dir, progress, quiet, sources, created)


def _check_full_batch(optimizer: str, given: dict, placement: dict | None) -> None:
    """Refuse the settings that mean nothing to a full-batch second-order step."""
    why = {"batch_size": "it steps on the whole training split (the batch size is the split's size)",
           "schedule": "its line search sets each step's length (lr only scales the first try)",
           "clip_norm": "its line search bounds each step (clipping would bend the Newton direction)"}
    for key, reason in why.items():
        if key in given:
            raise SymgradError(f"--{key.replace('_', '-')} does not apply to optimizer {optimizer}: {reason}")
    if placement is not None:
        raise SymgradError(f"optimizer {optimizer} trains in one process: its Hessian-vector products are "
                           "not split over Dask workers; drop --workers/--scheduler")


def _check_threads(threads) -> None:
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise SymgradError(f"threads must be a positive integer, not {threads!r}")


@contextlib.contextmanager
def _thread_limit(threads: int | None):
    """At most `threads` BLAS and OpenMP threads (threadpoolctl), and as many numexpr
    threads, while training; the libraries' own defaults before and after."""
    if threads is None:
        yield
        return
    import numexpr
    from threadpoolctl import threadpool_limits

    before = numexpr.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        numexpr.set_num_threads(before)


def _train_gan(model, module: types.ModuleType, given: dict, out, quiet: bool):
    from symgrad.training.gan import check_settings, train_gan

    from symgrad.models import BUILTINS

    refused = [k for k in EPOCHS_ONLY if k in given]
    if refused:
        flag = "--" + refused[0].replace("_", "-").replace("model-hypers", "hyper").replace(
            "optimizer-hypers", "opt").replace("dims", "dim")
        raise SymgradError(f"{flag} does not apply to GAN training (it takes --steps, --lr, --batch-size, "
                           "--seed, --threads, --out)")
    if given.get("data") not in (None, "ring"):
        raise SymgradError(f"GAN training uses the generated ring of 8 Gaussians (--data ring), "
                           f"not {given['data']!r}")
    builtin = BUILTINS.get(model) if isinstance(model, str) else None
    chosen = builtin.train if builtin else {"steps": 12000, "batch_size": 256, "lr": 3e-4, "beta1": 0.5}
    lr, steps = given.get("lr", chosen["lr"]), given.get("steps", chosen["steps"])
    batch_size, seed = given.get("batch_size", chosen["batch_size"]), given.get("seed", 0)
    check_settings(steps=steps, batch_size=batch_size, lr=lr, seed=seed)  # before any warning
    unusual = defaults.usual_lr_warning("adam", lr)
    if unusual is not None:
        warnings.warn(SymgradWarning(unusual), stacklevel=3)
    with _thread_limit(given.get("threads")):
        return train_gan(module, steps=steps, batch_size=batch_size, lr=lr, beta1=chosen["beta1"], seed=seed,
                         out=out, quiet=quiet)


# -- before training: settings, model, data, run folder -------------------------------------------
def _load_module(model) -> types.ModuleType:
    from symgrad import pipeline

    if isinstance(model, types.ModuleType):
        return model
    return pipeline.load_module(model)


def _regularisers(**given: float | None) -> dict[str, float]:
    for name, value in given.items():
        if value is None:
            continue
        upper = 1.0 if name == "dropout" else float("inf")
        if not (isinstance(value, (int, float)) and 0 <= value < upper):
            bound = "in [0, 1)" if name == "dropout" else "a non-negative number"
            raise SymgradError(f"{name} must be {bound}, not {value!r}")
    return {k: float(v) for k, v in given.items() if v is not None}


def _with_regularisers(model, module: types.ModuleType, wanted: dict[str, float],
                       sparse: bool = False) -> types.ModuleType:
    """`module`, when its equations hold every wanted regulariser (and, with `sparse`, an
    integer target); else the built-in's variant with them added (derived and generated in
    memory)."""
    from symgrad import pipeline
    from symgrad.models import BUILTINS

    missing = [k for k in wanted if k not in module.HYPERS]
    builtin = BUILTINS.get(model) if isinstance(model, str) else None
    if sparse and not getattr(module, "LABELS", ()):
        if builtin is None or builtin.sparse is None:
            raise SymgradError(f"--sparse-labels: {_model_name(module)} has no integer target; declare one "
                               "with model.target(name, (B,), integer=True) and use "
                               "sparse_softmax_cross_entropy, or train a built-in classifier")
        if not missing:
            return pipeline.load_module(builtin.sparse())
    if not missing:
        return module
    if builtin is None or builtin.variant is None:
        has = ", ".join(module.HYPERS) or "none"
        raise SymgradError(
            f"--{missing[0]} needs a {missing[0]} term in the equations of {_model_name(module)}, which has "
            f"none (its hyper-parameters: {has}); write it into the model (see symgrad.models.mlp) or "
            "train a model that has it, e.g. mlp_tanh or mlp_regularised")
    terms = {k: k in wanted or k in module.HYPERS for k in REGULARISERS}
    return pipeline.load_module(builtin.variant(**terms, **({"sparse": True} if sparse else {})))


def _model_name(module: types.ModuleType) -> str:
    return module.__name__.split(".")[-1].removeprefix("symgrad_generated_")


def _open_resume(run_dir: pathlib.Path) -> tuple[dict, dict]:
    path = run_dir / CHECKPOINT
    if not run_dir.is_dir():
        raise SymgradError(f"cannot resume: {run_dir} is not a folder")
    if not path.is_file():
        raise SymgradError(f"cannot resume: {run_dir} holds no {CHECKPOINT} (a run that had not "
                           "finished its first epoch, or not a run folder)")
    arrays, meta = checkpoint.load(path)
    if "config" not in meta:
        raise SymgradError(f"cannot resume: {path} is not a training checkpoint")
    if meta["format"] < checkpoint.FORMAT:
        raise SymgradError(f"cannot resume: {path} was written by an older symgrad (format "
                           f"{meta['format']}); start a new run")
    return arrays, meta


def _settings(model, module: types.ModuleType, given: dict, saved) -> dict:
    """Every setting of the run, resolved: given values, else the resumed run's, else defaults."""
    from symgrad.models import BUILTINS

    name = _model_name(module)
    if saved is not None:
        stored = saved[1]["config"]
        out = {"schedule": None, "clip_norm": None, "threads": None, **stored,
               **{k: v for k, v in given.items() if k in RESUMABLE}}
        if out["model"] != name:
            raise SymgradError(f"cannot resume: the run trained {stored['model']}, not {name}")
        if "data" not in given and stored["data"].split(" ")[0] in FROM_PYTHON:
            raise SymgradError(f"cannot resume: the run trained on {stored['data']} passed from Python; pass "
                               "the same data again (data=...)")
        data = given.get("data", stored["data"])
        dataset = resolve(data, module.TASK, out["features"], out["target"])
        out["_dataset"], out["data"] = dataset, dataset.name if not isinstance(data, str) else data
        out["_given"] = given
        return out
    builtin = BUILTINS.get(model) if isinstance(model, str) else None
    chosen = defaults.settings(builtin.train if builtin else None, given.get("optimizer"))
    data = given.get("data", builtin.data if builtin else None)
    if data is None:
        raise SymgradError("name the data: --data NAME (a bundled data set) or --data FILE.csv|FILE.npz "
                           "(from Python also data=(X, y) or a DataFrame)")
    dataset = resolve(data, module.TASK, given.get("features"), given.get("target"))
    columns = {k: _columns_text(given.get(k)) for k in ("features", "target")}
    return {
        "model": name, "data": data if isinstance(data, str) else dataset.name,
        "features": columns["features"], "target": columns["target"],
        "val_fraction": given.get("val_fraction", 0.15), "test_fraction": given.get("test_fraction", 0.2),
        "seed": given.get("seed", 0), "optimizer": chosen["optimizer"], "lr": given.get("lr", chosen["lr"]),
        "epochs": given.get("epochs", chosen["epochs"]),
        "batch_size": given.get("batch_size", chosen["batch_size"]),
        "patience": given.get("patience"),
        "optimizer_hypers": {**chosen["optimizer_hypers"], **given.get("optimizer_hypers", {})},
        "model_hypers": dict(given.get("model_hypers", {})), "dims": dict(given.get("dims", {})),
        "dtype": given.get("dtype", "float32"), "schedule": given.get("schedule"),
        "clip_norm": given.get("clip_norm"), "threads": given.get("threads"), "_dataset": dataset,
    }


def _columns_text(spec) -> str | None:
    """Columns chosen from Python as a list, written as the command line writes them."""
    return ",".join(map(str, spec)) if isinstance(spec, (list, tuple)) else spec


def _check_same_run(stored: dict, now: dict) -> None:
    """A resumed run must be the run it was: same model, data and settings (but epochs and
    patience, which only decide when to stop, and threads)."""
    if now["spec_hash"] != stored.get("spec_hash"):
        raise SymgradError(f"cannot resume: the equations of {stored['model']} changed since the run started")
    if now["data_fingerprint"] != stored.get("data_fingerprint"):
        raise SymgradError(f"cannot resume: the data {stored['data']} changed since the run started")
    given = now.pop("_given")
    for key, value in given.items():
        if key in RESUMABLE or key == "data":
            continue
        old = stored.get(key)
        if isinstance(value, dict):
            conflict = next((k for k, v in value.items() if _effective(stored, key, k) != v), None)
            if conflict is not None:
                raise SymgradError(f"cannot resume with {key} {conflict}={value[conflict]}: the run "
                                   f"used {_effective(stored, key, conflict)} (only epochs, patience "
                                   "and threads may change)")
        elif value != old:
            raise SymgradError(f"cannot resume with {key} {value!r}: the run used {old!r} "
                               "(only epochs, patience and threads may change)")


def _effective(stored: dict, key: str, name: str):
    if key == "optimizer_hypers":
        from symgrad.training import optimizers

        return stored[key].get(name, optimizers.load(stored["optimizer"]).HYPERS.get(name))
    return stored[key].get(name)


def free_folder(parent: str, model: str, data: str) -> pathlib.Path:
    """The first `PARENT/MODEL-DATA-N` that does not exist yet (N = 1, 2, ...)."""
    stem = pathlib.Path(data).stem.split(" ")[0]
    n = 1
    while (folder := pathlib.Path(parent) / f"{model}-{stem}-{n}").exists():
        n += 1
    return folder


def _claim_run_dir(out: str | pathlib.Path | None, settings: dict) -> pathlib.Path:
    """The folder of a new run: given, or the first free `runs/MODEL-DATA-N`. One that holds
    another run is refused, so nothing of it is overwritten."""
    if out is None:
        run_dir = free_folder("runs", settings["model"], settings["data"])
    else:
        run_dir = pathlib.Path(out)
    try:
        existed = run_dir.exists()
        if existed and not run_dir.is_dir():
            raise SymgradError(f"{run_dir} is a file, not a run folder")
        taken = [f for f in RUN_FILES if (run_dir / f).exists()]
        if taken:
            raise SymgradError(f"{run_dir} holds another run ({taken[0]}); continue it with --resume "
                               f"{run_dir} or choose another --out folder")
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SymgradError(f"cannot create run folder {run_dir}: {atomic.reason(e)}") from None
    try:
        _writable(run_dir)
    except SymgradError:
        if not existed:
            _remove_if_empty(run_dir)
        raise
    return run_dir, not existed


def _writable(run_dir: pathlib.Path) -> None:
    """Refuse a run folder that cannot take files before training, not after an epoch."""
    try:
        atomic.check_writable(run_dir)
    except atomic.WriteError as e:
        raise atomic.WriteError(f"{e}; nothing was trained (choose another --out folder)") from None


def _remove_if_empty(folder: pathlib.Path) -> bool:
    try:
        folder.rmdir()
    except OSError:
        return False
    return True


def module_source(module: types.ModuleType) -> str:
    """The source text of a generated module, whether imported from a file or from memory."""
    return module.__spec__.loader.get_source(module.__name__)


# -- training and what it leaves behind -------------------------------------------------------------
def _run(trainer: Trainer, data: Prepared, settings: dict, run_dir: pathlib.Path,
         progress: bool | None, quiet: bool, sources: dict[str, str], created: bool = False) -> RunResult:
    config = trainer.config
    n_batches = -(-len(data.train) // config.batch_size)
    bar = Progress(config.epochs * n_batches, trainer.steps, config.epochs, trainer.metric, progress, quiet,
                   trainer.epoch)
    if trainer.history:
        bar.write(f"resuming {run_dir} after epoch {trainer.epoch} (step {trainer.steps})")
    if trainer.parallel is not None:
        trainer.parallel.say = bar.write
    start = time.perf_counter()

    first = True
    saved = trainer.epoch if trainer.history else None  # the epoch of the checkpoint on disk

    def on_epoch(record: EpochRecord) -> None:
        # The checkpoint first: metrics.csv is rebuilt from its history on resume, so a run
        # killed between the writes loses nothing. Every file is replaced whole (atomically).
        nonlocal first, saved
        arrays, meta = trainer.snapshot()
        checkpoint.save(run_dir / CHECKPOINT, arrays, {**meta, "config": settings})
        saved = record.epoch
        if first:
            for name, text in sources.items():  # the run loads without the model's source
                write_text(run_dir / name, text)
            write_text(run_dir / CONFIG, json.dumps(settings, indent=2, sort_keys=True) + "\n")
            first = False
        write_text(run_dir / METRICS, metrics_csv(trainer.history, trainer.metric))
        bar.epoch(record)

    def kept() -> str:
        if saved is not None:
            return f"the checkpoint of epoch {saved} stays in {run_dir / CHECKPOINT}"
        if created and _remove_if_empty(run_dir):
            return f"no checkpoint was written, so the empty run folder {run_dir} was removed"
        return f"no checkpoint was written to {run_dir}"

    try:
        trainer.fit(on_epoch, bar.step)
    except (Diverged, WorkersLost, atomic.WriteError) as e:
        raise type(e)(f"{e}; {kept()}") from None
    except KeyboardInterrupt:
        note = (f"continue with --resume {run_dir} (the checkpoint of epoch {saved} is kept)" if saved
                else f"no epoch had finished, so there is no checkpoint; {kept()}")
        raise KeyboardInterrupt(note) from None
    finally:
        bar.close()
    try:
        if trainer.history:  # epochs and patience may have grown on resume: keep config.json current
            write_text(run_dir / CONFIG, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        result = _finish(trainer, data, settings, run_dir, time.perf_counter() - start)
    except atomic.WriteError as e:
        raise atomic.WriteError(f"{e}; {kept()}: finish the run with --resume {run_dir}") from None
    if result.report:
        bar.write(result.report)
    return result


def metrics_columns(record: EpochRecord, metric: str) -> list[str]:
    """metrics.csv's columns: `train_*` and `val_*` are end-of-epoch evaluations (evaluation
    mode; the validation split also per class: `val_precision_C`, `val_recall_C`, `val_f1_C`
    for each class C, `val_f1_macro`, and `val_roc_auc` for two classes); `batch_loss` is the
    mean of the epoch's mini-batch losses in training mode; `lr` the learning rate of the
    epoch's last step; `seconds` the epoch's own time."""
    return ["epoch", "steps", "batch_loss", "train_loss", f"train_{metric}",
            *(f"val_{k}" for k in record.val), "lr", "seconds"]


def metrics_csv(history: list[EpochRecord], metric: str) -> str:
    if not history:
        return ""
    columns = metrics_columns(history[0], metric)
    return _csv_line(columns) + "".join(metrics_row(r, metric, columns) for r in history)


def metrics_row(r: EpochRecord, metric: str, columns: list[str]) -> str:
    values = {"epoch": r.epoch, "steps": r.steps, "batch_loss": repr(r.batch_loss),
              "train_loss": repr(r.train_loss), f"train_{metric}": repr(r.train[metric]),
              **{f"val_{k}": repr(v) for k, v in r.val.items()}, "lr": repr(r.lr),
              "seconds": f"{r.seconds:.4f}"}
    return _csv_line([values.get(c, "") for c in columns])


def _csv_line(cells: list) -> str:
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow(cells)
    return line.getvalue()


def _finish(trainer: Trainer, data: Prepared, settings: dict, run_dir: pathlib.Path,
            seconds: float) -> RunResult:
    params, state, metric = trainer.final_params, trainer.final_model_state, trainer.metric
    test = trainer.evaluate(data.test, params, state)
    rows = [{"epoch": r.epoch, "batch_loss": r.batch_loss, "train_loss": r.train_loss,
             f"train_{metric}": r.train[metric], "val_loss": r.val["loss"], f"val_{metric}": r.val[metric]}
            for r in trainer.history]
    title = f"{settings['model']} on {settings['data']} ({settings['optimizer']}, lr {settings['lr']:g})"
    plots.curves(rows, metric, run_dir / CURVES, title,
                 trainer.best_epoch if settings["patience"] is not None else None)
    report, extra = "", ""
    if data.task in ("binary", "multiclass"):
        guess = metrics.predicted_labels(trainer.predict(data.test, params, state), data.task)
        matrix = metrics.confusion(guess, data.test.labels, len(data.classes))
        plots.confusion(matrix, data.classes, run_dir / CONFUSION,
                        f"{title}\ntest {metric} {test[metric]:.4f}")
        report = metrics.report(test, data.classes, matrix.sum(axis=1), "test split")
        extra = f", macro F1 {test['f1_macro']:.4f}" + (
            f", ROC AUC {test['roc_auc']:.4f}" if "roc_auc" in test else "")
    epochs_run = trainer.epoch
    stopped = trainer.stopped_early and epochs_run < trainer.config.epochs
    meta = {"model": settings["model"], "spec_hash": settings["spec_hash"], "task": data.task,
            "dims": settings["dims"], "classes": data.classes,
            "epoch": trainer.best_epoch if trainer.keeps_best else epochs_run, "test": test,
            "config": settings}
    trained = TrainedModel(params, state, data.mean, data.std, data.y_mean, data.y_std, meta)
    save_model(run_dir / MODEL, trained)
    note = f"stopped early after epoch {epochs_run}, best epoch {trainer.best_epoch}" if stopped else (
        f"{epochs_run} epoch{'s' * (epochs_run != 1)}"
        + (f", best epoch {trainer.best_epoch}" if settings["patience"] else ""))
    if settings.get("shards"):
        note += f", data-parallel over {settings['shards']} shards"
    summary = (f"test {metric} {test[metric]:.4f}  (test loss {test['loss']:.4f}{extra}; {settings['model']} "
               f"on {settings['data']}, {settings['optimizer']} lr {settings['lr']:g}, batch size "
               f"{settings['batch_size']}, seed {settings['seed']}; {note}; {seconds:.1f} s; "
               f"run in {run_dir})")
    return RunResult(run_dir, metric, test, list(trainer.history), params, summary, trainer.best_epoch,
                     stopped, dict(settings), report)
