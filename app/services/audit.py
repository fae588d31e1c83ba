"""``pairlab audit``: rank every pair by how likely its caption does not belong to its image.

Scores the whole workspace with the current model (``learner.audit``), stores the ranking as an audit
run, and optionally writes it as JSONL, one object per pair, most suspicious first: ``id`` (the pair's
id as imported), ``mismatch`` (the audit score, higher = more likely mismatched), ``rank`` and the
breakdown; the top ``[audit].evidence_rows`` pairs also name the pool's best alternative caption for
their image and image for their caption.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.services.data import feature_matrices, pair_table
from app.services.models import cached_model, current_model
from app.services.progress import StepProgress, quiet
from app.services.settings import encoder_choice, settings
from learner.audit import AuditConfig, AuditScores, audit_pairs, best_alternatives, breakdown
from learner.inference import infer
from storage.audit import AuditedPair, record_audit
from storage.errors import PairlabError
from storage.exporters import atomic_text_file
from storage.exporters.targets import check_export_target
from storage.model_versions import model_version_id
from storage.pairs import PairColumns
from storage.store import Store
from storage.users import UserInfo, require


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
    progress(0.05, "loading features")
    image, text = feature_matrices(store, table.ids, encoder_choice(store))
    progress(0.2, f"scoring {len(table.ids)} pairs with model v{info.version}")
    outputs = infer(cached_model(info.path), image, text, mc_samples=0,
                    batch_size=settings(store).inference.batch_size, seed=config.seed)
    scores = audit_pairs(outputs, image, text, config)
    order = scores.order()
    flagged = order[:config.evidence_rows]
    progress(0.6, f"finding evidence for the top {len(flagged)} pairs")
    best_caption, best_image = best_alternatives(outputs.mu_image, outputs.mu_text, flagged)
    evidence = {int(row): (int(c), int(i)) for row, c, i in zip(flagged, best_caption, best_image)}

    def records() -> Iterator[tuple[int, dict[str, Any]]]:   # made on the fly: memory O(evidence_rows), not O(N)
        return ((int(row), _record(scores, rank, int(row), table, evidence.get(int(row)), config))
                for rank, row in enumerate(order))

    progress(0.8, "recording the audit")
    with store.db.write() as s:
        run_id = record_audit(
            s, model_version_id=model_version_id(s, info.version), created_by=actor.id,
            params={"model_version": info.version, "weights": config.weights(), "seed": config.seed},
            scored=(AuditedPair(int(table.ids[row]), item["rank"], item["mismatch"], item["breakdown"])
                    for row, item in records()))
    if out is not None:
        progress(0.9, f"writing {out}")
        with atomic_text_file(store, out) as fh:
            for _, item in records():
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    progress(1.0, f"audit {run_id}: {len(order)} pairs ranked")
    return AuditReport(run_id, len(order), info.version, [item for _, item in itertools.islice(records(), show)])


def _record(scores: AuditScores, rank: int, row: int, table: PairColumns, evidence: tuple[int, int] | None,
            config: AuditConfig) -> dict[str, Any]:
    """The JSONL object of the pair at ``row``, ranked ``rank`` (0-based); ``evidence``: the rows of its best
    alternative caption and image, when it is among the flagged pairs."""
    ids = table.external_ids
    item = {"id": ids[row], "mismatch": float(scores.score[row]), "rank": rank + 1,
            "breakdown": breakdown(scores, row, config)}
    if evidence is not None:
        caption, image = evidence
        item["breakdown"]["best_caption"] = {"id": ids[caption], "text": table.texts[caption]}
        item["breakdown"]["best_image"] = {"id": ids[image], "image": table.image_paths[image]}
    return item
