"""Which kernels numpy's OpenBLAS runs on this machine, and whether the CPU could run faster ones.

A generated module leaves its matrix products to numpy's BLAS. numpy's wheels carry an OpenBLAS
built for many CPUs that picks its kernels once, when it loads, from the CPU it recognises,
unless `OPENBLAS_CORETYPE` in the environment names a kernel set; nothing changes the choice
later. Kernels older than the CPU cost time: this project's machine (AMD EPYC, family 26, with
AVX-512) sets `OPENBLAS_CORETYPE=Haswell` in its environment, so OpenBLAS 0.3.31 runs its AVX2
kernels there, and its own choice, SkylakeX (AVX-512), did the products of the CNN and LSTM
passes in 0.59-0.87x the time (`bench/blas_core.py`). A CPU newer than the OpenBLAS release can
end up the same way without any setting. `symgrad calibrate` says so, with the difference
measured in two child processes; it changes nothing itself: the choice belongs to the
environment that starts Python.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ENV = "OPENBLAS_CORETYPE"
SUGGESTED = "SkylakeX"
#: OpenBLAS's names of its kernel sets that use AVX-512
AVX512_KERNELS = frozenset({"skylakex", "cooperlake", "sapphirerapids"})
#: the AVX-512 subsets OpenBLAS's SkylakeX kernels need (Linux's /proc/cpuinfo names)
SKYLAKEX_FLAGS = frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})
SHAPE = (32, 128, 512)  # an LSTM step's product: (32, 128) @ (128, 512)

# Timed in a fresh Python, so that its OpenBLAS loads with the child's OPENBLAS_CORETYPE.
_CHILD = """
import json, sys, time
import numpy as np
m, k, n = {shape}
best = {{}}
for dt in ("float32", "float64"):
    a, b, c = np.ones((m, k), dt), np.ones((k, n), dt), np.empty((m, n), dt)
    np.matmul(a, b, out=c)
    best[dt] = float("inf")
    for _ in range({repeats}):
        t0 = time.perf_counter()
        for _ in range(20):
            np.matmul(a, b, out=c)
        best[dt] = min(best[dt], (time.perf_counter() - t0) / 20)
print(json.dumps(best))
"""


def openblas() -> tuple[str, str] | None:
    """(version, kernel set) of numpy's OpenBLAS in this process; None when threadpoolctl is not
    installed or numpy's BLAS is another library."""
    try:
        import numpy as np  # noqa: F401  (loads numpy's BLAS, so that threadpoolctl sees it)
        import threadpoolctl
    except ImportError:
        return None
    found = [lib for lib in threadpoolctl.threadpool_info() if lib.get("internal_api") == "openblas"]
    found.sort(key=lambda lib: "numpy" not in str(lib.get("filepath", "")))  # numpy's own first
    if not found:
        return None
    return str(found[0].get("version")), str(found[0].get("architecture"))


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo is missing)."""
    if cpuinfo is None:
        try:
            cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def advice(kernels: str | None, flags: frozenset[str]) -> str | None:
    """The OPENBLAS_CORETYPE to suggest, or None: only when OpenBLAS runs kernels without
    AVX-512 on a CPU that has every AVX-512 subset its SkylakeX kernels use."""
    if not kernels or kernels.lower() in AVX512_KERNELS or not SKYLAKEX_FLAGS <= flags:
        return None
    return SUGGESTED


def product_times(coretype: str | None, repeats: int = 5) -> dict[str, float]:
    """Best seconds of one SHAPE product per dtype in a fresh Python on one BLAS thread, its
    OpenBLAS loaded with OPENBLAS_CORETYPE=coretype (None: as this environment has it)."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    if coretype is not None:
        env[ENV] = coretype
    code = _CHILD.format(shape=SHAPE, repeats=int(repeats))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(measure: bool = True) -> list[str]:
    """The lines `symgrad calibrate` prints about numpy's BLAS (with `measure`, the suggested
    kernels timed against the present ones in two child processes)."""
    found = openblas()
    if found is None:
        return ["numpy's BLAS: not OpenBLAS, or not known here (threadpoolctl is not installed)"]
    version, kernels = found
    chosen = os.environ.get(ENV)
    lines = [f"numpy's BLAS: OpenBLAS {version}, {kernels} kernels"
             + (f" (the environment sets {ENV}={chosen})" if chosen else "")]
    suggested = advice(kernels, cpu_flags())
    if suggested is None:
        return lines
    lines.append(f"  this CPU has AVX-512, which the {kernels} kernels leave unused: {ENV}={suggested} "
                 "in the environment before Python starts selects OpenBLAS's AVX-512 kernels")
    if measure:
        try:
            now, then = product_times(None), product_times(suggested)
        except (subprocess.SubprocessError, OSError, ValueError, KeyError) as error:
            lines.append(f"  (not measured: {error})")
        else:
            m, k, n = SHAPE
            ratios = ", ".join(f"{dt} {then[dt] / now[dt]:.2f}x" for dt in now)
            lines.append(f"  measured, a ({m}, {k}) @ ({k}, {n}) product on one thread with them: "
                         f"{ratios} the time")
    return lines
