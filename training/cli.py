"""`symgrad train`: the command line of `training.run.train`, flag for argument.

Every flag defaults to None (not given), so that defaults come from one place
(`training.run`) and a resumed run can tell a flag that was given from one that was not.
"""
from __future__ import annotations

import argparse
import sys


def _dim(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=POSITIVE_INT, got {text!r}")
    return name, int(value)


def _hyper(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r} (no '=' and value)"
                                         if not sep else f"expected NAME=NUMBER, got {text!r} (no name)")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """`symgrad train`'s flags; `sweep`: those of `symgrad sweep` (no --resume, no --steps,
    --out names the sweep's folder, and --grid and --rank-by besides)."""
    from symgrad.training.data import BUNDLED
    from symgrad.training.defaults import FALLBACK
    from symgrad.training.optimizers import CHOICES
    from symgrad.training.schedules import SYNTAX

    own = "default: the model's own (`symgrad list`)"
    p.add_argument("model", metavar="MODEL", help="a built-in model name or a model file (a .py file that "
                   "assigns a symgrad Model to `model` or defines build_model())")
    d = p.add_argument_group("data")
    d.add_argument("--data", metavar="NAME|FILE",
                   help=f"a bundled data set ({', '.join(BUNDLED)}; ring for a GAN) or a .csv/.npz "
                   f"file; {own}")
    d.add_argument("--features", metavar="COLS",
                   help="feature columns of a CSV/NPZ file: names, indices, START:STOP ranges, "
                   "comma-separated (NPZ: an array name); default: all but the target")
    d.add_argument("--target", metavar="COLS",
                   help="target column(s) of a CSV/NPZ file (NPZ: an array name); default: the last")
    d.add_argument("--val-fraction", type=float, metavar="F", help="share of rows for validation (0.15)")
    d.add_argument("--test-fraction", type=float, metavar="F", help="share of rows for the test (0.2)")
    t = p.add_argument_group("training")
    t.add_argument("--optimizer", choices=list(CHOICES),
                   help=f"update rule ({own}; {FALLBACK['optimizer']} for a model file); newton, "
                   "newton-cg and lbfgs take one full-batch step an epoch")
    t.add_argument("--lr", type=float, help="learning rate (default: the model's own with its optimizer, "
                   "else the optimizer's recommended rate)")
    t.add_argument("--epochs", type=int, help=f"passes over the training split ({own}; "
                   f"{FALLBACK['epochs']} for a model file)")
    if not sweep:
        t.add_argument("--steps", type=int, help="alternating updates of a GAN (its models train in steps; "
                       "default 12000)")
    t.add_argument("--batch-size", type=int, help="rows per mini-batch, the last one may be smaller "
                   f"({own}; {FALLBACK['batch_size']} for a model file)")
    t.add_argument("--seed", type=int, help="seed of initialisation, splits and shuffling (default 0)")
    t.add_argument("--patience", type=int, metavar="N",
                   help="stop after N epochs without a lower validation loss; keep the best epoch")
    t.add_argument("--opt", type=_hyper, action="append", metavar="NAME=VALUE",
                   help="an optimizer hyper-parameter, e.g. --opt mu=0.95")
    t.add_argument("--hyper", type=_hyper, action="append", metavar="NAME=VALUE",
                   help="a hyper-parameter of the model's equations")
    t.add_argument("--dim", type=_dim, action="append", metavar="NAME=N",
                   help="size of a model dim, e.g. --dim n_h1=256")
    t.add_argument("--dtype", choices=("float32", "float64"), help="float type of training (float32)")
    t.add_argument("--schedule", metavar="SPEC",
                   help=f"learning-rate schedule: {SYNTAX} (default: constant)")
    t.add_argument("--clip-norm", type=float, metavar="X",
                   help="rescale the gradients when their global L2 norm exceeds X")
    t.add_argument("--threads", type=int, metavar="N",
                   help="BLAS and numexpr threads while training (default: the libraries' own, "
                   "usually one per core)")
    t.add_argument("--sparse-labels", action="store_true",
                   help="a built-in classifier trains on integer class labels with the sparse softmax "
                   "cross-entropy (its variant NAME_sparse; no one-hot targets)")
    g = p.add_argument_group("regularisation (a built-in MLP without the term trains its variant with it)")
    g.add_argument("--l1", type=float, metavar="X", help="coefficient of the L1 penalty on the weights")
    g.add_argument("--l2", type=float, metavar="X", help="coefficient of the L2 penalty on the weights")
    g.add_argument("--dropout", type=float, metavar="P", help="dropout rate after each hidden layer")
    c = p.add_argument_group("Dask cluster (pip install 'symgrad[distributed]')")
    place = c.add_mutually_exclusive_group()
    place.add_argument("--workers", type=int, metavar="N",
                       help="runs at once: N worker processes of a local cluster started for the sweep "
                       "(default: one per core)" if sweep else "data-parallel training: each step's batch "
                       "split over N worker processes of a local cluster started for the run")
    place.add_argument("--scheduler", metavar="ADDRESS",
                       help="use the running Dask cluster at ADDRESS (tcp://host:8786) instead"
                       + ("" if sweep else ", one shard per worker"))
    if sweep:
        s = p.add_argument_group("sweep")
        s.add_argument("--grid", required=True, metavar="SPEC",
                       help="settings and their values, e.g. \"lr=1e-3,3e-3 seed=0,1\": one run per "
                       "combination (settings: lr, seed, epochs, batch_size, optimizer, patience, l1, l2, "
                       "dropout, clip_norm, dtype, schedule, dim.NAME, hyper.NAME, opt.NAME)")
        s.add_argument("--rank-by", default="val_loss", metavar="COLUMN",
                       help="leaderboard order: val_loss (default), val_accuracy, val_r2, best_val_loss, ...")
    r = p.add_argument_group("sweep folder" if sweep else "run folder")
    if sweep:
        r.add_argument("--out", metavar="SWEEP_DIR",
                       help="folder for the runs' folders, leaderboard.csv, validation.png and sweep.json "
                       "(default: a fresh sweeps/MODEL-DATA-N); the same command again continues it")
    else:
        r.add_argument("--out", metavar="RUN_DIR",
                       help="folder for metrics.csv, checkpoint.npz, model.npz and plots "
                       "(default: a fresh runs/MODEL-DATA-N)")
        r.add_argument("--resume", metavar="RUN_DIR",
                       help="continue the run in RUN_DIR exactly where its last checkpoint left it "
                       "(only --epochs and --patience may differ)")
    r.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar on stderr (default: when stderr is a terminal)")
    r.add_argument("--quiet", action="store_true",
                   help="print only the best run's line" if sweep else
                   "print only the summary line (no epoch lines, no bar, no per-class table)")


