"""`make demo`: derive every built-in model, write its module, train the MLP on digits."""
from __future__ import annotations

import sys

from symgrad.cli import main


def run() -> int:
    steps = [
        ["derive", "--all", "--out", "generated"],
        ["train", "mlp_tanh", "--data", "digits", "--seed", "0"],
    ]
    try:
        from symgrad.documents import cli as _documents  # noqa: F401 - documents are optional
    except ImportError:
        pass
    else:
        steps.append(["doc", "mlp_tanh", "--format", "html", "--out", "docs/derivations"])
    for argv in steps:
        print(f"$ symgrad {' '.join(argv)}", flush=True)
        code = main(argv)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(run())
