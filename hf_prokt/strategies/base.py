"""The interface every training recipe implements, and the running means it logs.

`ProKTTrainer` holds one `Strategy` and calls it from its `Trainer` hooks:

=========================  ================================================================================
hook                       what the strategy does
=========================  ================================================================================
``__init__`` (before the   ``Strategy(args, student, teacher, trainer_kwargs)``: refuse what the recipe cannot
``Trainer`` is built)      serve, before anything is touched
``__init__`` (after)       `attach`: place the teacher, probe the pair on a training batch, build projections
``create_scheduler``       `prepare_for_training`: the teacher's optimizer and scheduler, accelerator preparation
``get_batch_samples``      `start_window`: the micro-batches of the coming optimizer step
``training_step``          `micro_batch`: around each micro-batch's forward and backward
``compute_loss``           `compute_loss`: the student's loss (recipes that `distils`; else the `Trainer`'s)
checkpoint save / load     `save_state` / `load_state`: the teacher's training state, the projections
``log``                    `log_values`: the terms averaged since the last log
model card                 `description`, `summary`, `tags`, `hyperparameters`
=========================  ================================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar

import torch
from torch import nn

from ..language_model_checks import check_language_model_setup


class RunningMeans:
    """Per-name means of scalar tensors over the micro-batches since the last `pop`."""

    def __init__(self):
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            value = value.detach().float()
            self._sums[name] = self._sums.get(name, 0.0) + value
            self._counts[name] = self._counts.get(name, 0) + 1

    def __bool__(self) -> bool:
        return bool(self._sums)

    def pop(self, reduce_mean: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """The means, by name in sorted order, each averaged over processes with ``reduce_mean`` (a collective:
        every process calls it); then forgets them."""
        means = {name: round(reduce_mean(self._sums[name] / self._counts[name]).item(), 6)
                 for name in sorted(self._sums)}
        self._sums, self._counts = {}, {}
        return means


class Strategy:
    """One training recipe of `ProKTTrainer` (``args.strategy``). Subclasses register with
    `hf_prokt.strategies.register_strategy` under their `name`.

    Class attributes:
        name: the value of ``ProKTTrainingArguments.strategy``.
        needs_teacher: whether ``teacher_model`` is required (KD from cached logits needs none: see `kd`).
        trains_teacher: whether the teacher gets an optimizer (it is then in train mode, evaluated by default).
        distils: whether the student's loss is the strategy's (`compute_loss`) rather than the `Trainer`'s.
        accepts_cached_logits: whether the student can learn from cached teacher logits (a frozen teacher's).
        summary: how the student was trained, in a few words (the model card's first sentence).
        description: the method, in a sentence (the model card's "Distillation" section).
        tags: the model card's tags.

    Attributes:
        args: the `ProKTTrainingArguments`.
        trainer: the `ProKTTrainer`, from `attach` on.
        teacher_model: the unwrapped teacher (None without one).
        wrapped_teacher: the teacher as the accelerator prepared it (the unwrapped one before `prepare_for_training`).
        teacher_optimizer, teacher_lr_scheduler: the teacher's own (a recipe that trains it), else None.
        intermediate_distiller: the learned projections of the intermediate terms, or None.
        uses_cached_teacher_logits: whether the student learns from the training set's cached ``teacher_logits``
            (or, for a causal LM, its cached top-k log-probabilities).
        uses_cached_topk: whether that cache is a causal LM's top-k log-probabilities (``teacher_topk_*``).
        means: the terms logged at the next log (`RunningMeans`).
    """

    name: ClassVar[str]
    needs_teacher: ClassVar[bool] = False
    trains_teacher: ClassVar[bool] = False
    distils: ClassVar[bool] = False
    accepts_cached_logits: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    description: ClassVar[str] = ""
    tags: ClassVar[tuple[str, ...]] = ()

    teacher_model: nn.Module | None = None
    wrapped_teacher: nn.Module | None = None
    teacher_optimizer = None
    teacher_lr_scheduler = None
    intermediate_distiller: nn.Module | None = None
    uses_cached_teacher_logits = False
    uses_cached_topk = False
    teacher_is_sharded = False
    """Whether the teacher's parameters are sharded across processes (a trained teacher under FSDP2)."""

    @classmethod
    def check_trainer_kwargs(cls, args, trainer_kwargs: dict) -> None:
        """Refuse `Trainer` arguments that cannot serve the recipe (``trainer_kwargs``: the other keyword arguments
        given to `ProKTTrainer`, ``model_init``, ``compute_loss_func``...)."""

    def __init__(self, args, student: nn.Module | None, teacher: nn.Module | None, trainer_kwargs: dict):
        """Check the recipe's set-up before the `Trainer` is built (nothing is touched yet). ``trainer_kwargs``: the
        other keyword arguments given to `ProKTTrainer` (``train_dataset``, ``model_init``...)."""
        self.check_trainer_kwargs(args, trainer_kwargs)
        check_language_model_setup(args, student, teacher, trainer_kwargs)
        self.args = args
        self.trainer = None
        self.means = RunningMeans()

    def attach(self, trainer) -> None:
        """Called once the `Trainer` is built (``trainer.model`` exists): set up what the recipe needs."""
        self.trainer = trainer

    def prepare_for_training(self, num_training_steps: int) -> None:
        """Called when the student's scheduler is created, at the start of `train()`."""

    def start_window(self, batch_samples: list[dict]) -> None:
        """The micro-batches of the coming optimizer step (one, or ``gradient_accumulation_steps``)."""

    @contextmanager
    def micro_batch(self, model: nn.Module, inputs: dict) -> Iterator[None]:
        """Around the `Trainer`'s forward and backward of one micro-batch."""
        yield

    def compute_loss(self, model: nn.Module, inputs: dict):
        """``(loss, student_outputs)`` of a training micro-batch, for a recipe that `distils`."""
        raise NotImplementedError(f"strategy {self.name!r} uses the Trainer's loss")

    def model_computes_evaluation_loss(self) -> bool:
        """Whether evaluation uses the `Trainer`'s loss (the model's own) rather than `compute_loss`."""
        return True

    def parameters_trained_with_student(self) -> list[nn.Parameter]:
        """Parameters the student's optimizer steps besides the student's own (the learned projections)."""
        return [] if self.intermediate_distiller is None else list(self.intermediate_distiller.parameters())

    def save_state(self, folder: str) -> None:
        """Write the recipe's training state into the checkpoint ``folder`` (called on every process)."""

    def load_state(self, checkpoint: str, load_weights: Callable[[str, nn.Module], None]) -> None:
        """Restore it from ``checkpoint``; ``load_weights(folder, model)`` loads a saved model's weights into
        ``model`` as the `Trainer` loads the student's."""

    def log_values(self, step: int) -> dict[str, float]:
        """What the training log adds at optimizer step ``step`` (a collective: every process calls it)."""
        return self.means.pop(self.reduce_mean) if self.means else {}

    def reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        return self.trainer.accelerator.reduce(value.clone(), reduction="mean")

    def card_description(self) -> str:
        """The method, in a sentence, for the model card."""
        return self.description

    def hyperparameters(self) -> dict:
        """The arguments that define the recipe, for the model card."""
        return {"strategy": self.name, "learning_rate (student)": self.args.learning_rate}

    def unwrapped_teacher(self) -> nn.Module | None:
        if self.wrapped_teacher is None:
            return None
        return self.trainer.accelerator.unwrap_model(self.wrapped_teacher)

    def full_teacher_weights(self) -> dict | None:
        """The teacher's full weights when they are sharded (a collective: every process calls it; the main process
        gets them, on the CPU), or None when the teacher saves itself."""
        return None
