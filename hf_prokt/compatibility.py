"""Refuse student/teacher pairs that cannot be distilled, before anything is touched."""

from __future__ import annotations

import re

from torch import nn

_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")


def model_config(model: nn.Module | None):
    """The model's `PretrainedConfig` (through a PEFT wrapper too), or None for plain modules."""
    config = getattr(model, "config", None)
    # PEFT wraps the model; its base model carries the config.
    if config is None and hasattr(model, "get_base_model"):
        config = getattr(model.get_base_model(), "config", None)
    return config


def _named_labels(config) -> dict[str, int] | None:
    """``label2id`` when the labels have real names, None for the default ``LABEL_i`` names."""
    label2id = getattr(config, "label2id", None) or {}
    if not label2id or all(_DEFAULT_LABEL.match(str(name)) for name in label2id):
        return None
    return {str(name): int(index) for name, index in label2id.items()}


def check_distillation_pair(student: nn.Module | None, teacher: nn.Module | None, strategy: str) -> None:
    """Raise a ``ValueError`` that names the mismatch and the fix when the pair cannot be distilled.

    Checked: a teacher is given when the strategy needs one; both have the same number of outputs
    and, when both name their labels, the same ``label2id``; both read the same vocabulary; neither
    is a multi-label classifier (softmax distillation would be meaningless there).
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
