"""Benchmark: one `loss_and_grad` of the tanh MLP, generated vs hand-written vs PyTorch vs BLAS alone.

`make bench` runs this script (a script that prints tables, never a test). For the MLP
784-256-256-10 at batch 128 and 64-32-32-10 at batch 32 (tanh, softmax cross-entropy), in
float32 and float64, it times in one run, per configuration:

* the generated module in each backend (`numpy`, `numexpr`, `auto`, and `numba` when numba
  imports), generated here from `symgrad.models.mlp.mlp("tanh")` with this machine's
  calibration;
* the hand-written numpy reference (bench/handwritten.py), whose loss and gradients are first
  checked against the generated ones (to 1e-5);
* PyTorch eager on the same number of threads (forward, `backward()`), when torch imports,
  in a child process (bench/timing.py says why);
* the same 8 matrix products alone into preallocated outputs (3 forward, 5 backward), the floor
  every implementation pays: each other time is also given as a multiple of it. They run as
  `np.matmul(a, b, out=)` ("matmuls only", the floor the issue's targets are stated against) and
  as the array method `a.dot(b, out=)` ("dot products only", column "x dot"): at 32x32 numpy's
  matmul machinery costs about 0.4 us more per product than `dot` (f32: 12.8 us against 9.1 us
  for the 8, CPU clock, under load), so the second is the lower floor at a small batch, and the
  generated modules' products are `a.dot(b)`.

Timing (bench/timing.py): every variant is warmed up, then sampled round-robin; PyTorch's
samples are taken the same way in its child process, after the others. The table gives the
median time per call, the spread (half the interquartile range, in % of the median), the best
sample, and the minor page faults per call (memory the kernel maps afresh: a few microseconds
each in a VM). Then it runs bench/models.py (the CNNs and the LSTM) and
bench/train_throughput.py.

    python bench/run.py                 # all four configurations
    python bench/run.py --rounds 100    # more samples per variant (default 40)
    python bench/run.py --json out.json # also write every record (models.py's too) as JSON
    python bench/run.py --mlp-only      # only the four MLP configurations
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

import handwritten  # noqa: E402
import numpy as np  # noqa: E402
from symgrad.codegen import calibration as calib  # noqa: E402
from symgrad.codegen.emit import generate  # noqa: E402
from timing import (  # noqa: E402
    THREADS,
    TORCH,
    TorchWorker,
    check_gradients,
    has_numba,
    measure,
    records,
    save_case,
    scratch_folder,
    table,
    torch_worker,
    write_json,
)

import symgrad  # noqa: E402
from symgrad.models.mlp import mlp  # noqa: E402
from symgrad.pipeline import import_source  # noqa: E402

CONFIGS = [  # (label, dims, batch)
    ("784-256-256-10", {"n_in": 784, "n_h1": 256, "n_h2": 256, "n_out": 10}, 128),
    ("64-32-32-10", {"n_in": 64, "n_h1": 32, "n_h2": 32, "n_out": 10}, 32),
]
DTYPES = (np.float32, np.float64)
BACKENDS = ("numpy", "numexpr", "auto") + (("numba",) if has_numba() else ())
# variant names of the JSON records (bench/timing.py's `records`)
RECORD_NAMES = {"generated auto": "generated", "generated numpy": "numpy", "generated numexpr": "numexpr",
                "generated numba": "numba", "hand-written numpy": "hand", "matmuls only": "floor",
                "dot products only": "floor_dot", TORCH: "torch"}
FLOORS = ("matmuls only", "dot products only")


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


def matmuls_only(params: dict, X: np.ndarray, act: dict, dot: bool = False) -> callable:
    """The 8 products of one loss_and_grad, into preallocated outputs: np.matmul, or with `dot`
    the array method a.dot (less dispatch per call)."""
    W1, W2, W3 = params["W1"], params["W2"], params["W3"]
    h1, h2, d1, d2, d3 = (act[k] for k in ("h1", "h2", "d1", "d2", "d3"))
    o1, o2, o3 = np.empty_like(h1), np.empty_like(h2), np.empty_like(d3)
    gW1, gW2, gW3 = np.empty_like(W1), np.empty_like(W2), np.empty_like(W3)
    gh1, gh2 = np.empty_like(h1), np.empty_like(h2)
    mm = np.ndarray.dot if dot else np.matmul  # the method descriptor: a C call like matmul

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="samples per variant (default 40)")
    parser.add_argument("--no-train", action="store_true", help="skip bench/train_throughput.py")
    parser.add_argument("--mlp-only", action="store_true",
                        help="only the MLP tables: skip bench/models.py and bench/train_throughput.py")
    parser.add_argument("--json", metavar="FILE", help="also write the records as a JSON list to FILE")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_worker:
        return torch_worker(lambda data, params: (*torch_variant(params, data["X"], data["Y"]), 1e-4))

    import numexpr as ne

    cal = calib.current()  # this machine's, measured on first use (symgrad calibrate)
    print(f"numpy {np.__version__}, numexpr {ne.__version__} ({ne.get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs; calibration: {calib.describe(cal['key'])}")
    print("  numexpr from (elements): " + ", ".join(
        f"{dt} {'heavy' if heavy else 'light'} {v}" for (dt, heavy), v in calib.thresholds(cal).items()))
    modules = generated_modules()
    began = time.perf_counter()
    results = []
    folder = scratch_folder("symgrad-bench-")
    with TorchWorker(__file__) as torch:
        for label, dims, n in CONFIGS:
            for dtype in DTYPES:
                params = with_biases(modules["auto"].init_params(dims, seed=0, dtype=dtype))
                batch = batch_for(dims, n, dtype)
                X, Y = batch["X"], batch["Y"]
                reference = modules["auto"].loss_and_grad(params, batch)
                for b, mod in modules.items():
                    check_gradients(reference, mod.loss_and_grad(params, batch), f"backend {b}")
                check_gradients(reference, handwritten.loss_and_grad(params, X, Y), "hand-written numpy")
                path = os.path.join(folder, f"{label}-{np.dtype(dtype).name}.npz")
                save_case(path, reference, params, X=X, Y=Y)
                remote = torch.load(path)
                os.unlink(path)
                variants = {f"generated {b}": (lambda m=mod, p=params, d=batch: m.loss_and_grad(p, d))
                            for b, mod in modules.items()}
                variants["hand-written numpy"] = (
                    lambda p=params, x=X, y=Y: handwritten.loss_and_grad(p, x, y))
                act = activations(params, X, Y)
                variants["matmuls only"] = matmuls_only(params, X, act)
                variants["dot products only"] = matmuls_only(params, X, act, dot=True)
                results.append((f"MLP {label}, batch {n}, {np.dtype(dtype).name}: one loss_and_grad",
                                f"mlp_{label}_b{n}", np.dtype(dtype).name,
                                *measure(variants, args.rounds, remote)))
    os.rmdir(folder)
    print(f"(measured in {time.perf_counter() - began:.0f} s)\n")
    rows = []
    for title, case, dtype_name, samples, faults in results:
        rows += records(case, dtype_name, samples, RECORD_NAMES)
        order = [k for k in samples if k not in (*FLOORS, TORCH)] + [TORCH, *FLOORS]
        samples = {k: samples[k] for k in order if k in samples}
        table(title, samples, faults,
              {"matmuls only": "x matmuls", "dot products only": "x dot", "hand-written numpy": "x hand"})
    scripts = [] if args.mlp_only else [["models.py"]] + ([] if args.no_train else [["train_throughput.py"]])
    models_json = None
    if args.json and scripts:  # models.py writes its records beside ours, then they join ours
        fd, models_json = tempfile.mkstemp(suffix=".json", prefix="symgrad-bench-models-")
        os.close(fd)
        scripts[0] += ["--json", models_json]
    for script, *extra in scripts:
        print(f"$ python bench/{script}", flush=True)
        code = subprocess.run([sys.executable, str(ROOT / "bench" / script), *extra], cwd=ROOT).returncode
        if code:
            return code
    if models_json:
        rows += json.loads(pathlib.Path(models_json).read_text())
        os.unlink(models_json)
    if args.json:
        write_json(args.json, rows)
        print(f"wrote {len(rows)} records to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
