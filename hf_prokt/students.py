"""Build a smaller student from a teacher: same architecture and tokenizer, fewer layers, and for the BERT family
narrower layers.

Shallower (every architecture with one layer list): the usual way to get a 6-layer student from a 12-layer
teacher when no pretrained small model exists (DistilBERT, PKD): copy the teacher's config with fewer layers and
initialise the student from uniformly spaced teacher layers; every weight outside the layer stack (embeddings,
pooler, classifier) is copied as is.

Narrower (BERT, RoBERTa, XLM-RoBERTa, ELECTRA, DistilBERT, and MiniLM-style BERTs): weight selection (Xu et al.,
ICLR 2024, "Initializing Models with Larger Ones"). Every student weight is the teacher's weight restricted to
evenly spaced indices of each of its axes, one index set per kind of axis shared by the whole model, so the
student starts as a sub-network of the teacher:

- ``hidden``: the residual stream (``hidden_size``), the same indices in the embeddings, every layer, every
  LayerNorm and the heads;
- ``heads``: the concatenated attention heads of query, key and value (outputs) and of the attention output
  (input); whole teacher heads, evenly spaced, and within each the same evenly spaced head dims;
- ``ffn``: the intermediate neurons, the same in both feed-forward matrices;
- ``embedding``: ELECTRA's embedding width when it differs from ``hidden_size`` (kept whole); otherwise the
  ``hidden`` indices;
- ``vocab``, ``positions``, ``token_types``, ``labels``: kept whole (the tokenizer, the position table with
  RoBERTa's padding offset, and the labels stay the teacher's).

`_FAMILIES` names the axes of every parameter these architectures have; a parameter none of its rules covers is
refused, never copied unchanged.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

_LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layers", "num_layers", "n_layer")
INITS = ("teacher", "random")

# Axes whose indices are selected; every other axis name (vocab, positions, token_types, labels) is kept whole.
HIDDEN, HEADS, FFN, EMBEDDING = "hidden", "heads", "ffn", "embedding"
VOCAB, POSITIONS, TOKEN_TYPES, LABELS = "vocab", "positions", "token_types", "labels"


def uniform_indices(total: int, count: int) -> list[int]:
    """``count`` of ``range(total)`` spread evenly from 0, ``i * total // count``: ``(16, 8) -> [0, 2, ..., 14]``,
    ``(768, 312) -> [0, 2, 4, 7, 9, ...]``. The layer choice and the width selection both use it."""
    return [i * total // count for i in range(count)]


def uniform_layer_selection(num_teacher_layers: int, num_student_layers: int) -> list[int]:
    """0-based teacher layers spread evenly from the first one: ``(12, 6) -> [0, 2, 4, 6, 8, 10]``."""
    if not 1 <= num_student_layers <= num_teacher_layers:
        raise ValueError(
            f"a student built from a {num_teacher_layers}-layer teacher needs 1..{num_teacher_layers} layers, "
            f"not {num_student_layers}."
        )
    return uniform_indices(num_teacher_layers, num_student_layers)


def _layer_count_key(config) -> str:
    for key in _LAYER_COUNT_KEYS:
        if isinstance(getattr(config, key, None), int):
            return key
    raise ValueError(
        f"{type(config).__name__} names its layer count with none of {_LAYER_COUNT_KEYS}; build the student "
        "from a config yourself and pass it as model=..."
    )


def _layer_stack_prefix(model: nn.Module, num_layers: int) -> str:
    """The state-dict prefix of the model's one ``nn.ModuleList`` of ``num_layers`` layers."""
    stacks = [name for name, module in model.named_modules()
              if isinstance(module, nn.ModuleList) and len(module) == num_layers and name]
    if len(stacks) != 1:
        raise ValueError(
            f"{type(model).__name__} has {len(stacks)} layer lists of length {num_layers} ({stacks}); "
            "student_from_teacher needs exactly one. Build the student yourself for this architecture."
        )
    return stacks[0] + "."


# ---- The width rules: per parameter name, the axis kind of each dimension (a weight is [out, in]) ----

