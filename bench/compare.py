"""Benchmark: the tanh MLP's `loss_and_grad` of several generated module files in one
interleaved run, each against the matrix products alone (as np.matmul and as a.dot, like
bench/run.py): a before/after of a code-generator change under the same machine load.

The committed module of any revision serves as "before":

    git show 6bdd563:generated/mlp_tanh.py > /tmp/mlp_before.py
    python bench/compare.py /tmp/mlp_before.py generated/mlp_tanh.py            # 64-32-32-10, b32
    python bench/compare.py --large /tmp/mlp_before.py generated/mlp_tanh.py    # 784-256-256-10, b128

Each file must define the `mlp_tanh` contract (`init_params`, `loss_and_grad`); their losses
and gradients are checked against the first file's before anything is timed. Timing and table
as in bench/run.py (bench/timing.py; `SYMGRAD_BENCH_CLOCK=cpu` on a loaded machine).

`--case cnn8|cnn28|lstm` compares modules of a bench/models.py case instead, against that
case's products alone; `--generate FILE` writes this checkout's module of the case (backend
auto), so a revision's module is one command in a checkout of it:

    python bench/compare.py --case cnn28 --generate /tmp/cnn28_after.py
    git stash; python bench/compare.py --case cnn28 --generate /tmp/cnn28_before.py; git stash pop
    python bench/compare.py --case cnn28 /tmp/cnn28_before.py /tmp/cnn28_after.py
"""
from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import models  # noqa: E402
import numpy as np  # noqa: E402
from run import CONFIGS, DTYPES, activations, batch_for, matmuls_only, with_biases  # noqa: E402
from symgrad.codegen.atomic import write_text  # noqa: E402
from timing import check_gradients, measure, table  # noqa: E402

from symgrad.pipeline import import_source, source  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", type=pathlib.Path, help="generated module files")
    parser.add_argument("--large", action="store_true",
                        help="784-256-256-10 at batch 128 (default: 64-32-32-10 at batch 32)")
    parser.add_argument("--case", choices=("mlp", *models.CASES), default="mlp",
                        help="the tanh MLP (default) or a bench/models.py case")
    parser.add_argument("--generate", metavar="FILE", type=pathlib.Path,
                        help="write this checkout's module of --case (backend auto) to FILE and stop")
    parser.add_argument("--rounds", type=int, default=40, help="samples per variant (default 40)")
    args = parser.parse_args(argv)
    if args.generate:
        if args.case == "mlp":
            parser.error("--generate needs a bench/models.py --case (the MLP: generated/mlp_tanh.py)")
        write_text(args.generate, source(models.CASES[args.case][1]()))
        return 0
    if not args.modules:
        parser.error("give the module files to compare")
    modules = {}
    for k, path in enumerate(args.modules):
        name = f"{k + 1}: {path.name}"[:22]
        modules[name] = import_source(path.read_text(), f"bench_compare_{k + 1}")
    if args.case != "mlp":
        return _compare_case(args.case, modules, args.rounds)
    label, dims, n = CONFIGS[0 if args.large else 1]
    for dtype in DTYPES:
        first = next(iter(modules.values()))
        params = with_biases(first.init_params(dims, seed=0, dtype=dtype))
        batch = batch_for(dims, n, dtype)
        reference = first.loss_and_grad(params, batch)
        for name, module in modules.items():
            check_gradients(reference, module.loss_and_grad(params, batch), name)
        X, Y = batch["X"], batch["Y"]
        variants = {k: (lambda m=m, p=params, b=batch: m.loss_and_grad(p, b)) for k, m in modules.items()}
        act = activations(params, X, Y)
        variants["matmuls only"] = matmuls_only(params, X, act)
        variants["dot products only"] = matmuls_only(params, X, act, dot=True)
        samples, faults = measure(variants, args.rounds)
        table(f"MLP {label}, batch {n}, {np.dtype(dtype).name}: one loss_and_grad", samples, faults,
              {"matmuls only": "x matmuls", "dot products only": "x dot"})
    return 0


def _compare_case(case: str, modules: dict, rounds: int) -> int:
    """The modules of a bench/models.py case, each against the case's products alone."""
    title, _, dims, n = models.CASES[case]
    for dtype in models.DTYPES:
        first = next(iter(modules.values()))
        params = first.init_params(dims, seed=0, dtype=dtype)
        batch = models.batch_for(first, dims, n, dtype)
        reference = first.loss_and_grad(params, batch)
        tol = 1e-3 if dtype == np.float32 else 1e-8
        for name, module in modules.items():
            check_gradients(reference, module.loss_and_grad(params, batch), name, tol=tol)
        variants = {k: (lambda m=m, p=params, b=batch: m.loss_and_grad(p, b)) for k, m in modules.items()}
        variants["matmuls only"] = models.products(case, params, batch["X"])
        samples, faults = measure(variants, rounds)
        table(f"{title}, {np.dtype(dtype).name}: one loss_and_grad", samples, faults,
              {"matmuls only": "x matmuls"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
