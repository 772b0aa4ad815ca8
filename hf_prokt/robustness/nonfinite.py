"""Stopping a run on a non-finite loss or gradient norm, before the optimizer step it would poison.

`ProKTTrainer` collects, over the micro-batches of one optimizer step, the values each model's step depends
on (its loss and the parts of that loss, the other model's outputs it learns from), then checks them with
the model's gradient norm right before that model's optimizer steps. Under several processes the values are
summed over the processes first (in float64, so finite values cannot overflow), so every process reaches
the same verdict and all raise together: none is left waiting in a collective.

Under fp16 mixed precision the `GradScaler` skips a step whose scaled gradients overflowed and lowers its
scale: an infinite gradient norm is then normal, and the trainer checks only the losses and outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss, a part of it, a model's outputs or a gradient norm was NaN or infinite."""


class NonFiniteGuard:
    """The values one optimizer step depends on, and the check before that step.

    Args:
        reduce_sum: sums a float64 tensor ``[K]`` over processes.
        num_processes: how many processes `reduce_sum` sums over (1: no collective).
    """

    def __init__(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor], num_processes: int):
        self.reduce_sum = reduce_sum
        self.num_processes = num_processes
        self._terms: dict[tuple[str, str], list[torch.Tensor]] = {}

    def add(self, model: str, term: str, value: torch.Tensor | float) -> None:
        """One micro-batch's value (a scalar) of ``model``'s ``term``; the first added is reported first."""
        value = value.detach().reshape(()) if isinstance(value, torch.Tensor) else torch.tensor(float(value))
        self._terms.setdefault((model, term), []).append(value)

    def check(self, step: int, stepping: str, grad_norm: torch.Tensor | float | None,
              advice: Callable[[str], str]) -> None:
        """Raise `NonFiniteLossError` if a collected value or ``grad_norm`` (of ``stepping``, the model about to
        step) is not finite; the collected values are forgotten either way.

        Every process calls it at the same point with the same terms (the same code path adds them).
        ``advice(model)`` gives the likely fixes and the checkpoint to resume from, for the message.
        """
        keys = list(self._terms)
        # One transfer to the host per check: each term's mean over the micro-batches.
        values = [torch.stack([v.float() for v in self._terms[k]]).mean().to("cpu", torch.float64) for k in keys]
        self._terms = {}
        if grad_norm is not None:
            if hasattr(grad_norm, "full_tensor"):  # FSDP2: the norm of sharded gradients is a DTensor
                grad_norm = grad_norm.full_tensor()
            keys.append((stepping, "gradient norm"))
            values.append(torch.as_tensor(grad_norm).detach().to("cpu", torch.float64).reshape(()))
        if not values:
            return
        totals = torch.stack(values)
        if self.num_processes > 1:
            totals = self.reduce_sum(totals)
        for (model, term), total in zip(keys, totals.tolist()):
            if not math.isfinite(total):
                where = f" (averaged over {self.num_processes} processes)" if self.num_processes > 1 else ""
                raise NonFiniteLossError(
                    f"Training stopped at optimizer step {step}: the {model}'s {term} is "
                    f"{total / self.num_processes}{where}. The {stepping}'s optimizer has not stepped on it. "
                    f"{advice(model)}"
                )


class NonFiniteGuards(dict):
    """One `NonFiniteGuard` per optimizer, ``"student"`` and ``"teacher"``: what each model's step depends on.

    Args:
        reduce_sum, num_processes: as for `NonFiniteGuard`.
        next_step: the number of the optimizer step about to be taken (for the message).
        loss_scaling: whether fp16 loss scaling is on (its `GradScaler` owns infinite gradients: not checked then).
        advice: ``advice(model_name) -> str``, the likely fixes and the checkpoint to resume from.
    """

    def __init__(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor], num_processes: int,
                 next_step: Callable[[], int], loss_scaling: Callable[[], bool], advice: Callable[[str], str]):
        super().__init__(student=NonFiniteGuard(reduce_sum, num_processes),
                         teacher=NonFiniteGuard(reduce_sum, num_processes))
        self._next_step, self._loss_scaling, self._advice = next_step, loss_scaling, advice

    def check(self, stepping: str, grad_norm) -> None:
        """`NonFiniteGuard.check` of the ``stepping`` model's guard, right before its optimizer steps."""
        if self._loss_scaling():
            grad_norm = None
        self[stepping].check(self._next_step(), stepping, grad_norm, self._advice)


def nonfinite_advice(args, model_name: str, last_checkpoint: str | None) -> str:
    """The likely fixes of a non-finite value in ``model_name``'s step under the training arguments ``args``, and
    where to resume from (``last_checkpoint``: the last complete checkpoint, or None)."""
    resume = (f"The last complete checkpoint is {last_checkpoint}: resume from it (resume_from_checkpoint="
              f"{last_checkpoint!r}, or True) once the cause is fixed." if last_checkpoint else
              f"No complete checkpoint exists in {args.output_dir} yet: start again once the cause is fixed.")
    rate = ("teacher_learning_rate", args.teacher_learning_rate) if model_name == "teacher" else \
        ("learning_rate", args.learning_rate)
    fixes = [f"a lower {rate[0]} (now {rate[1]:g})"]
    if not args.max_grad_norm:
        fixes.append("gradient clipping (max_grad_norm=1.0; it is off)")
    if args.fp16:
        fixes.append("bf16=True instead of fp16 (fp16 overflows above 65504)")
    if args.warmup_steps == 0 and not getattr(args, "warmup_ratio", 0):
        fixes.append("a warm-up (warmup_steps)")
    fixes.append("checking the data (labels out of range, empty inputs) at this step")
    return (f"Likely fixes: {'; '.join(fixes)}. {resume} Nothing was saved after this step. "
            "To train on regardless, as the Trainer does, set stop_on_nonfinite=False.")
