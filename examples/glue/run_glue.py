#!/usr/bin/env python
"""Distil a teacher into a student on a GLUE task (or your own CSV/TSV/JSON files) with ProKT, KD or
plain fine-tuning.

    python examples/glue/run_glue.py --task_name sst2 \\
        --teacher_model_name_or_path google-bert/bert-base-uncased --student_num_layers 6 \\
        --strategy prokt --do_train --do_eval --output_dir bert6-sst2

    python examples/glue/run_glue.py examples/glue/configs/prokt.json   # the paper's recipe, from a JSON config
    python examples/glue/run_glue.py examples/glue/configs/prokt.json --task_name mrpc --output_dir runs/mrpc

Arguments are those of three dataclasses: `ModelArguments` and `DataTrainingArguments` below, and
`hf_prokt.ProKTTrainingArguments` (every `TrainingArguments` field plus the distillation ones).
Classification or regression (`label_scheme`): a GLUE task decides (STS-B is a regression). Otherwise, with
`--label_type auto` (the default), the training file's labels (the validation file's without one) are a
regression when every one is a number and at least one is written as a decimal (``3.8``, ``1.0``), and a
classification when every one is an integer (``0``/``1``) or every one is text; numbers and text in one column
are refused, naming the file, the line and both kinds of values. ``--label_type classification`` makes every
distinct value a class, ``--label_type regression`` every label a number.

Outputs follow the `transformers` text-classification example: `train_results.json`,
`eval_results.json`, `all_results.json`, the student in `output_dir`, and with `--do_predict`
`predict_results_<task>.txt` in GLUE's submission format (`index<TAB>prediction`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import datasets
import numpy as np
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    HfArgumentParser,
    set_seed,
)

from hf_prokt import (
    ProKTTrainer,
    ProKTTrainingArguments,
    load_or_cache_teacher_logits,
)
from hf_prokt.metrics import GLUE_TASKS, compute_glue_metrics, compute_metrics_for_labels
from hf_prokt.pair_checks import check_distillation_pair
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
from hf_prokt.scripting.data_files import RowLocator, file_format, header_of, load_data_files
from hf_prokt.scripting.final_evaluation import final_evaluation
from hf_prokt.scripting.model_checks import check_architectures, check_max_seq_length, checkpoint_configs
from hf_prokt.scripting.run_folder import replace_previous_run, start_of_run
from hf_prokt.scripting.shutdown import run_script
from hf_prokt.strategies import strategy_class

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments(CompressionArguments, HubLoadingArguments, TeacherStudentArguments):
    """The teacher and student checkpoints (`TeacherStudentArguments`), how they are loaded
    (`HubLoadingArguments`) and the compression measurement (`CompressionArguments`): see
    `hf_prokt.scripting.arguments`."""


@dataclass
class DataTrainingArguments(RunOutputArguments):
    task_name: str | None = field(
        default=None,
        metadata={"help": f"GLUE task: {', '.join(GLUE_TASKS)}. Loaded with `datasets` (Hub when online, the "
                          "local cache offline), or from --train_file/--validation_file with the task's columns."},
    )
    train_file: str | None = field(default=None, metadata={"help": "Training data: .csv, .tsv, .json or .jsonl."})
    validation_file: str | None = field(default=None, metadata={"help": "Validation data, same format."})
    test_file: str | None = field(default=None, metadata={"help": "Test data for --do_predict, same format."})
    text_columns: str | None = field(
        default=None,
        metadata={"help": "Comma-separated text column(s), one or two. Default: the task's, else 'sentence', "
                          "else 'sentence1,sentence2'."},
    )
    label_column: str = field(default="label", metadata={"help": "Label column: integers, names or numbers."})
    label_type: Literal["auto", "classification", "regression"] = field(
        default="auto",
        metadata={"help": "How the labels are read. 'auto': the GLUE task's kind; else a regression when every "
                          "label of the training file is a number and at least one is written as a decimal "
                          "(3.8, 1.0), a classification when all are integers or all are text; numbers and text "
                          "mixed are refused. 'classification': every distinct value is a class. 'regression': "
                          "every label must be a number."},
    )
    max_seq_length: int = field(
        default=128,
        metadata={"help": "Longer inputs are truncated. At most the models' positions (max_position_embeddings, "
                          "less RoBERTa's padding offset) and the tokenizer's model_max_length."},
    )
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every input to max_seq_length (default: dynamic padding per batch)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation examples."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Keep the first N test examples."})
    cache_teacher_logits: str | None = field(
        default=None,
        metadata={"help": "strategy kd: a folder for the teacher's logits on the training set. The first run "
                          "computes them (one teacher pass) and saves them there; later runs with the same teacher, "
                          "training data and preprocessing reuse them and train without running the teacher. A "
                          "cache made from another teacher or other data is refused."},
    )

    def __post_init__(self):
        if self.label_type not in ("auto", "classification", "regression"):
            raise ValueError(f"--label_type {self.label_type!r}: use auto, classification or regression.")
        if self.task_name is not None:
            self.task_name = self.task_name.lower()
            if self.task_name not in GLUE_TASKS:
                raise ValueError(f"--task_name {self.task_name!r} is not a GLUE task; use one of {list(GLUE_TASKS)}.")
            kind = "regression" if GLUE_TASKS[self.task_name].is_regression else "classification"
            if self.label_type not in ("auto", kind):
                raise ValueError(f"--task_name {self.task_name} is a {kind}, --label_type {self.label_type} says "
                                 "otherwise: leave --label_type out with a GLUE task (or --task_name, to read "
                                 "the files as --label_type says).")
        elif self.train_file is None and self.validation_file is None:
            raise ValueError("Give --task_name, or --train_file / --validation_file.")


def local_files(data_args: DataTrainingArguments) -> dict[str, str]:
    return {split: path for split, path in (("train", data_args.train_file), ("validation", data_args.validation_file),
                                            ("test", data_args.test_file)) if path}


def required_columns(data_args: DataTrainingArguments, split: str, path: str) -> list[str]:
    """The columns the header row of a CSV/TSV ``path`` must name: the text column(s) and, except in the test
    file, the label column."""
    if data_args.text_columns:
        names = [name.strip() for name in data_args.text_columns.split(",") if name.strip()]
    elif data_args.task_name:
        names = [name for name in GLUE_TASKS[data_args.task_name].sentence_keys if name]
    elif file_format(path) != "json" and {"sentence1", "sentence2"} <= set(header_of(path)):
        names = ["sentence1", "sentence2"]
    else:
        names = ["sentence"]
    return names + ([data_args.label_column] if split != "test" else [])


def read_local_files(data_args: DataTrainingArguments, cache_dir: str | None) -> datasets.DatasetDict:
    """CSV, TSV (GLUE's own files: tab-separated, quotes literal) or JSON(L) files as a DatasetDict; a file that
    is empty, header-only, without a header row or not UTF-8 is refused in one line
    (`hf_prokt.scripting.data_files`)."""
    files = local_files(data_args)
    required = {split: required_columns(data_args, split, path) for split, path in files.items()}
    return load_data_files(files, required, columns_hint="--text_columns / --label_column", cache_dir=cache_dir)


def load_raw_data(data_args: DataTrainingArguments, model_args: ModelArguments) -> datasets.DatasetDict:
    if data_args.train_file or data_args.validation_file:
        return read_local_files(data_args, model_args.cache_dir)
    raw = datasets.load_dataset("nyu-mll/glue", data_args.task_name, cache_dir=model_args.cache_dir,
                                token=model_args.token)
    if data_args.task_name == "mnli":
        raw["validation"] = raw.pop("validation_matched")
        raw["test"] = raw.pop("test_matched")
    return raw


def text_columns(data_args: DataTrainingArguments, columns: list[str]) -> tuple[str, str | None]:
    if data_args.text_columns:
        names = [name.strip() for name in data_args.text_columns.split(",") if name.strip()]
    elif data_args.task_name:
        names = [name for name in GLUE_TASKS[data_args.task_name].sentence_keys if name]
    elif "sentence" in columns:
        names = ["sentence"]
    elif "sentence1" in columns and "sentence2" in columns:
        names = ["sentence1", "sentence2"]
    else:
        raise ValueError(f"cannot guess the text columns among {columns}: pass --text_columns a or --text_columns a,b.")
    missing = [name for name in names if name not in columns]
    if missing or not 1 <= len(names) <= 2:
        raise ValueError(f"text columns {names} must be one or two of the data's columns {columns}.")
    return names[0], names[1] if len(names) == 2 else None


def row_locator(data_args: DataTrainingArguments, raw: datasets.DatasetDict) -> RowLocator:
    """How to name an example in a message: its file and line (``"dev.tsv, line 4"``), or the split of the Hub
    dataset and the row."""
    files = local_files(data_args)
    sources = {split: files.get(split) or f"the {split} split of nyu-mll/glue ({data_args.task_name})"
               for split in raw}
    return RowLocator(sources, {split: path for split, path in files.items() if split in raw},
                      {split: len(dataset) for split, dataset in raw.items()})


def more_rows(locate: RowLocator, split: str, rows: list[int]) -> str:
    """``"; 2 more row(s) too: line 6, line 9"`` for the rows after the first one reported (at most three)."""
    if not rows:
        return ""
    named = ", ".join(locate.row(split, row) for row in rows[:3])
    return f"; {len(rows)} more row(s) too: {named}{', ...' if len(rows) > 3 else ''}"


def check_texts(data_args: DataTrainingArguments, raw: datasets.DatasetDict, columns: tuple[str, str | None],
                locate: RowLocator) -> None:
    """Refuse, before anything is tokenized, an example without its text: a missing field (an empty field of a
    CSV/TSV file, a JSON null), a value that is not text, and in a local file a text of nothing but spaces."""
    local = local_files(data_args)
    for split, dataset in raw.items():
        for column in columns:
            if column is None or column not in dataset.column_names:
                continue
            bad = [(row, text) for row, text in enumerate(dataset[column]) if not isinstance(text, str)
                   or (split in local and not text.strip())]
            if not bad:
                continue
            (row, text), others = bad[0], more_rows(locate, split, [r for r, _ in bad[1:]])
            what = "is empty" if text is None or isinstance(text, str) else f"is {text!r}, not text"
            raise ValueError(f"{locate(split, row)}: the {column!r} text {what}{others}. Every example needs its "
                             "text: fill it in, or remove the row.")


# ------------------------------------------------------------------------------------------------ labels
#
# The rule that decides between a regression and a classification (`label_scheme`), stated in the module's
# docstring and in examples/glue/README.md: every value of the label column is an integer, a decimal number
# or text (`label_kind`), read from what the file says, not from the type a CSV reader guessed.

_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def label_kind(value) -> str:
    """``"integer"`` (``1``, ``"-2"``), ``"decimal"`` (``3.8``, ``"1.0"``, ``"2e-1"``), ``"text"`` (a name,
    a boolean), ``"missing"`` (None, NaN, an empty or blank string) or ``"other"`` (a list, an object)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    if isinstance(value, bool):
        return "text"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "decimal"
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return "missing"
        if _INTEGER.fullmatch(text):
            return "integer"
        return "decimal" if _NUMBER.fullmatch(text) else "text"
    return "other"


def class_name(value) -> str:
    """The class a label value names: the same for ``1``, ``"1"`` and ``1.0`` (``"1"``), ``"3.8"`` for ``3.8``,
    the text itself (without surrounding spaces) for a name."""
    kind = label_kind(value)
    if kind == "integer":
        return str(int(value.strip()) if isinstance(value, str) else value)
    if kind == "decimal":
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    return str(value).strip()


def shown(value) -> str:
    """A label value as a message shows it: a number as written, text quoted."""
    return str(value).strip() if label_kind(value) in ("integer", "decimal") else repr(value)


def is_number(value) -> bool:
    """A finite integer or decimal number (`label_kind`): a regression target."""
    return label_kind(value) in ("integer", "decimal") and math.isfinite(float(value))


def is_unlabelled(value) -> bool:
    """A test file's row without a label: empty, or -1 as GLUE's test files have it."""
    return label_kind(value) == "missing" or (label_kind(value) == "integer" and int(str(value).strip()) == -1)


@dataclass
class LabelScheme:
    """How the label column is read: a regression (one output, float targets) or the classes, in the data's
    order; ``by_id`` when the values are class ids (a GLUE task: ``0`` is the task's first label name)."""

    is_regression: bool
    names: list[str] | None = None
    by_id: bool = False

    def name_of(self, value) -> str | None:
        """The class ``value`` stands for, or None when it names none of them."""
        if self.is_regression or label_kind(value) in ("missing", "other"):
            return None
        if self.by_id:
            name = class_name(value)
            index = int(name) if _INTEGER.fullmatch(name) else -1
            return self.names[index] if 0 <= index < len(self.names) else None
        name = class_name(value)
        return name if name in self.names else None

    def shown_classes(self) -> list:
        """The classes as a message lists them: the ids for a GLUE task, integers as integers."""
        if self.by_id:
            return list(range(len(self.names)))
        if all(_INTEGER.fullmatch(name) for name in self.names):
            return [int(name) for name in self.names]
        return list(self.names)


def label_column_of(data_args: DataTrainingArguments, raw: datasets.DatasetDict) -> str:
    split = "train" if "train" in raw else "validation"
    if data_args.label_column not in raw[split].column_names:
        raise ValueError(f"no label column {data_args.label_column!r} in {raw[split].column_names}; "
                         "set --label_column.")
    return split


def label_scheme(data_args: DataTrainingArguments, raw: datasets.DatasetDict, locate: RowLocator) -> LabelScheme:
    """Regression or classification, and the classes, from the training file's label column (the validation
    file's when there is no training file); every value of that column is checked, and a column that mixes
    kinds of values is refused naming the file, the line and both kinds.

    - A GLUE task decides: STS-B is a regression, the others are classifications with the task's label names
      (GLUE's files carry their ids; the Hub's dataset its `ClassLabel`).
    - ``--label_type regression``: every label must be a number. ``--label_type classification``: every
      distinct value is a class.
    - ``--label_type auto`` (the default): a regression when every label is a number (`label_kind`) and at
      least one is written as a decimal; a classification when every label is an integer, or every label is
      text. Numbers and text in one column are refused.
    """
    split = label_column_of(data_args, raw)
    column = data_args.label_column
    task = GLUE_TASKS.get(data_args.task_name) if data_args.task_name else None
    if task is not None and task.is_regression:
        return LabelScheme(is_regression=True)
    feature = raw[split].features[column]
    if isinstance(feature, datasets.ClassLabel):
        return LabelScheme(is_regression=False, names=list(feature.names), by_id=True)
    if task is not None:
        return LabelScheme(is_regression=False, names=list(task.label_names), by_id=True)

    values = raw[split][column]
    rows: dict[str, list[int]] = {}
    for row, value in enumerate(values):
        rows.setdefault(label_kind(value), []).append(row)
    if "missing" in rows:
        missing = rows["missing"]
        raise ValueError(f"{locate(split, missing[0])}: no {column!r} label{more_rows(locate, split, missing[1:])}. "
                         "Fill it in or remove the row.")
    if "other" in rows:
        row = rows["other"][0]
        raise ValueError(f"{locate(split, row)}: label {values[row]!r} is a {type(values[row]).__name__}, not a "
                         "number or a name: a label is one value.")
    numbers = sorted(rows.get("integer", []) + rows.get("decimal", []))
    texts = rows.get("text", [])
    if data_args.label_type == "regression" or (data_args.label_type == "auto" and "decimal" in rows and not texts):
        return LabelScheme(is_regression=True)
    if data_args.label_type == "auto" and numbers and texts:
        raise mixed_labels_error(locate, split, values, rows)
    names = sorted({class_name(value) for value in values})
    if all(_INTEGER.fullmatch(name) for name in names):
        names.sort(key=int)
    return LabelScheme(is_regression=False, names=names)


def mixed_labels_error(locate: RowLocator, split: str, values: list, rows: dict[str, list[int]]) -> ValueError:
    """The refusal of a label column with numbers and text: it names the rarer kind's first row (the likely
    mistake), an example of the other kind, and how to say what was meant."""
    numbers = sorted(rows.get("integer", []) + rows.get("decimal", []))
    texts = rows["text"]
    odd, usual = (texts, numbers) if len(texts) <= len(numbers) else (numbers, texts)
    usual_kind = ("text" if usual is texts else "decimal numbers" if "decimal" in rows and not rows.get("integer")
                  else "integers" if "decimal" not in rows else "numbers")
    odd_kind = "text" if odd is texts else "a number"
    first, example = odd[0], usual[0]
    message = (f"{locate(split, first)}: label {shown(values[first])} is {odd_kind}, but the file's other labels "
               f"are {usual_kind} (e.g. {shown(values[example])} on {locate.row(split, example)})"
               f"{more_rows(locate, split, odd[1:])}. ")
    if "decimal" in rows and usual is numbers:
        message += ("Read as a regression (its numbers include decimals), every label must be a number: fix or "
                    "remove those rows. To take every distinct value as a class instead, pass --label_type "
                    "classification.")
    else:
        message += ("Write every label the same way (all names, or all integers); or pass --label_type "
                    f"classification to take every distinct value as a class ({shown(values[first])} and "
                    f"{shown(values[example])} are then two classes).")
    return ValueError(message)


def check_labels(data_args: DataTrainingArguments, raw: datasets.DatasetDict, scheme: LabelScheme,
                 locate: RowLocator) -> None:
    """Refuse, before training, a row of any split whose label the scheme cannot read: not a number in a
    regression; in a classification a class absent from the training file (it would be mapped to no class),
    a score where the training file has classes, a number where it has names or text where it has integers; a
    missing label. Test splits may leave rows unlabelled (empty, or -1)."""
    column = data_args.label_column
    reference_split = "train" if "train" in raw else "validation"
    reference = locate.source(reference_split)
    for split, dataset in raw.items():
        if column not in dataset.column_names:
            continue
        unlabelled_ok = split.startswith("test")
        values = dataset[column]
        bad = []
        for row, value in enumerate(values):
            if unlabelled_ok and is_unlabelled(value):
                continue
            kind = label_kind(value)
            if kind == "missing" or (not is_number(value) if scheme.is_regression else scheme.name_of(value) is None):
                bad.append(row)
        if not bad:
            continue
        row, value = bad[0], values[bad[0]]
        kind = label_kind(value)
        where, others = locate(split, row), more_rows(locate, split, bad[1:])
        if kind == "missing":
            raise ValueError(f"{where}: no {column!r} label{others}. Fill it in or remove the row.")
        if scheme.is_regression:
            why = (f"--task_name {data_args.task_name} is a regression" if data_args.task_name
                   else "--label_type regression reads every label as a number"
                   if data_args.label_type == "regression" and split == reference_split
                   else f"the labels of {reference} are numbers (a regression)")
            raise ValueError(f"{where}: label {shown(value)} is not a (finite) number, but {why}{others}. Fix the "
                             "value, or remove the row.")
        classes = scheme.shown_classes()
        all_integers = all(isinstance(name, int) for name in classes)
        if kind == "decimal" and not float(value).is_integer():
            raise ValueError(
                f"{where}: {shown(value)} is a score (a decimal number), not a class{others}: {reference} is a "
                f"classification with the classes {classes}. Give a {split} file of the same task, labelled "
                "with those classes."
            )
        if kind == "text" and all_integers and not scheme.by_id:
            raise ValueError(f"{where}: label {shown(value)} is text, but the classes of {reference} are the "
                             f"integers {classes}{others}. Write it as one of them, or remove the row.")
        if kind in ("integer", "decimal") and not any(_INTEGER.fullmatch(str(n)) for n in classes):
            raise ValueError(f"{where}: label {shown(value)} is a number, but the classes of {reference} are the "
                             f"names {classes}{others}. Write the class's name, or remove the row.")
        raise ValueError(
            f"{where}: label {shown(value)} is not one of the labels {classes} of {reference}{others}. "
            "Every label must occur in the training data: add examples of it there, or remove those rows."
        )


def check_label_count(scheme: LabelScheme, source: str) -> None:
    """Refuse a classification with fewer than two classes: one output is a regression head, and a classifier
    that can answer only one class learns nothing."""
    if scheme.is_regression or len(scheme.names) >= 2:
        return
    only = scheme.names[0]
    raise ValueError(
        f"{source}: every example has the label {only!r}, the only label found: a classification needs at least "
        "two classes. Add examples of the other class(es) to the training file"
        + ("; or, if the labels are scores, pass --label_type regression." if _INTEGER.fullmatch(only) else ".")
    )


def named_label_order(label_names: list[str], source: str, config) -> list[str] | None:
    """The label order of a fine-tuned checkpoint that names its labels (its head's rows follow it), checked to
    be the data's set of names; None for a checkpoint without names (``LABEL_0``, ...)."""
    if not config.id2label or all(str(n).startswith("LABEL_") for n in config.id2label.values()):
        return None
    model_names = [str(config.id2label[i]) for i in range(len(config.id2label))]
    if sorted(model_names) != sorted(label_names):
        raise ValueError(
            f"{source} has the labels {model_names}, but the data has {label_names}. Use a checkpoint fine-tuned "
            "on this task (or a pretrained, not fine-tuned, one)."
        )
    return model_names


def label_order(label_names: list[str], model_args: ModelArguments, strategy: str) -> list[str]:
    """The data's label names in the order of the checkpoints whose heads are used: the teacher's when it is
    loaded (`loads_teacher`), and ``--student_init_from``'s, whose head the student copies. The two named in
    different orders are refused: the student's copied head would read the teacher's classes under other
    names."""
    sources = [model_args.teacher_model_name_or_path] if loads_teacher(
        model_args, strategy, also_teacher=model_args.measure_compression) else []
    sources += [model_args.student_init_from] if model_args.student_init_from else []
    ordered, ordered_by = None, None
    for source in sources:
        config = AutoConfig.from_pretrained(source, cache_dir=model_args.cache_dir, token=model_args.token)
        names = named_label_order(label_names, source, config)
        if names is not None and ordered is not None and names != ordered:
            raise ValueError(f"{ordered_by} orders the labels {ordered}, {source} orders them {names}: the "
                             "student's copied head would mislabel the classes. Build the student from a "
                             "checkpoint with the teacher's label order, or from a pretrained one.")
        if names is not None and ordered is None:
            ordered, ordered_by = names, source
    return ordered or label_names


def load_model(name_or_path, model_args, num_labels, id2label, label2id, attn_implementation=None):
    labels = {"id2label": id2label, "label2id": label2id} if id2label else {}
    config = AutoConfig.from_pretrained(
        name_or_path, num_labels=num_labels, cache_dir=model_args.cache_dir, revision=model_args.model_revision,
        token=model_args.token, trust_remote_code=model_args.trust_remote_code, **labels,
    )
    if num_labels == 1:
        config.problem_type = "regression"
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return AutoModelForSequenceClassification.from_pretrained(
        name_or_path, config=config, cache_dir=model_args.cache_dir, revision=model_args.model_revision,
        token=model_args.token, trust_remote_code=model_args.trust_remote_code,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **kwargs,
    )


def build_models(model_args, training_args, num_labels, label_names):
    """`(teacher or None, student)`, sharing one label set; the teacher also for finetune with
    --measure_compression."""
    id2label, label2id = label_maps(label_names)
    attn = "eager" if training_args.attention_distill_weight > 0 else None
    load = partial(load_model, model_args=model_args, num_labels=num_labels, id2label=id2label, label2id=label2id,
                   attn_implementation=attn)
    return build_teacher_and_student(model_args, training_args.strategy, load,
                                     also_teacher=model_args.measure_compression)  # finetune: measured against


def parse_arguments(argv: list[str]):
    """Command-line flags, or a JSON config optionally followed by flags that override it
    (``run_glue.py configs/prokt.json --task_name mrpc --output_dir runs/mrpc``)."""
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, ProKTTrainingArguments))
    return parse_config_and_flags(parser, argv)


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    check_logit_cache_arguments(model_args, data_args, training_args)
    resume_from = start_of_run(training_args, data_args.overwrite_output_dir)

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO
                        if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    raw = load_raw_data(data_args, model_args)
    reference_split = "train" if "train" in raw else "validation"
    first, second = text_columns(data_args, raw[reference_split].column_names)
    locate = row_locator(data_args, raw)
    check_texts(data_args, raw, (first, second), locate)
    scheme = label_scheme(data_args, raw, locate)
    check_labels(data_args, raw, scheme, locate)
    check_label_count(scheme, locate.source(reference_split))
    is_regression, label_names = scheme.is_regression, scheme.names
    configs = checkpoint_configs(model_args, training_args.strategy, also_teacher=model_args.measure_compression)
    check_architectures(configs, "sequence-classification", "run_glue.py")  # before any weight is loaded
    check_max_seq_length(data_args.max_seq_length, configs)
    if label_names:
        label_names = label_order(label_names, model_args, training_args.strategy)
    num_labels = 1 if is_regression else len(label_names)

    teacher, student = build_models(model_args, training_args, num_labels, label_names)
    tokenizer_source = (model_args.tokenizer_name or model_args.teacher_model_name_or_path
                        or model_args.student_init_from or model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, cache_dir=model_args.cache_dir, token=model_args.token)
    check_max_seq_length(data_args.max_seq_length, tokenizer=tokenizer)
    check_distillation_pair(student, teacher)  # a vocabulary mismatch is the pair's first
    if len(tokenizer) > student.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the student's vocabulary only "
                         f"{student.config.vocab_size}: use the models' own tokenizer (--tokenizer_name).")

    label_to_id = {name: i for i, name in enumerate(label_names)} if label_names else None
    padding = "max_length" if data_args.pad_to_max_length else False

    def preprocess(batch):
        texts = (batch[first],) if second is None else (batch[first], batch[second])
        encoded = tokenizer(*texts, padding=padding, max_length=data_args.max_seq_length, truncation=True)
        if data_args.label_column in batch:
            labels = batch[data_args.label_column]
            if is_regression:  # a test file's unlabelled rows (checked by check_labels) are only predicted
                encoded["labels"] = [float(v) if is_number(v) else float("nan") for v in labels]
            else:  # unlabelled rows (GLUE's test sets use -1) get -1 and are only predicted
                encoded["labels"] = [label_to_id.get(scheme.name_of(v), -1) for v in labels]
        return encoded

    with training_args.main_process_first(desc="dataset map pre-processing"):
        processed = datasets.DatasetDict({  # each split's own columns: a test file may have no label column
            split: dataset.map(preprocess, batched=True, remove_columns=dataset.column_names, desc="Tokenizing")
            for split, dataset in raw.items()})

    def select(split, limit):
        dataset = processed[split]
        return dataset.select(range(min(limit, len(dataset)))) if limit is not None else dataset

    train_dataset = select("train", data_args.max_train_samples) if training_args.do_train else None
    eval_splits = {}
    if training_args.do_eval:
        eval_splits["validation"] = select("validation", data_args.max_eval_samples)
        if "validation_mismatched" in processed:
            eval_splits["validation_mismatched"] = select("validation_mismatched", data_args.max_eval_samples)
    predict_splits = {}
    if training_args.do_predict:
        predict_splits["test"] = select("test", data_args.max_predict_samples)
        if "test_mismatched" in processed:
            predict_splits["test_mismatched"] = select("test_mismatched", data_args.max_predict_samples)

    if data_args.task_name:
        compute_metrics = compute_glue_metrics(data_args.task_name)
    else:
        compute_metrics = compute_metrics_for_labels(num_labels)

    data_collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if training_args.fp16 or
                                            training_args.bf16 else None)
    training_teacher = teacher if strategy_class(training_args.strategy).needs_teacher else None
    if data_args.cache_teacher_logits and train_dataset is not None:
        train_dataset = with_cached_teacher_logits(data_args.cache_teacher_logits, teacher, train_dataset,
                                                   data_collator, training_args)
        if not training_args.should_evaluate_teacher:
            training_teacher = None  # the column replaces it in training; only evaluating it would need it
    trainer = ProKTTrainer(
        model=student, teacher_model=training_teacher, args=training_args, train_dataset=train_dataset,
        eval_dataset=eval_splits.get("validation"), processing_class=tokenizer, compute_metrics=compute_metrics,
        data_collator=data_collator,
    )

    previous_run = replace_previous_run(trainer, data_args.overwrite_output_dir, logger.info)  # every check passed

    results = {}
    if training_args.do_train:
        with previous_run.kept_until_saved():  # the earlier run is deleted once the student is saved
            train_result = trainer.train(resume_from_checkpoint=resume_from)
            metrics = {**train_result.metrics, "train_samples": len(train_dataset)}
            if model_args.measure_compression:  # before save_model, so that the card carries the figures
                results.update(measure_text_compression(trainer, teacher, train_dataset, data_collator, model_args))
            trainer.save_model()
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)
    for name, dataset in eval_splits.items():
        prefix = "eval" if name == "validation" else "eval_mm"
        # The validation set is the one evaluated during training: its evaluation at the last step is reused.
        evaluated = final_evaluation(trainer, dataset, prefix,
                                     trained=training_args.do_train and name == "validation")
        metrics = {**evaluated, f"{prefix}_samples": len(dataset)}
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics, combined=True)
        results.update(metrics)
    if model_args.measure_compression and not training_args.do_train:
        results.update(measure_text_compression(trainer, teacher, eval_splits.get("validation") or processed["train"],
                                                data_collator, model_args))
    card = card_arguments(data_args, model_args)
    if training_args.do_train:  # after the final evaluation, so that the card carries its metrics
        trainer.create_model_card(**card)
    if data_args.plot and trainer.is_world_process_zero():
        from hf_prokt.plot import plot_training

        metric = GLUE_TASKS[data_args.task_name].metric_names[0] if data_args.task_name else (
            "pearson" if is_regression else "accuracy")
        plot_training(trainer.state.log_history, os.path.join(training_args.output_dir, "training_curves.png"),
                      metric=metric, title=f"{training_args.strategy} on {data_args.task_name or 'custom data'}")
    for name, dataset in predict_splits.items():
        write_predictions(trainer, dataset, name, data_args.task_name or "custom", is_regression, label_names)
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)
    return results


