"""``strategy="kd"``: classic knowledge distillation (Hinton et al.) from a frozen teacher.

The student learns from the teacher's prediction on each micro-batch, which comes from one of:

- the live teacher, in eval mode and without a graph (its own dtype, or cast with ``teacher_dtype`` to halve it);
- the training set's ``teacher_logits`` column (`hf_prokt.cache_teacher_logits`): no teacher runs during training,
  and ``teacher_model`` may be None;
- for a causal LM, the training set's ``teacher_topk_*`` columns (`hf_prokt.cache_teacher_topk`): the teacher's
  top-k log-probabilities of every predicted position, learnt from with the rest of its mass as one outcome
  (`hf_prokt.losses.topk`); no teacher runs either.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..deepspeed import engines as deepspeed_engines
from ..eval_mode import eval_mode
from ..model_kinds import TEACHER_LOGITS, TEACHER_TOPK_INDICES, TEACHER_TOPK_LOGPROBS
from ..pair_checks import on_device_of
from ..teacher.lm_topk_cache import TeacherTopkCollator, check_topk_batch
from ..teacher.logit_cache import TeacherLogitsCollator, check_cached_logits_shape, has_on_the_fly_transform
from .distillation import Distillation, Target
from .registry import register_strategy

logger = logging.getLogger(__name__)


@register_strategy
class KnowledgeDistillation(Distillation):
    """A frozen teacher: eval mode, no optimizer, never checkpointed (it does not change)."""

    name = "kd"
    accepts_cached_logits = True
    summary = "distilled from a frozen teacher"
    description = "knowledge distillation from a frozen teacher (Hinton et al., 2015)"

    def learns_from_cache(self, train_dataset, teacher: nn.Module | None) -> bool:
        columns = getattr(train_dataset, "column_names", None)
        if not isinstance(columns, list):
            return False
        self.uses_cached_topk = TEACHER_TOPK_LOGPROBS in columns
        if TEACHER_LOGITS not in columns and not self.uses_cached_topk:
            return False
        column = TEACHER_TOPK_LOGPROBS if self.uses_cached_topk else TEACHER_LOGITS
        if self.args.uses_intermediate_terms:
            raise ValueError(
                f"the intermediate terms (hidden/embedding/attention_distill_weight) need the teacher's hidden states "
                f"at every step, and the cached {column!r} hold only its predictions. Set those weights to 0 to "
                f"train from the cache, or remove the cache's columns and pass teacher_model."
            )
        if has_on_the_fly_transform(train_dataset):
            raise ValueError(
                f"the training set has cached {column!r} and an on-the-fly transform (set_transform / "
                "with_transform): the inputs of each epoch may differ from those the logits were computed on (e.g. "
                "random augmentation). Apply a deterministic preprocessing with dataset.map(...) before caching, or "
                "remove the column and pass teacher_model."
            )
        if teacher is None and self.args.evaluate_teacher:
            raise ValueError(f"evaluate_teacher=True needs the teacher model: the cached {column} serve "
                             "training only. Pass teacher_model=<the teacher> too, or set evaluate_teacher=False.")
        if teacher is not None:
            logger.warning(f"The training set has cached {column!r}: the student learns from them and the "
                           "teacher is not run during training (it is kept for evaluation).")
        return True

    def attach(self, trainer) -> None:
        if self.uses_cached_topk:
            trainer.data_collator = TeacherTopkCollator(trainer.data_collator)
        elif self.uses_cached_teacher_logits:
            trainer.data_collator = TeacherLogitsCollator(trainer.data_collator)
        super().attach(trainer)
        if self.uses_cached_teacher_logits:
            self._probe_cached_logits()

    @torch.no_grad()
    def _probe_cached_logits(self) -> None:
        """The student on two training examples against their cached logits: a cache from a teacher with other
        outputs fails here, before any step."""
        student, batch = self.trainer.model, self.example_batch()
        with eval_mode(student), self.trainer.accelerator.autocast():
            logits = self.kind.predictions(student(**self.kind.model_inputs(on_device_of(student, batch))))
        if self.uses_cached_topk:
            self.check_topk(batch, logits.shape[-1])
        else:
            check_cached_logits_shape(logits, batch[TEACHER_LOGITS])
        self.check_batch_has_labels(batch)

    def check_topk(self, batch: dict, vocab_size: int) -> None:
        """Refuse cached top-k rows of other positions, another vocabulary or another temperature."""
        check_topk_batch(batch, self.kind.predicted_positions(batch), vocab_size, self.args.distill_temperature)

    def prepare_for_training(self, num_training_steps: int) -> None:
        super().prepare_for_training(num_training_steps)
        if self.teacher_model is None:
            return
        trainer = self.trainer
        if not self._teacher_prepared:
            if trainer.is_fsdp_enabled:  # FSDP2 prepares a model only with an optimizer: keep it whole, placed
                self.teacher_model.to(trainer.accelerator.device)
            elif trainer.is_deepspeed_enabled:  # partitioned under ZeRO-3 (hf_prokt.deepspeed.engines)
                self.wrapped_teacher = deepspeed_engines.inference_engine(trainer, self.teacher_model)
            else:
                self.wrapped_teacher = trainer.accelerator.prepare_model(self.teacher_model, evaluation_mode=True)
            self._teacher_prepared = True
        self.teacher_model.eval()

    def run_teacher(self, teacher: nn.Module, inputs: dict, flags: dict, to_head: bool = False):
        if self.trainer.is_fsdp_enabled:  # a teacher the accelerator did not prepare: mixed precision by hand
            with self.trainer.accelerator.autocast():
                return super().run_teacher(teacher, inputs, flags, to_head)
        return super().run_teacher(teacher, inputs, flags, to_head)

    def target(self, model: nn.Module, inputs: dict, student_outputs) -> Target:
        if self.uses_cached_topk:
            return Target(None, topk=(inputs[TEACHER_TOPK_LOGPROBS], inputs[TEACHER_TOPK_INDICES]))
        if self.uses_cached_teacher_logits:
            return Target(inputs[TEACHER_LOGITS])
        return self.teacher_prediction(inputs)

    def card_description(self) -> str:
        cached = ", from its logits cached once over the training set" if self.uses_cached_teacher_logits else ""
        if self.uses_cached_topk:
            cached = ", from its top-k log-probabilities cached once over the training set"
        return self.description + cached
