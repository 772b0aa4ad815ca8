"""`ProKTTrainer`: ProKT, KD and fine-tuning on top of `transformers.Trainer`.

One optimizer step of ProKT (docs/method.md), for a batch ``(x, y)``:

1. The anchor: ``z_S = student(x)`` in eval mode, without a graph (``prokt_anchor="eval"``), or the
   detached logits of the student's training forward (``prokt_anchor="train"``, one forward fewer).
2. Teacher step: ``L_T = (1 - lam) * task(z_T, y) + lam * T^2 * KL(p_S || p_T)``; backward, clip, step
   the teacher's own optimizer and scheduler.
3. ``z_T' = teacher(x)`` after the step, in eval mode, without a graph (skipped with
   ``prokt_target="stale"``, which reuses the pre-step logits of 2).
4. Student step: ``L_S = alpha * T^2 * KL(p_T' || p_S) + (1 - alpha) * task(z_S, y)`` (+ intermediate
   terms), ``z_S`` from the student's training forward (with a graph); the `Trainer` loop clips and steps
   the student.

With gradient accumulation over ``n`` micro-batches the teacher steps once per student step, on the
same ``n`` micro-batches: at the first micro-batch of the window the trainer runs 1-2 for all of them
(the student's forwards there are without a graph), steps the teacher, then 3-4 run per micro-batch.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import datasets
import torch
from torch import nn
from transformers import Trainer, get_scheduler
from transformers.trainer import TRAINER_STATE_NAME

from . import safe_checkpoints, teacher_state
from .alignment import IntermediateDistiller
from .arguments import ProKTTrainingArguments
from .cached_logits import TeacherLogitsCollator, check_cached_logits_shape, uses_cached_teacher_logits
from .compatibility import (
    NEEDS_LABELS,
    check_distillation_pair,
    check_has_labels,
    check_teacher_sharding,
    check_trainer_setup,
    model_config,
)
from .heads import zero_classification_layer
from .losses import dual_ascent, student_loss, teacher_dual_loss, teacher_penalty_loss
from .model_card import write_model_card
from .nonfinite import NonFiniteGuard
from .pair_probe import on_device_of, probe_pair
from .teacher_cache import TEACHER_LOGITS
from .teacher_evaluation import TeacherEvaluationMixin

logger = logging.getLogger(__name__)


@dataclass
class _Target:
    """What the student learns from: detached teacher outputs. ``logits: [B, C]`` (``[B, L, C]`` for token
    classification); ``hidden_states`` and ``attentions`` as the model returns them (or None)."""

    logits: torch.Tensor
    hidden_states: tuple | None = None
    attentions: tuple | None = None

    @classmethod
    def detached(cls, outputs) -> _Target:
        def detach(features):
            return None if features is None else tuple(f.detach() for f in features)

        return cls(
            outputs.logits.detach(),
            detach(getattr(outputs, "hidden_states", None)),
            detach(getattr(outputs, "attentions", None)),
        )


class ProKTTrainer(TeacherEvaluationMixin, Trainer):
    """A `Trainer` that distils `teacher_model` into `model` (the student).

    `args.strategy` picks the recipe: ``"prokt"`` (the teacher is trained with the student and pulled
    back towards it at every step), ``"kd"`` (frozen teacher) or ``"finetune"`` (no teacher). Every
    other argument is the `Trainer`'s own; `save_model()` writes the student alone.

    Attributes:
        teacher_model: the unwrapped teacher (None for ``"finetune"``).
        teacher_optimizer, teacher_lr_scheduler: the teacher's own, for ``"prokt"`` (created by `train()`).
        dual_beta: the Lagrange multiplier of ``prokt_constraint="dual"``.
        intermediate_distiller: the learned projections of the intermediate terms, or None.
        uses_cached_teacher_logits: whether ``"kd"`` learns from the training set's ``teacher_logits`` column
            (`hf_prokt.cache_teacher_logits`) instead of running the teacher.
        compression_report: a `hf_prokt.CompressionReport` that the model card reports, or None.
    """

    def __init__(self, model: nn.Module | None = None, teacher_model: nn.Module | None = None,
                 args: ProKTTrainingArguments | None = None, **kwargs):
        if args is None:
            args = ProKTTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, ProKTTrainingArguments):
            raise TypeError(
                f"ProKTTrainer needs ProKTTrainingArguments, got {type(args).__name__}. Build the arguments with "
                "hf_prokt.ProKTTrainingArguments(...) (it accepts every TrainingArguments field)."
            )
        check_trainer_setup(args, kwargs)
        cached = uses_cached_teacher_logits(args, kwargs.get("train_dataset"), teacher_model)
        if cached and teacher_model is None and args.evaluate_teacher:
            raise ValueError("evaluate_teacher=True needs the teacher model: the cached teacher_logits serve "
                             "training only. Pass teacher_model=<the teacher> too, or set evaluate_teacher=False.")
        # From cached logits the student needs no teacher: only the student is checked then.
        pair_strategy = "finetune" if cached and teacher_model is None else args.strategy
        if model is not None or kwargs.get("model_init") is None:
            check_distillation_pair(model, teacher_model, pair_strategy)
        check_has_labels(args, kwargs.get("train_dataset"))
        if args.strategy == "finetune" and teacher_model is not None:
            logger.warning("strategy='finetune' ignores teacher_model.")
            teacher_model = None

        super().__init__(model=model, args=args, **kwargs)
        self.uses_cached_teacher_logits = cached
        self.compression_report = None
        if cached:
            self.data_collator = TeacherLogitsCollator(self.data_collator)
        if model is None:  # built by model_init: check the pair it gives
            check_distillation_pair(self.model, teacher_model, pair_strategy)
        if teacher_model is not None:
            check_teacher_sharding(args, deepspeed=self.is_deepspeed_enabled, fsdp=self.is_fsdp_enabled,
                                   fsdp2=getattr(self.accelerator, "is_fsdp2", False))

        self.teacher_model = teacher_model
        self._teacher_wrapped = teacher_model
        self._teacher_prepared = False
        self._teacher_input_names = _accepted_inputs(teacher_model) if teacher_model is not None else None
        self.teacher_optimizer = None
        self.teacher_lr_scheduler = None
        self.dual_beta = float(args.dual_init)
        self._teacher_last_lr = None
        if teacher_model is not None:
            if args.teacher_dtype is not None:
                teacher_model.to(getattr(torch, args.teacher_dtype))
            if self.place_model_on_device:
                teacher_model.to(args.device)
            teacher_model.train(args.strategy == "prokt")
        if args.strategy != "finetune":
            # Our losses are per-batch means: the Trainer scales them by the accumulation steps.
            self.model_accepts_loss_kwargs = False
            self.loss_is_scaled_for_ga = False

        self.intermediate_distiller = None
        if cached:
            self._probe_cached_logits()
        if teacher_model is not None and self.train_dataset is not None:
            example_outputs = self._probe_pair()
            if args.uses_intermediate_terms:
                self.intermediate_distiller = self._build_intermediate_distiller(*example_outputs)
        elif args.uses_intermediate_terms:
            self._example_batch()  # raises: the projections are sized from a training batch
        self._distiller_wrapped = self.intermediate_distiller
        self._distiller_prepared = False
        if args.zero_init_classifier:
            zero_classification_layer(self.model)
            if args.strategy == "prokt":  # a KD teacher is already fine-tuned: its head is its knowledge
                zero_classification_layer(teacher_model)

        self._window: list | None = None
        self._window_position = 0
        self._window_targets: list[_Target] | None = None
        self._in_window = False
        self._metric_sums: dict[str, torch.Tensor] = {}
        self._metric_counts: dict[str, int] = {}
        # One guard per optimizer: what the teacher's step and what the student's step depend on.
        self._guards = {name: NonFiniteGuard(self._sum_over_processes, self.accelerator.num_processes)
                        for name in ("student", "teacher")} if args.stop_on_nonfinite else None

    # ------------------------------------------------------------------ set-up

    @property
    def _teacher_is_sharded(self) -> bool:
        """FSDP2 shards a ProKT teacher like the student (a frozen KD teacher stays whole on every process)."""
        return self.is_fsdp_enabled and self.args.strategy == "prokt"

    def _example_batch(self, size: int = 2) -> dict:
        """A tiny collated batch from the training set, to learn the models' output shapes."""
        if self.train_dataset is None:
            raise ValueError(
                "the intermediate distillation terms need the train_dataset when the trainer is built (their "
                "projections are sized from one example batch). Pass train_dataset=... to ProKTTrainer."
            )
        dataset, collator = self.train_dataset, self.data_collator
        if isinstance(dataset, datasets.Dataset) and self.args.remove_unused_columns:
            dataset = self._remove_unused_columns(dataset, description="training")
        elif self.args.remove_unused_columns:
            collator = self._get_collator_with_removed_columns(collator, description="training")
        if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
            examples = list(itertools.islice(iter(dataset), size))
        else:
            examples = [dataset[i] for i in range(min(size, len(dataset)))]
        return self._prepare_inputs(collator(examples))

    def _probe_pair(self) -> tuple:
        """Both models' outputs on two training examples (`pair_probe.probe_pair`): a pair that cannot read
        the same batch fails here, before anything is trained or written."""
        return probe_pair(
            self.model, self.teacher_model, self._example_batch(),
            run_student=lambda batch, flags: self.model(**self._model_inputs(batch), **flags),
            run_teacher=lambda batch, flags: self._call_teacher(self.teacher_model, batch, flags),
            output_flags=self._intermediate_output_flags(), autocast=self.accelerator.autocast,
        )

    @torch.no_grad()
    def _probe_cached_logits(self) -> None:
        """The student on two training examples against their cached logits: a cache from a teacher with
        other outputs fails here, before any step."""
        batch = self._example_batch()
        was_training = self.model.training
        self.model.eval()
        try:
            with self.accelerator.autocast():
                logits = self.model(**self._model_inputs(on_device_of(self.model, batch))).logits
        finally:
            self.model.train(was_training)
        check_cached_logits_shape(logits, batch[TEACHER_LOGITS])

    def _set_signature_columns_if_needed(self) -> None:
        """The columns `remove_unused_columns` keeps: the student's inputs and labels, and the cached
        teacher logits (which the student never receives)."""
        super()._set_signature_columns_if_needed()
        if getattr(self, "uses_cached_teacher_logits", False) and TEACHER_LOGITS not in self._signature_columns:
            self._signature_columns.append(TEACHER_LOGITS)

    def _build_intermediate_distiller(self, student_outputs, teacher_outputs) -> IntermediateDistiller:
        """Size the learned projections from one pair of example outputs."""
        distiller = IntermediateDistiller(
            student_outputs, teacher_outputs, self.args.layer_map,
            hidden_weight=self.args.hidden_distill_weight,
            embedding_weight=self.args.embedding_distill_weight,
            attention_weight=self.args.attention_distill_weight,
            student_config=model_config(self.model), teacher_config=model_config(self.teacher_model),
        )
        return distiller.to(self.args.device)

    def create_optimizer(self, model=None):
        """The student's optimizer, plus the intermediate projections (trained with the student)."""
        optimizer = super().create_optimizer(model)
        if self.intermediate_distiller is not None:
            in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
            params = [p for p in self.intermediate_distiller.parameters() if id(p) not in in_optimizer]
            decay = [p for p in params if p.dim() > 1]
            no_decay = [p for p in params if p.dim() <= 1]
            for group_params, weight_decay in ((decay, self.args.weight_decay), (no_decay, 0.0)):
                if group_params:
                    optimizer.add_param_group({"params": group_params, "weight_decay": weight_decay})
            if params:
                # The Trainer zeroes only the student's gradients after a step (`model.zero_grad()`).
                distiller = self.intermediate_distiller
                optimizer.register_step_post_hook(lambda *_: distiller.zero_grad(set_to_none=True))
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The student's scheduler, as `Trainer` builds it; then the teacher is set up for training:
        prepared by the accelerator (device, mixed precision, DDP) and, for ProKT, given an optimizer and
        a scheduler built like the student's with `teacher_learning_rate`."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if optimizer is None:
            self._prepare_teacher_for_training(num_training_steps)
        return scheduler

    def _prepare_teacher_for_training(self, num_training_steps: int) -> None:
        if self.intermediate_distiller is not None and not self._distiller_prepared:
            self._distiller_wrapped = self.accelerator.prepare_model(self.intermediate_distiller)
            self._distiller_prepared = True
        if self.teacher_model is None:
            return
        if self.args.strategy == "kd":
            if not self._teacher_prepared:
                if self.is_fsdp_enabled:  # FSDP2 prepares a model only with an optimizer: keep it whole, placed
                    self.teacher_model.to(self.accelerator.device)
                else:
                    self._teacher_wrapped = self.accelerator.prepare_model(self.teacher_model, evaluation_mode=True)
                self._teacher_prepared = True
            self.teacher_model.eval()
            return
        if self.teacher_optimizer is None:
            self.teacher_optimizer = self._create_teacher_optimizer()
            self._teacher_wrapped, self.teacher_optimizer = self.accelerator.prepare(
                self.teacher_model, self.teacher_optimizer
            )
            self._teacher_prepared = True
        self.teacher_lr_scheduler = get_scheduler(
            self.args.lr_scheduler_type,
            optimizer=self.teacher_optimizer,
            num_warmup_steps=self.args.get_warmup_steps(num_training_steps),
            num_training_steps=num_training_steps,
            scheduler_specific_kwargs=self.args.lr_scheduler_kwargs,
        )

    def _create_teacher_optimizer(self) -> torch.optim.Optimizer:
        """The student's optimizer recipe (class, betas, eps, weight-decay groups) at the teacher's rate."""
        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.teacher_model)
        optimizer_kwargs = {**optimizer_kwargs, "lr": self.args.teacher_learning_rate}
        for key in ("params", "model", "optimizer_dict"):
            if key in optimizer_kwargs:
                raise ValueError(
                    f"optim={self.args.optim!r} builds its optimizer around one model and cannot also drive "
                    "the ProKT teacher. Use a standard optimizer (e.g. adamw_torch)."
                )
        decay_names = set(self.get_decay_parameter_names(self.teacher_model))
        named = [(n, p) for n, p in self.teacher_model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the ProKT teacher has no trainable parameter; use strategy='kd' for a frozen teacher.")
        groups = [
            {"params": [p for n, p in named if n in decay_names], "weight_decay": self.args.weight_decay},
            {"params": [p for n, p in named if n not in decay_names], "weight_decay": 0.0},
        ]
        return optimizer_cls([g for g in groups if g["params"]], **optimizer_kwargs)

    # ------------------------------------------------------------------ the step

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Remember the micro-batches of each optimizer step: ProKT's teacher steps once per window."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._window, self._window_position, self._window_targets = batch_samples, 0, None
        return batch_samples, num_items_in_batch

    def training_step(self, model, inputs, num_items_in_batch=None):
        window = self._window
        self._in_window = (
            self.args.strategy == "prokt"
            and window is not None
            and len(window) > 1
            and self._window_position < len(window)
            and inputs is window[self._window_position]
        )
        if self._in_window and self._window_position == 0:
            self._window_targets = self._teacher_step_for_window(model, window)
        try:
            loss = super().training_step(model, inputs, num_items_in_batch)
            if self._guards is not None:
                self._guards["student"].add("student", "loss", loss)
            return loss
        finally:
            if self._in_window:
                self._window_position += 1

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Fine-tuning and evaluation: the `Trainer`'s loss. Distillation: steps 1-4 (module docstring)."""
        if self.args.strategy == "finetune" or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.get("labels")
        if self._anchor_is_training_forward():
            student_outputs = model(**self._model_inputs(inputs), **self._intermediate_output_flags())
            target = self._distillation_target(model, inputs, student_outputs)
        else:
            # The targets first: the student's graph is then not alive during the teacher's passes.
            target = self._distillation_target(model, inputs, None)
            student_outputs = model(**self._model_inputs(inputs), **self._intermediate_output_flags())

        loss, parts = student_loss(
            student_outputs.logits, target.logits, labels, self.args.alpha_at(self.state.global_step),
            self.args.distill_temperature, self.args.label_smoothing_factor,
            attention_mask=inputs.get("attention_mask"),  # per-token KD without labels: the real tokens count
        )
        if self.intermediate_distiller is not None:
            intermediate_loss, intermediate_parts = self._distiller_wrapped(
                student_outputs, target, inputs.get("attention_mask")
            )
            loss = loss + intermediate_loss
            parts.update(intermediate_parts)
        self._record({f"student_{name}": value for name, value in parts.items()})
        if self._guards is not None:
            if self.args.strategy != "finetune":
                self._guards["student"].add("teacher", "largest |logit| of the prediction the student learns from",
                                            target.logits.detach().abs().amax())
            for name, value in parts.items():
                self._guards["student"].add("student", f"student_{name}", value)
        return (loss, student_outputs) if return_outputs else loss

    def _anchor_is_training_forward(self) -> bool:
        """Whether this micro-batch's teacher step is anchored on the student's training forward (the train
        anchor outside an accumulation window), which must then run before the teacher's passes."""
        return self.args.strategy == "prokt" and self.args.prokt_anchor == "train" and not self._in_window

    def _distillation_target(self, model, inputs: dict, student_outputs) -> _Target:
        """The teacher outputs the student learns from on this micro-batch (steps 1-3 for ProKT)."""
        if self.uses_cached_teacher_logits:
            return _Target(inputs[TEACHER_LOGITS])
        if self.args.strategy == "kd":
            return self._teacher_prediction(inputs)
        if self._in_window:
            if self.args.prokt_target == "stale":
                return self._window_targets[self._window_position]
            return self._teacher_prediction(inputs)
        # The whole optimizer step is this micro-batch.
        if self.args.prokt_anchor == "train":
            anchor = student_outputs.logits.detach()
        else:
            anchor = self._student_anchor(model, inputs)
        stale = self._teacher_step([(inputs, anchor)])
        return stale[0] if self.args.prokt_target == "stale" else self._teacher_prediction(inputs)

    @torch.no_grad()
    def _student_anchor(self, model, inputs: dict) -> torch.Tensor:
        """Step 1: the student's logits ``[B, C]`` in eval mode (no dropout), without a graph."""
        was_training = model.training
        model.eval()
        try:
            return model(**self._model_inputs(inputs)).logits.detach()
        finally:
            model.train(was_training)

    @torch.no_grad()
    def _teacher_step_for_window(self, model, window: list) -> list[_Target]:
        """Steps 1-2 over all micro-batches of an accumulation window (student forwards without a graph, in
        eval mode for the eval anchor, in train mode for the train anchor)."""
        model.train(self.args.prokt_anchor == "train")
        try:
            batches = []
            for raw_inputs in window:
                inputs = self._prepare_inputs(raw_inputs)
                batches.append((inputs, model(**self._model_inputs(inputs)).logits.detach()))
        finally:
            model.train()
        with torch.enable_grad():
            return self._teacher_step(batches)

    def _teacher_step(self, batches: list[tuple[dict, torch.Tensor]]) -> list[_Target]:
        """Step 2: one optimizer step of the teacher on ``batches`` of ``(inputs, student_logits [B, C] or [B, L, C])``.

        Gradients accumulate over the batches (each loss divided by their number) and are synchronised
        across processes on the last one. Returns the detached pre-step teacher outputs (the stale targets).
        """
        teacher = self._teacher_wrapped
        teacher.train()
        stale_targets, proximities, losses = [], [], []
        flags = self._intermediate_output_flags() if self.args.prokt_target == "stale" else {}
        for index, (inputs, student_logits) in enumerate(batches):
            if self._guards is not None:
                self._guards["teacher"].add("student", "largest |logit| of the prediction the teacher is pulled "
                                            "towards", student_logits.abs().amax())
            last = index == len(batches) - 1
            sync = nullcontext() if last else self.accelerator.no_sync(teacher)
            with sync:
                outputs = self._call_teacher(teacher, inputs, flags)
                labels = inputs.get("labels")
                if labels is None:
                    raise ValueError(NEEDS_LABELS)
                if self.args.prokt_constraint == "dual":
                    loss, proximity = teacher_dual_loss(
                        outputs.logits, student_logits, labels, self.dual_beta, self.args.prokt_epsilon,
                        self.args.distill_temperature,
                    )
                else:
                    loss, proximity = teacher_penalty_loss(
                        outputs.logits, student_logits, labels, self.args.lambda_at(self.state.global_step),
                        self.args.distill_temperature,
                    )
                self.accelerator.backward(loss / len(batches))
            stale_targets.append(_Target.detached(outputs) if self.args.prokt_target == "stale" else None)
            proximities.append(proximity)
            losses.append(loss.detach())
            if self._guards is not None:
                self._guards["teacher"].add("teacher", "teacher_loss", loss)
                self._guards["teacher"].add("teacher", "kl_student_teacher", proximity)

        with self._gradients_synced():
            grad_norm = None
            if self.args.max_grad_norm and self.args.max_grad_norm > 0:
                grad_norm = self._clip_teacher_gradients(teacher, self.args.max_grad_norm)
            elif self._guards is not None and self.accelerator.scaler is None:
                grad_norm = self._clip_teacher_gradients(teacher, float("inf"))  # the norm alone
            if self._guards is not None:
                self._check_finite("teacher", grad_norm)
            self._teacher_last_lr = self.teacher_optimizer.param_groups[0]["lr"]
            self.teacher_optimizer.step()
            if not getattr(self.teacher_optimizer, "step_was_skipped", False):  # fp16 overflow skips the step
                self.teacher_lr_scheduler.step()
            self.teacher_optimizer.zero_grad(set_to_none=True)

        proximity = torch.stack(proximities).mean()
        if self.args.prokt_constraint == "dual":
            # Every process must hold the same multiplier: average the constraint over processes.
            global_proximity = self.accelerator.reduce(proximity.clone(), reduction="mean").item()
            self.dual_beta = dual_ascent(self.dual_beta, global_proximity, self.args.prokt_epsilon, self.args.dual_lr)
        self._record({"teacher_loss": torch.stack(losses).mean(), "kl_student_teacher": proximity})
        return stale_targets

    def _clip_teacher_gradients(self, teacher, max_norm: float) -> torch.Tensor:
        """Clip the teacher's gradients to ``max_norm`` (``inf``: only measure them); returns their total norm."""
        if self._teacher_is_sharded:
            # accelerate's clip_grad_norm_ picks "the" FSDP model by comparing parameter lists, which fails with
            # two models; torch's clipping computes the global norm of sharded (DTensor) gradients itself.
            return torch.nn.utils.clip_grad_norm_(teacher.parameters(), max_norm)
        return self.accelerator.clip_grad_norm_(teacher.parameters(), max_norm)

    # ------------------------------------------------------------------ stopping on non-finite values

    def _get_grad_norm(self, model, grad_norm=None):
        """The student's gradient norm (the `Trainer`'s), then the check of its step before its optimizer steps."""
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if self._guards is not None:
            self._check_finite("student", grad_norm)
        return grad_norm

    def _check_finite(self, stepping: str, grad_norm) -> None:
        """`nonfinite.NonFiniteGuard.check` before the ``stepping`` model's optimizer step. Under fp16 the
        `GradScaler` owns infinite gradients (it skips the step and lowers its scale): not checked then."""
        if self.accelerator.scaler is not None:
            grad_norm = None
        self._guards[stepping].check(self.state.global_step + 1, stepping, grad_norm, self._nonfinite_advice)

    def _sum_over_processes(self, values: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(values.to(self.accelerator.device), reduction="sum").cpu()

    def _nonfinite_advice(self, model_name: str) -> str:
        args = self.args
        last = safe_checkpoints.last_complete_checkpoint(args.output_dir, log_skipped=False)
        resume = (f"The last complete checkpoint is {last}: resume from it (resume_from_checkpoint={last!r}, or "
                  "True) once the cause is fixed." if last else
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

    @contextmanager
    def _gradients_synced(self):
        """Let the accelerator's optimizer wrapper step although the student is mid-accumulation."""
        state = self.accelerator.gradient_state
        previous = state.sync_gradients
        state._set_sync_gradients(True)
        try:
            yield
        finally:
            state._set_sync_gradients(previous)

    @torch.no_grad()
    def _teacher_prediction(self, inputs: dict) -> _Target:
        """Step 3 (and KD's target): the teacher's outputs in eval mode, without a graph."""
        teacher = self._teacher_wrapped
        was_training = teacher.training
        teacher.eval()
        try:
            return _Target.detached(self._call_teacher(teacher, inputs, self._intermediate_output_flags()))
        finally:
            teacher.train(was_training)

    def _call_teacher(self, teacher, inputs: dict, flags: dict):
        names = self._teacher_input_names
        model_inputs = {k: v for k, v in self._model_inputs(inputs).items() if names is None or k in names}
        if self.args.teacher_dtype is not None:  # e.g. float32 pixel_values into a bfloat16 teacher
            dtype = getattr(torch, self.args.teacher_dtype)
            model_inputs = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                            for k, v in model_inputs.items()}
        if self.is_fsdp_enabled and self.args.strategy == "kd":  # not prepared: mixed precision by hand
            with self.accelerator.autocast():
                return teacher(**model_inputs, **flags)
        return teacher(**model_inputs, **flags)

    @staticmethod
    def _model_inputs(inputs: dict) -> dict:
        """What a model's forward receives: the batch without labels and cached teacher logits."""
        return {k: v for k, v in inputs.items() if k not in ("labels", TEACHER_LOGITS)}

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The `Trainer`'s, on the batch without cached teacher logits (an evaluation set may carry them)."""
        inputs = {k: v for k, v in inputs.items() if k != TEACHER_LOGITS}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def _intermediate_output_flags(self) -> dict:
        """Ask the models for hidden states / attentions only when a term needs them."""
        args, flags = self.args, {}
        if args.hidden_distill_weight > 0 or args.embedding_distill_weight > 0:
            flags["output_hidden_states"] = True
        if args.attention_distill_weight > 0:
            flags["output_attentions"] = True
        return flags

    def _clip_grad_norm(self, model):
        """Clip the student's gradients together with those of the projections trained beside it."""
        if self._teacher_is_sharded:  # see _clip_teacher_gradients
            self.accelerator.unscale_gradients()
            return torch.nn.utils.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
        if self.intermediate_distiller is None:
            return super()._clip_grad_norm(model)
        parameters = list(model.parameters()) + list(self.intermediate_distiller.parameters())
        return self.accelerator.clip_grad_norm_(parameters, self.args.max_grad_norm)

    # ------------------------------------------------------------------ logging

    def _record(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            value = value.detach().float()
            self._metric_sums[name] = self._metric_sums.get(name, 0.0) + value
            self._metric_counts[name] = self._metric_counts.get(name, 0) + 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs also carry the distillation terms averaged since the last log, the teacher's
        learning rate and the dual multiplier."""
        if "loss" in logs and self._metric_sums:
            for name in sorted(self._metric_sums):
                mean = self._metric_sums[name] / self._metric_counts[name]
                logs[name] = round(self.accelerator.reduce(mean.clone(), reduction="mean").item(), 6)
            self._metric_sums, self._metric_counts = {}, {}
            if self._teacher_last_lr is not None:
                logs["teacher_learning_rate"] = self._teacher_last_lr
            if self.args.strategy == "prokt" and self.args.prokt_constraint == "dual":
                logs["prokt_beta"] = self.dual_beta
            # A ramped weight: its value at the last step logged (global_step has moved past it).
            if self.args.distill_alpha_warmup_steps:
                logs["distill_alpha"] = self.args.alpha_at(self.state.global_step - 1)
            if self.args.prokt_lambda_warmup_steps:
                logs["prokt_lambda"] = self.args.lambda_at(self.state.global_step - 1)
        super().log(logs, start_time)

    # ------------------------------------------------------------------ saving, the Hub, checkpoints

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write the student alone (weights, config, processor) and, when called by the user, its model card."""
        super().save_model(output_dir, _internal_call)
        if not _internal_call:
            write_model_card(self, output_dir or self.args.output_dir, compression=self.compression_report)

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                          tasks=None, dataset_tags=None, dataset=None, dataset_args=None,
                          inference_speedup: float | None = None, compression=None) -> None:
        """The `transformers` card of the student, extended with how it was distilled (see `hf_prokt.model_card`).

        `compression` (a `hf_prokt.CompressionReport`, default `self.compression_report`) puts the measured
        sizes, latencies and speed-ups in the card; `inference_speedup` alone (teacher latency over the
        student's, measured by you) gives one speed-up figure.
        """
        write_model_card(self, self.args.output_dir, inference_speedup=inference_speedup,
                         compression=compression if compression is not None else self.compression_report,
                         language=language,
                         license=license, tags=tags, model_name=model_name, finetuned_from=finetuned_from,
                         tasks=tasks, dataset_tags=dataset_tags, dataset=dataset, dataset_args=dataset_args)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, private: bool | None = None,
                    push_teacher: bool = False, teacher_repo_id: str | None = None, **kwargs):
        """Push the student alone (weights, config, processor, model card) as `Trainer.push_to_hub` does.

        With `push_teacher=True` the teacher goes to its own repository (`teacher_repo_id`, default
        ``<student repo>-teacher``), never beside the student.
        """
        result = super().push_to_hub(commit_message, blocking, token, revision, private, **kwargs)
        if push_teacher:
            if self.teacher_model is None:
                raise ValueError("push_teacher=True, but this trainer has no teacher (strategy='finetune').")
            weights = self._full_teacher_weights()  # under FSDP, a collective on every process
            if self.is_world_process_zero():
                teacher_state.push_teacher_to_hub(
                    teacher_repo_id or f"{self.hub_model_id}-teacher", self._unwrapped_teacher(), weights=weights,
                    processing_class=self.processing_class, commit_message=commit_message,
                    token=token if token is not None else self.args.hub_token,
                    private=private if private is not None else self.args.hub_private_repo,
                )
        return result

    def save_teacher(self, output_dir: str) -> None:
        """Write the (co-trained) teacher as a plain checkpoint, with the processor. Under FSDP, call it on
        every process (like `save_model`): the teacher's shards are gathered first."""
        if self.teacher_model is None:
            raise ValueError("this trainer has no teacher (strategy='finetune').")
        weights = self._full_teacher_weights()
        if self.args.should_save:
            teacher_state.write_teacher(output_dir, self._unwrapped_teacher(), weights, self.processing_class)

    def _unwrapped_teacher(self) -> nn.Module:
        return self.accelerator.unwrap_model(self._teacher_wrapped)

    def _full_teacher_weights(self) -> dict | None:
        """The teacher's full weights gathered from its FSDP shards (a collective: every process calls it; the
        main process gets them, on the CPU), or None when the teacher is not sharded (it saves itself)."""
        if not self._teacher_is_sharded or not self._teacher_prepared:
            return None
        return teacher_state.gather_full_weights(self._teacher_wrapped)

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        """`Trainer.train`; ``resume_from_checkpoint=True`` picks the last *complete* checkpoint of `output_dir`
        (`hf_prokt.safe_checkpoints`), logging the newer ones it skips and why."""
        if resume_from_checkpoint is True:
            resume_from_checkpoint = safe_checkpoints.resolve_last_complete(self.args.output_dir)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        """`Trainer._save_checkpoint`, made crash-safe (`hf_prokt.safe_checkpoints`): every file is written into a
        hidden staging folder, the main process adds a completeness marker once all processes are done, and
        renames the folder to ``checkpoint-N`` in one step. Rotation (`save_total_limit`) then counts complete
        checkpoints only."""
        run_dir = self._get_output_dir(trial=trial)
        name = f"checkpoint-{self.state.global_step}"
        staging = safe_checkpoints.staging_root(run_dir, self.state.global_step)
        staged, final = os.path.join(staging, name), os.path.join(run_dir, name)
        if self.args.should_save:
            safe_checkpoints.remove_stale_staging(run_dir)
        pushes = []
        # The Trainer writes into <run_dir>/checkpoint-N: point it at the staging folder, and hold back its
        # Hub push of the folder (and its rotation, which sees only the staging folder) until the rename.
        self._get_output_dir = lambda trial=None: staging
        self._push_from_checkpoint = pushes.append
        try:
            super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir, self._push_from_checkpoint
        if self.state.best_model_checkpoint == staged:  # the Trainer named the folder it wrote: name the final one
            self.state.best_model_checkpoint = final
            if self.args.should_save:
                self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()  # every process has written its part (FSDP shards)
        if self.args.should_save:
            safe_checkpoints.write_completeness_marker(staged, self.state.global_step)
            safe_checkpoints.publish(staged, final)
            safe_checkpoints.remove_stale_staging(run_dir)
        self.accelerator.wait_for_everyone()
        for _ in pushes:
            self._push_from_checkpoint(final)
        if self.args.should_save:
            safe_checkpoints.rotate(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """Next to the student's optimizer and scheduler: the teacher's weights, optimizer, scheduler and
        dual multiplier (ProKT), and the learned projections of the intermediate terms (`teacher_state`)."""
        super()._save_optimizer_and_scheduler(output_dir)
        weights = optimizer_state = None
        if self.teacher_optimizer is not None and self._teacher_is_sharded:  # collectives: on every process
            weights, optimizer_state = teacher_state.gather_teacher_state(self._teacher_wrapped,
                                                                          self.teacher_optimizer)
        if not self.args.should_save:
            return
        if self.intermediate_distiller is not None:
            teacher_state.save_projections(output_dir, self.intermediate_distiller)
        if self.teacher_optimizer is not None:
            teacher_state.save_teacher_state(
                output_dir, self._unwrapped_teacher(), self.teacher_optimizer, self.teacher_lr_scheduler,
                {"dual_beta": self.dual_beta, "teacher_learning_rate": self._teacher_last_lr},
                weights=weights, optimizer_state=optimizer_state,
            )

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        if self.intermediate_distiller is not None:
            teacher_state.load_projections(checkpoint, self.intermediate_distiller)
        if self.teacher_optimizer is None:
            return
        state = teacher_state.load_teacher_state(
            checkpoint, self.teacher_optimizer, self.teacher_lr_scheduler,
            sharded_teacher=self._teacher_wrapped if self._teacher_is_sharded else None,
            load_weights=lambda folder: self._load_from_checkpoint(folder, model=self.teacher_model),
            device="cpu" if self.args.device.type == "cpu" else self.args.device,  # torch can't restore "cpu:0"
        )
        self.dual_beta = float(state["dual_beta"])
        self._teacher_last_lr = state.get("teacher_learning_rate")


def _accepted_inputs(model: nn.Module) -> set[str] | None:
    """The keyword arguments `model.forward` accepts, or None when it takes ``**kwargs``."""
    forward = getattr(model, "forward", None)
    if forward is None:
        return None
    parameters = inspect.signature(forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}
