"""``pairlab train`` and ``pairlab evaluate``: a new model version from the workspace's labels, and its metrics."""
from __future__ import annotations

import dataclasses
import logging
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.services.data import TRAINING_SPLITS, LabelMatrix, feature_matrices, label_matrix, pair_table
from app.services.progress import StepProgress, quiet
from app.services.models import cached_model, current_model, feature_signatures, latest_model
from app.services.retrieval import model_embeddings
from app.services.settings import EncoderChoice, encoder_choice, settings
from learner.audit import CLEAN_PROBABILITY_COMPONENT, MODEL_CLEAN_PROBABILITY_COMPONENT, pair_clean_probability
from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.inference import evaluate_model
from learner.model import CrossModalModel
from learner.training import train_model
from storage.audit import audit_component_values, latest_audit
from storage.errors import PairlabError
from storage.faults import crash_point
from storage.model_versions import ModelVersionInfo, add_model_version, latest_validation_pairs
from storage.models import utcnow
from storage.pair_state import pairs_with_verdict
from storage.pairs import PairColumns
from storage.store import Store

log = logging.getLogger(__name__)

# models/model-<UTC stamp>-<8 hex>.pt: unique per training run (see ``_save_version``).
CHECKPOINT_NAME = re.compile(r"model-\d{8}T\d{6}-[0-9a-f]{8}\.pt")
_HASH_MULTIPLIER = np.uint64(2654435761)  # Knuth's multiplicative hash: a pair id -> a fixed value in [0, 1)


def _id_uniform(ids: np.ndarray, seed: int) -> np.ndarray:
    """A fixed pseudo-uniform value in [0, 1) per pair id (and seed); (n,) int -> (n,) float64."""
    mixed = (ids.astype(np.uint64) + np.uint64(seed)) * _HASH_MULTIPLIER % np.uint64(2**32)
    return mixed.astype(np.float64) / 2**32


