"""The intermediate terms of the student loss (hidden states, embeddings, attention maps), TinyBERT-style.

Which student layer learns from which teacher layer is a *layer map*; how a student feature is brought
to the teacher's shape is a learned projection (`hf_prokt.losses.projections`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn

from .logits import masked_mse
from .projections import FeatureProjection, grid_of

logger = logging.getLogger(__name__)


def uniform_layer_map(num_student_layers: int, num_teacher_layers: int) -> list[int]:
    """Student layer ``i`` (1-based) learns from teacher layer ``i * L_teacher / L_student``, rounded half up.

    >>> uniform_layer_map(6, 12)
    [2, 4, 6, 8, 10, 12]
    >>> uniform_layer_map(4, 6)
    [2, 3, 5, 6]
    """
    if num_student_layers < 1 or num_teacher_layers < 1:
        raise ValueError("layer maps need at least one layer in each model")
    return [max(1, math.floor((i + 1) * num_teacher_layers / num_student_layers + 0.5))
            for i in range(num_student_layers)]


def resolve_layer_map(layer_map: str | Sequence[int], num_student_layers: int, num_teacher_layers: int) -> list[int]:
    """Turn the `layer_map` argument into one 1-based teacher layer index per student layer."""
    if layer_map == "uniform":
        return uniform_layer_map(num_student_layers, num_teacher_layers)
    layer_map = list(layer_map)
    if len(layer_map) != num_student_layers:
        raise ValueError(
            f"layer_map has {len(layer_map)} entries but the student has {num_student_layers} layers. "
            f"Give one teacher layer (1..{num_teacher_layers}) per student layer, or use 'uniform'."
        )
    if any(not 1 <= index <= num_teacher_layers for index in layer_map):
        raise ValueError(
            f"layer_map {layer_map} names a layer outside the teacher's 1..{num_teacher_layers}. "
            "Teacher layers are numbered from 1 (0 is the embedding output)."
        )
    return layer_map


class IntermediateDistiller(nn.Module):
    """The intermediate terms of the student loss, with their learned projections.

    ``loss = w_h * mean_i MSE(P_i(h_S[i]), h_T[map[i]]) + w_e * MSE(P_0(h_S[0]), h_T[0])
    + w_a * mean_i MSE(a_S[i], a_T[map[i]])``, where ``h[0]`` is the embedding output, ``h[i]`` the
    output of layer ``i`` and ``a[i]`` its attention probabilities ``[B, heads, L, L]``.
    """

    def __init__(
        self,
        student_outputs,
        teacher_outputs,
        layer_map: str | Sequence[int] = "uniform",
        hidden_weight: float = 0.0,
        embedding_weight: float = 0.0,
        attention_weight: float = 0.0,
        student_config=None,
        teacher_config=None,
    ):
        """Build the projections from one pair of example outputs (``output_hidden_states`` and/or
        ``output_attentions`` on), which fixes every shape. The configs, when given, tell a ViT's patch
        grid (``image_size`` / ``patch_size``); without them it is found from the token count."""
        super().__init__()
        self.hidden_weight, self.embedding_weight, self.attention_weight = (
            hidden_weight, embedding_weight, attention_weight,
        )
        needs_hidden = hidden_weight > 0 or embedding_weight > 0
        student_hidden = _features(student_outputs, "hidden_states", "student", needs_hidden)
        teacher_hidden = _features(teacher_outputs, "hidden_states", "teacher", needs_hidden)
        student_attn = _features(student_outputs, "attentions", "student", attention_weight > 0)
        teacher_attn = _features(teacher_outputs, "attentions", "teacher", attention_weight > 0)

        if needs_hidden:
            num_student, num_teacher = len(student_hidden) - 1, len(teacher_hidden) - 1
        else:
            num_student, num_teacher = len(student_attn), len(teacher_attn)
        self.layer_map = resolve_layer_map(layer_map, num_student, num_teacher)

        def projection(student_feature, teacher_feature):
            return FeatureProjection(
                student_feature.shape, teacher_feature.shape,
                grid_of(student_feature, student_config), grid_of(teacher_feature, teacher_config),
            )

        self.hidden_projections = nn.ModuleList(
            projection(student_hidden[i + 1], teacher_hidden[t]) for i, t in enumerate(self.layer_map)
        ) if hidden_weight > 0 else None
        self.embedding_projection = (
            projection(student_hidden[0], teacher_hidden[0]) if embedding_weight > 0 else None
        )
        if attention_weight > 0:
            for i, t in enumerate(self.layer_map):
                s_shape, t_shape = student_attn[i].shape, teacher_attn[t - 1].shape
                if s_shape[2:] != t_shape[2:]:
                    raise ValueError(
                        f"attention maps of student layer {i + 1} {list(s_shape)} and teacher layer {t} "
                        f"{list(t_shape)} cover different token counts: text models must read the same tokens (one "
                        "tokenizer), and ViTs the same patch grid. For ViTs with different grids, use the "
                        "hidden-state term (hidden_distill_weight), which resizes the grids, and "
                        "attention_distill_weight=0."
                    )
            if student_attn[0].shape[1] != teacher_attn[0].shape[1]:
                logger.warning(
                    "Student and teacher have different numbers of attention heads (%d vs %d): the attention "
                    "term compares head-averaged attention maps.",
                    student_attn[0].shape[1], teacher_attn[0].shape[1],
                )

    def forward(self, student_outputs, teacher_outputs, attention_mask: torch.Tensor | None = None):
        """Compute the weighted intermediate loss.

        Args:
            student_outputs: the student's model output (with a graph).
            teacher_outputs: the teacher's model output (no graph: its features are targets).
            attention_mask: ``[B, L]`` for token models, so that padding does not count; None otherwise.

        Returns:
            ``(loss, parts)``: a scalar and the detached ``hidden_loss`` / ``embedding_loss`` /
            ``attention_loss`` that went into it.
        """
        parts: dict[str, torch.Tensor] = {}
        total = None

        def add(name, weight, value):
            nonlocal total
            parts[name] = value.detach()
            total = weight * value if total is None else total + weight * value

        if self.hidden_projections is not None:
            losses = [
                self._feature_loss(proj, student_outputs.hidden_states[i + 1], teacher_outputs.hidden_states[t],
                                   attention_mask)
                for i, (proj, t) in enumerate(zip(self.hidden_projections, self.layer_map))
            ]
            add("hidden_loss", self.hidden_weight, torch.stack(losses).mean())
        if self.embedding_projection is not None:
            add("embedding_loss", self.embedding_weight, self._feature_loss(
                self.embedding_projection, student_outputs.hidden_states[0], teacher_outputs.hidden_states[0],
                attention_mask))
        if self.attention_weight > 0:
            losses = [
                _attention_loss(student_outputs.attentions[i], teacher_outputs.attentions[t - 1], attention_mask)
                for i, t in enumerate(self.layer_map)
            ]
            add("attention_loss", self.attention_weight, torch.stack(losses).mean())
        return total, parts

    @staticmethod
    def _feature_loss(projection, student_feature, teacher_feature, attention_mask):
        mask = attention_mask if projection.kind == "tokens" else None
        if mask is not None and mask.shape[1] != student_feature.shape[1]:
            mask = None
        return masked_mse(projection(student_feature), projection.target(teacher_feature.detach()), mask)


def _attention_loss(student_attn: torch.Tensor, teacher_attn: torch.Tensor, mask: torch.Tensor | None):
    """MSE between attention probabilities ``[B, heads, L, L]`` over non-padding query rows; when head
    counts differ, between head-averaged maps."""
    teacher_attn = teacher_attn.detach()
    if student_attn.shape[1] != teacher_attn.shape[1]:
        student_attn = student_attn.mean(dim=1, keepdim=True)
        teacher_attn = teacher_attn.mean(dim=1, keepdim=True)
    if mask is not None and mask.shape[1] != student_attn.shape[2]:
        mask = None
    # Query axis second, so that the [B, L] padding mask applies to it.
    return masked_mse(student_attn.transpose(1, 2), teacher_attn.transpose(1, 2), mask)


def _features(outputs, name: str, who: str, required: bool):
    features = getattr(outputs, name, None) if required else None
    if required and not features:
        hint = (
            "Load it with attn_implementation='eager' (fused attention kernels return no attention maps)."
            if name == "attentions"
            else "Use a model whose forward accepts output_hidden_states=True."
        )
        raise ValueError(
            f"the {who} model returned no {name}, which the intermediate distillation terms need. {hint} "
            "Or set the matching *_distill_weight to 0."
        )
    return features
