"""Crash-safe checkpoint saving for a `Trainer` (the folder protocol is `crash_safe_checkpoints`).

`CrashSafeCheckpointsMixin` makes the `Trainer` write each checkpoint into a hidden staging folder, then, once
every process has written its part, mark it complete and rename it to ``checkpoint-N`` in one step; rotation
(`save_total_limit`) counts complete checkpoints only, a Hub push of the checkpoint waits for its final name, and
``train(resume_from_checkpoint=True)`` resumes from the last complete checkpoint.
"""

from __future__ import annotations

import os

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import SaveStrategy

from . import crash_safe_checkpoints, disk_full, final_save, output_folder


class CrashSafeCheckpointsMixin:
    """Mixed into a `Trainer` subclass, before `Trainer`."""

    _staging: str | None = None  # while a checkpoint is saved: the folder the Trainer writes it into
    _held_pushes: list | None = None

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        """`Trainer.train`; ``resume_from_checkpoint=True`` picks the last *complete* checkpoint of `output_dir`
        (`hf_prokt.robustness.crash_safe_checkpoints`), logging the newer ones it skips and why. An `output_dir`
        that cannot be written to is refused first (`hf_prokt.robustness.output_folder`)."""
        if self.args.should_save:
            output_folder.check_writable(self.args.output_dir)
            final_save.remove_stale_files(self.args.output_dir)
        if resume_from_checkpoint is True:
            resume_from_checkpoint = crash_safe_checkpoints.resolve_last_complete(self.args.output_dir)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def _get_output_dir(self, trial):
        return self._staging or super()._get_output_dir(trial)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if self._staging:  # held back until the checkpoint has its final name
            self._held_pushes.append(checkpoint_folder)
            return
        super()._push_from_checkpoint(checkpoint_folder)

    def _save_checkpoint(self, model, trial) -> None:
        """`Trainer._save_checkpoint`, made crash-safe (`hf_prokt.robustness.crash_safe_checkpoints`): every file is
        written into a hidden staging folder, the main process adds a completeness marker once all processes are
        done, and renames the folder to ``checkpoint-N`` in one step. Rotation (`save_total_limit`) then counts
        complete checkpoints only, and a Hub push of the checkpoint waits for its final name."""
        run_dir = self._get_output_dir(trial=trial)
        name = crash_safe_checkpoints.checkpoint_name(self.state.global_step)
        staging = crash_safe_checkpoints.staging_root(run_dir, self.state.global_step)
        staged, final = os.path.join(staging, name), os.path.join(run_dir, name)
        if self.args.should_save:
            crash_safe_checkpoints.remove_stale_staging(run_dir)
        # The Trainer writes into <run_dir>/checkpoint-N: point it at the staging folder; its rotation there sees
        # only the staging folder, and its push is held back.
        # The Trainer records an earlier best checkpoint only if it finds it in the folder it writes to: the
        # staging folder, where it never is. Record it from the run folder instead.
        best_step = self.state.best_global_step
        if best_step and best_step != self.state.global_step and self.args.save_strategy in (
                SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST):
            earlier = os.path.join(run_dir, crash_safe_checkpoints.checkpoint_name(best_step))
            if os.path.isdir(earlier):
                self.state.best_model_checkpoint = earlier
        self._staging, self._held_pushes = staging, []
        # A partial checkpoint would fill the disk until the next save: it is removed on any failure.
        with disk_full.removed_on_failure(staging, run_dir, name, remove=self.args.should_save):
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._staging, pushes = None, self._held_pushes
            if self.state.best_model_checkpoint == staged:  # the Trainer named the folder it wrote: the final one
                self.state.best_model_checkpoint = final
                if self.args.should_save:
                    self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
            self.accelerator.wait_for_everyone()  # every process has written its part (FSDP shards)
            if self.args.should_save:
                crash_safe_checkpoints.write_completeness_marker(staged, self.state.global_step)
                crash_safe_checkpoints.publish(staged, final)
                crash_safe_checkpoints.remove_stale_staging(run_dir)
        self.accelerator.wait_for_everyone()
        if pushes:
            self._push_from_checkpoint(final)
        if self.args.should_save:
            crash_safe_checkpoints.rotate(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint)
