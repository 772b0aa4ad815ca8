"""Language-model distillation losses computed over chunks of positions, never holding full logits.

For a language model the logits dominate the memory of a distillation step: ``N x V`` floats per model
(``N`` predicted positions, ``V`` the vocabulary), and ProKT trains the teacher too. The functions here
take what comes *before* the logits -- the last hidden states and the output layer (``lm_head``) of
each model -- and compute the losses over chunks of rows. For each chunk they compute its logits, its
terms and, at once, the gradients with respect to the chunk's hidden states and the output layer's
weight and bias (accumulated over the chunks); the backward pass then only scales these stored
gradients by the incoming gradient. Only one chunk's ``[chunk_size, V]`` tensors are alive at a time.

Notation (as in `hf_prokt.losses` and docs/method.md): ``z_S = h_S @ W_S^T + b_S`` the student logits,
``z_T = h_T @ W_T^T + b_T`` the teacher's, ``p = softmax(z / T)`` at temperature ``T``, ``y`` the labels.
The terms, each summed over the vocabulary and over the rows that count, then divided by the
normaliser (below):

* ``distill_loss``: ``T^2 * KL(p_T || p_S)``, gradients into the student's side only (KD, ProKT step 4);
* ``task_loss``: ``CE(z_S, y)`` (with ``label_smoothing`` as `torch.nn.functional.cross_entropy`
  defines it), gradients into the student's side;
* ``teacher_task_loss``: ``CE(z_T, y)`` (``teacher_label_smoothing``), gradients into the teacher's side;
* ``proximity``: ``T^2 * KL(p_S || p_T)``, gradients into the teacher's side only (ProKT step 2, where
  the student's prediction is the target the teacher is pulled back to).

The student loss is ``student_kl_weight * distill_loss + student_ce_weight * task_loss``, the teacher
loss ``teacher_ce_weight * teacher_task_loss + teacher_kl_weight * proximity``; both are computed in one
pass over the chunks, so each side's logits are computed once per chunk. Everything from the logits
on is computed in fp32 (fp64 for fp64 inputs), whatever the input dtype; the matrix products run in
the dtype of the inputs (the promoted dtype of hidden states and weight; the autocast dtype when
autocast is on), as the model's own ``lm_head`` would have run them.

The rows contract. ``hidden`` is ``[N, H]``: the caller flattens ``[B, L, H]`` and keeps the rows that
predict a labelled token (for a causal LM: shift first, so row ``i`` holds the hidden state at the
position *before* label ``i``), or every row for KD on unlabelled text. ``labels`` is ``[N]`` (class ids,
``-100`` for a row that no term sees). A row whose label is ``-100`` counts for no term, the KL terms
included (as in `hf_prokt.losses`, where every per-token term averages over the labelled tokens), so
passing unselected rows gives the same values and only costs their compute. The sum over the rows
that count is divided by ``num_items`` when given -- the number of labelled tokens of a whole
gradient-accumulation window, as the `Trainer`'s ``num_items_in_batch``, so that the losses of the
window's micro-batches add up to the window's mean -- else by the number of rows that count (all rows
without labels). No row counting gives a loss of 0 (no gradient), not NaN.

Gradients reach whichever of the hidden states, weight and bias of the side a loss trains require
grad; the other side is a constant for it (as if detached). A weight shared with the input embedding
(tied GPT-2 ``lm_head``) needs nothing special: autograd adds the two contributions. The losses can be
back-propagated once (``retain_graph`` is not supported: the stored gradients are handed to autograd).

`plain_distillation_losses` computes the same quantities with full logits and autograd: the reference
of the tests and of ``benchmarks/chunked_loss.py``. Nothing here knows about models or the Trainer.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
"""The label of a row that no term sees, as in `transformers` (and `hf_prokt.losses`)."""

DEFAULT_CHUNK_BYTES = 40 * 2**20
"""Budget of one chunk's fp32 logits of one model, ``chunk_size * V * 4`` bytes, from which
`default_chunk_size` derives the number of rows per chunk. A chunk holds up to about five such tensors
at once (logits / log-probabilities and probabilities of each model, the gradient of each trained side),
so the loss's working memory is about five times this budget, plus the gradients of the inputs. Chosen
with ``benchmarks/chunked_loss.py`` (docs/chunked_losses.md): at ``V = 32000`` (327 rows) the KD
student loss's extra peak memory is about a seventh of the full-logits one on a CPU, at no more time. On
glibc, tensors above 32 MiB are mapped and returned to the system when freed; smaller chunks come out of
the heap, whose measured peak varied from run to run."""

PARTS = ("distill_loss", "task_loss", "teacher_task_loss", "proximity")


class ChunkedLosses(NamedTuple):
    """What `chunked_distillation_losses` returns.

    ``student_loss`` / ``teacher_loss``: scalars with a graph (fp32, fp64 for fp64 inputs), or None when
    none of their terms was asked for. ``parts``: the detached terms that were computed, by name
    (``distill_loss``, ``task_loss``, ``teacher_task_loss``, ``proximity``), unweighted.
    """

    student_loss: torch.Tensor | None
    teacher_loss: torch.Tensor | None
    parts: dict[str, torch.Tensor]


def default_chunk_size(vocab_size: int, rows: int | None = None, budget_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk such that one chunk's fp32 logits of one model (``[chunk_size, vocab_size]``) fit in
    ``budget_bytes``: ``budget_bytes // (4 * vocab_size)``, at least 1 and at most ``rows`` when given.
    With the default 40 MiB: 327 rows at ``V = 32000``, 160 at ``V = 65536``, 81 at ``V = 128256``."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    size = max(1, budget_bytes // (4 * vocab_size))
    return max(1, min(size, rows)) if rows is not None else size


# ----------------------------------------------------------------------------------------- validation


def _check_side(name: str, hidden, weight, bias) -> None:
    if hidden is None or weight is None:
        if hidden is not None or weight is not None or bias is not None:
            raise ValueError(f"{name}: give both the hidden states and the lm_head weight, or neither")
        return
    if hidden.dim() != 2:
        raise ValueError(
            f"{name}_hidden must be [N, H] (rows already selected), got shape {list(hidden.shape)}: flatten "
            f"[B, L, H] to [B * L, H] and keep the rows whose label is not -100 (shifted first for a causal LM)"
        )
    if weight.dim() != 2:
        raise ValueError(f"{name}_weight must be the lm_head weight [V, H], got shape {list(weight.shape)}")
    if hidden.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{name}_hidden has width {hidden.shape[1]} but {name}_weight is {list(weight.shape)} ([V, H]): the "
            f"hidden states must be the input of that lm_head (the model's last hidden states)"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"{name}_bias must be [V] = [{weight.shape[0]}], got shape {list(bias.shape)}")
    if hidden.device != weight.device or (bias is not None and bias.device != weight.device):
        raise ValueError(f"{name}: hidden states, weight and bias must be on one device")
    for tensor in (hidden, weight, bias):
        if tensor is not None and not tensor.is_floating_point():
            raise ValueError(f"{name}: hidden states, weight and bias must be floating point, got {tensor.dtype}")


def _matmul_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    device_type = hidden.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _loss_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


@dataclass(frozen=True)
class _Setup:
    """Everything the chunk loop needs besides the tensors (validated)."""

    weights: dict[str, float | None]  # term -> weight in its loss, None when not computed
    temperature: float
    smoothing: dict[str, float]  # side -> label smoothing of its cross-entropy
    chunk_size: int
    denominator: float
    loss_dtype: torch.dtype
    matmul_dtype: dict[str, torch.dtype]
    grads: dict[str, tuple[bool, bool, bool]]  # side -> whether hidden, weight, bias get a gradient


_TERMS = {"distill_loss": "student", "task_loss": "student", "teacher_task_loss": "teacher", "proximity": "teacher"}


def _setup(student, teacher, labels, weights, temperature, label_smoothing, teacher_label_smoothing, num_items,
           chunk_size) -> _Setup:
    sides = {"student": student, "teacher": teacher}
    for name, (hidden, weight, bias) in sides.items():
        _check_side(name, hidden, weight, bias)
    present = [name for name, side in sides.items() if side[0] is not None]
    if not present:
        raise ValueError("give the hidden states and lm_head weight of at least one model")
    if all(weight is None for weight in weights.values()):
        raise ValueError("no term asked for: give at least one loss weight")
    for term, weight in weights.items():
        if weight is None:
            continue
        if not math.isfinite(weight):
            raise ValueError(f"the weight of {term} must be finite, got {weight}")
        needed = ("student", "teacher") if term in ("distill_loss", "proximity") else (_TERMS[term],)
        for name in needed:
            if sides[name][0] is None:
                raise ValueError(f"{term} needs the {name}'s hidden states and lm_head weight")
        if term in ("task_loss", "teacher_task_loss") and labels is None:
            raise ValueError(f"{term} (a cross-entropy) needs labels")
    rows = {sides[name][0].shape[0] for name in present}
    vocab = {sides[name][1].shape[0] for name in present}
    if len(rows) > 1:
        raise ValueError(f"student and teacher hidden states have different numbers of rows: "
                         f"{student[0].shape[0]} vs {teacher[0].shape[0]} (the same positions of both models)")
    if len(vocab) > 1:
        raise ValueError(f"student and teacher lm_heads have different vocabularies: "
                         f"{student[1].shape[0]} vs {teacher[1].shape[0]}")
    (n,), (v,) = rows, vocab
    device = sides[present[0]][0].device
    if len(present) == 2 and student[0].device != teacher[0].device:
        raise ValueError("student and teacher tensors must be on one device")
    if labels is not None:
        if labels.dim() != 1 or labels.shape[0] != n:
            raise ValueError(f"labels must be [N] = [{n}] (one per row of the hidden states, -100 where no term "
                             f"applies), got shape {list(labels.shape)}")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer class ids, got {labels.dtype}")
        if labels.device != device:
            raise ValueError("labels must be on the device of the hidden states")
        counted = labels != IGNORE_INDEX
        if counted.any() and (labels[counted].min() < 0 or labels[counted].max() >= v):
            raise ValueError(f"labels must be in [0, {v}) or -100, got values in "
                             f"[{int(labels[counted].min())}, {int(labels[counted].max())}]")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    for name, value in (("label_smoothing", label_smoothing), ("teacher_label_smoothing", teacher_label_smoothing)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if chunk_size is None:
        chunk_size = default_chunk_size(v, n)
    elif chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    if num_items is not None:
        num_items = float(num_items)
        if not num_items >= 0:
            raise ValueError(f"num_items must be a non-negative count, got {num_items}")
        denominator = num_items
    else:
        denominator = float((labels != IGNORE_INDEX).sum()) if labels is not None else float(n)
    enabled = torch.is_grad_enabled()
    grads = {}
    for name, (hidden, weight, bias) in sides.items():
        trains = any(weights[term] not in (None, 0.0) for term, side in _TERMS.items() if side == name)
        grads[name] = tuple(enabled and trains and t is not None and t.requires_grad for t in (hidden, weight, bias))
    return _Setup(
        weights=dict(weights), temperature=float(temperature),
        smoothing={"student": float(label_smoothing), "teacher": float(teacher_label_smoothing)},
        chunk_size=int(chunk_size), denominator=max(denominator, 1.0),
        loss_dtype=_loss_dtype(*student, *teacher),
        matmul_dtype={name: _matmul_dtype(side[0], side[1]) for name, side in sides.items() if side[0] is not None},
        grads=grads,
    )


# ----------------------------------------------------------------------------------------- chunk loop


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(-1)`` for ``[c, V]`` tensors without a ``[c, V]`` temporary."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


def _subtract_targets(probabilities: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """In place: ``q - (1 - eps) * onehot(y) - eps / V``, the gradient of the smoothed cross-entropy in the logits."""
    coefficient = torch.full((labels.shape[0], 1), -(1.0 - smoothing), dtype=probabilities.dtype,
                             device=probabilities.device)
    probabilities.scatter_add_(1, labels.unsqueeze(1), coefficient)
    if smoothing:
        probabilities.sub_(smoothing / probabilities.shape[1])
    return probabilities


def _cross_entropy_rows(log_probs: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    nll = -log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    if not smoothing:
        return nll
    return (1.0 - smoothing) * nll - smoothing * log_probs.mean(dim=-1)


def _accumulate(total: torch.Tensor | None, term: torch.Tensor, scale: float) -> torch.Tensor:
    """``total + scale * term``, in place on ``total`` (or on ``term`` when ``total`` is None)."""
    if total is None:
        return term.mul_(scale)
    return total.add_(term, alpha=scale)


def _chunk(z: dict[str, torch.Tensor], labels: torch.Tensor | None, setup: _Setup,
           wants_grad: dict[str, bool]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
    """The per-row terms (unweighted, ``[c]``) and the gradients in each side's logits (``[c, V]``, of the
    weighted sum of its loss's terms per row, before the row weights) of one chunk. Consumes ``z``."""
    w, temperature = setup.weights, setup.temperature
    rows: dict[str, torch.Tensor] = {}
    grad: dict[str, torch.Tensor | None] = {"student": None, "teacher": None}
    kl_asked = w["distill_loss"] is not None or w["proximity"] is not None
    log_probs_t: dict[str, torch.Tensor] = {}  # log-probabilities at the temperature, for the KL terms
    for side, term in (("student", "task_loss"), ("teacher", "teacher_task_loss")):
        if w[term] is None:
            continue
        eps = setup.smoothing[side]
        log_probs = torch.log_softmax(z[side], dim=-1)
        rows[term] = _cross_entropy_rows(log_probs, labels, eps)
        shared = kl_asked and temperature == 1.0
        if shared or not kl_asked:
            del z[side]  # the logits are not needed again: free them before the next buffer
        if wants_grad[side] and w[term] != 0.0:
            probabilities = log_probs.exp() if shared else log_probs.exp_()
            grad[side] = _subtract_targets(probabilities, labels, eps).mul_(w[term])
        if shared:
            log_probs_t[side] = log_probs
        del log_probs
    if not kl_asked:
        return rows, grad
    for side in ("student", "teacher"):
        if side not in log_probs_t:
            logits = z.pop(side)
            log_probs_t[side] = torch.log_softmax(logits if temperature == 1.0 else logits.div_(temperature), dim=-1)
            del logits
    p_s, p_t = log_probs_t["student"].exp(), log_probs_t["teacher"].exp()
    difference = log_probs_t["teacher"].sub_(log_probs_t["student"])  # log p_T - log p_S
    del log_probs_t
    scale = temperature**2
    if w["distill_loss"] is not None:
        rows["distill_loss"] = scale * _rowdot(p_t, difference)
    if w["proximity"] is not None:
        rows["proximity"] = -scale * _rowdot(p_s, difference)
    del difference
    student_kl = wants_grad["student"] and w["distill_loss"] not in (None, 0.0)
    teacher_kl = wants_grad["teacher"] and w["proximity"] not in (None, 0.0)
    if student_kl or teacher_kl:
        p_s.sub_(p_t)  # p_S - p_T: d(T^2 KL(p_T || p_S)) / dz_S = T (p_S - p_T), and the opposite for the teacher
        del p_t
        if student_kl and teacher_kl:
            grad["student"] = _accumulate(grad["student"], p_s if grad["student"] is not None else p_s.clone(),
                                          w["distill_loss"] * temperature)
            grad["teacher"] = _accumulate(grad["teacher"], p_s, -w["proximity"] * temperature)
        elif student_kl:
            grad["student"] = _accumulate(grad["student"], p_s, w["distill_loss"] * temperature)
        else:
            grad["teacher"] = _accumulate(grad["teacher"], p_s, -w["proximity"] * temperature)
    return rows, grad


