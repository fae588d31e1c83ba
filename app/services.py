"""The learner wired to a workspace: encode, train, evaluate and select (DESIGN §3–5, §8).

``learner`` works on arrays and ``storage`` on rows; this module moves data between them. Every
function here is what a CLI verb and a worker job both call.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from functools import lru_cache
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from learner.checkpoint import load_checkpoint, save_checkpoint
from learner.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, ENCODER_NAMES, encode_images, \
    encode_texts, get_encoder
from learner.encoders.openclip import PREFIX as OPEN_CLIP_PREFIX
from learner.encoders.tfidf import TfidfEncoder
from learner.inference import evaluate_model, infer
from learner.selection.strategies import STRATEGY_NAMES, QueryStrategy, SelectionError, cold_start, get_strategy
from learner.training import TrainConfig, train_model
from storage.annotations import current_labels
from storage.errors import InputError, NotFoundError, PairlabError
from storage.features import feature_signature, ids_path, list_features, load_features, register_features, \
    write_feature_files
from storage.models import Event, ModelVersion, Pair, Selection, utcnow
from storage.queue import SelectedPair, create_round
from storage.store import Store
from storage.users import UserInfo, get_user, require
from storage.vocabulary import label_names
from storage.workspace import write_config

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
PRECOMPUTED = "precomputed"
TRAINING_SPLITS = ("pool", "train")  # "val" and "test" pairs are only evaluated
SELECTABLE_SPLITS = ("pool", "train")
HUMAN_LABEL_KINDS = ("submit", "adjudicate")
SUGGESTION_THRESHOLD = 0.5
MAX_SUGGESTIONS = 5
SUGGESTIONS_KEY = "suggested_labels"  # where a selection's explanation carries the model's predicted labels
# Labelled states that train the model; a conflict waits for a reviewer.
TRUSTED_STATUSES = ("labelled", "adjudicated")


def _quiet(_fraction: float, _message: str) -> None:
    """The progress sink when the caller gives none."""


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class EncoderChoice:
    """Encoder names per modality and their options (e.g. ``weights_path`` for ``open_clip:<arch>``)."""

    image: str
    text: str
    image_options: dict[str, Any] = field(default_factory=dict)
    text_options: dict[str, Any] = field(default_factory=dict)

    def names(self) -> dict[str, str]:
        return {"image": self.image, "text": self.text}


ENCODER_KEYS = ("image", "text", "image_options", "text_options")


def encoder_choice(store: Store) -> EncoderChoice:
    """``[encoders]`` of ``pairlab.toml``; unset names fall back to precomputed features when the
    workspace has them, else to the defaults (EfficientNet-Lite0, TF-IDF)."""
    table = store.workspace.config.learner.get("encoders", {})
    where = str(store.workspace.config_path)
    unknown = set(table) - set(ENCODER_KEYS)
    if unknown:
        raise InputError(where, None, f"[encoders].{sorted(unknown)[0]}", f"unknown key; allowed: {', '.join(ENCODER_KEYS)}")
    with store.db.read() as s:
        precomputed = {f.modality for f in list_features(s) if f.encoder == PRECOMPUTED}
    names = {m: table.get(m) or (PRECOMPUTED if m in precomputed else default)
             for m, default in (("image", DEFAULT_IMAGE_ENCODER), ("text", DEFAULT_TEXT_ENCODER))}
    for modality, name in names.items():
        known = name in ENCODER_NAMES or name.startswith(OPEN_CLIP_PREFIX)
        if not known:
            raise InputError(where, None, f"[encoders].{modality}",
                             f"unknown encoder {name!r}; allowed: {', '.join(ENCODER_NAMES)}")
        if not isinstance(table.get(f"{modality}_options", {}), dict):
            raise InputError(where, None, f"[encoders].{modality}_options", "must be a table")
    return EncoderChoice(names["image"], names["text"], dict(table.get("image_options", {})),
                         dict(table.get("text_options", {})))


WARM_START_KEY = "warm_start"  # [train] key outside TrainConfig: start from the latest version (default false)


def train_config(store: Store, **overrides: Any) -> TrainConfig:
    """``TrainConfig`` from the ``[train]`` table of ``pairlab.toml`` plus explicit overrides."""
    table = dict(store.workspace.config.learner.get("train", {}))
    table.pop(WARM_START_KEY, None)
    allowed = {f.name for f in fields(TrainConfig)}
    unknown = set(table) - allowed
    if unknown:
        raise InputError(str(store.workspace.config_path), None, f"[train].{sorted(unknown)[0]}",
                         f"unknown key; allowed: {', '.join(sorted(allowed))}")
    table.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**table)
    except ValueError as exc:
        raise InputError(str(store.workspace.config_path), None, "[train]", str(exc)) from None


def warm_start_default(store: Store) -> bool:
    """``[train].warm_start`` of ``pairlab.toml``: False unless set. Retraining from scratch is the
    default because warm-started rounds lost mAP as labels arrived (docs/benchmarks.md)."""
    value = store.workspace.config.learner.get("train", {}).get(WARM_START_KEY, False)
    if not isinstance(value, bool):
        raise InputError(str(store.workspace.config_path), None, f"[train].{WARM_START_KEY}",
                         f"expected true or false, got {value!r}")
    return value


def selection_strategy(store: Store, name: str) -> QueryStrategy:
    """The strategy ``name`` configured by the ``[selection.<name>]`` table of ``pairlab.toml``
    (fields of its config dataclass, e.g. ``[selection.ascmr] lam = 1.0``; none: the defaults)."""
    table = store.workspace.config.learner.get("selection", {}).get(name, {})
    where = f"[selection.{name}]"
    if not isinstance(table, dict):
        raise InputError(str(store.workspace.config_path), None, where, "must be a table")
    try:
        return get_strategy(name, **table)
    except (TypeError, ValueError) as exc:
        raise InputError(str(store.workspace.config_path), None, where, str(exc)) from None


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class PairTable:
    """All pairs in id order: ids (N,), image paths, texts, splits (N,) object arrays."""

    ids: np.ndarray
    image_paths: list[str]
    texts: list[str]
    splits: np.ndarray


def pair_table(store: Store) -> PairTable:
    with store.db.read() as s:
        rows = s.execute(select(Pair.id, Pair.image_path, Pair.text, Pair.split).order_by(Pair.id)).all()
    if not rows:
        raise PairlabError(f"{store.root}: the workspace has no pairs; run 'pairlab import' first")
    return PairTable(np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows], [r[2] for r in rows],
                     np.array([r[3] for r in rows], dtype=object))


def label_matrix(store: Store, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Current labels of ``ids`` as (N, C) float32 0/1, the (N,) labelled mask and the vocabulary."""
    position = {int(pid): i for i, pid in enumerate(ids)}
    with store.db.read() as s:
        vocabulary = label_names(s)
        column = {name: j for j, name in enumerate(vocabulary)}
        labels = np.zeros((len(ids), len(vocabulary)), dtype=np.float32)
        labelled = np.zeros(len(ids), dtype=bool)
        for current in current_labels(s):
            row = position.get(current.pair_id)
            if row is None or current.labels is None or current.status not in TRUSTED_STATUSES:
                continue
            labelled[row] = True
            labels[row, [column[name] for name in current.labels]] = 1.0
    return labels, labelled, vocabulary