def check_logit_cache_arguments(model_args, data_args, training_args) -> None:
    """Refuse, before any data or model is loaded, logit-cache and compression flags that cannot work together."""
    recipe = strategy_class(training_args.strategy)
    if data_args.cache_teacher_logits and not recipe.accepts_cached_logits:
        raise ValueError(
            f"--cache_teacher_logits serves --strategy kd (a frozen teacher), not {training_args.strategy!r}: "
            + ("ProKT trains its teacher, so its logits change at every step." if recipe.trains_teacher
               else "fine-tuning has no teacher.") + " Remove --cache_teacher_logits, or use --strategy kd."
        )
    if data_args.cache_teacher_logits and training_args.uses_intermediate_terms:
        raise ValueError("--cache_teacher_logits keeps the teacher's logits only, but the *_distill_weight terms "
                         "need its hidden states at every step. Set them to 0, or train without the cache.")
    if model_args.measure_compression and not model_args.teacher_model_name_or_path:
        raise ValueError("--measure_compression compares the student with its teacher: give "
                         "--teacher_model_name_or_path.")


def label_maps(label_names):
    """``(id2label, label2id)`` for named labels, ``(None, None)`` for regression."""
    if not label_names:
        return None, None
    return dict(enumerate(label_names)), {name: i for i, name in enumerate(label_names)}


