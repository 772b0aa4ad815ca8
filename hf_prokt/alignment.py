"""Intermediate (hidden-state, embedding, attention) distillation between a student and a teacher.

Which student layer learns from which teacher layer is a *layer map*; how a student feature is
brought to the teacher's shape is a learned *projection* chosen by the features' shapes, never by
the model's name:

* token sequences ``[B, L, D]`` (BERT-like encoders, ViT): a linear map ``D_student -> D_teacher``;
  when the token counts differ (ViTs with other patch or image sizes), the student's patch grid is
  resized to the teacher's and the [CLS] token is matched on its own;
* feature maps ``[B, C, H, W]`` (ResNet-like stages): a 1x1 convolution ``C_student -> C_teacher``,
  then a spatial resize to the teacher's ``H x W`` when they differ;
* a ViT against a ResNet: the ViT's patch tokens are read as a ``[B, D, h, w]`` map, then as above.

The projections belong to the distillation, not to the student: the trainer optimises them with the
student and never saves them inside it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .losses import masked_mse

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


@dataclass(frozen=True)
class TokenGrid:
    """How a token sequence ``[B, L, D]`` lays out an image: ``prefix`` leading tokens ([CLS],
    distillation or register tokens) followed by ``height x width`` patch tokens in row-major order."""

    prefix: int
    height: int
    width: int

    @property
    def num_tokens(self) -> int:
        return self.prefix + self.height * self.width


MAX_PREFIX_TOKENS = 8


def token_grid(num_tokens: int, config=None) -> TokenGrid | None:
    """The patch grid behind a sequence of ``num_tokens`` tokens, or None when there is none to find.

    From the config's ``image_size`` and ``patch_size`` when they account for the tokens with at most
    `MAX_PREFIX_TOKENS` leading ones (ViT, DeiT, BEiT, ViTs with register tokens); else from the count
    alone, as a square grid after 1 ([CLS], the common case), 0 or 2 ([CLS] and distillation) leading
    tokens.
    """
    config = getattr(config, "vision_config", None) or config
    image_size, patch_size = getattr(config, "image_size", None), getattr(config, "patch_size", None)
    if image_size is not None and patch_size is not None:
        height, width = (_pair(image_size)[0] // _pair(patch_size)[0], _pair(image_size)[1] // _pair(patch_size)[1])
        if 0 <= num_tokens - height * width <= MAX_PREFIX_TOKENS:
            return TokenGrid(num_tokens - height * width, height, width)
    for prefix in (1, 0, 2):
        side = math.isqrt(max(num_tokens - prefix, 0))
        if side > 0 and side * side == num_tokens - prefix:
            return TokenGrid(prefix, side, side)
    return None


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, C, H, W] -> [B, C, *size]``: average pooling when shrinking both sides, bilinear otherwise."""
    if tuple(maps.shape[2:]) == tuple(size):
        return maps
    if size[0] <= maps.shape[2] and size[1] <= maps.shape[3]:
        return F.adaptive_avg_pool2d(maps, size)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def _tokens_to_map(tokens: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
    """The patch tokens of ``[B, L, D]`` as a map ``[B, D, height, width]`` (leading tokens dropped)."""
    patches = tokens[:, grid.prefix:]
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], grid.height, grid.width)


def _map_to_tokens(maps: torch.Tensor) -> torch.Tensor:
    """``[B, C, H, W] -> [B, H*W, C]``, row-major like patch tokens."""
    return maps.flatten(2).transpose(1, 2)


