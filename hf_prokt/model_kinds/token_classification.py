"""One prediction per position: token classifiers (NER taggers), audio frame classifiers, and masked-LM heads
(one distribution over the vocabulary per token: with `DataCollatorForLanguageModeling`'s labels, -100 on every
unmasked token, the terms are taken on the masked positions).

Logits ``[B, L, C]`` against labels ``[B, L]``, position ``t`` against label ``t``, as the model returns them.
Every term averages over the positions whose label is not -100 (padding, non-first sub-tokens), or, for a batch
without labels (KD on unlabelled text), over the real positions of the ``attention_mask``.
"""

from __future__ import annotations

from .base import ModelKind, register_model_kind


class PositionClassification(ModelKind):
    """A classifier with one prediction per position of its input; one instance per input modality."""


TOKEN_CLASSIFICATION = register_model_kind(
    PositionClassification("ForTokenClassification", "one prediction per token", "token-classification"))
AUDIO_FRAME_CLASSIFICATION = register_model_kind(
    PositionClassification("ForAudioFrameClassification", "one prediction per frame", None))
MASKED_LM = register_model_kind(
    PositionClassification("ForMaskedLM", "one vocabulary prediction per token", "fill-mask",
                           name="masked language model"))
