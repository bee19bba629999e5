"""Benchmark: the generated Hessian-vector product against the module's own `loss_and_grad`
and against PyTorch eager's double backward, in float64 (the precision second-order methods
use), for the digits MLP (`mlp_tanh`, batch 64), the digits CNN (`cnn_digits`, batch 64) and
the LSTM classifier (`lstm_digits`: 8 steps of 8 features, 64 hidden units, batch 64).

The generated variants run here; PyTorch runs in a child process (`--torch-worker`, see
bench/timing.py) that takes its turns in the same rounds, so the machine's load reaches all
alike. PyTorch's H v is `torch.autograd.grad` of <g, v> with g from `create_graph=True`, on the
same parameters, batch and v, and is checked against the generated `hvp` before it is timed.

    python bench/hvp.py                  # 30 samples per variant
    python bench/hvp.py --rounds 10 --json hvp.json
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from timing import (  # noqa: E402
    THREADS,
    TORCH,
    TorchWorker,
    measure,
    save_case,
    scratch_folder,
    table,
    torch_worker,
)

CASES = {  # name: (title, committed module, dims, batch size)
    "mlp": ("digits MLP 64-128-64-10 (tanh), batch 64", "mlp_tanh", {"n_in": 64, "n_out": 10}, 64),
    "cnn": ("digits CNN 8x8 (conv 16, pool, conv 32, pool, dense), batch 64", "cnn_digits",
            {"n_out": 10}, 64),
    "lstm": ("LSTM 8 steps of 8, 64 hidden, batch 64", "lstm_digits", {"n_out": 10}, 64),
}
GATES = ("i", "f", "g", "o")


def inputs(module, dims: dict, n: int, seed: int = 1) -> tuple[dict, dict, dict]:
    """Parameters, a batch (random inputs, one-hot targets) and a direction v, in float64."""
    rng = np.random.default_rng(seed)
    params = module.init_params(dims, seed=0, dtype=np.float64)
    params = {k: v + 0.05 * rng.standard_normal(v.shape) for k, v in params.items()}
    shape = tuple(d if isinstance(d, int) else {**module.DEFAULT_DIMS, **dims, "B": n}[d]
                  for d in module.INPUTS["X"])
    X = rng.standard_normal(shape)
    Y = np.eye(dims["n_out"])[rng.integers(0, dims["n_out"], n)]
    vector = {k: rng.standard_normal(v.shape) for k, v in params.items()}
    return params, {"X": X, "Y": Y}, vector


def torch_hvp(case: str, params: dict, vector: dict, X: np.ndarray, Y: np.ndarray):
    """(run, result): PyTorch eager's H v by double backward, in the generated module's layouts
    (NHWC images and HWIO kernels permuted inside the graph, an LSTM written as its cell)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(THREADS)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tv = {k: torch.tensor(v) for k, v in vector.items()}
    tX, tY = torch.tensor(X), torch.tensor(Y)

    def loss():
        if case == "mlp":
            h = torch.tanh(tX @ t["W1"] + t["b1"])
            h = torch.tanh(h @ t["W2"] + t["b2"])
            z = h @ t["W3"] + t["b3"]
        elif case == "cnn":
            x = tX.permute(0, 3, 1, 2)
            h = F.max_pool2d(F.relu(F.conv2d(x, t["K1"].permute(3, 2, 0, 1), t["c1"], padding=1)), 2)
            h = F.max_pool2d(F.relu(F.conv2d(h, t["K2"].permute(3, 2, 0, 1), t["c2"], padding=1)), 2)
            z = h.permute(0, 2, 3, 1).flatten(1) @ t["W"] + t["b"]
        else:
            Wx = torch.cat([t[f"Wx_{g}"] for g in GATES], 1)
            Wh = torch.cat([t[f"Wh_{g}"] for g in GATES], 1)
            b = torch.cat([t[f"b_{g}"] for g in GATES])
            n_h = t["Wh_i"].shape[0]
            u = tX @ Wx + b
            h = c = torch.zeros(tX.shape[0], n_h, dtype=tX.dtype)
            for s in range(tX.shape[1]):
                a = u[:, s] + h @ Wh
                i, f, g, o = a.split(n_h, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            z = h @ t["W"] + t["c"]
        return -(tY * torch.log_softmax(z, 1)).sum() / tX.shape[0]

    names = list(t)

    def run():
        grads = torch.autograd.grad(loss(), [t[k] for k in names], create_graph=True)
        inner = sum((g * tv[k]).sum() for k, g in zip(names, grads, strict=True))
        return torch.autograd.grad(inner, [t[k] for k in names])

    def result():
        value = float(loss().detach())
        return value, {k: h.numpy() for k, h in zip(names, run(), strict=True)}

    return run, result


def _torch_case(data, params: dict):
    vector = {k[2:]: data[k] for k in data.files if k.startswith("v:")}
    run, result = torch_hvp(str(data["case"]), params, vector, data["X"], data["Y"])
    return run, result, 1e-8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="samples per variant (default 30)")
    parser.add_argument("--json", metavar="FILE", help="also write the medians and ratios to FILE")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_worker:
        return torch_worker(_torch_case)
    import importlib

    folder = scratch_folder("symgrad-bench-hvp-")
    report = {}
    with TorchWorker(__file__) as torch:
        for case, (title, name, dims, n) in CASES.items():
            module = importlib.import_module(f"symgrad.generated.{name}")
            params, batch, vector = inputs(module, dims, n)
            loss, _, hv = module.hvp(params, batch, vector)
            path = os.path.join(folder, f"{case}.npz")
            save_case(path, (loss, hv), params, case=case, X=batch["X"], Y=batch["Y"],
                      **{f"v:{k}": v for k, v in vector.items()})
            remote = torch.load(path)
            variants = {"loss_and_grad": lambda m=module, p=params, b=batch: m.loss_and_grad(p, b),
                        "hvp": lambda m=module, p=params, b=batch, v=vector: m.hvp(p, b, v)}
            samples, faults = measure(variants, args.rounds, remote)
            table(f"{title}, float64", samples, faults,
                  {"loss_and_grad": "x l&g", **({TORCH: "x torch"} if remote else {})})
            med = {k: statistics.median(v) for k, v in samples.items()}
            entry = {"loss_and_grad_us": med["loss_and_grad"] * 1e6, "hvp_us": med["hvp"] * 1e6,
                     "hvp_over_loss_and_grad": med["hvp"] / med["loss_and_grad"]}
            if TORCH in med:
                entry |= {"torch_double_backward_us": med[TORCH] * 1e6,
                          "hvp_over_torch": med["hvp"] / med[TORCH]}
            report[case] = entry
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
