"""Run models in eval mode for a while, then give each back the mode it had."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(*models: nn.Module | None) -> Iterator[None]:
    """Put every given model (None entries are skipped) in eval mode (no dropout, running statistics) and, on
    leaving, put each back in train or eval mode as it was, also when the block raises."""
    present = [model for model in models if model is not None]
    modes = [model.training for model in present]
    for model in present:
        model.eval()
    try:
        yield
    finally:
        for model, training in zip(present, modes):
            model.train(training)
