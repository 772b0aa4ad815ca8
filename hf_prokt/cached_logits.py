"""Training from cached teacher logits: what `ProKTTrainer` uses when its training set carries a
``teacher_logits`` column (made by `hf_prokt.cache_teacher_logits`).

`uses_cached_teacher_logits` decides whether the column is used and refuses the set-ups where a cache would
be the wrong target; `check_cached_logits_shape` compares it with the student's logits on the probe batch;
`TeacherLogitsCollator` batches it beside the inputs.
"""

from __future__ import annotations

import logging

import torch

from .teacher_cache import TEACHER_LOGITS, has_on_the_fly_transform

logger = logging.getLogger(__name__)


def uses_cached_teacher_logits(args, train_dataset, teacher_model, column: str = TEACHER_LOGITS) -> bool:
    """Whether a `ProKTTrainer` with these arguments trains from the ``teacher_logits`` column of
    ``train_dataset``; raises, before any step, where cached logits would be the wrong target."""
    columns = getattr(train_dataset, "column_names", None)
    if not isinstance(columns, list) or column not in columns or args.strategy == "finetune":
        return False
    if args.strategy == "prokt":
        raise ValueError(
            f"the training set has cached {column!r}, but strategy='prokt' trains the teacher: its logits change "
            f"at every step, so no cache can stand for it. Use strategy='kd' with the cache, or remove the column "
            f"(train_dataset.remove_columns({column!r})) and pass teacher_model for ProKT."
        )
    if args.uses_intermediate_terms:
        raise ValueError(
            f"the intermediate terms (hidden/embedding/attention_distill_weight) need the teacher's hidden states at "
            f"every step, and the cached {column!r} hold only its logits. Set those weights to 0 to train from the "
            f"cache, or remove the column and pass teacher_model."
        )
    if has_on_the_fly_transform(train_dataset):
        raise ValueError(
            f"the training set has cached {column!r} and an on-the-fly transform (set_transform / with_transform): "
            "the inputs of each epoch may differ from those the logits were computed on (e.g. random "
            "augmentation). Apply a deterministic preprocessing with dataset.map(...) before caching, or remove "
            "the column and pass teacher_model."
        )
    if teacher_model is not None:
        logger.warning(f"The training set has cached {column!r}: the student learns from them and the teacher is not "
                       "run during training (it is kept for evaluation).")
    return True


def check_cached_logits_shape(student_logits: torch.Tensor, cached_logits: torch.Tensor,
                              column: str = TEACHER_LOGITS) -> None:
    """Refuse a cache whose batched logits (``[B, C]`` or ``[B, L, C]``) do not match the student's."""
    if student_logits.shape != cached_logits.shape:
        raise ValueError(
            f"on the same training batch the student returns logits of shape {list(student_logits.shape)} and the "
            f"cached {column!r} have shape {list(cached_logits.shape)}: the cache was made by a teacher with "
            "other outputs (another number of labels, or per-token against per-sequence). Recompute it with "
            "cache_teacher_logits from a teacher with the student's labels."
        )


class TeacherLogitsCollator:
    """Wraps a data collator so that batches carry the cached ``teacher_logits`` beside the inputs.

    The wrapped collator batches everything else; the logits become ``[B, C]``, or for per-token logits
    ``[B, L, C]`` with zeros at the padded positions, ``L`` being the batch's sequence length (of its
    ``input_ids``, ``attention_mask`` or ``labels``) and the padding on the side the collator's tokenizer pads.
    Batches without the column pass through unchanged.
    """

    def __init__(self, data_collator, column: str = TEACHER_LOGITS):
        self.data_collator = data_collator
        self.column = column

    def __call__(self, features: list[dict]) -> dict:
        if not features or self.column not in features[0]:
            return self.data_collator(features)
        logits = [torch.as_tensor(f[self.column], dtype=torch.float32) for f in features]
        batch = self.data_collator([{k: v for k, v in f.items() if k != self.column} for f in features])
        shapes = {tuple(x.shape[1:]) if x.dim() > 1 else tuple(x.shape) for x in logits}
        if len(shapes) > 1:
            raise ValueError(f"the cached {self.column} of one batch have different shapes {sorted(shapes)}: they "
                             "were not made by one teacher. Recompute the cache with cache_teacher_logits.")
        if logits[0].dim() <= 1:
            batch[self.column] = torch.stack(logits)
            return batch
        length = max(x.shape[0] for x in logits)
        for key in ("input_ids", "attention_mask", "labels"):
            value = batch.get(key)
            if isinstance(value, torch.Tensor) and value.dim() > 1:
                length = value.shape[1]
                break
        side = getattr(getattr(self.data_collator, "tokenizer", None), "padding_side", "right")
        padded = logits[0].new_zeros((len(logits), length, *logits[0].shape[1:]))
        for row, values in zip(padded, logits):
            if values.shape[0] > length:
                raise ValueError(f"cached {self.column} for {values.shape[0]} positions, but the batch has "
                                 f"{length}: the cache was made from longer inputs. Recompute it from this data.")
            if side == "right":
                row[:values.shape[0]] = values
            else:
                row[length - values.shape[0]:] = values
        batch[self.column] = padded
        return batch