_BERT_LAYER = r"encoder\.layer\.\d+\."
_BERT_BASE = (  # names inside the base model (BertModel, RobertaModel, ElectraModel)
    (r"embeddings\.word_embeddings\.weight", (VOCAB, EMBEDDING)),
    (r"embeddings\.position_embeddings\.weight", (POSITIONS, EMBEDDING)),
    (r"embeddings\.token_type_embeddings\.weight", (TOKEN_TYPES, EMBEDDING)),
    (r"embeddings\.LayerNorm\.(weight|bias)", (EMBEDDING,)),
    (_BERT_LAYER + r"attention\.self\.(query|key|value)\.weight", (HEADS, HIDDEN)),
    (_BERT_LAYER + r"attention\.self\.(query|key|value)\.bias", (HEADS,)),
    (_BERT_LAYER + r"attention\.output\.dense\.weight", (HIDDEN, HEADS)),
    (_BERT_LAYER + r"attention\.output\.dense\.bias", (HIDDEN,)),
    (_BERT_LAYER + r"attention\.output\.LayerNorm\.(weight|bias)", (HIDDEN,)),
    (_BERT_LAYER + r"intermediate\.dense\.weight", (FFN, HIDDEN)),
    (_BERT_LAYER + r"intermediate\.dense\.bias", (FFN,)),
    (_BERT_LAYER + r"output\.dense\.weight", (HIDDEN, FFN)),
    (_BERT_LAYER + r"output\.dense\.bias", (HIDDEN,)),
    (_BERT_LAYER + r"output\.LayerNorm\.(weight|bias)", (HIDDEN,)),
    (r"pooler\.dense\.weight", (HIDDEN, HIDDEN)),
    (r"pooler\.dense\.bias", (HIDDEN,)),
)
_LINEAR_CLASSIFIER = (  # BERT's sequence and token classifiers, RoBERTa's and ELECTRA's token classifiers
    (r"classifier\.weight", (LABELS, HIDDEN)),
    (r"classifier\.bias", (LABELS,)),
)
_CLASSIFICATION_HEAD = (  # RoBERTa's and ELECTRA's sequence classifier: dense + tanh + out_proj
    (r"classifier\.dense\.weight", (HIDDEN, HIDDEN)),
    (r"classifier\.dense\.bias", (HIDDEN,)),
    (r"classifier\.out_proj\.weight", (LABELS, HIDDEN)),
    (r"classifier\.out_proj\.bias", (LABELS,)),
)
_BERT_HEADS = _LINEAR_CLASSIFIER + (
    (r"cls\.predictions\.transform\.dense\.weight", (HIDDEN, HIDDEN)),
    (r"cls\.predictions\.transform\.dense\.bias", (HIDDEN,)),
    (r"cls\.predictions\.transform\.LayerNorm\.(weight|bias)", (HIDDEN,)),
    (r"cls\.predictions\.decoder\.weight", (VOCAB, HIDDEN)),  # tied to the word embeddings
    (r"cls\.predictions\.(decoder\.)?bias", (VOCAB,)),
)
_ROBERTA_HEADS = _LINEAR_CLASSIFIER + _CLASSIFICATION_HEAD + (
    (r"lm_head\.dense\.weight", (HIDDEN, HIDDEN)),
    (r"lm_head\.dense\.bias", (HIDDEN,)),
    (r"lm_head\.layer_norm\.(weight|bias)", (HIDDEN,)),
    (r"lm_head\.decoder\.weight", (VOCAB, HIDDEN)),  # tied to the word embeddings
    (r"lm_head\.(decoder\.)?bias", (VOCAB,)),
)
_ELECTRA_BASE = _BERT_BASE + (
    (r"embeddings_project\.weight", (HIDDEN, EMBEDDING)),
    (r"embeddings_project\.bias", (HIDDEN,)),
)
_ELECTRA_HEADS = _LINEAR_CLASSIFIER + _CLASSIFICATION_HEAD + (
    (r"generator_predictions\.dense\.weight", (EMBEDDING, HIDDEN)),
    (r"generator_predictions\.dense\.bias", (EMBEDDING,)),
    (r"generator_predictions\.LayerNorm\.(weight|bias)", (EMBEDDING,)),
    (r"generator_lm_head\.weight", (VOCAB, EMBEDDING)),  # tied to the word embeddings
    (r"generator_lm_head\.bias", (VOCAB,)),
)
_DISTILBERT_LAYER = r"transformer\.layer\.\d+\."
_DISTILBERT_BASE = (
    (r"embeddings\.word_embeddings\.weight", (VOCAB, HIDDEN)),
    (r"embeddings\.position_embeddings\.weight", (POSITIONS, HIDDEN)),
    (r"embeddings\.LayerNorm\.(weight|bias)", (HIDDEN,)),
    (_DISTILBERT_LAYER + r"attention\.(q|k|v)_lin\.weight", (HEADS, HIDDEN)),
    (_DISTILBERT_LAYER + r"attention\.(q|k|v)_lin\.bias", (HEADS,)),
    (_DISTILBERT_LAYER + r"attention\.out_lin\.weight", (HIDDEN, HEADS)),
    (_DISTILBERT_LAYER + r"attention\.out_lin\.bias", (HIDDEN,)),
    (_DISTILBERT_LAYER + r"(sa_layer_norm|output_layer_norm)\.(weight|bias)", (HIDDEN,)),
    (_DISTILBERT_LAYER + r"ffn\.lin1\.weight", (FFN, HIDDEN)),
    (_DISTILBERT_LAYER + r"ffn\.lin1\.bias", (FFN,)),
    (_DISTILBERT_LAYER + r"ffn\.lin2\.weight", (HIDDEN, FFN)),
    (_DISTILBERT_LAYER + r"ffn\.lin2\.bias", (HIDDEN,)),
)
_DISTILBERT_HEADS = _LINEAR_CLASSIFIER + (
    (r"pre_classifier\.weight", (HIDDEN, HIDDEN)),
    (r"pre_classifier\.bias", (HIDDEN,)),
    (r"vocab_transform\.weight", (HIDDEN, HIDDEN)),
    (r"vocab_transform\.bias", (HIDDEN,)),
    (r"vocab_layer_norm\.(weight|bias)", (HIDDEN,)),
    (r"vocab_projector\.weight", (VOCAB, HIDDEN)),  # tied to the word embeddings
    (r"vocab_projector\.bias", (VOCAB,)),
)


