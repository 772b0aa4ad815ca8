"""The metrics of the model a training run ends with, without evaluating it twice.

With ``eval_strategy="steps"`` (or ``"epoch"``) the `Trainer` often evaluates at the very last step; a
script that then calls ``trainer.evaluate()`` once more repeats the same pass over the same model
(tens of seconds on a real dev set). `final_evaluation` reuses that evaluation when it is the final
model's, and evaluates otherwise.
"""

from __future__ import annotations


def evaluation_at_final_step(trainer, metric_key_prefix: str = "eval") -> dict | None:
    """The metrics (``<prefix>_*`` keys, and ``epoch``) of the evaluation logged at the last training step,
    or None when there was none at that step, or when the model in hand is not that step's
    (``load_best_model_at_end`` may have reloaded another checkpoint).

    The teacher's metrics of that evaluation (``<prefix>_teacher_*``) come with the student's.
    """
    if trainer.args.load_best_model_at_end:
        return None
    for entry in reversed(trainer.state.log_history):
        if f"{metric_key_prefix}_loss" in entry:
            if entry.get("step") != trainer.state.global_step:
                return None
            metrics = {key: value for key, value in entry.items() if key.startswith(f"{metric_key_prefix}_")}
            return {**metrics, "epoch": entry.get("epoch")}
    return None


def final_evaluation(trainer, eval_dataset=None, metric_key_prefix: str = "eval", trained: bool = True) -> dict:
    """``trainer.evaluate(eval_dataset, metric_key_prefix=...)``, or, when ``trained`` (this process just ran
    ``trainer.train()``) and the last training step was evaluated on the same set, that evaluation's
    metrics. Pass ``trained=False`` for an evaluation without training, and use this only for the
    dataset the `Trainer` evaluated during training (its ``eval_dataset``)."""
    reused = evaluation_at_final_step(trainer, metric_key_prefix) if trained else None
    if reused is not None:
        return reused
    return trainer.evaluate(eval_dataset=eval_dataset, metric_key_prefix=metric_key_prefix)