def feature_matrices(store: Store, ids: np.ndarray, choice: EncoderChoice) -> tuple[np.ndarray, np.ndarray]:
    """Image (N, Di) and text (N, Dt) features of ``ids`` in that order; error if any pair lacks them."""
    out = []
    with store.db.read() as s:
        for modality, encoder in (("image", choice.image), ("text", choice.text)):
            try:
                matrix, row_ids = load_features(s, modality, encoder)
            except NotFoundError:
                raise PairlabError(f"no {modality} features from {encoder!r}; run 'pairlab encode "
                                   f"{store.root}' first") from None
            order = np.argsort(row_ids)
            where = np.searchsorted(row_ids, ids, sorter=order)
            where = order[np.minimum(where, len(order) - 1)]
            missing = row_ids[where] != ids
            if missing.any():
                raise PairlabError(f"{int(missing.sum())} pairs (e.g. pair {int(ids[missing][0])}) have no "
                                   f"{modality} features from {encoder!r}; run 'pairlab encode {store.root}'")
            out.append(np.asarray(matrix[where], dtype=np.float32))
    return out[0], out[1]


# --------------------------------------------------------------------------- encode

def _store_features(store: Store, modality: str, encoder: str, matrix: np.ndarray, ids: np.ndarray) -> dict:
    """Write the files outside the transaction, register them inside it, then drop the replaced files."""
    path, row_ids = write_feature_files(store.workspace.subdir("features"), modality, encoder, matrix, ids)
    try:
        with store.db.write() as s:
            info, replaced = register_features(s, modality, encoder, path, matrix.shape[1], len(matrix))
    except BaseException:
        path.unlink(missing_ok=True)
        row_ids.unlink(missing_ok=True)
        raise
    if replaced:
        Path(replaced).unlink(missing_ok=True)
        Path(ids_path(replaced)).unlink(missing_ok=True)
    return asdict(info)


