"""`make generate`: write every committed generated module again (models and optimizers).

It rewrites the source checkout's generated/ and training/kernels/, so it refuses to run from
an installed copy (a wheel's files under site-packages are not the user's to rewrite).
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys

from symgrad import pipeline
from symgrad.codegen.emit import generate_update, write_module
from symgrad.models import BUILTINS
from symgrad.training.optimizers import OPTIMIZERS

GENERATED = pipeline.GENERATED
KERNELS = pathlib.Path(importlib.util.find_spec("symgrad.training.kernels").origin).parent


def source_checkout() -> pathlib.Path | None:
    """The repository root when symgrad runs from a source checkout, else None."""
    root = GENERATED.parent
    return root if (root / "pyproject.toml").is_file() and (root / "symbolic").is_dir() else None


def main() -> int:
    if source_checkout() is None:
        print("symgrad.regenerate rewrites the committed modules of a source checkout; this symgrad "
              f"is installed ({GENERATED.parent}). Use `symgrad derive MODEL --out DIR` instead.",
              file=sys.stderr)
        return 2
    for name in BUILTINS:
        # the checkout's own files: written whatever they hold now (a merge may have left them
        # half of each side), which `symgrad derive`'s overwrite guard would refuse
        print(f"wrote {write_module(pipeline.source(name), GENERATED, name)}")
    for name, build in OPTIMIZERS.items():
        print(f"wrote {write_module(generate_update(build()), KERNELS, name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
