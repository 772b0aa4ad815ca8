"""Build a shallower student from a teacher: same architecture and tokenizer, fewer layers.

The usual way to get a 6-layer student from a 12-layer teacher when no pretrained small model
exists (DistilBERT, PKD): copy the teacher's config with fewer layers and initialise the student
from uniformly spaced teacher layers; every weight outside the layer stack (embeddings, pooler,
classifier) is copied as is.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

from torch import nn

_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layers", "num_layers", "n_layer")


def uniform_layer_selection(num_teacher_layers: int, num_student_layers: int) -> list[int]:
    """0-based teacher layers spread evenly from the first one: ``(12, 6) -> [0, 2, 4, 6, 8, 10]``."""
    if not 1 <= num_student_layers <= num_teacher_layers:
        raise ValueError(
            f"a student built from a {num_teacher_layers}-layer teacher needs 1..{num_teacher_layers} layers, "
            f"not {num_student_layers}."
        )
    return [int(i * num_teacher_layers / num_student_layers) for i in range(num_student_layers)]


def _layer_count_key(config) -> str:
    for key in _LAYER_COUNT_KEYS:
        if isinstance(getattr(config, key, None), int):
            return key
    raise ValueError(
        f"{type(config).__name__} names its layer count with none of {_LAYER_COUNT_KEYS}; build the student "
        "from a config yourself and pass it as model=..."
    )


def _layer_stack_prefix(model: nn.Module, num_layers: int) -> str:
    """The state-dict prefix of the model's one ``nn.ModuleList`` of ``num_layers`` layers."""
    stacks = [name for name, module in model.named_modules()
              if isinstance(module, nn.ModuleList) and len(module) == num_layers and name]
    if len(stacks) != 1:
        raise ValueError(
            f"{type(model).__name__} has {len(stacks)} layer lists of length {num_layers} ({stacks}); "
            "student_from_teacher needs exactly one. Build the student yourself for this architecture."
        )
    return stacks[0] + "."


def student_from_teacher(teacher: nn.Module, num_layers: int, layers: Sequence[int] | None = None) -> nn.Module:
    """A copy of ``teacher`` with ``num_layers`` layers, initialised from the teacher's weights.

    Args:
        teacher: a Hugging Face model (e.g. an ``AutoModelForSequenceClassification``).
        num_layers: the student's depth.
        layers: 0-based teacher layers to copy, one per student layer; default: uniformly spaced from
            the first layer (see [`uniform_layer_selection`]).

    Returns:
        A new model of the teacher's class, in the teacher's dtype and on its device, whose student
        layer ``i`` equals teacher layer ``layers[i]`` and whose other weights equal the teacher's. Its
        config records how it was made: ``config.student_from_teacher = {"teacher": <teacher's name or
        path>, "teacher_num_layers": ..., "teacher_layers": layers}`` (saved in config.json; the model
        card reads it).
    """
    config = copy.deepcopy(teacher.config)
    key = _layer_count_key(config)
    num_teacher_layers = getattr(config, key)
    if layers is None:
        layers = uniform_layer_selection(num_teacher_layers, num_layers)
    layers = list(layers)
    if len(layers) != num_layers or any(not 0 <= i < num_teacher_layers for i in layers):
        raise ValueError(
            f"layers={layers} must name {num_layers} teacher layers in 0..{num_teacher_layers - 1}."
        )
    setattr(config, key, num_layers)
    # Per-layer lists in the config (e.g. layer_types) follow the chosen layers.
    for name, value in list(vars(config).items()):
        if isinstance(value, list) and len(value) == num_teacher_layers and name != "id2label":
            setattr(config, name, [value[i] for i in layers])

    prefix = _layer_stack_prefix(teacher, num_teacher_layers)
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.(.*)")
    teacher_state = teacher.state_dict()
    student_state = {}
    for student_index, teacher_index in enumerate(layers):
        for name, tensor in teacher_state.items():
            match = pattern.fullmatch(name)
            if match and int(match.group(1)) == teacher_index:
                student_state[f"{prefix}{student_index}.{match.group(2)}"] = tensor
    for name, tensor in teacher_state.items():
        if not pattern.fullmatch(name):
            student_state[name] = tensor

    # Recorded in the student's config.json (and read by the model card): how the student was made.
    config.student_from_teacher = {"teacher": getattr(teacher.config, "_name_or_path", None) or None,
                                   "teacher_num_layers": num_teacher_layers, "teacher_layers": layers}
    student = type(teacher)(config)
    student.to(device=next(teacher.parameters()).device, dtype=next(teacher.parameters()).dtype)
    missing, unexpected = student.load_state_dict(student_state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
        raise ValueError(
            f"could not map the teacher's weights onto the student (missing {missing}, unexpected {unexpected})."
        )
    return student
