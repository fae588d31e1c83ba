"""Exporters (DESIGN §7 Export, §8 ``pairlab export``): jsonl, csv, coco, label-studio and npz.

Every export is streamed: pairs are read in batches (``yield_per``) with their current labels
(``storage.annotations.current_labels``) and written as they come, to a temporary file in the target
folder that is ``os.replace``d onto ``out`` only when complete (and removed on any error).

Shapes:
- ``jsonl``: one manifest row per pair (DESIGN §2) - ``id``, ``image`` (absolute path; feature-only
  pairs keep their reference), ``text``, ``labels`` (consensus labels; omitted when unlabelled),
  ``split`` - plus ``annotators``, ``timestamp`` (last event, UTC ISO 8601), ``round`` (number),
  ``agreement``, ``status`` and ``verdict`` (caption match). Re-import needs ``allow_absolute``.
- ``csv``: the same columns plus ``labelled`` (1/0), lists joined with ``|``; a cell starting with
  ``= + - @``, tab or CR (or ``'`` followed by one of those or ``'``) gets a leading ``'`` against
  formula injection, which the manifest importer strips again, so the file round-trips.
- ``coco``: ``{"info", "images", "annotations", "categories", "tags"}``. ``images``: one per distinct
  image (by sha256) ``{id, file_name (absolute path), sha256}``; ``annotations``: one caption per pair
  ``{id, image_id, caption, pairlab_id, split, status}`` (COCO captions shape); ``categories``: the
  vocabulary ``{id (position + 1), name}``; ``tags``: one ``{id, image_id, category_id}`` per
  (image, label) where the image's labels are the union of its pairs' current labels.
- ``label-studio``: a JSON list of tasks ``{id, data: {image, text, pairlab: {...}}, annotations}``,
  one annotation per annotator (their latest live submit, import or adjudication) whose ``result``
  holds a ``choices`` result for the labels (``from_name`` "labels") and one for the verdict.
- ``npz``: features of one image and one text encoder (``precomputed`` by default, else the latest
  registered) for the pairs both cover, in pair-id order: ``image`` (N, Di), ``text`` (N, Dt),
  ``labels`` (N, C) 0/1, ``labelled`` (N,), ``split`` (N,), ``ids`` (N,) external ids,
  ``label_names`` (C,) - the ``features`` importer reads it back.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import groupby, islice
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from storage.annotations import CurrentLabel, current_labels
from storage.errors import InputError, NotFoundError
from storage.features import PRECOMPUTED, ids_path
from storage.importers.manifest import FORMULA_START
from storage.models import Event, FeatureSet, Pair, Round, User
from storage.progress import CountProgress
from storage.store import Store
from storage.vocabulary import label_names

__all__ = ["EXPORT_FORMATS", "ExportReport", "export_workspace", "neutralise"]

EXPORT_FORMATS = ("jsonl", "csv", "coco", "label-studio", "npz")
EXPORT_SUFFIX = {"jsonl": ".jsonl", "csv": ".csv", "coco": ".json", "label-studio": ".json", "npz": ".npz"}
CSV_COLUMNS = ("id", "image", "text", "labels", "labelled", "split", "annotators", "timestamp", "round",
               "agreement", "status", "verdict")
BATCH = 1000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    rows: int
    path: Path


@dataclass(frozen=True)
class ExportRow:
    """A pair with its derived state (``label`` is None while the pair has no events)."""

    pair_id: int
    external_id: str
    image: str
    image_sha256: str
    text: str
    split: str
    label: CurrentLabel | None

    @property
    def labels(self) -> list[str] | None:
        return None if self.label is None or self.label.labels is None else list(self.label.labels)


def export_workspace(store: Store, fmt: str, out: Path, *, progress: CountProgress | None = None,
                     image_encoder: str | None = None, text_encoder: str | None = None) -> ExportReport:
    """Write the workspace to ``out`` in ``fmt``; ``out`` appears only when complete.

    image_encoder/text_encoder: npz only; the feature sets to export (default ``precomputed``, else the latest).
    """
    if fmt not in EXPORT_FORMATS:
        raise InputError(str(out), None, "format",
                         f"unknown export format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    out = Path(out).resolve()
    if not out.parent.is_dir():
        raise InputError(str(out), None, "out", f"folder {out.parent} does not exist")
    writers = {"jsonl": _write_jsonl, "csv": _write_csv, "coco": _write_coco, "label-studio": _write_label_studio}
    with store.db.read() as session, _atomic(out) as tmp:
        if fmt == "npz":
            rows = _write_npz(session, tmp, progress, image_encoder, text_encoder)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                rows = writers[fmt](session, fh, _Counter(session, progress))
    log.info("exported %d rows to %s", rows, out)
    return ExportReport(rows=rows, path=out)


@contextmanager
def _atomic(out: Path) -> Iterator[Path]:
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


class _Counter:
    """Counts rows and reports ``progress(done, total)``."""

    def __init__(self, session, progress: CountProgress | None):
        self.done, self.progress = 0, progress
        self.total = session.scalar(select(func.count(Pair.id))) if progress else 0

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


# ---------------------------------------------------------------- reading


def _rows(session, *, by_image: bool = False) -> Iterator[ExportRow]:
    """All pairs in id order (or grouped by image sha256), streamed with ``yield_per``."""
    order = (Pair.image_sha256, Pair.id) if by_image else (Pair.id,)
    query = (select(Pair.id, Pair.external_id, Pair.image_path, Pair.image_sha256, Pair.text, Pair.split)
             .order_by(*order).execution_options(yield_per=BATCH))
    for batch in session.execute(query).partitions():
        labels = {c.pair_id: c for c in current_labels(session, [r[0] for r in batch])}
        for pid, ext, image, sha, text, split in batch:
            yield ExportRow(pid, ext, image, sha, text, split, labels.get(pid))


def _round_numbers(session) -> dict[int, int]:
    return dict(session.execute(select(Round.id, Round.number)).all())


def _timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.replace(tzinfo=timezone.utc).isoformat()


def _record(row: ExportRow, rounds: dict[int, int]) -> dict:
    """The manifest row of a pair plus its annotation state (DESIGN §2)."""
    state = row.label
    record: dict = {"id": row.external_id, "image": row.image, "text": row.text}
    if row.labels is not None:
        record["labels"] = row.labels
    record.update(
        split=row.split,
        annotators=list(state.annotators) if state else [],
        timestamp=_timestamp(state.last_event_at) if state else None,
        round=rounds.get(state.last_round_id) if state and state.last_round_id else None,
        agreement=state.agreement if state else None,
        status=state.status if state else "unlabelled",
        verdict=state.verdict if state else None,
    )
    return record


# ---------------------------------------------------------------- writers


def _write_jsonl(session, fh, counter: _Counter) -> int:
    rounds = _round_numbers(session)
    for row in _rows(session):
        fh.write(json.dumps(_record(row, rounds), ensure_ascii=False) + "\n")
        counter.tick()
    return counter.done


def neutralise(cell: str) -> str:
    """Prefix ``'`` to a CSV cell a spreadsheet could run as a formula (inverse: ``manifest.unneutralise``)."""
    if cell[:1] in FORMULA_START or (cell[:1] == "'" and cell[1:2] and cell[1:2] in FORMULA_START + ("'",)):
        return "'" + cell
    return cell


