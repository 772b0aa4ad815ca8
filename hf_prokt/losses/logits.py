"""The losses of ProKT, KD and fine-tuning, as pure functions on tensors.

Notation (see docs/method.md): ``z_S`` student logits, ``z_T`` teacher logits, both ``[B, C]``;
``p = softmax(z / T)``. KL is summed over classes and averaged over the batch, computed in fp32.
A classifier with a single output (``C == 1``) is a regressor: every KL below becomes an MSE
between outputs, and the task loss an MSE against float labels.

Token classification (NER): logits ``[B, L, C]`` and labels ``[B, L]``. Every term is computed per
token and averaged over the tokens that carry a label (``labels != -100``, the ignore index of
`DataCollatorForTokenClassification` for padding and non-first sub-tokens), never over the others.
A batch in which no token carries a label gives a loss of 0 (no gradient), not NaN.

Nothing here knows about models or the Trainer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
"""The label of a token that no loss sees (padding, non-first sub-tokens), as in `transformers`."""


def is_regression(logits: torch.Tensor) -> bool:
    """A head with one output (``[B, 1]``) is a regression head."""
    return logits.shape[-1] == 1


def is_per_token(logits: torch.Tensor) -> bool:
    """Logits ``[B, L, C]`` (one prediction per token) rather than ``[B, C]`` (one per example)."""
    return logits.dim() == 3


def position_mask(logits: torch.Tensor, labels: torch.Tensor | None = None,
                  attention_mask: torch.Tensor | None = None) -> torch.Tensor | None:
    """The positions a per-token loss averages over, ``[B, L]`` bool, or None for ``[B, C]`` logits.

    The tokens that carry a label (``labels != -100``); without labels (KD on unlabelled text with
    ``distill_alpha=1``), the real tokens (``attention_mask == 1``); without either, every position.
    """
    if not is_per_token(logits):
        return None
    if labels is not None:
        if tuple(labels.shape) != tuple(logits.shape[:-1]):
            raise ValueError(
                f"per-token logits of shape {list(logits.shape)} need labels of shape {list(logits.shape[:-1])} "
                f"(one per token, -100 where no loss applies), got {list(labels.shape)}. Align the labels with "
                "the tokens, e.g. with DataCollatorForTokenClassification."
            )
        return labels != IGNORE_INDEX
    if attention_mask is not None:
        return attention_mask.bool()
    return torch.ones(logits.shape[:-1], dtype=torch.bool, device=logits.device)


def _mean_over(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (``[B]`` or ``[B, L]``) over the positions ``mask`` keeps (all when None);
    0 when it keeps none."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.device)
    return values.masked_fill(~mask, 0.0).sum() / mask.sum().clamp_min(1)


def kl_divergence(target_logits: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """``KL(softmax(target_logits / T) || softmax(logits / T))``.

    Args:
        target_logits: ``[B, C]`` or ``[B, L, C]``, the logits of the target distribution.
        logits: the same shape, the logits of the distribution that is pulled towards the target.
        temperature: softmax temperature ``T``.
        mask: ``[B, L]`` bool, the positions to average over (per-token logits); None averages over all.

    Returns:
        Scalar: the KL summed over classes, averaged over the batch (and kept positions), in fp32.
        Gradients flow into whichever argument is not detached by the caller.
    """
    target_log_probs = F.log_softmax(target_logits.float() / temperature, dim=-1)
    log_probs = F.log_softmax(logits.float() / temperature, dim=-1)
    return _mean_over((target_log_probs.exp() * (target_log_probs - log_probs)).sum(dim=-1), mask)


def task_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Supervised loss on labels, in fp32: cross-entropy (``logits: [B, C]``, ``labels: [B]`` class ids)
    or, for a one-output head, MSE against float targets (``labels: [B]``). Per-token logits
    ``[B, L, C]`` take ``labels: [B, L]``: the cross-entropy is averaged over the tokens whose label is
    not -100 (as `AutoModelForTokenClassification` computes it)."""
    if is_per_token(logits):
        if is_regression(logits) or labels.is_floating_point():
            raise ValueError(
                f"per-token logits of shape {list(logits.shape)} with {labels.dtype} labels: token-level "
                "regression and multi-label tagging are not supported. Use integer tag ids with one output per tag."
            )
        mask = position_mask(logits, labels)
        per_token = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                    reduction="none", label_smoothing=label_smoothing)
        return _mean_over(per_token, mask)
    if is_regression(logits):
        return F.mse_loss(logits.float().squeeze(-1), labels.float().view(-1))
    if labels.is_floating_point():
        raise ValueError(
            f"float labels of shape {list(labels.shape)} for a {logits.shape[-1]}-class head: multi-label targets "
            "cannot be distilled with a softmax. Use integer class ids (single-label) or one output (regression)."
        )
    return F.cross_entropy(logits.float(), labels.view(-1), label_smoothing=label_smoothing)


def output_matching_loss(target_logits: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """How far ``logits`` are from ``target_logits``: ``T^2 * KL(p_target || p)`` for classifiers,
    ``MSE(logits, target_logits)`` for regressors (where KL has no meaning).

    Both ``[B, C]``, or ``[B, L, C]`` with ``mask: [B, L]`` the positions to average over.
    The ``T^2`` factor keeps gradient magnitudes comparable across temperatures (Hinton et al.);
    at ``T = 1`` it is 1 and the two usual conventions agree.
    """
    if target_logits.shape != logits.shape:
        raise ValueError(
            f"teacher and student outputs have different shapes ({list(target_logits.shape)} vs "
            f"{list(logits.shape)}): both models need the same number of labels."
        )
    if is_regression(logits):
        if mask is None:
            return F.mse_loss(logits.float(), target_logits.float())
        return masked_mse(logits, target_logits, mask)
    return temperature**2 * kl_divergence(target_logits, logits, temperature, mask)


def student_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    alpha: float,
    temperature: float,
    label_smoothing: float = 0.0,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Step 4 of ProKT, and the whole of KD: ``alpha * T^2 * KL(p_T || p_S) + (1 - alpha) * task``.

    Args:
        student_logits: ``[B, C]`` (or ``[B, L, C]`` per token), with a graph.
        teacher_logits: the same shape, the target (detached by the caller); may be None when ``alpha == 0``.
        labels: ``[B]`` (or ``[B, L]``); may be None when ``alpha == 1``.
        attention_mask: ``[B, L]``, used only for per-token logits without labels: the KL is then averaged
            over the real tokens. With labels, both terms average over the tokens whose label is not -100.

    Returns:
        ``(loss, parts)`` where ``parts`` holds the detached ``distill_loss`` and ``task_loss`` that were used.
    """
    loss = student_logits.new_zeros((), dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}
    if alpha > 0:
        mask = position_mask(student_logits, labels, attention_mask)
        distill = output_matching_loss(teacher_logits, student_logits, temperature, mask)
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
        teacher_logits: ``[B, C]`` (or ``[B, L, C]`` per token), with a graph.
        student_logits: the same shape, detached.
        labels: ``[B]`` (or ``[B, L]``: both terms average over the tokens whose label is not -100).
        move_back_weight: ``lam`` in ``[0, 1]``.

    Returns:
        ``(loss, proximity)``: the loss to back-propagate and the detached proximity term
        (``T^2 * KL(p_S || p_T)``, or MSE for regression).
    """
    proximity = output_matching_loss(student_logits, teacher_logits, temperature, position_mask(teacher_logits, labels))
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
    proximity = output_matching_loss(student_logits, teacher_logits, temperature, position_mask(teacher_logits, labels))
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
