"""`ProKTTrainingArguments`: `TrainingArguments` plus the knobs of ProKT, KD and fine-tuning.

Every added field has a `help` (so `HfArgumentParser` shows it on the command line) and is
validated in `__post_init__` with an error that names the field and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from transformers import TrainingArguments

from .deepspeed.cpu_state import configure_cpu_deepspeed_state
from .strategies import strategy_class, strategy_names

STRATEGIES = strategy_names()
CONSTRAINTS = ("penalty", "dual")
TARGETS = ("updated", "stale")
ANCHORS = ("eval", "train")


@dataclass
class ProKTTrainingArguments(TrainingArguments):
    """Training arguments for [`ProKTTrainer`]: every `TrainingArguments` field, and the fields below.

    The inherited `learning_rate`, `optim`, `weight_decay`, `lr_scheduler_type`, warm-up and
    `max_grad_norm` configure the *student*. The teacher's optimizer and scheduler are built the
    same way, with `teacher_learning_rate` as their learning rate.

    > Recipe

    strategy (`str`, *optional*, defaults to `"prokt"`):
        `"prokt"`, `"kd"` or `"finetune"` (`hf_prokt.strategies`).

    > Teacher

    teacher_learning_rate (`float`, *optional*, defaults to `3e-5`):
        Peak learning rate of the ProKT teacher's own optimizer.
    teacher_dtype (`str` or `None`, *optional*, defaults to `None`):
        `"kd"` only: cast the frozen teacher to `"bfloat16"`, `"float16"` or `"float32"`.
    chunked_lm_loss (`bool` or `None`, *optional*, defaults to `None`):
        Causal LMs: the output terms over chunks of positions, without full logits; `None`: where possible.
    evaluate_teacher (`bool` or `None`, *optional*, defaults to `None`):
        Also report the teacher's metrics as `eval_teacher_*`; `None`: yes for `"prokt"`, no for `"kd"`.
    zero_init_classifier (`bool`, *optional*, defaults to `False`):
        Zero the final classification layer of the student and, for `"prokt"`, of the teacher.

    > ProKT (the teacher's step)

    prokt_lambda (`float`, *optional*, defaults to `0.4`):
        Move-back weight of `KL(student || teacher)` in the teacher's loss.
    prokt_lambda_warmup_steps (`int`, *optional*, defaults to `0`):
        Ramp `prokt_lambda` from 0 over this many optimizer steps.
    prokt_constraint (`str`, *optional*, defaults to `"penalty"`):
        `"penalty"` (fixed `prokt_lambda`) or `"dual"` (a Lagrange multiplier that keeps the KL near `prokt_epsilon`).
    prokt_epsilon (`float`, *optional*, defaults to `0.1`):
        KL budget of the dual constraint.
    dual_lr (`float`, *optional*, defaults to `0.1`):
        Step size of the dual ascent.
    dual_init (`float`, *optional*, defaults to `0.5`):
        Initial dual multiplier.
    prokt_target (`str`, *optional*, defaults to `"updated"`):
        The student learns from the teacher after its step (`"updated"`) or before it (`"stale"`).
    prokt_anchor (`str`, *optional*, defaults to `"eval"`):
        The student prediction the teacher is pulled towards: a forward in eval mode (`"eval"`) or the detached
        training forward (`"train"`).

    > Distillation (the student's step)

    distill_temperature (`float`, *optional*, defaults to `1.0`):
        Softmax temperature `T` of both KL terms, each scaled by `T^2`.
    distill_alpha (`float`, *optional*, defaults to `1.0`):
        Weight of the distillation term; `1 - distill_alpha` goes to the task loss on labels.
    distill_alpha_warmup_steps (`int`, *optional*, defaults to `0`):
        Ramp `distill_alpha` from 0 over this many optimizer steps.

    > Intermediate terms

    hidden_distill_weight (`float`, *optional*, defaults to `0.0`):
        MSE between projected student hidden states and the mapped teacher layers.
    embedding_distill_weight (`float`, *optional*, defaults to `0.0`):
        MSE between the projected embedding outputs.
    attention_distill_weight (`float`, *optional*, defaults to `0.0`):
        MSE between attention maps (load both models with `attn_implementation="eager"`).
    layer_map (`str` or `list[int]`, *optional*, defaults to `"uniform"`):
        The teacher layer (1-based) each student layer learns from.

    > Robustness

    stop_on_nonfinite (`bool`, *optional*, defaults to `True`):
        Stop, before the optimizer step, on a NaN or infinite loss, loss term or gradient norm.
    save_on_sigterm (`bool`, *optional*, defaults to `True`):
        On SIGTERM during `train()`, save a checkpoint at the end of the current optimizer step on every process,
        then raise `TrainingTerminated` (exit code 143).
    """

    strategy: str = field(
        default="prokt",
        metadata={
            "help": "Training recipe: 'prokt' (teacher trained with the student and pulled back towards it at "
            "every step), 'kd' (frozen teacher, classic Hinton distillation) or 'finetune' (no teacher, the "
            "student learns from labels alone).",
            "choices": list(STRATEGIES),
        },
    )
    teacher_learning_rate: float = field(
        default=3e-5,
        metadata={"help": "Peak learning rate of the teacher's own optimizer (strategy='prokt' only)."},
    )
    prokt_lambda: float = field(
        default=0.4,
        metadata={
            "help": "Move-back weight: the teacher step minimises (1 - lambda) * task loss + lambda * "
            "KL(student || teacher). 0 trains the teacher on labels alone; 1 only pulls it to the student."
        },
    )
    prokt_constraint: str = field(
        default="penalty",
        metadata={
            "help": "'penalty': the fixed weight prokt_lambda. 'dual': a Lagrange multiplier beta that keeps "
            "T^2 * KL(student || teacher) near prokt_epsilon (teacher loss = task + beta * (T^2 * KL - epsilon)).",
            "choices": list(CONSTRAINTS),
        },
    )
    prokt_epsilon: float = field(
        default=0.1,
        metadata={"help": "KL budget of the dual constraint (prokt_constraint='dual')."},
    )
    dual_lr: float = field(
        default=0.1,
        metadata={"help": "Step size of the dual ascent: beta <- max(0, beta + dual_lr * (KL - epsilon))."},
    )
    dual_init: float = field(
        default=0.5,
        metadata={"help": "Initial value of the dual multiplier beta (prokt_constraint='dual')."},
    )
    prokt_target: str = field(
        default="updated",
        metadata={
            "help": "What the student learns from: 'updated' (the teacher after its step, as the method "
            "prescribes) or 'stale' (the teacher's pre-step logits: one teacher forward fewer per step).",
            "choices": list(TARGETS),
        },
    )
    prokt_anchor: str = field(
        default="eval",
        metadata={
            "help": "The student prediction the teacher is pulled towards: 'eval' (a separate forward of the "
            "student in eval mode, no dropout, without a graph, as the authors did) or 'train' (the detached "
            "logits of the student's training forward: one forward fewer per step, dropout noise in the anchor).",
            "choices": list(ANCHORS),
        },
    )
    distill_temperature: float = field(
        default=1.0,
        metadata={"help": "Softmax temperature T of both KL terms (teacher and student), each scaled by T^2."},
    )
    distill_alpha: float = field(
        default=1.0,
        metadata={
            "help": "Student loss = alpha * T^2 * KL(teacher || student) + (1 - alpha) * task loss. 1.0 (the "
            "authors' setting) means the student never sees hard labels."
        },
    )
    distill_alpha_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "Ramp the student's alpha linearly from 0 (labels only) up to distill_alpha over the first N "
            "optimizer steps (alpha at step t: distill_alpha * min(1, t / N)); 0: no ramp. For a ProKT teacher "
            "that starts from a fresh head, whose first targets are near uniform: the student learns from the "
            "labels meanwhile. Needs labels."
        },
    )
    prokt_lambda_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "strategy='prokt', penalty constraint: ramp lambda linearly from 0 up to prokt_lambda over the "
            "first N optimizer steps, so that the teacher first learns the task from the labels before it is "
            "pulled towards the student; 0: no ramp."
        },
    )
    hidden_distill_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the MSE between projected student hidden states and mapped teacher layers."},
    )
    embedding_distill_weight: float = field(
        default=0.0,
        metadata={"help": "Weight of the MSE between the projected student and teacher embedding outputs."},
    )
    attention_distill_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the MSE between student and mapped teacher attention maps (load both models "
            "with attn_implementation='eager' so they return attentions)."
        },
    )
    layer_map: str = field(
        default="uniform",
        metadata={
            "help": "Teacher layer (1-based) that each student layer learns from: 'uniform' (student layer i <- "
            "teacher layer round(i * L_teacher / L_student)) or one index per student layer: --layer_map 2 4 6, "
            "--layer_map 2,4,6, or a list [2, 4, 6] in Python and JSON configs.",
            "nargs": "+",
        },
    )
    zero_init_classifier: bool = field(
        default=False,
        metadata={"help": "Zero the final classification layer of the student and, for 'prokt', of the teacher "
                          "before training, as the authors did (a 'kd' teacher is already fine-tuned: left alone)."},
    )
    teacher_dtype: str | None = field(
        default=None,
        metadata={
            "help": "strategy='kd' only: cast the frozen teacher to this dtype ('bfloat16', 'float16' or "
            "'float32') to halve its memory; it runs in inference mode only (no optimizer, no gradients).",
            "choices": [None, "bfloat16", "float16", "float32"],
        },
    )
    chunked_lm_loss: bool | None = field(
        default=None,
        metadata={
            "help": "Causal LMs, 'kd' and 'prokt': compute the output terms over chunks of positions from the models' "
            "last hidden states and output layers, never holding [batch, length, vocab] logits (the same values "
            "as the plain terms). None: on for causal LMs whose forward takes logits_to_keep and whose output "
            "layer is a plain Linear, off otherwise; True: required (refused when impossible); False: off."
        },
    )
    stop_on_nonfinite: bool = field(
        default=True,
        metadata={
            "help": "Stop with an error, before the optimizer step, when the teacher's or the student's loss (or "
            "a part of it) or gradient norm is NaN or infinite; the message names the step, the model, the term "
            "and the last complete checkpoint. False: train on regardless, as the Trainer does. Under fp16 an "
            "infinite gradient (a step the GradScaler skips) is not an error."
        },
    )
    save_on_sigterm: bool = field(
        default=True,
        metadata={
            "help": "On SIGTERM (what clusters and preemptible machines send before they stop a job) during train(): "
            "finish the current optimizer step, save a complete checkpoint of it on every process (they agree at "
            "each step's end), then stop with TrainingTerminated, exit code 143; resume with "
            "resume_from_checkpoint. False: SIGTERM keeps its behaviour (the process ends, unsaved steps are lost)."
        },
    )
    evaluate_teacher: bool | None = field(
        default=None,
        metadata={
            "help": "Also evaluate the teacher at each evaluation, reported as eval_teacher_*. Default: yes for "
            "'prokt' (the teacher changes), no for 'kd' (it does not)."
        },
    )

    def __post_init__(self):
        self._validate_prokt_fields()
        super().__post_init__()

    @cached_property
    def _setup_devices(self):
        """The `TrainingArguments`' devices, with DeepSpeed's state created first on a host without an accelerator
        (`hf_prokt.deepspeed.cpu_state`)."""
        configure_cpu_deepspeed_state(self)
        return TrainingArguments._setup_devices.func(self)

    def _validate_prokt_fields(self) -> None:
        def fail(name: str, problem: str, fix: str) -> None:
            raise ValueError(f"ProKTTrainingArguments.{name}: {problem}. {fix}")

        if self.strategy not in strategy_names():
            fail("strategy", f"unknown value {self.strategy!r}", f"Use one of {', '.join(strategy_names())}.")
        if self.prokt_constraint not in CONSTRAINTS:
            fail("prokt_constraint", f"unknown value {self.prokt_constraint!r}", "Use 'penalty' or 'dual'.")
        if self.prokt_target not in TARGETS:
            fail("prokt_target", f"unknown value {self.prokt_target!r}", "Use 'updated' or 'stale'.")
        if self.prokt_anchor not in ANCHORS:
            fail("prokt_anchor", f"unknown value {self.prokt_anchor!r}", "Use 'eval' or 'train'.")
        if not 0.0 <= self.prokt_lambda <= 1.0:
            fail("prokt_lambda", f"{self.prokt_lambda} is outside [0, 1]", "The authors used 0.3 to 0.4.")
        if not 0.0 <= self.distill_alpha <= 1.0:
            fail("distill_alpha", f"{self.distill_alpha} is outside [0, 1]", "Use 1.0 for pure distillation.")
        if not self.distill_temperature > 0:
            fail("distill_temperature", f"{self.distill_temperature} is not positive", "Use 1.0 or more.")
        if not self.teacher_learning_rate > 0:
            fail("teacher_learning_rate", f"{self.teacher_learning_rate} is not positive", "The authors used 3e-5.")
        for name in ("prokt_epsilon", "dual_lr", "dual_init", "hidden_distill_weight",
                     "embedding_distill_weight", "attention_distill_weight"):
            if getattr(self, name) < 0:
                fail(name, f"{getattr(self, name)} is negative", "Use 0 or a positive number.")
        for name in ("distill_alpha_warmup_steps", "prokt_lambda_warmup_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                fail(name, f"{value!r} is not a whole number of steps >= 0", "Use 0 (no ramp) or a step count.")
        if self.distill_alpha_warmup_steps and self.strategy == "finetune":
            fail("distill_alpha_warmup_steps", "it ramps the weight of the teacher's term, but strategy is "
                 "'finetune'", "Set it to 0, or use strategy 'kd' or 'prokt'.")
        if self.prokt_lambda_warmup_steps and (self.strategy != "prokt" or self.prokt_constraint != "penalty"):
            fail("prokt_lambda_warmup_steps", f"it ramps prokt_lambda, which only strategy='prokt' with "
                 f"prokt_constraint='penalty' uses (here {self.strategy!r}, {self.prokt_constraint!r})",
                 "Set it to 0, or use strategy='prokt' with the penalty constraint.")
        self.layer_map = self._parse_layer_map(self.layer_map, fail)
        for name in ("stop_on_nonfinite", "save_on_sigterm"):
            if not isinstance(getattr(self, name), bool):
                fail(name, f"{getattr(self, name)!r} is not a boolean", "Use True or False.")
        if self.teacher_dtype not in (None, "bfloat16", "float16", "float32"):
            fail("teacher_dtype", f"unknown value {self.teacher_dtype!r}", "Use 'bfloat16', 'float16' or 'float32'.")
        if self.teacher_dtype is not None and self.strategy != "kd":
            fail("teacher_dtype", f"casting the teacher applies to a frozen teacher, but strategy is "
                 f"{self.strategy!r}", "Use strategy='kd', or mixed precision (bf16=True) to train a ProKT teacher.")
        if self.strategy == "finetune" and self.uses_intermediate_terms:
            fail("hidden_distill_weight", "intermediate distillation terms need a teacher, but strategy is "
                 "'finetune'", "Set the *_distill_weight fields to 0, or use strategy 'kd' or 'prokt'.")

    @staticmethod
    def _parse_layer_map(value, fail):
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            value = " ".join(value)  # from the command line: ['2', '4', '6'], ['2,4,6'] or ['uniform']
        if value == "uniform" or value is None:
            return "uniform"
        if isinstance(value, str):
            try:
                value = [int(part) for part in value.replace(",", " ").split()]
            except ValueError:
                fail("layer_map", f"{value!r} is neither 'uniform' nor a list of layer indices",
                     "Write e.g. '2,4,6' or [2, 4, 6].")
        if not isinstance(value, (list, tuple)) or not all(isinstance(i, int) for i in value) or not value:
            fail("layer_map", f"{value!r} is not a list of integers", "Write e.g. [2, 4, 6].")
        if any(i < 1 for i in value):
            fail("layer_map", f"{list(value)} has an index below 1", "Teacher layers are numbered from 1.")
        return list(value)

    def alpha_at(self, step: int) -> float:
        """The student's alpha at optimizer step ``step`` (0-based): `distill_alpha`, ramped over
        `distill_alpha_warmup_steps`."""
        return _ramped(self.distill_alpha, step, self.distill_alpha_warmup_steps)

    def lambda_at(self, step: int) -> float:
        """The teacher's move-back weight at optimizer step ``step``: `prokt_lambda`, ramped over
        `prokt_lambda_warmup_steps`."""
        return _ramped(self.prokt_lambda, step, self.prokt_lambda_warmup_steps)

    @property
    def uses_intermediate_terms(self) -> bool:
        """Whether any hidden-state, embedding or attention term is switched on."""
        return (self.hidden_distill_weight + self.embedding_distill_weight + self.attention_distill_weight) > 0

    @property
    def should_evaluate_teacher(self) -> bool:
        """Whether evaluations report the teacher too: `evaluate_teacher`, by default for a recipe that trains it."""
        recipe = strategy_class(self.strategy)
        if self.evaluate_teacher is None:
            return recipe.trains_teacher
        return self.evaluate_teacher and recipe.needs_teacher


def _ramped(value: float, step: int, warmup_steps: int) -> float:
    """``value * min(1, step / warmup_steps)``; ``value`` itself without a ramp."""
    return value if warmup_steps <= 0 else value * min(1.0, step / warmup_steps)
