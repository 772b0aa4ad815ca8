"""The figure that explains a ProKT run: teacher and student quality over steps, the gap between them,
and how far apart their predictions are (KL).

Needs matplotlib (``pip install "hf-prokt[plot]"``). Reads a `Trainer`'s ``state.log_history`` (a list of
dicts), a ``trainer_state.json`` file, or a folder holding one (an ``output_dir`` or a checkpoint).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence


def load_log_history(source: str | os.PathLike | Sequence[dict]) -> list[dict]:
    """``log_history`` from a list of log dicts, a ``trainer_state.json`` path, or a folder containing one."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            path = os.path.join(path, "trainer_state.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no trainer_state.json at {path}: pass trainer.state.log_history or a folder "
                                    "written by trainer.save_state() / a checkpoint.")
        with open(path) as f:
            return json.load(f)["log_history"]
    return list(source)


def _series(history: list[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(entry["step"], entry[key]) for entry in history if key in entry and "step" in entry]
    return [p[0] for p in points], [p[1] for p in points]


def default_metric(history: list[dict]) -> str:
    """The first student metric of the evaluations that the teacher also has (else any), e.g. ``accuracy``."""
    names = [key[len("eval_"):] for entry in history for key in entry
             if key.startswith("eval_") and not key.startswith("eval_teacher_")]
    skip = {"loss", "runtime", "samples_per_second", "steps_per_second", "model_preparation_time"}
    candidates = [name for name in dict.fromkeys(names) if name not in skip]
    with_teacher = [name for name in candidates if any(f"eval_teacher_{name}" in entry for entry in history)]
    if with_teacher or candidates:
        return (with_teacher or candidates)[0]
    return "loss"


def plot_training(source, output_path: str | os.PathLike | None = None, metric: str | None = None,
                  title: str | None = None):
    """Draw student and teacher ``eval_<metric>`` over steps (the gap shaded), and below it how far apart the two
    models' predictions are: the logged ``kl_student_teacher`` (ProKT's teacher term, with the dual multiplier
    ``prokt_beta`` when present) and ``student_distill_loss`` (the student's term, ProKT's and KD's). Without
    either (fine-tuning), the figure has the upper panel alone.

    Args:
        source: ``trainer.state.log_history``, a ``trainer_state.json`` path, or a folder holding one.
        output_path: where to save the PNG (optional).
        metric: the evaluation metric to draw (default: see [`default_metric`]).

    Returns:
        The matplotlib ``Figure``.
    """
    try:
        import matplotlib

        if output_path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError('hf_prokt.plot needs matplotlib: pip install "hf-prokt[plot]"') from error

    history = load_log_history(source)
    metric = metric or default_metric(history)
    student_steps, student_values = _series(history, f"eval_{metric}")
    teacher_steps, teacher_values = _series(history, f"eval_teacher_{metric}")
    kl_steps, kl_values = _series(history, "kl_student_teacher")
    distill_steps, distill_values = _series(history, "student_distill_loss")
    beta_steps, beta_values = _series(history, "prokt_beta")
    if not student_steps and not kl_steps and not distill_steps:
        raise ValueError(
            f"the log history has no eval_{metric} and no kl_student_teacher or student_distill_loss to draw: "
            "evaluate during training (eval_strategy='steps' or 'epoch') with a compute_metrics, and log at least "
            "once."
        )

    if kl_steps or distill_steps:
        figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(3, 2))
    else:
        figure, top = plt.subplots(1, 1, figsize=(7, 4))
        bottom = top
    if student_steps:
        top.plot(student_steps, student_values, marker="o", label=f"student {metric}")
    if teacher_steps:
        top.plot(teacher_steps, teacher_values, marker="s", label=f"teacher {metric}")
        common = sorted(set(student_steps) & set(teacher_steps))
        if common:
            student_at, teacher_at = dict(zip(student_steps, student_values)), dict(zip(teacher_steps, teacher_values))
            top.fill_between(common, [student_at[s] for s in common], [teacher_at[s] for s in common],
                             alpha=0.2, label="gap")
    top.set_ylabel(metric)
    top.set_title(title or f"teacher and student {metric} during training")
    top.grid(alpha=0.3)
    top.legend(loc="best")

    if kl_steps:
        bottom.plot(kl_steps, kl_values, color="tab:red", label="KL(student || teacher), teacher's term")
    if distill_steps:
        bottom.plot(distill_steps, distill_values, color="tab:orange", label="KL(teacher || student), student's term")
    if kl_steps or distill_steps:
        bottom.set_ylabel("T² · KL (MSE for regression)")
        bottom.legend(loc="upper left")
    if beta_steps:
        twin = bottom.twinx()
        twin.plot(beta_steps, beta_values, color="tab:purple", linestyle="--", label="dual beta")
        twin.set_ylabel("beta")
        twin.legend(loc="upper right")
    bottom.set_xlabel("step")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    if output_path is not None:
        figure.savefig(output_path, dpi=120)
    return figure
