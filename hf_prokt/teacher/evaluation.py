"""Evaluate the teacher beside the student, as ``{prefix}_teacher_*`` metrics.

The teacher is evaluated by the `Trainer`'s own evaluation loop (same dataloader, metrics, prediction
steps), with the teacher standing in for the model for the length of that loop.
"""

from __future__ import annotations

from contextlib import contextmanager

from transformers.trainer_callback import ProgressCallback

from ..eval_mode import eval_mode


class TeacherEvaluationMixin:
    """`evaluate` and `evaluation_loop` for a `Trainer` whose ``strategy`` holds ``teacher_model`` (unwrapped) and
    ``wrapped_teacher`` (as the accelerator prepared it), and whose ``args.should_evaluate_teacher`` says when."""

    _evaluating_teacher_too = False

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """The student's metrics as `Trainer.evaluate` reports them and, when the teacher is evaluated too
        (`evaluate_teacher`, on by default for ProKT), the teacher's under ``{prefix}_teacher_*``."""
        self._evaluating_teacher_too = self.strategy.teacher_model is not None and self.args.should_evaluate_teacher
        try:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._evaluating_teacher_too = False

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if self._evaluating_teacher_too:
            teacher_prefix = f"{metric_key_prefix}_teacher"
            self._close_prediction_bars()  # else the teacher's batches extend the student's bar
            with self._teacher_as_model():
                teacher_output = super().evaluation_loop(
                    dataloader, f"{description} (teacher)", prediction_loss_only, ignore_keys, teacher_prefix
                )
            output.metrics.update({
                k: v for k, v in teacher_output.metrics.items()
                if k.startswith(f"{teacher_prefix}_") and not k.endswith("_model_preparation_time")
            })
        return output

    def _close_prediction_bars(self) -> None:
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, ProgressCallback) and callback.prediction_bar is not None:
                callback.prediction_bar.close()
                callback.prediction_bar = None

    @contextmanager
    def _teacher_as_model(self):
        saved = self.model, self.model_wrapped
        self.model, self.model_wrapped = self.strategy.teacher_model, self.strategy.wrapped_teacher
        try:
            with eval_mode(self.strategy.teacher_model):  # the loop leaves it in eval mode: restore its mode after
                yield
        finally:
            self.model, self.model_wrapped = saved
