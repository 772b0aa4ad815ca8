"""The final `save_model`, atomic per file: nothing half-written is ever left under its final name.

The student is written into a hidden staging folder, ``<output_dir>/.partial-save``; every file there is fsynced,
then each is renamed to its place in ``output_dir`` (one atomic rename each, on one file system) and the folder is
fsynced. A process killed during the write leaves the staging folder (with safetensors' own ``.tmpXXXXXX`` file in
it), never a partial file among the run's; `remove_stale_files` deletes it at the next save or run start. A save
that fails (a full disk) removes its staging folder and leaves ``output_dir`` as it was.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Callable

from . import disk_full
from .fsync import fsync_path

STAGING_NAME = ".partial-save"
# safetensors (>= 0.7) writes through a temporary file named like this in the target folder, then renames it.
_SAFETENSORS_TEMP = re.compile(r"\.tmp[A-Za-z0-9]{6}")
# The weight files a save replaces as a set: an older run's shards the new save does not write must go.
_WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
                    "pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json",
                    "adapter_model.safetensors", "adapter_model.bin")


def staging_folder(output_dir: str) -> str:
    return os.path.join(output_dir, STAGING_NAME)


def remove_stale_files(output_dir: str) -> list[str]:
    """Delete what interrupted saves left in ``output_dir``: the staging folder and safetensors' temporary files.
    Returns the deleted paths."""
    if not os.path.isdir(output_dir):
        return []
    removed = []
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name == STAGING_NAME and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        elif _SAFETENSORS_TEMP.fullmatch(name) and os.path.isfile(path) and not os.path.islink(path):
            os.remove(path)
            removed.append(path)
    return removed


def publish(staged: str, output_dir: str) -> list[str]:
    """Move every entry of ``staged`` into ``output_dir`` (after fsyncing it), replacing what is there, then delete
    ``staged``. Weight files of an earlier save that the new one does not have are deleted first. Returns the
    published names."""
    names = sorted(os.listdir(staged))
    for root, _, files in os.walk(staged):
        for name in files:
            fsync_path(os.path.join(root, name))
    weights = {p for pattern in _WEIGHT_PATTERNS for p in glob.glob(os.path.join(glob.escape(staged), pattern))}
    if weights:
        for pattern in _WEIGHT_PATTERNS:
            for old in glob.glob(os.path.join(glob.escape(output_dir), pattern)):
                if os.path.basename(old) not in names and os.path.isfile(old):
                    os.remove(old)
    for name in names:
        source, target = os.path.join(staged, name), os.path.join(output_dir, name)
        if os.path.isdir(target) and not os.path.islink(target):  # os.replace cannot replace a folder
            shutil.rmtree(target)
        os.replace(source, target)
    fsync_path(output_dir)
    shutil.rmtree(staged, ignore_errors=True)
    return names


def save_atomically(output_dir: str, write: Callable[[str], None], is_writer: bool,
                    wait: Callable[[], None] = lambda: None) -> None:
    """Run ``write(folder)`` (every process) into the staging folder of ``output_dir``, then publish it (the writer).

    Args:
        output_dir: where the saved files end up.
        write: writes the model into the folder it is given.
        is_writer: whether this process writes to disk (the `Trainer`'s ``args.should_save``).
        wait: a barrier between the processes (``accelerator.wait_for_everyone``).

    Raises:
        disk_full.NoSpaceLeftError: the file system filled up; the staging folder was removed. Any other error of
            ``write`` is raised as it is, after the same clean-up.
    """
    staged = staging_folder(output_dir)
    if is_writer:
        remove_stale_files(output_dir)
    wait()
    with disk_full.removed_on_failure(staged, output_dir, "the model", remove=is_writer):
        write(staged)
        wait()  # every process has written its part
    if is_writer and os.path.isdir(staged):
        publish(staged, output_dir)
    wait()
