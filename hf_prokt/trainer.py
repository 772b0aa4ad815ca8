"""`ProKTTrainer`: ProKT, KD and fine-tuning on top of `transformers.Trainer`.

The trainer is the `Trainer` with its hooks delegating: the recipe (``args.strategy``) is a `Strategy` from
`hf_prokt.strategies` (the four ProKT steps read top to bottom in ``strategies/prokt.py``); how a model's outputs
are read is its `hf_prokt.model_kinds` kind; the teacher's persistence and evaluation are in `hf_prokt.teacher`;
the non-finite guard, crash-safe checkpoints and the checkpoint on SIGTERM in `hf_prokt.robustness`.
"""

from __future__ import annotations

import itertools

import datasets
import torch
from torch import nn
from torch.utils.data import IterableDataset
from transformers import Trainer

from .arguments import ProKTTrainingArguments
from .heads import zero_classification_layer
from .model_card import write_model_card
from .model_kinds import TEACHER_LOGITS, TEACHER_TOPK_COLUMNS, TEACHER_TOPK_MASK
from .robustness import crash_safe_checkpoints, final_save
from .robustness.checkpoint_saving import CrashSafeCheckpointsMixin
from .robustness.nonfinite import NonFiniteGuards, nonfinite_advice
from .robustness.output_folder import check_writable
from .robustness.sigterm_saving import SaveOnSigtermMixin
from .strategies import Strategy, strategy_class
from .teacher import persistence
from .teacher.evaluation import TeacherEvaluationMixin


