"""What every recipe with a teacher shares: the teacher's placement and calls, the pair's checks, the learned
projections of the intermediate terms, and the student's step (step 4 of docs/method.md):

``L_S = alpha * T^2 * KL(p_T' || p_S) + (1 - alpha) * task(z_S, y)`` (+ intermediate terms),

where ``p_T'`` is what `target` returns for the micro-batch: the frozen teacher's prediction (`kd`) or the teacher
after its constrained step (`prokt`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..deepspeed import engines as deepspeed_engines
from ..eval_mode import eval_mode
from ..losses import IntermediateDistiller, student_loss
from ..losses.chunked import chunked_student_loss
from ..losses.topk import chunked_topk_student_loss, topk_student_loss
from ..model_kinds import TEACHER_LOGITS, ForwardInputs, base_model, model_config, model_kind_of
from ..model_kinds.lm_heads import HeadInputs, forward_to_head_inputs, why_logits_differ, why_not_chunked
from ..pair_checks import check_distillation_pair, probe_pair
from ..teacher import persistence
from .base import Strategy

logger = logging.getLogger(__name__)

NEEDS_LABELS = (
    "the training data has no labels: ProKT trains the teacher on them, and distill_alpha < 1 (or a ramp "
    "distill_alpha_warmup_steps) trains the student on them. Add a 'label' or 'labels' column (for a causal LM, "
    "DataCollatorForLanguageModeling(tokenizer, mlm=False) makes them from the input_ids), or use strategy='kd' "
    "with distill_alpha=1.0 and no ramp for unlabelled data."
)
_LABEL_COLUMNS = {"label", "labels", "label_ids"}


@dataclass
class WindowTokens:
    """The predicted positions of one gradient-accumulation window, for the kinds whose terms average over them
    (`ModelKind.averages_over_window_tokens`): ``total`` over the window's micro-batches (over every process's
    when ``args.average_tokens_across_devices``), and ``processes``, the factor that undoes the average of the
    gradients over processes when the count is global (1 otherwise)."""

    total: float
    processes: int = 1

    def share(self, micro_batch_tokens: float) -> float:
        """The weight of a micro-batch's per-token mean loss in the window's per-token mean."""
        return micro_batch_tokens / max(self.total, 1.0) * self.processes


@dataclass
class Target:
    """What the student learns from: detached teacher outputs. ``logits: [B, C]`` (``[B, L, C]`` per position), as
    the model kind reads them, or, for the chunked LM loss, ``head``: what the logits are computed from (the last
    hidden states and the output layer, `HeadInputs`), or, from a causal LM's top-k cache, ``topk``: its
    log-probabilities and token ids ``[N, k]`` for the ``N`` predicted positions; ``hidden_states`` and
    ``attentions`` as the model returns them (or None)."""

    logits: torch.Tensor | None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    head: HeadInputs | None = None
    topk: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def detached(cls, outputs, predictions: torch.Tensor | None, head: HeadInputs | None = None) -> Target:
        def detach(features):
            return None if features is None else tuple(f.detach() for f in features)

        logits = None if predictions is None else predictions.detach()
        hidden_states, attentions = getattr(outputs, "hidden_states", None), getattr(outputs, "attentions", None)
        return cls(logits, detach(hidden_states), detach(attentions), head)


class Distillation(Strategy):
    """The base of `kd` and `prokt`: a student that learns from `target`, which each subclass defines."""

    needs_teacher = True
    distils = True
    tags = ("knowledge-distillation",)

    @classmethod
    def check_trainer_kwargs(cls, args, trainer_kwargs: dict) -> None:
        if trainer_kwargs.get("compute_loss_func") is not None:
            raise ValueError(
                f"compute_loss_func would replace the distillation loss of strategy={cls.name!r}. Remove "
                "it (the student loss is set by distill_alpha and distill_temperature), or use 'finetune'."
            )
        deepspeed_engines.refuse_unsupported(args, cls.name)

    def __init__(self, args, student, teacher, trainer_kwargs):
        super().__init__(args, student, teacher, trainer_kwargs)
        self.uses_cached_teacher_logits = self.learns_from_cache(trainer_kwargs.get("train_dataset"), teacher)
        self._student_given = student is not None
        if student is not None or trainer_kwargs.get("model_init") is None:
            self.check_pair(student, teacher)
        if trainer_kwargs.get("data_collator") is None:  # a collator may add the labels: its batch is checked
            self._check_has_labels(trainer_kwargs.get("train_dataset"))
        self.teacher_model = self.wrapped_teacher = teacher
        self._teacher_prepared = self._distiller_prepared = False
        self.guards = None
        self._window_tokens: WindowTokens | None = None
        self.chunked = False
        self._student_head: HeadInputs | None = None

    def learns_from_cache(self, train_dataset, teacher: nn.Module | None) -> bool:
        """Whether the student learns from the training set's cached teacher logits instead of a live teacher;
        raises where a cache would be the wrong target."""
        return False

    def check_pair(self, student: nn.Module | None, teacher: nn.Module | None) -> None:
        if teacher is None and not self.uses_cached_teacher_logits:
            raise ValueError(
                f"strategy={self.name!r} needs a teacher: pass teacher_model=<a model with the student's labels>, "
                "or use strategy='finetune' to train the student on labels alone."
            )
        check_distillation_pair(student, teacher)
        for who, model in (("student", student), ("teacher", teacher)):
            kind = model_kind_of(model)
            if model is not None and not kind.distillable:
                raise ValueError(
                    f"the {who} is a {kind.name} ({type(base_model(model)).__name__}), which strategy={self.name!r} "
                    "cannot distil yet: its per-position terms (the next-token shift of a causal LM, the decoder "
                    "inputs of a seq2seq LM) are not implemented, and reading it as a token classifier would train "
                    "the wrong objective. Use strategy='finetune' (the model's own loss), or models with a "
                    "classification head."
                )
        kind = model_kind_of(student)
        if self.uses_cached_topk and student is not None and kind.auto_class != "AutoModelForCausalLM":
            raise ValueError(
                f"the training set has cached top-k log-probabilities (teacher_topk_*), which serve causal LMs only, "
                f"and the student is a {kind.name}. Remove those columns and pass teacher_model"
                + (", or cache full logits with cache_teacher_logits." if not kind.is_language_model else ".")
            )
        if student is not None and not kind.has_predictions:
            self._check_without_predictions(kind)
        if kind.is_language_model:
            self._check_language_models(kind)

    def _check_language_models(self, kind) -> None:
        """What a generative LM cannot be distilled with (yet)."""
        if self.uses_cached_teacher_logits and not self.uses_cached_topk:
            raise ValueError(
                f"the training set has cached {TEACHER_LOGITS!r} for a {kind.name}: full logits cost one float per "
                "vocabulary entry and per token (128 KB per token at 32k in fp32), and an LM cache of them is not "
                "supported. Remove the column and pass teacher_model (the live teacher), or, for a causal LM, "
                "cache the top-k log-probabilities with cache_teacher_topk."
            )
        if kind.auto_class == "AutoModelForSeq2SeqLM" and self.args.uses_intermediate_terms:
            raise ValueError(
                "the intermediate distillation terms (hidden/embedding/attention_distill_weight) are not supported "
                f"for a {kind.name}: its encoder and decoder states would each need their own layer map. Set those "
                "weights to 0 (the per-token terms on the decoder positions remain)."
            )

    def _check_without_predictions(self, kind) -> None:
        """A model without a task head learns from the intermediate terms alone, and from no label."""
        if not self.args.uses_intermediate_terms:
            raise ValueError(
                f"the student is a {kind.name}: it returns no logits, so it can only learn from the intermediate "
                "terms, and none is on. Set hidden_distill_weight (and embedding_distill_weight, "
                "attention_distill_weight) above 0, or use models with a task head."
            )
        if self.needs_labels():
            raise ValueError(
                f"the student is a {kind.name}: it has no task loss, so distill_alpha < 1 (or a ramp of it) has "
                "nothing to train on labels with. Use distill_alpha=1.0 and no distill_alpha_warmup_steps."
            )
        if self.args.evaluate_teacher:
            raise ValueError(
                f"evaluate_teacher=True, but the models are of the kind {kind.name}: without predictions there is no "
                "evaluation of the teacher's own. Leave evaluate_teacher unset; the student's eval_loss is its "
                "distillation loss."
            )

    def needs_labels(self) -> bool:
        """Whether the recipe learns from labels (the student with ``distill_alpha < 1`` or a ramp of alpha)."""
        return self.args.distill_alpha < 1 or bool(self.args.distill_alpha_warmup_steps)

    def _check_has_labels(self, dataset) -> None:
        columns = getattr(dataset, "column_names", None)
        if self.needs_labels() and isinstance(columns, list) and not _LABEL_COLUMNS & set(columns):
            raise ValueError(NEEDS_LABELS)

    # ------------------------------------------------------------------ set-up

    def attach(self, trainer) -> None:
        super().attach(trainer)
        args, teacher = self.args, self.teacher_model
        if not self._student_given:  # built by model_init: check the pair it gives
            self.check_pair(trainer.model, teacher)
        self.kind = model_kind_of(trainer.model)
        self.guards = trainer._guards
        if teacher is not None:
            self._check_sharding(trainer)
            self._teacher_inputs = ForwardInputs(teacher)
            if args.teacher_dtype is not None:
                teacher.to(getattr(torch, args.teacher_dtype))
            if trainer.place_model_on_device:
                teacher.to(args.device)
            teacher.train(self.trains_teacher)
        if teacher is not None and trainer.train_dataset is not None:
            student_outputs, teacher_outputs, batch = self._probe_pair()
            if args.uses_intermediate_terms:
                self.intermediate_distiller = self._build_intermediate_distiller(student_outputs, teacher_outputs)
            self.check_batch_has_labels(batch)
        elif args.uses_intermediate_terms:
            raise ValueError(
                "the intermediate distillation terms need the train_dataset when the trainer is built (their "
                "projections are sized from one example batch). Pass train_dataset=... to ProKTTrainer."
            )
        self._wrapped_distiller = self.intermediate_distiller
        self.chunked = self._uses_chunked_lm_loss(trainer)

    def _uses_chunked_lm_loss(self, trainer) -> bool:
        """Whether the output terms are computed over chunks from the last hidden states (``chunked_lm_loss``:
        None where possible, True required, False never)."""
        wanted, kind = self.args.chunked_lm_loss, self.kind
        if wanted is False or (wanted is None and not kind.is_language_model):
            return False
        reason = None
        if not kind.supports_chunked_loss:
            reason = f"the models are {kind.name}s, and the chunked loss reads causal LMs only"
        elif trainer.is_fsdp_enabled:
            reason = "under FSDP the output layers' weights are sharded outside the forward"
        elif trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3:
            reason = "under DeepSpeed ZeRO-3 the output layers' weights are partitioned outside the forward"
        else:
            batch = self.example_batch() if trainer.train_dataset is not None else None
            live = () if self.uses_cached_teacher_logits else (("teacher", self.teacher_model),)
            for who, model in (("student", trainer.model), *live):
                why = why_not_chunked(model) if model is not None else "there is no live teacher"
                if why is None and batch is not None:
                    why = why_logits_differ(model, ForwardInputs(model).for_batch(self.kind.model_inputs(batch)),
                                            self.args.device)
                if why is not None:
                    reason = f"the {who} cannot be read before its logits: {why}"
                    break
        if reason is None:
            return True
        if wanted:
            raise ValueError(f"chunked_lm_loss=True, but {reason}. Set chunked_lm_loss=False (the terms from the "
                             "full logits) or leave it unset.")
        if kind.is_language_model:
            logger.info(f"The output terms are computed from the full logits ({reason}).")
        return False

    def _check_sharding(self, trainer) -> None:
        """With a teacher: FSDP1 is refused; FSDP2 runs without the intermediate terms."""
        if not trainer.is_fsdp_enabled:
            return
        if not getattr(trainer.accelerator, "is_fsdp2", False):
            raise ValueError(
                "ProKTTrainer runs a teacher under FSDP2 only, and this is FSDP1. Set fsdp_config={'version': 2} "
                "(or fsdp_version: 2 in the accelerate config), or use DDP."
            )
        if self.args.uses_intermediate_terms:
            raise ValueError(
                "the intermediate distillation terms (hidden/embedding/attention_distill_weight) are not supported "
                "under FSDP yet: their projections would need sharding of their own. Use logit distillation alone "
                "under FSDP, or DDP for the intermediate terms."
            )

    def example_batch(self) -> dict:
        """Two training examples, collated and completed as the training batches are."""
        return self.kind.complete_batch(self.trainer.example_batch(), self.trainer.model)

    def check_batch_has_labels(self, batch: dict) -> None:
        """Refuse a training batch without labels when the recipe needs them (the collator, when one is given,
        may have been expected to add them)."""
        if self.needs_labels() and self.kind.labels(batch) is None:
            raise ValueError(NEEDS_LABELS)

    def _probe_pair(self) -> tuple:
        """Both models' outputs on two training examples (`pair_checks.probe_pair`), and the batch: a pair that
        cannot read the same batch fails here, before anything is trained or written."""
        trainer, batch = self.trainer, self.example_batch()
        outputs = probe_pair(
            trainer.model, self.teacher_model, batch,
            run_student=lambda batch, flags: trainer.model(**self.kind.model_inputs(batch), **flags),
            run_teacher=lambda batch, flags: self.run_teacher(self.teacher_model, batch, flags),
            output_flags=self.output_flags(), autocast=trainer.accelerator.autocast,
        )
        return (*outputs, batch)

    def _build_intermediate_distiller(self, student_outputs, teacher_outputs) -> IntermediateDistiller:
        """Size the learned projections from one pair of example outputs."""
        args = self.args
        distiller = IntermediateDistiller(
            student_outputs, teacher_outputs, args.layer_map, hidden_weight=args.hidden_distill_weight,
            embedding_weight=args.embedding_distill_weight, attention_weight=args.attention_distill_weight,
            student_config=model_config(self.trainer.model), teacher_config=model_config(self.teacher_model),
        )
        return distiller.to(args.device)

    def prepare_for_training(self, num_training_steps: int) -> None:
        if self.intermediate_distiller is not None and not self._distiller_prepared:
            self._wrapped_distiller = self.trainer.accelerator.prepare_model(self.intermediate_distiller)
            self._distiller_prepared = True

    # ------------------------------------------------------------------ accumulation windows

    def start_window(self, batch_samples: list[dict]) -> None:
        """Complete the window's batches (a seq2seq LM's shared decoder inputs) and, for a kind that averages over
        the window's tokens, count its predicted positions (`WindowTokens`)."""
        kind = self.kind
        for index, batch in enumerate(batch_samples):
            batch_samples[index] = kind.complete_batch(batch, self.trainer.model)
        self._window_tokens = None
        if not kind.averages_over_window_tokens or not batch_samples:
            return
        counts = [kind.predicted_positions(batch) for batch in batch_samples]
        if any(count is None for count in counts):
            return  # nothing says which positions count: every position of each micro-batch does
        args, accelerator = self.args, self.trainer.accelerator
        total = sum(count.sum() for count in counts).to(args.device)
        processes = 1
        if args.average_tokens_across_devices and accelerator.num_processes > 1:
            total, processes = accelerator.gather(total).sum(), accelerator.num_processes
        self._window_tokens = WindowTokens(float(total), processes)

    def window_share(self, inputs: dict, num_micro_batches: int) -> float:
        """The weight of a micro-batch's mean loss in its window's: ``1 / num_micro_batches``, or, for a kind that
        averages over the window's tokens, its share of the window's predicted positions."""
        positions = self.kind.predicted_positions(inputs)
        if self._window_tokens is None or positions is None:
            return 1.0 / num_micro_batches
        return self._window_tokens.share(float(positions.sum()))

    # ------------------------------------------------------------------ the teacher's outputs

    def output_flags(self) -> dict:
        """Ask the models for hidden states / attentions only when a term needs them."""
        args, flags = self.args, {}
        if args.hidden_distill_weight > 0 or args.embedding_distill_weight > 0:
            flags["output_hidden_states"] = True
        if args.attention_distill_weight > 0:
            flags["output_attentions"] = True
        return flags

    def run_teacher(self, teacher: nn.Module, inputs: dict, flags: dict, to_head: bool = False):
        """``teacher`` (wrapped or not) on the batch's model inputs that its forward accepts; with ``to_head``,
        ``(outputs, HeadInputs)`` without logits (the chunked LM loss)."""
        model_inputs = self._teacher_inputs.for_batch(self.kind.model_inputs(inputs))
        if self.args.teacher_dtype is not None:  # e.g. float32 pixel_values into a bfloat16 teacher
            dtype = getattr(torch, self.args.teacher_dtype)
            model_inputs = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                            for k, v in model_inputs.items()}
        if to_head:
            return forward_to_head_inputs(teacher, self.trainer.accelerator.unwrap_model(teacher),
                                          {**model_inputs, **flags}, self.args.device)
        return teacher(**model_inputs, **flags)

    @torch.no_grad()
    def teacher_prediction(self, inputs: dict) -> Target:
        """The teacher's outputs in eval mode, without a graph (KD's target, ProKT's step 3)."""
        with eval_mode(self.wrapped_teacher):
            if self.chunked:
                outputs, head = self.run_teacher(self.wrapped_teacher, inputs, self.output_flags(), to_head=True)
                return Target.detached(outputs, None, head.detached())
            outputs = self.run_teacher(self.wrapped_teacher, inputs, self.output_flags())
        return Target.detached(outputs, self.kind.predictions(outputs))

    def student_forward(self, model: nn.Module, inputs: dict, flags: dict | None = None):
        """``(outputs, head)``: the student on the batch's model inputs; ``head`` (`HeadInputs`) for the chunked LM
        loss, whose outputs then hold no logits, else None."""
        model_inputs = {**self.kind.model_inputs(inputs), **(self.output_flags() if flags is None else flags)}
        if not self.chunked:
            return model(**model_inputs), None
        return forward_to_head_inputs(model, self.trainer.accelerator.unwrap_model(model), model_inputs,
                                      self.args.device)

    def chunk_rows(self, head: HeadInputs, inputs: dict) -> torch.Tensor:
        """``[N, H]``: the hidden states of the positions the terms count (aligned with the predictions)."""
        return head.rows(self.kind.prediction_states, self.kind.predicted_positions(inputs))

    def chunk_labels(self, inputs: dict) -> torch.Tensor | None:
        """``[N]``: the labels of the positions the terms count, or None without labels."""
        labels, keep = self.kind.labels(inputs), self.kind.predicted_positions(inputs)
        if labels is None:
            return None
        return labels[keep] if keep is not None else labels.reshape(-1)

    # ------------------------------------------------------------------ the student's step

    def student_forward_first(self) -> bool:
        """Whether the student's training forward must run before `target` (which then receives it)."""
        return False

    def target(self, model: nn.Module, inputs: dict, student_outputs) -> Target:
        """The detached teacher outputs the student learns from on this micro-batch."""
        raise NotImplementedError

    def compute_loss(self, model: nn.Module, inputs: dict):
        """Step 4: ``(loss, student_outputs)``, the student's forward with a graph."""
        args, kind = self.args, self.kind
        labels = kind.labels(inputs)
        if self.student_forward_first():
            student_outputs, self._student_head = self.student_forward(model, inputs)
            target = self.target(model, inputs, student_outputs)
        else:
            # The target first: the student's graph is then not alive during the teacher's passes.
            target = self.target(model, inputs, None)
            student_outputs, self._student_head = self.student_forward(model, inputs)
        student_head, self._student_head = self._student_head, None

        alpha = args.alpha_at(self.trainer.state.global_step)
        if target.topk is not None:  # a causal LM's cached top-k: the predicted positions' rows only
            loss, parts = self._topk_loss(student_outputs, student_head, target, inputs, alpha)
        elif student_head is not None:  # the chunked LM loss: no [B, L, V] tensor
            teacher_head = target.head if alpha > 0 else None
            loss, parts = chunked_student_loss(
                self.chunk_rows(student_head, inputs), student_head.weight,
                None if teacher_head is None else self.chunk_rows(teacher_head, inputs),
                None if teacher_head is None else teacher_head.weight, self.chunk_labels(inputs), alpha,
                args.distill_temperature, args.label_smoothing_factor, student_bias=student_head.bias,
                teacher_bias=None if teacher_head is None else teacher_head.bias,
            )
        elif kind.has_predictions:
            loss, parts = student_loss(
                kind.predictions(student_outputs), target.logits, labels, alpha, args.distill_temperature,
                args.label_smoothing_factor,
                attention_mask=kind.position_mask_source(inputs),  # per-token KD without labels: the real tokens count
            )
        else:  # no output term: the intermediate terms alone (general distillation)
            loss, parts = 0.0, {}
        if kind.has_predictions and model.training and self._window_tokens is not None:
            # A mean over the window's tokens: the Trainer divides every micro-batch's loss by their number.
            loss = loss * (self.window_share(inputs, 1) * self.trainer.current_gradient_accumulation_steps)
        if self.intermediate_distiller is not None:
            intermediate_loss, intermediate_parts = self._wrapped_distiller(
                student_outputs, target, inputs.get("attention_mask")
            )
            loss = loss + intermediate_loss
            parts.update(intermediate_parts)
        if not model.training:  # an evaluation of a model without predictions: its distillation loss
            return loss.detach(), student_outputs
        self.means.add({f"student_{name}": value for name, value in parts.items()})
        if self.guards is not None:
            if target.logits is not None:
                self.guards["student"].add("teacher", "largest |logit| of the prediction the student learns from",
                                           target.logits.detach().abs().amax())
            for name, value in parts.items():
                self.guards["student"].add("student", f"student_{name}", value)
        return loss, student_outputs

    def _topk_loss(self, student_outputs, student_head: HeadInputs | None, target: Target, inputs: dict,
                   alpha: float):
        """The student's KD terms from the cached top-k rows of the batch's predicted positions
        (`hf_prokt.losses.topk`), checked against the batch first."""
        args, (log_probs, indices) = self.args, target.topk
        vocab_size = student_head.weight.shape[0] if student_head is not None else student_outputs.logits.shape[-1]
        self.check_topk(inputs, vocab_size)
        labels = self.chunk_labels(inputs)
        if student_head is not None:
            return chunked_topk_student_loss(
                self.chunk_rows(student_head, inputs), student_head.weight, log_probs, indices, labels, alpha,
                args.distill_temperature, args.label_smoothing_factor, bias=student_head.bias)
        predictions, keep = self.kind.predictions(student_outputs), self.kind.predicted_positions(inputs)
        rows = predictions[keep] if keep is not None else predictions.reshape(-1, vocab_size)
        return topk_student_loss(rows, log_probs, indices, labels, alpha, args.distill_temperature,
                                 args.label_smoothing_factor)

    def check_topk(self, batch: dict, vocab_size: int) -> None:
        """Refuse a batch's cached top-k rows that do not belong to it (`kd` only)."""
        raise NotImplementedError

    def model_computes_evaluation_loss(self) -> bool:
        """A model without predictions has no loss of its own: it is evaluated on the distillation loss."""
        return self.kind.has_predictions

    # ------------------------------------------------------------------ checkpoints, logs, card

    def save_state(self, folder: str) -> None:
        if self.trainer.args.should_save and self.intermediate_distiller is not None:
            persistence.save_projections(folder, self.intermediate_distiller)

    def load_state(self, checkpoint: str, load_weights: Callable[[str, nn.Module], None]) -> None:
        if self.intermediate_distiller is not None:
            persistence.load_projections(checkpoint, self.intermediate_distiller)

    def log_values(self, step: int) -> dict[str, float]:
        values = super().log_values(step)
        # A ramped weight: its value at the last step logged (global_step has moved past it).
        if values and self.args.distill_alpha_warmup_steps:
            values["distill_alpha"] = self.args.alpha_at(step - 1)
        return values

    def teacher_hyperparameters(self) -> dict:
        """The recipe's own arguments for the model card (before the student's distillation arguments)."""
        return {}

    def hyperparameters(self) -> dict:
        args = self.args
        values = {**super().hyperparameters(), **self.teacher_hyperparameters(),
                  "distill_temperature": args.distill_temperature, "distill_alpha": args.distill_alpha}
        for name in ("distill_alpha_warmup_steps", "prokt_lambda_warmup_steps"):
            if getattr(args, name):
                values[name] = getattr(args, name)
        for name in ("hidden_distill_weight", "embedding_distill_weight", "attention_distill_weight"):
            if getattr(args, name) > 0:
                values[name] = getattr(args, name)
        if args.uses_intermediate_terms:
            values["layer_map"] = args.layer_map
        values["zero_init_classifier"] = args.zero_init_classifier
        return values
