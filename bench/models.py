"""Benchmark: one `loss_and_grad` of the CNNs and the LSTM classifier, generated vs PyTorch
eager vs the bare matrix products.

`make bench` runs this after bench/run.py. In float32 and float64, for

* the digits CNN (8x8 images, conv 16 3x3 -> relu -> max pool 2 -> conv 32 -> relu -> pool 2
  -> dense 10, batch 64): the `cnn_digits` model;
* the same network on 28x28 images (batch 64, random data);
* an LSTM classifier (32 inputs, 128 hidden, 20 steps, dense 10 from the last state, batch 32),

it times the generated module (backend auto, and backend numba when numba imports), PyTorch
eager doing the same forward, loss and `backward()` on the same 2 threads in a child process
(its loss and gradients first checked against the generated ones), and the bare matrix products
any implementation must do (listed in `products`), and gives each time as a multiple of the
products' time and of PyTorch's. It also times each network written by hand in numpy
(bench/handwritten.py): the LSTM tuned as far as numpy goes (numpy's floor), the CNNs with the
generated module's algorithms but arrays allocated per call.

    python bench/models.py              # default 30 samples per variant
    python bench/models.py --rounds 60
    python bench/models.py --json out.json  # also write the records as a JSON list
    python bench/models.py --cases lstm     # only the LSTM (cases: cnn8 cnn28 lstm)
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import handwritten  # noqa: E402
import numpy as np  # noqa: E402
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
from symgrad.models import cnn, rnn  # noqa: E402

CASES = {  # name: (title, model builder, dims, batch)
    "cnn8": ("digits CNN 8x8, batch 64", lambda: cnn.cnn(8, name="bench_cnn8"), {"n_out": 10}, 64),
    "cnn28": ("CNN 28x28, batch 64", lambda: cnn.cnn(28, name="bench_cnn28"), {"n_out": 10}, 64),
    "lstm": ("LSTM 32 in, 128 hidden, 20 steps, batch 32",
             lambda: rnn.classifier("lstm", steps=20, features=32, hidden=128, name="bench_lstm"),
             {"n_out": 10, "n_h": 128}, 32),
}
DTYPES = (np.float32, np.float64)
GATES = rnn.GATES["lstm"]
HAND = "hand-written numpy"
# the JSON records' names of the cases and variants (bench/timing.py's `records`)
CASE_NAMES = {"cnn8": "cnn_digits", "cnn28": "cnn_28x28", "lstm": "lstm"}
RECORD_NAMES = {"generated auto": "generated", "generated numba": "numba", HAND: "hand",
                "matmuls only": "floor", TORCH: "torch"}


def batch_for(module, dims: dict, n: int, dtype, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = tuple(n if d == "B" else d for d in module.INPUTS["X"])
    X = rng.standard_normal(shape).astype(dtype)
    Y = np.eye(dims["n_out"], dtype=dtype)[rng.integers(0, dims["n_out"], n)]
    return {"X": X, "Y": Y}


def products(case: str, params: dict, X: np.ndarray) -> callable:
    """The matrix products of one forward and backward pass, on arrays of the right shapes
    into preallocated outputs: the floor every implementation pays. A convolution is one
    product of im2col(input) with the kernel forward, and two backward (kernel gradient; input
    gradient except for the first layer, whose input is data)."""
    rng = np.random.default_rng(0)
    dtype, n = X.dtype, X.shape[0]
    shapes = []  # (m, k, n) of each product
    if case.startswith("cnn"):
        side, channels = X.shape[1], 1
        for layer, K in enumerate((params["K1"], params["K2"])):
            kk, out = K.shape[0] * K.shape[1] * K.shape[2], K.shape[3]
            rows = n * side * side
            shapes += [(rows, kk, out), (kk, rows, out)] + ([(rows, out, kk)] if layer else [])
            side, channels = side // 2, out
        flat, classes = side * side * channels, params["W"].shape[1]
        shapes += [(n, flat, classes), (flat, n, classes), (n, classes, flat)]
    else:
        steps, n_in = X.shape[1], X.shape[2]
        h, classes = params["Wh_i"].shape[0], params["W"].shape[1]
        shapes += [(n * steps, n_in, 4 * h)]  # every step's input projection at once
        shapes += [(n, h, 4 * h)] * steps  # the recurrent product of each step
        shapes += [(n, h, classes), (h, n, classes), (n, classes, h)]  # dense layer
        shapes += [(n, 4 * h, h)] * steps  # the state gradient back through each step
        shapes += [(h, n * steps, 4 * h), (n_in, n * steps, 4 * h)]  # Wh and Wx gradients
    work = [(rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, c)).astype(dtype),
             np.empty((m, c), dtype)) for m, k, c in shapes]
    mm = np.matmul

    def run():
        for a, b, out in work:
            mm(a, b, out=out)

    return run


def torch_variant(case: str, params: dict, X: np.ndarray, Y: np.ndarray):
    """(run, result): PyTorch eager in its own layouts (NCHW images, OIHW kernels, nn.LSTM's
    stacked gates); result() maps its gradients back to ours."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(THREADS)
    labels = torch.tensor(Y.argmax(axis=1))
    if case.startswith("cnn"):
        side = X.shape[1] // 4
        channels = params["K2"].shape[3]

        def dense_to_torch(W):  # our flatten is (h, w, c); torch's is (c, h, w)
            return W.reshape(side, side, channels, -1).transpose(2, 0, 1, 3).reshape(W.shape)

        def dense_from_torch(W):
            return W.reshape(channels, side, side, -1).transpose(1, 2, 0, 3).reshape(W.shape)

        native = {"K1": params["K1"].transpose(3, 2, 0, 1), "K2": params["K2"].transpose(3, 2, 0, 1),
                  "c1": params["c1"], "c2": params["c2"], "W": dense_to_torch(params["W"]), "b": params["b"]}
        back = {"K1": lambda g: g.transpose(2, 3, 1, 0), "K2": lambda g: g.transpose(2, 3, 1, 0),
                "W": dense_from_torch}
        t = {k: torch.tensor(np.ascontiguousarray(v), requires_grad=True) for k, v in native.items()}
        tX = torch.tensor(np.ascontiguousarray(X.transpose(0, 3, 1, 2)))

        def loss():
            h = F.max_pool2d(F.relu(F.conv2d(tX, t["K1"], t["c1"], padding=1)), 2)
            h = F.max_pool2d(F.relu(F.conv2d(h, t["K2"], t["c2"], padding=1)), 2)
            return F.cross_entropy(h.flatten(1) @ t["W"] + t["b"], labels)
    else:
        n_in, h = X.shape[2], params["Wh_i"].shape[0]
        layer = torch.nn.LSTM(n_in, h, batch_first=True, dtype=torch.from_numpy(X).dtype)
        with torch.no_grad():
            layer.weight_ih_l0.copy_(torch.tensor(np.concatenate([params[f"Wx_{g}"] for g in GATES], 1).T))
            layer.weight_hh_l0.copy_(torch.tensor(np.concatenate([params[f"Wh_{g}"] for g in GATES], 1).T))
            layer.bias_ih_l0.copy_(torch.tensor(np.concatenate([params[f"b_{g}"] for g in GATES])))
            layer.bias_hh_l0.zero_()
        t = {k: torch.tensor(params[k], requires_grad=True) for k in ("W", "c")}
        back = {}
        tX = torch.tensor(X)

        def loss():
            H, _ = layer(tX)
            return F.cross_entropy(H[:, -1] @ t["W"] + t["c"], labels)

    leaves = list(t.values()) + (list(layer.parameters()) if case == "lstm" else [])
    same = lambda g: g  # noqa: E731

    def run():
        for p in leaves:
            p.grad = None
        value = loss()
        value.backward()
        return value.item()

    def result():
        value = run()
        grads = {k: back.get(k, same)(p.grad.numpy()) for k, p in t.items()}
        if case == "lstm":
            for base, tensor in (("Wx", layer.weight_ih_l0), ("Wh", layer.weight_hh_l0)):
                for g, part in zip(GATES, np.split(tensor.grad.numpy().T, 4, axis=1), strict=True):
                    grads[f"{base}_{g}"] = part
            for g, part in zip(GATES, np.split(layer.bias_ih_l0.grad.numpy(), 4), strict=True):
                grads[f"b_{g}"] = part
        return value, grads

    return run, result


