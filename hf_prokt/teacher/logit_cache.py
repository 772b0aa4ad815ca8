"""Cached teacher logits: run a frozen teacher once over a dataset and keep its logits in a column.

KD with a frozen teacher recomputes the same teacher outputs on every step of every run. With the logits
cached in the training set, ``ProKTTrainer(strategy="kd", teacher_model=None, train_dataset=cached)``
trains the student at the cost of fine-tuning. The cache is a plain `datasets.Dataset` column, so
``save_to_disk`` / ``load_from_disk``, ``map``, ``select``, ``shuffle`` and ``train_test_split`` keep
it aligned with its examples.

Per example the column holds the teacher's logits in float32: ``[C]`` for a sequence or image classifier
(``[1]`` for a regressor), ``[L, C]`` for a token classifier, ``L`` being the example's own length.

Training from the column: `TeacherLogitsCollator` batches it beside the inputs, and `check_cached_logits_shape`
compares it with the student's logits before any step (`hf_prokt.strategies.kd` decides when it is used).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from contextlib import nullcontext

import datasets
import numpy as np
import torch
from accelerate import PartialState
from torch import nn
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, default_data_collator
from transformers.utils.logging import tqdm

from ..eval_mode import eval_mode
from ..model_kinds import TEACHER_LOGITS, ForwardInputs

logger = logging.getLogger(__name__)

FINGERPRINT_NAME = "teacher_cache_fingerprint.json"
_LABEL_KEYS = ("labels", "label", "label_ids")
_LENGTH_KEYS = ("input_ids", "attention_mask", "inputs_embeds")
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cache_teacher_logits(
    teacher: nn.Module,
    dataset: datasets.Dataset,
    batch_size: int = 32,
    data_collator=None,
    processing_class=None,
    precision: str | None = None,
    column: str = TEACHER_LOGITS,
    num_workers: int = 0,
    disable_tqdm: bool = False,
) -> datasets.Dataset:
    """The dataset with a ``teacher_logits`` column: the teacher's logits for each example.

    The teacher runs once, in eval mode and without a graph, over batches of ``batch_size`` examples, on the
    device of the current process (accelerate's ``PartialState().device``; a model dispatched with a
    ``device_map`` stays where it is). Its mode and device are restored afterwards.

    Args:
        teacher: a frozen teacher that returns ``logits`` (``[B, C]`` or, per token, ``[B, L, C]``).
        dataset: a map-style `datasets.Dataset` of model inputs (``input_ids``/``attention_mask``,
            ``pixel_values``, ...). Columns the teacher does not accept (labels, raw text) are not passed to it.
            A dataset with a transform (``set_transform``) is read through it: the logits belong to the
            transformed inputs of this pass.
        batch_size: examples per teacher forward.
        data_collator: turns a list of examples into a batch; default, as `Trainer`'s: padding with
            ``processing_class`` when it is a tokenizer, else `default_data_collator`. For token
            classification pass the collator you train with (e.g. `DataCollatorForTokenClassification`).
        processing_class: the tokenizer, for the default padding collator.
        precision: ``None`` (the teacher's own dtype), ``"bf16"`` or ``"fp16"`` (autocast, as training with
            ``bf16=True`` / ``fp16=True`` runs the live teacher). Use the precision you train with: KD from
            the cache then sees the logits the live teacher would have given.
        column: the new column's name.
        num_workers: DataLoader workers.
        disable_tqdm: hide the progress bar.

    Returns:
        A new dataset (the input is unchanged) with ``column``: float32 lists, ``[C]`` per example, or
        ``[L_i, C]`` for per-token logits trimmed to the example's own length ``L_i`` (the length of its
        ``input_ids``).
    """
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"cache_teacher_logits needs a map-style datasets.Dataset, got {type(dataset).__name__}: the logits are "
            "stored as a column beside the examples. Load the data with datasets (or Dataset.from_dict / "
            "from_generator), not as a streaming IterableDataset."
        )
    if column in dataset.column_names:
        raise ValueError(
            f"the dataset already has a {column!r} column. Remove it first (dataset.remove_columns({column!r})) to "
            "compute the logits again, or train from it as it is."
        )
    if precision not in (None, *PRECISIONS):
        raise ValueError(f"precision={precision!r} is not one of None, 'bf16', 'fp16'.")
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: there is nothing to cache.")
    if data_collator is None:
        data_collator = (DataCollatorWithPadding(processing_class)
                         if isinstance(processing_class, PreTrainedTokenizerBase) else default_data_collator)
    padding_side = getattr(getattr(data_collator, "tokenizer", None), "padding_side", "right")
    accepted = ForwardInputs(teacher)

    def collate(examples):
        inputs = [accepted.named({k: v for k, v in example.items() if k not in _LABEL_KEYS}) for example in examples]
        return _collate(data_collator, inputs), [_length(example) for example in inputs]

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    dispatched = getattr(teacher, "hf_device_map", None) is not None
    first_parameter = next(teacher.parameters(), None)
    home = first_parameter.device if first_parameter is not None else None
    device = home if dispatched or home is None else PartialState().device
    autocast = (torch.autocast(device.type, dtype=PRECISIONS[precision]) if precision and device is not None
                else nullcontext())
    logits_per_example: list[np.ndarray] = []
    try:
        if not dispatched and home is not None:
            teacher.to(device)
        with eval_mode(teacher), torch.no_grad():
            for batch, lengths in tqdm(loader, desc="Teacher logits", disable=disable_tqdm):
                batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                with autocast:
                    logits = teacher(**batch).logits
                logits_per_example += _split(logits.float().cpu().numpy(), lengths, padding_side)
    finally:
        if not dispatched and home is not None:
            teacher.to(home)
    feature = datasets.Value("float32")
    for _ in range(logits_per_example[0].ndim):
        feature = datasets.List(feature)
    return dataset.add_column(column, [value.tolist() for value in logits_per_example], feature=feature)


def load_or_cache_teacher_logits(path: str, teacher: nn.Module, dataset: datasets.Dataset, **cache_kwargs
                                 ) -> datasets.Dataset:
    """The cached dataset saved at ``path``, or computed with `cache_teacher_logits` and saved there.

    Beside the saved dataset a fingerprint records what the logits depend on: the teacher (its config and a
    hash of its weights), the dataset's content (every column, in order) and the precision. A later call with
    another teacher, other data or another precision is refused instead of training on logits that belong to
    something else. Under several processes, call it inside ``training_args.main_process_first()`` so that
    one process computes and the others read.

    Args:
        path: a folder for ``save_to_disk`` (created on the first call).
        teacher, dataset, cache_kwargs: as for `cache_teacher_logits`.
    """
    return load_or_compute_cache(path, teacher, dataset, {"precision": cache_kwargs.get("precision")},
                                 lambda: cache_teacher_logits(teacher, dataset, **cache_kwargs), "teacher-logits")


def load_or_compute_cache(path: str, teacher: nn.Module, dataset: datasets.Dataset, settings: dict,
                          compute: Callable[[], datasets.Dataset], what: str) -> datasets.Dataset:
    """The dataset saved at ``path`` when its fingerprint (the teacher, the data and the ``settings`` the cache
    was made with) is this call's; else refused when the fingerprint differs, or ``compute()``d and saved there
    with its fingerprint when ``path`` does not exist. ``what`` names the cache in messages."""
    fingerprint = {"teacher": teacher_fingerprint(teacher), "data": dataset_fingerprint(dataset), **settings,
                   "examples": len(dataset)}
    fingerprint_path = os.path.join(path, FINGERPRINT_NAME)
    if os.path.exists(path):
        if not os.path.isfile(fingerprint_path):
            raise ValueError(f"{path} exists but holds no {what} cache ({FINGERPRINT_NAME} is missing). "
                             "Give another path for the cache, or delete that folder.")
        with open(fingerprint_path) as f:
            stored = json.load(f)
        different = [name for name in ("teacher", "data", *settings) if stored.get(name) != fingerprint[name]]
        if different:
            described = {"teacher": "another teacher (its config or weights differ)",
                         "data": "other training data (another file, selection or preprocessing)",
                         "precision": f"logits in {_precision_name(stored.get('precision'))} (this run: "
                                      f"{_precision_name(fingerprint['precision'])})"}
            reasons = [described.get(name, f"{name}={stored.get(name)!r} (this run: {fingerprint[name]!r})")
                       for name in different]
            raise ValueError(
                f"the {what} cache at {path} was made from {' and '.join(reasons)}. "
                "It does not belong to this run: delete the folder to recompute it, or give another path."
            )
        logger.info(f"Reusing the {what} cache at {path} ({stored['examples']} examples).")
        return datasets.load_from_disk(path)
    cached = compute()
    cached.save_to_disk(path)
    with open(fingerprint_path, "w") as f:
        json.dump(fingerprint, f, indent=1)
    logger.info(f"Cached the {what} of {len(cached)} examples at {path}.")
    return datasets.load_from_disk(path)  # memory-mapped from disk, like a reused cache


def teacher_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's config (without version or path entries) and of every weight (name, dtype,
    shape, bytes)."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        values = {k: v for k, v in config.to_dict().items() if k not in ("transformers_version", "_name_or_path")}
        digest.update(json.dumps(values, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def dataset_fingerprint(dataset: datasets.Dataset) -> str:
    """SHA-256 of a dataset's content: its features and every row of every column, in order (so a different
    file, selection, order or preprocessing gives another fingerprint, whatever `datasets` cached)."""
    import pyarrow as pa

    digest = hashlib.sha256(json.dumps(dataset.features.to_dict(), sort_keys=True).encode())
    for table in dataset.with_format("arrow").iter(batch_size=10_000):
        table = table.combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()


def _precision_name(precision: str | None) -> str:
    return "the teacher's own dtype" if precision is None else precision


def has_on_the_fly_transform(dataset) -> bool:
    """Whether ``dataset`` changes its examples when they are read (``set_transform`` / ``with_transform``):
    logits cached for one reading would belong to other inputs at the next (e.g. random augmentation)."""
    format_ = getattr(dataset, "format", None)
    return isinstance(format_, dict) and (format_.get("type") == "custom"
                                          or format_.get("format_kwargs", {}).get("transform") is not None)


def _collate(data_collator, examples: list[dict]) -> dict:
    try:
        return data_collator(examples)
    except (ValueError, RuntimeError, TypeError) as error:
        raise ValueError(
            f"the data collator could not batch the examples ({type(error).__name__}: {error}). Inputs of different "
            "lengths need padding: pass processing_class=<tokenizer> or data_collator=DataCollatorWithPadding("
            "tokenizer) (DataCollatorForTokenClassification for token classification)."
        ) from error


def _length(example: dict) -> int | None:
    """The example's own sequence length (its unpadded ``input_ids``), or None when it has no sequence."""
    for key in _LENGTH_KEYS:
        value = example.get(key)
        if value is not None and not isinstance(value, (int, float)):
            return len(value)
    return None


