"""The strategies by name: ``ProKTTrainingArguments.strategy`` -> the `Strategy` class that implements it."""

from __future__ import annotations

_STRATEGIES: dict[str, type] = {}


def register_strategy(strategy_class: type) -> type:
    """Class decorator: make ``strategy_class`` (a `Strategy` subclass) available under its ``name``."""
    name = strategy_class.name
    if name in _STRATEGIES and _STRATEGIES[name] is not strategy_class:
        raise ValueError(f"a strategy named {name!r} is already registered ({_STRATEGIES[name].__name__}).")
    _STRATEGIES[name] = strategy_class
    return strategy_class


def strategy_names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(_STRATEGIES)


def strategy_class(name: str) -> type:
    """The class registered under ``name``; a ``ValueError`` naming the registered ones otherwise."""
    if name not in _STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; use one of {', '.join(_STRATEGIES)}.")
    return _STRATEGIES[name]
