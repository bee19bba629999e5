"""The pipeline as functions: find a model, derive it, generate its module, load that module.

The command line and the Python API both go through here, so they behave the same.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.abc
import importlib.util
import pathlib
import runpy
import sys
import types
import warnings

from symgrad.codegen import calibration, stamp
from symgrad.codegen.atomic import reason
from symgrad.codegen.emit import generate, write_module
from symgrad.models import BUILTINS
from symgrad.symbolic.derivation import Derivation, derive
from symgrad.symbolic.errors import SymgradError, SymgradWarning
from symgrad.symbolic.model import Model

#: the folder of the committed generated modules (the package symgrad.generated)
GENERATED = pathlib.Path(importlib.util.find_spec("symgrad.generated").origin).parent


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
    """Run a user's model file; it must define `model` (a Model) or `build_model()`.

    The file's folder comes first on the import path while it runs, as for `python FILE`, so
    it can import a module beside it (`from layers import dense`)."""
    folder = str(pathlib.Path(path).resolve().parent)
    sys.path.insert(0, folder)
    try:
        namespace = runpy.run_path(str(path), run_name="__symgrad_model__")
    except SymgradError:
        raise
    except SystemExit as e:  # exit() in a model file: no model, and not a success either
        raise SymgradError(f"{path}{_user_line(e, path)}: the model file called exit({e.code!r}) "
                           "instead of defining `model`") from None
    except SyntaxError as e:
        raise SymgradError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # a user's file: report where, not a traceback
        line = _user_line(e, path)
        raise SymgradError(f"{path}{line}: {type(e).__name__}: {e}") from None
    else:
        found = namespace.get("model")
        if found is None and callable(namespace.get("build_model")):
            try:
                found = namespace["build_model"]()
            except SymgradError:
                raise
            except SystemExit as e:
                raise SymgradError(f"{path}{_user_line(e, path)}: build_model() called exit({e.code!r}) "
                                   "instead of returning a model") from None
            except Exception as e:
                raise SymgradError(f"{path}{_user_line(e, path)}: {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(folder)
    if found is None:
        models = [v for v in namespace.values() if isinstance(v, Model)]
        found = models[0] if len(models) == 1 else None
    if not isinstance(found, Model):
        raise SymgradError(f"{path} defines no model: assign a symgrad Model to `model` "
                           "or define build_model()")
    found.origin = pathlib.Path(path).as_posix()
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
    target = folder / f"{model.name}.py"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SymgradError(f"cannot create output folder {folder}: {reason(e)}") from None
    try:
        existing = target.read_text(errors="replace") if target.exists() else None
    except OSError as e:  # a name too long for the file system, a folder in the way
        raise SymgradError(f"cannot write {target}: {reason(e)}") from None
    problem = stamp.check(existing) if existing is not None else None
    if problem is not None:
        raise SymgradError(f"refusing to overwrite {target}: {problem} (choose another --out folder, "
                           "or move the file away)")
    return write_module(text, folder, model.name)


def load_module(spec: str | Model, backend: str = "auto") -> types.ModuleType:
    """The generated module for a model: the committed one for a built-in (auto backend),
    else generated now into a private temporary folder and imported from there. The auto
    backend gets this machine's numpy/numexpr thresholds (measured on first use, then cached)."""
    if isinstance(spec, str) and spec in BUILTINS and backend == "auto":
        return calibration.install(importlib.import_module(f"symgrad.generated.{spec}"))
    model = resolve(spec)
    with warnings.catch_warnings():  # sympy's own chatter is not the user's business; ours is
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", SymgradWarning)
        text = generate(derive(model), backend)
    return calibration.install(import_source(text, model.name))


class _SourceLoader(importlib.abc.InspectLoader):
    """Imports a generated module from its text in memory: no file is written, so nothing is
    left in the temporary folder. `get_source` gives the text back (to tracebacks, `inspect`,
    and a run folder's module.py)."""

    def __init__(self, text: str):
        self.text = text

    def get_source(self, fullname: str) -> str:
        return self.text

    def source_to_code(self, data, path="<string>"):  # noqa: D102
        return compile(data, path, "exec", dont_inherit=True)

    def get_code(self, fullname: str):
        return self.source_to_code(self.text, f"<memory>/{fullname}.py")  # tracebacks show its lines


def import_source(text: str, name: str) -> types.ModuleType:
    """Import generated source `text` as module `symgrad_generated_<name>`. A numba module lives
    in the user's cache, in a folder named by a hash of its source (written once), so that numba's
    on-disk cache of its compiled kernels, kept beside the file, serves the next process too; any
    other module is imported from memory, so nothing is left in the temporary folder."""
    if "\nimport numba\n" in text:
        folder = calibration.cache_dir() / "modules" / hashlib.sha256(text.encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.py"
        if not path.exists() or path.read_text() != text:  # rewriting it would void numba's cache
            write_module(text, folder, name)
        spec = importlib.util.spec_from_file_location(f"symgrad_generated_{name}", path)
        loader = spec.loader
    else:
        loader = _SourceLoader(text)
        spec = importlib.util.spec_from_loader(f"symgrad_generated_{name}", loader, origin="symgrad")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    loader.exec_module(module)
    return module
