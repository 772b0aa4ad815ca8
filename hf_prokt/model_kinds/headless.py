"""Models without a task head (`AutoModel`: `BertModel`, `RobertaModel`, `ViTModel`...): features, no predictions.

They return hidden states (and attention maps) but no logits, so there is no output term and no task loss: a
student learns from the intermediate terms alone (embedding, hidden-state and attention terms through the learned
projections, `hidden_distill_weight`, `embedding_distill_weight`, `attention_distill_weight`). This is TinyBERT's
general distillation, on unlabelled text with ``strategy="kd"``. ``prokt`` needs a task loss for its teacher and
``finetune`` a loss of the model's own: both are refused for this kind.

A model is of this kind when its class (through a PEFT wrapper) is one that transformers' ``AutoModel`` builds.
"""

from __future__ import annotations

from torch import nn
from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

from .base import ModelKind, base_model, register_model_kind


class Headless(ModelKind):
    """A base model: `predictions` is None."""

    has_predictions = False

    def __init__(self):
        super().__init__(predicts="features, no predictions", card_task="feature-extraction")
        self.name, self.auto_class = "model without a task head", "AutoModel"
        self.class_names = frozenset(name for name in MODEL_MAPPING_NAMES.values() if isinstance(name, str))

    def matches(self, model: nn.Module) -> bool:
        return type(base_model(model)).__name__ in self.class_names

    def predictions(self, outputs) -> None:
        return None


HEADLESS = register_model_kind(Headless())
