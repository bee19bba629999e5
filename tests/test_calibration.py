"""Calibration belongs to the machine that runs the code: generated modules carry no
development machine's thresholds, symgrad measures on first use and caches the result in the
user's cache folder (here always a scratch folder), and `symgrad calibrate` measures again."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import sympy
from symgrad.codegen import calibration
from symgrad.codegen.kernels import build_kernel

from symgrad import pipeline
from symgrad.cli import main
from symgrad.models import BUILTINS

ALL_NUMPY = {("f", False): None, ("f", True): None, ("d", False): None, ("d", True): None}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder of this test's own, and no measurement remembered in memory."""
    monkeypatch.setenv(calibration.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setattr(calibration, "_CURRENT", None)
    return tmp_path / "cache"


def test_the_quick_kernels_are_what_the_generator_emits():
    a, b = sympy.symbols("a b", real=True)
    exprs = {"light": a * b * (1 - b), "heavy": sympy.tanh(a + b)}
    for kind, (_, names, lines, source, constants) in calibration.QUICK_KERNELS.items():
        k = build_kernel(exprs[kind], names)
        assert k.numpy_lines == lines and k.numexpr_source == source
        assert {n: float(v) for n, v in k.numexpr_constants.items()} == constants
        assert k.heavy == (kind == "heavy")


def test_committed_modules_bake_in_no_machine():
    from symgrad.training.optimizers import OPTIMIZERS

    names = [f"symgrad.generated.{n}" for n in BUILTINS]
    names += [f"symgrad.training.kernels.{n}" for n in OPTIMIZERS]
    for name in names:
        module = __import__(name, fromlist=["_"])
        source = open(module.__file__).read()
        assert "Measured by" not in source and "EPYC" not in source, name
        if module.BACKEND == "auto":
            assert "_NUMEXPR_FROM: dict[tuple[str, bool], int | None] = {\n    ('f', False): None," in source


def test_first_use_measures_once_and_caches(cache, monkeypatch):
    assert calibration.cached() is None
    data = calibration.current()
    path = calibration.cache_file()
    assert path.parent == cache and path.is_file()
    stored = json.loads(path.read_text())
    assert stored["key"] == calibration.key() and set(calibration.thresholds(stored)) == set(ALL_NUMPY)
    assert stored == data
    for value in calibration.thresholds(data).values():
        assert value is None or value in calibration.QUICK_SIZES

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again although the cache holds this machine")

    monkeypatch.setattr(calibration, "measure", no_measuring)
    monkeypatch.setattr(calibration, "_CURRENT", None)  # a new process: the file, not memory
    assert calibration.current() == data


def test_the_cache_is_keyed_by_machine_and_versions(cache, monkeypatch):
    calibration.save({**calibration.measure(sizes=[4096], repeats=1)})
    assert calibration.cached() is not None
    real = calibration.key()
    monkeypatch.setattr(calibration, "key", lambda: {**real, "numpy": "0.0"})
    assert calibration.cached() is None  # another numpy: not this measurement


def test_an_unreadable_cache_file_is_measured_again(cache, monkeypatch):
    path = calibration.cache_file()
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert calibration.cached() is None
    measured = []
    real_measure = calibration.measure
    monkeypatch.setattr(calibration, "measure",
                        lambda: measured.append(1) or real_measure(sizes=[4096], repeats=1))
    calibration.current()
    assert measured == [1] and calibration.cached() is not None


def test_threshold_is_where_numexpr_wins_from_then_on():
    sizes = [1, 2, 4, 8]
    assert calibration.threshold(sizes, [0.5, 1.2, 0.9, 1.5]) == 8
    assert calibration.threshold(sizes, [0.5, 1.2, 1.3, 1.5]) == 2
    assert calibration.threshold(sizes, [1.2, 1.2, 1.3, 1.0]) is None


def test_install_gives_a_module_this_machines_thresholds(cache, monkeypatch):
    wanted = {"float32": {"light": None, "heavy": 262144}, "float64": {"light": 1048576, "heavy": 65536}}
    monkeypatch.setattr(calibration, "current", lambda: wanted)
    module = pipeline.load_module(BUILTINS["softmax_regression"].sparse())  # a fresh module
    assert module._NUMEXPR_FROM == {("f", False): None, ("f", True): 262144, ("d", False): 1048576,
                                    ("d", True): 65536}
    # numpy for small arrays, numexpr from the threshold on, the same numbers either way
    out = np.empty(70000, dtype=np.float64)
    assert module._use_numexpr(out, True) and not module._use_numexpr(out, False)
    forced = pipeline.load_module(BUILTINS["softmax_regression"].sparse(), backend="numpy")
    assert not hasattr(forced, "_NUMEXPR_FROM")  # a forced engine needs no calibration


@pytest.mark.parametrize("bad, message", [
    ({("x", False): 1}, "unknown kernel kind"),
    ({("f", False): -1}, "non-negative int or None"),
    ({("f", True): 1.5}, "non-negative int or None"),
])
def test_set_numexpr_thresholds_checks_what_it_is_given(bad, message):
    module = pipeline.load_module("mlp_tanh")
    before = dict(module._NUMEXPR_FROM)
    with pytest.raises((KeyError, ValueError), match=message):
        module.set_numexpr_thresholds(bad)
    assert module._NUMEXPR_FROM == before


def test_symgrad_calibrate_measures_and_shows(cache, capsys):
    assert main(["calibrate", "--show"]) == 0
    assert "not measured on this machine yet" in capsys.readouterr().out
    assert main(["calibrate", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "float32: light " in out and f"cached in {calibration.cache_file()}" in out
    assert "numpy's BLAS: " in out
    assert main(["calibrate", "--show"]) == 0
    out = capsys.readouterr().out
    assert "float64: light " in out and "numpy's BLAS: " in out and "measured, " not in out
    assert main(["calibrate", "--repeats", "0"]) == 1
    assert "--repeats must be a positive integer" in capsys.readouterr().err


def test_calibrating_and_installing_need_no_sympy():
    """A run's module loads for prediction where only numpy and numexpr are installed."""
    code = ("import sys\nfrom symgrad.codegen import calibration\nimport symgrad.generated.mlp_tanh as m\n"
            "calibration.install(m)\nprint('sympy' in sys.modules, m._NUMEXPR_FROM[('f', True)])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "None"]  # the suite's scratch cache: numpy everywhere


def test_blas_advice_only_for_kernels_without_avx512_on_a_cpu_with_it():
    """`symgrad calibrate` suggests OPENBLAS_CORETYPE=SkylakeX only where OpenBLAS runs AVX2
    kernels on a CPU that has every AVX-512 subset the SkylakeX kernels use."""
    from symgrad.codegen import blas

    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512cd avx512bw avx512dq avx512vl\n"
    flags = blas.cpu_flags(cpuinfo)
    assert {"avx2", "avx512vl"} <= flags and "processor" not in flags
    assert blas.advice("Haswell", flags) == "SkylakeX"
    assert blas.advice("Zen", flags) == "SkylakeX"
    assert blas.advice("SkylakeX", flags) is None
    assert blas.advice("SapphireRapids", flags) is None
    assert blas.advice("Haswell", flags - {"avx512bw"}) is None
    assert blas.advice(None, flags) is None
    assert blas.cpu_flags("model name\t: no flags line\n") == frozenset()


def test_blas_report_names_numpys_openblas_kernels():
    from symgrad.codegen import blas

    found = blas.openblas()
    lines = blas.report(measure=False)
    if found is None:
        assert lines == ["numpy's BLAS: not OpenBLAS, or not known here (threadpoolctl is not installed)"]
    else:
        assert lines[0].startswith(f"numpy's BLAS: OpenBLAS {found[0]}, {found[1]} kernels")
        assert (len(lines) > 1) == (blas.advice(found[1], blas.cpu_flags()) is not None)


def test_blas_product_times_in_a_child_with_the_kernels_named():
    from symgrad.codegen import blas

    times = blas.product_times("Haswell", repeats=1)
    assert set(times) == {"float32", "float64"} and all(0 < t < 1 for t in times.values())
