"""Benchmark: BLAS threads and concurrent runs, `symgrad train --threads`.

Two GAN trainings (`gan_ring`, `--steps` below) start at once, as two processes, first with
the libraries' default threads (OpenBLAS takes one per core), then with `--threads 1`; and one
run alone each way. The small products of a GAN step (batch 256, 64 units) gain nothing from a
second BLAS thread, while two processes each spinning two threads on a shared machine fight for
the cores. The table gives each configuration's wall time per run (median of the rounds and
the spread), with the rounds interleaved so the machine's changing load reaches all alike.

    python bench/threads.py [--steps 3000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run_together(count: int, threads: list[str], steps: int) -> float:
    """Wall seconds of `count` runs started together (the slowest one's)."""
    folder = tempfile.mkdtemp(prefix="symgrad-threads-")
    try:
        start = time.perf_counter()
        command = [sys.executable, "-m", "symgrad", "train", "gan_ring", "--steps", str(steps), "--quiet",
                   *threads]
        procs = [subprocess.Popen([*command, "--out", f"{folder}/run{k}"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for k in range(count)]
        for p in procs:
            if p.wait() != 0:
                raise SystemExit("a training run failed")
        return time.perf_counter() - start
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cases = {("alone", "default"): (1, []), ("alone", "--threads 1"): (1, ["--threads", "1"]),
             ("two at once", "default"): (2, []), ("two at once", "--threads 1"): (2, ["--threads", "1"])}
    times = {k: [] for k in cases}
    for _ in range(args.rounds):
        for key, (count, flags) in cases.items():
            times[key].append(run_together(count, flags, args.steps))
    print(f"gan_ring, {args.steps} steps, {args.rounds} rounds (wall seconds, process start included)")
    print(f"{'runs':<12} {'threads':<12} {'median s':>9} {'min-max s':>14}")
    for (runs, threads), t in times.items():
        print(f"{runs:<12} {threads:<12} {statistics.median(t):>9.1f} {f'{min(t):.1f}-{max(t):.1f}':>14}")


if __name__ == "__main__":
    main()
