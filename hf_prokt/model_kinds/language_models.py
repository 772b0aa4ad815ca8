"""Generative language models: causal LMs (`AutoModelForCausalLM`: GPT-2, Llama, Qwen, Mistral...) and seq2seq LMs
(`AutoModelForSeq2SeqLM`: T5, BART...).

Their per-position terms are read as the models' own losses read them:

- a **causal LM**'s logits at position t predict the token at t+1: the terms compare ``logits[:, :-1]`` with
  ``labels[:, 1:]``, and only positions whose (shifted) label is not -100 count, so a prompt labelled -100 gives
  completion-only training;
- a **seq2seq LM**'s logits are one per decoder position, aligned with ``labels`` as they are; both models get the
  same ``decoder_input_ids``, built from the labels once per batch (`complete_batch`) as the student itself would
  build them.

Both average their terms per predicted token, and under gradient accumulation over the tokens of the whole window
(`averages_over_window_tokens`), as the `Trainer` averages an LM's own loss (``num_items_in_batch``).

A model is of these kinds when its class (through a PEFT wrapper) is one that transformers' ``AutoModelForCausalLM``
or ``AutoModelForSeq2SeqLM`` builds.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
)

from ..losses.logits import IGNORE_INDEX
from .base import ModelKind, base_model, register_model_kind


class LanguageModel(ModelKind):
    """A generative LM, recognised by its class name among those of one ``AutoModelFor*`` mapping."""

    averages_over_window_tokens = True
    is_language_model = True

    def __init__(self, name: str, auto_class: str, class_names, predicts: str):
        super().__init__(predicts=predicts, card_task="text-generation")
        self.name, self.auto_class = name, auto_class
        self.class_names = frozenset(class_names)

    def matches(self, model: nn.Module) -> bool:
        return type(base_model(model)).__name__ in self.class_names

    def predicted_positions(self, batch: dict) -> torch.Tensor | None:
        """``[B, L']`` bool: the positions whose prediction a term counts, aligned with `predictions` (the label is
        not -100; without labels, the predicted token is a real one); None when the batch says neither."""
        labels = self.labels(batch)
        if labels is not None:
            return labels != IGNORE_INDEX
        mask = self.position_mask_source(batch)
        return None if mask is None else mask.bool()


class CausalLanguageModel(LanguageModel):
    """The logits at t against the token at t+1: ``logits[:, :-1]`` with ``labels[:, 1:]``."""

    supports_chunked_loss = True

    def prediction_states(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, L-1, H]``: the hidden states whose logits predict the tokens 1..L-1."""
        return hidden[:, :-1]

    def predictions(self, outputs) -> torch.Tensor:
        """``[B, L-1, V]``: the predictions of the tokens 1..L-1 (a view of the model's logits)."""
        return outputs.logits[:, :-1]

    def labels(self, batch: dict) -> torch.Tensor | None:
        """``[B, L-1]``: the tokens the predictions target (-100 where no term applies)."""
        labels = batch.get("labels")
        return None if labels is None else labels[:, 1:]

    def position_mask_source(self, batch: dict) -> torch.Tensor | None:
        """``[B, L-1]``: without labels, a prediction counts when the token it predicts is real."""
        mask = batch.get("attention_mask")
        return None if mask is None else mask[:, 1:]


class Seq2SeqLanguageModel(LanguageModel):
    """One prediction per decoder position, aligned with the labels; the decoder inputs are shared."""

    def position_mask_source(self, batch: dict) -> torch.Tensor | None:
        return batch.get("decoder_attention_mask")

    def complete_batch(self, batch: dict, student: nn.Module) -> dict:
        """``batch`` with ``decoder_input_ids`` (built from ``labels`` by the student, right-shifted from its
        ``decoder_start_token_id``) when it has labels and no decoder inputs yet, so that the teacher and the
        student read the same decoder inputs."""
        labels = batch.get("labels")
        if labels is None or "decoder_input_ids" in batch:
            return batch
        model = base_model(student)
        if not hasattr(model, "prepare_decoder_input_ids_from_labels"):
            raise ValueError(
                f"the training batches have labels but no decoder_input_ids, and {type(model).__name__} cannot "
                "build them from the labels. Add them in the collator: "
                "DataCollatorForSeq2Seq(tokenizer, model=student)."
            )
        batch["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=labels)
        return batch


CAUSAL_LM = register_model_kind(CausalLanguageModel(
    "causal language model", "AutoModelForCausalLM", MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values(),
    "one next-token prediction per position"))
SEQ2SEQ_LM = register_model_kind(Seq2SeqLanguageModel(
    "sequence-to-sequence language model", "AutoModelForSeq2SeqLM",
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES.values(), "one prediction per decoder position"))
