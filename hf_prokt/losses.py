"""The losses of ProKT, KD and fine-tuning, as pure functions on tensors.

Notation (see docs/method.md): ``z_S`` student logits, ``z_T`` teacher logits, both ``[B, C]``;
``p = softmax(z / T)``. KL is summed over classes and averaged over the batch, computed in fp32.
A classifier with a single output (``C == 1``) is a regressor: every KL below becomes an MSE
between outputs, and the task loss an MSE against float labels.

Nothing here knows about models or the Trainer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def is_regression(logits: torch.Tensor) -> bool:
    """A head with one output (``[B, 1]``) is a regression head."""
    return logits.shape[-1] == 1


def kl_divergence(target_logits: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``KL(softmax(target_logits / T) || softmax(logits / T))``.

    Args:
        target_logits: ``[B, C]``, the logits of the target distribution.
        logits: ``[B, C]``, the logits of the distribution that is pulled towards the target.
        temperature: softmax temperature ``T``.

    Returns:
        Scalar: the KL summed over classes, averaged over the batch, in fp32. Gradients flow into
        whichever argument is not detached by the caller.
    """
    target_log_probs = F.log_softmax(target_logits.float() / temperature, dim=-1)
    log_probs = F.log_softmax(logits.float() / temperature, dim=-1)
    return (target_log_probs.exp() * (target_log_probs - log_probs)).sum(dim=-1).mean()


def task_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Supervised loss on labels: cross-entropy (``labels: [B]`` class ids) or, for a one-output
    head, MSE against float targets (``labels: [B]``). Computed in fp32."""
    if is_regression(logits):
        return F.mse_loss(logits.float().squeeze(-1), labels.float().view(-1))
    if labels.is_floating_point():
        raise ValueError(
            f"float labels of shape {list(labels.shape)} for a {logits.shape[-1]}-class head: multi-label targets "
            "cannot be distilled with a softmax. Use integer class ids (single-label) or one output (regression)."
        )
    return F.cross_entropy(logits.float(), labels.view(-1), label_smoothing=label_smoothing)


def output_matching_loss(target_logits: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """How far ``logits`` are from ``target_logits``: ``T^2 * KL(p_target || p)`` for classifiers,
    ``MSE(logits, target_logits)`` for regressors (where KL has no meaning).

    The ``T^2`` factor keeps gradient magnitudes comparable across temperatures (Hinton et al.);
    at ``T = 1`` it is 1 and the two usual conventions agree.
    """
    if target_logits.shape != logits.shape:
        raise ValueError(
            f"teacher and student outputs have different shapes ({list(target_logits.shape)} vs "
            f"{list(logits.shape)}): both models need the same number of labels."
        )
    if is_regression(logits):
        return F.mse_loss(logits.float(), target_logits.float())
    return temperature**2 * kl_divergence(target_logits, logits, temperature)


def student_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Step 4 of ProKT, and the whole of KD: ``alpha * T^2 * KL(p_T || p_S) + (1 - alpha) * task``.

    Args:
        student_logits: ``[B, C]``, with a graph.
        teacher_logits: ``[B, C]``, the target (detached by the caller); may be None when ``alpha == 0``.
        labels: ``[B]``; may be None when ``alpha == 1``.

    Returns:
        ``(loss, parts)`` where ``parts`` holds the detached ``distill_loss`` and ``task_loss`` that were used.
    """
    loss = student_logits.new_zeros((), dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}
    if alpha > 0:
        distill = output_matching_loss(teacher_logits, student_logits, temperature)
        loss = loss + alpha * distill
        parts["distill_loss"] = distill.detach()
    if alpha < 1:
        if labels is None:
            raise ValueError("distill_alpha < 1 needs labels in every training batch (a 'labels' column).")
        task = task_loss(student_logits, labels, label_smoothing)
        loss = loss + (1 - alpha) * task
        parts["task_loss"] = task.detach()
    return loss, parts


def teacher_penalty_loss(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    move_back_weight: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2 of ProKT, penalty form: ``(1 - lam) * task(z_T, y) + lam * T^2 * KL(p_S || p_T)``.

    The student is the *target* distribution of the proximity term: the teacher is pulled back towards
    what the student currently predicts.

    Args:
        teacher_logits: ``[B, C]``, with a graph.
        student_logits: ``[B, C]``, detached.
        labels: ``[B]``.
        move_back_weight: ``lam`` in ``[0, 1]``.

    Returns:
        ``(loss, proximity)``: the loss to back-propagate and the detached proximity term
        (``T^2 * KL(p_S || p_T)``, or MSE for regression).
    """
    proximity = output_matching_loss(student_logits, teacher_logits, temperature)
    task = task_loss(teacher_logits, labels)
    return (1 - move_back_weight) * task + move_back_weight * proximity, proximity.detach()


def teacher_dual_loss(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    beta: float,
    epsilon: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2 of ProKT, Lagrangian form: ``task(z_T, y) + beta * (T^2 * KL(p_S || p_T) - epsilon)``.

    Same shapes and return value as [`teacher_penalty_loss`].
    """
    proximity = output_matching_loss(student_logits, teacher_logits, temperature)
    task = task_loss(teacher_logits, labels)
    return task + beta * (proximity - epsilon), proximity.detach()


def dual_ascent(beta: float, proximity: float, epsilon: float, step_size: float) -> float:
    """Update of the Lagrange multiplier: ``beta <- max(0, beta + step_size * (proximity - epsilon))``."""
    return max(0.0, beta + step_size * (proximity - epsilon))


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the positions that ``mask`` keeps, in fp32.

    Args:
        prediction, target: the same shape, ``[B, L, ...]`` (hidden states ``[B, L, H]``, attention maps
            ``[B, heads, L, L]`` after the caller moved the query axis, or feature maps ``[B, C, H, W]``).
        mask: ``[B, L]`` of 0/1 over the second axis (padding), or None to average over everything.
    """
    squared = (prediction.float() - target.float()).pow(2)
    if mask is None:
        return squared.mean()
    weights = mask.to(squared.dtype).view(*mask.shape, *([1] * (squared.dim() - 2))).expand_as(squared)
    return (squared * weights).sum() / weights.sum().clamp_min(1.0)
