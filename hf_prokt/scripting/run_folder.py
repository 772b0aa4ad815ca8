"""Where a training script starts from: which checkpoint to resume, and whether ``output_dir`` may be written.

Used by the example scripts (and meant for any script built like them):

- `resolve_resume_checkpoint` turns ``--resume_from_checkpoint`` (a path, ``true`` or ``last``) into a folder
  (``true``/``last``: the last *complete* checkpoint, see `hf_prokt.robustness.crash_safe_checkpoints`);
- `check_output_dir` refuses to train into a folder that already holds a run, unless the user asked to
  overwrite it or to resume from it;
- `clear_previous_run` removes what the new run will replace (called once every check has passed);
- `start_of_run` and `replace_previous_run` do the first two and the third for a script's training
  arguments and its trainer.
"""

from __future__ import annotations

import glob
import os
import shutil

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..robustness import crash_safe_checkpoints, output_folder

LAST_CHECKPOINT_VALUES = ("true", "last")
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
                "pytorch_model-*-of-*.bin", "runs", f"{crash_safe_checkpoints.STAGING_PREFIX}*")


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
    raise ValueError(
        f"--output_dir {output_dir} already holds a training run ({names}). Pass another --output_dir, "
        f"--overwrite_output_dir to replace it{resume}."
    )


def clear_previous_run(output_dir: str) -> list[str]:
    """Delete the earlier run's files in ``output_dir`` (`previous_run_files`); other files stay. Returns what
    was deleted. Call it on one process, after every check of the new run has passed."""
    removed = previous_run_files(output_dir)
    for path in removed:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    return removed


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


def replace_previous_run(trainer, overwrite_output_dir: bool, log=None) -> None:
    """With ``--overwrite_output_dir``, delete the earlier run in the trainer's ``output_dir``: call it once every
    check of the new run has passed (data read, models built), so a refused run leaves the old one whole. The
    main process deletes, every process waits for it."""
    if not (trainer.args.do_train and overwrite_output_dir):
        return
    if trainer.is_world_process_zero():
        for path in clear_previous_run(trainer.args.output_dir):
            if log is not None:
                log(f"--overwrite_output_dir: removed {path}")
    trainer.accelerator.wait_for_everyone()
