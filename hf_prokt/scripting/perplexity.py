"""Perplexity of a causal LM over the tokens of an evaluation set, from the `Trainer`'s evaluation loop.

The `Trainer`'s ``eval_loss`` is the mean of the batches' mean losses weighted by their rows: the mean over
tokens only when every row counts as many tokens (blocks of text). `next_token_loss_sums` reduces each batch's
logits to two numbers per row (the summed next-token cross-entropy and the count of predicted tokens), so that
`perplexity_metrics` can give ``perplexity = exp(sum of losses / number of tokens)`` and ``token_loss`` over the
whole set, for the student and (``eval_teacher_*``) the teacher, without keeping any logits.
"""

from __future__ import annotations

import math

import numpy as np
import torch

IGNORE_INDEX = -100


def next_token_loss_sums(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B, 2]``: per row, the summed cross-entropy of ``logits[:, :-1]`` (``[B, L, V]``) against ``labels[:, 1:]``
    (``[B, L]``) over the labels that are not -100, and their count. For ``preprocess_logits_for_metrics``."""
    if isinstance(logits, tuple):
        logits = logits[0]
    predicted, targets = logits[:, :-1].float(), labels[:, 1:]
    counted = targets != IGNORE_INDEX
    losses = torch.nn.functional.cross_entropy(predicted.transpose(1, 2), targets.clamp(min=0), reduction="none")
    return torch.stack([(losses * counted).sum(dim=1), counted.sum(dim=1).to(losses.dtype)], dim=1)


def perplexity_metrics(prediction) -> dict[str, float]:
    """``{"token_loss", "perplexity"}`` from the rows of `next_token_loss_sums` (a ``compute_metrics``)."""
    sums = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1, 2)
    tokens = sums[:, 1].sum()
    if tokens == 0:
        raise ValueError("the evaluation set has no token to predict (every label is -100).")
    loss = sums[:, 0].sum() / tokens
    return {"token_loss": float(loss), "perplexity": float(math.exp(loss)) if loss < 700 else float("inf")}
