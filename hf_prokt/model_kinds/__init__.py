"""The kinds of models the trainer distils, each in its own file; `model_kind_of` finds a model's kind.

Adding a kind: a file here with a `ModelKind` subclass (or instance) registered with `register_model_kind`, and
one import line below (docs/index.md, "Adding a model kind").
"""

from . import classification, headless, language_models, token_classification  # noqa: F401  (registers them)
from .base import (
    OUTPUT_SHAPE,
    TEACHER_LOGITS,
    TEACHER_TOPK_COLUMNS,
    TEACHER_TOPK_INDICES,
    TEACHER_TOPK_LOGPROBS,
    TEACHER_TOPK_MASK,
    TEACHER_TOPK_POSITIONS,
    TEACHER_TOPK_TEMPERATURE,
    TEACHER_TOPK_VOCAB_SIZE,
    ForwardInputs,
    ModelKind,
    base_model,
    model_config,
    model_kind_of,
    register_model_kind,
    registered_kinds,
)

__all__ = ["OUTPUT_SHAPE", "TEACHER_LOGITS", "TEACHER_TOPK_COLUMNS", "TEACHER_TOPK_INDICES", "TEACHER_TOPK_LOGPROBS",
           "TEACHER_TOPK_MASK", "TEACHER_TOPK_POSITIONS", "TEACHER_TOPK_TEMPERATURE", "TEACHER_TOPK_VOCAB_SIZE",
           "ForwardInputs", "ModelKind", "base_model", "model_config", "model_kind_of", "register_model_kind",
           "registered_kinds"]
