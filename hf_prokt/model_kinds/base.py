"""What a kind of model is, for distillation: how its outputs are read and what its inputs are.

A `ModelKind` is the one place that knows, for one family of task heads (`AutoModelForSequenceClassification`,
`AutoModelForTokenClassification`, ...):

- which tensor of the model's outputs holds the predictions the losses compare (`predictions`), and which labels
  and positions line up with them (`labels`, `position_mask_source`);
- which inputs both models get from a training batch (`model_inputs`);
- how to name it to a user (`auto_class`, `predicts`) and to the Hub (`card_task`).

Kinds are found from the model itself (`model_kind_of`): its class name, through a PEFT wrapper. A model of no
known kind (a plain `nn.Module`) is read by the shape of its logits (`OUTPUT_SHAPE`). Nothing here knows the
trainer or the strategies.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable

import torch
from accelerate.utils import is_peft_model
from torch import nn

TEACHER_LOGITS = "teacher_logits"
"""The column of a training set with cached teacher logits (`hf_prokt.cache_teacher_logits`): batched beside the
inputs, never given to a model."""
TEACHER_TOPK_LOGPROBS = "teacher_topk_logprobs"
TEACHER_TOPK_INDICES = "teacher_topk_indices"
TEACHER_TOPK_POSITIONS = "teacher_topk_positions"
TEACHER_TOPK_VOCAB_SIZE = "teacher_topk_vocab_size"
TEACHER_TOPK_TEMPERATURE = "teacher_topk_temperature"
TEACHER_TOPK_COLUMNS = (TEACHER_TOPK_LOGPROBS, TEACHER_TOPK_INDICES, TEACHER_TOPK_POSITIONS, TEACHER_TOPK_VOCAB_SIZE,
                        TEACHER_TOPK_TEMPERATURE)
"""The columns of a causal-LM training set with the teacher's cached top-k log-probabilities
(`hf_prokt.cache_teacher_topk`, layout in `hf_prokt.teacher.lm_topk_cache`)."""
TEACHER_TOPK_MASK = "teacher_topk_mask"
"""The batch key (never a column) of the positions the batched top-k rows belong to, ``[B, L-1]`` bool."""
_NOT_MODEL_INPUTS = ("labels", TEACHER_LOGITS, *TEACHER_TOPK_COLUMNS, TEACHER_TOPK_MASK)


class ModelKind:
    """One kind of task model. Subclasses override what differs; the defaults read ``outputs.logits`` as they are,
    aligned one to one with ``batch["labels"]``.

    Attributes:
        name: e.g. ``"sequence classification"``.
        class_suffixes: model class names of this kind end with one of these (``"ForSequenceClassification"``).
        auto_class: the ``AutoModelFor*`` class that loads this kind, for messages.
        predicts: what one output row is, for messages (``"one prediction per sequence"``).
        card_task: the Hub task of a model card (``"text-classification"``), or None.
        distillable: whether `kd` and `prokt` can distil this kind (a kind recognised only to be refused: False).
        has_predictions: whether its outputs hold predictions (logits); a model without a task head has none.
        is_language_model: a generative LM (causal or seq2seq), whose predictions cover a vocabulary.
        averages_over_window_tokens: whether its per-position terms average over the predicted positions of the
            whole gradient-accumulation window (an LM's, as the `Trainer` averages its own loss), rather than
            per micro-batch.
        supports_chunked_loss: whether its output terms can be computed from the last hidden states and the
            output layer (`prediction_states`, `hf_prokt.model_kinds.lm_heads`) instead of the logits.
    """

    name = "model of unknown kind"
    class_suffixes: tuple[str, ...] = ()
    auto_class: str | None = None
    predicts: str | None = None
    card_task: str | None = None
    distillable = True
    has_predictions = True
    is_language_model = False
    averages_over_window_tokens = False
    supports_chunked_loss = False

    def __init__(self, class_suffix: str | None = None, predicts: str | None = None, card_task: str | None = None,
                 name: str | None = None):
        """A kind of the models whose class name ends with ``class_suffix`` (``"ForTokenClassification"``): its
        ``auto_class`` is ``AutoModel<suffix>`` and its name, unless given, the suffix in words
        (``"token classification"``)."""
        if class_suffix is not None:
            self.class_suffixes, self.auto_class = (class_suffix,), f"AutoModel{class_suffix}"
            self.name = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", class_suffix.removeprefix("For")).lower()
        if name is not None:
            self.name = name
        self.predicts = predicts or self.predicts
        self.card_task = card_task or self.card_task

    def matches(self, model: nn.Module) -> bool:
        return type(base_model(model)).__name__.endswith(self.class_suffixes) if self.class_suffixes else False

    def predictions(self, outputs) -> torch.Tensor | None:
        """The logits the losses compare: ``[B, C]`` (one prediction per example) or ``[B, L, C]`` (per position),
        aligned with `labels`; None for a kind without predictions."""
        return outputs.logits

    def labels(self, batch: dict) -> torch.Tensor | None:
        """The labels aligned with `predictions` (``[B]`` or ``[B, L]``, -100 where no loss applies), or None."""
        return batch.get("labels")

    def position_mask_source(self, batch: dict) -> torch.Tensor | None:
        """``[B, L]``: the real positions of per-position predictions, which a loss averages over when the batch has
        no labels (the ``attention_mask``, aligned with `predictions`); None when the batch has none."""
        return batch.get("attention_mask")

    def complete_batch(self, batch: dict, student: nn.Module) -> dict:
        """The training batch with the inputs both models must share added (a seq2seq LM's decoder inputs);
        the batch itself by default."""
        return batch

    def prediction_states(self, hidden: torch.Tensor) -> torch.Tensor:
        """The last hidden states ``[B, L, H]`` aligned with `predictions` (all of them by default)."""
        return hidden

    def predicted_positions(self, batch: dict) -> torch.Tensor | None:
        """``[B, L']`` bool: the positions whose predictions a per-position term counts, aligned with
        `predictions`; None for one prediction per example (or when the batch says nothing)."""
        return None

    def model_inputs(self, batch: dict) -> dict:
        """What both models' forwards receive: the batch without labels and cached teacher logits."""
        return {k: v for k, v in batch.items() if k not in _NOT_MODEL_INPUTS}

    def __repr__(self) -> str:
        return f"<model kind: {self.name}>"


OUTPUT_SHAPE = ModelKind()
"""The kind of a model no registered kind matches (a plain `nn.Module`): its logits are read as they are, one
prediction per example for ``[B, C]`` and per position for ``[B, L, C]`` (`hf_prokt.losses.logits`)."""

_KINDS: list[ModelKind] = []


def register_model_kind(kind: ModelKind) -> ModelKind:
    """Add a kind to those `model_kind_of` tries, in registration order (a kind registered later may not shadow
    one registered before: their class suffixes must not overlap)."""
    _KINDS.append(kind)
    return kind


def registered_kinds() -> Iterable[ModelKind]:
    return tuple(_KINDS)


def model_kind_of(model: nn.Module | None) -> ModelKind:
    """The registered kind that ``model`` (through a PEFT wrapper) is, or `OUTPUT_SHAPE`."""
    if model is None:
        return OUTPUT_SHAPE
    for kind in _KINDS:
        if kind.matches(model):
            return kind
    return OUTPUT_SHAPE


def base_model(model: nn.Module) -> nn.Module:
    """The model inside a PEFT wrapper (the model itself otherwise)."""
    return model.get_base_model() if is_peft_model(model) else model


def model_config(model: nn.Module | None):
    """The model's `PretrainedConfig` (through a PEFT wrapper too), or None for plain modules."""
    if model is None:
        return None
    return getattr(model, "config", None) or getattr(base_model(model), "config", None)


class ForwardInputs:
    """The keyword arguments ``model.forward`` names, and whether it takes any other (``**kwargs``).

    Two readers differ on purpose: a training batch was already reduced to the student's inputs by the `Trainer`,
    and a model that takes ``**kwargs`` gets all of it (``for_batch``); a raw dataset row (text, ids, labels) is
    reduced to the named inputs alone (``named``), as the `Trainer`'s ``remove_unused_columns`` does.
    """

    def __init__(self, model: nn.Module):
        forward = getattr(model, "forward", None)
        parameters = inspect.signature(forward).parameters.values() if forward is not None else ()
        self.names = {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        self.takes_any = forward is None or any(p.kind is p.VAR_KEYWORD for p in parameters)

    def for_batch(self, batch: dict) -> dict:
        """The batch's entries this forward accepts: all of them when it takes ``**kwargs``."""
        return dict(batch) if self.takes_any else {k: v for k, v in batch.items() if k in self.names}

    def named(self, batch: dict) -> dict:
        """The batch's entries this forward names (all of them when it names none)."""
        return {k: v for k, v in batch.items() if k in self.names} if self.names else dict(batch)
