"""``pairlab audit``: rank every pair by how likely its caption does not belong to its image.

Scores the whole workspace with the current model (``learner.audit``), stores the ranking as an audit
run, and optionally writes it as JSONL, one object per pair, most suspicious first: ``id`` (the pair's
id as imported), ``mismatch`` (the audit score, higher = more likely mismatched), ``rank`` and the
breakdown; the top ``[audit].evidence_rows`` pairs also name the pool's best alternative caption for
their image and image for their caption.

The pool is scored the way ``pairlab select`` scores it: features stay memory-mapped (``feature_rows``)
and inference runs batch by batch on ``[inference].workers`` threads (``learner.inference.iter_infer``);
of each batch only the means and two per-pair components are kept (``learner.audit.gather_audit_inputs``).

``queue_verification`` queues pairs of an audit (its top N, or pairs picked on the Clean-up page) as a
*verification* round, where the Annotate page asks first for the caption-match verdict.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.services.data import feature_rows, pair_table
from app.services.models import cached_model, current_model
from app.services.progress import StepProgress, quiet
from app.services.select import check_overlap
from app.services.settings import encoder_choice, settings
from learner.audit import (AUDIT_COMPONENTS, AuditConfig, AuditScores, audit_scores, best_alternatives, breakdown,
                           gather_audit_inputs)
from learner.inference import iter_infer
from storage.audit import (RANKS, VALUES, AuditedPair, AuditRow, AuditRunInfo, audit_page, latest_audit,
                           record_audit, verification_candidates)
from storage.errors import PairlabError
from storage.exporters import atomic_text_file
from storage.exporters.targets import check_export_target
from storage.model_versions import model_version_id
from storage.pairs import PairColumns
from storage.queue import SelectedPair, create_round
from storage.store import Store
from storage.users import UserInfo, get_user, require

VERIFICATION_STRATEGY = "audit"  # the ``Round.strategy`` of verification rounds


@dataclass(frozen=True)
class AuditReport:
    run_id: int
    pairs: int
    model_version: int
    top: list[dict[str, Any]]   # the most suspicious records, as written to --out


def run_audit(store: Store, *, actor: UserInfo, out: Path | None = None, show: int = 10,
              progress: StepProgress = quiet) -> AuditReport:
    """Audit every pair with the current model; store the run; write ``out`` (JSONL) when given.
    A bad ``out`` is refused before any work (the export-target rule)."""
    require(actor, "operate")
    if out is not None:
        out = check_export_target(store, out)
    config = settings(store).audit
    info = current_model(store)
    table = pair_table(store)
    if len(table.ids) < 2:
        raise PairlabError("audit: needs at least 2 pairs")
    progress(0.05, "opening the features")
    image, text = feature_rows(store, table.ids, encoder_choice(store))
    progress(0.2, f"scoring {len(table.ids)} pairs with model v{info.version}")
    inference = settings(store).inference
    batches = iter_infer(cached_model(info.path), image, text, mc_samples=0, batch_size=inference.batch_size,
                         seed=config.seed, workers=inference.workers)
    inputs = gather_audit_inputs(batches, len(table.ids), match_samples=config.match_samples, seed=config.seed)
    scores = audit_scores(inputs, image, text, config, workers=inference.workers)
    order = scores.order()
    flagged = order[:config.evidence_rows]
    progress(0.6, f"finding evidence for the top {len(flagged)} pairs")
    best_caption, best_image = best_alternatives(inputs.mu_image, inputs.mu_text, flagged)
    evidence = {int(row): (int(c), int(i)) for row, c, i in zip(flagged, best_caption, best_image)}

    def records() -> Iterator[dict[str, Any]]:   # made on the fly: memory O(evidence_rows), not O(N)
        return (_record(scores, rank, int(row), table, evidence.get(int(row)), config)
                for rank, row in enumerate(order))

    progress(0.8, "recording the audit")
    with store.db.write() as s:
        run_id = record_audit(
            s, model_version_id=model_version_id(s, info.version), created_by=actor.id,
            params={"model_version": info.version, "components": list(AUDIT_COMPONENTS), "weights": config.weights(),
                    "seed": config.seed},
            scored=_stored(scores, order, table, evidence))
    if out is not None:
        progress(0.9, f"writing {out}")
        with atomic_text_file(store, out) as fh:
            for item in records():
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    progress(1.0, f"audit {run_id}: {len(order)} pairs ranked")
    return AuditReport(run_id, len(order), info.version, list(itertools.islice(records(), show)))


STORE_BATCH = 5000  # ranked pairs whose stored breakdowns are made at once
STORED_DECIMALS = 6  # of the values and ranks in a stored breakdown (the score and rank columns are exact)


def _stored(scores: AuditScores, order: np.ndarray, table: PairColumns,
            evidence: dict[int, tuple[int, int]]) -> Iterator[AuditedPair]:
    """The ranked pairs as stored, in pair-id order (the table's, so the primary key (run, pair) grows at its
    end: a million rows in rank order took 30 s against 20 s this way, docs/benchmarks.md): compact
    breakdowns (``storage.audit``: the components' values and ranks as lists in ``AUDIT_COMPONENTS``
    order), made ``STORE_BATCH`` rows at a time with numpy, plus the evidence of the flagged pairs.
    Memory O(N) int64 for the ranks, else O(STORE_BATCH)."""
    def lists(arrays: Sequence[np.ndarray], rows: slice) -> list:
        return np.column_stack([a[rows] for a in arrays]).round(STORED_DECIMALS).tolist()

    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    for start in range(0, len(order), STORE_BATCH):
        rows = slice(start, start + STORE_BATCH)
        values = lists([scores.components[name] for name in AUDIT_COMPONENTS], rows)
        ranks = lists([scores.ranks[name] for name in AUDIT_COMPONENTS], rows)
        own = lists([scores.caption_rank, scores.image_rank], rows)
        for offset, (pair_id, pair_rank, score) in enumerate(zip(table.ids[rows].tolist(), rank[rows].tolist(),
                                                                 scores.score[rows].tolist())):
            stored = {VALUES: values[offset], RANKS: ranks[offset], "caption_rank": own[offset][0],
                      "image_rank": own[offset][1]}
            if start + offset in evidence:
                stored.update(_evidence(table, *evidence[start + offset]))
            yield AuditedPair(pair_id, pair_rank, score, stored)


def _evidence(table: PairColumns, caption: int, image: int) -> dict[str, Any]:
    """The breakdown entries naming the pool's best alternative caption (row ``caption``) and image."""
    ids = table.external_ids
    return {"best_caption": {"id": ids[caption], "text": table.texts[caption]},
            "best_image": {"id": ids[image], "image": table.image_paths[image]}}


