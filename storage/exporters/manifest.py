"""The manifest exports: ``jsonl`` and ``csv``, which the manifest importer reads back.

- ``jsonl``: one manifest row per pair (DESIGN §2) - ``id``, ``image`` (absolute path; feature-only
  pairs keep their reference), ``text``, ``labels`` (consensus labels; omitted when unlabelled),
  ``split`` - plus ``annotators``, ``timestamp`` (last event, UTC ISO 8601), ``round`` (number),
  ``agreement``, ``status``, ``verdict`` (caption match: the current ``match``/``mismatch``/``unsure``),
  ``comments`` (the live comments of every event of the pair, oldest first), and ``audit_score`` and
  ``audit_rank`` (the latest ``pairlab audit`` run's score, higher = more likely mismatched, and rank,
  1 = most suspicious; null when that run did not score the pair or before any audit). Re-import needs
  ``allow_absolute`` (the importer ignores the state columns).
- ``csv``: the same columns plus ``labelled`` (1/0), labels and annotators joined with ``|``, comments as
  a JSON array, an empty cell for a null audit score or rank (a comment may hold ``|`` or a line break); a cell starting with
  ``= + - @``, tab or CR (or ``'`` followed by one of those or ``'``) gets a leading ``'`` against
  formula injection, which the manifest importer strips again, so the file round-trips.
"""
from __future__ import annotations

import csv
import json
from typing import TextIO

from sqlalchemy.orm import Session

from storage.exporters.rows import RowCounter, export_rows, manifest_record, round_number_by_id
from storage.importers.manifest import FORMULA_START

CSV_COLUMNS = ("id", "image", "text", "labels", "labelled", "split", "annotators", "timestamp", "round",
               "agreement", "status", "verdict", "comments", "audit_score", "audit_rank")


def write_jsonl(session: Session, fh: TextIO, counter: RowCounter) -> int:
    rounds = round_number_by_id(session)
    for row in export_rows(session):
        fh.write(json.dumps(manifest_record(row, rounds), ensure_ascii=False) + "\n")
        counter.tick()
    return counter.done


def neutralise(cell: str) -> str:
    """Prefix ``'`` to a CSV cell a spreadsheet could run as a formula (inverse: ``manifest.unneutralise``)."""
    if cell[:1] in FORMULA_START or (cell[:1] == "'" and cell[1:2] and cell[1:2] in FORMULA_START + ("'",)):
        return "'" + cell
    return cell


def write_csv(session: Session, fh: TextIO, counter: RowCounter) -> int:
    rounds = round_number_by_id(session)
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in export_rows(session):
        record = manifest_record(row, rounds)
        cells = {
            **record,
            "labels": "|".join(row.labels or ()),
            "labelled": "1" if row.labels is not None else "0",
            "annotators": "|".join(record["annotators"]),
            "comments": json.dumps(record["comments"], ensure_ascii=False) if record["comments"] else "",
        }
        writer.writerow([neutralise("" if cells[c] is None else str(cells[c])) for c in CSV_COLUMNS])
        counter.tick()
    return counter.done
