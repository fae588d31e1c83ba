"""Scoring and active-learning selection as pure functions of the learner's arrays.

``scoring`` turns :class:`learner.outputs.InferenceOutputs` into per-pair scores, ``density``
holds the density-aware allocation and core-set selectors, and ``strategies`` wraps them as query
strategies behind :func:`get_strategy`.  No torch, storage or UI code is imported here.
"""
from learner.selection.scoring import InformativenessWeights
from learner.selection.strategies import (
    STRATEGY_NAMES, AscmrConfig, BadgeConfig, EmptyPoolError, PoolTooSmallError, QueryStrategy, Selection,
    SelectionError, cold_start, get_strategy, validate_query,
)

__all__ = [
    "STRATEGY_NAMES", "AscmrConfig", "BadgeConfig", "EmptyPoolError", "InformativenessWeights", "PoolTooSmallError",
    "QueryStrategy", "Selection", "SelectionError", "cold_start", "get_strategy", "validate_query",
]
