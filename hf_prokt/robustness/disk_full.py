"""A save that ran out of disk space, told as such.

torch's writer reports a full disk as ``RuntimeError: ... unexpected pos 7823424 vs 7823312`` (or ``file write
failed``, ``basic_ios::clear: iostream error``), safetensors as ``SafetensorError: ... No space left on device
(os error 28)``. `no_space_error` recognises them (and any ``OSError`` with ``ENOSPC``/``EDQUOT``) and builds a
`NoSpaceLeftError` naming the folder, the space left and the fix. torch's messages carry no errno: they count as a
full disk only when the file system has less than `FULL_BELOW_BYTES` free.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

# torch's zip writer on a short write; it gives no errno, so the free space decides (`_looks_full`).
_TORCH_SHORT_WRITE = ("unexpected pos", "file write failed", "iostream error")
_NO_SPACE_TEXT = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")
FULL_BELOW_BYTES = 1 << 20  # a file system with less than this free is taken as full


class NoSpaceLeftError(OSError):
    """A save ran out of space on its file system; the partial folder it was writing was removed."""


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def space(folder: str) -> tuple[int, int] | None:
    """``(free, total)`` bytes of the file system of ``folder`` (or its nearest existing parent), None if unknown."""
    path = os.path.abspath(folder)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return usage.free, usage.total


def is_no_space(error: BaseException, folder: str) -> bool:
    """Whether ``error`` (raised while writing into ``folder``) says the file system is full."""
    short_write = False
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(link).lower()
        if any(words in text for words in _NO_SPACE_TEXT):
            return True
        short_write = short_write or (isinstance(link, RuntimeError) and any(w in text for w in _TORCH_SHORT_WRITE))
    known = space(folder) if short_write else None
    return known is not None and known[0] < FULL_BELOW_BYTES


def no_space_error(error: BaseException, folder: str, what: str, known: tuple[int, int] | None) -> NoSpaceLeftError:
    """The error to raise instead of ``error``: ``what`` (e.g. ``"checkpoint-3"``) did not fit in ``folder``, whose
    file system had ``known = (free, total)`` bytes when it failed."""
    left = f" ({known[0] / 2**20:.1f} MiB free of {known[1] / 2**20:.1f} MiB on its file system)" if known else ""
    raised = NoSpaceLeftError(
        f"No space left on device while saving {what} to {folder}{left}. The partial save was removed; the files "
        f"already in {folder} are untouched. Free space on that file system (fewer checkpoints are kept with "
        f"save_total_limit), or pass another output_dir. The writer said: {type(error).__name__}: {error}"
    )
    raised.errno = errno.ENOSPC
    return raised


@contextmanager
def removed_on_failure(partial: str, folder: str, what: str, remove: bool = True) -> Iterator[None]:
    """Run a save into ``partial`` (a staging folder inside ``folder``); on any failure, KeyboardInterrupt included,
    delete ``partial`` (when ``remove``: the process that writes) and re-raise, a full disk as `NoSpaceLeftError`
    naming ``what`` and ``folder``."""
    try:
        yield
    except BaseException as error:
        known = space(folder)  # before the clean-up frees the partial files
        full = isinstance(error, Exception) and is_no_space(error, folder)
        if remove:
            shutil.rmtree(partial, ignore_errors=True)
        if full:
            raise no_space_error(error, folder, what, known) from error
        raise
