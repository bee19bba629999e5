"""Benchmark: the matrix products of bench/models.py's passes under each OpenBLAS kernel set.

numpy's wheels carry an OpenBLAS built for many CPUs (DYNAMIC_ARCH) that picks its kernels once,
when it loads, from the CPU it detects; the environment variable `OPENBLAS_CORETYPE` overrides
the choice. A CPU newer than the OpenBLAS release can get older kernels than it could run: on
this project's machine (AMD EPYC, family 26, with AVX-512) OpenBLAS 0.3.31 picks `Haswell`
(AVX2). This script times the bare products of each `models.py` case (its `products`), float32
and float64, in a child process per kernel set (the choice cannot change once OpenBLAS is
loaded), children taking turns over `--repeats` rounds so that the machine's changing load
reaches every kernel set alike, and prints each set's median as a multiple of the default's.

    python bench/blas_core.py                      # the default, Haswell and SkylakeX kernels
    python bench/blas_core.py --cores default SkylakeX SapphireRapids --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
DEFAULT = "default"  # OPENBLAS_CORETYPE left as the caller's environment has it


def child(rounds: int) -> None:
    """Time the products of every case in this process's OpenBLAS; one JSON line per case."""
    import models
    import numpy as np
    from timing import measure

    import symgrad

    try:
        import threadpoolctl

        kernels = threadpoolctl.threadpool_info()[0].get("architecture", "?")
    except (ImportError, IndexError):
        kernels = "?"
    for case, (_, build, dims, n) in models.CASES.items():
        module = symgrad.load_module(build())
        for dtype in models.DTYPES:
            params = module.init_params(dims, seed=0, dtype=dtype)
            X = models.batch_for(module, dims, n, dtype)["X"]
            samples, _ = measure({"products": models.products(case, params, X)}, rounds)
            print(json.dumps({"case": case, "dtype": np.dtype(dtype).name, "kernels": kernels,
                              "median_us": statistics.median(samples["products"]) * 1e6}), flush=True)


def run_child(core: str, rounds: int) -> list[dict]:
    env = dict(os.environ)
    if core != DEFAULT:
        env["OPENBLAS_CORETYPE"] = core
    out = subprocess.run([sys.executable, __file__, "--child", "--rounds", str(rounds)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", nargs="+", default=[DEFAULT, "Haswell", "SkylakeX"],
                        help="OPENBLAS_CORETYPE values to compare ('default': leave it unset)")
    parser.add_argument("--repeats", type=int, default=3, help="child processes per kernel set (default 3)")
    parser.add_argument("--rounds", type=int, default=10, help="samples per case in a child (default 10)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.rounds)
        return 0
    medians: dict[tuple[str, str], dict[str, list[float]]] = {}
    kernels: dict[str, str] = {}
    for _ in range(args.repeats):
        for core in args.cores:
            for row in run_child(core, args.rounds):
                per_core = medians.setdefault((row["case"], row["dtype"]), {})
                per_core.setdefault(core, []).append(row["median_us"])
                kernels[core] = row["kernels"]
    print("OPENBLAS_CORETYPE -> kernels OpenBLAS reports: "
          + ", ".join(f"{core} -> {kernels[core]}" for core in args.cores))
    print("the products of one loss_and_grad (median of the children's medians, us; x the first)")
    print(f"  {'case':<8} {'dtype':<8}" + "".join(f" {core:>16}" for core in args.cores))
    for (case, dtype), per_core in medians.items():
        first = statistics.median(per_core[args.cores[0]])
        cells = []
        for core in args.cores:
            m = statistics.median(per_core[core])
            cells.append(f" {m:>9.0f} {m / first:>5.2f}x")
        print(f"  {case:<8} {dtype:<8}" + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