def _build_encoder(name: str, options: dict[str, Any]):
    try:
        return get_encoder(name, **options)
    except ValueError as exc:
        raise PairlabError(f"[encoders]: {exc}") from None

def text_encoder_path(store: Store, name: str) -> Path:
    """Where a fitted text encoder (TF-IDF) of the workspace is kept, so later queries share its space."""
    return store.workspace.subdir("features") / f"{name}-text-encoder.joblib"


def encode_workspace(store: Store, *, image_encoder: str | None = None, text_encoder: str | None = None,
                     progress: Progress = _quiet) -> dict[str, Any]:
    """Encode every pair's image and text with the chosen encoders, cached by content hash.

    Names given here are remembered in ``pairlab.toml``'s ``[encoders]``. TF-IDF is (re)fitted on all
    of the workspace's texts. Returns what was written.
    """
    if image_encoder or text_encoder:
        learner = dict(store.workspace.config.learner)
        learner["encoders"] = {**learner.get("encoders", {}),
                               **{k: v for k, v in (("image", image_encoder), ("text", text_encoder)) if v}}
        config = replace(store.workspace.config, learner=learner)
        store = replace(store, workspace=replace(store.workspace, config=config))
        encoder_choice(store)  # validate before writing
        write_config(store.root, config)
    choice = encoder_choice(store)
    table = pair_table(store)
    cache = store.workspace.subdir("cache")
    written = {}
    if choice.image != PRECOMPUTED:
        missing = [p for p in table.image_paths if not Path(p).is_file()]
        if missing:
            raise PairlabError(f"{missing[0]}: image file not found ({len(missing)} pairs); "
                               "feature-only pairs need --image-encoder precomputed")
        progress(0.0, f"encoding {len(table.ids)} images with {choice.image}")
        encoder = _build_encoder(choice.image, choice.image_options)
        matrix = encode_images(encoder, table.image_paths, cache,
                               lambda done, total: progress(0.8 * done / max(total, 1),
                                                            f"images {done}/{total}"))
        written["image"] = _store_features(store, "image", choice.image, matrix, table.ids)
    if choice.text != PRECOMPUTED:
        progress(0.8, f"encoding {len(table.ids)} texts with {choice.text}")
        encoder = _build_encoder(choice.text, choice.text_options)
        if isinstance(encoder, TfidfEncoder):
            encoder.fit(table.texts)
            encoder.save(text_encoder_path(store, choice.text))
        matrix = encode_texts(encoder, table.texts, cache,
                              lambda done, total: progress(0.8 + 0.2 * done / max(total, 1),
                                                           f"texts {done}/{total}"))
        written["text"] = _store_features(store, "text", choice.text, matrix, table.ids)
    progress(1.0, "encoded")
    return {"image_encoder": choice.image, "text_encoder": choice.text, "pairs": int(len(table.ids)),
            "written": written}


# --------------------------------------------------------------------------- train and evaluate

