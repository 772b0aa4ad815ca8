"""Tiny models and data built locally (no downloads) for the test suite."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

# One torch thread for the suite and the processes it launches (they inherit the variable), unless the caller
# sets OMP_NUM_THREADS: its models are tiny, so a second thread only adds synchronisation, and on a shared
# 2-core machine two spinning threads per process slowed some tests 30-fold (docs/index.md, threads).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertTokenizerFast,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from hf_prokt import ProKTTrainingArguments  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case torch was imported before this file
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VOCAB_SIZE = 40
SEQ_LEN = 8


def tiny_bert(layers: int = 2, hidden: int = 16, num_labels: int = 2, seed: int = 0, dropout: float = 0.0,
              model_class=BertForSequenceClassification, **config_kwargs) -> BertForSequenceClassification:
    """A BERT classifier small enough for a CPU test; dropout off unless asked, for exact comparisons.
    ``model_class=BertForTokenClassification`` gives a tagger (logits ``[B, L, num_labels]``)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=2 * hidden, max_position_embeddings=32, num_labels=num_labels,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, classifier_dropout=dropout,
        **config_kwargs,
    )
    return model_class(config)


def tiny_tagger(layers: int = 2, hidden: int = 16, num_labels: int = 3, seed: int = 0,
                **kwargs) -> BertForTokenClassification:
    """A tiny BERT token classifier (NER-style tagger)."""
    return tiny_bert(layers, hidden, num_labels, seed, model_class=BertForTokenClassification, **kwargs)


def toy_dataset(n: int = 32, seed: int = 0, regression: bool = False, padded: bool = False) -> datasets.Dataset:
    """Token sequences whose label is a simple function of the first token (learnable in a few steps)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB_SIZE, (n, SEQ_LEN), generator=generator)
    mask = torch.ones_like(ids)
    if padded:
        lengths = torch.randint(3, SEQ_LEN + 1, (n,), generator=generator)
        mask = (torch.arange(SEQ_LEN)[None, :] < lengths[:, None]).long()
        ids = ids * mask
    if regression:
        labels = ((ids[:, 0].float() - 5) / VOCAB_SIZE).tolist()
    else:
        labels = (ids[:, 0] >= (5 + VOCAB_SIZE) // 2).long().tolist()
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels})


def tagging_dataset(n: int = 32, seed: int = 0, num_labels: int = 3, ignored: float = 0.25) -> datasets.Dataset:
    """Padded token sequences tagged by a function of each token (``id % num_labels``), as a token
    classification batch arrives at the model: labels -100 on padding and on a random fraction
    ``ignored`` of the real tokens (the non-first sub-tokens of a word)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, SEQ_LEN + 1, (n,), generator=generator)
    mask = (torch.arange(SEQ_LEN)[None, :] < lengths[:, None]).long()
    ids = torch.randint(5, VOCAB_SIZE, (n, SEQ_LEN), generator=generator) * mask
    labels = ids % num_labels
    skipped = torch.rand(n, SEQ_LEN, generator=generator) < ignored
    labels[(mask == 0) | skipped] = -100
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(),
                                       "labels": labels.tolist()})


IMAGE_SIZE = 8


def tiny_vit(patch: int = 2, hidden: int = 16, layers: int = 2, num_labels: int = 3, seed: int = 0,
             image_size: int = IMAGE_SIZE, channels: int = 3) -> ViTForImageClassification:
    """A ViT for ``[B, channels, image_size, image_size]`` images: ``(image_size / patch)^2`` patches and [CLS]."""
    torch.manual_seed(seed)
    config = ViTConfig(image_size=image_size, patch_size=patch, num_channels=channels, hidden_size=hidden,
                       num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=num_labels)
    return ViTForImageClassification(config)


def tiny_resnet(widths: tuple[int, ...] = (8, 16), num_labels: int = 3, seed: int = 0,
                channels: int = 3) -> ResNetForImageClassification:
    """A ResNet with one basic block per stage; on 8x8 images its stages give maps of 2x2, then 1x1."""
    torch.manual_seed(seed)
    config = ResNetConfig(num_channels=channels, embedding_size=widths[0], hidden_sizes=list(widths),
                          depths=[1] * len(widths), layer_type="basic", num_labels=num_labels)
    return ResNetForImageClassification(config)


def image_dataset(n: int = 32, seed: int = 0, num_labels: int = 3, channels: int = 3) -> datasets.Dataset:
    """``pixel_values [channels, 8, 8]`` whose class is the brightest third of the image (learnable)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_labels, (n,), generator=generator)
    pixels = 0.3 * torch.randn(n, channels, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    for i, label in enumerate(labels.tolist()):
        rows = slice(label * IMAGE_SIZE // num_labels, (label + 1) * IMAGE_SIZE // num_labels)
        pixels[i, :, rows] += 1.0
    return datasets.Dataset.from_dict({"pixel_values": pixels.tolist(), "labels": labels.tolist()}).with_format("torch")


def load_example(path, name: str):
    """Import an example script (``examples/.../*.py``) as the module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve string annotations through it
    spec.loader.exec_module(module)
    return module


def make_args(tmp_path, **overrides) -> ProKTTrainingArguments:
    """Quiet, deterministic arguments; anything can be overridden."""
    defaults = dict(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, per_device_eval_batch_size=16,
        learning_rate=1e-3, teacher_learning_rate=1e-3, max_steps=4, report_to=[], save_strategy="no",
        logging_steps=1, disable_tqdm=True, seed=0, use_cpu=True,
    )
    defaults.update(overrides)
    return ProKTTrainingArguments(**defaults)


EXAMPLE_RUN_FILES = ("all_results.json", "train_results.json", "eval_results.json", "config.json", "model.safetensors",
                     "tokenizer.json", "training_curves.png", "README.md")


def check_example_outputs(out, strategy: str, metric: str, extra_files: tuple[str, ...] = ()) -> dict:
    """What every text example leaves in ``out`` after ``--do_train --do_eval --plot``: its files, a teacher
    metric exactly for prokt, the training loss and ``metric`` in all_results.json. Returns eval_results.json."""
    for name in (*EXAMPLE_RUN_FILES, *extra_files):
        assert (out / name).exists(), name
    eval_results = json.loads((out / "eval_results.json").read_text())
    assert ("eval_teacher_" + metric in eval_results) == (strategy == "prokt")
    assert set(json.loads((out / "all_results.json").read_text())) >= {"train_loss", "eval_" + metric}
    return eval_results


def parameters_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.fixture
def local_tokenizer(tmp_path) -> BertTokenizerFast:
    """A WordPiece tokenizer from a vocabulary file written here (no Hub access)."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB_SIZE - 5)]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab))
    assert len(tokenizer) == VOCAB_SIZE and tokenizer.tokenize("w1 w2") == ["w1", "w2"]
    return tokenizer