def validation_pairs(store: Store, ids: np.ndarray, labelled: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """The workspace's fixed validation pairs: (n,) ids, sorted, among ``ids[labelled]``.

    Fixed once: the latest version's recorded validation pairs that are still labelled training
    pairs; before the first version that recorded at least 2, the labelled training pairs whose
    id hash (``_id_uniform``) is below ``val_fraction``. Later labels (e.g. a strategy's picks)
    never join it, so model selection is not biased towards what a strategy chose.
    """
    with store.db.read() as s:
        recorded = latest_validation_pairs(s)
    candidates = ids[labelled]
    if recorded is not None and len(recorded) >= 2:
        kept = np.intersect1d(candidates, np.asarray(recorded, dtype=np.int64))
        if len(kept) >= 2:
            return kept
    return np.sort(candidates[_id_uniform(candidates, seed) < val_fraction])


@dataclass(frozen=True)
class PairingWeights:
    """weights: (N,) float32 in [0, 1] for ``train_model(pair_weights=...)``, or None when every pair
    counts fully; summary: what was excluded or down-weighted (recorded in the model version's metrics)."""

    weights: np.ndarray | None
    summary: dict[str, Any]


def _rows_of(ids: np.ndarray, pairs: Iterable[tuple[int, Any]]) -> tuple[np.ndarray, list[Any]]:
    """Rows of ``ids`` (sorted (N,)) that the streamed (pair id, value) items name, and their values."""
    rows, values = [], []
    for pair_id, value in pairs:
        where = int(np.searchsorted(ids, pair_id))
        if where < len(ids) and ids[where] == pair_id:
            rows.append(where)
            values.append(value)
    return np.asarray(rows, dtype=np.int64), values


def pairing_weights(store: Store, ids: np.ndarray, mode: str) -> PairingWeights:
    """Each training pair's weight as a positive of the pairing loss, for ``ids`` (N,) sorted pair ids.

    A pair whose current verdict (the materialised pair state) is "mismatch" gets 0: its caption does
    not describe its image. Its labels describe the image and still train (``train_model``). With
    ``mode`` "audit" (``[train].correspondence_weighting``) every other pair the latest audit run scored
    gets P(clean) of its raw ``inconsistency`` value in that run (``learner.audit.clean_probability``,
    fitted on these pairs' values); with "audit+model", times P(clean) of its ``mismatch`` value in the
    same run (``learner.audit.pair_clean_probability``). A "match" verdict keeps 1: a person's word
    beats the audit's guess.
    """
    weights = np.ones(len(ids), dtype=np.float32)
    summary: dict[str, Any] = {"correspondence_weighting": mode, "audit_run": None}
    with store.db.read() as s:
        verdict_rows, verdicts = _rows_of(ids, pairs_with_verdict(s, ("mismatch", "match")))
        run = latest_audit(s) if mode in ("audit", "audit+model") else None
        if run is not None:
            audited, values = _rows_of(ids, audit_component_values(s, run.id, CLEAN_PROBABILITY_COMPONENT))
            model_values = None
            if mode == "audit+model":
                model_rows, model_values = _rows_of(
                    ids, audit_component_values(s, run.id, MODEL_CLEAN_PROBABILITY_COMPONENT))
                if not np.array_equal(model_rows, audited):
                    raise PairlabError(f"audit run {run.id}: the {MODEL_CLEAN_PROBABILITY_COMPONENT} and "
                                       f"{CLEAN_PROBABILITY_COMPONENT} values name different pairs")
    if run is not None and len(audited) >= 2:
        weights[audited] = pair_clean_probability(
            np.asarray(values, dtype=np.float64),
            None if model_values is None else np.asarray(model_values, dtype=np.float64),
            seed=settings(store).audit.seed)
        summary["audit_run"] = run.id
    verdicts = np.asarray(verdicts, dtype=object)
    mismatched = verdict_rows[verdicts == "mismatch"]
    weights[verdict_rows[verdicts == "match"]] = 1.0
    weights[mismatched] = 0.0
    summary.update(excluded_mismatch=int(len(mismatched)),
                   down_weighted=int(((weights > 0) & (weights < 1)).sum()),
                   weight_sum=round(float(weights.sum(dtype=np.float64)), 2), pairs=int(len(ids)))
    return PairingWeights(None if (weights == 1).all() else weights, summary)


def _warm_start_model(previous: ModelVersionInfo | None, signatures: dict[str, str], shape: tuple[int, int, int]):
    """The previous version's model when its features, vocabulary and input sizes still fit, else None."""
    if previous is None:
        return None
    if previous.features != signatures:
        log.info("features changed since version %d: training from scratch", previous.version)
        return None
    init, _ = load_checkpoint(previous.path)
    h = init.hparams
    if (h["image_dim"], h["text_dim"], h["num_classes"]) != shape:
        log.info("vocabulary or features changed since version %d: training from scratch", previous.version)
        return None
    return init


def _save_version(store: Store, result, *, choice: EncoderChoice, vocabulary: list[str], config, signatures,
                  parent: ModelVersionInfo | None, labelled_count: int, metrics: dict[str, Any],
                  job_id: int | None, validation_ids: np.ndarray) -> ModelVersionInfo:
    """Checkpoint under a unique name first, then its row: a rollback or a concurrent trainer never
    leaves a row pointing at a half-written or overwritten checkpoint (a kill in between leaves an
    orphan checkpoint, which the worker removes at start-up: ``app.jobs.litter``)."""
    path = store.workspace.subdir("models") / f"model-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.pt"
    save_checkpoint(result.model, path, {"vocabulary": vocabulary, "encoders": choice.names()})
    crash_point("train.before_version")
    try:
        with store.db.write() as s:
            version = add_model_version(
                s, path=str(path), parent_version=None if parent is None else parent.version,
                labelled_count=labelled_count, metrics=metrics,
                config={"train": dataclasses.asdict(config), "encoders": choice.names(), "vocabulary": vocabulary,
                        "features": signatures, "job_id": job_id,
                        "validation_pairs": [int(i) for i in validation_ids]})
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return ModelVersionInfo(version, str(path), labelled_count, metrics, signatures)


def train_workspace(store: Store, *, warm_start: bool | None = None, epochs: int | None = None,
                    progress: StepProgress = quiet, job_id: int | None = None) -> ModelVersionInfo:
    """Train a new model version on the ``pool``/``train`` pairs (labelled + unlabelled) and record it.

    From scratch, or with ``warm_start`` (None: ``[train].warm_start``) from the latest version when
    its features and vocabulary still fit. Early stopping uses the workspace's fixed validation
    pairs (``validation_pairs``; recorded in the version's config and counted in its metrics);
    ``val`` and ``test`` pairs are never trained on. The metrics' ``phases``: wall seconds of reading
    (pairs, labels, features, pairing weights), of ``train_model`` and of the test evaluation; the save
    and the embeddings of every pair, which follow the version's row, are logged.
    job_id: the ``train`` job doing this, recorded in the version's config so that a worker killed after
    the commit still reports the job done (``storage.jobs.fail_orphaned_jobs``).
    """
    started = time.perf_counter()
    config = settings(store).train
    config = dataclasses.replace(config, **{k: v for k, v in (("warm_start", warm_start), ("epochs", epochs))
                                            if v is not None})
    choice = encoder_choice(store)
    table = pair_table(store)
    everything = label_matrix(store, table.ids)  # one pass over the event log for training and test rows
    rows = np.flatnonzero(np.isin(table.splits, TRAINING_SPLITS))
    image, text = feature_matrices(store, table.ids[rows], choice)
    labels, labelled = everything.labels[rows], everything.labelled[rows]
    n_labelled = int(labelled.sum())
    if n_labelled < 2:
        raise PairlabError(f"train: {n_labelled} labelled pairs outside the val and test splits; label at least 2 first")
    signatures = feature_signatures(store, choice)
    previous = latest_model(store)
    init = _warm_start_model(previous, signatures, (image.shape[1], text.shape[1], len(everything.vocabulary))) \
        if config.warm_start else None
    held_out = validation_pairs(store, table.ids[rows], labelled, config.val_fraction, config.seed)
    pairing = pairing_weights(store, table.ids[rows], config.correspondence_weighting)
    progress(0.0, f"training on {len(rows)} pairs, {n_labelled} labelled, {len(held_out)} of them held out for "
                  f"validation, {pairing.summary['excluded_mismatch']} confirmed mismatches out of the pairing loss")
    read = time.perf_counter()
    result = train_model(image, text, labels, labelled, config, init_model=init,
                         validation=np.searchsorted(table.ids[rows], held_out), pair_weights=pairing.weights,
                         progress=lambda f, m: progress(0.95 * f, m))
    del image, text  # (N, Di + Dt) in memory: gone before the embeddings of every pair are computed below
    trained = time.perf_counter()
    metrics: dict[str, Any] = {"validation": dict(result.best_metrics), "seconds": round(result.seconds, 2),
                               "best_epoch": result.best_epoch, "validation_pairs": len(result.val_rows),
                               "pairing": pairing.summary}
    test = _labelled_rows(table, everything, "test")
    if len(test) >= 2:
        metrics["test"] = _evaluate_rows(store, result.model, table, everything, test, choice)
    tested = time.perf_counter()
    metrics["phases"] = {"read": round(read - started, 2), "train": round(trained - read, 2),
                         "test": round(tested - trained, 2)}
    info = _save_version(store, result, choice=choice, vocabulary=everything.vocabulary, config=config,
                         signatures=signatures, parent=previous if init is not None else None,
                         labelled_count=n_labelled, metrics=metrics, job_id=job_id,
                         validation_ids=table.ids[rows][list(result.val_rows)])
    saved = time.perf_counter()
    model_embeddings(store)  # computed now, so Explore never waits on it
    log.info("train: read %.1f s, train %.1f s, test %.1f s, save %.1f s, embeddings of every pair %.1f s",
             read - started, trained - read, tested - trained, saved - tested, time.perf_counter() - saved)
    progress(1.0, f"model v{info.version}: validation avg mAP {metrics['validation'].get('avg', float('nan')):.4f}")
    return info


def _labelled_rows(table: PairColumns, labels: LabelMatrix, split: str) -> np.ndarray:
    """Rows of ``table`` in ``split`` that carry trusted labels (``labels`` in the table's row order)."""
    return np.flatnonzero((table.splits == split) & labels.labelled)


def _evaluate_rows(store: Store, model: CrossModalModel, table: PairColumns, labels: LabelMatrix, rows: np.ndarray,
                   choice: EncoderChoice) -> dict:
    image, text = feature_matrices(store, table.ids[rows], choice)
    return evaluate_model(model, image, text, labels.labels[rows])


def evaluate_workspace(store: Store, *, split: str = "test") -> dict[str, Any]:
    """Retrieval metrics of the latest model on the labelled pairs of ``split`` (DESIGN §4 metrics)."""
    info = current_model(store)
    table = pair_table(store)
    labels = label_matrix(store, table.ids)
    rows = _labelled_rows(table, labels, split)
    if len(rows) < 2:
        raise PairlabError(f"--split {split}: {len(rows)} labelled pairs; need at least 2 to evaluate")
    metrics = _evaluate_rows(store, cached_model(info.path), table, labels, rows, encoder_choice(store))
    return {"model_version": info.version, "split": split, "pairs": int(len(rows)), **metrics}