@dataclass(frozen=True)
class ModelInfo:
    """features: the signatures of the feature sets the model was trained on (``feature_signatures``)."""

    version: int
    path: str
    labelled_count: int
    metrics: dict[str, Any]
    features: dict[str, str] = field(default_factory=dict)


def latest_model(store: Store) -> ModelInfo | None:
    with store.db.read() as s:
        row = s.scalar(select(ModelVersion).order_by(ModelVersion.version.desc()).limit(1))
    if row is None:
        return None
    return ModelInfo(row.version, row.path, row.labelled_count, dict(row.metrics or {}),
                     dict((row.config or {}).get("features", {})))


def feature_signatures(store: Store, choice: EncoderChoice) -> dict[str, str]:
    with store.db.read() as s:
        try:
            return {m: feature_signature(s, m, name) for m, name in choice.names().items()}
        except NotFoundError as exc:
            raise PairlabError(str(exc)) from None


def current_model(store: Store) -> ModelInfo:
    """The latest model, refusing one trained on features that were re-encoded since (a new TF-IDF fit is
    a new feature space of the same size: mixing it with an old model gives silent nonsense)."""
    info = latest_model(store)
    if info is None:
        raise PairlabError("no trained model yet; run 'pairlab train' first")
    if info.features != feature_signatures(store, encoder_choice(store)):
        raise PairlabError(f"the features changed since model v{info.version} was trained (re-encoded or other "
                           "encoders); run 'pairlab train' first")
    return info


def train_workspace(store: Store, *, warm_start: bool | None = None, epochs: int | None = None,
                    progress: Progress = _quiet) -> ModelInfo:
    """Train a new model version on the non-test pairs (labelled + unlabelled) and record it.

    Trains from scratch, or with ``warm_start`` (None: ``[train].warm_start``) starts from the latest
    version when its features and vocabulary still fit. Early stopping uses a validation split of
    the labelled pairs (inside ``train_model``); the test split is only evaluated.
    """
    if warm_start is None:
        warm_start = warm_start_default(store)
    choice = encoder_choice(store)
    table = pair_table(store)
    image, text = feature_matrices(store, table.ids, choice)
    labels, labelled, vocabulary = label_matrix(store, table.ids)
    train_rows = np.flatnonzero(np.isin(table.splits, TRAINING_SPLITS))
    n_labelled = int(labelled[train_rows].sum())
    if n_labelled < 2:
        raise PairlabError(f"train: {n_labelled} labelled pairs outside the test split; label at least 2 first")
    signatures = feature_signatures(store, choice)
    previous = latest_model(store)
    init = None
    if previous is not None and previous.features != signatures:
        log.info("features changed since version %d: training from scratch", previous.version)
    elif previous is not None and warm_start:
        init, _ = load_checkpoint(previous.path)
        if init.hparams["num_classes"] != len(vocabulary) or init.hparams["image_dim"] != image.shape[1] \
                or init.hparams["text_dim"] != text.shape[1]:
            log.info("vocabulary or features changed since version %d: training from scratch", previous.version)
            init = None
    config = train_config(store, epochs=epochs)
    progress(0.0, f"training on {len(train_rows)} pairs, {n_labelled} labelled")
    result = train_model(image[train_rows], text[train_rows], labels[train_rows], labelled[train_rows], config,
                         init_model=init, progress=lambda f, m: progress(0.95 * f, m))
    metrics: dict[str, Any] = {"validation": dict(result.best_metrics), "seconds": round(result.seconds, 2),
                               "best_epoch": result.best_epoch}
    test_rows = np.flatnonzero((table.splits == "test") & labelled)
    if len(test_rows) >= 2:
        metrics["test"] = evaluate_model(result.model, image[test_rows], text[test_rows], labels[test_rows])
    # A unique file written before the transaction: a rollback or a concurrent trainer never
    # leaves a row pointing at a half-written or overwritten checkpoint.
    path = store.workspace.subdir("models") / f"model-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.pt"
    save_checkpoint(result.model, path, {"vocabulary": vocabulary, "encoders": choice.names()})
    try:
        with store.db.write() as s:
            version = (s.scalar(select(func.max(ModelVersion.version))) or 0) + 1
            s.add(ModelVersion(version=version, path=str(path),
                               parent_id=None if init is None else _version_id(s, previous),
                               labelled_count=n_labelled, metrics=metrics,
                               config={"train": asdict(config), "encoders": choice.names(), "vocabulary": vocabulary,
                                       "features": signatures}))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    model_embeddings(store)  # computed now, so Explore never waits on it
    progress(1.0, f"model v{version}: validation avg mAP {metrics['validation'].get('avg', float('nan')):.4f}")
    return ModelInfo(version, str(path), n_labelled, metrics, signatures)