def _split(logits: np.ndarray, lengths: list[int | None], padding_side: str) -> list[np.ndarray]:
    """Per-example logits from a batch's ``[B, C]`` or ``[B, L, C]``: per-token rows are trimmed to each
    example's own length, on the side the collator did not pad."""
    if logits.ndim <= 2:
        return list(logits)
    examples = []
    for row, length in zip(logits, lengths):
        length = row.shape[0] if length is None else length
        examples.append(row[:length] if padding_side == "right" else row[row.shape[0] - length:])
    return examples


def check_cached_logits_shape(student_logits: torch.Tensor, cached_logits: torch.Tensor,
                              column: str = TEACHER_LOGITS) -> None:
    """Refuse a cache whose batched logits (``[B, C]`` or ``[B, L, C]``) do not match the student's."""
    if student_logits.shape != cached_logits.shape:
        raise ValueError(
            f"on the same training batch the student returns logits of shape {list(student_logits.shape)} and the "
            f"cached {column!r} have shape {list(cached_logits.shape)}: the cache was made by a teacher with "
            "other outputs (another number of labels, or per-token against per-sequence). Recompute it with "
            "cache_teacher_logits from a teacher with the student's labels."
        )


class TeacherLogitsCollator:
    """Wraps a data collator so that batches carry the cached ``teacher_logits`` beside the inputs.

    The wrapped collator batches everything else; the logits become ``[B, C]``, or for per-token logits
    ``[B, L, C]`` with zeros at the padded positions, ``L`` being the batch's sequence length (of its
    ``input_ids``, ``attention_mask`` or ``labels``) and the padding on the side the collator's tokenizer pads.
    Batches without the column pass through unchanged.
    """

    def __init__(self, data_collator, column: str = TEACHER_LOGITS):
        self.data_collator = data_collator
        self.column = column

    def __call__(self, features: list[dict]) -> dict:
        if not features or self.column not in features[0]:
            return self.data_collator(features)
        logits = [torch.as_tensor(f[self.column], dtype=torch.float32) for f in features]
        batch = self.data_collator([{k: v for k, v in f.items() if k != self.column} for f in features])
        shapes = {tuple(x.shape[1:]) if x.dim() > 1 else tuple(x.shape) for x in logits}
        if len(shapes) > 1:
            raise ValueError(f"the cached {self.column} of one batch have different shapes {sorted(shapes)}: they "
                             "were not made by one teacher. Recompute the cache with cache_teacher_logits.")
        if logits[0].dim() <= 1:
            batch[self.column] = torch.stack(logits)
            return batch
        length = max(x.shape[0] for x in logits)
        for key in ("input_ids", "attention_mask", "labels"):
            value = batch.get(key)
            if isinstance(value, torch.Tensor) and value.dim() > 1:
                length = value.shape[1]
                break
        side = getattr(getattr(self.data_collator, "tokenizer", None), "padding_side", "right")
        padded = logits[0].new_zeros((len(logits), length, *logits[0].shape[1:]))
        for row, values in zip(padded, logits):
            if values.shape[0] > length:
                raise ValueError(f"cached {self.column} for {values.shape[0]} positions, but the batch has "
                                 f"{length}: the cache was made from longer inputs. Recompute it from this data.")
            if side == "right":
                row[:values.shape[0]] = values
            else:
                row[length - values.shape[0]:] = values
        batch[self.column] = padded
        return batch
