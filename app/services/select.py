"""``pairlab select``: score the pool with the latest model, choose a batch, record the round and queue it.

Without a model the first batch is the cold start (k-means on the raw features, DESIGN §5);
``random`` needs neither model nor features. Each chosen pair keeps its "why selected" breakdown
and the model's suggested labels for the Annotate page.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from app.services.data import (
    TRAINING_SPLITS, LabelMatrix, feature_matrices, feature_rows, label_matrix, pair_ids_and_splits,
)
from app.services.models import cached_model, current_model, latest_model
from app.services.progress import StepProgress, quiet
from app.services.ray_engine import RayEngine, ray_fused_means, ray_pool_scores, ray_session
from app.services.settings import encoder_choice, settings
from learner.inference import InferenceConfig, infer, iter_infer
from learner.metrics import competence, premark_threshold
from learner.selection.ascmr import AscmrStrategy
from learner.selection.scoring import match_noise
from learner.selection.streaming import batch_pool_scores, stream_fused_means, stream_pool_scores
from learner.selection.strategies import STRATEGY_NAMES, QueryStrategy, SelectionError, cold_start
from storage.errors import PairlabError
from storage.model_versions import ModelVersionInfo, latest_validation_pairs, model_version_id
from storage.pairs import PairIndex
from storage.queue import SelectedPair, create_round, selectable_pair_ids
from storage.store import Store
from storage.users import UserInfo, get_user, require

LABELLED_KINDS = ("import", "submit", "adjudicate")  # a pair that has labels is never selected (again)
SUGGESTION_THRESHOLD = 0.5
MAX_SUGGESTIONS = 5
SUGGESTIONS_KEY = "suggested_labels"  # where a selection's explanation carries the model's predicted labels
SUGGESTION_PROBABILITIES_KEY = "suggestion_probabilities"  # {label: probability} of its MAX_SUGGESTIONS likeliest
PREMARK_THRESHOLD_KEY = "premark_threshold"  # the scoring model's calibrated pre-mark threshold (None: none shown)


@dataclass(frozen=True)
class RoundReport:
    round_number: int
    strategy: str
    selected: int
    queued_slots: int
    model_version: int | None


@dataclass(frozen=True)
class _Choice:
    """rows (n,) of the pair table in presentation order, their scores (n,) and explanations, the
    parameters to record, what actually chose them and the model that scored them (if any)."""

    rows: np.ndarray
    scores: np.ndarray
    explanation: list[dict[str, Any]]
    selected_by: str
    params: dict[str, Any] = field(default_factory=dict)
    model: ModelVersionInfo | None = None


def check_selection_request(strategy: str, budget: int, overlap: int | None, assign: Sequence[str]) -> None:
    """The checks of a selection request that need no data (the page runs them before queueing a job)."""
    if strategy not in STRATEGY_NAMES:
        raise PairlabError(f"--strategy {strategy!r}; allowed: {', '.join(STRATEGY_NAMES)}")
    if budget < 1:
        raise PairlabError("--budget: must be >= 1")
    check_overlap(overlap, assign)


def check_overlap(overlap: int | None, assign: Sequence[str]) -> None:
    """``--overlap`` is at least 1 and, with ``--assign``, no more than the annotators assigned."""
    if overlap is not None and overlap < 1:
        raise PairlabError("--overlap: must be >= 1")
    if assign and overlap is not None and overlap > len(assign):
        raise PairlabError(f"--overlap: {overlap} annotators per pair needs at least {overlap} assigned, "
                           f"got {len(assign)}")


def selectable_rows(store: Store, table: PairIndex) -> np.ndarray:
    """Rows of ``table`` in a training split that have no labels yet (none imported, none given by a
    person) and that no round selected: labelling budget is never spent on a pair already labelled."""
    with store.db.read() as s:
        ids = selectable_pair_ids(s, splits=TRAINING_SPLITS, labelled_by=LABELLED_KINDS)
    return np.flatnonzero(np.isin(table.ids, ids))


def run_selection(store: Store, *, strategy: str, budget: int, actor: UserInfo, assign: Sequence[str] = (),
                  overlap: int | None = None, seed: int = 0, progress: StepProgress = quiet,
                  engine: RayEngine | None = None) -> RoundReport:
    """Select ``budget`` pairs with ``strategy``, record the round and queue each pair ``overlap`` times.
    ``engine``: score the pool on Ray actors (``ascmr``, the strategy that scores it batch by batch); the
    selection, and so the round, is the same as in this process."""
    require(actor, "operate")
    check_selection_request(strategy, budget, overlap, assign)
    if engine is not None and strategy != "ascmr":
        raise PairlabError(f"--engine ray: only --strategy ascmr scores the pool on Ray; run {strategy} "
                           "without --engine")
    config = settings(store)
    overlap = overlap or config.annotation.overlap
    table = pair_ids_and_splits(store)
    pool = _pool_rows(store, table, budget)
    start = time.perf_counter()
    progress(0.05, "loading features")
    if strategy == "random":
        choice = _random_choice(pool, budget, seed)
    elif latest_model(store) is None:
        choice = _cold_start_choice(store, table, pool, budget, seed, progress)
    else:
        with ray_session(engine) if engine is not None else nullcontext() as workers:
            choice = _scored_choice(store, table, pool, config.strategy(strategy), budget, seed, config.inference,
                                    progress, ray_workers=workers)
    params = {"seed": seed, "budget": budget, **choice.params, "selected_by": choice.selected_by,
              "select_seconds": round(time.perf_counter() - start, 3)}
    progress(0.9, "recording the round")
    number = _record_round(store, strategy, table, choice, params, overlap, assign, actor)
    progress(1.0, f"round {number}: {budget} pairs queued")
    return RoundReport(number, strategy, budget, budget * overlap,
                       None if choice.model is None else choice.model.version)


def _pool_rows(store: Store, table: PairIndex, budget: int) -> np.ndarray:
    pool = selectable_rows(store, table)
    if len(pool) == 0:
        raise PairlabError("select: no unlabelled pairs left in the pool that no round selected")
    if budget > len(pool):
        raise PairlabError(f"--budget: {budget} exceeds the {len(pool)} selectable pairs")
    return pool


def _random_choice(pool: np.ndarray, budget: int, seed: int) -> _Choice:
    rows = np.random.default_rng(seed).choice(pool, size=budget, replace=False)
    return _Choice(rows, np.zeros(budget), [{"strategy": "random", "rank": r + 1} for r in range(budget)], "random")


def _cold_start_choice(store: Store, table: PairIndex, pool: np.ndarray, budget: int, seed: int,
                       progress: StepProgress) -> _Choice:
    choice = encoder_choice(store)
    image, text = feature_matrices(store, table.ids, choice)
    progress(0.3, "no model yet: cold start on the raw features")
    selection = cold_start(np.hstack([image, text]), pool, budget, seed=seed)
    return _Choice(selection.indices, _scores(selection.explanation), selection.explanation, "cold_start",
                   {"encoders": choice.names(), **selection.params})


def _scored_choice(store: Store, table: PairIndex, pool: np.ndarray, query: QueryStrategy, budget: int, seed: int,
                   inference: InferenceConfig, progress: StepProgress, *, streamed: bool | None = None,
                   ray_workers: int | None = None) -> _Choice:
    """Infer on the pool and the covered training pairs, let the strategy choose, attach suggestions.

    Every training pair outside the pool is passed to the strategy as covered (its labelled set):
    the pairs labelled at import or by a person, and the pairs queued by an earlier round that are
    not annotated yet, so a batch never re-covers what is already on its way to the annotators.
    The model's competence on the workspace's fixed validation pairs goes with it (``ascmr``'s mix).

    Features stay memory-mapped (``feature_rows``). ``ascmr`` (``streamed``, the default for it) scores
    the pool batch by batch as inference produces it, on the inference threads
    (``learner.selection.streaming``): memory holds a few batches of outputs plus the pool's components
    and joint means. The other strategies read every
    output at once (``infer``). ``ray_workers``: the streamed scoring runs on that many Ray actors
    (``app.services.ray_engine``), batch for batch the same.
    """
    info = current_model(store)
    choice = encoder_choice(store)
    labels = label_matrix(store, table.ids)
    covered = np.setdiff1d(np.flatnonzero(np.isin(table.splits, TRAINING_SPLITS)), pool)
    image, text = feature_rows(store, table.ids, choice)
    model = cached_model(info.path)
    progress(0.2, f"scoring {len(pool)} pairs with model v{info.version}")
    if streamed is None:
        streamed = isinstance(query, AscmrStrategy)
    skill, premark = _validation_checks(store, table, model, image, text, labels, inference.batch_size)
    try:
        if streamed:
            rng = np.random.default_rng(seed)
            noise = match_noise(query.config.match_samples, model.hparams["dim"], seed=rng)   # as pool_scores draws it
            if ray_workers:
                scored = ray_pool_scores(ray_workers, info.path, image.take(pool), text.take(pool),
                                         mc_samples=inference.mc_samples, batch_size=inference.batch_size, seed=seed,
                                         match_samples=query.config.match_samples, noise=noise)
                mu_covered = ray_fused_means(ray_workers, info.path, image.take(covered), text.take(covered),
                                             batch_size=inference.batch_size)
            else:
                score = partial(batch_pool_scores, match_samples=query.config.match_samples, noise=noise)
                scored = stream_pool_scores(iter_infer(model, image.take(pool), text.take(pool),
                                                       mc_samples=inference.mc_samples, batch_size=inference.batch_size,
                                                       seed=seed, workers=inference.workers, then=score), len(pool))
                mu_covered = stream_fused_means(iter_infer(model, image.take(covered), text.take(covered),
                                                           mc_samples=0, batch_size=inference.batch_size,
                                                           workers=inference.workers))
            selection = query.query_scored(scored, mu_covered, budget, rng, competence=skill)
            chosen = pool[selection.indices]
        else:
            rows = np.union1d(pool, covered)
            outputs = infer(model, image.take(rows), text.take(rows), mc_samples=inference.mc_samples,
                            dropout_samples=inference.dropout_samples if query.name == "bald" else 0,
                            batch_size=inference.batch_size, seed=seed)
            outputs = replace(outputs, competence=skill)
            pool_pos = np.searchsorted(rows, pool)
            labelled_pos = np.setdiff1d(np.arange(len(rows)), pool_pos)
            selection = query.query(outputs, pool_pos, labelled_pos, budget, seed=seed)
            chosen = rows[selection.indices]
    except SelectionError as exc:
        raise PairlabError(f"select: {exc}") from None
    shown = infer(model, image.take(chosen), text.take(chosen), mc_samples=0, batch_size=inference.batch_size)
    joint = (shown.probs_image + shown.probs_text) / 2  # (budget, C)
    for item, probs in zip(selection.explanation, joint):
        item[SUGGESTIONS_KEY] = _suggestions(probs, labels.vocabulary)
        item[SUGGESTION_PROBABILITIES_KEY] = _likeliest(probs, labels.vocabulary)
        item[PREMARK_THRESHOLD_KEY] = premark
    return _Choice(chosen, _scores(selection.explanation), selection.explanation, query.name,
                   {"encoders": choice.names(), **selection.params, "model_version": info.version}, info)


def _validation_checks(store: Store, table: PairIndex, model, image, text, labels: LabelMatrix,
                       batch_size: int) -> tuple[float | None, float | None]:
    """The model on the workspace's fixed validation pairs (those the latest version held out and
    that still carry labels): its ``competence`` (``ascmr``'s mix) and its ``premark_threshold`` for
    ``[annotation] premark_precision``; None with fewer than 2 pairs."""
    with store.db.read() as s:
        held_out = latest_validation_pairs(s) or []
    val = np.flatnonzero(np.isin(table.ids, held_out) & labels.labelled)
    if len(val) < 2:
        return None, None
    outputs = infer(model, image.take(val), text.take(val), mc_samples=0, batch_size=batch_size)
    joint, truth = (outputs.probs_image + outputs.probs_text) / 2, labels.labels[val]
    return competence(joint, truth), premark_threshold(joint, truth, settings(store).annotation.premark_precision)


def _scores(explanation: list[dict[str, Any]]) -> np.ndarray:
    return np.array([item["score"] for item in explanation], dtype=float)


def _suggestions(probs: np.ndarray, vocabulary: Sequence[str]) -> list[str]:
    """The most probable labels (at most ``MAX_SUGGESTIONS``) whose probability passes the threshold."""
    top = np.argsort(-probs, kind="stable")[:MAX_SUGGESTIONS]
    return [vocabulary[j] for j in top if probs[j] >= SUGGESTION_THRESHOLD]


def _likeliest(probs: np.ndarray, vocabulary: Sequence[str]) -> dict[str, float]:
    """The ``MAX_SUGGESTIONS`` most probable labels with their probability (4 decimals), likeliest first."""
    top = np.argsort(-probs, kind="stable")[:MAX_SUGGESTIONS]
    return {vocabulary[j]: round(float(probs[j]), 4) for j in top}


def _record_round(store: Store, strategy: str, table: PairIndex, choice: _Choice, params: dict[str, Any],
                  overlap: int, assign: Sequence[str], actor: UserInfo) -> int:
    # "index" is a row of the scored sub-array, meaningless outside this call
    selected = [SelectedPair(int(table.ids[r]), float(s),
                             {**{k: v for k, v in e.items() if k != "index"}, "strategy": choice.selected_by})
                for r, s, e in zip(choice.rows, choice.scores, choice.explanation)]
    with store.db.write() as s:
        assignees = [get_user(s, name).id for name in assign]
        model_id = None if choice.model is None else model_version_id(s, choice.model.version)
        return create_round(s, strategy=strategy, selected=selected, params=params, overlap=overlap,
                            assignees=assignees, model_version_id=model_id, created_by=actor.id).number
