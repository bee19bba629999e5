"""Timing shared by the benchmark scripts: round-robin samples, page faults, tables, and
PyTorch in a child process.

PyTorch always runs in a child process: torch's OpenMP pool and OpenBLAS's pool both spin-wait
on the same cores, so in one process each BLAS call right after a torch call pays milliseconds
(measured: a 128x784 @ 784x256 product pair went from 0.6 ms to 10 ms when alternated). The
child still takes its turn in every round of samples (it waits on a pipe while the parent
times its variants, and the parent waits while it times PyTorch), so a change in the shared
machine's load reaches every variant alike instead of skewing the ratios. The turns are blocks
of rounds with a pause before each, long enough for the other process's thread pool to stop
spinning: right after the parent's turn, PyTorch's ran up to 2.9x slower than alone.
"""
from __future__ import annotations

import atexit
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# SYMGRAD_BENCH_CLOCK=cpu: time the CPU of the process (time.process_time) instead of the wall
# clock, and run PyTorch on one thread (set OPENBLAS_NUM_THREADS=1 for numpy's BLAS too). On a
# machine that other jobs load, the wall clock of a sample moves with their share of the cores;
# the CPU time of a one-thread process does not.
CPU_CLOCK = os.environ.get("SYMGRAD_BENCH_CLOCK", "wall") == "cpu"
CLOCK = time.process_time if CPU_CLOCK else time.perf_counter
THREADS = 1 if CPU_CLOCK else 2
SAMPLE_S = 0.004  # timed calls per sample: enough to last about this long
BLOCKS = 3  # turns each side takes in `measure` when PyTorch runs beside the variants
# The pause before each turn. Measured on the MLP: with no pause PyTorch's turn ran 2.9x slower
# than alone (OpenBLAS's threads in the parent still spinning), 1.25x after 0.3 s, 1.0x after 1 s
PAUSE_S = 1.0
TORCH = f"PyTorch eager ({THREADS} thr)"


