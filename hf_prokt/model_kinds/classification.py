"""One prediction per example: sequence, image and audio classifiers, and regressors.

Logits ``[B, C]`` against labels ``[B]`` (class ids), read as the model returns them. A head with one output
(``num_labels=1``, ``[B, 1]``) is a regressor: the losses then compare outputs with an MSE instead of a KL, and
labels are float targets (`hf_prokt.losses.logits`).
"""

from __future__ import annotations

from .base import ModelKind, register_model_kind


class ExampleClassification(ModelKind):
    """A classifier (or regressor) with one prediction per example; one instance per input modality."""


SEQUENCE_CLASSIFICATION = register_model_kind(
    ExampleClassification("ForSequenceClassification", "one prediction per sequence", "text-classification"))
IMAGE_CLASSIFICATION = register_model_kind(
    ExampleClassification("ForImageClassification", "one prediction per image", "image-classification"))
AUDIO_CLASSIFICATION = register_model_kind(
    ExampleClassification("ForAudioClassification", "one prediction per clip", "audio-classification"))
