"""Refuse what cannot be distilled, before anything is touched: student/teacher pairs whose configurations
disagree, and set-ups the trainer does not support (the probe on real data is in pair_probe.py)."""

from __future__ import annotations

import re

from torch import nn

_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")
# What each kind of head predicts; class names follow the `AutoModelFor*` tasks (custom code too).
_HEAD_KINDS = (
    ("ForTokenClassification", "AutoModelForTokenClassification", "one prediction per token"),
    ("ForSequenceClassification", "AutoModelForSequenceClassification", "one prediction per sequence"),
    ("ForImageClassification", "AutoModelForImageClassification", "one prediction per image"),
    ("ForAudioClassification", "AutoModelForAudioClassification", "one prediction per clip"),
    ("ForAudioFrameClassification", "AutoModelForAudioFrameClassification", "one prediction per frame"),
)


def model_config(model: nn.Module | None):
    """The model's `PretrainedConfig` (through a PEFT wrapper too), or None for plain modules."""
    config = getattr(model, "config", None)
    # PEFT wraps the model; its base model carries the config.
    if config is None and hasattr(model, "get_base_model"):
        config = getattr(model.get_base_model(), "config", None)
    return config


def head_kind(model: nn.Module) -> tuple[str, str] | None:
    """``(auto_class, what_it_predicts)`` of a Hugging Face task model (through a PEFT wrapper), from its
    class name, or None for a model of no known task."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = type(base).__name__
    for suffix, auto_class, predicts in _HEAD_KINDS:
        if name.endswith(suffix):
            return auto_class, predicts
    return None


def _named_labels(config) -> dict[str, int] | None:
    """``label2id`` when the labels have real names, None for the default ``LABEL_i`` names. A config
    with ``id2label`` alone (transformers 5 does not derive ``label2id`` from it) is read through it."""
    label2id = getattr(config, "label2id", None) or {}
    if not label2id:
        label2id = {name: index for index, name in (getattr(config, "id2label", None) or {}).items()}
    if not label2id or all(_DEFAULT_LABEL.match(str(name)) for name in label2id):
        return None
    return {str(name): int(index) for name, index in label2id.items()}


def check_distillation_pair(student: nn.Module | None, teacher: nn.Module | None, strategy: str) -> None:
    """Raise a ``ValueError`` that names the mismatch and the fix when the pair cannot be distilled.

    Checked: a teacher is given when the strategy needs one; both are the same kind of task model
    (e.g. two token classifiers, not a token classifier and a sequence classifier); both have the same
    number of outputs and, when both name their labels, the same ``label2id``; both read the same
    vocabulary; neither is a multi-label classifier (softmax distillation would be meaningless there).
    """
    if student is None:
        raise ValueError("ProKTTrainer needs a student: pass model=<your student model>.")
    if strategy == "finetune":
        return
    if teacher is None:
        raise ValueError(
            f"strategy={strategy!r} needs a teacher: pass teacher_model=<a model with the student's labels>, "
            "or use strategy='finetune' to train the student on labels alone."
        )
    if teacher is student:
        raise ValueError("teacher_model is the same object as the student; pass two separate models.")

    student_kind, teacher_kind = head_kind(student), head_kind(teacher)
    if student_kind and teacher_kind and student_kind != teacher_kind:
        raise ValueError(
            f"the student is a {_class_name(student)} ({student_kind[1]}) but the teacher a {_class_name(teacher)} "
            f"({teacher_kind[1]}): distillation matches their predictions one to one. Load both for the same task, "
            f"e.g. both with {teacher_kind[0]}."
        )

    student_config, teacher_config = model_config(student), model_config(teacher)
    if student_config is None or teacher_config is None:
        return  # plain nn.Modules: the losses check the logits' shapes at the first step

    for who, config in (("student", student_config), ("teacher", teacher_config)):
        if getattr(config, "problem_type", None) == "multi_label_classification":
            raise ValueError(
                f"the {who} is a multi-label classifier (problem_type='multi_label_classification'); ProKT "
                "and KD distil softmax (single-label) or regression heads. Use single-label classification."
            )

    student_labels = getattr(student_config, "num_labels", None)
    teacher_labels = getattr(teacher_config, "num_labels", None)
    if student_labels != teacher_labels:
        raise ValueError(
            f"the student has num_labels={student_labels} but the teacher has num_labels={teacher_labels}. "
            "Load both with the same label set, e.g. from_pretrained(..., num_labels=N, id2label=..., "
            "label2id=...)."
        )
    student_names, teacher_names = _named_labels(student_config), _named_labels(teacher_config)
    if student_names is not None and teacher_names is not None and student_names != teacher_names:
        raise ValueError(
            f"the student's label2id {student_names} differs from the teacher's {teacher_names}: the same "
            "class index would mean different labels. Load both with the same label2id (and id2label)."
        )

    student_vocab = getattr(student_config, "vocab_size", None)
    teacher_vocab = getattr(teacher_config, "vocab_size", None)
    if student_vocab is not None and teacher_vocab is not None and student_vocab != teacher_vocab:
        raise ValueError(
            f"the student's vocabulary has {student_vocab} tokens but the teacher's has {teacher_vocab}: "
            "both models read the same input_ids, so they need the same tokenizer. Pick a student built "
            "on the teacher's tokenizer (e.g. hf_prokt.student_from_teacher)."
        )


def _class_name(model: nn.Module) -> str:
    return type(model.get_base_model() if hasattr(model, "get_base_model") else model).__name__


NO_DEEPSPEED_TEACHER = (
    "ProKTTrainer does not run a teacher under DeepSpeed: its engine drives one model and one optimizer. Use FSDP2 "
    "(fsdp='full_shard' with fsdp_config={'version': 2}, or an accelerate FSDP config with fsdp_version: 2) or DDP; "
    "or strategy='finetune'."
)
NEEDS_LABELS = (
    "the training data has no labels: ProKT trains the teacher on them, and distill_alpha < 1 (or a ramp "
    "distill_alpha_warmup_steps) trains the student on them. Add a 'label' or 'labels' column, or use strategy='kd' "
    "with distill_alpha=1.0 and no ramp for unlabelled data."
)


def check_trainer_setup(args, trainer_kwargs: dict) -> None:
    """Refuse `Trainer` arguments that cannot serve the strategy (before the `Trainer` is built).

    Args:
        args: the `ProKTTrainingArguments`.
        trainer_kwargs: the other keyword arguments given to `ProKTTrainer` (``model_init``, ``train_dataset``...).
    """
    if args.strategy == "prokt" and trainer_kwargs.get("model_init") is not None:
        raise ValueError(
            "model_init re-creates the student at every train() call, but ProKT's teacher is trained with "
            "it and would not be re-created. Pass model=<student> and teacher_model=<teacher> instead."
        )
    if args.strategy != "finetune" and trainer_kwargs.get("compute_loss_func") is not None:
        raise ValueError(
            f"compute_loss_func would replace the distillation loss of strategy={args.strategy!r}. Remove "
            "it (the student loss is set by distill_alpha and distill_temperature), or use 'finetune'."
        )
    if args.strategy != "finetune" and args.deepspeed:
        raise ValueError(NO_DEEPSPEED_TEACHER)


def check_teacher_sharding(args, *, deepspeed: bool, fsdp: bool, fsdp2: bool) -> None:
    """With a teacher: DeepSpeed and FSDP1 are refused; FSDP2 runs without the intermediate terms."""
    if deepspeed:
        raise ValueError(NO_DEEPSPEED_TEACHER)
    if not fsdp:
        return
    if not fsdp2:
        raise ValueError(
            "ProKTTrainer runs a teacher under FSDP2 only, and this is FSDP1. Set fsdp_config={'version': 2} "
            "(or fsdp_version: 2 in the accelerate config), or use DDP."
        )
    if args.uses_intermediate_terms:
        raise ValueError(
            "the intermediate distillation terms (hidden/embedding/attention_distill_weight) are not supported "
            "under FSDP yet: their projections would need sharding of their own. Use logit distillation alone "
            "under FSDP, or DDP for the intermediate terms."
        )


def check_has_labels(args, dataset) -> None:
    """ProKT's teacher and a student with ``distill_alpha < 1`` (or a ramp of alpha, which starts at 0) learn
    from labels: a training set with named columns must have a label column."""
    if args.strategy != "prokt" and args.distill_alpha >= 1 and not args.distill_alpha_warmup_steps:
        return
    columns = getattr(dataset, "column_names", None)
    if isinstance(columns, list) and not {"label", "labels", "label_ids"} & set(columns):
        raise ValueError(NEEDS_LABELS)
