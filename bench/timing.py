"""Timing shared by the benchmark scripts: round-robin samples, page faults, tables, and
PyTorch in a child process.

PyTorch always runs in a child process: torch's OpenMP pool and OpenBLAS's pool both spin-wait
on the same cores, so in one process each BLAS call right after a torch call pays milliseconds
(measured: a 128x784 @ 784x256 product pair went from 0.6 ms to 10 ms when alternated).
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

THREADS = 2
SAMPLE_S = 0.004  # timed calls per sample: enough to last about this long
TORCH = f"PyTorch eager ({THREADS} thr)"


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(variants: dict, rounds: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per-call times (s) of each variant, round-robin samples after a warm-up; page faults per call.

    A sample is one untimed call (it absorbs the switch from the previous variant: caches,
    thread pools), then enough timed calls to last about SAMPLE_S."""
    number = {}
    for name, f in variants.items():
        for _ in range(3):
            f()
        t0 = time.perf_counter()
        f()
        number[name] = max(1, int(SAMPLE_S / max(time.perf_counter() - t0, 1e-7)))
    samples = {name: [] for name in variants}
    faults = dict.fromkeys(variants, 0)
    calls = dict.fromkeys(variants, 0)
    clock = time.perf_counter
    for _ in range(rounds):
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
    return samples, {name: faults[name] / calls[name] for name in variants}


def table(title: str, samples: dict[str, list[float]], faults: dict[str, float],
          ratios: dict[str, str]) -> None:
    """Median, spread (half the interquartile range, % of the median), best sample, page faults
    per call, and the median as a multiple of each variant named in `ratios` {variant: column}."""
    med = {k: statistics.median(v) for k, v in samples.items()}
    ratios = {k: col for k, col in ratios.items() if k in med}
    print(title)
    print(f"  {'variant':<22} {'median us':>10} {'spread':>7} {'best us':>9} {'faults':>7}"
          + "".join(f" {col:>10}" for col in ratios.values()))
    for name, s in samples.items():
        q = statistics.quantiles(s, n=4)
        spread = (q[2] - q[0]) / 2 / med[name] * 100
        print(f"  {name:<22} {med[name] * 1e6:>10.1f} {spread:>6.1f}% {min(s) * 1e6:>9.1f} "
              f"{faults[name]:>7.1f}" + "".join(f" {med[name] / med[k]:>10.2f}" for k in ratios))
    print()


def torch_child(script: str, args: list[str]) -> list | None:
    """The JSON a `--torch-worker` child process prints last; None when torch does not import."""
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    if probe.returncode != 0:
        print("(PyTorch is not importable: no PyTorch rows)")
        return None
    child = subprocess.run([sys.executable, script, "--torch-worker", *args], capture_output=True, text=True)
    if child.returncode != 0:
        raise SystemExit(f"the PyTorch child process failed:\n{child.stderr}{child.stdout}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def save_case(path: str, reference: tuple, params: dict, **arrays) -> None:
    """One configuration for the PyTorch child: inputs, parameters, the generated loss and gradients."""
    import numpy as np

    loss, grads = reference
    np.savez(path, loss=loss, **arrays, **{f"p:{k}": v for k, v in params.items()},
             **{f"g:{k}": v for k, v in grads.items()})


def torch_worker(paths: list[str], rounds: int, variant) -> int:
    """Child process: for each saved case, `variant(data, params) -> (run, result, tol)` builds
    PyTorch's pass; its loss and gradients are checked against the saved ones, then `run` is
    timed. Prints the samples as JSON."""
    import numpy as np

    out = []
    for path in paths:
        data = np.load(path)
        params = {k[2:]: data[k] for k in data.files if k.startswith("p:")}
        grads = {k[2:]: data[k] for k in data.files if k.startswith("g:")}
        run, result, tol = variant(data, params)
        check_gradients((float(data["loss"]), grads), result(), f"PyTorch ({path})", tol=tol)
        samples, faults = measure({"torch": run}, rounds)
        out.append([samples["torch"], faults["torch"]])
    print(json.dumps(out))
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
