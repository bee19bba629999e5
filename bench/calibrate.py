"""Measure from how many elements numexpr beats numpy, and write codegen/calibration.json.

`make calibrate` runs this script. For representative fused kernels, "light" (arithmetic only)
and "heavy" (with transcendental functions), in float32 and float64, over sizes from 1024 to
4194304 elements (factor 2), it times the two forms that symgrad generates for the kernel,
built by the project's own kernel builder (`codegen.kernels.build_kernel`), so the measured
code is the emitted code:

* numpy: the kernel's ufunc calls with `out=` (scratch buffers included),
* numexpr: `ne.evaluate(source, local_dict={...operands, typed constants}, out=out)`, with
  numexpr's default thread count, as a generated module calls it.

Each time is the median of interleaved repeats (numpy, numexpr, numpy, ...), so machine noise
hits both engines alike. For each (dtype, kind) the threshold is the smallest measured size
from which numexpr is faster by at least `MARGIN` at that size and every larger one, judged on
the geometric mean over the kind's kernels of numpy time / numexpr time; None if there is no
such size. The result goes to codegen/calibration.json (atomically); `make generate` (or
`symgrad derive --all`) then bakes it into the generated modules.

    python bench/calibrate.py            # measure, print, write codegen/calibration.json
    python bench/calibrate.py --dry-run  # measure and print only
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import re
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numexpr as ne  # noqa: E402
import numpy as np  # noqa: E402
import sympy  # noqa: E402
from symgrad.codegen import calibration as calib  # noqa: E402
from symgrad.codegen.atomic import write_text  # noqa: E402
from symgrad.codegen.kernels import build_kernel  # noqa: E402
from symgrad.symbolic import functions  # noqa: E402

a, b, c = sympy.symbols("a b c", real=True)

#: (label, math expression); defined functions are lowered to their stable forms by build_kernel.
CASES: dict[str, list[tuple[str, sympy.Expr]]] = {
    "light": [
        ("a*b*(1-b)", a * b * (1 - b)),
        ("a + b", a + b),
        ("(a - b)/c", (a - b) / c),
    ],
    "heavy": [
        ("tanh(a + b)", sympy.tanh(a + b)),
        ("sigmoid(a + b)", functions.sigmoid(a + b)),
        ("softplus(a)", functions.softplus(a)),
        ("exp(a)*b - c", sympy.exp(a) * b - c),
    ],
}
SIZES = [1024 << i for i in range(13)]  # 1024 ... 4194304
DTYPES = ("float32", "float64")
MARGIN = 1.10  # numexpr must be at least 10% faster
SAMPLE_S = 0.002  # aim for samples of about 2 ms (several calls each for small sizes)


class Case:
    """One kernel's two generated forms, built once by the project's kernel builder."""

    def __init__(self, expr: sympy.Expr):
        self.names = tuple(sorted(s.name for s in expr.free_symbols))
        k = build_kernel(expr, self.names)
        if k.numexpr_source is None:
            raise SystemExit(f"kernel {expr} has no numexpr form")
        source = f"def _numpy({', '.join(self.names)}, out):\n"
        source += "".join(f"    {ln}\n" for ln in k.numpy_lines) + "    return out\n"
        env = {"np": np}
        exec(source, env)
        self.numpy_fn = env["_numpy"]
        self.source = k.numexpr_source
        self.constants = {name: float(v) for name, v in k.numexpr_constants.items()}

    def callables(self, dtype: np.dtype, n: int, rng: np.random.Generator):
        """(numpy callable, numexpr callable, output array) over fresh operands of n elements."""
        arrays = {}
        for name in self.names:
            low, high = (0.5, 1.5) if name == "c" else (-2.0, 2.0)  # c divides: keep it off zero
            arrays[name] = rng.uniform(low, high, n).astype(dtype)
        out = np.empty(n, dtype=dtype)
        numpy_fn, source, constants = self.numpy_fn, self.source, self.constants

        def run_numpy():
            return numpy_fn(**arrays, out=out)

        def run_numexpr():  # as a generated kernel calls it: a fresh local_dict, typed constants
            kt = out.dtype.type
            return ne.evaluate(source, local_dict={**arrays, **{c_: kt(v) for c_, v in constants.items()}},
                               out=out)

        return run_numpy, run_numexpr, out


def median_times(fns, repeats: int) -> list[float]:
    """Median seconds per call of each function, sampled round-robin."""
    for f in fns:  # warm up (numexpr compiles and caches its program on first use)
        f()
        f()
    t0 = time.perf_counter()
    fns[0]()
    one = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(SAMPLE_S / one))
    samples: list[list[float]] = [[] for _ in fns]
    clock = time.perf_counter
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t0 = clock()
            for _ in range(number):
                f()
            samples[i].append((clock() - t0) / number)
    return [statistics.median(s) for s in samples]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1]
                break
    except OSError:
        pass
    cpu = re.sub(r"[^A-Za-z0-9 .,@()_+-]", "", " ".join(cpu.split()))[:40]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{cpu}, {cores} cores, numpy {np.__version__}, numexpr {ne.__version__}, "
            f"{datetime.date.today().isoformat()}")


def threshold(sizes: list[int], ratios: list[float]) -> int | None:
    """Smallest size from which every ratio (numpy time / numexpr time) is at least MARGIN."""
    start = None
    for n, r in zip(reversed(sizes), reversed(ratios), strict=True):
        if r < MARGIN:
            break
        start = n
    return start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="measure and print, write nothing")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved samples per engine (default 9)")
    parser.add_argument("--numexpr-threads", type=int, default=None,
                        help="numexpr's thread count (default: numexpr's own, as generated modules run)")
    args = parser.parse_args(argv)
    if args.numexpr_threads:
        ne.set_num_threads(args.numexpr_threads)

    rng = np.random.default_rng(0)
    began = time.perf_counter()
    print(f"numpy (out=) vs numexpr.evaluate on {machine()}; numexpr threads: {ne.get_num_threads()}")
    print(f"median of {args.repeats} interleaved samples per point; ratio = numpy / numexpr "
          f"(> 1: numexpr faster); threshold margin {MARGIN:.2f}\n")
    result: dict = {}
    summary: dict[tuple[str, str], list[float]] = {}
    for dtype in DTYPES:
        result[dtype] = {}
        for kind, cases in CASES.items():
            per_case = {}
            for label, expr in cases:
                case, rows = Case(expr), []
                for n in SIZES:
                    run_np, run_ne, out = case.callables(np.dtype(dtype), n, rng)
                    t_np, t_ne = median_times([run_np, run_ne], args.repeats)
                    rows.append((n, t_np, t_ne))
                    assert out.dtype == np.dtype(dtype)
                per_case[label] = rows
                print(f"{dtype} {kind}: {label}")
                print(f"  {'size':>9}  {'numpy us':>10}  {'numexpr us':>10}  {'ratio':>6}")
                for n, t_np, t_ne in rows:
                    print(f"  {n:>9}  {t_np * 1e6:>10.1f}  {t_ne * 1e6:>10.1f}  {t_np / t_ne:>6.2f}")
            geo = [math.exp(statistics.fmean(math.log(rows[i][1] / rows[i][2]) for rows in per_case.values()))
                   for i in range(len(SIZES))]
            summary[dtype, kind] = geo
            result[dtype][kind] = threshold(SIZES, geo)
            print()
    result["measured_on"] = machine()

    print("geometric mean of numpy/numexpr over each kind's kernels (> 1: numexpr faster)")
    print(f"  {'size':>9}" + "".join(f"  {f'{d} {k}':>14}" for d, k in summary))
    for i, n in enumerate(SIZES):
        print(f"  {n:>9}" + "".join(f"  {g[i]:>14.2f}" for g in summary.values()))
    print("\nthresholds (numexpr from this many elements; None: numpy at every size):")
    for dtype in DTYPES:
        print(f"  {dtype}: light {result[dtype]['light']}, heavy {result[dtype]['heavy']}")
    print(f"measured in {time.perf_counter() - began:.0f} s")
    assert len(calib.thresholds(result)) == 2 * len(DTYPES)
    if args.dry_run:
        return 0
    write_text(calib.PATH, json.dumps(result, indent=2) + "\n")
    print(f"wrote {calib.PATH.relative_to(ROOT)}; run `make generate` to bake it into the modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
