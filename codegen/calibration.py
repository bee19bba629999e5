"""The auto backend's rule, measured on the machine that runs the code: from how many elements
numexpr beats numpy, per dtype and kind of kernel.

No development machine's numbers are baked into a generated module: its `_NUMEXPR_FROM` starts
all None (numpy for every kernel). symgrad measures the user's machine once, on first use
(`current()`: two kernels as the code generator emits them, float32 and float64, 4096 to
1048576 elements; about half a second), keeps the result in the user's cache folder under a
key of the CPU, its core count, numexpr's thread count and the numpy and numexpr versions, and
hands it to each module it loads (`install`). `symgrad calibrate` measures again;
`bench/calibrate.py` prints the full table, per numexpr thread count.

A kernel is "heavy" when it has a transcendental function (exp, tanh, ...), "light" when it is
only arithmetic. A threshold of None means numexpr never won at the sizes measured.
Only the standard library, numpy and numexpr are needed here (no sympy): the quick kernels are
written as the generator emits them, and a test keeps them equal to `build_kernel`'s output.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import platform
import re
import statistics
import sys
import time
import types
from collections.abc import Callable

import numpy as np

DTYPES = ("float32", "float64")
KINDS = ("light", "heavy")
MARGIN = 1.10  # numexpr must be at least 10% faster
SAMPLE_S = 0.002  # aim for samples of about 2 ms (several calls each for small sizes)
QUICK_SIZES = [4096 << 2 * i for i in range(5)]  # 4096 ... 1048576, factor 4
FORMAT = 1  # of the cache file
ENV_CACHE = "SYMGRAD_CACHE_DIR"  # overrides the cache folder (tests point it at a scratch folder)

#: The quick calibration's kernels, as `codegen.kernels.build_kernel` emits them:
#: kind -> (label, operands, numpy lines writing `out`, numexpr source, numexpr constants).
QUICK_KERNELS = {
    "light": ("a*b*(1-b)", ("a", "b"),
              ["np.subtract(1.0, b, out)", "np.multiply(out, a, out)", "np.multiply(out, b, out)"],
              "a*b*(k0 - b)", {"k0": 1.0}),
    "heavy": ("tanh(a + b)", ("a", "b"), ["np.add(a, b, out)", "np.tanh(out, out)"],
              "tanh(a + b)", {}),
}


class Kernel:
    """One fused kernel in its two generated forms: numpy ufuncs with `out=`, and numexpr."""

    def __init__(self, names: tuple[str, ...], numpy_lines: list[str], source: str, constants: dict,
                 helpers: dict | None = None):
        """`helpers`: module-level functions the numpy lines call (a generated module's `_zeros`)."""
        text = f"def _numpy({', '.join(names)}, out):\n" + "".join(f"    {ln}\n" for ln in numpy_lines)
        env = {"np": np, **(helpers or {})}
        exec(text + "    return out\n", env)  # the generator's own lines, not user input
        self.names, self.numpy_fn = names, env["_numpy"]
        self.source, self.constants = source, {k: float(v) for k, v in constants.items()}

    def callables(self, dtype: np.dtype, n: int, rng: np.random.Generator):
        """(numpy callable, numexpr callable, output array) over fresh operands of n elements."""
        import numexpr as ne

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
            return ne.evaluate(source, local_dict={**arrays, **{c: kt(v) for c, v in constants.items()}},
                               out=out)

        return run_numpy, run_numexpr, out


def median_times(fns: list[Callable], repeats: int, sample_s: float = SAMPLE_S) -> list[float]:
    """Median seconds per call of each function, sampled round-robin so that the machine's
    changing load reaches all alike."""
    for f in fns:  # warm up (numexpr compiles and caches its program on first use)
        f()
    t0 = time.perf_counter()
    fns[0]()
    one = max(time.perf_counter() - t0, 1e-7)
    number = max(1, int(sample_s / one))
    samples: list[list[float]] = [[] for _ in fns]
    clock = time.perf_counter
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t0 = clock()
            for _ in range(number):
                f()
            samples[i].append((clock() - t0) / number)
    return [statistics.median(s) for s in samples]


def threshold(sizes: list[int], ratios: list[float], margin: float = MARGIN) -> int | None:
    """Smallest size from which every ratio (numpy time / numexpr time) is at least `margin`."""
    start = None
    for n, r in zip(reversed(sizes), reversed(ratios), strict=True):
        if r < margin:
            break
        start = n
    return start


def geometric_mean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def cpu() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1]
                break
    except OSError:
        pass
    return re.sub(r"[^A-Za-z0-9 .,@()_+-]", "", " ".join(name.split()))[:40]


def key() -> dict:
    """What a measurement holds for: the CPU, its cores, numexpr's threads, the versions."""
    import numexpr as ne

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu(), "cores": cores, "numexpr_threads": ne.get_num_threads(),
            "numpy": np.__version__, "numexpr": ne.__version__, "python": platform.python_version()}


def describe(k: dict) -> str:
    return (f"{k['cpu']}, {k['cores']} cores, numexpr {k['numexpr']} on {k['numexpr_threads']} threads, "
            f"numpy {k['numpy']}")


