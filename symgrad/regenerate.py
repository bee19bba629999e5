"""`make generate`: write every committed generated module again (models and optimizers)."""
from __future__ import annotations

import pathlib
import sys

from codegen.emit import generate_update, write_module
from symgrad import pipeline
from symgrad.models import BUILTINS
from training.optimizers import OPTIMIZERS

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> int:
    for name in BUILTINS:
        print(f"wrote {pipeline.write(name, ROOT / 'generated')}")
    for name, build in OPTIMIZERS.items():
        print(f"wrote {write_module(generate_update(build()), ROOT / 'training' / 'kernels', name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