def run(args: argparse.Namespace) -> int:
    from symgrad.training.run import train

    try:
        result = train(
            args.model, args.data, optimizer=args.optimizer, lr=args.lr, epochs=args.epochs,
            batch_size=args.batch_size, seed=args.seed, patience=args.patience, features=args.features,
            target=args.target, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
            optimizer_hypers=dict(args.opt or []), model_hypers=dict(args.hyper or []),
            dims=dict(args.dim or []), dtype=args.dtype, out=args.out, resume=args.resume,
            progress=args.progress, quiet=args.quiet, l1=args.l1, l2=args.l2, dropout=args.dropout,
            schedule=args.schedule, clip_norm=args.clip_norm, threads=args.threads, steps=args.steps,
            sparse_labels=args.sparse_labels, workers=args.workers, scheduler=args.scheduler)
    except KeyboardInterrupt as e:
        note = f": {e}" if str(e) else ""
        print(f"symgrad train: interrupted{note}", file=sys.stderr)
        return 130
    print(result.summary, flush=True)  # the last line, even with --quiet
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from symgrad.training.sweep import sweep

    try:
        board = sweep(
            args.model, args.grid, args.data, workers=args.workers, scheduler=args.scheduler, out=args.out,
            rank_by=args.rank_by, progress=args.progress, quiet=args.quiet, optimizer=args.optimizer,
            lr=args.lr,
            epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, patience=args.patience,
            features=args.features, target=args.target, val_fraction=args.val_fraction,
            test_fraction=args.test_fraction, optimizer_hypers=dict(args.opt or []),
            model_hypers=dict(args.hyper or []), dims=dict(args.dim or []), dtype=args.dtype, l1=args.l1,
            l2=args.l2, dropout=args.dropout, schedule=args.schedule, clip_norm=args.clip_norm,
            threads=args.threads, sparse_labels=args.sparse_labels or None)
    except KeyboardInterrupt:
        print("symgrad sweep: interrupted (the same command continues each run from its checkpoint)",
              file=sys.stderr)
        return 130
    if board.best is None:
        table = board.sweep_dir / "leaderboard.csv"
        print(f"symgrad sweep: error: no run finished; the reasons are in {table}", file=sys.stderr)
        return 1
    if args.quiet:
        print(f"best run: {board.sweep_dir / board.best['run']}", flush=True)
    return 0