class _ChunkedLinearLosses(torch.autograd.Function):
    """Forward: the losses and, eagerly, their gradients; backward: those gradients times the incoming ones."""

    @staticmethod
    def forward(ctx, s_hidden, s_weight, s_bias, t_hidden, t_weight, t_bias, labels, setup: _Setup):
        ctx.set_materialize_grads(False)
        tensors = {"student": (s_hidden, s_weight, s_bias), "teacher": (t_hidden, t_weight, t_bias)}
        present = {name: side for name, side in tensors.items() if side[0] is not None}
        n = next(iter(present.values()))[0].shape[0]
        device = next(iter(present.values()))[0].device
        dtype = setup.loss_dtype
        counted = labels != IGNORE_INDEX if labels is not None else None
        safe_labels = labels.masked_fill(~counted, 0) if labels is not None else None

        matmul = {}  # side -> (weight, bias) in the matmul dtype (no copy when already in it)
        buffers = {}  # side -> [grad hidden, grad weight (loss dtype), grad bias (loss dtype)] or None each
        for name, (hidden, weight, bias) in present.items():
            md = setup.matmul_dtype[name]
            matmul[name] = (weight.to(md), bias.to(md) if bias is not None else None)
            wants_h, wants_w, wants_b = setup.grads[name]
            buffers[name] = [
                torch.zeros_like(hidden) if wants_h else None,
                torch.zeros(weight.shape, dtype=dtype, device=device) if wants_w else None,
                torch.zeros(weight.shape[0], dtype=dtype, device=device) if wants_b else None,
            ]
        wants_grad = {name: any(setup.grads[name]) for name in tensors}
        sums = {term: torch.zeros((), dtype=dtype, device=device) for term, weight in setup.weights.items()
                if weight is not None}

        # the matmul dtypes were fixed by _setup (autocast included): nothing is cast behind their back
        autocast_off = (torch.autocast(device.type, enabled=False) if torch.amp.is_autocast_available(device.type)
                        else contextlib.nullcontext())
        with autocast_off:
            for start in range(0, n, setup.chunk_size):
                stop = min(start + setup.chunk_size, n)
                z = {}
                for name, (hidden, _, _) in present.items():
                    weight, bias = matmul[name]
                    z[name] = F.linear(hidden[start:stop].to(weight.dtype), weight, bias).to(dtype)
                chunk_labels = safe_labels[start:stop] if labels is not None else None
                rows, grad = _chunk(z, chunk_labels, setup, wants_grad)
                row_weights = None
                if counted is not None:
                    row_weights = counted[start:stop].to(dtype).div_(setup.denominator)
                for term, values in rows.items():
                    sums[term] += values @ row_weights if row_weights is not None else values.sum() / setup.denominator
                for name, g in grad.items():
                    if g is None:
                        continue
                    if row_weights is not None:
                        g.mul_(row_weights.unsqueeze(1))
                    else:
                        g.div_(setup.denominator)
                    grad_h, grad_w, grad_b = buffers[name]
                    weight, _ = matmul[name]
                    g_md = g.to(weight.dtype)
                    hidden = present[name][0]
                    if grad_h is not None:
                        grad_h[start:stop] = g_md @ weight
                    if grad_w is not None:
                        if g_md.dtype == grad_w.dtype:
                            grad_w.addmm_(g_md.t(), hidden[start:stop].to(g_md.dtype))
                        else:
                            grad_w += (g_md.t() @ hidden[start:stop].to(g_md.dtype)).to(grad_w.dtype)
                    if grad_b is not None:
                        grad_b += g.sum(dim=0)
                    del g, g_md
                del z, rows, grad

        zero = torch.zeros((), dtype=dtype, device=device)
        losses = {}
        for name in ("student", "teacher"):
            terms = [(term, weight) for term, weight in setup.weights.items()
                     if _TERMS[term] == name and weight is not None]
            losses[name] = sum((weight * sums[term] for term, weight in terms), zero.clone()) if terms else zero.clone()
        parts = torch.stack([sums[term] if term in sums else zero for term in PARTS])

        stored = {}
        for name, (_, weight, bias) in present.items():
            grad_h, grad_w, grad_b = buffers[name]
            stored[name] = (
                grad_h,
                grad_w.to(weight.dtype) if grad_w is not None else None,
                grad_b.to(bias.dtype) if grad_b is not None else None,
            )
        ctx.stored = stored
        ctx.mark_non_differentiable(parts)
        return losses["student"], losses["teacher"], parts

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_student, grad_teacher, _grad_parts):
        stored = ctx.stored
        if stored is None:
            raise RuntimeError("the chunked losses can be back-propagated once (their gradients were computed "
                               "in the forward pass and handed to autograd): do not use retain_graph")
        ctx.stored = None  # hand the buffers over, so that autograd can keep them as .grad without a copy
        result = []
        for name, grad_output in (("student", grad_student), ("teacher", grad_teacher)):
            buffers = stored.get(name, (None, None, None))
            if grad_output is None:
                result.extend([None, None, None])
                continue
            factor = float(grad_output)
            for buffer in buffers:
                if buffer is not None and factor != 1.0:
                    buffer.mul_(factor)
                result.append(buffer)
        del stored, buffers
        return (*result, None, None)