@dataclass(frozen=True)
class _Family:
    """How one architecture names its widths in the config and the axes of its parameters."""

    name: str
    hidden_key: str
    ffn_key: str
    heads_key: str
    base_rules: tuple
    head_rules: tuple
    embedding_key: str | None = None

    def axes(self, name: str, base_prefix: str | None) -> tuple[str, ...] | None:
        """The axis kinds of the state-dict entry ``name``; None when no rule covers it. ``base_prefix`` is the
        base model's attribute (``"bert."``) in a model with a head, None in a headless one."""
        if base_prefix is None:
            rules = self.base_rules
        elif name.startswith(base_prefix):
            rules, name = self.base_rules, name[len(base_prefix):]
        else:
            rules = self.head_rules
        for pattern, axes in rules:
            if re.fullmatch(pattern, name):
                return axes
        return None


_BERT = _Family("BERT", "hidden_size", "intermediate_size", "num_attention_heads", _BERT_BASE, _BERT_HEADS)
_ROBERTA = _Family("RoBERTa", "hidden_size", "intermediate_size", "num_attention_heads", _BERT_BASE, _ROBERTA_HEADS)
_FAMILIES = {
    "bert": _BERT,
    "roberta": _ROBERTA,
    "xlm-roberta": _ROBERTA,
    "electra": _Family("ELECTRA", "hidden_size", "intermediate_size", "num_attention_heads", _ELECTRA_BASE,
                       _ELECTRA_HEADS, embedding_key="embedding_size"),
    "distilbert": _Family("DistilBERT", "dim", "hidden_dim", "n_heads", _DISTILBERT_BASE, _DISTILBERT_HEADS),
}


@dataclass(frozen=True)
class _Widths:
    hidden: int
    ffn: int
    heads: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    return value