def _version_id(session, info: ModelInfo) -> int:
    return session.scalar(select(ModelVersion.id).where(ModelVersion.version == info.version))


def evaluate_workspace(store: Store, *, split: str = "test") -> dict[str, Any]:
    """Retrieval metrics of the latest model on the labelled pairs of ``split`` (DESIGN §4 metrics)."""
    info = current_model(store)
    table = pair_table(store)
    labels, labelled, _ = label_matrix(store, table.ids)
    rows = np.flatnonzero((table.splits == split) & labelled)
    if len(rows) < 2:
        raise PairlabError(f"--split {split}: {len(rows)} labelled pairs; need at least 2 to evaluate")
    image, text = feature_matrices(store, table.ids[rows], encoder_choice(store))
    model, _ = load_checkpoint(info.path)
    return {"model_version": info.version, "split": split, "pairs": int(len(rows)),
            **evaluate_model(model, image, text, labels[rows])}


# --------------------------------------------------------------------------- select

@dataclass(frozen=True)
class RoundReport:
    round_number: int
    strategy: str
    selected: int
    queued_slots: int
    model_version: int | None


def selectable_pair_ids(store: Store) -> np.ndarray:
    """Pool/train pairs that no person has annotated and no round has selected: (n,) int64, sorted.

    Labels given at import do not exclude a pair: a person may still be asked to check it, and a
    disagreement with the imported labels sends the pair to review.
    """
    annotated = select(Event.pair_id).where(Event.kind.in_(HUMAN_LABEL_KINDS))
    query = (select(Pair.id)
             .where(Pair.split.in_(SELECTABLE_SPLITS), Pair.id.not_in(select(Selection.pair_id)),
                    Pair.id.not_in(annotated))
             .order_by(Pair.id))
    with store.db.read() as s:
        return np.fromiter(s.scalars(query), dtype=np.int64)


def selectable_rows(store: Store, table: PairTable) -> np.ndarray:
    """Rows of ``table`` that may be selected."""
    return np.flatnonzero(np.isin(table.ids, selectable_pair_ids(store)))


def _suggestions(probs: np.ndarray, vocabulary: Sequence[str]) -> list[str]:
    """The most probable labels (at most ``MAX_SUGGESTIONS``) whose probability passes the threshold."""
    top = np.argsort(-probs, kind="stable")[:MAX_SUGGESTIONS]
    return [vocabulary[j] for j in top if probs[j] >= SUGGESTION_THRESHOLD]


def check_selection_request(strategy: str, budget: int, overlap: int | None, assign: Sequence[str]) -> None:
    """The checks of a selection request that need no data (the page runs them before queueing a job)."""
    if strategy not in STRATEGY_NAMES:
        raise PairlabError(f"--strategy {strategy!r}; allowed: {', '.join(STRATEGY_NAMES)}")
    if budget < 1:
        raise PairlabError("--budget: must be >= 1")
    if overlap is not None and overlap < 1:
        raise PairlabError("--overlap: must be >= 1")
    if assign and overlap is not None and overlap > len(assign):
        raise PairlabError(f"--overlap: {overlap} annotators per pair needs at least {overlap} assigned, "
                           f"got {len(assign)}")