def _record(scores: AuditScores, rank: int, row: int, table: PairColumns, evidence: tuple[int, int] | None,
            config: AuditConfig) -> dict[str, Any]:
    """The JSONL object of the pair at ``row``, ranked ``rank`` (0-based); ``evidence``: the rows of its best
    alternative caption and image, when it is among the flagged pairs."""
    item = {"id": table.external_ids[row], "mismatch": float(scores.score[row]), "rank": rank + 1,
            "breakdown": breakdown(scores, row, config)}
    if evidence is not None:
        item["breakdown"].update(_evidence(table, *evidence))
    return item


@dataclass(frozen=True)
class VerificationReport:
    """What ``queue_verification`` did: round_number None when no pair was left to queue."""

    audit_run: int
    round_number: int | None
    queued: int
    slots: int
    in_open_round: int   # left out: already waiting in an open verification round
    verdict_given: int   # left out: a person gave the verdict after the audit

    def summary(self) -> str:
        done = (f"verification round {self.round_number}: {self.queued} pairs queued ({self.slots} slots)"
                if self.round_number is not None else "no pair queued")
        return (f"{done} from audit {self.audit_run}; skipped {self.in_open_round} already in an open verification "
                f"round and {self.verdict_given} given a verdict since the audit")


def check_verification_request(top: int | None, overlap: int | None, assign: Sequence[str]) -> None:
    """The checks of a verification request that need no data, with ``pairlab select``'s wording."""
    if top is not None and top < 1:
        raise PairlabError("--top: must be >= 1")
    check_overlap(overlap, assign)