class FeatureProjection(nn.Module):
    """A learned map from one student feature to the matching teacher feature, chosen by their shapes.

    Built from example shapes (batch axis included):

    * ``[B, L, D_s] -> [B, L, D_t]``, same token count (text, or ViTs on the same patch grid): a linear
      layer, token by token;
    * ``[B, L_s, D_s] -> [B, L_t, D_t]``, different token counts (ViTs with other patch or image sizes):
      a linear layer, then the student's patch grid is resized (average-pooled or bilinearly
      interpolated) to the teacher's; the [CLS] token is matched with the teacher's [CLS] token, never
      mixed with the patches, and other leading tokens (distillation, registers) are compared only when
      both models have the same number of them;
    * ``[B, C_s, H_s, W_s] -> [B, C_t, H_t, W_t]`` (ResNet-like stages): a 1x1 convolution and a resize;
    * across kinds, a ViT's patch tokens are read as a ``[B, D, h, w]`` map (its leading tokens have no
      place in a map and are left out): a 1x1 convolution and a resize to the teacher's grid.

    `forward` maps the student feature; `target` picks the part of the teacher feature it is compared
    with (the whole feature except leading tokens that have no student counterpart). When the widths
    already match, the projection starts as the identity.
    """

    def __init__(self, student_shape: Sequence[int], teacher_shape: Sequence[int],
                 student_grid: TokenGrid | None = None, teacher_grid: TokenGrid | None = None):
        """``student_grid``/``teacher_grid``: the layout of a token sequence, needed only when token
        counts differ or when a sequence meets a feature map; found from the shape when not given."""
        super().__init__()
        student_shape, teacher_shape = tuple(student_shape), tuple(teacher_shape)
        for who, shape in (("student", student_shape), ("teacher", teacher_shape)):
            if len(shape) not in (3, 4):
                raise ValueError(
                    f"unsupported {who} feature shape {list(shape)}: expected a token sequence [B, L, D] or a "
                    "feature map [B, C, H, W]."
                )
        self.student_kind = "tokens" if len(student_shape) == 3 else "maps"
        self.teacher_kind = "tokens" if len(teacher_shape) == 3 else "maps"
        self.student_grid = self.teacher_grid = None
        self.compared_prefix = 0  # leading teacher tokens compared with the student's, in order

        if self.student_kind == self.teacher_kind == "tokens" and student_shape[1] == teacher_shape[1]:
            self.kind = "tokens"
        elif self.student_kind == self.teacher_kind == "maps":
            self.kind = "maps"
        else:
            self.kind = "grid"
            if self.student_kind == "tokens":
                self.student_grid = student_grid or token_grid(student_shape[1])
            if self.teacher_kind == "tokens":
                self.teacher_grid = teacher_grid or token_grid(teacher_shape[1])
            self._check_grids(student_shape, teacher_shape)
            if self.student_grid is not None and self.teacher_grid is not None:
                self.compared_prefix = _compared_prefix(self.student_grid.prefix, self.teacher_grid.prefix)

        student_width = student_shape[2] if self.student_kind == "tokens" else student_shape[1]
        teacher_width = teacher_shape[2] if self.teacher_kind == "tokens" else teacher_shape[1]
        if self.kind == "maps" or (self.kind == "grid" and "maps" in (self.student_kind, self.teacher_kind)):
            self.proj = nn.Conv2d(student_width, teacher_width, kernel_size=1)
        else:
            self.proj = nn.Linear(student_width, teacher_width)
        if self.teacher_kind == "maps":
            self.target_size = tuple(teacher_shape[2:])
        elif self.teacher_grid is not None:
            self.target_size = (self.teacher_grid.height, self.teacher_grid.width)
        if student_width == teacher_width:
            self._init_identity()

    def _check_grids(self, student_shape, teacher_shape) -> None:
        for who, kind, grid, shape in (("student", self.student_kind, self.student_grid, student_shape),
                                       ("teacher", self.teacher_kind, self.teacher_grid, teacher_shape)):
            if kind == "tokens" and grid is None:
                other = teacher_shape if who == "student" else student_shape
                raise ValueError(
                    f"cannot align the {who}'s token sequence {list(shape)} with the other model's feature "
                    f"{list(other)}: its {shape[1]} tokens are not a patch grid (a [CLS] token and a square of "
                    "patches, or the config's image_size / patch_size). Text models must read the same tokens "
                    "(one tokenizer for both); for other pairs use logit distillation alone "
                    "(hidden_distill_weight=0, embedding_distill_weight=0)."
                )

    def _init_identity(self) -> None:
        with torch.no_grad():
            weight = self.proj.weight
            weight.zero_()
            eye = torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)
            weight.view(weight.shape[0], weight.shape[1]).copy_(eye)
            self.proj.bias.zero_()

    def _project(self, feature: torch.Tensor) -> torch.Tensor:
        feature = feature.to(self.proj.weight.dtype)
        if isinstance(self.proj, nn.Conv2d) and feature.dim() == 3:  # a ViT's patches, read as a map
            feature = _tokens_to_map(feature, self.student_grid)
        return self.proj(feature)

    def forward(self, student_feature: torch.Tensor) -> torch.Tensor:
        """The student feature in the teacher's layout: ``[B, L, D_t]`` (or ``[B, K + h_t*w_t, D_t]`` with
        ``K`` compared leading tokens), or ``[B, C_t, H_t, W_t]``; the same shape as ``target(...)``."""
        if self.kind == "tokens":
            return self._project(student_feature)
        if self.kind == "maps":
            return _resize(self._project(student_feature), self.target_size)
        projected = self._project(student_feature)
        leading = None
        if projected.dim() == 3:  # token -> token with other grids: [CLS] apart, patches resized
            leading = projected[:, :self.compared_prefix]
            projected = _tokens_to_map(projected, self.student_grid)
        maps = _resize(projected, self.target_size)
        if self.teacher_kind == "maps":
            return maps
        tokens = _map_to_tokens(maps)
        return tokens if leading is None else torch.cat([leading, tokens], dim=1)

    def target(self, teacher_feature: torch.Tensor) -> torch.Tensor:
        """The part of the teacher feature the projected student feature is compared with."""
        if self.kind != "grid" or self.teacher_kind == "maps":
            return teacher_feature
        grid = self.teacher_grid
        patches = teacher_feature[:, grid.prefix:]
        if self.compared_prefix == 0:
            return patches
        return torch.cat([teacher_feature[:, :self.compared_prefix], patches], dim=1)


def _compared_prefix(student_prefix: int, teacher_prefix: int) -> int:
    """Leading tokens compared one to one: all of them when both models have the same number, else the
    [CLS] token alone (first in both), else none."""
    if student_prefix == teacher_prefix:
        return student_prefix
    return 1 if min(student_prefix, teacher_prefix) >= 1 else 0


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
                _grid_of(student_feature, student_config), _grid_of(teacher_feature, teacher_config),
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

    @property
    def needs_hidden_states(self) -> bool:
        return self.hidden_weight > 0 or self.embedding_weight > 0

    @property
    def needs_attentions(self) -> bool:
        return self.attention_weight > 0

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


def _grid_of(feature: torch.Tensor, config) -> TokenGrid | None:
    """The patch grid of a token sequence ``[B, L, D]`` from the model's config, if it has one."""
    if feature.dim() != 3 or config is None:
        return None
    grid = token_grid(feature.shape[1], config)
    image_size = getattr(getattr(config, "vision_config", None) or config, "image_size", None)
    return grid if image_size is not None else None


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
