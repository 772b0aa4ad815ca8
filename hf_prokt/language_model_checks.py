"""Refuse a generative-LM set-up that cannot train right, before anything is trained or written.

The checks every recipe shares for causal and seq2seq LMs (`hf_prokt.model_kinds.language_models`), each with an
error that names the problem and the fix:

- ``zero_init_classifier`` on an LM: its output layer is a vocabulary projection (tied to the input embeddings in
  GPT-2, T5, ...), not a classification head; zeroing it would zero the embeddings;
- a tokenizer without a pad token (GPT-2's, Llama's): padded batches and the collators need one;
- a seq2seq pair whose decoders start from different tokens or pad with different ones: both models read the
  same ``decoder_input_ids``, built once from the labels.

The kind mismatch (a causal LM with a seq2seq LM) and the vocabulary sizes are `pair_checks`' checks.
"""

from __future__ import annotations

from torch import nn

from .model_kinds import base_model, model_config, model_kind_of

_DECODER_IDS = ("decoder_start_token_id", "pad_token_id")


def check_language_model_setup(args, student: nn.Module | None, teacher: nn.Module | None,
                               trainer_kwargs: dict) -> None:
    """Raise a ``ValueError`` for a generative-LM set-up that cannot train right (nothing for other models).

    Args:
        args: the `ProKTTrainingArguments`.
        student, teacher: the models (either may be None).
        trainer_kwargs: the other keyword arguments given to `ProKTTrainer` (``processing_class``,
            ``data_collator``...), where the tokenizer is found.
    """
    kind = model_kind_of(student if student is not None else teacher)
    if not kind.is_language_model:
        return
    name = type(base_model(student if student is not None else teacher)).__name__
    if args.zero_init_classifier:
        raise ValueError(
            f"zero_init_classifier=True, but the models are {kind.name}s ({name}): their output layer projects onto "
            "the vocabulary (and is often tied to the input embeddings), it is not a classification head, and "
            "zeroing it would erase what the model knows. Leave zero_init_classifier=False for language models."
        )
    for tokenizer in _tokenizers(trainer_kwargs):
        if getattr(tokenizer, "pad_token", None) is None:
            raise ValueError(
                f"the tokenizer ({type(tokenizer).__name__}) has no pad token, which padded batches of a {kind.name} "
                "need (the collators pad with it, and padded positions are masked out of every term). Set one "
                "before building the trainer: tokenizer.pad_token = tokenizer.eos_token."
            )
    if teacher is not None and student is not None and model_kind_of(teacher) is kind:
        student_config, teacher_config = model_config(student), model_config(teacher)
        for field in _DECODER_IDS if kind.auto_class == "AutoModelForSeq2SeqLM" else ():
            student_id, teacher_id = getattr(student_config, field, None), getattr(teacher_config, field, None)
            if student_id != teacher_id:
                raise ValueError(
                    f"the student's {field} is {student_id} but the teacher's is {teacher_id}: both decoders read "
                    "the same decoder_input_ids (built from the labels with the student's ids), so they must agree. "
                    f"Load the student with the teacher's tokenizer and set config.{field}={teacher_id}."
                )


def _tokenizers(trainer_kwargs: dict) -> list:
    """The tokenizers the set-up names: ``processing_class`` (when it is one) and the data collator's."""
    found = []
    for candidate in (trainer_kwargs.get("processing_class"), getattr(trainer_kwargs.get("data_collator"),
                                                                      "tokenizer", None)):
        candidate = getattr(candidate, "tokenizer", candidate)  # a processor holds its tokenizer
        if candidate is not None and hasattr(candidate, "pad_token") and all(candidate is not seen for seen in found):
            found.append(candidate)
    return found
