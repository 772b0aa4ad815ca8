"""Small real file systems for the tests (tmpfs mounts), where this machine lets the tests mount them."""

import contextlib
import os
import subprocess

import pytest


@contextlib.contextmanager
def tmpfs(folder, options: str):
    """Mount a tmpfs with ``options`` (e.g. ``"ro"``, ``"size=64k"``) on ``folder`` for the block; skip the test
    where mounting is not permitted (not root, or a container without the capability)."""
    os.makedirs(folder, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)
