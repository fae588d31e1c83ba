"""Scoring and active-learning selection as pure functions of the learner's arrays.

``scoring`` turns :class:`learner.outputs.InferenceOutputs` into per-pair scores, ``density``
holds the density-aware allocation and core-set selectors, ``base`` the strategy contract,
``baselines``, ``ascmr`` and ``first_batch`` the strategies, and ``strategies`` their registry
behind :func:`get_strategy`.  No torch, storage or UI code is imported here.
"""
from learner.selection.scoring import InformativenessWeights
from learner.selection.strategies import (
    STRATEGY_NAMES, AscmrConfig, BadgeConfig, EmptyPoolError, PoolTooSmallError, QueryStrategy, Selection,
    SelectionError, build_strategy, cold_start, get_strategy, strategy_config_class, validate_query,
)

__all__ = [
    "STRATEGY_NAMES", "AscmrConfig", "BadgeConfig", "EmptyPoolError", "InformativenessWeights", "PoolTooSmallError",
    "QueryStrategy", "Selection", "SelectionError", "build_strategy", "cold_start", "get_strategy",
    "strategy_config_class", "validate_query",
]