# ----------------------------------------------------------------------------------------- public API


def chunked_distillation_losses(
    student_hidden: torch.Tensor | None,
    student_weight: torch.Tensor | None,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    student_kl_weight: float | None = None,
    student_ce_weight: float | None = None,
    teacher_ce_weight: float | None = None,
    teacher_kl_weight: float | None = None,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
    teacher_label_smoothing: float = 0.0,
    num_items: int | torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> ChunkedLosses:
    """The student and teacher losses, over chunks of ``chunk_size`` rows (module docstring).

    Args:
        student_hidden: ``[N, H_S]``, the student's last hidden states at the selected rows.
        student_weight: ``[V, H_S]``, the student's ``lm_head`` weight (``student_bias``: ``[V]`` or None).
        teacher_hidden: ``[N, H_T]``, the teacher's at the same rows; may be None when no term needs it.
        teacher_weight: ``[V, H_T]`` (``teacher_bias``: ``[V]`` or None).
        labels: ``[N]`` integer ids in ``[0, V)``, -100 for a row no term sees; None counts every row
            (then no cross-entropy can be asked for).
        student_kl_weight, student_ce_weight: weights of ``distill_loss`` (``T^2 * KL(p_T || p_S)``) and
            ``task_loss`` (``CE(z_S, y)``) in the student loss; None: the term is not computed. A weight of
            0 computes the term (it is in ``parts``) without a gradient.
        teacher_ce_weight, teacher_kl_weight: weights of ``teacher_task_loss`` (``CE(z_T, y)``) and
            ``proximity`` (``T^2 * KL(p_S || p_T)``) in the teacher loss.
        temperature: ``T`` of the KL terms (the cross-entropies are at temperature 1).
        label_smoothing, teacher_label_smoothing: of each model's cross-entropy, as in `F.cross_entropy`.
        num_items: the normaliser of the sums (e.g. the `Trainer`'s ``num_items_in_batch``); None: the
            number of rows that count.
        chunk_size: rows per chunk; None: `default_chunk_size`. The values do not depend on it beyond
            float rounding.

    Returns:
        `ChunkedLosses` ``(student_loss, teacher_loss, parts)``.
    """
    weights = {"distill_loss": student_kl_weight, "task_loss": student_ce_weight,
               "teacher_task_loss": teacher_ce_weight, "proximity": teacher_kl_weight}
    student, teacher = (student_hidden, student_weight, student_bias), (teacher_hidden, teacher_weight, teacher_bias)
    setup = _setup(student, teacher, labels, weights, temperature, label_smoothing, teacher_label_smoothing,
                   num_items, chunk_size)
    student_loss, teacher_loss, parts = _ChunkedLinearLosses.apply(*student, *teacher, labels, setup)
    return _assemble(student_loss, teacher_loss, parts, weights)


def _assemble(student_loss, teacher_loss, parts, weights) -> ChunkedLosses:
    asked = {side: any(weights[term] is not None for term, owner in _TERMS.items() if owner == side)
             for side in ("student", "teacher")}
    named = {term: parts[i] for i, term in enumerate(PARTS) if weights[term] is not None}
    return ChunkedLosses(student_loss if asked["student"] else None, teacher_loss if asked["teacher"] else None,
                         named)


def chunked_student_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor | None,
    teacher_weight: torch.Tensor | None,
    labels: torch.Tensor | None,
    alpha: float,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    num_items: int | torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KD, and step 4 of ProKT: ``alpha * T^2 * KL(p_T || p_S) + (1 - alpha) * CE(z_S, y)``, chunked.

    The chunked counterpart of `hf_prokt.losses.student_loss`: the KL is skipped at ``alpha == 0`` (the
    teacher may then be None) and the cross-entropy at ``alpha == 1`` (labels may then be None).
    Shapes and ``num_items`` / ``chunk_size`` as in `chunked_distillation_losses`.

    Returns:
        ``(loss, parts)``, ``parts`` holding the detached ``distill_loss`` and ``task_loss`` that were used.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha < 1 and labels is None:
        raise ValueError("alpha < 1 needs labels (the cross-entropy term)")
    result = chunked_distillation_losses(
        student_hidden, student_weight, teacher_hidden if alpha > 0 else None, teacher_weight if alpha > 0 else None,
        labels, student_bias=student_bias, teacher_bias=teacher_bias if alpha > 0 else None,
        student_kl_weight=alpha if alpha > 0 else None, student_ce_weight=1.0 - alpha if alpha < 1 else None,
        temperature=temperature, label_smoothing=label_smoothing, num_items=num_items, chunk_size=chunk_size,
    )
    return result.student_loss, result.parts


def chunked_teacher_loss(
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    labels: torch.Tensor,
    move_back_weight: float,
    temperature: float = 1.0,
    *,
    teacher_bias: torch.Tensor | None = None,
    student_bias: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    num_items: int | torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2 of ProKT, penalty form: ``(1 - lam) * CE(z_T, y) + lam * T^2 * KL(p_S || p_T)``, chunked.

    The chunked counterpart of `hf_prokt.losses.teacher_penalty_loss` (``label_smoothing`` is the
    teacher's, 0 by default as there). Gradients reach the teacher's side only.

    Returns:
        ``(loss, proximity)``: the loss and the detached ``T^2 * KL(p_S || p_T)``.
    """
    if not 0.0 <= move_back_weight <= 1.0:
        raise ValueError(f"move_back_weight must be in [0, 1], got {move_back_weight}")
    result = chunked_distillation_losses(
        student_hidden, student_weight, teacher_hidden, teacher_weight, labels, student_bias=student_bias,
        teacher_bias=teacher_bias, teacher_ce_weight=1.0 - move_back_weight, teacher_kl_weight=move_back_weight,
        temperature=temperature, teacher_label_smoothing=label_smoothing, num_items=num_items, chunk_size=chunk_size,
    )
    return result.teacher_loss, result.parts["proximity"]


def chunked_prokt_losses(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    move_back_weight: float,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    teacher_label_smoothing: float = 0.0,
    num_items: int | torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> ChunkedLosses:
    """Both ProKT losses from one pass over the chunks (each side's logits computed once per chunk):
    student ``alpha * T^2 * KL(p_T || p_S) + (1 - alpha) * CE(z_S, y)``, teacher
    ``(1 - lam) * CE(z_T, y) + lam * T^2 * KL(p_S || p_T)`` with ``lam = move_back_weight``.

    Each loss trains its own side only. All four terms are in ``parts``. Back-propagate the two losses
    together (``(student_loss + teacher_loss).backward()``) or each once.
    """
    for name, value in (("alpha", alpha), ("move_back_weight", move_back_weight)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    return chunked_distillation_losses(
        student_hidden, student_weight, teacher_hidden, teacher_weight, labels, student_bias=student_bias,
        teacher_bias=teacher_bias, student_kl_weight=alpha, student_ce_weight=1.0 - alpha,
        teacher_ce_weight=1.0 - move_back_weight, teacher_kl_weight=move_back_weight, temperature=temperature,
        label_smoothing=label_smoothing, teacher_label_smoothing=teacher_label_smoothing, num_items=num_items,
        chunk_size=chunk_size,
    )


# ----------------------------------------------------------------------------------------- reference


def plain_distillation_losses(
    student_hidden: torch.Tensor | None,
    student_weight: torch.Tensor | None,
    teacher_hidden: torch.Tensor | None = None,
    teacher_weight: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    *,
    student_bias: torch.Tensor | None = None,
    teacher_bias: torch.Tensor | None = None,
    student_kl_weight: float | None = None,
    student_ce_weight: float | None = None,
    teacher_ce_weight: float | None = None,
    teacher_kl_weight: float | None = None,
    temperature: float = 1.0,
    label_smoothing: float = 0.0,
    teacher_label_smoothing: float = 0.0,
    num_items: int | torch.Tensor | None = None,
) -> ChunkedLosses:
    """The same as `chunked_distillation_losses`, written plainly: full ``[N, V]`` logits of both models,
    `F.log_softmax` / `F.cross_entropy`, and autograd for the gradients (each loss sees the other side's
    logits detached). The reference of the tests and of the benchmark; it holds several ``[N, V]`` tensors."""
    weights = {"distill_loss": student_kl_weight, "task_loss": student_ce_weight,
               "teacher_task_loss": teacher_ce_weight, "proximity": teacher_kl_weight}
    student, teacher = (student_hidden, student_weight, student_bias), (teacher_hidden, teacher_weight, teacher_bias)
    setup = _setup(student, teacher, labels, weights, temperature, label_smoothing, teacher_label_smoothing,
                   num_items, None)
    dtype = setup.loss_dtype
    logits = {}
    for name, (hidden, weight, bias) in (("student", student), ("teacher", teacher)):
        if hidden is not None:
            md = setup.matmul_dtype[name]
            logits[name] = F.linear(hidden.to(md), weight.to(md), bias.to(md) if bias is not None else None).to(dtype)
    n = next(iter(logits.values())).shape[0]
    counted = labels != IGNORE_INDEX if labels is not None else torch.ones(n, dtype=torch.bool,
                                                                          device=next(iter(logits.values())).device)
    t = temperature
    sums = {}

    def kl_rows(target, logits_):  # KL(softmax(target / T) || softmax(logits_ / T)) per row
        target_log_probs = F.log_softmax(target / t, dim=-1)
        return (target_log_probs.exp() * (target_log_probs - F.log_softmax(logits_ / t, dim=-1))).sum(dim=-1)

    if weights["distill_loss"] is not None:
        rows = t**2 * kl_rows(logits["teacher"].detach(), logits["student"])
        sums["distill_loss"] = rows.masked_fill(~counted, 0).sum() / setup.denominator
    if weights["task_loss"] is not None:
        sums["task_loss"] = F.cross_entropy(logits["student"], labels, ignore_index=IGNORE_INDEX, reduction="sum",
                                            label_smoothing=label_smoothing) / setup.denominator
    if weights["teacher_task_loss"] is not None:
        sums["teacher_task_loss"] = F.cross_entropy(logits["teacher"], labels, ignore_index=IGNORE_INDEX,
                                                    reduction="sum",
                                                    label_smoothing=teacher_label_smoothing) / setup.denominator
    if weights["proximity"] is not None:
        rows = t**2 * kl_rows(logits["student"].detach(), logits["teacher"])
        sums["proximity"] = rows.masked_fill(~counted, 0).sum() / setup.denominator
    losses = {}
    for name in ("student", "teacher"):
        terms = [(term, weights[term]) for term, side in _TERMS.items() if side == name and weights[term] is not None]
        losses[name] = sum(weight * sums[term] for term, weight in terms) if terms else None
    return ChunkedLosses(losses["student"], losses["teacher"], {term: value.detach() for term, value in sums.items()})