def with_cached_teacher_logits(path, teacher, train_dataset, data_collator, training_args):
    """The training set with the teacher's logits: read from ``path`` when a cache of the same teacher and data
    is there, else computed once (in the precision of training) and saved there."""
    if training_args.teacher_dtype is not None:  # the dtype the trainer would run the teacher in
        teacher.to(getattr(torch, training_args.teacher_dtype))
    precision = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else None
    with training_args.main_process_first(desc="teacher logits cache"):
        return load_or_cache_teacher_logits(
            path, teacher, train_dataset, batch_size=training_args.per_device_eval_batch_size,
            data_collator=data_collator, precision=precision, disable_tqdm=training_args.disable_tqdm,
        )


def card_arguments(data_args: DataTrainingArguments, model_args: ModelArguments) -> dict:
    """What the model card says about the data and the starting point: the GLUE task (with its Hub dataset) or
    the training file's name."""
    local = data_args.train_file or data_args.validation_file
    task = data_args.task_name
    if local:
        dataset = os.path.basename(local) + (f" (GLUE {task.upper()})" if task else "")
    else:
        dataset = f"GLUE {task.upper()}"
    card = {"dataset": dataset, "tasks": "text-classification",
            "finetuned_from": model_args.model_name_or_path or model_args.teacher_model_name_or_path}
    if task and not local:
        card.update(dataset_tags="nyu-mll/glue", dataset_args=task)
    return card



def write_predictions(trainer, dataset, split, task, is_regression, label_names):
    """GLUE's submission format: `index<TAB>prediction`, with label names (floats for regression)."""
    dataset = dataset.remove_columns([c for c in ("labels",) if c in dataset.column_names])
    logits = trainer.predict(dataset, metric_key_prefix="predict").predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    predictions = np.squeeze(logits, axis=-1) if is_regression else np.argmax(logits, axis=-1)
    suffix = "" if split == "test" else "_mm"
    path = os.path.join(trainer.args.output_dir, f"predict_results_{task}{suffix}.txt")
    if trainer.is_world_process_zero():
        os.makedirs(trainer.args.output_dir, exist_ok=True)
        with open(path, "w") as writer:
            writer.write("index\tprediction\n")
            for index, value in enumerate(predictions):
                writer.write(f"{index}\t{value:.3f}\n" if is_regression else f"{index}\t{label_names[value]}\n")
    return path


if __name__ == "__main__":
    # under torchrun: every process done, then an exit without the teardown race (docs/distributed.md); on
    # SIGTERM: exit 143 with one line naming the checkpoint (docs/robustness.md)
    run_script(main)
