"""Crash-safe checkpoints: a ``checkpoint-N`` folder is either complete or ignored.

`ProKTTrainer` writes a checkpoint (student, teacher, both optimizers and schedulers, projections, dual
state, RNG states, trainer state) into a hidden staging folder, ``.partial-checkpoint-N/checkpoint-N``;
when every process has written its part, the main process adds a completeness marker
(``checkpoint_complete.json``: the step and the size of every file) and renames the folder to
``checkpoint-N`` in one atomic step. A process killed at any moment of a save leaves at worst a staging
folder, which no resume and no rotation ever takes for a checkpoint.

The readers here decide what is complete: a ``checkpoint-N`` folder whose marker exists, names step N and
whose files all exist with the recorded sizes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

from .fsync import fsync_path

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "checkpoint_complete.json"
STAGING_PREFIX = ".partial-"


def checkpoint_name(step: int) -> str:
    """``checkpoint-<step>``, the `Trainer`'s name for the checkpoint of optimizer step ``step``."""
    return f"{PREFIX_CHECKPOINT_DIR}-{step}"


def _step_of(folder: str) -> int | None:
    """N for a folder named exactly ``checkpoint-N``, else None."""
    name = os.path.basename(os.path.normpath(folder))
    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    number = name[len(prefix):]
    return int(number) if name.startswith(prefix) and number.isdigit() else None


def staging_root(run_dir: str, step: int) -> str:
    """The hidden folder a checkpoint of ``step`` is written into before its rename."""
    return os.path.join(run_dir, STAGING_PREFIX + checkpoint_name(step))


def write_completeness_marker(folder: str, step: int) -> None:
    """Record ``step`` and the size of every file of ``folder`` (written last, once all files are there)."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, folder)] = os.path.getsize(path)
    marker = os.path.join(folder, COMPLETE_MARKER)
    with open(marker + ".tmp", "w") as handle:
        json.dump({"global_step": step, "files": files}, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(marker + ".tmp", marker)


def why_incomplete(folder: str) -> str | None:
    """None for a complete checkpoint folder, else the reason it is not one."""
    named_step = _step_of(folder)
    marker = os.path.join(folder, COMPLETE_MARKER)
    if not os.path.isfile(marker):
        return f"no {COMPLETE_MARKER} (its save was interrupted, or it was written by another tool)"
    try:
        with open(marker) as handle:
            record = json.load(handle)
        step, files = int(record["global_step"]), dict(record["files"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"unreadable {COMPLETE_MARKER} ({error})"
    if named_step is not None and named_step != step:
        return f"its marker is for step {step}"
    for name, size in files.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        if os.path.getsize(path) != size:
            return f"{name} has {os.path.getsize(path)} bytes instead of {size}"
    return None


def checkpoint_folders(run_dir: str) -> list[str]:
    """The ``checkpoint-N`` folders of ``run_dir``, by increasing N (`transformers.trainer_utils.sort_checkpoints`,
    less the folders whose name only starts like one, e.g. ``checkpoint-5.bak``)."""
    if not os.path.isdir(run_dir):
        return []
    return [folder for folder in sort_checkpoints(run_dir) if _step_of(folder) is not None]


def last_complete_checkpoint(run_dir: str, log_skipped: bool = True) -> str | None:
    """The highest-numbered complete ``checkpoint-N`` of ``run_dir``, or None.

    Newer folders that are not complete are skipped, each logged with the reason when ``log_skipped``.
    """
    for folder in reversed(checkpoint_folders(run_dir)):
        reason = why_incomplete(folder)
        if reason is None:
            return folder
        if log_skipped:
            logger.warning("Skipping %s: not a complete checkpoint, %s.", folder, reason)
    return None


def resolve_last_complete(run_dir: str) -> str:
    """`resume_from_checkpoint=True`: the last complete checkpoint of ``run_dir``, or a clear error."""
    folder = last_complete_checkpoint(run_dir)
    if folder is not None:
        logger.info("Resuming from %s, the last complete checkpoint in %s.", folder, run_dir)
        return folder
    # The `Trainer`'s own words first: code that handles its error recognises this one.
    no_valid = f"No valid checkpoint found in output directory ({run_dir})"
    others = checkpoint_folders(run_dir)
    if others:
        raise ValueError(
            f"{no_valid}: resume_from_checkpoint=True, but none of the checkpoints in {run_dir} is complete "
            f"({', '.join(os.path.basename(f) + ': ' + why_incomplete(f) for f in others)}). Pass the path of "
            "one you trust as resume_from_checkpoint=<folder> to resume from it anyway, or start afresh."
        )
    raise ValueError(
        f"{no_valid}: resume_from_checkpoint=True, but {run_dir} holds no checkpoint-* folder. Start without "
        "resume_from_checkpoint, or pass the path of a checkpoint folder."
    )


def publish(staged: str, final: str) -> None:
    """Rename the complete folder ``staged`` to ``final`` (atomic on one file system). A folder already at
    ``final`` (a save of the same step again) is moved aside first and deleted afterwards."""
    aside = None
    if os.path.exists(final):
        aside = os.path.join(os.path.dirname(final), f"{STAGING_PREFIX}replaced-{os.path.basename(final)}")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(final, aside)
    os.replace(staged, final)
    fsync_path(os.path.dirname(final))
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def remove_stale_staging(run_dir: str) -> None:
    """Delete staging folders left by interrupted saves (they never hold a usable checkpoint)."""
    if not os.path.isdir(run_dir):
        return
    for name in os.listdir(run_dir):
        if name.startswith((f"{STAGING_PREFIX}{PREFIX_CHECKPOINT_DIR}-", f"{STAGING_PREFIX}replaced-")):
            shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)


def rotate(run_dir: str, save_total_limit: int | None, best_model_checkpoint: str | None) -> list[str]:
    """Keep the newest ``save_total_limit`` complete checkpoints (and the best one); delete older complete
    ones. Incomplete ``checkpoint-*`` folders are neither counted nor deleted, so a complete checkpoint is
    never deleted in favour of one that cannot be resumed from. Returns the deleted folders."""
    if not save_total_limit or save_total_limit <= 0:
        return []
    complete = [f for f in checkpoint_folders(run_dir) if why_incomplete(f) is None]
    best = os.path.abspath(best_model_checkpoint) if best_model_checkpoint else None
    keep = set(complete[-save_total_limit:])
    if best is not None:
        keep |= {f for f in complete if os.path.abspath(f) == best}
    deleted = []
    for folder in complete:
        if folder not in keep:
            logger.info("Deleting older checkpoint [%s] due to save_total_limit", folder)
            shutil.rmtree(folder, ignore_errors=True)
            deleted.append(folder)
    return deleted
