"""Benchmark: what the numba backend's compilation costs, the first time and the next.

For the tanh MLP and each model of bench/models.py, two fresh processes in turn load the
numba module (`symgrad.load_module(model, "numba")`) into an empty cache folder
($SYMGRAD_CACHE_DIR) and time its first `loss_and_grad` in float32 and then in float64, beyond the
time of a second call (CPU seconds of the process, so that a loaded machine's waits do not
count; compiling is single-threaded): the first process compiles every kernel (cold), the second finds
numba's cache beside the module from the first (warm). Generation time is not counted.

    python bench/compile_time.py
    python bench/compile_time.py --json compile.json
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from timing import write_json  # noqa: E402

CASES = ("mlp_tanh", "cnn_digits", "cnn_28x28", "lstm")


def first_calls(case: str) -> dict[str, float]:
    """In this process: seconds of the first call beyond a second one, per dtype."""
    import warnings

    import models
    import numpy as np

    import symgrad
    from symgrad.models.mlp import mlp

    warnings.simplefilter("ignore")
    if case == "mlp_tanh":
        import run

        model, dims, n = mlp("tanh", name="bench_mlp_tanh"), run.CONFIGS[1][1], run.CONFIGS[1][2]
    else:
        key = {"cnn_digits": "cnn8", "cnn_28x28": "cnn28", "lstm": "lstm"}[case]
        _, build, dims, n = models.CASES[key]
        model = build()
    module = symgrad.load_module(model, "numba")
    out = {}
    for dtype in (np.float32, np.float64):
        params = module.init_params(dims, seed=0, dtype=dtype)
        if case == "mlp_tanh":
            batch = run.batch_for(dims, n, dtype)
        else:
            batch = models.batch_for(module, dims, n, dtype)
        t0 = time.process_time()
        module.loss_and_grad(params, batch)
        t1 = time.process_time()
        module.loss_and_grad(params, batch)
        t2 = time.process_time()
        out[np.dtype(dtype).name] = (t1 - t0) - (t2 - t1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="also write the records as a JSON list to FILE")
    parser.add_argument("--cases", nargs="*", default=list(CASES), help="default: all")
    parser.add_argument("--one", metavar="CASE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(first_calls(args.one)))
        return 0
    rows = []
    print("first call beyond a second one, CPU seconds")
    print(f"{'case':<12} {'dtype':<8} {'cold s':>7} {'cached s':>9}")
    for case in args.cases:
        with tempfile.TemporaryDirectory(prefix="symgrad-compile-") as cache:
            env = {**os.environ, "SYMGRAD_CACHE_DIR": cache}
            runs = []
            for _ in range(2):  # cold, then warm from the first one's cache
                out = subprocess.run([sys.executable, __file__, "--one", case], capture_output=True,
                                     text=True, cwd=ROOT, env=env)
                if out.returncode:
                    print(out.stderr, file=sys.stderr)
                    return out.returncode
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        for dtype in ("float32", "float64"):
            cold, warm = runs[0][dtype], runs[1][dtype]
            print(f"{case:<12} {dtype:<8} {cold:>7.2f} {warm:>9.3f}", flush=True)
            rows.append({"case": case, "dtype": dtype, "cold_s": cold, "cached_s": warm})
    if args.json:
        write_json(args.json, rows)
        print(f"wrote {len(rows)} records to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
