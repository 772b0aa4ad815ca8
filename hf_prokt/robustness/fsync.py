"""Make a written file, or a folder's entries (a rename into it), durable: ``os.fsync`` on it."""

from __future__ import annotations

import os


def fsync_path(path: str) -> None:
    """fsync the file or folder ``path``; nothing when it cannot be opened or the file system refuses (some do for
    folders), since the write itself already succeeded."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
