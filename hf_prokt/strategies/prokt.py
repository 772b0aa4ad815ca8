"""``strategy="prokt"``: the teacher is trained with the student and pulled back towards it at every step.

One optimizer step for a batch ``(x, y)`` (docs/method.md), in the order this file runs it:

1. The anchor (`anchor`): ``z_S = student(x)`` in eval mode, without a graph (``prokt_anchor="eval"``), or the
   detached logits of the student's training forward (``prokt_anchor="train"``, one forward fewer).
2. Teacher step (`teacher_step`): ``L_T = (1 - lam) * task(z_T, y) + lam * T^2 * KL(p_S || p_T)`` (or, with
   ``prokt_constraint="dual"``, ``task + beta * (T^2 * KL - epsilon)`` and a dual ascent on ``beta``); backward, clip,
   step the teacher's own optimizer and scheduler.
3. The local target (`target`): ``z_T' = teacher(x)`` after the step, in eval mode, without a graph (skipped with
   ``prokt_target="stale"``, which reuses the pre-step logits of 2).
4. Student step (`Distillation.compute_loss`): ``L_S = alpha * T^2 * KL(p_T' || p_S) + (1 - alpha) * task(z_S, y)``;
   the `Trainer` loop clips and steps the student.

With gradient accumulation over ``n`` micro-batches the teacher steps once per student step, on the same ``n``
micro-batches: at the first micro-batch of the window 1-2 run for all of them (`micro_batch`; the student's
forwards there are without a graph), then 3-4 run per micro-batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn
from transformers import get_scheduler

from ..deepspeed import engines as deepspeed_engines
from ..eval_mode import eval_mode
from ..losses import dual_ascent, teacher_dual_loss, teacher_penalty_loss
from ..losses.chunked import chunked_distillation_losses
from ..model_kinds import TEACHER_LOGITS, TEACHER_TOPK_COLUMNS
from ..model_kinds.lm_heads import HeadInputs
from ..teacher import persistence
from .distillation import NEEDS_LABELS, Distillation, Target
from .registry import register_strategy


@register_strategy
class ProKT(Distillation):
    """The teacher has its own optimizer and scheduler (`teacher_learning_rate`); see the module docstring.

    Attributes:
        dual_beta: the Lagrange multiplier of ``prokt_constraint="dual"``.
        teacher_last_lr: the teacher's learning rate at its last step (logged as ``teacher_learning_rate``).
    """

    name = "prokt"
    trains_teacher = True
    summary = "distilled with ProKT from a teacher trained alongside it"
    description = ("ProKT (Shi et al., *Follow Your Path: a Progressive Method for Knowledge Distillation*, "
                   "ECML-PKDD 2021): the teacher was trained with the student and pulled back towards it at every "
                   "step; the student learned from the teacher after each of its steps")
    tags = ("knowledge-distillation", "prokt")

    @classmethod
    def check_trainer_kwargs(cls, args, trainer_kwargs: dict) -> None:
        if trainer_kwargs.get("model_init") is not None:
            raise ValueError(
                "model_init re-creates the student at every train() call, but ProKT's teacher is trained with "
                "it and would not be re-created. Pass model=<student> and teacher_model=<teacher> instead."
            )
        super().check_trainer_kwargs(args, trainer_kwargs)

    def __init__(self, args, student, teacher, trainer_kwargs):
        super().__init__(args, student, teacher, trainer_kwargs)
        self.dual_beta = float(args.dual_init)
        self.teacher_last_lr = None
        self._teacher_torch_optimizer = None  # under DeepSpeed: the torch optimizer inside the teacher's engine
        self._window: list | None = None
        self._position = 0
        self._stale_targets: list[Target] | None = None
        self._in_window = False

    def learns_from_cache(self, train_dataset, teacher: nn.Module | None) -> bool:
        columns = getattr(train_dataset, "column_names", None)
        cached = [name for name in (TEACHER_LOGITS, *TEACHER_TOPK_COLUMNS) if name in (columns or [])]
        if isinstance(columns, list) and cached:
            raise ValueError(
                f"the training set has cached {cached[0]!r}, but strategy='prokt' trains the teacher: its predictions "
                f"change at every step, so no cache can stand for it. Use strategy='kd' with the cache, or remove the "
                f"columns (train_dataset.remove_columns({cached})) and pass teacher_model for ProKT."
            )
        return False

    def needs_labels(self) -> bool:
        return True  # the teacher's task loss

    def _check_without_predictions(self, kind) -> None:
        raise ValueError(
            f"the student is a {kind.name}: it returns no logits, and ProKT's teacher step needs a task loss (and "
            "the student's prediction to be pulled towards). For general distillation of models without a task head, "
            "use strategy='kd' with the intermediate terms (hidden_distill_weight > 0) on unlabelled data."
        )

    @property
    def uses_deepspeed(self) -> bool:
        """Whether the teacher has its own DeepSpeed engine (the student is under DeepSpeed)."""
        return self.trainer is not None and self.trainer.is_deepspeed_enabled

    @property
    def teacher_is_sharded(self) -> bool:
        """FSDP2 shards a ProKT teacher like the student (a frozen KD teacher stays whole on every process)."""
        return self.trainer is not None and self.trainer.is_fsdp_enabled

    # ------------------------------------------------------------------ the teacher's optimizer and scheduler

    def prepare_for_training(self, num_training_steps: int) -> None:
        """The teacher's optimizer (built like the student's, at `teacher_learning_rate`) and scheduler, and the
        teacher prepared with it by the accelerator (device, mixed precision, DDP or FSDP2)."""
        super().prepare_for_training(num_training_steps)
        trainer, args = self.trainer, self.args
        if self.teacher_optimizer is None:
            self.teacher_optimizer = self._create_teacher_optimizer()
            if self.uses_deepspeed:  # its own engine: accelerate's backward drives the student's alone
                self._teacher_torch_optimizer = self.teacher_optimizer
                self.wrapped_teacher, self.teacher_optimizer = deepspeed_engines.training_engine(
                    trainer, self.teacher_model, self.teacher_optimizer
                )
            else:
                self.wrapped_teacher, self.teacher_optimizer = trainer.accelerator.prepare(
                    self.teacher_model, self.teacher_optimizer
                )
            self._teacher_prepared = True
        self.teacher_lr_scheduler = get_scheduler(
            args.lr_scheduler_type, optimizer=self._teacher_torch_optimizer or self.teacher_optimizer,
            num_warmup_steps=args.get_warmup_steps(num_training_steps), num_training_steps=num_training_steps,
            scheduler_specific_kwargs=args.lr_scheduler_kwargs,
        )

    def _create_teacher_optimizer(self) -> torch.optim.Optimizer:
        """The student's optimizer recipe (class, betas, eps, weight-decay groups) at the teacher's rate."""
        trainer, args, teacher = self.trainer, self.args, self.teacher_model
        if trainer.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = trainer.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = trainer.get_optimizer_cls_and_kwargs(args, teacher)
        optimizer_kwargs = {**optimizer_kwargs, "lr": args.teacher_learning_rate}
        for key in ("params", "model", "optimizer_dict"):
            if key in optimizer_kwargs:
                raise ValueError(
                    f"optim={args.optim!r} builds its optimizer around one model and cannot also drive "
                    "the ProKT teacher. Use a standard optimizer (e.g. adamw_torch)."
                )
        decay_names = set(trainer.get_decay_parameter_names(teacher))
        named = [(n, p) for n, p in teacher.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("the ProKT teacher has no trainable parameter; use strategy='kd' for a frozen teacher.")
        groups = [
            {"params": [p for n, p in named if n in decay_names], "weight_decay": args.weight_decay},
            {"params": [p for n, p in named if n not in decay_names], "weight_decay": 0.0},
        ]
        return optimizer_cls([g for g in groups if g["params"]], **optimizer_kwargs)

    # ------------------------------------------------------------------ accumulation windows

    def start_window(self, batch_samples: list[dict]) -> None:
        super().start_window(batch_samples)
        self._window, self._position, self._stale_targets = batch_samples, 0, None

    @contextmanager
    def micro_batch(self, model: nn.Module, inputs: dict) -> Iterator[None]:
        """Within an accumulation window, steps 1-2 run once for all its micro-batches, at the first."""
        window = self._window
        self._in_window = (window is not None and len(window) > 1 and self._position < len(window)
                           and inputs is window[self._position])
        if self._in_window and self._position == 0:
            self._stale_targets = self._teacher_step_for_window(model, window)
        try:
            yield
        finally:
            if self._in_window:
                self._position += 1

    @torch.no_grad()
    def _teacher_step_for_window(self, model: nn.Module, window: list) -> list[Target]:
        """Steps 1-2 over all micro-batches of an accumulation window (student forwards without a graph, in eval
        mode for the eval anchor, in train mode for the train anchor)."""
        model.train(self.args.prokt_anchor == "train")
        try:
            batches = []
            for raw_inputs in window:
                inputs = self.trainer._prepare_inputs(raw_inputs)
                batches.append((inputs, self._student_prediction(model, inputs)))
        finally:
            model.train()
        with torch.enable_grad():
            return self.teacher_step(batches)

    # ------------------------------------------------------------------ steps 1-3

    def student_forward_first(self) -> bool:
        """The train anchor outside an accumulation window is the student's training forward: it runs first."""
        return self.args.prokt_anchor == "train" and not self._in_window

    @torch.no_grad()
    def anchor(self, model: nn.Module, inputs: dict) -> torch.Tensor | HeadInputs:
        """Step 1: the student's logits ``[B, C]`` (or ``[B, L, C]``) in eval mode (no dropout), without a graph
        (for the chunked LM loss, what they are computed from: `HeadInputs`)."""
        with eval_mode(model):
            return self._student_prediction(model, inputs)

    def _student_prediction(self, model: nn.Module, inputs: dict) -> torch.Tensor | HeadInputs:
        """The student's detached prediction in its current mode: logits, or `HeadInputs` when chunked."""
        outputs, head = self.student_forward(model, inputs, flags={})
        return head.detached() if head is not None else self.kind.predictions(outputs).detach()

    def target(self, model: nn.Module, inputs: dict, student_outputs) -> Target:
        """Steps 1-3 for this micro-batch (within a window, 1-2 already ran for the whole window)."""
        if self._in_window:
            if self.args.prokt_target == "stale":
                return self._stale_targets[self._position]
            return self.teacher_prediction(inputs)
        if self.args.prokt_anchor == "train":
            anchor = (self._student_head.detached() if self._student_head is not None
                      else self.kind.predictions(student_outputs).detach())
        else:
            anchor = self.anchor(model, inputs)
        stale = self.teacher_step([(inputs, anchor)])
        return stale[0] if self.args.prokt_target == "stale" else self.teacher_prediction(inputs)

    def teacher_step(self, batches: list[tuple[dict, torch.Tensor]]) -> list[Target | None]:
        """Step 2: one optimizer step of the teacher on ``batches`` of ``(inputs, student_logits [B, C] or
        [B, L, C])``.

        Gradients accumulate over the batches (each loss weighted by its `window_share`: divided by their number,
        or by the window's predicted positions for an LM) and are synchronised across processes on the last one.
        Returns the detached pre-step teacher outputs (the stale targets), or Nones.
        """
        args, accelerator, teacher = self.args, self.trainer.accelerator, self.wrapped_teacher
        guard = self.guards["teacher"] if self.guards is not None else None
        teacher.train()
        stale_targets, proximities, losses = [], [], []
        flags = self.output_flags() if args.prokt_target == "stale" else {}
        for index, (inputs, student_logits) in enumerate(batches):
            chunked = isinstance(student_logits, HeadInputs)
            if guard is not None:
                guard.add("student", "largest |logit| of the prediction the teacher is pulled towards" if not chunked
                          else "largest |last hidden state| of the prediction the teacher is pulled towards",
                          (student_logits.hidden if chunked else student_logits).abs().amax())
            last = index == len(batches) - 1
            if self.uses_deepspeed:  # the engine reduces the gradients at the window's last micro-batch
                teacher.set_gradient_accumulation_boundary(last)
            with nullcontext() if last or self.uses_deepspeed else accelerator.no_sync(teacher):
                if self.kind.labels(inputs) is None:
                    raise ValueError(NEEDS_LABELS)
                if chunked:
                    outputs, head = self.run_teacher(teacher, inputs, flags, to_head=True)
                    loss, proximity = self._chunked_teacher_loss(head, student_logits, inputs)
                    stale = Target.detached(outputs, None, head.detached(copy_head=True))
                else:
                    outputs = self.run_teacher(teacher, inputs, flags)
                    loss, proximity = self._teacher_loss(self.kind.predictions(outputs), student_logits, inputs)
                    stale = Target.detached(outputs, self.kind.predictions(outputs))
                if self.uses_deepspeed:  # weighted by window_share already: no division by the accumulation
                    teacher.backward(loss * self.window_share(inputs, len(batches)), scale_wrt_gas=False)
                else:
                    accelerator.backward(loss * self.window_share(inputs, len(batches)))
            stale_targets.append(stale if args.prokt_target == "stale" else None)
            proximities.append(proximity)
            losses.append(loss.detach())
            if guard is not None:
                guard.add("teacher", "teacher_loss", loss)
                guard.add("teacher", "kl_student_teacher", proximity)

        if self.uses_deepspeed:
            self._teacher_engine_step(guard)
        else:
            self._teacher_optimizer_step(guard)

        proximity = torch.stack(proximities).mean()
        if args.prokt_constraint == "dual":
            # Every process must hold the same multiplier: average the constraint over processes.
            global_proximity = self.reduce_mean(proximity).item()
            self.dual_beta = dual_ascent(self.dual_beta, global_proximity, args.prokt_epsilon, args.dual_lr)
        self.means.add({"teacher_loss": torch.stack(losses).mean(), "kl_student_teacher": proximity})
        return stale_targets

    def _teacher_optimizer_step(self, guard) -> None:
        """Clip (or measure) the teacher's gradients, check them, step its optimizer and scheduler."""
        args, accelerator = self.args, self.trainer.accelerator
        with self._gradients_synced():
            grad_norm = None
            if args.max_grad_norm and args.max_grad_norm > 0:
                grad_norm = self._clip_teacher_gradients(args.max_grad_norm)
            elif guard is not None and accelerator.scaler is None:
                grad_norm = self._clip_teacher_gradients(float("inf"))  # the norm alone
            if guard is not None:
                self.guards.check("teacher", grad_norm)
            self.teacher_last_lr = self.teacher_optimizer.param_groups[0]["lr"]
            self.teacher_optimizer.step()
            if not getattr(self.teacher_optimizer, "step_was_skipped", False):  # fp16 overflow skips the step
                self.teacher_lr_scheduler.step()
            self.teacher_optimizer.zero_grad(set_to_none=True)

    def _teacher_engine_step(self, guard) -> None:
        """The teacher's DeepSpeed engine steps: it clips to its ``gradient_clipping`` (``max_grad_norm``) and steps
        its optimizer; then the gradient norm it measured is checked and the scheduler steps."""
        engine, torch_optimizer = self.wrapped_teacher, self._teacher_torch_optimizer
        self.teacher_last_lr = torch_optimizer.param_groups[0]["lr"]
        engine.step()
        if guard is not None:  # after the step: DeepSpeed measures the norm inside it
            self.guards.check("teacher", engine.get_global_grad_norm())
        if engine.was_step_applied():  # fp16 overflow skips the step
            self.teacher_lr_scheduler.step()

    def _teacher_loss(self, teacher_logits: torch.Tensor, student_logits: torch.Tensor, inputs: dict):
        """Step 2's ``(loss, proximity)`` from the logits, for the constraint in use."""
        args, labels = self.args, self.kind.labels(inputs)
        if args.prokt_constraint == "dual":
            return teacher_dual_loss(teacher_logits, student_logits, labels, self.dual_beta, args.prokt_epsilon,
                                     args.distill_temperature)
        return teacher_penalty_loss(teacher_logits, student_logits, labels,
                                    args.lambda_at(self.trainer.state.global_step), args.distill_temperature)

    def _chunked_teacher_loss(self, head: HeadInputs, anchor: HeadInputs, inputs: dict):
        """Step 2's ``(loss, proximity)`` over chunks of positions (a causal LM, `chunked_lm_loss`): the same terms
        as `_teacher_loss`, from the last hidden states and output layers."""
        args = self.args
        dual = args.prokt_constraint == "dual"
        move_back = self.dual_beta if dual else args.lambda_at(self.trainer.state.global_step)
        result = chunked_distillation_losses(
            self.chunk_rows(anchor, inputs), anchor.weight, self.chunk_rows(head, inputs), head.weight,
            self.chunk_labels(inputs), student_bias=anchor.bias, teacher_bias=head.bias,
            teacher_ce_weight=1.0 if dual else 1.0 - move_back, teacher_kl_weight=move_back,
            temperature=args.distill_temperature,
        )
        loss = result.teacher_loss - move_back * args.prokt_epsilon if dual else result.teacher_loss
        return loss, result.parts["proximity"]

    @contextmanager
    def _gradients_synced(self) -> Iterator[None]:
        """Let the accelerator's optimizer wrapper step although the student is mid-accumulation."""
        state = self.trainer.accelerator.gradient_state
        previous = state.sync_gradients
        state._set_sync_gradients(True)
        try:
            yield
        finally:
            state._set_sync_gradients(previous)

    def _clip_teacher_gradients(self, max_norm: float) -> torch.Tensor:
        """Clip the teacher's gradients to ``max_norm`` (``inf``: only measure them); returns their total norm."""
        parameters = self.wrapped_teacher.parameters()
        if self.teacher_is_sharded:
            # accelerate's clip_grad_norm_ picks "the" FSDP model by comparing parameter lists, which fails with
            # two models; torch's clipping computes the global norm of sharded (DTensor) gradients itself.
            return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
        return self.trainer.accelerator.clip_grad_norm_(parameters, max_norm)

    # ------------------------------------------------------------------ checkpoints, logs, card

    def full_teacher_weights(self) -> dict | None:
        if not self.teacher_is_sharded or not self._teacher_prepared:
            return None
        return persistence.gather_full_weights(self.trainer.accelerator, self.wrapped_teacher)

    def save_state(self, folder: str) -> None:
        """The teacher's weights, optimizer, scheduler and dual multiplier, beside the projections."""
        weights = optimizer_state = None
        if self.teacher_optimizer is not None and self.teacher_is_sharded:  # collectives: on every process
            weights, optimizer_state = persistence.gather_teacher_state(self.trainer.accelerator, self.wrapped_teacher,
                                                                        self.teacher_optimizer)
        super().save_state(folder)
        if self.trainer.args.should_save and self.teacher_optimizer is not None:
            persistence.save_teacher_state(
                folder, self.unwrapped_teacher(), self.teacher_optimizer, self.teacher_lr_scheduler,
                {"dual_beta": self.dual_beta, "teacher_learning_rate": self.teacher_last_lr},
                weights=weights, optimizer_state=optimizer_state,
            )

    def load_state(self, checkpoint: str, load_weights: Callable[[str, nn.Module], None]) -> None:
        super().load_state(checkpoint, load_weights)
        if self.teacher_optimizer is None:
            return
        device = self.args.device
        state = persistence.load_teacher_state(
            checkpoint, self.teacher_optimizer, self.teacher_lr_scheduler,
            sharded_teacher=self.wrapped_teacher if self.teacher_is_sharded else None,
            load_weights=lambda folder: load_weights(folder, self.teacher_model),
            device="cpu" if device.type == "cpu" else device,  # torch can't restore "cpu:0"
        )
        self.dual_beta = float(state["dual_beta"])
        self.teacher_last_lr = state.get("teacher_learning_rate")

    def log_values(self, step: int) -> dict[str, float]:
        values = super().log_values(step)
        if not values:
            return values
        if self.teacher_last_lr is not None:
            values["teacher_learning_rate"] = self.teacher_last_lr
        if self.args.prokt_constraint == "dual":
            values["prokt_beta"] = self.dual_beta
        if self.args.prokt_lambda_warmup_steps:
            values["prokt_lambda"] = self.args.lambda_at(step - 1)
        return values

    def teacher_hyperparameters(self) -> dict:
        args = self.args
        values = {"teacher_learning_rate": args.teacher_learning_rate, "prokt_target": args.prokt_target,
                  "prokt_constraint": args.prokt_constraint}
        if args.prokt_constraint == "dual":
            values.update({"prokt_epsilon": args.prokt_epsilon, "dual_lr": args.dual_lr, "dual_init": args.dual_init})
        else:
            values["prokt_lambda"] = args.prokt_lambda
        return values
