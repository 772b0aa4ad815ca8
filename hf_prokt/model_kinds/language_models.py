"""Generative language models: causal LMs (`AutoModelForCausalLM`: GPT-2, Llama, Qwen, Mistral...) and seq2seq LMs
(`AutoModelForSeq2SeqLM`: T5, BART...).

Their per-position terms differ from token classification: a causal LM's logits at position t predict the token
at t+1, and a seq2seq LM's decoder inputs are built from the labels. Distilling them (`kd`, `prokt`) is not
supported yet: these kinds are recognised so that such a pair is refused before any step, instead of being read
as a token classifier (which would train the student to predict the token it is given). ``strategy="finetune"``
trains them with the model's own loss, as the `Trainer` does.

A model is of these kinds when its class (through a PEFT wrapper) is one that transformers' ``AutoModelForCausalLM``
or ``AutoModelForSeq2SeqLM`` builds.
"""

from __future__ import annotations

from torch import nn
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
)

from .base import ModelKind, base_model, register_model_kind


class LanguageModel(ModelKind):
    """A generative LM, recognised by its class name among those of one ``AutoModelFor*`` mapping."""

    distillable = False

    def __init__(self, name: str, auto_class: str, class_names, predicts: str):
        super().__init__(predicts=predicts, card_task="text-generation")
        self.name, self.auto_class = name, auto_class
        self.class_names = frozenset(class_names)

    def matches(self, model: nn.Module) -> bool:
        return type(base_model(model)).__name__ in self.class_names


CAUSAL_LM = register_model_kind(LanguageModel(
    "causal language model", "AutoModelForCausalLM", MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values(),
    "one next-token prediction per position"))
SEQ2SEQ_LM = register_model_kind(LanguageModel(
    "sequence-to-sequence language model", "AutoModelForSeq2SeqLM",
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES.values(), "one prediction per decoder position"))
