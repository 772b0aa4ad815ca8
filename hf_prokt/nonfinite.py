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
