"""Find and zero the final classification layer of a Hugging Face classifier."""

from __future__ import annotations

import torch
from torch import nn


def classification_layer(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` whose output size is the model's ``num_labels``.

    That is ``classifier`` for BERT, ViT and ResNet, ``classifier.out_proj`` for RoBERTa, and so on,
    found by shape so that any ``AutoModelFor*Classification`` head works.
    """
    num_labels = getattr(getattr(model, "config", None), "num_labels", None)
    candidates = [
        module for module in model.modules()
        if isinstance(module, nn.Linear) and (num_labels is None or module.out_features == num_labels)
    ]
    if not candidates:
        raise ValueError(
            f"no linear classification layer with {num_labels} outputs found in {type(model).__name__}; "
            "zero_init_classifier needs one. Set zero_init_classifier=False for this model."
        )
    return candidates[-1]


@torch.no_grad()
def zero_classification_layer(model: nn.Module) -> nn.Linear:
    """Zero the weight and bias of the classification layer (the authors' initialisation)."""
    layer = classification_layer(model)
    layer.weight.zero_()
    if layer.bias is not None:
        layer.bias.zero_()
    return layer
