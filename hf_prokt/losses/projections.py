"""Learned projections that bring a student feature to the shape of the matching teacher feature.

A projection is chosen by the features' shapes, never by the model's name:

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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


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


def grid_of(feature: torch.Tensor, config) -> TokenGrid | None:
    """The patch grid of a token sequence ``[B, L, D]`` from the model's config, if it has one."""
    if feature.dim() != 3 or config is None:
        return None
    grid = token_grid(feature.shape[1], config)
    image_size = getattr(getattr(config, "vision_config", None) or config, "image_size", None)
    return grid if image_size is not None else None