class ProKTTrainer(SaveOnSigtermMixin, CrashSafeCheckpointsMixin, TeacherEvaluationMixin, Trainer):
    """A `Trainer` that distils `teacher_model` into `model` (the student).

    `args.strategy` picks the recipe: ``"prokt"`` (the teacher is trained with the student and pulled
    back towards it at every step), ``"kd"`` (frozen teacher) or ``"finetune"`` (no teacher). Every
    other argument is the `Trainer`'s own; `save_model()` writes the student alone.

    Attributes:
        strategy: the recipe (`hf_prokt.strategies.Strategy`), which holds the teacher and its training state.
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
        if args.should_save:  # before the Trainer creates it: a folder that cannot be written to is refused now
            check_writable(args.output_dir)
        # The recipe refuses what it cannot serve before the Trainer touches anything.
        strategy: Strategy = strategy_class(args.strategy)(args, model, teacher_model, kwargs)
        super().__init__(model=model, args=args, **kwargs)
        self.strategy = strategy
        self.compression_report = None
        if strategy.distils:  # our losses are per-batch means: the Trainer must not rescale them
            self.model_accepts_loss_kwargs = False
            self.loss_is_scaled_for_ga = False
        self._guards = NonFiniteGuards(
            self._sum_over_processes, self.accelerator.num_processes, next_step=lambda: self.state.global_step + 1,
            loss_scaling=lambda: self.accelerator.scaler is not None, advice=self._nonfinite_advice,
        ) if args.stop_on_nonfinite else None
        strategy.attach(self)
        if args.zero_init_classifier:
            zero_classification_layer(self.model)
            if strategy.trains_teacher:  # a frozen teacher is already fine-tuned: its head is its knowledge
                zero_classification_layer(strategy.teacher_model)

    # The strategy's state, under the names the trainer has always had.
    teacher_model = property(lambda self: self.strategy.teacher_model)
    teacher_optimizer = property(lambda self: self.strategy.teacher_optimizer)
    teacher_lr_scheduler = property(lambda self: self.strategy.teacher_lr_scheduler)
    intermediate_distiller = property(lambda self: self.strategy.intermediate_distiller)
    uses_cached_teacher_logits = property(lambda self: self.strategy.uses_cached_teacher_logits)
    dual_beta = property(lambda self: getattr(self.strategy, "dual_beta", float(self.args.dual_init)))

    def example_batch(self, size: int = 2) -> dict:
        """A tiny collated batch of the training set, prepared like the training batches (columns, collator,
        device), from which the strategy learns the models' outputs before any step."""
        dataset, collator = self.train_dataset, self.data_collator
        if isinstance(dataset, datasets.Dataset) and self.args.remove_unused_columns:
            dataset = self._remove_unused_columns(dataset, description="training")
        elif self.args.remove_unused_columns:
            collator = self._get_collator_with_removed_columns(collator, description="training")
        if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
            examples = list(itertools.islice(iter(dataset), size))
        else:
            examples = [dataset[i] for i in range(min(size, len(dataset)))]
        return self._prepare_inputs(collator(examples))

    # ------------------------------------------------------------------ set-up

    def _set_signature_columns_if_needed(self) -> None:
        """The columns `remove_unused_columns` keeps: the student's inputs and labels, and the cached teacher
        logits (which the student never receives)."""
        super()._set_signature_columns_if_needed()
        cached = getattr(self, "strategy", None) is not None and self.strategy.uses_cached_teacher_logits
        for column in (TEACHER_LOGITS, *TEACHER_TOPK_COLUMNS) if cached else ():
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def create_optimizer(self, model=None):
        """The student's optimizer, plus what the strategy trains with it (the intermediate projections)."""
        optimizer = super().create_optimizer(model)
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = [p for p in self.strategy.parameters_trained_with_student() if id(p) not in in_optimizer]
        for group_params, weight_decay in (([p for p in params if p.dim() > 1], self.args.weight_decay),
                                           ([p for p in params if p.dim() <= 1], 0.0)):
            if group_params:
                optimizer.add_param_group({"params": group_params, "weight_decay": weight_decay})
        if params:
            # The Trainer zeroes only the student's gradients after a step (`model.zero_grad()`).
            def clear_gradients(*_):
                for parameter in params:
                    parameter.grad = None

            optimizer.register_step_post_hook(clear_gradients)
        return optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The student's scheduler, as `Trainer` builds it; then the strategy prepares the teacher for training
        (accelerator preparation; for ProKT, its optimizer and scheduler, built like the student's)."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if optimizer is None:
            self.strategy.prepare_for_training(num_training_steps)
        return scheduler

    # ------------------------------------------------------------------ the step

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The micro-batches of each optimizer step go to the strategy too (ProKT's teacher steps once per window)."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self.strategy.start_window(batch_samples)
        return batch_samples, num_items_in_batch

    def training_step(self, model, inputs, num_items_in_batch=None):
        with self.strategy.micro_batch(model, inputs):
            loss = super().training_step(model, inputs, num_items_in_batch)
        if self._guards is not None:
            self._guards["student"].add("student", "loss", loss)
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Fine-tuning and evaluation: the `Trainer`'s loss. Distillation: the strategy's (steps 1-4 for ProKT)."""
        if not self.strategy.distils or (not model.training and self.strategy.model_computes_evaluation_loss()):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = self.strategy.compute_loss(model, inputs)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The `Trainer`'s, on the batch without cached teacher logits (an evaluation set may carry them); for a
        student without predictions, its distillation loss alone."""
        cache_keys = (TEACHER_LOGITS, *TEACHER_TOPK_COLUMNS, TEACHER_TOPK_MASK)
        inputs = {k: v for k, v in inputs.items() if k not in cache_keys}
        if not self.strategy.model_computes_evaluation_loss():  # no loss of its own: the distillation loss
            with torch.no_grad():
                return self.compute_loss(model, self._prepare_inputs(inputs)), None, None
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def _clip_grad_norm(self, model):
        """Clip the student's gradients together with those of the parameters trained beside it."""
        extra = self.strategy.parameters_trained_with_student()
        if self.strategy.teacher_is_sharded:
            # accelerate's clip_grad_norm_ picks "the" FSDP model by comparing parameter lists, which fails with
            # two models: torch's clipping of the student alone.
            self.accelerator.unscale_gradients()
            return nn.utils.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
        if not extra:
            return super()._clip_grad_norm(model)
        return self.accelerator.clip_grad_norm_(list(model.parameters()) + extra, self.args.max_grad_norm)

    # ------------------------------------------------------------------ stopping on non-finite values

    def _get_grad_norm(self, model, grad_norm=None):
        """The student's gradient norm (the `Trainer`'s), then the check of its step before its optimizer steps."""
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if self._guards is not None:
            self._check_finite("student", grad_norm)
        return grad_norm

    def _check_finite(self, stepping: str, grad_norm) -> None:
        self._guards.check(stepping, grad_norm)

    def _sum_over_processes(self, values):
        return self.accelerator.reduce(values.to(self.accelerator.device), reduction="sum").cpu()

    def _nonfinite_advice(self, model_name: str) -> str:
        last = crash_safe_checkpoints.last_complete_checkpoint(self.args.output_dir, log_skipped=False)
        return nonfinite_advice(self.args, model_name, last)

    # ------------------------------------------------------------------ logging

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Training logs also carry the strategy's terms averaged since the last log (distillation and teacher
        losses, the KL between the models, the teacher's learning rate, the dual multiplier, ramped weights)."""
        if "loss" in logs:
            logs.update(self.strategy.log_values(self.state.global_step))
        super().log(logs, start_time)

    # ------------------------------------------------------------------ saving, the Hub, checkpoints

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write the student alone (weights, config, processor) and, when called by the user, its model card.

        Outside a checkpoint the save is atomic per file (`hf_prokt.robustness.final_save`): it is written into
        ``<output_dir>/.partial-save``, fsynced and renamed into place, so a kill leaves no partial file among the
        run's, and a full disk raises `hf_prokt.robustness.disk_full.NoSpaceLeftError` with the partial save removed.
        """
        if self._staging:  # inside a checkpoint save, already written into the checkpoint's staging folder
            super().save_model(output_dir, _internal_call)
            return
        write = super().save_model
        final_save.save_atomically(output_dir or self.args.output_dir, lambda folder: write(folder, True),
                                   is_writer=self.args.should_save, wait=self.accelerator.wait_for_everyone)
        if self.args.push_to_hub and not _internal_call:  # as the Trainer's save_model does, once it is in place
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)
        if not _internal_call:
            write_model_card(self, output_dir or self.args.output_dir, compression=self.compression_report)

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, finetuned_from=None,
                          tasks=None, dataset_tags=None, dataset=None, dataset_args=None,
                          inference_speedup: float | None = None, compression=None, pipeline_tag: str | None = None,
                          sections: dict[str, str] | None = None) -> None:
        """The `transformers` card of the student, extended with how it was distilled (see `hf_prokt.model_card`).

        `pipeline_tag` sets the card's Hub pipeline (``"text-generation"``); `sections` (title: Markdown) adds
        sections after the distillation one, e.g. a generated sample.

        `compression` (a `hf_prokt.CompressionReport`, default `self.compression_report`) puts the measured sizes,
        latencies and speed-ups in the card; `inference_speedup` alone (teacher latency over the student's,
        measured by you) gives one speed-up figure.
        """
        write_model_card(self, self.args.output_dir, inference_speedup=inference_speedup,
                         compression=compression if compression is not None else self.compression_report,
                         language=language, license=license, tags=tags, model_name=model_name,
                         finetuned_from=finetuned_from, tasks=tasks, dataset_tags=dataset_tags, dataset=dataset,
                         dataset_args=dataset_args, pipeline_tag=pipeline_tag, sections=sections)

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True,
                    token: str | None = None, revision: str | None = None, private: bool | None = None,
                    push_teacher: bool = False, teacher_repo_id: str | None = None, **kwargs):
        """Push the student alone (weights, config, processor, model card) as `Trainer.push_to_hub` does.

        With `push_teacher=True` the teacher goes to its own repository (`teacher_repo_id`, default
        ``<student repo>-teacher``), never beside the student.
        """
        result = super().push_to_hub(commit_message, blocking, token, revision, private, **kwargs)
        if push_teacher:
            persistence.push_trainer_teacher(
                self, teacher_repo_id or f"{self.hub_model_id}-teacher", commit_message=commit_message,
                token=token if token is not None else self.args.hub_token,
                private=private if private is not None else self.args.hub_private_repo,
            )
        return result

    def save_teacher(self, output_dir: str) -> None:
        """Write the (co-trained) teacher as a plain checkpoint, with the processor. Under FSDP, call it on
        every process (like `save_model`): the teacher's shards are gathered first."""
        persistence.save_trainer_teacher(self, output_dir)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        """Next to the student's optimizer and scheduler: the strategy's training state (the teacher's weights,
        optimizer, scheduler and dual multiplier for ProKT; the learned projections), `hf_prokt.teacher.persistence`."""
        super()._save_optimizer_and_scheduler(output_dir)
        self.strategy.save_state(output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            self.strategy.load_state(checkpoint, lambda folder, model: self._load_from_checkpoint(folder, model=model))
