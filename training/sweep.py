"""Hyper-parameter sweeps: every point of a grid trained as one ordinary run, as a Dask task.

    from symgrad.training.sweep import sweep
    board = sweep("mlp_tanh", grid={"lr": [1e-3, 3e-3], "seed": [0, 1]}, workers=2, out="sweeps/lr")
    board.best["run"], board.rows[0]["test_accuracy"]

A point's run folder (`SWEEP_DIR/lr=0.001_seed=0`) is what `symgrad train` with the same
flags writes: each task calls `training.run.train` itself, on a worker with one BLAS thread.
A task whose worker died is started again by Dask and resumes its run from the last
checkpoint (exact, see `training.run`); running the same sweep into the same folder again
continues each run the same way. A run that diverges or fails is a row of the leaderboard
with its reason, not the end of the sweep.

SWEEP_DIR also gets `leaderboard.csv` (one row per run, the best first), `validation.png`
(every run's validation curves) and `sweep.json` (the grid, the fixed settings and the best
run's folder).
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import pathlib
import re
import sys
import time
import types
import warnings
from dataclasses import dataclass

from symgrad.codegen import calibration
from symgrad.codegen.atomic import write_text
from symgrad.symbolic.errors import SymgradError, SymgradWarning

LEADERBOARD, CURVES, SUMMARY = "leaderboard.csv", "validation.png", "sweep.json"
# grid keys: train()'s setting -> the type of its values; dim.N, hyper.N, opt.N name one entry
# of dims, model_hypers and optimizer_hypers
SETTINGS = {"lr": float, "seed": int, "epochs": int, "batch_size": int, "optimizer": str, "patience": int,
            "l1": float, "l2": float, "dropout": float, "clip_norm": float, "dtype": str, "schedule": str}
ENTRIES = {"dim": ("dims", int), "hyper": ("model_hypers", float), "opt": ("optimizer_hypers", float)}
_SAFE = re.compile(r"[^A-Za-z0-9.+\-]")


@dataclass
class Leaderboard:
    """The runs of a sweep, the best first (`rank_by`: lowest loss, highest accuracy or r2)."""

    rows: list[dict]  # one per run: run, status, the grid's settings, then the figures
    columns: list[str]
    rank_by: str
    sweep_dir: pathlib.Path

    @property
    def best(self) -> dict | None:
        """The best finished run's row (None when every run failed)."""
        return next((r for r in self.rows if r["status"] == "finished"), None)

    def csv(self) -> str:
        text = io.StringIO()
        writer = csv.DictWriter(text, self.columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in r.items()} for r in self.rows)
        return text.getvalue()


def parse_grid(spec: str) -> dict[str, list]:
    """`"lr=1e-3,3e-3 seed=0,1"` -> {"lr": [0.001, 0.003], "seed": [0, 1]}."""
    grid: dict[str, list] = {}
    for part in spec.split():
        key, sep, values = part.partition("=")
        if not sep or not values:
            raise SymgradError(f"--grid: expected NAME=V1,V2,... , got {part!r}")
        key = key.replace("-", "_")
        if key in grid:
            raise SymgradError(f"--grid names {key} twice")
        grid[key] = values.split(",")
    return check_grid(grid)


def check_grid(grid: dict) -> dict[str, list]:
    """The grid with every value converted to its setting's type; one line for a mistake."""
    if not isinstance(grid, dict) or not grid:
        raise SymgradError("the grid is empty: give at least one setting and its values, e.g. lr=1e-3,3e-3")
    out = {}
    for key, values in grid.items():
        kind = _kind(key)
        values = list(values) if isinstance(values, (list, tuple, range)) else [values]
        if not values:
            raise SymgradError(f"grid setting {key} has no values")
        converted = [_convert(key, kind, v) for v in values]
        if len(set(map(repr, converted))) != len(converted):
            raise SymgradError(f"grid setting {key} lists a value twice: {values}")
        out[key] = converted
    return out


def _kind(key: str) -> type:
    head, dot, name = key.partition(".")
    if dot and head in ENTRIES and name.isidentifier():
        return ENTRIES[head][1]
    if key in SETTINGS:
        return SETTINGS[key]
    known = ", ".join([*SETTINGS, *(f"{k}.NAME" for k in ENTRIES)])
    raise SymgradError(f"cannot sweep {key!r}; the grid takes {known}")


