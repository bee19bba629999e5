"""Write files atomically: a reader sees the old file or the new one, never half of one.

Each file goes to a temporary `.NAME.XXXXXXXX.tmp` beside it, is flushed to disk and renamed
over NAME. A failure of the file system (disk full, a name too long, no permission) removes
the temporary file, leaves NAME as it was, and is raised as `WriteError`: one line naming
the file and the reason, which the command line prints as it prints any `SymgradError`.
"""
from __future__ import annotations

import os
import pathlib
import re
import tempfile

from symgrad.symbolic.errors import SymgradError

TEMPORARY = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp")  # mkstemp's 8 random characters


class WriteError(SymgradError):
    """A file could not be written; the old one, if any, is untouched."""


def reason(error: OSError) -> str:
    """The file system's words for an OSError ("No space left on device"), without the path."""
    return error.strerror or str(error) or type(error).__name__


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    return write_bytes(path, text.encode())


def write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    path = pathlib.Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise WriteError(f"cannot write {path}: {reason(e)}") from None
    except BaseException:
        _discard(tmp)
        raise
    return path


def _discard(tmp: str | None) -> None:
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def check_writable(folder: str | os.PathLike) -> None:
    """Raise `WriteError` unless a file can be created in `folder` (an existing folder): the
    probe is the one `write_bytes` makes, so a folder that passes takes the real files."""
    folder = pathlib.Path(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".symgrad-probe.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise WriteError(f"cannot write into {folder}: {reason(e)}") from None
    os.close(fd)
    _discard(tmp)


def remove_stale(folder: str | os.PathLike, names: tuple[str, ...]) -> list[pathlib.Path]:
    """Remove the temporary files that a process killed inside `write_bytes` left beside any of
    `names` in `folder`; return them. Only files of that exact pattern are touched."""
    removed = []
    for path in pathlib.Path(folder).glob(".*.tmp"):
        match = TEMPORARY.fullmatch(path.name)
        if match and (match["name"] in names or match["name"] == "symgrad-probe") and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