def run_selection(store: Store, *, strategy: str, budget: int, actor: UserInfo, assign: Sequence[str] = (),
                  overlap: int | None = None, seed: int = 0, progress: Progress = _quiet) -> RoundReport:
    """Score the pool with the latest model, select ``budget`` pairs, record the round and queue them.

    Without a model the first batch is the cold start (k-means on the raw features, DESIGN §5);
    ``random`` needs neither model nor features.
    """
    require(actor, "operate")
    check_selection_request(strategy, budget, overlap, assign)
    query = selection_strategy(store, strategy)  # a bad [selection.<strategy>] fails with or without a model
    overlap = overlap or store.workspace.config.annotation.overlap
    table = pair_table(store)
    pool_rows = selectable_rows(store, table)
    if len(pool_rows) == 0:
        raise PairlabError("select: no pairs left in the pool that nobody annotated or selected")
    if budget > len(pool_rows):
        raise PairlabError(f"--budget: {budget} exceeds the {len(pool_rows)} selectable pairs")
    start = time.perf_counter()
    info = latest_model(store)
    params: dict[str, Any] = {"seed": seed, "budget": budget}
    progress(0.05, "loading features")
    if strategy == "random":
        chosen = np.random.default_rng(seed).choice(pool_rows, size=budget, replace=False)
        explanation = [{"strategy": "random", "rank": r + 1} for r in range(budget)]
        scores = np.zeros(budget)
        used = "random"
    else:
        choice = encoder_choice(store)
        image, text = feature_matrices(store, table.ids, choice)
        params["encoders"] = choice.names()
        if info is None:
            progress(0.3, "no model yet: cold start on the raw features")
            selection = cold_start(np.hstack([image, text]), pool_rows, budget, seed=seed)
            used = "cold_start"
        else:
            info = current_model(store)
            progress(0.2, f"scoring {len(pool_rows)} pairs with model v{info.version}")
            model = _cached_model(info.path)
            _, labelled, vocabulary = label_matrix(store, table.ids)
            rows = np.union1d(pool_rows, np.flatnonzero(labelled & np.isin(table.splits, TRAINING_SPLITS)))
            outputs = infer(model, image[rows], text[rows], mc_samples=8,
                            dropout_samples=10 if strategy == "bald" else 0, seed=seed)
            pool_pos = np.searchsorted(rows, pool_rows)
            labelled_pos = np.setdiff1d(np.arange(len(rows)), pool_pos)
            try:
                selection = query.query(outputs, pool_pos, labelled_pos, budget, seed=seed)
            except SelectionError as exc:
                raise PairlabError(f"select: {exc}") from None
            joint = (outputs.probs_image + outputs.probs_text) / 2  # (n, C)
            for item, pos in zip(selection.explanation, selection.indices):
                item[SUGGESTIONS_KEY] = _suggestions(joint[pos], vocabulary)
            selection = replace(selection, indices=rows[selection.indices])
            params["model_version"] = info.version
            used = strategy
        chosen, explanation = selection.indices, selection.explanation
        params.update(selection.params)
        scores = np.array([item["score"] for item in explanation], dtype=float)
    params["selected_by"] = used
    params["select_seconds"] = round(time.perf_counter() - start, 3)
    # "index" is a row of the scored sub-array, meaningless outside this call
    selected = [SelectedPair(int(table.ids[r]), float(s),
                             {**{k: v for k, v in e.items() if k != "index"}, "strategy": used})
                for r, s, e in zip(chosen, scores, explanation)]
    progress(0.9, "recording the round")
    try:
        with store.db.write() as s:
            assignees = [get_user(s, name).id for name in assign]
            model_id = None if info is None or used in ("random", "cold_start") else _version_id(s, info)
            rnd = create_round(s, strategy=strategy, selected=selected, params=params, overlap=overlap,
                               assignees=assignees, model_version_id=model_id, created_by=actor.id)
            number = rnd.number
    except IntegrityError:
        raise PairlabError("select: another selection took some of these pairs meanwhile; run it again") from None
    progress(1.0, f"round {number}: {budget} pairs queued")
    return RoundReport(number, strategy, budget, budget * overlap,
                       None if used in ("random", "cold_start") else info.version)


