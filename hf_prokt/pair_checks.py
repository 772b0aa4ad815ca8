"""Refuse a student/teacher pair that cannot be distilled, before anything is trained or written.

Two checks, each with an error that names the mismatch and the fix: `check_distillation_pair` compares the
models' kinds and configurations; `probe_pair` runs both on a real training batch, where a pair that cannot read
the same batch (another image size, another tokenizer) or returns logits of other shapes fails. The probe's
outputs also size the learned projections of the intermediate terms.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn

from .eval_mode import eval_mode
from .model_kinds import OUTPUT_SHAPE, base_model, model_config, model_kind_of

_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")


def _named_labels(config) -> dict[str, int] | None:
    """``label2id`` when the labels have real names, None for the default ``LABEL_i`` names. A config
    with ``id2label`` alone (transformers 5 does not derive ``label2id`` from it) is read through it."""
    label2id = getattr(config, "label2id", None) or {}
    if not label2id:
        label2id = {name: index for index, name in (getattr(config, "id2label", None) or {}).items()}
    if not label2id or all(_DEFAULT_LABEL.match(str(name)) for name in label2id):
        return None
    return {str(name): int(index) for name, index in label2id.items()}


def check_distillation_pair(student: nn.Module | None, teacher: nn.Module | None) -> None:
    """Raise a ``ValueError`` that names the mismatch and the fix when the pair cannot be distilled.

    Checked: a student is given; both are the same kind of task model (e.g. two token classifiers, not a token
    classifier and a sequence classifier); both have the same number of outputs and, when both name their labels,
    the same ``label2id``; both read the same vocabulary; neither is a multi-label classifier (softmax
    distillation would be meaningless there). Without a teacher only the student's presence is checked (whether
    the recipe needs a teacher is the strategy's check).
    """
    if student is None:
        raise ValueError("ProKTTrainer needs a student: pass model=<your student model>.")
    if teacher is None:
        return
    if teacher is student:
        raise ValueError("teacher_model is the same object as the student; pass two separate models.")

    student_kind, teacher_kind = model_kind_of(student), model_kind_of(teacher)
    if OUTPUT_SHAPE not in (student_kind, teacher_kind) and student_kind is not teacher_kind:
        raise ValueError(
            f"the student is a {_class_name(student)} ({student_kind.predicts}) but the teacher a "
            f"{_class_name(teacher)} ({teacher_kind.predicts}): distillation matches their predictions one to one. "
            f"Load both for the same task, e.g. both with {teacher_kind.auto_class}."
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
    return type(base_model(model)).__name__



@torch.no_grad()
def probe_pair(student: nn.Module, teacher: nn.Module, batch: dict, *,
               run_student: Callable[[dict, dict], object], run_teacher: Callable[[dict, dict], object],
               output_flags: dict, autocast: Callable[[], AbstractContextManager]) -> tuple:
    """Both models' outputs on ``batch``, in eval mode, without a graph, under the training precision.

    Args:
        batch: a collated training batch (tensors ``[b, ...]``, ``b`` small), labels included.
        run_student, run_teacher: ``(batch, output_flags) -> outputs``, the trainer's way of calling each model.
        output_flags: e.g. ``{"output_hidden_states": True}`` when the intermediate terms need them.
        autocast: the accelerator's autocast context (bf16, fp16 or nothing).

    Returns:
        ``(student_outputs, teacher_outputs)``; the models' train/eval modes are restored.

    Raises:
        ValueError: naming the model, its error and the batch's shapes, or the two logits' shapes.
    """
    outputs = []
    with eval_mode(student, teacher):
        for who, model, run in (("student", student, run_student), ("teacher", teacher, run_teacher)):
            model_batch = on_device_of(model, batch)
            try:
                with autocast():
                    outputs.append(run(model_batch, output_flags))
            except TypeError as error:
                if output_flags and any(name in str(error) for name in output_flags):
                    raise ValueError(
                        f"the {who} refused the output flags the intermediate terms need ({error}). Set "
                        "the *_distill_weight fields to 0 for this model pair."
                    ) from error
                raise unreadable_batch(who, batch, error) from error
            except (RuntimeError, ValueError, IndexError) as error:
                raise unreadable_batch(who, batch, error) from error
    student_outputs, teacher_outputs = outputs
    student_logits = getattr(student_outputs, "logits", None)
    teacher_logits = getattr(teacher_outputs, "logits", None)
    if student_logits is not None and teacher_logits is not None and student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"on the same batch the student returns logits of shape {list(student_logits.shape)} and the "
            f"teacher {list(teacher_logits.shape)}; distillation needs one score per class from each, for "
            "the same classes. Give both models the dataset's label set (num_labels, id2label, label2id)."
        )
    return student_outputs, teacher_outputs


def unreadable_batch(who: str, batch: dict, error: Exception) -> ValueError:
    shapes = {name: list(value.shape) for name, value in batch.items() if isinstance(value, torch.Tensor)}
    return ValueError(
        f"the {who} could not read a training batch ({type(error).__name__}: {error}). Both models receive the "
        f"same inputs ({shapes}): the same input_ids (one tokenizer), or pixel_values of the image size and "
        "channels both models expect. Preprocess for both, e.g. with the teacher's image processor and a student "
        "built for the same image size."
    )


def on_device_of(model: nn.Module, batch: dict) -> dict:
    """The batch's tensors on the device of the model's weights (before FSDP places a model, it may still be
    on the CPU while batches go to the accelerator's device)."""
    parameter = next(model.parameters(), None)
    if parameter is None:
        return batch
    return {k: v.to(parameter.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
