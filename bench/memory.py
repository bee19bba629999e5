"""Benchmark: memory of one `loss_and_grad` for every case of bench/run.py and bench/models.py,
the generated module beside hand-written numpy and PyTorch eager.

Each (case, dtype, variant) runs in a fresh child process, so no variant inherits another's
heap. After building its inputs the child measures:

* `rss growth`: how far the process's resident memory rises above what it had before the
  first call, over the first three calls (the peak, VmHWM, reset through /proc/self/clear_refs
  first): what the calls cost the machine, whatever allocates it (numpy, PyTorch's allocator,
  oneDNN's caches, the generated module's workspace);
* `traced peak`: the most memory numpy (and Python) held at once during one more call, above
  what was held before it, with tracemalloc (numpy reports its array data to it): the
  temporaries and the results of a call in steady state. PyTorch's allocator is invisible to
  tracemalloc, so its rows have RSS only;
* `workspace`: the bytes of the generated module's workspace (arrays kept across calls).

    python bench/memory.py                  # every case
    python bench/memory.py --json mem.json  # also write the records as a JSON list
"""
from __future__ import annotations

import argparse
import gc
import json
import pathlib
import subprocess
import sys
import tracemalloc

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from timing import write_json  # noqa: E402

MLP_CASES = {"mlp_784-256-256-10_b128": 0, "mlp_64-32-32-10_b32": 1}  # index into run.CONFIGS
MODEL_CASES = {"cnn_digits": "cnn8", "cnn_28x28": "cnn28", "lstm": "lstm"}  # models.CASES keys
VARIANTS = ("generated", "hand", "torch")
MIB = 2.0**20


def _status() -> dict[str, int]:
    """VmRSS and VmHWM (peak) of this process, in bytes."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                values[key] = int(value.split()[0]) * 1024
    return values


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak resident set (Linux)
        f.write("5")


def _workload(case: str, dtype, variant: str):
    """(call, module or None): one loss_and_grad of the variant on the case's arrays."""
    import handwritten

    if case in MLP_CASES:
        import run
        from symgrad.generated import mlp_tanh as module

        _, dims, n = run.CONFIGS[MLP_CASES[case]]
        params = run.with_biases(module.init_params(dims, seed=0, dtype=dtype))
        batch = run.batch_for(dims, n, dtype)
        if variant == "torch":
            return run.torch_variant(params, batch["X"], batch["Y"])[0], None
        if variant == "hand":
            return (lambda: handwritten.loss_and_grad(params, batch["X"], batch["Y"])), None
        return (lambda: module.loss_and_grad(params, batch)), module
    import models

    import symgrad

    key = MODEL_CASES[case]
    _, build, dims, n = models.CASES[key]
    module = symgrad.load_module(build())
    params = module.init_params(dims, seed=0, dtype=dtype)
    batch = models.batch_for(module, dims, n, dtype)
    if variant == "torch":
        return models.torch_variant(key, params, batch["X"], batch["Y"])[0], None
    if variant == "hand":
        written = handwritten.lstm_loss_and_grad if key == "lstm" else handwritten.cnn_loss_and_grad
        return (lambda: written(params, batch["X"], batch["Y"])), None
    return (lambda: module.loss_and_grad(params, batch)), module


def measure_one(case: str, dtype_name: str, variant: str) -> dict:
    """The child's measurement (see the module docstring)."""
    if variant == "torch":
        import torch

        torch.set_num_threads(2)
    call, module = _workload(case, np.dtype(dtype_name).type, variant)
    gc.collect()
    before = _status()["VmRSS"]
    _reset_peak()
    for _ in range(3):
        call()
    rss = _status()["VmHWM"] - before
    traced = None
    if variant != "torch":
        gc.collect()
        tracemalloc.start()
        held = tracemalloc.get_traced_memory()[0]
        call()
        traced = tracemalloc.get_traced_memory()[1] - held
        tracemalloc.stop()
    workspace = None
    if module is not None and hasattr(module, "_WORKSPACES"):
        workspace = sum(a.nbytes for pool in module._WORKSPACES.values() for ws in pool for a in ws.values())
    return {"case": case, "dtype": dtype_name, "variant": variant, "rss_growth_bytes": rss,
            "traced_peak_bytes": traced, "workspace_bytes": workspace}


def _mib(value) -> str:
    return "-" if value is None else f"{value / MIB:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="FILE", help="also write the records as a JSON list to FILE")
    parser.add_argument("--cases", nargs="*", default=[*MLP_CASES, *MODEL_CASES],
                        help="cases to measure (default: all)")
    parser.add_argument("--one", nargs=3, metavar=("CASE", "DTYPE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(*args.one)))
        return 0
    has_torch = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0
    rows = []
    print(f"{'case':<24} {'dtype':<8} {'variant':<10} {'rss growth MiB':>14} {'traced peak MiB':>15} "
          f"{'workspace MiB':>13} {'rss / torch':>11}")
    for case in args.cases:
        for dtype_name in ("float32", "float64"):
            group = {}
            for variant in VARIANTS:
                if variant == "torch" and not has_torch:
                    continue
                out = subprocess.run([sys.executable, __file__, "--one", case, dtype_name, variant],
                                     capture_output=True, text=True, cwd=ROOT)
                if out.returncode:
                    print(out.stderr, file=sys.stderr)
                    return out.returncode
                group[variant] = json.loads(out.stdout.strip().splitlines()[-1])
            torch_rss = group.get("torch", {}).get("rss_growth_bytes")
            for variant, r in group.items():
                ratio = f"{r['rss_growth_bytes'] / torch_rss:.2f}" if torch_rss else "-"
                print(f"{case:<24} {dtype_name:<8} {variant:<10} {_mib(r['rss_growth_bytes']):>14} "
                      f"{_mib(r['traced_peak_bytes']):>15} {_mib(r['workspace_bytes']):>13} {ratio:>11}",
                      flush=True)
                rows.append(r)
    if args.json:
        write_json(args.json, rows)
        print(f"wrote {len(rows)} records to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
