"""The training recipes, one file each, and the registry that maps ``args.strategy`` to them.

Adding a recipe: a `Strategy` subclass in a file of its own, decorated with `register_strategy`, and one import
line below (docs/index.md, "Adding a strategy").
"""

from . import prokt, kd, finetune  # noqa: E402, F401, I001  (registers the recipes, in this order)
from .base import RunningMeans, Strategy
from .registry import register_strategy, strategy_class, strategy_names



def check_trainer_setup(args, trainer_kwargs: dict) -> None:
    """Refuse `Trainer` arguments that cannot serve ``args.strategy`` (before the `Trainer` is built)."""
    strategy_class(args.strategy).check_trainer_kwargs(args, trainer_kwargs)


__all__ = ["RunningMeans", "Strategy", "check_trainer_setup", "register_strategy", "strategy_class",
           "strategy_names"]