def _convert(key: str, kind: type, value):
    try:
        if kind is int:
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        return float(value) if kind is float else str(value)
    except (TypeError, ValueError):
        raise SymgradError(f"grid setting {key} takes {kind.__name__} values, not {value!r}") from None


def points(grid: dict[str, list]) -> list[dict]:
    """Every combination, the first key varying slowest (as nested loops would)."""
    return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]


def run_name(point: dict) -> str:
    """A point's folder name: `lr=0.001_seed=0`."""
    return "_".join(f"{k}={_SAFE.sub('-', _text(v))}" for k, v in point.items())


def _text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_settings(base: dict, point: dict) -> dict:
    """train()'s keyword arguments for one point: the fixed ones with the point's on top."""
    kwargs = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in point.items():
        head, dot, name = key.partition(".")
        if dot:
            table = ENTRIES[head][0]
            kwargs[table] = {**(kwargs.get(table) or {}), name: value}
        else:
            kwargs[key] = value
    return kwargs


# -- on a worker ------------------------------------------------------------------------------------
def run_point(model, kwargs: dict, run_dir: str, machine: dict) -> dict:
    """Train one point into `run_dir` (resuming it when it holds a checkpoint: a retry after a
    lost worker, or a sweep run again) and return its figures. Runs on a Dask worker, with the
    sweeping process's calibration (`machine`)."""
    from symgrad.training.cluster import prepare_worker
    from symgrad.training.loop import Diverged
    from symgrad.training.run import CHECKPOINT, train

    prepare_worker(machine)
    folder = pathlib.Path(run_dir)
    model = _model(model)
    start = time.perf_counter()
    resumed = (folder / CHECKPOINT).is_file()
    earlier = _seconds_before(folder / CHECKPOINT) if resumed else 0.0
    place = {"resume": folder} if resumed else {"out": folder}
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:  # said once by the caller, not per worker
            warnings.simplefilter("always", SymgradWarning)
            result = train(model, quiet=True, progress=False, **place, **kwargs)
    except SymgradError as e:
        return {"status": "diverged" if isinstance(e, Diverged) else "failed", "error": str(e),
                "seconds": earlier + time.perf_counter() - start,
                "warnings": [str(w.message) for w in caught]}
    history = result.history
    kept = result.best_epoch if result.config.get("patience") is not None and result.best_epoch else (
        history[-1].epoch if history else 0)
    best = next(r for r in history if r.epoch == result.best_epoch) if result.best_epoch else None
    final = next(r for r in history if r.epoch == kept) if kept else None
    metric = result.metric
    return {"status": "finished", "metric": metric, "epochs": history[-1].epoch if history else 0,
            "best_epoch": result.best_epoch, "kept_epoch": kept,
            "best_val_loss": best.val["loss"] if best else None,
            f"best_val_{metric}": best.val[metric] if best else None,
            "val_loss": final.val["loss"] if final else None,
            f"val_{metric}": final.val[metric] if final else None,
            "test_loss": result.test["loss"], f"test_{metric}": result.test[metric],
            "seconds": earlier + time.perf_counter() - start,
            "curve": [(r.epoch, r.val["loss"], r.val[metric]) for r in history], "resumed": resumed,
            "summary": result.summary, "warnings": [str(w.message) for w in caught]}


def _seconds_before(path: pathlib.Path) -> float:
    """The training seconds of the epochs a checkpoint holds (the attempts before a restart)."""
    from symgrad.training import checkpoint

    try:
        return sum(r["seconds"] for r in checkpoint.load(path)[1].get("history", []))
    except SymgradError:
        return 0.0


def _model(model):
    """A model as the task received it: a generated module travels as its source."""
    if isinstance(model, tuple) and model and model[0] == "module-source":
        from symgrad.pipeline import import_source

        return import_source(model[2], model[1])
    return model


def _shippable(model):
    """What a task can carry of `model`: a name, a file path or a Model as they are; a module
    (not picklable) as its source text."""
    if isinstance(model, types.ModuleType):
        name = model.__name__.split(".")[-1].removeprefix("symgrad_generated_")
        from symgrad.training.run import module_source

        return ("module-source", name, module_source(model))
    if isinstance(model, pathlib.PurePath):
        return str(model)
    return model


