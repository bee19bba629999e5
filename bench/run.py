"""Benchmark: one `loss_and_grad` of the tanh MLP, generated vs hand-written vs PyTorch vs BLAS alone.

`make bench` runs this script (a script that prints tables, never a test). For the MLP
784-256-256-10 at batch 128 and 64-32-32-10 at batch 32 (tanh, softmax cross-entropy), in
float32 and float64, it times in one run, per configuration:

* the generated module in each backend (`numpy`, `numexpr`, `auto`), generated here from
  `symgrad.models.mlp.mlp("tanh")` with the committed calibration;
* the hand-written numpy reference (bench/handwritten.py), whose loss and gradients are first
  checked against the generated ones (to 1e-5);
* PyTorch eager on the same number of threads (forward, `backward()`), when torch imports,
  in a child process: torch's OpenMP pool and OpenBLAS's pool both spin-wait on the same
  cores, so in one process each BLAS call right after a torch call pays milliseconds (measured:
  a 128x784 @ 784x256 product pair went from 0.6 ms to 10 ms when alternated);
* the same 8 matrix products alone into preallocated outputs (3 forward, 5 backward), the floor
  every implementation pays: each other time is also given as a multiple of it.

Timing: every variant is warmed up, then sampled round-robin (a sample is an untimed call, so
that no variant pays for the switch from the one before, then enough timed calls to last a few
milliseconds); PyTorch's samples are taken the same way in its child process, after the
others. The table gives the median time per call, the spread (half the interquartile range,
in % of the median), the best sample, and the minor page faults per call (memory the kernel
maps afresh: a few microseconds each in a VM). At the end it runs bench/train_throughput.py,
when that script exists.

    python bench/run.py                 # all four configurations
    python bench/run.py --rounds 100    # more samples per variant (default 40)
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import handwritten  # noqa: E402
import numpy as np  # noqa: E402

import symgrad  # noqa: E402
from codegen import calibration as calib  # noqa: E402
from codegen.emit import generate  # noqa: E402
from symgrad.models.mlp import mlp  # noqa: E402
from symgrad.pipeline import import_source  # noqa: E402

CONFIGS = [  # (label, dims, batch)
    ("784-256-256-10", {"n_in": 784, "n_h1": 256, "n_h2": 256, "n_out": 10}, 128),
    ("64-32-32-10", {"n_in": 64, "n_h1": 32, "n_h2": 32, "n_out": 10}, 32),
]
DTYPES = (np.float32, np.float64)
BACKENDS = ("numpy", "numexpr", "auto")
THREADS = 2
SAMPLE_S = 0.004  # timed calls per sample: enough to last about this long


def generated_modules() -> dict:
    derivation = symgrad.derive(mlp("tanh"))
    return {b: import_source(generate(derivation, b), f"bench_mlp_tanh_{b}") for b in BACKENDS}


def batch_for(dims: dict, n: int, dtype, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dims["n_in"])).astype(dtype)
    Y = np.eye(dims["n_out"], dtype=dtype)[rng.integers(0, dims["n_out"], n)]
    return {"X": X, "Y": Y}


def with_biases(params: dict, seed: int = 2) -> dict:
    """Generated initial parameters, with small random biases (zeros would hide a bias bug)."""
    rng = np.random.default_rng(seed)
    return {k: (rng.uniform(-0.1, 0.1, v.shape).astype(v.dtype) if k.startswith("b") else v)
            for k, v in params.items()}


def check_gradients(reference, got, what: str, tol: float = 1e-5) -> None:
    (l_ref, g_ref), (l_got, g_got) = reference, got
    if not np.isclose(l_ref, l_got, rtol=tol, atol=tol):
        raise SystemExit(f"{what}: loss {l_got} differs from the generated module's {l_ref}")
    for k, v in g_ref.items():
        if g_got[k].shape != v.shape or not np.allclose(g_got[k], v, rtol=tol, atol=tol):
            err = np.max(np.abs(np.asarray(g_got[k], dtype=np.float64) - v))
            raise SystemExit(f"{what}: gradient {k} differs from the generated one (max |diff| {err:.2e})")


def matmuls_only(params: dict, X: np.ndarray, act: dict) -> callable:
    """The 8 products of one loss_and_grad, into preallocated outputs."""
    W1, W2, W3 = params["W1"], params["W2"], params["W3"]
    h1, h2, d1, d2, d3 = (act[k] for k in ("h1", "h2", "d1", "d2", "d3"))
    o1, o2, o3 = np.empty_like(h1), np.empty_like(h2), np.empty_like(d3)
    gW1, gW2, gW3 = np.empty_like(W1), np.empty_like(W2), np.empty_like(W3)
    gh1, gh2 = np.empty_like(h1), np.empty_like(h2)
    mm = np.matmul

    def run():
        mm(X, W1, out=o1)
        mm(h1, W2, out=o2)
        mm(h2, W3, out=o3)
        mm(h2.T, d3, out=gW3)
        mm(d3, W3.T, out=gh2)
        mm(h1.T, d2, out=gW2)
        mm(d2, W2.T, out=gh1)
        mm(X.T, d1, out=gW1)

    return run


def activations(params: dict, X: np.ndarray, Y: np.ndarray) -> dict:
    """h1, h2 and the deltas d1..d3 of one pass (inputs of the products in `matmuls_only`)."""
    h1 = np.tanh(X @ params["W1"] + params["b1"])
    h2 = np.tanh(h1 @ params["W2"] + params["b2"])
    z3 = h2 @ params["W3"] + params["b3"]
    e = np.exp(z3 - z3.max(axis=1, keepdims=True))
    d3 = (e / e.sum(axis=1, keepdims=True) - Y) / X.shape[0]
    d2 = (d3 @ params["W3"].T) * (1 - h2 * h2)
    d1 = (d2 @ params["W2"].T) * (1 - h1 * h1)
    return {"h1": h1, "h2": h2, "d1": d1, "d2": d2, "d3": d3}


def torch_variant(params: dict, X: np.ndarray, Y: np.ndarray):
    """(run, result) for PyTorch eager; run() is one loss and backward pass."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(THREADS)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tX, labels = torch.tensor(X), torch.tensor(Y.argmax(axis=1))

    def run():
        for p in tp.values():
            p.grad = None
        h1 = torch.tanh(tX @ tp["W1"] + tp["b1"])
        h2 = torch.tanh(h1 @ tp["W2"] + tp["b2"])
        z3 = h2 @ tp["W3"] + tp["b3"]
        loss = F.cross_entropy(z3, labels)
        loss.backward()
        return loss.item()

    def result():
        loss = run()
        return loss, {k: p.grad.numpy() for k, p in tp.items()}

    return run, result


