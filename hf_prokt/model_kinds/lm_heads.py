"""A causal LM read before its logits: its last hidden states and its output layer, for the chunked losses.

A causal LM's forward ends with ``logits = lm_head(last_hidden_state)``, ``[B, L, V]``. The chunked losses
(`hf_prokt.losses.chunked`) need what comes before: the last hidden states ``[B, L, H]`` and the output layer's
weight ``[V, H]`` and bias ``[V]``. `forward_to_head_inputs` runs the model's own forward (through any DDP or
PEFT wrapper, so gradient synchronisation and adapters work as usual) with ``logits_to_keep`` set to no position,
so the output layer computes nothing, and captures the last hidden states from the inner model's output.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..eval_mode import eval_mode
from .base import base_model

_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")
"""Config fields of architectures whose logits are transformed after the output layer (Gemma 2's soft-cap,
Cohere's and Granite's scales): their last hidden states and output layer do not give their logits."""


@dataclass
class HeadInputs:
    """What an LM's logits are computed from: ``hidden [B, L, H]`` (its last hidden states, after the final norm),
    and its output layer's ``weight [V, H]`` and ``bias [V]`` (or None): ``logits = hidden @ weight.T + bias``."""

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None

    def detached(self, copy_head: bool = False) -> HeadInputs:
        """Without a graph. ``copy_head``: a copy of the output layer's weights, for a target used after its model
        has stepped (the optimizer changes the parameters in place)."""
        weight, bias = self.weight.detach(), None if self.bias is None else self.bias.detach()
        if copy_head:
            weight, bias = weight.clone(), None if bias is None else bias.clone()
        return HeadInputs(self.hidden.detach(), weight, bias)

    def rows(self, aligned: Callable[[torch.Tensor], torch.Tensor], keep: torch.Tensor | None) -> torch.Tensor:
        """``[N, H]``: the hidden states aligned with the predictions (``aligned``: e.g. ``h[:, :-1]`` for the
        next-token shift) at the ``keep`` positions (``[B, L']`` bool; all when None)."""
        states = aligned(self.hidden)
        return states[keep.to(states.device)] if keep is not None else states.reshape(-1, states.shape[-1])


def _inner_model(model: nn.Module) -> nn.Module:
    """The transformer under the LM head (``GPT2LMHeadModel.transformer``, ``LlamaForCausalLM.model``)."""
    model = base_model(model)
    inner = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if not isinstance(inner, nn.Module):
        raise ValueError(f"{type(model).__name__} has no inner model under its prefix {model.base_model_prefix!r}")
    return inner


def why_not_chunked(model: nn.Module) -> str | None:
    """Why ``model`` (unwrapped, or a PEFT model) cannot be read by `forward_to_head_inputs`, or None when it can."""
    lm = base_model(model)
    if "logits_to_keep" not in inspect.signature(lm.forward).parameters:
        return f"{type(lm).__name__}.forward takes no logits_to_keep"
    output_layer = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if type(output_layer) is not nn.Linear:
        return f"its output layer is a {type(output_layer).__name__}, not a plain Linear (an adapter on lm_head?)"
    for name in _LOGIT_TRANSFORMS:
        if getattr(lm.config, name, None) not in (None, 1, 1.0):
            return f"its logits are transformed after the output layer (config.{name}={getattr(lm.config, name)})"
    try:
        _inner_model(lm)
    except ValueError as error:
        return str(error)
    return None


@torch.no_grad()
def why_logits_differ(model: nn.Module, inputs: dict, device: torch.device) -> str | None:
    """Why the output layer applied to ``model``'s captured last hidden states does not give its logits on
    ``inputs`` (a transform of the logits no config field names), or None when it does (to float error)."""
    with eval_mode(model):
        logits = model(**inputs).logits
        _, head = forward_to_head_inputs(model, model, inputs, device)
        rebuilt = F.linear(head.hidden.to(head.weight.dtype), head.weight, head.bias)
    if rebuilt.shape != logits.shape or not torch.allclose(rebuilt.float(), logits.float(), rtol=1e-4, atol=1e-5):
        return ("its logits are not its output layer applied to its last hidden states (a scale or cap of the "
                "logits after the layer?)")
    return None


def forward_to_head_inputs(model: nn.Module, unwrapped: nn.Module, inputs: dict, device: torch.device):
    """``(outputs, HeadInputs)``: ``model(**inputs)`` with no logits computed, and the inputs of its logits.

    Args:
        model: the model to call (wrapped by DDP or not).
        unwrapped: the same model without the accelerator's wrapper (a PEFT model is fine).
        inputs: the forward's keyword arguments (input_ids, attention_mask, output flags...).
        device: where the positions index goes.
    """
    captured = []

    def capture(module, args, output):
        captured.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

    handle = _inner_model(unwrapped).register_forward_hook(capture)
    try:
        outputs = model(**inputs, logits_to_keep=torch.zeros(0, dtype=torch.long, device=device))
    finally:
        handle.remove()
    output_layer = base_model(unwrapped).get_output_embeddings()
    return outputs, HeadInputs(captured[-1], output_layer.weight, output_layer.bias)