def queue_verification(store: Store, *, actor: UserInfo, top: int | None = None, pair_ids: Sequence[int] = (),
                       run_id: int | None = None, assign: Sequence[str] = (),
                       overlap: int | None = None) -> VerificationReport:
    """Queue the top ``top`` pairs of audit ``run_id`` (default: the latest), or its ``pair_ids``, as a
    verification round with ``overlap`` annotators per pair (default ``[annotation].overlap``), dealt to
    ``assign`` when given. Pairs already waiting in an open verification round, or given a verdict by a
    person since the audit, are left out and counted (``storage.audit.verification_candidates``)."""
    require(actor, "verify")
    if (top is None) == (not pair_ids):
        raise PairlabError("verification: give either the top N of the audit or the pairs to queue")
    check_verification_request(top, overlap, assign)
    overlap = overlap or settings(store).annotation.overlap
    with store.db.write() as s:
        if run_id is None:
            latest = latest_audit(s)
            if latest is None:
                raise PairlabError("audit: no audit has run yet; run 'pairlab audit WS' (or Run audit) first")
            run_id = latest.id
        assignees = [get_user(s, name).id for name in assign]
        found = verification_candidates(s, run_id, top=top, pair_ids=pair_ids)
        number = None
        if found.chosen:
            selected = [SelectedPair(item.pair_id, item.score,
                                     {"audit": run_id, "audit_rank": item.rank, "mismatch": item.score,
                                      **item.breakdown}) for item in found.chosen]
            params = {"audit": run_id, "top": top, "requested": top or len(pair_ids)}
            number = create_round(s, kind="verification", strategy=VERIFICATION_STRATEGY, selected=selected,
                                  params=params, overlap=overlap, assignees=assignees, created_by=actor.id).number
    return VerificationReport(run_id, number, len(found.chosen), len(found.chosen) * overlap, found.in_open_round,
                              found.verdict_given)


@dataclass(frozen=True)
class CleanupRow:
    """One ranked pair as the Clean-up page shows it: the score breakdown as table rows (component, value,
    its rank-normalised place in the pool in [0, 1] with 1 the most suspicious pair, weight), the fraction of
    candidate captions closer to its image than its own (``caption_rank``) and of candidate images closer to
    its caption (``image_rank``), and the pool's best alternative caption and image when the audit stored
    them (its top ``[audit].evidence_rows`` pairs)."""

    pair_id: int
    external_id: str
    rank: int
    score: float
    image_path: str
    text: str
    verdict: str | None
    components: list[dict[str, Any]]
    caption_rank: float | None
    image_rank: float | None
    best_caption: dict[str, Any] | None
    best_image: dict[str, Any] | None


def latest_run(store: Store, actor: UserInfo) -> AuditRunInfo | None:
    """The latest audit run (None before the first), for reviewers and operators."""
    require(actor, "verify")
    with store.db.read() as s:
        return latest_audit(s)


def cleanup_page(store: Store, actor: UserInfo, run_id: int, *, page: int, page_size: int,
                 verdict: str | None = None) -> tuple[list[CleanupRow], bool]:
    """Page ``page`` (0-based) of audit ``run_id``, most suspicious first, optionally only pairs whose current
    verdict is ``verdict`` (``storage.audit.VERDICT_FILTERS``); and whether a next page exists. Reads
    ``page_size + 1`` rows through the rank index, never the whole run."""
    require(actor, "verify")
    with store.db.read() as s:
        rows = audit_page(s, run_id, offset=page * page_size, limit=page_size + 1, verdict=verdict)
    return [_cleanup_row(row) for row in rows[:page_size]], len(rows) > page_size


RANK_COLUMN = "pool rank"  # in [0, 1], 1 = the most suspicious pair of the pool


def _rounded(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def _cleanup_row(row: AuditRow) -> CleanupRow:
    parts = row.breakdown or {}
    components = [{"component": name, "value": _rounded(c.get("value")), RANK_COLUMN: _rounded(c.get("rank")),
                   "weight": c.get("weight")} for name, c in (parts.get("components") or {}).items()]
    return CleanupRow(row.pair_id, row.external_id, row.rank, row.score, row.image_path, row.text, row.verdict,
                      components, parts.get("caption_rank"), parts.get("image_rank"), parts.get("best_caption"),
                      parts.get("best_image"))
