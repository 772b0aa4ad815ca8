#!/usr/bin/env python
"""Distil a teacher into a student for named-entity recognition (or any token classification) with ProKT,
KD or plain fine-tuning, on CoNLL-2003 or your own CoNLL / JSON(L) files.

    python examples/token_classification/run_ner.py --dataset_name conll2003 \\
        --teacher_model_name_or_path google-bert/bert-base-cased --student_num_layers 6 \\
        --strategy prokt --do_train --do_eval --output_dir bert6-conll

    python examples/token_classification/run_ner.py examples/token_classification/configs/prokt.json
    python examples/token_classification/run_ner.py examples/token_classification/configs/prokt.json \\
        --train_file train.txt --validation_file dev.txt --output_dir runs/my-ner

Arguments are those of three dataclasses: `ModelArguments` and `DataTrainingArguments` below, and
`hf_prokt.ProKTTrainingArguments` (every `TrainingArguments` field plus the distillation ones).
Outputs follow the `transformers` token-classification example: `train_results.json`, `eval_results.json`,
`predict_results.json`, `all_results.json`, the student in `output_dir` with its model card, and with
`--do_predict` `predictions.txt` in CoNLL format (one `token predicted_tag` line per word, a blank line
between sentences).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from functools import partial

import datasets
import numpy as np
import transformers
from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    HfArgumentParser,
    set_seed,
)

from hf_prokt import ProKTTrainer, ProKTTrainingArguments
from hf_prokt.metrics import compute_ner_metrics
from hf_prokt.scripting.arguments import (
    CompressionArguments,
    HubLoadingArguments,
    RunOutputArguments,
    TeacherStudentArguments,
    build_teacher_and_student,
    loads_teacher,
    measure_text_compression,
    parse_config_and_flags,
)
from hf_prokt.scripting.data_files import ENCODING
from hf_prokt.scripting.final_evaluation import final_evaluation
from hf_prokt.scripting.model_checks import check_architectures, check_max_seq_length, checkpoint_configs
from hf_prokt.scripting.run_folder import replace_previous_run, start_of_run
from hf_prokt.scripting.shutdown import run_script
from hf_prokt.strategies import strategy_class

logger = logging.getLogger(__name__)

JSON_EXTENSIONS = (".json", ".jsonl")
# Byte-level BPE tokenizers read words given one by one only with a leading space added.
PREFIX_SPACE_MODELS = {"bloom", "gpt2", "roberta", "deberta", "longformer", "bart", "mvp", "led", "xlm-roberta"}


@dataclass
class ModelArguments(CompressionArguments, HubLoadingArguments, TeacherStudentArguments):
    """The teacher and student checkpoints (`TeacherStudentArguments`), how they are loaded
    (`HubLoadingArguments`) and the compression measurement (`CompressionArguments`): see
    `hf_prokt.scripting.arguments`. The tokenizer must be a fast one: aligning tags with sub-tokens needs its
    word ids."""


@dataclass
class DataTrainingArguments(RunOutputArguments):
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A dataset of the Hub (e.g. conll2003), loaded with `datasets`; or give files."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration."})
    train_file: str | None = field(
        default=None,
        metadata={"help": "Training data: CoNLL columns (one token per line, its tag in the last column, a blank "
                          "line between sentences, -DOCSTART- lines skipped) or .json/.jsonl with tokens/ner_tags."},
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, same formats."})
    test_file: str | None = field(
        default=None,
        metadata={"help": "Test data for --do_predict, same formats; tags are optional (CoNLL: one column)."},
    )
    text_column_name: str = field(default="tokens", metadata={"help": "Column of the words (JSON and Hub data)."})
    label_column_name: str = field(default="ner_tags", metadata={"help": "Column of the tags (JSON and Hub data)."})
    max_seq_length: int = field(
        default=128,
        metadata={"help": "Sub-tokens per sentence after tokenization; longer sentences are truncated (their last "
                          "words are not trained on and are predicted 'O'). At most the models' positions and the "
                          "tokenizer's model_max_length."},
    )
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every input to max_seq_length (default: dynamic padding per batch)."}
    )
    label_all_tokens: bool = field(
        default=False,
        metadata={"help": "Give every sub-token of a word the word's tag (B- becomes I- after the first) and train "
                          "and score on all of them; by default only a word's first sub-token carries its tag."},
    )
    return_entity_level_metrics: bool = field(
        default=False, metadata={"help": "Also report precision, recall and F1 per entity type."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training sentences."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation sentences."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep the first N test sentences."})

    def __post_init__(self):
        if self.dataset_name is None and not (self.train_file or self.validation_file or self.test_file):
            raise ValueError("Give --dataset_name, or --train_file / --validation_file / --test_file.")


# ------------------------------------------------------------------------------------------------ data


def read_conll(path: str) -> tuple[dict[str, list], list[int]]:
    """A CoNLL column file as ``{"tokens": [[...], ...], "ner_tags": [[...], ...]}`` (no ``ner_tags`` when
    every line holds the token alone), and the line number where each sentence starts."""
    sentences, tags, first_lines = [], [], []
    words, word_tags, first_line, columns_seen = [], [], None, set()

    def close():
        nonlocal words, word_tags
        if words:
            sentences.append(words)
            tags.append(word_tags)
            first_lines.append(first_line)
        words, word_tags = [], []

    with open(path, encoding=ENCODING) as f:  # a byte-order mark is no part of the first word
        for number, line in enumerate(f, start=1):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                close()
                continue
            if not words:
                first_line = number
            columns_seen.add(len(parts) > 1)
            if len(columns_seen) > 1:
                raise ValueError(f"{path}, line {number}: some lines have a tag column and others not; every "
                                 "token line needs its tag (in the last column), or none does (unlabelled text).")
            words.append(parts[0])
            word_tags.append(parts[-1] if len(parts) > 1 else None)
    close()
    if not sentences:
        raise ValueError(f"{path} holds no sentence: expected one token per line, a blank line between sentences.")
    data = {"tokens": sentences}
    if True in columns_seen:
        data["ner_tags"] = tags
    return data, first_lines


def read_file(path: str, data_args: DataTrainingArguments, cache_dir: str | None) -> tuple[datasets.Dataset, list]:
    """One local file as a Dataset with the text and (if any) label columns, and where each sentence starts
    (line numbers for CoNLL files, None for JSON)."""
    if not os.path.isfile(path):
        raise ValueError(f"no such data file: {path}")
    if os.path.splitext(path)[1].lower() in JSON_EXTENSIONS:
        dataset = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache_dir)
        if data_args.text_column_name not in dataset.column_names:
            raise ValueError(f"{path} has no {data_args.text_column_name!r} column (columns: {dataset.column_names}); "
                             "set --text_column_name.")
        return dataset, [None] * len(dataset)
    data, first_lines = read_conll(path)
    if data_args.text_column_name != "tokens" or data_args.label_column_name != "ner_tags":
        data = {data_args.text_column_name if k == "tokens" else data_args.label_column_name: v
                for k, v in data.items()}
    return datasets.Dataset.from_dict(data), first_lines


def load_raw_data(data_args: DataTrainingArguments, model_args: ModelArguments) -> tuple[datasets.DatasetDict, dict]:
    """``(splits, origins)``: the data, and per split ``(file, sentence start lines)`` for error messages."""
    if data_args.dataset_name:
        raw = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name,
                                    cache_dir=model_args.cache_dir, token=model_args.token)
        return raw, {split: (f"{data_args.dataset_name}[{split}]", [None] * len(raw[split])) for split in raw}
    raw, origins = {}, {}
    for split, path in (("train", data_args.train_file), ("validation", data_args.validation_file),
                        ("test", data_args.test_file)):
        if path:
            raw[split], lines = read_file(path, data_args, model_args.cache_dir)
            origins[split] = (path, lines)
    return datasets.DatasetDict(raw), origins


def tag_names(raw: datasets.DatasetDict, split: str, column: str) -> list[str]:
    """The tag of every row's every word, as strings: ``ClassLabel`` ids become their names."""
    feature = raw[split].features[column]
    inner = getattr(feature, "feature", None)
    class_label = inner if isinstance(inner, datasets.ClassLabel) else None
    return [None if row is None else [class_label.names[t] if class_label else str(t) for t in row]
            for row in raw[split][column]]  # None: a JSON null, refused by check_tags


