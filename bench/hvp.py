"""Benchmark: the generated Hessian-vector product against the module's own `loss_and_grad`,
PyTorch eager's double backward and JAX's jit-compiled jvp of grad, in float64 (the precision
second-order methods use), for the digits MLP (`mlp_tanh`, batch 64), the digits CNN
(`cnn_digits`, batch 64) and the LSTM classifier (`lstm_digits`: 8 steps of 8 features, 64
hidden units, batch 64).

The generated variants run here; PyTorch and JAX each run in a child process (`--torch-worker`,
`--jax-worker`, see bench/timing.py) that takes its turns in the same rounds, so the machine's
load reaches all alike. PyTorch's H v is `torch.autograd.grad` of <g, v> with g from
`create_graph=True`; JAX's is `jax.jvp(jax.grad(loss), (params,), (v,))` under `jax.jit` with
float64 enabled (its compile time is excluded from the samples and printed apart). Both run on
the same parameters, batch and v, and are checked against the generated loss and `hvp` before
they are timed. JAX is optional (`pip install -e .[bench]`); without it the column says so.

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
JAX = f"JAX jit ({THREADS} thr)"


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


def jax_loss(case: str):
    """loss(params, X, Y) in JAX, the same model as the generated module's (NHWC images and
    HWIO kernels, as JAX's convolution takes them; an LSTM written as its cell)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def block(x, K, c):  # conv 3x3 (padding 1), relu, 2x2 max pool
        a = lax.conv_general_dilated(x, K, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return lax.reduce_window(jax.nn.relu(a + c), -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def loss(p, X, Y):
        if case == "mlp":
            h = jnp.tanh(X @ p["W1"] + p["b1"])
            h = jnp.tanh(h @ p["W2"] + p["b2"])
            z = h @ p["W3"] + p["b3"]
        elif case == "cnn":
            h = block(block(X, p["K1"], p["c1"]), p["K2"], p["c2"])
            z = h.reshape(h.shape[0], -1) @ p["W"] + p["b"]
        else:
            Wx = jnp.concatenate([p[f"Wx_{g}"] for g in GATES], 1)
            Wh = jnp.concatenate([p[f"Wh_{g}"] for g in GATES], 1)
            b = jnp.concatenate([p[f"b_{g}"] for g in GATES])
            u = X @ Wx + b
            h = c = jnp.zeros((X.shape[0], Wh.shape[0]), dtype=X.dtype)
            for s in range(X.shape[1]):
                i, f, g, o = jnp.split(u[:, s] + h @ Wh, 4, axis=1)
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(c)
            z = h @ p["W"] + p["c"]
        return -(Y * jax.nn.log_softmax(z, axis=1)).sum() / X.shape[0]

    return loss


def jax_hvp(case: str, params: dict, vector: dict, X: np.ndarray, Y: np.ndarray):
    """(run, result, info): JAX's H v, jvp of grad under jit, float64; info holds the seconds
    tracing and compiling took (once, before any sample)."""
    import time

    if THREADS == 1:  # XLA reads its flags when it starts: one thread, like the other variants
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    import jax

    jax.config.update("jax_enable_x64", True)
    loss = jax_loss(case)
    hvp = jax.jit(lambda p, v, X, Y: jax.jvp(lambda q: jax.grad(loss)(q, X, Y), (p,), (v,)))
    args = jax.device_put((params, vector, X, Y))
    began = time.perf_counter()
    compiled = hvp.lower(*args).compile()
    compile_s = time.perf_counter() - began

    def run():
        return jax.block_until_ready(compiled(*args))

    def result():
        value = float(jax.jit(loss)(args[0], args[2], args[3]))
        return value, {k: np.asarray(h) for k, h in run()[1].items()}

    return run, result, {"compile_s": round(compile_s, 3)}


def _case_arrays(data) -> tuple[str, dict, np.ndarray, np.ndarray]:
    vector = {k[2:]: data[k] for k in data.files if k.startswith("v:")}
    return str(data["case"]), vector, data["X"], data["Y"]


def _torch_case(data, params: dict):
    case, vector, X, Y = _case_arrays(data)
    run, result = torch_hvp(case, params, vector, X, Y)
    return run, result, 1e-8


def _jax_case(data, params: dict):
    case, vector, X, Y = _case_arrays(data)
    run, result, info = jax_hvp(case, params, vector, X, Y)
    return run, result, 1e-8, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="samples per variant (default 30)")
    parser.add_argument("--json", metavar="FILE", help="also write the medians and ratios to FILE")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--jax-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_worker:
        return torch_worker(_torch_case)
    if args.jax_worker:
        return torch_worker(_jax_case)
    import importlib

    folder = scratch_folder("symgrad-bench-hvp-")
    report = {}
    with TorchWorker(__file__) as torch, TorchWorker(__file__, "--jax-worker", "jax", "JAX") as jax:
        for case, (title, name, dims, n) in CASES.items():
            module = importlib.import_module(f"symgrad.generated.{name}")
            params, batch, vector = inputs(module, dims, n)
            loss, _, hv = module.hvp(params, batch, vector)
            path = os.path.join(folder, f"{case}.npz")
            save_case(path, (loss, hv), params, case=case, X=batch["X"], Y=batch["Y"],
                      **{f"v:{k}": v for k, v in vector.items()})
            remotes = {TORCH: torch.load(path), JAX: jax.load(path)}
            variants = {"loss_and_grad": lambda m=module, p=params, b=batch: m.loss_and_grad(p, b),
                        "hvp": lambda m=module, p=params, b=batch, v=vector: m.hvp(p, b, v)}
            samples, faults = measure(variants, args.rounds, remotes)
            compiled = f"; JAX compiled in {jax.info['compile_s']:.2f} s, not timed" if jax.info else ""
            table(f"{title}, float64{compiled}", samples, faults,
                  {"loss_and_grad": "x l&g", TORCH: "x torch", JAX: "x jax"}, missing="not installed")
            med = {k: statistics.median(v) for k, v in samples.items()}
            entry = {"loss_and_grad_us": med["loss_and_grad"] * 1e6, "hvp_us": med["hvp"] * 1e6,
                     "hvp_over_loss_and_grad": med["hvp"] / med["loss_and_grad"]}
            if TORCH in med:
                entry |= {"torch_double_backward_us": med[TORCH] * 1e6,
                          "hvp_over_torch": med["hvp"] / med[TORCH]}
            entry["jax"] = {"jvp_of_grad_us": med[JAX] * 1e6, "hvp_over_jax": med["hvp"] / med[JAX],
                            "compile_s": jax.info["compile_s"]} if JAX in med else "not installed"
            report[case] = entry
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
