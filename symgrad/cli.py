"""The `symgrad` command: list, derive, calibrate, train, sweep, predict, evaluate, sample,
export (and doc, when documents are installed).

Every failure a user can cause ends in one line on stderr and a non-zero exit status:
2 for a malformed command line, 1 for anything else (a model with a mistake, missing data).
"""
from __future__ import annotations

import argparse
import sys
import warnings

from symgrad.symbolic.errors import SymgradError, SymgradWarning


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line, not a usage dump."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def _cmd_list(args: argparse.Namespace) -> int:
    from symgrad.models import BUILTINS
    from symgrad.training.defaults import describe

    width = max(map(len, BUILTINS))
    for name, b in BUILTINS.items():
        print(f"{name:<{width}}  {b.summary}")
        print(f"{'':<{width}}  trains on {b.data}: {describe(b.train)}")
    return 0


def _cmd_derive(args: argparse.Namespace) -> int:
    from symgrad import pipeline
    from symgrad.models import BUILTINS

    models = list(BUILTINS) if args.all else args.models
    if not models:
        raise SymgradError("name a model (see `symgrad list`), a model file, or --all")
    for spec in models:
        model = pipeline.resolve(spec)
        if args.show:
            print(pipeline.derivation(model))
        path = pipeline.write(model, args.out, args.backend, second_order=not args.first_order)
        print(f"wrote {path}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from symgrad.codegen import blas, calibration

    if args.show:
        data = calibration.cached()
        if data is None:
            print(f"not measured on this machine yet ({calibration.cache_file()}); symgrad measures it on "
                  "first use, or run `symgrad calibrate`")
        else:
            print(calibration.summary(data, calibration.cache_file()))
        print("\n".join(blas.report(measure=False)))
        return 0
    if args.repeats < 1:
        raise SymgradError(f"--repeats must be a positive integer, not {args.repeats}")
    data, path = calibration.recalibrate(args.repeats)
    print(calibration.summary(data, path))
    print("\n".join(blas.report()))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from symgrad.training.cli import run

    return run(args)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from symgrad.training.cli import run_sweep

    return run_sweep(args)


def build_parser() -> argparse.ArgumentParser:
    from symgrad.codegen.emit import BACKENDS
    from symgrad.symbolic import __version__

    parser = _Parser(prog="symgrad", description="Derive, document, generate and train neural "
                     "networks from their equations.")
    parser.add_argument("--version", action="version", version=f"symgrad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="list the built-in models and their training settings")
    p.set_defaults(run=_cmd_list)

    p = sub.add_parser("derive", help="derive a model's gradients and write its generated module")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="a built-in model name or the path of a Python file that defines `model`")
    p.add_argument("--all", action="store_true", help="every built-in model")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="elementwise engine of the generated code (default: auto, chosen per kernel)")
    p.add_argument("--out", default="generated", metavar="DIR",
                   help="folder to write MODEL.py into (default: ./generated)")
    p.add_argument("--show", action="store_true", help="also print the derivation")
    p.add_argument("--first-order", action="store_true",
                   help="leave out hvp and hessian (the second-order functions): a smaller module, "
                        "generated in about a third of the time")
    p.set_defaults(run=_cmd_derive)

    p = sub.add_parser("calibrate", help="measure where numexpr beats numpy on this machine (cached; "
                       "done on first use anyway), and say which kernels numpy's BLAS runs")
    p.add_argument("--show", action="store_true", help="print the cached measurement, measure nothing")
    p.add_argument("--repeats", type=int, default=3, help="interleaved samples per engine and size (3)")
    p.set_defaults(run=_cmd_calibrate)

    from symgrad.training.cli import add_arguments

    p = sub.add_parser("train", help="train a model with its generated module")
    add_arguments(p)
    p.set_defaults(run=_cmd_train)

    p = sub.add_parser("sweep", help="train a model at every point of a grid of settings, runs in parallel "
                       "on a Dask cluster, and rank them")
    add_arguments(p, sweep=True)
    p.set_defaults(run=_cmd_sweep)

    from symgrad.training.predict import add_commands

    add_commands(sub)
    from symgrad.training.export import FORMATS, export_command

    p = sub.add_parser("export", help="write a trained run's parameters for another framework (PyTorch)")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the folder of a finished run")
    p.add_argument("--format", choices=FORMATS, default="torch",
                   help="torch: a state_dict saved with torch.save")
    p.add_argument("--out", metavar="FILE", help="where to write it (default: RUN_DIR/model.pt)")
    p.set_defaults(run=export_command)

    try:
        from symgrad.documents.cli import add_doc_command
    except ImportError:  # documents are optional
        pass
    else:
        add_doc_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", SymgradWarning)
            warnings.showwarning = _show_warning
            return args.run(args)
    except SymgradError as e:
        print(f"symgrad {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"symgrad {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the file system refused (disk full, a name too long): say which file
        where = f" {e.filename}" if e.filename else ""
        print(f"symgrad {args.command}: error: cannot use{where}: {e.strerror or e}", file=sys.stderr)
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"symgrad: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
