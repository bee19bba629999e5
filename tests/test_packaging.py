"""One installed namespace: everything is imported as `symgrad.*`, nothing as a top-level
`symbolic`, `codegen`, `training` or `generated` that a user's own files could shadow."""
from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OLD_IMPORT = re.compile(r"^\s*(from|import)\s+(symbolic|codegen|training|generated)\b", re.M)


def test_no_code_imports_the_engine_packages_by_their_folder_names():
    offenders = []
    for folder in ("symbolic", "codegen", "training", "generated", "symgrad", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            if OLD_IMPORT.search(path.read_text()):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"top-level engine imports (use symgrad.<package>): {offenders}"


def test_a_users_training_py_and_codegen_folder_do_not_shadow_symgrad(tmp_path):
    (tmp_path / "training.py").write_text("raise SystemExit('the user file was imported')\n")
    (tmp_path / "codegen").mkdir()
    (tmp_path / "codegen" / "__init__.py").write_text("raise SystemExit('the user folder was imported')\n")
    code = ("import symgrad as sg; m = sg.BUILTINS['softmax_regression'].build(); "
            "d = sg.derive(m); import symgrad.training.run; print(type(d).__name__)")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "Derivation"


def test_a_generated_module_imports_without_sympy():
    code = "import sys, symgrad.generated.mlp_tanh; print('sympy' in sys.modules, 'jinja2' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "False"]


def test_star_import_keeps_the_builtins():
    namespace: dict = {}
    exec("from symgrad import *", namespace)
    assert "Model" in namespace and "derive" in namespace
    assert "sum" not in namespace and "abs" not in namespace
