"""Where a training script starts from: which checkpoint to resume, and whether ``output_dir`` may be written.

Used by the example scripts (and meant for any script built like them):

- `resolve_resume_checkpoint` turns ``--resume_from_checkpoint`` (a path, ``true`` or ``last``) into a folder
  (``true``/``last``: the last *complete* checkpoint, see `hf_prokt.robustness.crash_safe_checkpoints`);
- `check_output_dir` refuses to train into a folder that already holds a run, unless the user asked to
  overwrite it or to resume from it;
- `set_aside_previous_run` moves what the new run will replace into ``output_dir/.previous-run`` (called once
  every check has passed); `PreviousRun` deletes it once the new run has written its student, or puts it back
  when the new run fails before it has a checkpoint of its own;
- `start_of_run` and `replace_previous_run` do the first two and the third for a script's training
  arguments and its trainer.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
from contextlib import contextmanager

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..robustness import crash_safe_checkpoints, output_folder

logger = logging.getLogger(__name__)

LAST_CHECKPOINT_VALUES = ("true", "last")
PREVIOUS_RUN_DIR = ".previous-run"
"""Where ``--overwrite_output_dir`` keeps the earlier run (inside ``output_dir``, so the move is a rename on one
file system and costs no space) until the new run has written its student."""
_NO_RESUME_VALUES = ("", "false", "none", "no")

# What a training run leaves in its output_dir (the Trainer's and the example scripts' files).
RUN_FILES = (
    "all_results.json", "train_results.json", "eval_results.json", "trainer_state.json", "training_args.bin",
    "training_curves.png", "README.md", "config.json", "model.safetensors", "model.safetensors.index.json",
    "pytorch_model.bin", "pytorch_model.bin.index.json", "generation_config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt",
    "preprocessor_config.json", "predictions.txt", "predict_results.json",
)
RUN_PATTERNS = (f"{PREFIX_CHECKPOINT_DIR}-*", "predict_results_*.txt", "model-*-of-*.safetensors",
                "pytorch_model-*-of-*.bin", "runs", f"{crash_safe_checkpoints.STAGING_PREFIX}*", PREVIOUS_RUN_DIR,
                f"{PREVIOUS_RUN_DIR}.partial")
_SET_ASIDE = (PREVIOUS_RUN_DIR, f"{PREVIOUS_RUN_DIR}.partial")


def resolve_resume_checkpoint(value: str | bool | None, output_dir: str) -> str | None:
    """The checkpoint folder that ``--resume_from_checkpoint value`` names, or None for a fresh start.

    Args:
        value: a checkpoint folder; ``True``, ``"true"`` or ``"last"`` (any case) for the last checkpoint
            in ``output_dir``; ``None``, ``False``, ``""`` or ``"false"`` for no resume.
        output_dir: the run's output folder.

    Raises:
        ValueError: when no checkpoint is found where ``value`` points, naming where it looked.
    """
    if value is None or value is False:
        return None
    text = str(value).strip()
    if text.lower() in _NO_RESUME_VALUES:
        return None
    if value is True or text.lower() in LAST_CHECKPOINT_VALUES:
        found = crash_safe_checkpoints.last_complete_checkpoint(output_dir)
        if found is None and crash_safe_checkpoints.checkpoint_folders(output_dir):
            return crash_safe_checkpoints.resolve_last_complete(output_dir)  # raises, naming why each is incomplete
        if found is None:
            raise ValueError(
                f"--resume_from_checkpoint {text}: no {PREFIX_CHECKPOINT_DIR}-* folder in {output_dir}. Checkpoints "
                "are written there with --save_strategy steps/epoch; or pass a checkpoint folder."
            )
        return found
    if not os.path.isdir(text):
        raise ValueError(
            f"--resume_from_checkpoint {text}: no such folder. Pass a {PREFIX_CHECKPOINT_DIR}-<step> folder, or "
            f"'last' (or 'true') for the last checkpoint in {output_dir}."
        )
    return text


def previous_run_files(output_dir: str) -> list[str]:
    """The files and folders of an earlier training run in ``output_dir`` (sorted paths; empty when none)."""
    if not os.path.isdir(output_dir):
        return []
    found = {os.path.join(output_dir, name) for name in RUN_FILES if os.path.exists(os.path.join(output_dir, name))}
    for pattern in RUN_PATTERNS:
        found.update(glob.glob(os.path.join(glob.escape(output_dir), pattern)))
    return sorted(found, key=lambda path: os.path.basename(path).lstrip("."))  # staging folders among the rest


def check_output_dir(output_dir: str, overwrite_output_dir: bool, resume_from_checkpoint: str | None) -> None:
    """Refuse to train into a folder that holds an earlier run, unless asked to overwrite or resume it.

    Only reads the disk, so every process of a distributed run reaches the same verdict.

    Raises:
        ValueError: naming what is there and the two ways on.
    """
    if overwrite_output_dir and resume_from_checkpoint is not None:
        raise ValueError("--overwrite_output_dir clears the earlier run and --resume_from_checkpoint continues it: "
                         "pass one of them.")
    if overwrite_output_dir or resume_from_checkpoint is not None:
        return
    found = previous_run_files(output_dir)
    if not found:
        return
    names = ", ".join(os.path.basename(path) for path in found[:5]) + (", ..." if len(found) > 5 else "")
    resume = (" or --resume_from_checkpoint last to continue from its last checkpoint"
              if crash_safe_checkpoints.last_complete_checkpoint(output_dir) else "")
    aside = (f" An earlier run was set aside in {PREVIOUS_RUN_DIR} by an --overwrite_output_dir run that did not "
             "finish; --overwrite_output_dir keeps it there until the new run has written its student."
             if os.path.isdir(os.path.join(output_dir, PREVIOUS_RUN_DIR)) else "")
    raise ValueError(
        f"--output_dir {output_dir} already holds a training run ({names}). Pass another --output_dir, "
        f"--overwrite_output_dir to replace it{resume}.{aside}"
    )


def clear_previous_run(output_dir: str) -> list[str]:
    """Delete the earlier run's files in ``output_dir`` (`previous_run_files`, the set-aside run included); other
    files stay. Returns what was deleted."""
    removed = previous_run_files(output_dir)
    for path in removed:
        _remove(path)
    return removed


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def set_aside_previous_run(output_dir: str) -> list[str]:
    """Move the earlier run's files in ``output_dir`` into ``output_dir/.previous-run``; other files stay.

    A ``.previous-run`` already there (set aside by an overwriting run that was killed) is kept: it holds the
    last run that was replaced, and the files beside it, of the run that did not finish, are deleted. Returns the
    paths the files had. Call it on one process, after every check of the new run has passed."""
    aside = os.path.join(output_dir, PREVIOUS_RUN_DIR)
    found = [path for path in previous_run_files(output_dir) if os.path.basename(path) not in _SET_ASIDE]
    if os.path.isdir(aside):
        for path in found:
            _remove(path)
        return []
    if not found and not os.path.isdir(aside + ".partial"):  # (a move interrupted by a kill is completed)
        return []
    os.makedirs(aside + ".partial", exist_ok=True)
    for path in found:
        os.replace(path, os.path.join(aside + ".partial", os.path.basename(path)))
    os.replace(aside + ".partial", aside)  # the set-aside run is whole under its name, or still in place
    return found


class PreviousRun:
    """The earlier run that an overwriting run set aside in ``output_dir/.previous-run`` (or none).

    `kept_until_saved` wraps the new run's training and final save: when they succeed, the earlier run is deleted;
    when they fail and the new run has no complete checkpoint, the new run's files are deleted and the earlier run
    is put back as it was; when they fail after a checkpoint of the new run (a SIGTERM, a crash after a save), both
    stay: the new run can be resumed, and the earlier one waits in ``.previous-run``. Only the main process
    (``is_main``) touches the disk.
    """

    def __init__(self, output_dir: str, is_main: bool, log=None):
        self.output_dir, self.is_main, self.log = output_dir, is_main, log or logger.info
        self.folder = os.path.join(output_dir, PREVIOUS_RUN_DIR)

    @contextmanager
    def kept_until_saved(self):
        try:
            yield
        except BaseException:
            if self.is_main:
                self._after_failure()
            raise
        if self.is_main and os.path.isdir(self.folder):
            shutil.rmtree(self.folder)
            self.log(f"The new run wrote its student: deleted the earlier run set aside in {self.folder}")

    def _after_failure(self) -> None:
        if not os.path.isdir(self.folder):
            return
        checkpoint = crash_safe_checkpoints.last_complete_checkpoint(self.output_dir, log_skipped=False)
        if checkpoint is not None:
            logger.warning(f"The run failed after saving {checkpoint}: resume it with --resume_from_checkpoint last. "
                           f"The earlier run it replaces is kept in {self.folder} until it has written its student.")
            return
        for path in previous_run_files(self.output_dir):
            if os.path.basename(path) not in _SET_ASIDE:
                _remove(path)
        for name in os.listdir(self.folder):
            os.replace(os.path.join(self.folder, name), os.path.join(self.output_dir, name))
        os.rmdir(self.folder)
        logger.warning(f"The run failed before writing a checkpoint: the earlier run in {self.output_dir} was put "
                       "back as it was.")


def start_of_run(training_args, overwrite_output_dir: bool) -> str | None:
    """Before anything is loaded: the checkpoint ``--resume_from_checkpoint`` names (None for a fresh start),
    after refusing an ``output_dir`` that holds an earlier run (`check_output_dir`). Nothing is checked when
    the run does not train. An ``output_dir`` that cannot be written to is refused first."""
    if not training_args.do_train:
        return None
    if training_args.should_save:
        output_folder.check_writable(training_args.output_dir, "--output_dir")
    resume_from = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    check_output_dir(training_args.output_dir, overwrite_output_dir, resume_from)
    return resume_from


def replace_previous_run(trainer, overwrite_output_dir: bool, log=None) -> PreviousRun:
    """With ``--overwrite_output_dir``, set the earlier run in the trainer's ``output_dir`` aside
    (`set_aside_previous_run`): call it once every check of the new run has passed (data read, models built), so a
    refused run leaves the old one whole, and wrap the training and the final save in the returned
    `PreviousRun.kept_until_saved`. The main process moves, every process waits for it. Without the flag nothing
    moves, and a run that writes its student deletes an earlier run still set aside (a resumed overwriting run)."""
    previous = PreviousRun(trainer.args.output_dir, trainer.is_world_process_zero(), log)
    if not (trainer.args.do_train and overwrite_output_dir):
        return previous
    if trainer.is_world_process_zero():
        for path in set_aside_previous_run(trainer.args.output_dir):
            if log is not None:
                log(f"--overwrite_output_dir: moved {path} into {previous.folder} until the new student is saved")
    trainer.accelerator.wait_for_everyone()
    return previous
