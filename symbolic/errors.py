"""The tool's own exception and warning types.

Every mistake a user can make in a model is reported through one of these, with a message a
person can act on: the equation or operation, the symbol, the shapes, and where in the user's
file the offending expression was written. Raw sympy or numpy tracebacks never reach a user.
"""
from __future__ import annotations

import os
import sys


def _own_packages() -> tuple[str, ...]:
    """The folders of symgrad's own code: in a source tree the top-level symbolic/, codegen/,
    symgrad/, training/; installed, the one folder site-packages/symgrad/ that holds them all."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folders = [os.path.join(root, pkg) + os.sep for pkg in ("symbolic", "codegen", "symgrad", "training")]
    if os.path.basename(root) == "symgrad":  # installed: symgrad/symbolic/errors.py
        folders.append(root + os.sep)
    return tuple(folders)


_OWN_PACKAGES = _own_packages()


class SymgradError(Exception):
    """Base class of every error symgrad reports to a user."""


class ShapeError(SymgradError):
    """Operands whose shapes do not fit the operation."""


class ModelError(SymgradError):
    """A model that is malformed: bad, unknown or duplicate names, a non-scalar loss, ..."""


class RuleError(SymgradError):
    """An operation for which no differentiation or lowering rule exists."""


class SymgradWarning(UserWarning):
    """Something legal but probably unintended, such as a parameter that never reaches the loss."""


def user_location() -> str | None:
    """`file:line` of the innermost stack frame outside symgrad's own packages, if any.

    Errors cite it so a shape mismatch points at the line of the user's model that wrote it.
    """
    frame = sys._getframe(1)  # the frames themselves: extracting a traceback reads source lines
    while frame is not None:
        filename = frame.f_code.co_filename
        path = os.path.abspath(filename)
        if not (path.startswith(_OWN_PACKAGES) or "importlib" in path or "<frozen" in filename):
            return f"{os.path.relpath(path) if not os.path.isabs(filename) else path}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def located(message: str, where: str | None) -> str:
    """Prefix a message with the user's source location when one is known."""
    return f"{where}: {message}" if where else message