# --------------------------------------------------------------------------- retrieval (Explore)

@dataclass(frozen=True)
class Embeddings:
    """Common-space means of every pair under one model version: pair_ids (N,), mu_image/mu_text (N, d)."""

    version: int
    pair_ids: np.ndarray
    mu_image: np.ndarray
    mu_text: np.ndarray


@dataclass(frozen=True)
class Hit:
    pair_id: int
    score: float


def _cached_model(path: str):
    """A checkpoint loaded once per process (files are written once per version, never changed)."""
    return _load_model(path, Path(path).stat().st_mtime)


@lru_cache(maxsize=4)
def _load_model(path: str, _mtime: float):
    return load_checkpoint(path)[0]


@lru_cache(maxsize=2)
def _cached_tfidf(path: str, _mtime: float) -> TfidfEncoder:
    return TfidfEncoder.load(path)


def _embeddings_path(store: Store, version: int) -> Path:
    return store.workspace.subdir("models") / f"embeddings-v{version}.npz"


def model_embeddings(store: Store) -> Embeddings:
    """The latest model's embeddings of all pairs, computed once per version and kept beside the checkpoint."""
    info = current_model(store)
    path = _embeddings_path(store, info.version)
    if not path.is_file():
        table = pair_table(store)
        image, text = feature_matrices(store, table.ids, encoder_choice(store))
        out = infer(_cached_model(info.path), image, text, mc_samples=0)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, pair_ids=table.ids, mu_image=out.mu_image, mu_text=out.mu_text)
        os.replace(tmp, path)
    with np.load(path) as data:
        return Embeddings(info.version, data["pair_ids"], data["mu_image"], data["mu_text"])


def embed_query_text(store: Store, query: str) -> np.ndarray:
    """The latest model's text mean (d,) of a free-text query, through the workspace's text encoder."""
    query = query.strip()
    if not query:
        raise PairlabError("query: empty text")
    info = current_model(store)
    choice = encoder_choice(store)
    if choice.text == PRECOMPUTED:
        raise PairlabError("free-text search needs a text encoder; this workspace's text features were precomputed")
    path = text_encoder_path(store, choice.text)
    encoder = _cached_tfidf(str(path), path.stat().st_mtime) if path.is_file() \
        else _build_encoder(choice.text, choice.text_options)
    features = encoder.embed_texts([query])  # (1, Dt)
    model = _cached_model(info.path)
    with torch.no_grad():
        mu, _ = model.encode_text(torch.from_numpy(np.asarray(features, dtype=np.float32)))
    return mu.numpy()[0]


def images_for_text(store: Store, query: str, *, k: int = 12) -> list[Hit]:
    """Top-k pairs whose image is most similar to the query text, one hit per distinct image."""
    emb = model_embeddings(store)
    return _distinct_image_hits(store, emb, emb.mu_image @ embed_query_text(store, query), k)


def texts_for_pair(store: Store, pair_id: int, *, k: int = 10) -> list[Hit]:
    """Top-k texts of the workspace for the image of ``pair_id``."""
    emb = model_embeddings(store)
    row = np.flatnonzero(emb.pair_ids == pair_id)
    if len(row) == 0:
        raise NotFoundError(f"pair {pair_id} has no embedding under model v{emb.version}")
    scores = emb.mu_text @ emb.mu_image[row[0]]  # (N,)
    top = np.argsort(-scores, kind="stable")[:k]
    return [Hit(int(emb.pair_ids[i]), float(scores[i])) for i in top]


def _distinct_image_hits(store: Store, emb: Embeddings, scores: np.ndarray, k: int) -> list[Hit]:
    with store.db.read() as s:
        sha = {pid: digest for pid, digest in s.execute(select(Pair.id, Pair.image_sha256))}
    hits, seen = [], set()
    for i in np.argsort(-scores, kind="stable"):
        key = sha.get(int(emb.pair_ids[i]))
        if key in seen:
            continue
        seen.add(key)
        hits.append(Hit(int(emb.pair_ids[i]), float(scores[i])))
        if len(hits) == k:
            break
    return hits