def _student_widths(teacher: _Widths, hidden_size: int | None, intermediate_size: int | None,
                    num_attention_heads: int | None) -> _Widths:
    """The student's widths from the requested ones and the teacher's, with the defaults of
    `student_from_teacher`; refuses a width wider than the teacher's or heads that do not fit."""
    hidden = teacher.hidden if hidden_size is None else _positive("hidden_size", hidden_size)
    if hidden > teacher.hidden:
        raise ValueError(f"hidden_size={hidden} is wider than the teacher's {teacher.hidden}: a student's weights "
                         f"are selected from the teacher's, so give hidden_size <= {teacher.hidden}.")
    fits = [n for n in range(1, teacher.heads + 1) if hidden % n == 0 and hidden // n <= teacher.head_dim]
    if num_attention_heads is None:
        if hidden % teacher.head_dim == 0:
            heads = hidden // teacher.head_dim
        elif hidden % teacher.heads == 0:
            heads = teacher.heads
        else:
            hint = (f"so there is no default head count: give num_attention_heads, one of {fits}" if fits else
                    f"and no head count fits it (at most {teacher.heads} heads of at most {teacher.head_dim}): "
                    f"choose a hidden_size that divides by {teacher.head_dim} or by {teacher.heads}")
            raise ValueError(f"hidden_size={hidden} divides neither by the teacher's head size {teacher.head_dim} "
                             f"nor by its {teacher.heads} heads, {hint}.")
    else:
        heads = _positive("num_attention_heads", num_attention_heads)
        if heads not in fits:
            why = (f"more than the teacher's {teacher.heads} heads" if heads > teacher.heads else
                   f"{hidden} does not divide into {heads} heads" if hidden % heads else
                   f"{heads} heads of {hidden // heads} are wider than the teacher's heads of {teacher.head_dim}")
            fix = f"num_attention_heads one of {fits}" if fits else "another hidden_size"
            raise ValueError(f"num_attention_heads={heads} with hidden_size={hidden}: {why} (each student head is "
                             f"selected from one teacher head). Give {fix}.")
    if intermediate_size is None:
        ffn = max(1, round(teacher.ffn * hidden / teacher.hidden))
    else:
        ffn = _positive("intermediate_size", intermediate_size)
        if ffn > teacher.ffn:
            raise ValueError(f"intermediate_size={ffn} is wider than the teacher's {teacher.ffn}: give "
                             f"intermediate_size <= {teacher.ffn}.")
    return _Widths(hidden, ffn, heads)


def _auto_class_name(model: nn.Module) -> str:
    """The ``AutoModelFor...`` class that builds ``type(model)`` from its config, for messages."""
    from transformers.models.auto import modeling_auto

    model_type, class_name = getattr(model.config, "model_type", None), type(model).__name__
    for auto, mapping in (("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
                          ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
                          ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
                          ("AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
                          ("AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"),
                          ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
                          ("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
                          ("AutoModel", "MODEL_MAPPING_NAMES")):
        names = getattr(modeling_auto, mapping, {}).get(model_type)
        if class_name == names or (isinstance(names, (tuple, list)) and class_name in names):
            return auto
    return "AutoModelFor<task>"


def _unsupported_width(teacher: nn.Module) -> ValueError:
    model_type = getattr(teacher.config, "model_type", None)
    return ValueError(
        f"student_from_teacher makes narrower students only for the BERT family (model_type one of "
        f"{sorted(_FAMILIES)}); {type(teacher).__name__} (model_type {model_type!r}) can only be made shallower "
        "here (num_layers, layers). Build a narrower student by hand: config = copy.deepcopy(teacher.config) with "
        f"the smaller sizes set, student = {_auto_class_name(teacher)}.from_config(config) (random weights, or load "
        "your own), and pass it as model=..."
    )


def _select_widths(state: dict[str, torch.Tensor], family: _Family, base_prefix: str | None,
                   indices: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """Every tensor of ``state`` restricted to ``indices[axis]`` along each of its selected axes (new tensors)."""
    uncovered = [name for name in state if family.axes(name, base_prefix) is None]
    if uncovered:
        raise ValueError(
            f"no width rule of student_from_teacher covers {uncovered} ({family.name}): narrowing would leave "
            "them unselected. Build the student without hidden_size/intermediate_size/num_attention_heads, or "
            "by hand (its config with the smaller sizes, from_config, and pass it as model=...)."
        )
    selected = {}
    for name, tensor in state.items():
        axes = family.axes(name, base_prefix)
        if tensor.dim() != len(axes):
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, not the {len(axes)} axes {axes} its rule names.")
        for dim, axis in enumerate(axes):
            if axis in indices:
                tensor = tensor.index_select(dim, torch.tensor(indices[axis], device=tensor.device))
        selected[name] = tensor
    return selected


def student_from_teacher(teacher: nn.Module, num_layers: int, layers: Sequence[int] | None = None, *,
                         hidden_size: int | None = None, intermediate_size: int | None = None,
                         num_attention_heads: int | None = None, init: str = "teacher") -> nn.Module:
    """A copy of ``teacher`` with ``num_layers`` layers, and for the BERT family optionally narrower, initialised
    from the teacher's weights (or at random, as a baseline).

    Args:
        teacher: a Hugging Face model (e.g. an ``AutoModelForSequenceClassification``).
        num_layers: the student's depth.
        layers: 0-based teacher layers to copy, one per student layer; default: uniformly spaced from
            the first layer (see [`uniform_layer_selection`]).
        hidden_size: the student's width ``H_s`` (default: the teacher's ``H_t``). BERT, RoBERTa, XLM-RoBERTa,
            ELECTRA and DistilBERT only; any other architecture is refused, with how to build one by hand.
        intermediate_size: the feed-forward width ``F_s`` (default: the teacher's ratio, ``round(F_t * H_s /
            H_t)``; 1248 for a 312-wide student of BERT-base).
        num_attention_heads: the student's heads ``n_s`` (default: the teacher's head size ``d_t = H_t / n_t``
            kept when ``H_s`` divides by it, i.e. ``H_s / d_t`` heads; else the teacher's ``n_t`` heads of
            ``H_s / n_t`` when that divides; else refused). Each student head is one teacher head, so ``n_s <=
            n_t`` and ``H_s / n_s <= d_t``.
        init: ``"teacher"`` (weights copied, and selected when narrower) or ``"random"`` (the same student
            config, freshly initialised by the model's own ``_init_weights``: the baseline selection is compared
            with; ``layers`` then has no meaning and is refused).

    A narrower student's weights are selected from the teacher's layers ``layers`` (the module docstring gives
    the axes): evenly spaced indices ``i * T // S``, one set per kind of axis for the whole model. For a
    query weight ``[n_t * d_t, H_t]``, the student's ``[n_s * d_s, H_s]`` is rows ``h * d_t + j`` (``h`` of the
    ``n_s`` evenly spaced teacher heads, ``j`` of the ``d_s`` evenly spaced head dims) and the hidden columns;
    the word embeddings ``[V, H_t]`` keep every row and give ``[V, H_s]``; the first feed-forward matrix
    ``[F_t, H_t]`` gives ``[F_s, H_s]``, the second ``[H_t, F_t]`` the transposed choice. ELECTRA's embedding
    width, when it differs from ``hidden_size``, is kept (not narrowed); it follows ``hidden_size`` otherwise.

    Returns:
        A new model of the teacher's class, in the teacher's dtype and on its device. Depth only: student layer
        ``i`` equals teacher layer ``layers[i]`` and every other weight equals the teacher's. Its config records
        how it was made: ``config.student_from_teacher = {"teacher": <teacher's name or path>,
        "teacher_num_layers": ..., "teacher_layers": layers}`` (saved in config.json; the model card reads it),
        and, when a width or ``init`` was given, also ``"init"`` and ``"teacher_hidden_size"``,
        ``"student_hidden_size"``, ``"teacher_intermediate_size"``, ``"student_intermediate_size"``,
        ``"teacher_num_attention_heads"``, ``"student_num_attention_heads"`` (``teacher_layers`` is None for
        ``init="random"``: no layer is copied).

    Raises:
        ValueError: for a bad ``init``, layer choice or width (the message names the numbers and the fix), a
            narrower student of another architecture, or a parameter no width rule covers.
    """
    if init not in INITS:
        raise ValueError(f"init={init!r}: use 'teacher' (weights copied from the teacher, selected when narrower) "
                         "or 'random' (the same student freshly initialised).")
    if init == "random" and layers is not None:
        raise ValueError("layers= names teacher layers to copy, and init='random' copies none: leave layers out.")
    config = copy.deepcopy(teacher.config)
    key = _layer_count_key(config)
    num_teacher_layers = getattr(config, key)
    if layers is None:
        layers = uniform_layer_selection(num_teacher_layers, num_layers)
    layers = list(layers)
    if len(layers) != num_layers or any(not 0 <= i < num_teacher_layers for i in layers):
        raise ValueError(
            f"layers={layers} must name {num_layers} teacher layers in 0..{num_teacher_layers - 1}."
        )

    width_asked = any(v is not None for v in (hidden_size, intermediate_size, num_attention_heads))
    family = _FAMILIES.get(getattr(config, "model_type", None))
    if width_asked and family is None:
        raise _unsupported_width(teacher)
    widths = None
    if width_asked:
        teacher_widths = _Widths(getattr(config, family.hidden_key), getattr(config, family.ffn_key),
                                 getattr(config, family.heads_key))
        widths = _student_widths(teacher_widths, hidden_size, intermediate_size, num_attention_heads)
        embedding = getattr(config, family.embedding_key) if family.embedding_key else teacher_widths.hidden
        separate_embedding = embedding != teacher_widths.hidden
        if separate_embedding and widths.hidden == embedding:
            raise ValueError(
                f"hidden_size={widths.hidden} equals the teacher's embedding_size {embedding}: such a student has "
                "no embeddings_project, so the teacher's projection could not be selected. Choose another "
                "hidden_size (the embedding width is kept, not narrowed).")
        if getattr(config, "sinusoidal_pos_embds", False) and widths.hidden != teacher_widths.hidden:
            raise ValueError("this DistilBERT computes its position embeddings from its width "
                             "(sinusoidal_pos_embds=True): they cannot be selected. Keep the teacher's hidden_size.")

    setattr(config, key, num_layers)
    # Per-layer lists in the config (e.g. layer_types) follow the chosen layers.
    for name, value in list(vars(config).items()):
        if isinstance(value, list) and len(value) == num_teacher_layers and name != "id2label":
            setattr(config, name, [value[i] for i in layers])

    record = {"teacher": getattr(teacher.config, "_name_or_path", None) or None,
              "teacher_num_layers": num_teacher_layers, "teacher_layers": layers if init == "teacher" else None}
    if width_asked or init != "teacher":
        record["init"] = init
    if widths is not None:
        record.update(teacher_hidden_size=teacher_widths.hidden, student_hidden_size=widths.hidden,
                      teacher_intermediate_size=teacher_widths.ffn, student_intermediate_size=widths.ffn,
                      teacher_num_attention_heads=teacher_widths.heads, student_num_attention_heads=widths.heads)
        setattr(config, family.hidden_key, widths.hidden)
        setattr(config, family.ffn_key, widths.ffn)
        setattr(config, family.heads_key, widths.heads)
        if family.embedding_key and not separate_embedding:
            setattr(config, family.embedding_key, widths.hidden)
    # Recorded in the student's config.json (and read by the model card): how the student was made.
    config.student_from_teacher = record

    device, dtype = next(teacher.parameters()).device, next(teacher.parameters()).dtype
    if init == "random":
        return type(teacher)(config).to(device=device, dtype=dtype)

    prefix = _layer_stack_prefix(teacher, num_teacher_layers)
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.(.*)")
    teacher_state = teacher.state_dict()
    student_state = {}
    for student_index, teacher_index in enumerate(layers):
        for name, tensor in teacher_state.items():
            match = pattern.fullmatch(name)
            if match and int(match.group(1)) == teacher_index:
                student_state[f"{prefix}{student_index}.{match.group(2)}"] = tensor
    for name, tensor in teacher_state.items():
        if not pattern.fullmatch(name):
            student_state[name] = tensor

    if widths is not None:
        indices = {
            HIDDEN: uniform_indices(teacher_widths.hidden, widths.hidden),
            HEADS: [head * teacher_widths.head_dim + j
                    for head in uniform_indices(teacher_widths.heads, widths.heads)
                    for j in uniform_indices(teacher_widths.head_dim, widths.head_dim)],
            FFN: uniform_indices(teacher_widths.ffn, widths.ffn),
        }
        indices[EMBEDDING] = list(range(embedding)) if separate_embedding else indices[HIDDEN]
        base_prefix = None if teacher.base_model is teacher else teacher.base_model_prefix + "."
        student_state = _select_widths(student_state, family, base_prefix, indices)

    student = type(teacher)(config)
    student.to(device=device, dtype=dtype)
    expected = student.state_dict()
    wrong = {name: (tuple(tensor.shape), tuple(expected[name].shape)) for name, tensor in student_state.items()
             if name in expected and tensor.shape != expected[name].shape}
    if wrong:
        raise ValueError(f"the selected weights do not fit the student (name: (selected, student)): {wrong}.")
    missing, unexpected = student.load_state_dict(student_state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
        raise ValueError(
            f"could not map the teacher's weights onto the student (missing {missing}, unexpected {unexpected})."
        )
    return student
