"""Write files atomically: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import os
import pathlib
import tempfile


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
    return write_bytes(path, text.encode())


def write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path
