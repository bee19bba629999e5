"""Benchmark: the matrix products of bench/models.py's passes under each OpenBLAS kernel set.

numpy's wheels carry an OpenBLAS built for many CPUs (DYNAMIC_ARCH) that picks its kernels once,
when it loads, from the CPU it detects, unless the environment variable `OPENBLAS_CORETYPE`
names a kernel set. This project's machine sets `OPENBLAS_CORETYPE=Haswell` in its environment:
its CPU (AMD EPYC, family 26, AVX-512) would get the SkylakeX (AVX-512) kernels from OpenBLAS
0.3.31 otherwise, and gets the Haswell (AVX2) ones. This script times the bare products of each
`models.py` case (its `products`), float32 and float64, in a child process per kernel set (the
choice cannot change once OpenBLAS is loaded), children taking turns over `--repeats` rounds so
that the machine's changing load reaches every set alike, and prints each set's median as a
multiple of the first's. A set is `env` (as this environment has it), `unset` (OpenBLAS detects
the CPU) or an OpenBLAS name (`Haswell`, `SkylakeX`, `SapphireRapids`, ...).

    python bench/blas_core.py                      # env, unset
    SYMGRAD_BENCH_CLOCK=cpu OPENBLAS_NUM_THREADS=1 python bench/blas_core.py --cores env unset Haswell
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
ENV, UNSET = "env", "unset"  # OPENBLAS_CORETYPE as this environment has it; removed


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
    if core == UNSET:
        env.pop("OPENBLAS_CORETYPE", None)
    elif core != ENV:
        env["OPENBLAS_CORETYPE"] = core
    out = subprocess.run([sys.executable, __file__, "--child", "--rounds", str(rounds)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", nargs="+", default=[ENV, UNSET],
                        help="kernel sets to compare: env (as the environment has OPENBLAS_CORETYPE), "
                             "unset (OpenBLAS detects the CPU) or an OPENBLAS_CORETYPE value")
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
    here = os.environ.get("OPENBLAS_CORETYPE", "(unset)")
    print(f"OPENBLAS_CORETYPE here: {here}; the kernels OpenBLAS reports: "
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