def _write_csv(session, fh, counter: _Counter) -> int:
    rounds = _round_numbers(session)
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in _rows(session):
        record = _record(row, rounds)
        cells = {
            **record,
            "labels": "|".join(row.labels or ()),
            "labelled": "1" if row.labels is not None else "0",
            "annotators": "|".join(record["annotators"]),
        }
        writer.writerow([neutralise("" if cells[c] is None else str(cells[c])) for c in CSV_COLUMNS])
        counter.tick()
    return counter.done


def _write_coco(session, fh, counter: _Counter) -> int:
    names = label_names(session)
    category = {name: i + 1 for i, name in enumerate(names)}
    folder = Path(fh.name).parent
    with tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder) as captions, \
            tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder) as tags:
        info = {"description": "pairlab export", "date_created": datetime.now(timezone.utc).isoformat()}
        fh.write('{"info": ' + json.dumps(info) + ', "images": [')
        n_tags = 0
        groups = groupby(_rows(session, by_image=True), key=lambda r: r.image_sha256)
        for image_id, (sha, group) in enumerate(groups, start=1):
            group = list(group)  # the pairs of one image
            image = {"id": image_id, "file_name": group[0].image, "sha256": sha}
            fh.write(_sep(image_id) + json.dumps(image, ensure_ascii=False))
            labels: dict[str, None] = {}
            for row in group:
                labels.update(dict.fromkeys(row.labels or ()))
                caption = {"id": counter.done + 1, "image_id": image_id, "caption": row.text,
                           "pairlab_id": row.external_id, "split": row.split,
                           "status": row.label.status if row.label else "unlabelled"}
                captions.write(_sep(counter.done + 1) + json.dumps(caption, ensure_ascii=False))
                counter.tick()
            for name in sorted(labels, key=category.__getitem__):
                n_tags += 1
                tags.write(_sep(n_tags) + json.dumps({"id": n_tags, "image_id": image_id,
                                                      "category_id": category[name]}))
        fh.write('], "annotations": [')
        captions.seek(0)
        shutil.copyfileobj(captions, fh)
        fh.write('], "categories": ' + json.dumps([{"id": category[n], "name": n} for n in names], ensure_ascii=False))
        fh.write(', "tags": [')
        tags.seek(0)
        shutil.copyfileobj(tags, fh)
        fh.write("]}\n")
    return counter.done


def _sep(position: int) -> str:
    """The separator before the ``position``-th (1-based) element of a JSON array."""
    return "" if position == 1 else ", "


def _votes(session, pair_ids: list[int]) -> dict[int, list[tuple[int, str, Event]]]:
    """Per pair, each user's latest live submit, import or adjudicate event (user id, name, event)."""
    events = session.execute(select(Event, User.name).join(User, User.id == Event.user_id)
                             .where(Event.pair_id.in_(pair_ids)).order_by(Event.id)).all()
    undone = {e.undoes_id for e, _ in events if e.kind == "undo"}
    latest: dict[int, dict[int, tuple[int, str, Event]]] = {}
    for event, name in events:
        if event.kind in ("submit", "import", "adjudicate") and event.id not in undone:
            latest.setdefault(event.pair_id, {})[event.user_id] = (event.user_id, name, event)
    return {pid: list(users.values()) for pid, users in latest.items()}