def label_list(raw: datasets.DatasetDict, data_args: DataTrainingArguments) -> list[str]:
    """The tag set: the names of a ``ClassLabel`` column (Hub datasets), else the sorted tags of the training
    data (of the validation data when there is none)."""
    split = "train" if "train" in raw else "validation"
    if split not in raw:
        raise ValueError("the tag set comes from the training or validation data: give --train_file or "
                         "--validation_file (or a --dataset_name with such a split).")
    column = data_args.label_column_name
    if column not in raw[split].column_names:
        raise ValueError(f"the {split} data has no tag column {column!r} (columns: {raw[split].column_names}); "
                         "set --label_column_name, or give a CoNLL file with the tag in the last column.")
    inner = getattr(raw[split].features[column], "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    return sorted({tag for row in tag_names(raw, split, column) if row is not None for tag in row})


def check_tags(raw: datasets.DatasetDict, origins: dict, data_args: DataTrainingArguments,
               labels: list[str]) -> None:
    """Refuse, before anything is trained or written, data whose rows are malformed (a sentence without words,
    an empty word, a labelled file's sentence without tags) or whose tags the training data does not have (a
    model cannot learn or predict a tag it has no output for)."""
    known = set(labels)
    text, column = data_args.text_column_name, data_args.label_column_name
    for split, dataset in raw.items():
        path, first_lines = origins[split]
        has_tags = column in dataset.column_names
        if split != "test" and not has_tags:
            raise ValueError(f"{path} has no tags (column {column!r}): {split} data needs them.")
        rows = tag_names(raw, split, column) if has_tags else [None] * len(dataset)
        for index, (words, tags) in enumerate(zip(dataset[text], rows)):
            where = (f"{path}, line {first_lines[index]}" if first_lines[index] is not None
                     else f"{path}, sentence {index + 1}")
            if not words:  # a JSON null or []
                raise ValueError(f"{where}: a sentence without words ({text} is {words!r}). Every sentence needs "
                                 "its words: fill them in, or remove the sentence.")
            empty = [position for position, word in enumerate(words) if not isinstance(word, str) or not word.strip()]
            if empty:
                raise ValueError(f"{where}: word {empty[0] + 1} of the sentence is {words[empty[0]]!r}, not a word. "
                                 "Every word needs its text: fill it in, or remove it (and its tag).")
            if tags is None and has_tags:
                raise ValueError(f"{where}: no tags ({column} is null), but the file's other sentences have "
                                 "them: give every sentence its tags.")
            if tags is None:
                continue
            if len(words) != len(tags):
                raise ValueError(f"{where}: {len(words)} words but {len(tags)} tags; every word needs one tag.")
            for position, tag in enumerate(tags):
                if tag not in known:
                    if first_lines[index] is not None:
                        where = f"{path}, line {first_lines[index] + position}"
                    raise ValueError(
                        f"{where}: tag {tag!r} (word {words[position]!r}) is not in the training data's tag set "
                        f"{labels}. The student has no output for it: fix the file, or train on data that "
                        "has this tag."
                    )


# ----------------------------------------------------------------------------------------------- models


def align_with_model_labels(labels: list[str], name_or_path: str, model_args: ModelArguments) -> list[str]:
    """A fine-tuned checkpoint that names its tags fixes their order; the data's tags must be the same set."""
    config = AutoConfig.from_pretrained(name_or_path, cache_dir=model_args.cache_dir, token=model_args.token,
                                        trust_remote_code=model_args.trust_remote_code)
    names = [str(config.id2label[i]) for i in range(len(config.id2label))] if config.id2label else []
    if not names or all(name.startswith("LABEL_") for name in names) or model_args.ignore_mismatched_sizes:
        return labels
    if sorted(names) != sorted(labels):
        raise ValueError(
            f"{name_or_path} tags {names}, but the data's tags are {labels}. Use a checkpoint fine-tuned on these "
            "tags, a pretrained (not fine-tuned) one, or --ignore_mismatched_sizes to give it a new head."
        )
    return names


def load_model(name_or_path: str, model_args: ModelArguments, labels: list[str], attn_implementation=None):
    id2label = dict(enumerate(labels))
    config = AutoConfig.from_pretrained(
        name_or_path, num_labels=len(labels), id2label=id2label, label2id={n: i for i, n in id2label.items()},
        cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token,
        trust_remote_code=model_args.trust_remote_code,
    )
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return AutoModelForTokenClassification.from_pretrained(
        name_or_path, config=config, cache_dir=model_args.cache_dir, revision=model_args.model_revision,
        token=model_args.token, trust_remote_code=model_args.trust_remote_code,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **kwargs,
    )


def build_models(model_args: ModelArguments, training_args: ProKTTrainingArguments, labels: list[str]):
    """``(teacher or None, student)``, sharing one tag set; the teacher also for finetune with
    --measure_compression."""
    attn = "eager" if training_args.attention_distill_weight > 0 else None
    load = partial(load_model, model_args=model_args, labels=labels, attn_implementation=attn)
    return build_teacher_and_student(model_args, training_args.strategy, load,
                                     also_teacher=model_args.measure_compression)  # finetune: measured against


def load_tokenizer(model_args: ModelArguments):
    source = (model_args.tokenizer_name or model_args.teacher_model_name_or_path or model_args.student_init_from
              or model_args.model_name_or_path)
    try:
        model_type = AutoConfig.from_pretrained(source, cache_dir=model_args.cache_dir, token=model_args.token,
                                                trust_remote_code=model_args.trust_remote_code).model_type
    except (OSError, ValueError):  # a tokenizer-only folder or repository
        model_type = None
    kwargs = {"add_prefix_space": True} if model_type in PREFIX_SPACE_MODELS else {}
    tokenizer = AutoTokenizer.from_pretrained(source, cache_dir=model_args.cache_dir, token=model_args.token,
                                              trust_remote_code=model_args.trust_remote_code, **kwargs)
    if not tokenizer.is_fast:
        raise ValueError(f"the tokenizer of {source} is not a fast tokenizer: aligning tags with sub-tokens needs "
                         "its word ids. Pass --tokenizer_name with a fast (tokenizers-backed) one.")
    return tokenizer


# --------------------------------------------------------------------------------------------------- main


def parse_arguments(argv: list[str]):
    """Command-line flags, or a JSON config optionally followed by flags that override it
    (``run_ner.py configs/prokt.json --train_file train.txt --output_dir runs/x``)."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, ProKTTrainingArguments))
    return parse_config_and_flags(parser, argv)


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if model_args.measure_compression and not model_args.teacher_model_name_or_path:
        raise ValueError("--measure_compression compares the student with its teacher: give "
                         "--teacher_model_name_or_path.")
    resume_from = start_of_run(training_args, data_args.overwrite_output_dir)

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO
                        if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    raw, origins = load_raw_data(data_args, model_args)
    for flag, split in (("--do_train", "train"), ("--do_eval", "validation"), ("--do_predict", "test")):
        if getattr(training_args, flag[2:]) and split not in raw:
            raise ValueError(f"{flag} needs {split} data: give --{split}_file (or a --dataset_name with a "
                             f"{split!r} split).")
    labels = label_list(raw, data_args)
    check_tags(raw, origins, data_args, labels)
    configs = checkpoint_configs(model_args, training_args.strategy, also_teacher=model_args.measure_compression)
    check_architectures(configs, "token-classification", "run_ner.py")  # before any weight is loaded
    check_max_seq_length(data_args.max_seq_length, configs)
    label_source = (model_args.teacher_model_name_or_path if loads_teacher(model_args, training_args.strategy)
                    else model_args.student_init_from or model_args.model_name_or_path)
    if label_source:  # the checkpoint whose head fixes the tags' order
        labels = align_with_model_labels(labels, label_source, model_args)
    label_to_id = {name: i for i, name in enumerate(labels)}
    # With --label_all_tokens, a word's later sub-tokens continue its entity: B-X becomes I-X (when it exists).
    continuation = {i: label_to_id.get("I-" + name[2:], i) if name.startswith("B-") else i
                    for i, name in enumerate(labels)}

    teacher, student = build_models(model_args, training_args, labels)
    tokenizer = load_tokenizer(model_args)
    check_max_seq_length(data_args.max_seq_length, tokenizer=tokenizer)
    if len(tokenizer) > student.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the student's vocabulary only "
                         f"{student.config.vocab_size}: use the models' own tokenizer (--tokenizer_name).")

    text_column, tag_column = data_args.text_column_name, data_args.label_column_name
    padding = "max_length" if data_args.pad_to_max_length else False

    def tokenize(words: list[list[str]]):
        return tokenizer(words, padding=padding, truncation=True, max_length=data_args.max_seq_length,
                         is_split_into_words=True)

    def preprocess(batch, split):
        encoded = tokenize(batch[text_column])
        if tag_column not in batch:
            return encoded
        rows = tag_names_of_batch(batch[tag_column], raw[split].features[tag_column])
        encoded["labels"] = [
            align_labels(encoded.word_ids(batch_index=index), [label_to_id[tag] for tag in tags], continuation,
                         data_args.label_all_tokens)
            for index, tags in enumerate(rows)
        ]
        return encoded

    def select(split, limit):
        dataset = raw[split]
        return dataset.select(range(min(limit, len(dataset)))) if limit is not None else dataset

    wanted = {"train": (training_args.do_train, data_args.max_train_samples),
              "validation": (training_args.do_eval, data_args.max_eval_samples),
              "test": (training_args.do_predict, data_args.max_predict_samples)}
    words, processed = {}, {}
    with training_args.main_process_first(desc="dataset map pre-processing"):
        for split, (needed, limit) in wanted.items():
            if needed:
                dataset = select(split, limit)
                words[split] = dataset[text_column]
                processed[split] = dataset.map(preprocess, batched=True, fn_kwargs={"split": split},
                                               remove_columns=dataset.column_names, desc=f"Tokenizing {split}")

    data_collator = DataCollatorForTokenClassification(
        tokenizer, pad_to_multiple_of=8 if training_args.fp16 or training_args.bf16 else None)
    # finetune: measured, not trained
    training_teacher = teacher if strategy_class(training_args.strategy).needs_teacher else None
    trainer = ProKTTrainer(
        model=student, teacher_model=training_teacher, args=training_args, train_dataset=processed.get("train"),
        eval_dataset=processed.get("validation"), processing_class=tokenizer,
        compute_metrics=compute_ner_metrics(labels, entity_level=data_args.return_entity_level_metrics),
        data_collator=data_collator,
    )

    previous_run = replace_previous_run(trainer, data_args.overwrite_output_dir, logger.info)  # every check passed

    results = {}
    if training_args.do_train:
        with previous_run.kept_until_saved():  # the earlier run is deleted once the student is saved
            train_result = trainer.train(resume_from_checkpoint=resume_from)
            metrics = {**train_result.metrics, "train_samples": len(processed["train"])}
            if model_args.measure_compression:  # before save_model, so that the card carries the figures
                results.update(measure_text_compression(trainer, teacher, processed["train"], data_collator,
                                                        model_args))
            trainer.save_model()
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    if training_args.do_eval:  # the evaluation of the last training step, when there was one, is reused
        metrics = {**final_evaluation(trainer, trained=training_args.do_train),
                   "eval_samples": len(processed["validation"])}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics, combined=True)
        results.update(metrics)
    if model_args.measure_compression and not training_args.do_train:
        results.update(measure_text_compression(trainer, teacher, next(iter(processed.values())), data_collator,
                                                model_args))
    dataset_label = data_args.dataset_name or "custom"
    if data_args.plot and trainer.is_world_process_zero():
        from hf_prokt.plot import plot_training

        plot_training(trainer.state.log_history, os.path.join(training_args.output_dir, "training_curves.png"),
                      metric="f1", title=f"{training_args.strategy} on {dataset_label}")
    if training_args.do_predict:
        metrics = write_predictions(trainer, processed["test"], words["test"], tokenize, labels)
        results.update(metrics)

    source = model_args.model_name_or_path or model_args.teacher_model_name_or_path
    card = {"tasks": "token-classification", "dataset": dataset_label}
    if source and not os.path.isdir(source):  # a Hub id; a local folder is no base model the Hub can link
        card["finetuned_from"] = source
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    elif training_args.do_train:
        trainer.create_model_card(**card)  # after evaluation: the card carries the final metrics
    return results


def align_labels(word_ids: list[int | None], word_labels: list[int], continuation: dict[int, int],
                 label_all_tokens: bool) -> list[int]:
    """One label per sub-token: the word's label on its first sub-token; on the others -100 (no loss, not
    scored), or with ``label_all_tokens`` the word's label passed through ``continuation`` (B-X to I-X);
    -100 on special tokens and padding (``word_ids`` None)."""
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(-100)
        elif word != previous:
            labels.append(word_labels[word])
        else:
            labels.append(continuation[word_labels[word]] if label_all_tokens else -100)
        previous = word
    return labels


def tag_names_of_batch(rows: list[list], feature) -> list[list[str]]:
    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return [[inner.names[t] for t in row] for row in rows]
    return [[str(t) for t in row] for row in rows]


def write_predictions(trainer, dataset, words: list[list[str]], tokenize, labels: list[str]) -> dict:
    """Predict the test data and write ``predictions.txt`` in CoNLL format: ``word predicted_tag`` per line (the
    tag of the word's first sub-token; 'O' for words cut by --max_seq_length), a blank line between sentences.
    With tags in the test data, its metrics go to ``predict_results.json``."""
    output = trainer.predict(dataset, metric_key_prefix="predict")
    logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
    predicted_ids = np.argmax(logits, axis=-1)
    truncated = 0
    lines = []
    for index, sentence in enumerate(words):
        word_ids = tokenize([sentence]).word_ids(batch_index=0)
        first_positions = {}
        for position, word in enumerate(word_ids):
            if word is not None and word not in first_positions:
                first_positions[word] = position
        for word_index, word in enumerate(sentence):
            position = first_positions.get(word_index)
            truncated += position is None
            lines.append(f"{word} {'O' if position is None else labels[predicted_ids[index, position]]}")
        lines.append("")
    if truncated:
        logger.warning(f"{truncated} test words lie beyond --max_seq_length and were predicted 'O'.")
    metrics = {**output.metrics, "predict_samples": len(dataset)}
    if trainer.is_world_process_zero():
        os.makedirs(trainer.args.output_dir, exist_ok=True)
        with open(os.path.join(trainer.args.output_dir, "predictions.txt"), "w", encoding="utf-8") as writer:
            writer.write("\n".join(lines))
    trainer.log_metrics("predict", metrics)
    trainer.save_metrics("predict", metrics, combined=True)
    return metrics


if __name__ == "__main__":
    # under torchrun: every process done, then an exit without the teardown race (docs/distributed.md); on
    # SIGTERM: exit 143 with one line naming the checkpoint (docs/robustness.md)
    run_script(main)
