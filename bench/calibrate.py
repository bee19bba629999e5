"""Where numexpr beats numpy, per numexpr thread count: the full table behind the calibration.

symgrad itself measures the machine it runs on with a quick version of this (two kernels, on
first use, cached in the user's cache folder; `symgrad calibrate`, see
`symgrad.codegen.calibration`). This script measures more, to show the crossover: for the
kernels `codegen.kernels.build_kernel` emits, "light" (arithmetic only) and "heavy" (with
transcendental functions), in float32 and float64, over sizes from 1024 to 4194304 elements
(factor 2), it times the two forms symgrad generates, for numexpr on 1, 2, 4, ... threads up to
the machine's cores:

* numpy: the kernel's ufunc calls with `out=` (scratch buffers included; numpy is one thread),
* numexpr: `ne.evaluate(source, local_dict={...operands, typed constants}, out=out)`, as a
  generated module calls it.

Each time is the median of interleaved repeats (numpy, numexpr, numpy, ...), so machine noise
hits both engines alike. For each (dtype, kind) the threshold is the smallest measured size
from which numexpr is faster by at least 10% at that size and every larger one, judged on the
geometric mean over the kind's kernels of numpy time / numexpr time; "never" if no such size.

    python bench/calibrate.py                       # every thread count up to the cores
    python bench/calibrate.py --threads 1 --tables  # one thread count, with per-kernel tables
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numexpr as ne  # noqa: E402
import numpy as np  # noqa: E402
import sympy  # noqa: E402
from symgrad.codegen import calibration as calib  # noqa: E402
from symgrad.codegen import lowering  # noqa: E402
from symgrad.codegen.kernels import build_kernel  # noqa: E402
from symgrad.symbolic import functions  # noqa: E402

a, b, c = sympy.symbols("a b c", real=True)
HELPERS: dict = {"np": np}
exec(lowering.HELPERS["_zeros"], HELPERS)  # the helpers a kernel's numpy lines may call

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


def kernel(expr: sympy.Expr) -> calib.Kernel:
    """The kernel's two generated forms, built by the project's kernel builder."""
    names = tuple(sorted(s.name for s in expr.free_symbols))
    k = build_kernel(expr, names)
    if k.numexpr_source is None:
        raise SystemExit(f"kernel {expr} has no numexpr form")
    return calib.Kernel(names, k.numpy_lines, k.numexpr_source, k.numexpr_constants, HELPERS)


def thread_counts() -> list[int]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return [*counts, cores]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, action="append",
                        help="numexpr thread count to measure (repeatable; default 1, 2, 4, ... cores)")
    parser.add_argument("--repeats", type=int, default=9, help="interleaved samples per engine (default 9)")
    parser.add_argument("--tables", action="store_true", help="print each kernel's times, not only ratios")
    args = parser.parse_args(argv)
    kernels = {kind: [kernel(e) for _, e in cases] for kind, cases in CASES.items()}
    labels = {kind: [label for label, _ in cases] for kind, cases in CASES.items()}
    began = time.perf_counter()
    summary: dict[int, dict] = {}
    for threads in args.threads or thread_counts():
        ne.set_num_threads(threads)
        print(f"== numexpr on {threads} thread(s); {calib.describe(calib.key())}")
        geos: dict[tuple[str, str], list[float]] = {}

        def report(dtype, kind, sizes, rows, geo, geos=geos):
            geos[dtype, kind] = geo
            if not args.tables:
                return
            for label, times in zip(labels[kind], rows, strict=True):
                print(f"{dtype} {kind}: {label}")
                print(f"  {'size':>9}  {'numpy us':>10}  {'numexpr us':>10}  {'ratio':>6}")
                for n, (t_np, t_ne) in zip(sizes, times, strict=True):
                    print(f"  {n:>9}  {t_np * 1e6:>10.1f}  {t_ne * 1e6:>10.1f}  {t_np / t_ne:>6.2f}")

        result = calib.measure(SIZES, args.repeats, kernels, report)
        summary[threads] = result
        print("geometric mean of numpy time / numexpr time (> 1: numexpr faster)")
        print(f"  {'size':>9}" + "".join(f"  {f'{d} {k}':>14}" for d, k in geos))
        for i, n in enumerate(SIZES):
            print(f"  {n:>9}" + "".join(f"  {g[i]:>14.2f}" for g in geos.values()))
        print()
    print("numexpr wins from (elements; never: numpy at every size up to 4194304)")
    columns = [(dt, kind) for dt in calib.DTYPES for kind in calib.KINDS]
    print(f"  {'threads':>7}" + "".join(f"  {f'{d} {k}':>14}" for d, k in columns))
    for threads, result in summary.items():
        print(f"  {threads:>7}" + "".join(f"  {str(result[d][k] or 'never'):>14}" for d, k in columns))
    print(f"measured in {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
