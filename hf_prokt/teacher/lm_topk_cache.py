"""Cached teacher predictions for causal LMs: the top-k log-probabilities of each predicted position.

Full logits cost ``V`` floats per token (128 KB per token at ``V = 32k`` in fp32), so a causal LM's cache keeps, per
predicted position, the teacher's ``k`` largest log-probabilities at the distillation temperature ``T`` and their
token ids. KD learns from them with the rest of the teacher's mass as one outcome (`hf_prokt.losses.topk`).

Layout, per example (plain `datasets` columns, so ``save_to_disk``, ``select``, ``shuffle`` keep them aligned):

- ``teacher_topk_logprobs``: ``[P, k]`` log-probabilities, ``float16`` (or ``float32``), largest first;
- ``teacher_topk_indices``: ``[P, k]`` ``int32`` token ids;
- ``teacher_topk_positions``: ``[P]`` ``int32``, the predicted positions ``t`` (the logits at ``t`` predict the
  token at ``t + 1``) counted from the example's first token, in order;
- ``teacher_topk_vocab_size``, ``teacher_topk_temperature``: the teacher's ``V`` and the ``T`` cached.

``P`` is the number of positions the training loss counts: those whose next-token label is not -100, read from the
batch that the training collator makes (so a prompt masked to -100 is not cached, and neither are the positions a
`DataCollatorForLanguageModeling` masks). `TeacherTopkCollator` batches the rows beside the inputs: ``[N, k]`` for
the ``N`` predicted positions of the batch, in row-major order, and ``teacher_topk_mask`` ``[B, L-1]``, the
positions they belong to, which the trainer compares with the batch's own before using them.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext

import datasets
import numpy as np
import torch
from accelerate import PartialState
from torch import nn
from torch.utils.data import DataLoader
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase
from transformers.utils.logging import tqdm

from ..eval_mode import eval_mode
from ..model_kinds import (
    TEACHER_LOGITS,
    TEACHER_TOPK_COLUMNS,
    TEACHER_TOPK_INDICES,
    TEACHER_TOPK_LOGPROBS,
    TEACHER_TOPK_MASK,
    TEACHER_TOPK_POSITIONS,
    TEACHER_TOPK_TEMPERATURE,
    TEACHER_TOPK_VOCAB_SIZE,
    ForwardInputs,
    model_kind_of,
)
from .logit_cache import PRECISIONS, load_or_compute_cache

logger = logging.getLogger(__name__)

DEFAULT_K = 64
_DTYPES = {"float16": np.float16, "float32": np.float32}


def cache_teacher_topk(
    teacher: nn.Module,
    dataset: datasets.Dataset,
    k: int = DEFAULT_K,
    temperature: float = 1.0,
    batch_size: int = 8,
    data_collator=None,
    processing_class=None,
    precision: str | None = None,
    dtype: str = "float16",
    num_workers: int = 0,
    disable_tqdm: bool = False,
) -> datasets.Dataset:
    """The dataset with the teacher's top-k log-probabilities of every predicted position (module docstring).

    The teacher runs once, in eval mode and without a graph, on the device of the current process, over batches
    that ``data_collator`` makes from ``batch_size`` examples; its mode and device are restored afterwards. A
    batch's full logits ``[B, L, V]`` exist during its forward: lower ``batch_size`` for long blocks.

    Args:
        teacher: a causal LM (`AutoModelForCausalLM`).
        dataset: a map-style `datasets.Dataset` of ``input_ids`` (``attention_mask``, and ``labels`` when the
            collator does not make them).
        k: entries kept per position, ``1 <= k <= V``.
        temperature: the ``T`` of the log-probabilities; train with ``distill_temperature`` equal to it.
        data_collator: the collator you train with, which decides the labels and so the predicted positions;
            default ``DataCollatorForLanguageModeling(processing_class, mlm=False)``, the usual causal-LM collator.
        processing_class: the tokenizer, for the default collator (it needs a pad token).
        precision: ``None`` (the teacher's own dtype), ``"bf16"`` or ``"fp16"`` (autocast), as for
            `hf_prokt.cache_teacher_logits`.
        dtype: ``"float16"`` (2 bytes per value) or ``"float32"`` for the log-probabilities.

    Returns:
        A new dataset (the input is unchanged) with the five ``teacher_topk_*`` columns.
    """
    _check_request(teacher, dataset, k, temperature, precision, dtype)
    if data_collator is None:
        if not isinstance(processing_class, PreTrainedTokenizerBase):
            raise ValueError("cache_teacher_topk needs the collator you train with (data_collator=...), or the "
                             "tokenizer (processing_class=...) for DataCollatorForLanguageModeling(tokenizer, "
                             "mlm=False): the labels it makes decide which positions are cached.")
        data_collator = DataCollatorForLanguageModeling(processing_class, mlm=False)
    side = padding_side(data_collator)
    kind, accepted = model_kind_of(teacher), ForwardInputs(teacher)

    def collate(examples):
        inputs = [{key: value for key, value in example.items() if key == "labels" or key in accepted.names}
                  for example in examples]
        return data_collator(inputs), [len(example["input_ids"]) for example in examples]

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    home = next(teacher.parameters()).device
    dispatched = getattr(teacher, "hf_device_map", None) is not None
    device = home if dispatched else PartialState().device
    autocast = torch.autocast(device.type, dtype=PRECISIONS[precision]) if precision else nullcontext()
    vocab_size = None
    columns: dict[str, list] = {TEACHER_TOPK_LOGPROBS: [], TEACHER_TOPK_INDICES: [], TEACHER_TOPK_POSITIONS: []}
    try:
        if not dispatched:
            teacher.to(device)
        with eval_mode(teacher), torch.no_grad():
            for batch, lengths in tqdm(loader, desc="Teacher top-k", disable=disable_tqdm):
                batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value
                         for key, value in batch.items()}
                with autocast:
                    outputs = teacher(**kind.model_inputs(batch))
                predictions = kind.predictions(outputs)  # [B, L-1, V]
                vocab_size = predictions.shape[-1]
                if k > vocab_size:
                    raise ValueError(f"k = {k} entries per position, but the teacher's vocabulary has {vocab_size} "
                                     "tokens: give k <= the vocabulary size.")
                keep = kind.predicted_positions(batch)
                if keep is None:
                    keep = torch.ones(predictions.shape[:2], dtype=torch.bool, device=predictions.device)
                for row, length in enumerate(lengths):
                    positions = keep[row].nonzero().squeeze(-1)
                    log_probs = torch.log_softmax(predictions[row, positions].float() / temperature, dim=-1)
                    values, indices = log_probs.topk(k, dim=-1)
                    offset = keep.shape[1] + 1 - length if side == "left" else 0
                    columns[TEACHER_TOPK_LOGPROBS].append(values.cpu().numpy().astype(_DTYPES[dtype]))
                    columns[TEACHER_TOPK_INDICES].append(indices.cpu().numpy().astype(np.int32))
                    columns[TEACHER_TOPK_POSITIONS].append((positions - offset).cpu().numpy().astype(np.int32))
    finally:
        if not dispatched:
            teacher.to(home)
    features = {
        TEACHER_TOPK_LOGPROBS: datasets.List(datasets.List(datasets.Value(dtype))),
        TEACHER_TOPK_INDICES: datasets.List(datasets.List(datasets.Value("int32"))),
        TEACHER_TOPK_POSITIONS: datasets.List(datasets.Value("int32")),
    }
    cached = dataset
    for name, values in columns.items():
        cached = cached.add_column(name, [value.tolist() for value in values], feature=features[name])
    cached = cached.add_column(TEACHER_TOPK_VOCAB_SIZE, [vocab_size] * len(dataset),
                               feature=datasets.Value("int32"))
    return cached.add_column(TEACHER_TOPK_TEMPERATURE, [float(temperature)] * len(dataset),
                             feature=datasets.Value("float32"))


def load_or_cache_teacher_topk(path: str, teacher: nn.Module, dataset: datasets.Dataset, **cache_kwargs
                               ) -> datasets.Dataset:
    """The cached dataset saved at ``path``, or computed with `cache_teacher_topk` and saved there; a cache made
    from another teacher, other data, or another precision, ``k``, temperature or dtype is refused, as
    `hf_prokt.load_or_cache_teacher_logits` does."""
    settings = {name: cache_kwargs.get(name, default) for name, default in
                (("precision", None), ("k", DEFAULT_K), ("temperature", 1.0), ("dtype", "float16"))}
    return load_or_compute_cache(path, teacher, dataset, settings,
                                 lambda: cache_teacher_topk(teacher, dataset, **cache_kwargs), "teacher top-k")


def _check_request(teacher, dataset, k: int, temperature: float, precision, dtype: str) -> None:
    kind = model_kind_of(teacher)
    if kind.auto_class != "AutoModelForCausalLM":
        hint = ("cache its logits with cache_teacher_logits" if not kind.is_language_model
                else "run the teacher live (no cache)")
        raise ValueError(f"cache_teacher_topk caches causal LMs, and the teacher is a {kind.name} "
                         f"({type(teacher).__name__}): {hint}.")
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"cache_teacher_topk needs a map-style datasets.Dataset, got {type(dataset).__name__}: the "
                        "top-k rows are stored as columns beside the examples.")
    present = [name for name in (*TEACHER_TOPK_COLUMNS, TEACHER_LOGITS) if name in dataset.column_names]
    if present:
        raise ValueError(f"the dataset already has the column {present[0]!r}: remove the cache columns first "
                         f"(dataset.remove_columns({present})) to compute it again, or train from it as it is.")
    if "input_ids" not in dataset.column_names:
        raise ValueError(f"cache_teacher_topk reads tokenized examples, and the dataset has no 'input_ids' column "
                         f"(columns: {dataset.column_names}): tokenize it first.")
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: there is nothing to cache.")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k = {k!r}: give the number of entries per position, at least 1.")
    if not temperature > 0:
        raise ValueError(f"temperature = {temperature}: give a positive temperature.")
    if precision not in (None, *PRECISIONS):
        raise ValueError(f"precision={precision!r} is not one of None, 'bf16', 'fp16'.")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {sorted(_DTYPES)}.")


def padding_side(data_collator) -> str:
    """The side the collator's tokenizer pads (``"right"`` without one)."""
    return getattr(getattr(data_collator, "tokenizer", None), "padding_side", "right")


class TeacherTopkCollator:
    """Wraps a data collator so that batches carry the cached top-k rows beside the inputs.

    The wrapped collator batches the inputs; the cache becomes ``teacher_topk_logprobs`` and
    ``teacher_topk_indices`` ``[N, k]`` (the examples' rows, concatenated in order), ``teacher_topk_mask``
    ``[B, L-1]`` (the positions they belong to, shifted on the side the tokenizer pads), and the cache's
    ``teacher_topk_vocab_size`` and ``teacher_topk_temperature`` ``[B]``. Batches without the cache pass through.
    """

    def __init__(self, data_collator):
        self.data_collator = data_collator

    def __call__(self, features: list[dict]) -> dict:
        if not features or TEACHER_TOPK_LOGPROBS not in features[0]:
            return self.data_collator(features)
        batch = self.data_collator([{key: value for key, value in feature.items()
                                     if key not in TEACHER_TOPK_COLUMNS} for feature in features])
        widths = {len(row) for feature in features for row in feature[TEACHER_TOPK_LOGPROBS]}
        if len(widths) > 1:
            raise ValueError(f"the cached top-k rows of one batch have different k {sorted(widths)}: they were not "
                             "made by one call of cache_teacher_topk. Recompute the cache.")
        k = widths.pop() if widths else 1
        length = batch["input_ids"].shape[1]
        mask = torch.zeros((len(features), max(length - 1, 0)), dtype=torch.bool)
        side = padding_side(self.data_collator)
        for row, feature in enumerate(features):
            offset = length - len(feature["input_ids"]) if side == "left" else 0
            positions = torch.as_tensor(feature[TEACHER_TOPK_POSITIONS], dtype=torch.long) + offset
            if positions.numel() and (positions.min() < 0 or positions.max() >= mask.shape[1]):
                raise ValueError(f"cached top-k positions up to {int(positions.max())} for a batch of "
                                 f"{length} tokens: the cache was made from other inputs. Recompute it from this "
                                 "data.")
            mask[row, positions] = True

        def rows(name, dtype):
            tensors = [torch.as_tensor(feature[name], dtype=dtype).reshape(-1, k) for feature in features]
            return torch.cat(tensors)

        batch[TEACHER_TOPK_LOGPROBS] = rows(TEACHER_TOPK_LOGPROBS, torch.float32)
        batch[TEACHER_TOPK_INDICES] = rows(TEACHER_TOPK_INDICES, torch.int64)
        batch[TEACHER_TOPK_MASK] = mask
        batch[TEACHER_TOPK_VOCAB_SIZE] = torch.as_tensor([f[TEACHER_TOPK_VOCAB_SIZE] for f in features])
        batch[TEACHER_TOPK_TEMPERATURE] = torch.as_tensor([f[TEACHER_TOPK_TEMPERATURE] for f in features],
                                                          dtype=torch.float32)
        return batch


def check_topk_batch(batch: dict, keep: torch.Tensor | None, vocab_size: int, temperature: float) -> None:
    """Refuse cached top-k rows that do not belong to this batch and these settings.

    Args:
        batch: a training batch from `TeacherTopkCollator`.
        keep: ``[B, L-1]`` bool, the positions the training terms count (`ModelKind.predicted_positions`), or None
            for all of them.
        vocab_size: the student's ``V``.
        temperature: ``distill_temperature``.
    """
    cached_vocab = {int(v) for v in batch[TEACHER_TOPK_VOCAB_SIZE].tolist()}
    if cached_vocab != {vocab_size}:
        raise ValueError(f"the cached top-k rows come from a teacher with a vocabulary of {sorted(cached_vocab)} "
                         f"tokens, and the student has {vocab_size}: the cache belongs to another model family. "
                         "Recompute it with cache_teacher_topk from a teacher with the student's tokenizer.")
    cached_temperature = {round(float(t), 6) for t in batch[TEACHER_TOPK_TEMPERATURE].tolist()}
    if cached_temperature != {round(float(temperature), 6)}:
        raise ValueError(f"the top-k log-probabilities were cached at temperature {sorted(cached_temperature)}, "
                         f"but distill_temperature is {temperature}: set distill_temperature="
                         f"{min(cached_temperature)}, or recompute the cache with cache_teacher_topk(..., "
                         f"temperature={temperature}).")
    cached = batch[TEACHER_TOPK_MASK].to(keep.device) if keep is not None else batch[TEACHER_TOPK_MASK]
    expected = keep if keep is not None else torch.ones_like(cached)
    if cached.shape != expected.shape or not torch.equal(cached, expected.bool()):
        counted, stored = int(expected.sum()), int(cached.sum())
        raise ValueError(f"the cached top-k rows are for {stored} positions of this batch, and its labels count "
                         f"{counted} other or different ones: the labels (or the collator that makes them) changed "
                         "since the cache was made. Recompute it with cache_teacher_topk and the collator you "
                         "train with.")