# -- on the caller's side ---------------------------------------------------------------------------
def sweep(model, grid: dict | str, data=None, *, workers: int | None = None, scheduler: str | None = None,
          out: str | pathlib.Path | None = None, rank_by: str = "val_loss", progress: bool | None = None,
          quiet: bool = False, **settings) -> Leaderboard:
    """Train `model` at every point of `grid` ({"lr": [1e-3, 3e-3], "seed": [0, 1]}, or the
    command line's "lr=1e-3,3e-3 seed=0,1") on a Dask cluster (a local one of `workers`
    processes by default, else the running one at `scheduler`) and return the leaderboard.
    Every other keyword is a `train` setting shared by all runs (data, epochs, dims, ...).
    `rank_by`: a validation column, val_loss (default), val_accuracy, best_val_loss, ..."""
    from symgrad.training.cluster import check_placement, connect

    grid = parse_grid(grid) if isinstance(grid, str) else check_grid(grid)
    check_placement(workers, scheduler)
    for key in ("out", "resume", "steps", "progress", "quiet"):
        if key in settings:
            raise SymgradError(f"{key} is not a setting a sweep passes on to its runs")
    unknown = set(settings) - set(_TRAIN_SETTINGS)
    if unknown:
        raise SymgradError(f"sweep() got an unknown setting {sorted(unknown)[0]!r}")
    clash = [k for k in grid if k in settings and settings[k] is not None]
    if clash:
        raise SymgradError(f"{clash[0]} is both fixed and in the grid; give it once")
    base = {k: v for k, v in settings.items() if v is not None and v != {}}
    if data is not None:
        base["data"] = data
    metric_hint = _rank_check(rank_by)
    _check_model(model)
    sweep_dir = _sweep_dir(out, model, base)
    todo = points(grid)
    names = [run_name(p) for p in todo]
    shipped = _shippable(model)
    machine = calibration.current()  # what `symgrad train` here would use, sent to every run
    start = time.perf_counter()
    with connect(workers, scheduler) as client:
        if base.get("data") is not None and not isinstance(base["data"], (str, pathlib.PurePath)):
            base["data"] = client.scatter([base["data"]], broadcast=True)[0]  # sent once, not per run
        elif isinstance(base.get("data"), pathlib.PurePath):
            base["data"] = str(base["data"])
        futures = {client.submit(run_point, shipped, run_settings(base, p), str(sweep_dir / n), machine,
                                 key=f"symgrad-run-{n}-{time.time_ns()}", pure=False): (p, n)
                   for p, n in zip(todo, names, strict=True)}
        outcome = _collect(client, futures, progress, quiet)
    rows = [{"run": n, **_status_cells(outcome[n]), **p, **_figures(outcome[n])}
            for p, n in zip(todo, names, strict=True)]
    for message in dict.fromkeys(w for r in outcome.values() for w in r.get("warnings", [])):
        warnings.warn(SymgradWarning(message), stacklevel=2)
    board = _rank(rows, grid, rank_by, metric_hint, sweep_dir)
    _write(board, grid, base, model, outcome, time.perf_counter() - start)
    if not quiet:
        best = board.best
        print(f"best run: {sweep_dir / best['run']} ({rank_by} {best[rank_by]:.4f})" if best else
              "no run finished", flush=True)
    return board


_TRAIN_SETTINGS = ("optimizer", "lr", "epochs", "batch_size", "seed", "patience", "features", "target",
                   "val_fraction", "test_fraction", "optimizer_hypers", "model_hypers", "dims", "dtype",
                   "l1", "l2", "dropout", "schedule", "clip_norm", "threads", "sparse_labels")


def _check_model(model) -> None:
    """A sweep compares runs by their validation figures: a GAN (no validation split) is refused
    here, and a model that does not load fails before any worker starts."""
    from symgrad.training.run import _load_module

    if isinstance(model, tuple):
        return
    module = _load_module(model)
    if getattr(module, "OBJECTIVES", None):
        raise SymgradError("a sweep compares runs on a validation split; GAN training has none")


