"""``strategy="finetune"``: the student alone on the labels, with the `Trainer`'s own loss (the baseline)."""

from __future__ import annotations

import logging

from ..model_kinds import model_kind_of
from ..pair_checks import check_distillation_pair
from .base import Strategy
from .registry import register_strategy

logger = logging.getLogger(__name__)


@register_strategy
class FineTuning(Strategy):
    """Plain fine-tuning: no teacher; every `Trainer` behaviour unchanged."""

    name = "finetune"
    summary = "fine-tuned on labels (no teacher)"
    description = "plain fine-tuning on labels (no teacher)"

    def __init__(self, args, student, teacher, trainer_kwargs):
        super().__init__(args, student, teacher, trainer_kwargs)
        if student is not None or trainer_kwargs.get("model_init") is None:
            check_distillation_pair(student, None)
        kind = model_kind_of(student)
        if student is not None and not kind.has_predictions:
            raise ValueError(
                f"the student is a {kind.name}: it returns no logits and computes no loss of its own, so there is "
                "nothing to fine-tune it on. Load it with a task head (e.g. AutoModelForSequenceClassification), or "
                "distil it with strategy='kd' and the intermediate terms (general distillation)."
            )
        if teacher is not None:
            logger.warning("strategy='finetune' ignores teacher_model.")
