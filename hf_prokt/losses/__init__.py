"""The losses, as pure functions and modules on tensors: nothing here knows models or the trainer.

- `logits`: KL, task and output-matching losses of ProKT, KD and fine-tuning, and the dual ascent;
- `intermediate`: the hidden-state, embedding and attention terms and their layer maps;
- `projections`: the learned maps from a student feature to the teacher's shape;
- `chunked`: the per-token KL and cross-entropy of LMs over chunks of positions, from hidden states and the output
  layer, never holding the [N, V] logits whole (not yet used by the trainer).
"""

from .intermediate import IntermediateDistiller, resolve_layer_map, uniform_layer_map
from .logits import (
    IGNORE_INDEX,
    dual_ascent,
    is_per_token,
    is_regression,
    kl_divergence,
    masked_mse,
    output_matching_loss,
    position_mask,
    student_loss,
    task_loss,
    teacher_dual_loss,
    teacher_penalty_loss,
)
from .projections import FeatureProjection, TokenGrid, token_grid

__all__ = ["IGNORE_INDEX", "FeatureProjection", "IntermediateDistiller", "TokenGrid", "dual_ascent", "is_per_token",
           "is_regression", "kl_divergence", "masked_mse", "output_matching_loss", "position_mask",
           "resolve_layer_map", "student_loss", "task_loss", "teacher_dual_loss", "teacher_penalty_loss",
           "token_grid", "uniform_layer_map"]