def has_numba() -> bool:
    """Whether the numba backend's modules can run here (numba is an optional extra)."""
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(variants: dict, rounds: int, remote=None) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per-call times (s) of each variant, round-robin samples after a warm-up; page faults per call.

    A sample is one untimed call (it absorbs the switch from the previous variant: caches,
    thread pools), then enough timed calls to last about SAMPLE_S. `remote` (a TorchWorker's
    loaded case: `remote(k)` takes k samples) takes turns with the variants, as TORCH; or a
    dict {label: remote} of several child processes, each taking its turn."""
    remotes = {TORCH: remote} if callable(remote) else {k: r for k, r in (remote or {}).items() if r}
    number = {}
    for name, f in variants.items():
        for _ in range(3):
            f()
        t0 = CLOCK()
        f()
        number[name] = max(1, int(SAMPLE_S / max(CLOCK() - t0, 1e-7)))
    samples = {name: [] for name in variants} | {label: [] for label in remotes}
    faults = dict.fromkeys(samples, 0.0)
    calls = dict.fromkeys(variants, 0)
    clock = CLOCK
    blocks = [len(b) for b in _split(range(rounds), BLOCKS if remotes else 1)]
    for block in blocks:
        if remotes:
            time.sleep(PAUSE_S)
        for _ in range(block):
            for name, f in variants.items():
                f()
                n = number[name]
                f0 = minor_faults()
                t0 = clock()
                for _ in range(n):
                    f()
                samples[name].append((clock() - t0) / n)
                faults[name] += minor_faults() - f0
                calls[name] += n
        for label, take in remotes.items():
            time.sleep(PAUSE_S)
            for seconds, per_call in take(block):
                samples[label].append(seconds)
                faults[label] += per_call / rounds
    return samples, {name: faults[name] / calls[name] if name in calls else faults[name] for name in samples}


def records(case: str, dtype: str, samples: dict[str, list[float]], variants: dict[str, str]) -> list[dict]:
    """Machine-readable results of one `measure`: a record per sampled variant that `variants`
    names ({sample name: record variant, e.g. "generated auto": "generated"}), times in us."""
    return [{"case": case, "dtype": dtype, "variant": variants[name],
             "median_us": round(statistics.median(s) * 1e6, 3), "best_us": round(min(s) * 1e6, 3)}
            for name, s in samples.items() if name in variants]


def write_json(path: str, rows: list[dict]) -> None:
    """Write the records of a run to `path` as a JSON list, atomically."""
    from symgrad.codegen.atomic import write_text

    write_text(path, json.dumps(rows, indent=1) + "\n")


def _split(items: range, parts: int) -> list[range]:
    size = -(-len(items) // parts)
    return [items[i:i + size] for i in range(0, len(items), size)]


def table(title: str, samples: dict[str, list[float]], faults: dict[str, float],
          ratios: dict[str, str], missing: str = "") -> None:
    """Median, spread (half the interquartile range, % of the median), best sample, page faults
    per call, and the median as a multiple of each variant named in `ratios` {variant: column}.
    A column whose variant was not sampled is left out, or with `missing`, prints that."""
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratios = {k: col for k, col in ratios.items() if k in med or missing}
    print(title)
    print(f"  {'variant':<22} {'median us':>10} {'spread':>7} {'best us':>9} {'faults':>7}"
          + "".join(f" {col:>10}" for col in ratios.values()))
    for name, s in samples.items():
        q = statistics.quantiles(s, n=4)
        spread = (q[2] - q[0]) / 2 / med[name] * 100
        print(f"  {name:<22} {med[name] * 1e6:>10.1f} {spread:>6.1f}% {min(s) * 1e6:>9.1f} "
              f"{faults[name]:>7.1f}" + "".join(f" {med[name] / med[k]:>10.2f}" if k in med
                                                else f" {missing:>10}" for k in ratios))
    print()


class TorchWorker:
    """PyTorch (or another framework: `package`, started as `script flag`) in a child
    process, driven over pipes: `load(path)` builds and checks a saved case and returns a
    callable that takes k samples of it; `info` is what the child said about the case it
    loaded (a dict, e.g. its compile time, or True)."""

    def __init__(self, script: str, flag: str = "--torch-worker", package: str = "torch",
                 label: str = "PyTorch"):
        probe = subprocess.run([sys.executable, "-c", f"import {package}"], capture_output=True)
        self.child, self.info = None, None
        if probe.returncode != 0:
            print(f"({label} is not importable: no {label} rows)")
            return
        self.child = subprocess.Popen([sys.executable, script, flag], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)

    def _ask(self, request: dict):
        self.child.stdin.write(json.dumps(request) + "\n")
        self.child.stdin.flush()
        line = self.child.stdout.readline()
        if not line:
            code = self.child.wait()
            raise SystemExit(f"the PyTorch child process failed (exit {code}); its error is above")
        return json.loads(line)

    def load(self, path: str):
        if self.child is None:
            return None
        self.info = self._ask({"load": path})
        return lambda k: self._ask({"samples": k})

    def __enter__(self) -> TorchWorker:
        return self

    def __exit__(self, *exc) -> None:
        if self.child is not None:
            self.child.stdin.close()
            self.child.wait()


def scratch_folder(prefix: str) -> str:
    """A temporary folder for the cases sent to the PyTorch child, removed when the script ends."""
    folder = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def save_case(path: str, reference: tuple, params: dict, **arrays) -> None:
    """One configuration for the PyTorch child: inputs, parameters, the generated loss and gradients."""
    import numpy as np

    loss, grads = reference
    np.savez(path, loss=loss, **arrays, **{f"p:{k}": v for k, v in params.items()},
             **{f"g:{k}": v for k, v in grads.items()})


def torch_worker(variant) -> int:
    """Child process (see TorchWorker): `{"load": path}` builds PyTorch's pass for a saved case
    with `variant(data, params) -> (run, result, tol)` (or `(run, result, tol, info)`, info a
    dict the answer carries) and checks its loss and gradients against the saved ones;
    `{"samples": k}` times k samples of it, like `measure`, and answers
    [[seconds per call, page faults per call], ...]."""
    import numpy as np

    run, number = None, 1
    for line in sys.stdin:
        request = json.loads(line)
        if "load" in request:
            data = np.load(request["load"], allow_pickle=False)
            params = {k[2:]: data[k] for k in data.files if k.startswith("p:")}
            grads = {k[2:]: data[k] for k in data.files if k.startswith("g:")}
            run, result, tol, *info = variant(data, params)
            check_gradients((float(data["loss"]), grads), result(), f"PyTorch ({request['load']})", tol=tol)
            samples, _ = measure({"torch": run}, 1)  # warms up
            number = max(1, int(SAMPLE_S / samples["torch"][0]))
            answer = info[0] if info else True
        else:
            answer = []
            for _ in range(request["samples"]):
                run()
                f0, t0 = minor_faults(), CLOCK()
                for _ in range(number):
                    run()
                answer.append([(CLOCK() - t0) / number, (minor_faults() - f0) / number])
        print(json.dumps(answer), flush=True)
    return 0


def check_gradients(reference, got, what: str, tol: float = 1e-5) -> None:
    """Stop the benchmark when a variant computes something else than the generated module."""
    import numpy as np

    (l_ref, g_ref), (l_got, g_got) = reference, got
    if not np.isclose(l_ref, l_got, rtol=tol, atol=tol):
        raise SystemExit(f"{what}: loss {l_got} differs from the generated module's {l_ref}")
    for k, v in g_ref.items():
        scale = max(float(np.abs(v).max()), 1e-3)
        if g_got[k].shape != v.shape or not np.allclose(g_got[k], v, rtol=tol, atol=tol * scale):
            err = np.max(np.abs(np.asarray(g_got[k], dtype=np.float64) - v))
            raise SystemExit(f"{what}: gradient {k} differs from the generated one (max |diff| {err:.2e})")
