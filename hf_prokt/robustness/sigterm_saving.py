"""Saving a checkpoint and stopping on SIGTERM, for a `Trainer` (the signal handling is `sigterm`).

`SaveOnSigtermMixin` installs a `sigterm.SigtermFlag` for the duration of ``train()`` (with
``args.save_on_sigterm``). At the end of every optimizer step, before the `Trainer` logs, evaluates and saves,
the processes agree on whether any of them received SIGTERM (one all-reduce of a single number, under several
processes only). If one did, all skip the evaluation of that step, save its checkpoint (the `Trainer`'s
`_save_checkpoint`, crash-safe and with the teacher's state) and raise `sigterm.TrainingTerminated` together:
whether the signal reached one process or all of them, they stop at the same step.
"""

from __future__ import annotations

import logging
import os

import torch

from . import crash_safe_checkpoints
from .sigterm import SigtermFlag, TrainingTerminated

logger = logging.getLogger(__name__)


class SaveOnSigtermMixin:
    """Mixed into a `Trainer` subclass, before `Trainer` (and before the crash-safe checkpoint mixin)."""

    _sigterm: SigtermFlag | None = None  # during train() with save_on_sigterm
    _saved_step: int | None = None  # the step of this train() call's latest checkpoint

    @property
    def sigterm_received(self) -> bool:
        """Whether this process received SIGTERM during the current ``train()`` (False outside it)."""
        return self._sigterm is not None and self._sigterm.received > 0

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        """`Trainer.train`; with ``save_on_sigterm``, a SIGTERM ends it at the end of the current optimizer step
        with a checkpoint of that step and `TrainingTerminated` (exit code 143)."""
        if not self.args.save_on_sigterm:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
        self._saved_step = None
        with SigtermFlag() as flag:
            self._sigterm = flag
            try:
                return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
            finally:
                self._sigterm = None

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        self._saved_step = self.state.global_step

    def _processes_received_sigterm(self) -> int:
        """How many processes received SIGTERM; the same number on every process (a collective: every process
        calls it at the same point)."""
        received = int(self._sigterm.received > 0)
        if self.accelerator.num_processes == 1:
            return received
        count = torch.tensor([received], dtype=torch.int64, device=self.accelerator.device)
        return int(self.accelerator.reduce(count, reduction="sum").item())

    def _maybe_log_save_evaluate(self, tr_loss, grad_norm, model, trial, epoch, ignore_keys_for_eval, start_time,
                                 learning_rate=None):
        """At the end of each optimizer step (and of each epoch): on SIGTERM, log, save this step, and stop."""
        stopping = self._sigterm is not None and self._processes_received_sigterm()
        if stopping:
            logger.warning("SIGTERM received by %d of %d processes: saving the checkpoint of step %d, then stopping.",
                           stopping, self.accelerator.num_processes, self.state.global_step)
            self.control.should_evaluate = False  # the grace period is for the save
            self.control.should_save = self._saved_step != self.state.global_step  # at an epoch's end: saved already
        super()._maybe_log_save_evaluate(tr_loss, grad_norm, model, trial, epoch, ignore_keys_for_eval, start_time,
                                         learning_rate=learning_rate)
        if stopping:
            self._sigterm.acted = True
            self.is_in_train = False
            run_dir = self._get_output_dir(trial=trial)
            folder = os.path.join(run_dir, crash_safe_checkpoints.checkpoint_name(self.state.global_step))
            raise TrainingTerminated(folder, self.state.global_step)