def measure(sizes: list[int] = QUICK_SIZES, repeats: int = 3,
            kernels: dict[str, list[Kernel]] | None = None, report: Callable | None = None) -> dict:
    """Time numpy against numexpr on this machine and return the thresholds:
    {"float32": {"light": n or None, "heavy": ...}, "float64": {...}, "key": key(), ...}.

    Sizes are measured from the largest down, and only until numexpr stops winning (the
    threshold is the smallest size from which it wins at every larger one), so a machine where
    it never wins costs one size per dtype and kind. With `report`, every size is measured and
    `report(dtype, kind, sizes, per_kernel_rows, geometric_means)` sees the whole table."""
    if kernels is None:
        kernels = {kind: [Kernel(names, lines, source, constants)]
                   for kind, (_, names, lines, source, constants) in QUICK_KERNELS.items()}
    rng = np.random.default_rng(0)
    began = time.perf_counter()
    result: dict = {}
    for dtype in DTYPES:
        result[dtype] = {}
        for kind in KINDS:
            rows: list[list[tuple[float, float]]] = [[] for _ in kernels[kind]]
            geo: list[float] = []
            for n in reversed(sizes):
                for times, kernel in zip(rows, kernels[kind], strict=True):
                    run_np, run_ne, _ = kernel.callables(np.dtype(dtype), n, rng)
                    times.insert(0, tuple(median_times([run_np, run_ne], repeats)))
                geo.insert(0, geometric_mean([times[0][0] / times[0][1] for times in rows]))
                if geo[0] < MARGIN and report is None:
                    break
            result[dtype][kind] = threshold(sizes[len(sizes) - len(geo):], geo)
            if report is not None:
                report(dtype, kind, sizes, rows, geo)
    result.update({"key": key(), "format": FORMAT, "sizes": [sizes[0], sizes[-1]], "repeats": repeats,
                   "seconds": round(time.perf_counter() - began, 3)})
    return result


def thresholds(calibration: dict) -> dict[tuple[str, bool], int | None]:
    """{(dtype char, heavy): smallest size at which numexpr wins, or None}: what a generated
    module's `set_numexpr_thresholds` takes."""
    return {({"float32": "f", "float64": "d"}[dt], kind == "heavy"): calibration[dt][kind]
            for dt in DTYPES for kind in KINDS}


# -- the cache ---------------------------------------------------------------------------------
def cache_dir() -> pathlib.Path:
    """$SYMGRAD_CACHE_DIR, else the platform's user cache folder: $XDG_CACHE_HOME/symgrad
    (~/.cache/symgrad) on Linux, ~/Library/Caches/symgrad on macOS, %LOCALAPPDATA%/symgrad/Cache
    on Windows."""
    if os.environ.get(ENV_CACHE):
        return pathlib.Path(os.environ[ENV_CACHE])
    home = pathlib.Path.home()
    if sys.platform == "win32":
        return pathlib.Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local")) / "symgrad" / "Cache"
    if sys.platform == "darwin":
        return home / "Library" / "Caches" / "symgrad"
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "symgrad"


def cache_file(k: dict | None = None) -> pathlib.Path:
    digest = hashlib.sha256(json.dumps(k or key(), sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"calibration-{digest}.json"


def cached() -> dict | None:
    """This machine's stored measurement, or None (none yet, or unreadable)."""
    k = key()
    try:
        data = json.loads(cache_file(k).read_text())
        if data.get("format") == FORMAT and data.get("key") == k:
            thresholds(data)  # every dtype and kind present
            return data
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def save(calibration: dict) -> pathlib.Path:
    """Store a measurement in the cache folder (atomically: never a half-written file)."""
    from symgrad.codegen.atomic import write_text

    path = cache_file(calibration["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(calibration, indent=2, sort_keys=True) + "\n")
    return path


_CURRENT: dict | None = None
_ADOPTED: dict | None = None  # another process's calibration, taken over by this one


def adopt(calibration: dict | None) -> None:
    """Use `calibration` (another process's `current()`) in this process from now on, whatever
    this process's own key. A Dask worker adopts its client's: the backend choices, and so the
    last bits of every figure, are then those of `symgrad train` in the client's process (the
    worker's one numexpr thread would otherwise key a measurement of its own, taken under the
    load of the tasks beside it), and no worker spends seconds measuring. None: this process's
    own again."""
    global _ADOPTED
    if calibration is not None:
        thresholds(calibration)  # every dtype and kind present, or KeyError
    _ADOPTED = calibration


def current() -> dict:
    """This machine's calibration: measured once (and cached) on first use. A cache folder
    that cannot be written costs a measurement per process, not an error."""
    global _CURRENT
    if _ADOPTED is not None:
        return _ADOPTED
    if _CURRENT is not None and _CURRENT["key"] == key():
        return _CURRENT
    data = cached()
    if data is None:
        data = measure()
        try:
            save(data)
        except OSError:
            pass
    _CURRENT = data
    return data


def recalibrate(repeats: int = 3) -> tuple[dict, pathlib.Path]:
    """Measure again and replace the cached result (`symgrad calibrate`)."""
    global _CURRENT
    data = measure(repeats=repeats)
    path = save(data)
    _CURRENT = data
    return data, path


def summary(calibration: dict, path: pathlib.Path) -> str:
    """The thresholds as `symgrad calibrate` prints them."""
    lines = [f"numexpr beats numpy by {MARGIN - 1:.0%} from (elements; never: numpy at every size "
             f"{calibration['sizes'][0]}-{calibration['sizes'][1]}):"]
    for dt in DTYPES:
        lines.append(f"  {dt}: " + ", ".join(f"{kind} {calibration[dt][kind] or 'never'}" for kind in KINDS))
    lines.append(f"on {describe(calibration['key'])}; measured in {calibration['seconds']:.2f} s")
    lines.append(f"cached in {path}")
    return "\n".join(lines)


def install(module: types.ModuleType) -> types.ModuleType:
    """Give a generated module with the auto backend this machine's thresholds."""
    if getattr(module, "BACKEND", None) == "auto" and hasattr(module, "set_numexpr_thresholds"):
        module.set_numexpr_thresholds(thresholds(current()))
    return module
