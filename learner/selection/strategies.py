"""Registry of the active-learning query strategies (small-text style), by name.

- ``ascmr``: ASCMR (Qi et al., TPAMI 2025) informativeness with our density-aware budget
  allocation (``ascmr.py``; DESIGN §5, docs/selection.md).
- ``random``, ``entropy``, ``bald``, ``coreset``, ``badge``, ``inter``: the baselines (``baselines.py``).
- ``typiclust`` (Hacohen et al., ICML 2022), ``probcover`` (Yehuda et al., NeurIPS 2022): the
  low-budget coverage strategies (``coverage.py``).
- :func:`cold_start`: k-means on raw encoder features for the first batch, before any model
  (``first_batch.py``).

The contract (``QueryStrategy``, ``ConfiguredStrategy``, ``Selection``, typed errors,
``validate_query``) lives in ``base.py``; this module re-exports it, so
``from learner.selection.strategies import ...`` reaches every public name of the strategies.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from learner.selection.ascmr import AscmrConfig, AscmrStrategy
from learner.selection.base import (
    ConfiguredStrategy, EmptyPoolError, PoolTooSmallError, QueryStrategy, Selection, SelectionError, validate_query,
)
from learner.selection.baselines import (
    BadgeConfig, BadgeStrategy, BaldStrategy, CoresetStrategy, EntropyStrategy, InterStrategy, RandomStrategy,
)
from learner.selection.coverage import ProbcoverConfig, ProbcoverStrategy, TypiclustConfig, TypiclustStrategy
from learner.selection.first_batch import cold_start
from learner.selection.scoring import InformativenessWeights

__all__ = [
    "STRATEGY_NAMES", "AscmrConfig", "AscmrStrategy", "BadgeConfig", "BadgeStrategy", "BaldStrategy",
    "ConfiguredStrategy", "CoresetStrategy", "EmptyPoolError", "EntropyStrategy", "InterStrategy",
    "PoolTooSmallError", "ProbcoverConfig", "ProbcoverStrategy", "QueryStrategy", "RandomStrategy", "Selection",
    "SelectionError", "TypiclustConfig", "TypiclustStrategy", "build_strategy",
    "cold_start", "get_strategy", "strategy_config_class", "validate_query",
]

_REGISTRY: dict[str, type[QueryStrategy]] = {cls.name: cls for cls in (
    AscmrStrategy, RandomStrategy, EntropyStrategy, BaldStrategy, CoresetStrategy, BadgeStrategy, InterStrategy,
    TypiclustStrategy, ProbcoverStrategy)}

STRATEGY_NAMES = tuple(_REGISTRY)


def _strategy_class(name: str) -> type[QueryStrategy]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGY_NAMES)}")
    return _REGISTRY[name]


def strategy_config_class(name: str) -> type | None:
    """The configuration dataclass of the strategy registered as ``name`` (e.g. ``AscmrConfig``),
    None if it takes no options. An unknown name raises ValueError listing the allowed ones."""
    cls = _strategy_class(name)
    return cls.config_class if issubclass(cls, ConfiguredStrategy) else None


def build_strategy(name: str, config: Any = None) -> QueryStrategy:
    """The strategy registered as ``name``, built from an instance of its config dataclass.

    ``config`` None gives the defaults. An unknown name, or a config for a strategy without
    options, raises ValueError; a config of another class raises TypeError.
    """
    cls, config_cls = _strategy_class(name), strategy_config_class(name)
    if config is None:
        return cls()
    if config_cls is None:
        raise ValueError(f"strategy {name!r} takes no options, got a {type(config).__name__} instance")
    if not isinstance(config, config_cls):
        raise TypeError(f"strategy {name!r}: expected a {config_cls.__name__} instance, got {type(config).__name__}")
    return cls(config)


def get_strategy(name: str, **config: Any) -> QueryStrategy:
    """The strategy registered as ``name``, configured by keyword (fields of its config dataclass).

    ``get_strategy("ascmr", gamma=1.0, weights={"density": 0.0})``; a ``weights`` mapping is turned
    into :class:`InformativenessWeights`.  Unknown names or fields raise ValueError listing the
    allowed ones.
    """
    config_cls = strategy_config_class(name)
    if config_cls is None:
        if config:
            raise ValueError(f"strategy {name!r} takes no options, got {sorted(config)}")
        return build_strategy(name)
    allowed = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"strategy {name!r}: unknown options {unknown}; allowed: {', '.join(allowed)}")
    if isinstance(config.get("weights"), dict):
        fields = [f.name for f in dataclasses.fields(InformativenessWeights)]
        unknown = sorted(set(config["weights"]) - set(fields))
        if unknown:
            raise ValueError(f"strategy {name!r}: unknown weights {unknown}; allowed: {', '.join(fields)}")
        config["weights"] = InformativenessWeights(**config["weights"])
    return build_strategy(name, config_cls(**config))