def torch_worker(paths: list[str], rounds: int) -> int:
    """Child process: check and time PyTorch on each saved configuration; print JSON samples."""
    out = []
    for path in paths:
        data = np.load(path)
        params = {k[2:]: data[k] for k in data.files if k.startswith("p:")}
        grads = {k[2:]: data[k] for k in data.files if k.startswith("g:")}
        run, result = torch_variant(params, data["X"], data["Y"])
        check_gradients((float(data["loss"]), grads), result(), "PyTorch", tol=1e-4)
        samples, faults = measure({"torch": run}, rounds)
        out.append([samples["torch"], faults["torch"]])
    print(json.dumps(out))
    return 0


def torch_samples(saved: list[str], rounds: int) -> list | None:
    """PyTorch samples for each saved configuration, from a child process; None without torch."""
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    if probe.returncode != 0:
        print("(PyTorch is not importable: no PyTorch rows)")
        return None
    child = subprocess.run([sys.executable, __file__, "--torch-worker", *saved, "--rounds", str(rounds)],
                           capture_output=True, text=True, cwd=ROOT)
    if child.returncode != 0:
        raise SystemExit(f"the PyTorch child process failed:\n{child.stderr}{child.stdout}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(variants: dict, rounds: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per-call times (s) of each variant, round-robin samples after a warm-up; page faults per call."""
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
            f()  # untimed: absorbs the switch from the previous variant (caches, thread pools)
            n = number[name]
            f0 = minor_faults()
            t0 = clock()
            for _ in range(n):
                f()
            samples[name].append((clock() - t0) / n)
            faults[name] += minor_faults() - f0
            calls[name] += n
    return samples, {name: faults[name] / calls[name] for name in variants}


def table(title: str, samples: dict[str, list[float]], faults: dict[str, float]) -> None:
    med = {k: statistics.median(v) for k, v in samples.items()}
    base, hand = med["matmuls only"], med["hand-written numpy"]
    print(title)
    print(f"  {'variant':<22} {'median us':>10} {'spread':>7} {'best us':>9} {'faults':>7} "
          f"{'x matmuls':>10} {'x hand':>7}")
    for name, s in samples.items():
        q = statistics.quantiles(s, n=4)
        spread = (q[2] - q[0]) / 2 / med[name] * 100
        print(f"  {name:<22} {med[name] * 1e6:>10.1f} {spread:>6.1f}% {min(s) * 1e6:>9.1f} "
              f"{faults[name]:>7.1f} {med[name] / base:>10.2f} {med[name] / hand:>7.2f}")
    print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="samples per variant (default 40)")
    parser.add_argument("--no-train", action="store_true", help="skip bench/train_throughput.py")
    parser.add_argument("--torch-worker", nargs="+", metavar="NPZ", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_worker:
        return torch_worker(args.torch_worker, args.rounds)

    import numexpr as ne

    cal = calib.load()
    print(f"numpy {np.__version__}, numexpr {ne.__version__} ({ne.get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs; calibration: {cal.get('measured_on')}")
    print("  numexpr from (elements): " + ", ".join(
        f"{dt} {'heavy' if heavy else 'light'} {v}" for (dt, heavy), v in calib.thresholds(cal).items()))
    modules = generated_modules()
    began = time.perf_counter()
    results, saved = [], []
    folder = tempfile.mkdtemp(prefix="symgrad-bench-")
    for label, dims, n in CONFIGS:
        for dtype in DTYPES:
            params = with_biases(modules["auto"].init_params(dims, seed=0, dtype=dtype))
            batch = batch_for(dims, n, dtype)
            X, Y = batch["X"], batch["Y"]
            reference = modules["auto"].loss_and_grad(params, batch)
            for b, mod in modules.items():
                check_gradients(reference, mod.loss_and_grad(params, batch), f"backend {b}")
            check_gradients(reference, handwritten.loss_and_grad(params, X, Y), "hand-written numpy")
            variants = {f"generated {b}": (lambda m=mod, p=params, d=batch: m.loss_and_grad(p, d))
                        for b, mod in modules.items()}
            variants["hand-written numpy"] = (
                lambda p=params, x=X, y=Y: handwritten.loss_and_grad(p, x, y))
            variants["matmuls only"] = matmuls_only(params, X, activations(params, X, Y))
            results.append((f"MLP {label}, batch {n}, {np.dtype(dtype).name}: one loss_and_grad",
                            *measure(variants, args.rounds)))
            path = os.path.join(folder, f"config{len(saved)}.npz")
            np.savez(path, X=X, Y=Y, loss=reference[0], **{f"p:{k}": v for k, v in params.items()},
                     **{f"g:{k}": v for k, v in reference[1].items()})
            saved.append(path)
    torch_rows = torch_samples(saved, args.rounds)
    print(f"(measured in {time.perf_counter() - began:.0f} s)\n")
    for i, (title, samples, faults) in enumerate(results):
        if torch_rows is not None:
            name = f"PyTorch eager ({THREADS} thr)"
            samples = {k: v for k, v in samples.items() if k != "matmuls only"} | {
                name: torch_rows[i][0], "matmuls only": samples["matmuls only"]}
            faults = faults | {name: torch_rows[i][1]}
        table(title, samples, faults)
    for path in saved:
        os.unlink(path)
    os.rmdir(folder)
    script = ROOT / "bench" / "train_throughput.py"
    if script.exists() and not args.no_train:
        print(f"$ python {script.relative_to(ROOT)}", flush=True)
        return subprocess.run([sys.executable, str(script)], cwd=ROOT).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
