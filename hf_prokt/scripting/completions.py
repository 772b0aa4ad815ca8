"""Prompt/completion pairs for a causal LM trained on the completion only.

Each pair becomes one row: the prompt's tokens (with the tokenizer's special tokens), the completion's, and EOS,
cut to ``max_length`` tokens. Its labels are -100 on the prompt, so that the next-token terms count the
completion and its EOS only; padding is labelled -100 by `DataCollatorForSeq2Seq`.
"""

from __future__ import annotations

IGNORE_INDEX = -100


def check_pair_columns(columns: list[str], prompt_column: str, completion_column: str, source: str) -> None:
    """Refuse data without both columns, naming ``source`` (a file or split), the columns it has and the flags."""
    missing = [name for name in (prompt_column, completion_column) if name not in columns]
    if missing:
        raise ValueError(f"{source} has no column {missing[0]!r} (columns: {columns}): prompt/completion data needs "
                         f"both {prompt_column!r} and {completion_column!r}; set --prompt_column / "
                         "--completion_column to the names it has.")


def tokenize_pairs(dataset, tokenizer, prompt_column: str, completion_column: str, max_length: int, split: str,
                   num_proc: int | None = None):
    """``dataset`` as rows of ``input_ids``, ``attention_mask`` and ``labels`` (lists of up to ``max_length``).

    The completion is tokenized as written, without special tokens, and directly follows the prompt (start it
    with a space when the tokenizer needs one between words). Rows whose prompt fills ``max_length`` leave no
    completion token to learn and are dropped."""
    eos = tokenizer.eos_token_id

    def tokenize(batch):
        rows = {"input_ids": [], "attention_mask": [], "labels": []}
        prompts = tokenizer([str(text) for text in batch[prompt_column]], verbose=False)["input_ids"]
        completions = tokenizer([str(text) for text in batch[completion_column]], add_special_tokens=False,
                                verbose=False)["input_ids"]
        for prompt, completion in zip(prompts, completions):
            ids = (prompt + completion + [eos])[:max_length]
            labels = ([IGNORE_INDEX] * len(prompt) + completion + [eos])[:max_length]
            if all(label == IGNORE_INDEX for label in labels[1:]):  # nothing after the prompt to predict
                continue
            rows["input_ids"].append(ids)
            rows["attention_mask"].append([1] * len(ids))
            rows["labels"].append(labels)
        return rows

    return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, num_proc=num_proc,
                       desc=f"Tokenizing {split} pairs")