def _sweep_dir(out, model, base) -> pathlib.Path:
    from symgrad.training.run import free_folder

    data = base.get("data")
    folder = pathlib.Path(out) if out is not None else free_folder(
        "sweeps", pathlib.Path(_model_label(model)).stem, data if isinstance(data, str) else "data")
    if folder.exists() and not folder.is_dir():
        raise SymgradError(f"{folder} is a file, not a sweep folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SymgradError(f"cannot create sweep folder {folder}: {e.strerror}") from None
    return folder.resolve()


def _rank_check(rank_by: str) -> str:
    allowed = re.fullmatch(r"(best_)?val_(loss|accuracy|r2|nll)", rank_by or "")
    if not allowed:
        raise SymgradError("rank by a validation column (val_loss, val_accuracy, val_r2, best_val_loss, "
                           f"...), not {rank_by!r}")
    return allowed.group(2)


def _collect(client, futures: dict, progress: bool | None, quiet: bool) -> dict[str, dict]:
    """Each run's figures as it finishes: one bar over runs, one line per finished run."""
    from distributed import as_completed

    bar = _bar(len(futures), progress, quiet)
    outcome: dict[str, dict] = {}
    def say(line: str) -> None:
        if quiet:
            return
        if bar is not None:
            bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    try:
        for future in as_completed(futures):
            point, name = futures[future]
            try:
                result = future.result()
            except Exception as e:  # the task itself failed after Dask's retries (KilledWorker, ...)
                result = {"status": "failed", "error": f"{type(e).__name__}: {e}", "seconds": None}
            outcome[name] = result
            say(f"run {len(outcome)}/{len(futures)} {name}: {_line(result)}")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return outcome


def _bar(total: int, progress: bool | None, quiet: bool):
    if quiet or not (sys.stderr.isatty() if progress is None else progress):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - the train extra installs it
        return None
    return tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True, leave=False, desc="sweep")


def _line(result: dict) -> str:
    if result["status"] != "finished":
        return f"{result['status']}: {result['error']}"
    m = result["metric"]
    again = ", resumed from its checkpoint" if result["resumed"] else ""
    return (f"val loss {result['val_loss']:.4f}  val {m} {result[f'val_{m}']:.4f}  test {m} "
            f"{result[f'test_{m}']:.4f}  (best epoch {result['best_epoch']} of {result['epochs']}; "
            f"{result['seconds']:.1f} s{again})")


def _status_cells(result: dict) -> dict:
    return {"status": result["status"], "error": result.get("error", "")}


def _figures(result: dict) -> dict:
    skip = {"status", "error", "metric", "curve", "resumed", "summary", "warnings", "kept_epoch"}
    return {k: v for k, v in result.items() if k not in skip}


def _rank(rows: list[dict], grid: dict, rank_by: str, metric_hint: str, sweep_dir) -> Leaderboard:
    metrics = sorted({k.removeprefix("test_") for r in rows for k in r if k.startswith("test_")} - {"loss"})
    metric = metrics[0] if metrics else metric_hint
    columns = ["run", "status", *grid, "best_epoch", "epochs", "best_val_loss", f"best_val_{metric}",
               "val_loss", f"val_{metric}", "test_loss", f"test_{metric}", "seconds", "error"]
    finished = [r for r in rows if r["status"] == "finished"]
    if finished and rank_by not in finished[0]:
        raise SymgradError(f"cannot rank by {rank_by}: these runs measure {metric} (rank by val_loss or "
                           f"val_{metric})")
    lower_better = rank_by.endswith(("loss", "nll"))
    finished.sort(key=lambda r: r[rank_by] if lower_better else -r[rank_by])
    rest = [r for r in rows if r["status"] != "finished"]
    return Leaderboard(finished + rest, columns, rank_by, sweep_dir)


def _write(board: Leaderboard, grid: dict, base: dict, model, outcome: dict, seconds: float) -> None:
    from symgrad.training import plots

    folder = board.sweep_dir
    write_text(folder / LEADERBOARD, board.csv())
    curves = {name: result["curve"] for name, result in outcome.items() if result["status"] == "finished"}
    best = board.best
    if curves:
        metric = next(r["metric"] for r in outcome.values() if r["status"] == "finished")
        plots.sweep_curves(curves, metric, folder / CURVES, best["run"] if best else None,
                           title=f"{_model_label(model)}: validation curves of {len(outcome)} runs")
    fixed = {k: (v if isinstance(v, (str, int, float, dict, list, type(None))) else type(v).__name__)
             for k, v in base.items()}
    summary = {"model": _model_label(model), "grid": grid, "fixed": fixed, "rank_by": board.rank_by,
               "best": best["run"] if best else None, "runs": [r["run"] for r in board.rows],
               "seconds": round(seconds, 3)}
    write_text(folder / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")


def _model_label(model) -> str:
    if isinstance(model, str):
        return model
    if isinstance(model, types.ModuleType):
        return model.__name__.split(".")[-1]
    return getattr(model, "name", type(model).__name__)


def _cell(value):
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else value
