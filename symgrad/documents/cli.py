"""`symgrad doc MODEL --format md|html|tex [--out DIR]`: write derivation documents.

Every document is built and rendered in memory before anything is written, and each file is
written atomically (temp file + rename), so a mistake (an unknown model, a model with an error,
an unwritable folder) ends in one line and leaves no half-written file behind.
"""
from __future__ import annotations

import argparse
import pathlib

from symgrad.codegen import stamp
from symgrad.codegen.atomic import write_text
from symgrad.documents import FORMATS, PRIMER, command_for, document, render
from symgrad.symbolic.errors import SymgradError

DEFAULT_OUT = "docs/derivations"


def add_doc_command(sub) -> None:
    """Add `doc` to the `symgrad` command's subparsers."""
    p = sub.add_parser("doc", help="write a model's derivation document (Markdown, HTML or LaTeX)")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help=f"a built-in model name, the path of a Python file that defines `model`, "
                        f"or {PRIMER!r} for the vector-calculus primer")
    p.add_argument("--all", action="store_true", help="every built-in model and the primer")
    p.add_argument("--format", choices=(*FORMATS, "all"), default="md",
                   help="md (GitHub Markdown), html (one self-contained page), tex (LaTeX), or all "
                        "three (default: md)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"folder to write MODEL.md / .html / .tex into (default: ./{DEFAULT_OUT})")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from symgrad.models import BUILTINS

    specs = [*BUILTINS, PRIMER] if args.all else list(args.models)
    if not specs:
        raise SymgradError("name a model (see `symgrad list`), a model file, 'primer', or --all")
    formats = FORMATS if args.format == "all" else (args.format,)
    folder = pathlib.Path(args.out)
    texts: dict[pathlib.Path, str] = {}
    for spec in specs:  # everything is built before anything is written
        doc = document(spec)
        for fmt in formats:
            command = command_for(spec, fmt)
            if args.out != DEFAULT_OUT:
                command += f" --out {args.out}"
            texts[folder / f"{doc.slug}.{fmt}"] = render(doc, fmt, command)
    _prepare(folder, list(texts))
    for path, text in texts.items():
        try:
            write_text(path, text)
        except OSError as e:
            raise SymgradError(f"cannot write {path}: {e.strerror}") from None
        print(f"wrote {path}")
    return 0


def _prepare(folder: pathlib.Path, paths: list[pathlib.Path]) -> None:
    """Create the output folder; refuse to overwrite a file that does not carry symgrad's stamp
    with its body unchanged (one symgrad did not write, or one edited since)."""
    if folder.exists() and not folder.is_dir():
        raise SymgradError(f"output folder {folder} is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SymgradError(f"cannot create output folder {folder}: {e.strerror}") from None
    for path in paths:
        if path.exists() and not path.is_file():
            raise SymgradError(f"cannot write {path}: it is not a regular file")
        if not path.exists():
            continue
        try:
            problem = stamp.check(path.read_text(errors="replace"), path.suffix[1:])
        except OSError as e:
            raise SymgradError(f"cannot read {path}: {e.strerror}") from None
        if problem is not None:
            raise SymgradError(f"refusing to overwrite {path}: {problem} (choose another --out folder, "
                               "or move the file away)")
