"""Files written atomically, private by default: keys, tokens, a worker's secret, a profile."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``, then give it ``mode``.

    The temporary file is created 0600, so a private key is never readable by others, not
    even for a moment; it is synced before ``os.replace``, so after a crash a reader sees the
    old file or the new one, never half of one.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by its owner only, creating its folder (0700) if needed."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, text.encode(), 0o600)