def _torch_case(data, params: dict):
    run, result = torch_variant(str(data["case"]), params, data["X"], data["Y"])
    return run, result, 1e-3 if data["X"].dtype == np.float32 else 1e-8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="samples per variant (default 30)")
    parser.add_argument("--json", metavar="FILE", help="also write the records as a JSON list to FILE")
    parser.add_argument("--cases", nargs="+", choices=tuple(CASES), default=tuple(CASES),
                        help="the cases to time (default all)")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_worker:
        return torch_worker(_torch_case)
    began = time.perf_counter()
    results = []
    folder = scratch_folder("symgrad-bench-models-")
    with TorchWorker(__file__) as torch:
        for case in args.cases:
            title, build, dims, n = CASES[case]
            module = symgrad.load_module(build())
            compiled = symgrad.load_module(build(), "numba") if has_numba() else None
            for dtype in DTYPES:
                params = module.init_params(dims, seed=0, dtype=dtype)
                batch = batch_for(module, dims, n, dtype)
                reference = module.loss_and_grad(params, batch)
                path = os.path.join(folder, f"{case}-{np.dtype(dtype).name}.npz")
                save_case(path, reference, params, case=case, X=batch["X"], Y=batch["Y"])
                remote = torch.load(path)
                os.unlink(path)
                variants = {"generated auto": lambda m=module, p=params, b=batch: m.loss_and_grad(p, b)}
                if compiled is not None:
                    tol = 1e-3 if dtype == np.float32 else 1e-8
                    got = compiled.loss_and_grad(params, batch)
                    check_gradients(reference, got, f"numba {case}", tol=tol)
                    variants["generated numba"] = lambda m=compiled, p=params, b=batch: m.loss_and_grad(p, b)
                written = handwritten.lstm_loss_and_grad if case == "lstm" else handwritten.cnn_loss_and_grad
                hand = lambda p=params, b=batch, f=written: f(p, b["X"], b["Y"])  # noqa: E731
                check_gradients(reference, hand(), f"hand-written numpy {case}",
                                tol=1e-3 if dtype == np.float32 else 1e-8)
                variants[HAND] = hand
                variants["matmuls only"] = products(case, params, batch["X"])
                label = f"{title}, {np.dtype(dtype).name}: one loss_and_grad"
                results.append((label, CASE_NAMES[case], np.dtype(dtype).name,
                                *measure(variants, args.rounds, remote)))
    os.rmdir(folder)
    print(f"(measured in {time.perf_counter() - began:.0f} s)\n")
    rows = []
    for title, case, dtype_name, samples, faults in results:
        rows += records(case, dtype_name, samples, RECORD_NAMES)
        table(title, samples, faults, {"matmuls only": "x matmuls", TORCH: "x torch", HAND: "x hand"})
    if args.json:
        write_json(args.json, rows)
        print(f"wrote {len(rows)} records to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