def _write_label_studio(session, fh, counter: _Counter) -> int:
    rounds = _round_numbers(session)
    fh.write("[")
    rows = _rows(session)
    while batch := list(islice(rows, BATCH)):
        votes = _votes(session, [row.pair_id for row in batch])
        for row in batch:
            meta = {k: v for k, v in _record(row, rounds).items() if k not in ("image", "text")}
            annotations = []
            for user_id, name, event in votes.get(row.pair_id, []):
                result = [{"from_name": "labels", "to_name": "image", "type": "choices",
                           "value": {"choices": list(event.labels or [])}}]
                if event.verdict is not None:
                    result.append({"from_name": "verdict", "to_name": "text", "type": "choices",
                                   "value": {"choices": [event.verdict]}})
                annotations.append({"completed_by": user_id, "created_username": name, "kind": event.kind,
                                    "created_at": _timestamp(event.created_at), "result": result})
            task = {"id": row.pair_id, "data": {"image": row.image, "text": row.text, "pairlab": meta},
                    "annotations": annotations}
            fh.write(_sep(counter.done + 1) + "\n" + json.dumps(task, ensure_ascii=False))
            counter.tick()
    fh.write("\n]\n")
    return counter.done


# ---------------------------------------------------------------- npz


def _feature_set(session, modality: str, encoder: str | None) -> FeatureSet:
    query = select(FeatureSet).where(FeatureSet.modality == modality)
    if encoder is not None:
        found = session.scalar(query.where(FeatureSet.encoder == encoder))
    else:
        found = session.scalar(query.where(FeatureSet.encoder == PRECOMPUTED)) or \
            session.scalar(query.order_by(FeatureSet.created_at.desc(), FeatureSet.id.desc()).limit(1))
    if found is None:
        which = f"from encoder {encoder!r} " if encoder else ""
        raise NotFoundError(f"npz export: no {modality} features {which}registered; import precomputed "
                            "features or run 'pairlab encode' first")
    return found


def _write_npz(session, tmp: Path, progress: CountProgress | None, image_encoder: str | None,
               text_encoder: str | None) -> int:
    sets = {m: _feature_set(session, m, e) for m, e in (("image", image_encoder), ("text", text_encoder))}
    matrices = {m: np.load(fs.path, mmap_mode="r") for m, fs in sets.items()}  # (rows, D), memory-mapped
    image_ids, text_ids = (np.load(ids_path(fs.path)) for fs in sets.values())
    pair_ids, image_rows, text_rows = np.intersect1d(image_ids, text_ids, assume_unique=True, return_indices=True)
    n, names = len(pair_ids), label_names(session)
    width = max(1, session.scalar(select(func.max(func.length(Pair.external_id)))) or 1)
    with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".npz-parts-") as parts:
        def part(name, dtype, shape):
            return np.lib.format.open_memmap(Path(parts) / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

        labels, labelled = part("labels", np.float32, (n, len(names))), part("labelled", np.bool_, (n,))
        splits, ids = part("split", "<U5", (n,)), part("ids", f"<U{width}", (n,))
        column = {name: i for i, name in enumerate(names)}
        for start in range(0, n, BATCH):
            chunk = [int(p) for p in pair_ids[start:start + BATCH]]
            info = dict((pid, (ext, split)) for pid, ext, split in
                        session.execute(select(Pair.id, Pair.external_id, Pair.split).where(Pair.id.in_(chunk))))
            state = {c.pair_id: c for c in current_labels(session, chunk)}
            for offset, pid in enumerate(chunk):
                i = start + offset
                ids[i], splits[i] = info[pid]
                current = state.get(pid)
                if current is not None and current.labels is not None:
                    labelled[i] = True
                    labels[i, [column[name] for name in current.labels]] = 1.0
            if progress is not None:
                progress(min(start + BATCH, n), n)
        arrays = {"image": _rows_of(matrices["image"], image_rows, part, "image"),
                  "text": _rows_of(matrices["text"], text_rows, part, "text"),
                  "labels": labels, "labelled": labelled, "split": splits, "ids": ids,
                  "label_names": np.array(names, dtype=str)}
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        del arrays, labels, labelled, splits, ids
    return n


def _rows_of(matrix: np.ndarray, rows: np.ndarray, part, name: str) -> np.ndarray:
    """``matrix[rows]`` without loading it: the memmap itself when ``rows`` is 0..n-1, else a gathered copy on disk."""
    if len(rows) == len(matrix) and np.array_equal(rows, np.arange(len(matrix))):
        return matrix
    out = part(name, np.float32, (len(rows), matrix.shape[1]))
    for start in range(0, len(rows), BATCH * 10):
        out[start:start + BATCH * 10] = matrix[rows[start:start + BATCH * 10]]
    return out
