"""Benchmark: sweeps and data-parallel training on a local Dask cluster.

1. Sweep throughput: a 4-run sweep of the digits MLP (`mlp_tanh`, grid seed=0,1 x lr=1e-3,2e-3,
   `--epochs E`) four ways, taking turns round by round: the 4 runs one after another in this
   process (`training.run.train`, what 4 `symgrad train` commands do, without their start-up),
   the 4 `symgrad train` commands themselves one after another, `sweep(workers=1)` and
   `sweep(workers=2)`. A sweep's time includes starting its local
   cluster (about a second), as a user's would. Printed: median seconds and sequential / sweep.
2. Data-parallel time per epoch (`Trainer.train_epoch` alone, evaluation excluded): one process
   (BLAS on 1 thread, and on the libraries' default) against `--workers 2`, for the digits MLP
   and CNN at global batch 32 and 1024, and the MLP widened to 1024-1024 hidden units at batch
   1024 (compute-bound: a step is mostly matrix products). Beside it: steps per epoch, the
   overhead per step ((data-parallel epoch - one-process epoch / shards) / steps, i.e. what a
   step costs beyond its share of the work), and the bytes a step moves (parameters out to each
   shard and gradients back) and an epoch scatters (the training rows, once).

    python bench/dask_scaling.py                      # both parts
    python bench/dask_scaling.py --json out.json      # and the figures as JSON
    python bench/dask_scaling.py --part sweep --epochs 10 --rounds 3

On a shared machine every figure moves with the load: the script prints the load average
before and after, and the ratios come from one interleaved run.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def sweep_throughput(epochs: int, rounds: int) -> dict:
    from symgrad.training.run import train
    from symgrad.training.sweep import points, sweep

    grid = {"seed": [0, 1], "lr": [1e-3, 2e-3]}
    times: dict[str, list[float]] = {"sequential": [], "sequential commands": [], "sweep, 1 worker": [],
                                     "sweep, 2 workers": []}
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            for i, point in enumerate(points(grid)):
                train("mlp_tanh", epochs=epochs, out=f"{tmp}/seq/{i}", quiet=True, **point)
            times["sequential"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for i, point in enumerate(points(grid)):  # what a user without a sweep types, one by one
                subprocess.run([sys.executable, "-m", "symgrad", "train", "mlp_tanh", "--epochs", str(epochs),
                                "--seed", str(point["seed"]), "--lr", str(point["lr"]), "--quiet",
                                "--out", f"{tmp}/cmd/{i}"], check=True, stdout=subprocess.DEVNULL)
            times["sequential commands"].append(time.perf_counter() - start)
            for n in (1, 2):
                start = time.perf_counter()
                sweep("mlp_tanh", grid, workers=n, epochs=epochs, out=f"{tmp}/w{n}", quiet=True)
                times[f"sweep, {n} worker{'s' * (n > 1)}"].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
              flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    sweeps = [k for k in median if k.startswith("sweep")]
    return {"runs": 4, "epochs": epochs, "seconds": times, "median": median,
            "speedup": {k: median["sequential"] / median[k] for k in sweeps},
            "speedup_vs_commands": {k: median["sequential commands"] / median[k] for k in sweeps}}


def _trainer(model: str, batch_size: int, dims: dict):
    from symgrad.training.data import prepare, resolve
    from symgrad.training.loop import TrainConfig, Trainer

    from symgrad import pipeline

    module = pipeline.load_module(model)
    config = TrainConfig(epochs=100, batch_size=batch_size, optimizer="sgd", lr=0.01, dims=dims)
    inputs = [k for k in module.INPUTS if k not in module.TARGETS]
    per_column = len(module.INPUTS[inputs[0]]) <= 2
    data = prepare(resolve("digits", module.TASK), 0, per_column=per_column)
    return module, Trainer(module, data, config)


def _epoch_seconds(trainer, epochs: int) -> float:
    trainer.train_epoch()  # warm-up: buffers, the workers' module import
    samples = []
    for _ in range(epochs):
        start = time.perf_counter()
        trainer.train_epoch()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def data_parallel(epochs: int) -> list[dict]:
    import numexpr
    from symgrad.training.cluster import connect
    from symgrad.training.parallel import DataParallel
    from threadpoolctl import threadpool_limits

    cases = [("mlp_tanh", 32, {}), ("mlp_tanh", 1024, {}), ("cnn_digits", 32, {}), ("cnn_digits", 1024, {}),
             ("mlp_tanh", 1024, {"n_h1": 1024, "n_h2": 1024})]
    rows = []
    with connect(workers=2) as client:
        for model, batch, dims in cases:
            module, trainer = _trainer(model, batch, dims)
            default = _epoch_seconds(trainer, epochs)
            before = numexpr.set_num_threads(1)
            with threadpool_limits(limits=1):
                one = _epoch_seconds(trainer, epochs)
            numexpr.set_num_threads(before)
            trainer.parallel = DataParallel(client, module, 2, trainer.input, trainer.target)
            shared = _epoch_seconds(trainer, epochs)
            X, Y = trainer._train_arrays()
            steps = -(-len(X) // batch)
            label = model + (f" {dims['n_h1']}-{dims['n_h2']}" if dims else "")
            rows.append({"model": label, "batch": batch, "steps": steps, "one_process_1_thread_s": one,
                         "one_process_default_threads_s": default, "data_parallel_2_workers_s": shared,
                         "speedup_vs_1_thread": one / shared, "speedup_vs_default": default / shared,
                         "overhead_per_step_ms": 1e3 * (shared - one / 2) / steps,
                         "bytes_per_step": trainer.parallel.bytes_per_step,
                         "bytes_scattered_per_epoch": int(X.nbytes + Y.nbytes),
                         "steps_redone": trainer.parallel.lost})
            r = rows[-1]
            print(f"  {label:<24} batch {batch:>4}  {steps:>3} steps  1 thread {one:.3f} s  default "
                  f"{default:.3f} s  2 workers {shared:.3f} s  ({r['speedup_vs_1_thread']:.2f}x, "
                  f"{r['speedup_vs_default']:.2f}x)  overhead/step {r['overhead_per_step_ms']:.1f} ms  "
                  f"{r['bytes_per_step'] / 1e6:.3f} MB/step", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("sweep", "data-parallel", "all"), default="all")
    p.add_argument("--epochs", type=int, default=5, help="epochs of each sweep run (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the sweep part (default 3)")
    p.add_argument("--dp-epochs", type=int, default=3, help="timed epochs per data-parallel case (default 3)")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON too")
    args = p.parse_args(argv)
    report = {"cores": os.cpu_count(), "load_average_before": os.getloadavg()}
    print(f"{os.cpu_count()} cores, load average {report['load_average_before'][0]:.2f} (1 min) before",
          flush=True)
    if args.part in ("sweep", "all"):
        print(f"sweep of 4 digits-MLP runs, {args.epochs} epochs each:", flush=True)
        report["sweep"] = s = sweep_throughput(args.epochs, args.rounds)
        print("  median: " + ", ".join(f"{k} {v:.2f} s" for k, v in s["median"].items()))
        print("  sequential / sweep: " + ", ".join(f"{k} {v:.2f}x" for k, v in s["speedup"].items()))
        print("  sequential commands / sweep: "
              + ", ".join(f"{k} {v:.2f}x" for k, v in s["speedup_vs_commands"].items()))
    if args.part in ("data-parallel", "all"):
        print("data-parallel time per training epoch (median), 2 workers of a local cluster:", flush=True)
        report["data_parallel"] = data_parallel(args.dp_epochs)
    report["load_average_after"] = os.getloadavg()
    print(f"load average {report['load_average_after'][0]:.2f} (1 min) after")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
