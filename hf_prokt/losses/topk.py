"""KD of a causal LM from the teacher's cached top-k log-probabilities, with the rest of its mass as one bucket.

Per predicted position the cache holds the teacher's ``k`` largest log-probabilities at temperature ``T``,
``a_i = log p_T(v_i)`` for the token ids ``v_1..v_k``. The KL is taken over ``k + 1`` outcomes: the ``k`` tokens and
"everything else", whose teacher mass is ``r_T = 1 - sum_i p_T(v_i)`` and whose student mass is
``r_S = 1 - sum_i p_S(v_i)`` (computed as ``logsumexp`` of the student's other logits, so it stays exact when tiny):

``KL_k = sum_i p_T(v_i) (a_i - log p_S(v_i)) + r_T (log r_T - log r_S)``.

It is a true KL between two distributions on ``k + 1`` outcomes (never negative, 0 when the student agrees on those
outcomes), it keeps how confident the teacher is (``r_T``), and it equals the full KL when ``k = V`` (the bucket is
then empty). Renormalising over the ``k`` tokens instead would drop ``r_T``: a teacher sure of its top token and one
hesitating over the whole vocabulary would look alike.

Shapes: ``N`` predicted positions (rows), ``V`` the vocabulary, ``k`` the cached entries per row. Everything from
the logits on is computed in fp32. `topk_student_loss` takes full ``[N, V]`` logits; `chunked_topk_student_loss`
takes the last hidden states and the output layer and computes the logits over chunks of rows (recomputed in the
backward pass, so one chunk's ``[chunk, V]`` tensors are alive at a time).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .chunked import default_chunk_size


def topk_kl_rows(target_log_probs: torch.Tensor, indices: torch.Tensor, logits: torch.Tensor,
                 temperature: float = 1.0) -> torch.Tensor:
    """``[N]``: ``KL_k`` of each row (module docstring), without the ``T^2`` factor.

    Args:
        target_log_probs: ``[N, k]``, the teacher's log-probabilities at temperature ``T`` (any float dtype).
        indices: ``[N, k]``, their token ids (distinct within a row).
        logits: ``[N, V]``, the student's logits (with a graph).
        temperature: ``T``, at which the student's probabilities are taken too.
    """
    scaled = logits.float() / temperature
    log_normaliser = torch.logsumexp(scaled, dim=-1)
    indices = indices.long()
    student_log_probs = scaled.gather(1, indices) - log_normaliser.unsqueeze(1)
    teacher_log_probs = target_log_probs.float()
    teacher_probs = teacher_log_probs.exp()
    # p log(p / q) with 0 log 0 = 0 (an fp16 log-probability can underflow to -inf).
    kept = torch.where(teacher_probs > 0, teacher_probs * (teacher_log_probs - student_log_probs), 0.0).sum(-1)
    teacher_rest = (1.0 - teacher_probs.sum(-1)).clamp_min(0.0)
    others = scaled.scatter(1, indices, float("-inf"))
    empty = torch.isneginf(others).all(dim=-1)  # k = V: no bucket (a finite input keeps the gradient finite)
    student_log_rest = torch.logsumexp(torch.where(empty.unsqueeze(1), 0.0, others), dim=-1) - log_normaliser
    bucket = teacher_rest * (torch.log(teacher_rest.clamp_min(torch.finfo(torch.float32).tiny)) - student_log_rest)
    return kept + torch.where(empty | (teacher_rest <= 0), 0.0, bucket)


def _check(target_log_probs, indices, rows: int, vocab_size: int) -> None:
    if target_log_probs.shape != indices.shape or target_log_probs.dim() != 2:
        raise ValueError(f"the cached top-k log-probabilities {list(target_log_probs.shape)} and indices "
                         f"{list(indices.shape)} must both be [N, k]")
    if target_log_probs.shape[0] != rows:
        raise ValueError(f"{target_log_probs.shape[0]} cached top-k rows for {rows} predicted positions")
    if target_log_probs.shape[1] > vocab_size:
        raise ValueError(f"k = {target_log_probs.shape[1]} cached entries per position, but the vocabulary has "
                         f"{vocab_size} tokens")


def topk_student_loss(logits: torch.Tensor, target_log_probs: torch.Tensor, indices: torch.Tensor,
                      labels: torch.Tensor | None, alpha: float, temperature: float = 1.0,
                      label_smoothing: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``alpha * T^2 * mean(KL_k) + (1 - alpha) * CE(logits, labels)`` over the ``N`` rows.

    Args:
        logits: ``[N, V]``, the student's logits at the predicted positions (with a graph).
        target_log_probs, indices: ``[N, k]``, the cache's rows for those positions.
        labels: ``[N]`` token ids (may be None when ``alpha == 1``).

    Returns:
        ``(loss, parts)``, ``parts`` holding the detached ``distill_loss`` and ``task_loss`` that were used. No row
        gives a loss of 0 (no gradient), not NaN.
    """
    _check(target_log_probs, indices, logits.shape[0], logits.shape[-1])
    rows = max(logits.shape[0], 1)
    loss = logits.new_zeros((), dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}
    if alpha > 0:
        distill = temperature**2 * topk_kl_rows(target_log_probs, indices, logits, temperature).sum() / rows
        loss = loss + alpha * distill
        parts["distill_loss"] = distill.detach()
    if alpha < 1:
        if labels is None:
            raise ValueError("distill_alpha < 1 needs labels in every training batch (a 'labels' column).")
        task = F.cross_entropy(logits.float(), labels, reduction="sum", label_smoothing=label_smoothing) / rows
        loss = loss + (1 - alpha) * task
        parts["task_loss"] = task.detach()
    return loss, parts


