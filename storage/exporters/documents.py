"""The JSON document exports: ``coco`` and ``label-studio``, written as a stream (never held in memory).

- ``coco``: ``{"info", "images", "annotations", "categories", "tags"}``. ``images``: one per distinct
  image (by sha256) ``{id, file_name (absolute path), sha256}``; ``annotations``: one caption per pair
  ``{id, image_id, caption, pairlab_id, split, status, comments}`` (COCO captions shape); ``categories``: the
  vocabulary ``{id (position + 1), name}``; ``tags``: one ``{id, image_id, category_id}`` per
  (image, label) where the image's labels are the union of its pairs' current labels.
- ``label-studio``: a JSON list of tasks ``{id, data: {image, text, pairlab: {...}}, annotations}``,
  one annotation per annotator (their latest live submit, import or adjudication) whose ``result``
  holds a ``choices`` result for the labels (``from_name`` "labels"), one for the verdict and a
  ``textarea`` result (``from_name`` "comment") for its comment. ``data.image`` is the absolute path, or
  with ``[export] image_root`` the path relative to it, prefixed with ``image_url`` when set (e.g.
  Label Studio's ``/data/local-files/?d=``); an image outside the root fails the export naming the pair.
  ``data.pairlab`` is the manifest record (comments of every event included; the current ``verdict``,
  ``audit_score`` and ``audit_rank`` as in ``jsonl``).
"""
from __future__ import annotations

import json
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from itertools import groupby, islice
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import InputError
from storage.exporters.rows import (BATCH, ExportRow, RowCounter, export_rows, manifest_record, round_number_by_id,
                                    timestamp)
from storage.models import Event, User
from storage.vocabulary import label_names
from storage.workspace import ExportConfig


def write_coco(session: Session, fh: TextIO, counter: RowCounter) -> int:
    names = label_names(session)
    category = {name: i + 1 for i, name in enumerate(names)}
    folder = Path(fh.name).parent
    with tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder) as captions, \
            tempfile.TemporaryFile("w+", encoding="utf-8", dir=folder) as tags:
        info = {"description": "pairlab export", "date_created": datetime.now(timezone.utc).isoformat()}
        fh.write('{"info": ' + json.dumps(info) + ', "images": [')
        n_tags = 0
        groups = groupby(export_rows(session, by_image=True), key=lambda r: r.image_sha256)
        for image_id, (sha, group) in enumerate(groups, start=1):
            group = list(group)  # the pairs of one image
            image = {"id": image_id, "file_name": group[0].image, "sha256": sha}
            fh.write(_sep(image_id) + json.dumps(image, ensure_ascii=False))
            labels: dict[str, None] = {}
            for row in group:
                labels.update(dict.fromkeys(row.labels or ()))
                caption = {"id": counter.done + 1, "image_id": image_id, "caption": row.text,
                           "pairlab_id": row.external_id, "split": row.split,
                           "status": row.label.status if row.label else "unlabelled",
                           "comments": list(row.label.comments) if row.label else []}
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


def _votes(session: Session, pair_ids: list[int]) -> dict[int, list[tuple[int, str, Event]]]:
    """Per pair, each user's latest live submit, import or adjudicate event (user id, name, event)."""
    events = session.execute(select(Event, User.name).join(User, User.id == Event.user_id)
                             .where(Event.pair_id.in_(pair_ids)).order_by(Event.id)).all()
    undone = {e.undoes_id for e, _ in events if e.kind == "undo"}
    latest: dict[int, dict[int, tuple[int, str, Event]]] = {}
    for event, name in events:
        if event.kind in ("submit", "import", "adjudicate") and event.id not in undone:
            latest.setdefault(event.pair_id, {})[event.user_id] = (event.user_id, name, event)
    return {pid: list(users.values()) for pid, users in latest.items()}


def image_references(config: ExportConfig) -> Callable[[ExportRow], str]:
    """How a Label Studio task names its image (see the module docstring); references that are not absolute
    paths (feature-only pairs) are kept as they are."""
    if config.image_root is None:
        return lambda row: row.image
    root = posixpath.normpath(config.image_root)

    def reference(row: ExportRow) -> str:
        if not posixpath.isabs(row.image):
            return row.image
        relative = posixpath.relpath(posixpath.normpath(row.image), root)
        if relative == ".." or relative.startswith("../"):
            raise InputError(row.image, None, "image",
                             f"pair {row.external_id!r}: not under [export] image_root {root}")
        return relative if config.image_url is None else config.image_url + quote(relative)

    return reference


def write_label_studio(session: Session, fh: TextIO, counter: RowCounter,
                       image: Callable[[ExportRow], str] = lambda row: row.image) -> int:
    rounds = round_number_by_id(session)
    fh.write("[")
    rows = export_rows(session)
    while batch := list(islice(rows, BATCH)):
        votes = _votes(session, [row.pair_id for row in batch])
        for row in batch:
            meta = {k: v for k, v in manifest_record(row, rounds).items() if k not in ("image", "text")}
            annotations = []
            for user_id, name, event in votes.get(row.pair_id, []):
                result = [{"from_name": "labels", "to_name": "image", "type": "choices",
                           "value": {"choices": list(event.labels or [])}}]
                if event.verdict is not None:
                    result.append({"from_name": "verdict", "to_name": "text", "type": "choices",
                                   "value": {"choices": [event.verdict]}})
                if event.comment:
                    result.append({"from_name": "comment", "to_name": "text", "type": "textarea",
                                   "value": {"text": [event.comment]}})
                annotations.append({"completed_by": user_id, "created_username": name, "kind": event.kind,
                                    "created_at": timestamp(event.created_at), "result": result})
            task = {"id": row.pair_id, "data": {"image": image(row), "text": row.text, "pairlab": meta},
                    "annotations": annotations}
            fh.write(_sep(counter.done + 1) + "\n" + json.dumps(task, ensure_ascii=False))
            counter.tick()
    fh.write("\n]\n")
    return counter.done
