"""Whether a run's output folder can be written, asked before the first training step.

`check_writable` creates the folder (as the `Trainer` would) and writes, then deletes, one small probe file in
it. A folder that cannot be written to is refused with `OutputFolderError`, naming the folder, the reason
(permission denied, read-only file system, not a directory) and the fix, instead of the first save finding
it after training (with ``save_strategy="no"``, after all of it).
"""

from __future__ import annotations

import errno
import os
import tempfile

PROBE_PREFIX = ".write-probe-"

_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "not a directory",
    errno.EEXIST: "not a directory",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}


class OutputFolderError(OSError):
    """The output folder cannot be written to (raised before training)."""


def _error(number: int, message: str) -> OutputFolderError:
    raised = OutputFolderError(message)  # one argument: the message reads as it is, without "[Errno N]"
    raised.errno = number
    return raised


def _blocking_file(folder: str) -> str | None:
    """The path at or above ``folder`` that exists but is not a directory, or None."""
    path = os.path.abspath(folder)
    while True:
        if os.path.lexists(path):
            return None if os.path.isdir(path) else path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def check_writable(folder: str, what: str = "output_dir") -> None:
    """Create ``folder`` if needed and check that a file can be written in it.

    Args:
        folder: the run's output folder.
        what: how the user names it (``"output_dir"``, ``"--output_dir"``), for the message.

    Raises:
        OutputFolderError: naming the folder, the reason and the fix.
    """
    blocking = _blocking_file(folder)
    if blocking is not None:
        where = "it" if os.path.abspath(blocking) == os.path.abspath(folder) else blocking
        raise _error(
            errno.ENOTDIR,
            f"{what} {folder} cannot be written to: not a directory ({where} is a file). Pass another {what}, "
            f"or move the file away. Nothing was trained.",
        )
    existed = os.path.isdir(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
        try:
            os.write(descriptor, b"0")
        finally:
            os.close(descriptor)
            os.remove(probe)
        if not existed:  # a run refused later must not leave a folder it never wrote to
            os.rmdir(folder)
    except OSError as error:
        reason = _REASONS.get(error.errno, error.strerror or str(error))
        fix = {"permission denied": "give this user write access to it (or run as a user who has it)",
               "read-only file system": "remount it read-write",
               "no space left on device": "free space on its file system",
               "disk quota exceeded": "free space within your quota"}.get(reason, "fix the folder")
        raise _error(
            error.errno,
            f"{what} {folder} cannot be written to: {reason} ({error}). Pass another {what}, or {fix}. "
            "Nothing was trained.",
        ) from error
