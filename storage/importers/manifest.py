"""The manifest format (DESIGN §2): JSON lines (``.jsonl``/``.json``) or CSV (``.csv``).

Fields: ``id`` (optional; default ``sha256(image_sha256 + "\\n" + text)[:16]``), ``image`` (relative to the
manifest's folder; absolute only with ``allow_absolute``), ``text``, ``labels`` (optional: absent or null =
unlabelled, ``[]`` = labelled with no class) and ``split`` (optional: the row's split wins, else the
``split`` argument, else ``pool``). Other fields (the exporters' annotators, status, ...) are ignored.

CSV: a header row names the columns (``image`` and ``text`` required). ``labels`` holds names separated
by ``|``. The optional ``labelled`` column (``1/true/yes`` or ``0/false/no/empty``) tells "labelled with no
class" (``labelled=1``, empty ``labels``) from "unlabelled"; without that column a non-empty ``labels``
cell means labelled and an empty one unlabelled. The exporter always writes ``labelled``.
Formula neutralisation: a cell that starts with ``'`` followed by one of ``= + - @ ' \\t \\r`` loses that
leading ``'`` (the CSV exporter adds it), so exported files round-trip exactly.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from storage.errors import InputError
from storage.importers.fields import check_id, check_labels, check_split, check_text, resolve_image
from storage.importers.jsonrows import read_json_lines
from storage.importers.rows import ParsedSource, SourceRow
from storage.text import check_text_chars, read_text

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


def parse_manifest(source: Path, *, split: str, allow_absolute: bool) -> ParsedSource:
    suffix = source.suffix.lower()
    if suffix in (".jsonl", ".json"):
        records = read_json_lines(source)
    elif suffix == ".csv":
        records = _csv_records(source)
    else:
        raise InputError(str(source), None, "format",
                         f"unknown manifest extension {suffix!r}; use .jsonl, .json or .csv")
    base = source.resolve().parent
    rows, first_seen = [], {}
    for line, record in records:
        row = _row(record, str(source), line, base, split, allow_absolute)
        first_seen.update(dict.fromkeys(row.labels or ()))
        rows.append(row)
    return ParsedSource(rows, list(first_seen))


def _row(record: dict, path: str, line: int, base: Path, split: str, allow_absolute: bool) -> SourceRow:
    if "image" not in record or record["image"] in (None, ""):
        raise InputError(path, line, "image", "missing")
    if "text" not in record or record["text"] is None:
        raise InputError(path, line, "text", "missing")
    image = resolve_image(base, record["image"], allow_absolute=allow_absolute, path=path, line=line)
    labels = record.get("labels")
    return SourceRow(
        path=path, line=line,
        external_id=check_id(record.get("id"), path, line),
        image=image, image_ref=str(image),
        text=check_text(record["text"], path, line, "text"),
        labels=None if labels is None else check_labels(labels, path, line),
        split=check_split(record.get("split"), split, path, line),
    )


def unneutralise(cell: str) -> str:
    """Undo the CSV exporter's formula neutralisation (a leading ``'`` before a risky character)."""
    if len(cell) >= 2 and cell[0] == "'" and (cell[1] in FORMULA_START or cell[1] == "'"):
        return cell[1:]
    return cell


def _csv_records(source: Path) -> list[tuple[int, dict]]:
    path = str(source)
    reader = csv.reader(io.StringIO(read_text(source, "source"), newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InputError(path, 1, "header", f"malformed CSV: {exc}") from None
    if header is None:
        raise InputError(path, 1, "header", "empty file; expected a header row")
    header = [h.strip() for h in header]
    for name in header:
        check_text_chars(name, path, 1, "header", single_line=True)
    for required in ("image", "text"):
        if required not in header:
            raise InputError(path, 1, "header", f"missing column {required!r}")
    if len(set(header)) != len(header):
        raise InputError(path, 1, "header", "repeated column name")
    out = []
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise InputError(path, line, "row", f"malformed CSV: {exc}") from None
        if not cells:
            continue
        if len(cells) != len(header):
            raise InputError(path, line, "row", f"expected {len(header)} fields, got {len(cells)}")
        record = {name: unneutralise(cell) for name, cell in zip(header, cells)}
        out.append((line, _csv_fields(record, path, line)))
    return out


def _csv_fields(record: dict, path: str, line: int) -> dict:
    """CSV cells to manifest fields: empty optional cells are absent, labels split on ``|``."""
    out = {"image": record["image"], "text": record["text"], "id": record.get("id") or None,
           "split": record.get("split") or None}
    cell = record.get("labels", "")
    names = [name for name in cell.split("|") if name.strip()]
    if "labelled" in record:
        flag = record["labelled"].strip().lower()
        if flag not in _TRUE + _FALSE:
            raise InputError(path, line, "labelled", f"{record['labelled']!r}; use 1/true/yes or 0/false/no")
        if flag in _FALSE and names:
            raise InputError(path, line, "labels", "labels given but labelled is false")
        out["labels"] = names if flag in _TRUE else None
    else:
        out["labels"] = names or None
    return out
