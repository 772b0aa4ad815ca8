"""Run the student and the teacher once on a real training batch before anything is trained.

`check_distillation_pair` (compatibility.py) compares configurations; this probe compares what the models
*do* with the data: a pair that cannot read the same batch (another image size, another tokenizer) or that
returns logits of different shapes fails here with the reason, before any step or write. Its outputs also
size the learned projections of the intermediate terms.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from torch import nn


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
    modes = (student.training, teacher.training)
    student.eval()
    teacher.eval()
    try:
        outputs = []
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
    finally:
        student.train(modes[0])
        teacher.train(modes[1])
    student_outputs, teacher_outputs = outputs
    student_logits, teacher_logits = student_outputs.logits, teacher_outputs.logits
    if student_logits.shape != teacher_logits.shape:
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