def _chunk_sums(hidden, weight, bias, target_log_probs, indices, labels, temperature: float, label_smoothing: float,
                wants_kl: bool, wants_ce: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The KL and cross-entropy sums of one chunk of rows, from its hidden states ``[c, H]``."""
    logits = F.linear(hidden.to(weight.dtype), weight, bias)
    zero = logits.new_zeros((), dtype=torch.float32)
    kl = topk_kl_rows(target_log_probs, indices, logits, temperature).sum() if wants_kl else zero
    ce = (F.cross_entropy(logits.float(), labels, reduction="sum", label_smoothing=label_smoothing)
          if wants_ce else zero)
    return kl, ce


def chunked_topk_student_loss(hidden: torch.Tensor, weight: torch.Tensor, target_log_probs: torch.Tensor,
                              indices: torch.Tensor, labels: torch.Tensor | None, alpha: float,
                              temperature: float = 1.0, label_smoothing: float = 0.0, *,
                              bias: torch.Tensor | None = None, chunk_size: int | None = None
                              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`topk_student_loss` from the student's last hidden states ``[N, H]`` (the rows of the predicted positions)
    and its output layer (``weight [V, H]``, ``bias [V]``), over chunks of ``chunk_size`` rows (default: about
    40 MiB of fp32 logits per chunk, `hf_prokt.losses.chunked.default_chunk_size`). Each chunk's logits are
    recomputed in the backward pass (activation checkpointing) instead of being kept."""
    rows, vocab_size = hidden.shape[0], weight.shape[0]
    _check(target_log_probs, indices, rows, vocab_size)
    if alpha < 1 and labels is None:
        raise ValueError("distill_alpha < 1 needs labels in every training batch (a 'labels' column).")
    size = chunk_size or default_chunk_size(vocab_size, max(rows, 1))
    wants_kl, wants_ce = alpha > 0, alpha < 1
    kl_sum = ce_sum = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, rows, size):
        chunk = slice(start, start + size)
        kl, ce = checkpoint(_chunk_sums, hidden[chunk], weight, bias, target_log_probs[chunk], indices[chunk],
                            None if labels is None else labels[chunk], temperature, label_smoothing, wants_kl,
                            wants_ce, use_reentrant=False)
        kl_sum, ce_sum = kl_sum + kl, ce_sum + ce
    denominator = max(rows, 1)
    loss = hidden.new_zeros((), dtype=torch.float32)
    parts: dict[str, torch.Tensor] = {}
    if wants_kl:
        distill = temperature**2 * kl_sum / denominator
        loss = loss + alpha * distill
        parts["distill_loss"] = distill.detach()
    if wants_ce:
        task = ce_sum / denominator
        loss = loss + (1 - alpha) * task
        parts["task_loss"] = task.detach()
    return loss, parts
