"""The pipeline as functions: find a model, derive it, generate its module, load that module.

The command line and the Python API both go through here, so they behave the same.
"""
from __future__ import annotations

import importlib
import importlib.util
import pathlib
import runpy
import sys
import tempfile
import types
import warnings

from codegen.emit import generate, write_module
from symbolic.derivation import Derivation, derive
from symbolic.errors import SymgradError
from symbolic.model import Model
from symgrad.models import BUILTINS

GENERATED = pathlib.Path(__file__).resolve().parent.parent / "generated"


def resolve(spec: str | Model) -> Model:
    """A Model from a built-in name or from the path of a Python file that defines one."""
    if isinstance(spec, Model):
        return spec
    if spec in BUILTINS:
        return BUILTINS[spec].build()
    path = pathlib.Path(spec)
    if path.suffix != ".py":
        raise SymgradError(f"unknown model {spec!r}: not a built-in (see `symgrad list`) "
                           "and not a .py file")
    if not path.is_file():
        raise SymgradError(f"model file {spec} does not exist")
    return load_model_file(path)


def load_model_file(path: pathlib.Path) -> Model:
    """Run a user's model file; it must define `model` (a Model) or `build_model()`."""
    try:
        namespace = runpy.run_path(str(path), run_name="__symgrad_model__")
    except SymgradError:
        raise
    except SyntaxError as e:
        raise SymgradError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # a user's file: report where, not a traceback
        line = _user_line(e, path)
        raise SymgradError(f"{path}{line}: {type(e).__name__}: {e}") from None
    found = namespace.get("model")
    if found is None and callable(namespace.get("build_model")):
        try:
            found = namespace["build_model"]()
        except SymgradError:
            raise
        except Exception as e:
            raise SymgradError(f"{path}{_user_line(e, path)}: {type(e).__name__}: {e}") from None
    if found is None:
        models = [v for v in namespace.values() if isinstance(v, Model)]
        found = models[0] if len(models) == 1 else None
    if not isinstance(found, Model):
        raise SymgradError(f"{path} defines no model: assign a symgrad Model to `model` "
                           "or define build_model()")
    return found


def _user_line(error: BaseException, path: pathlib.Path) -> str:
    tb = error.__traceback__
    line = ""
    while tb is not None:
        if pathlib.Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line


def derivation(spec: str | Model) -> Derivation:
    return derive(resolve(spec))


def source(spec: str | Model, backend: str = "auto") -> str:
    """The generated module's source for a model."""
    return generate(derivation(spec), backend)


def write(spec: str | Model, out: str | pathlib.Path | None = None, backend: str = "auto") -> pathlib.Path:
    """Derive, generate and write `<out>/<model>.py` (atomically); return its path."""
    model = resolve(spec)
    text = generate(derive(model), backend)  # fully built before anything is written
    folder = pathlib.Path(out) if out is not None else pathlib.Path("generated")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SymgradError(f"cannot create output folder {folder}: {e.strerror}") from None
    try:
        return write_module(text, folder, model.name)
    except OSError as e:
        raise SymgradError(f"cannot write {folder / (model.name + '.py')}: {e.strerror}") from None


def load_module(spec: str | Model, backend: str = "auto") -> types.ModuleType:
    """The generated module for a model: the committed one for a built-in (auto backend),
    else generated now into a private temporary folder and imported from there."""
    if isinstance(spec, str) and spec in BUILTINS and backend == "auto":
        return importlib.import_module(f"generated.{spec}")
    model = resolve(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = generate(derive(model), backend)
    return import_source(text, model.name)


def import_source(text: str, name: str) -> types.ModuleType:
    folder = pathlib.Path(tempfile.mkdtemp(prefix="symgrad-"))
    path = write_module(text, folder, name)
    spec = importlib.util.spec_from_file_location(f"symgrad_generated_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
