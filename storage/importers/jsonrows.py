"""The one JSON reader of the importers: JSON lines (manifest) and whole documents (COCO).

Files are read with ``storage.text.read_text``, so bytes that are not UTF-8 reach the field checks as
lone surrogates and are reported with their field. Beyond ``json.loads``, the reader refuses, with an
``InputError`` naming file, line and field:

- nesting deeper than ``MAX_JSON_DEPTH`` arrays/objects (checked before parsing, so the parser never
  recurses into a ``RecursionError``);
- integers longer than ``MAX_INT_DIGITS`` digits (Python refuses to parse more than 4,300 with a
  ``ValueError``; no id or count needs more than a few dozen), reported at the field that holds one;
- an object that repeats a key (``{"text": "a", "text": "b"}`` would otherwise keep the last silently).

Fields are named by their JSON path below the line's object: ``id``, ``labels[2]``, ``annotations[3].id``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from storage.errors import InputError
from storage.text import read_text

MAX_JSON_DEPTH = 64
MAX_INT_DIGITS = 100
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class _HugeInt:
    """Stands in for an integer literal too long to parse, until its field is found."""

    def __init__(self, digits: int):
        self.digits = digits


class _RepeatedKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _parse_int(literal: str) -> int | _HugeInt:
    digits = len(literal.lstrip("-"))
    return int(literal) if digits <= MAX_INT_DIGITS else _HugeInt(digits)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _RepeatedKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _check_depth(text: str, path: str, line: int | None) -> None:
    """Refuse nesting deeper than ``MAX_JSON_DEPTH``; brackets inside strings do not count."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return
    depth = 0
    for token in _TOKENS.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                where = line if line is not None else text.count("\n", 0, token.start()) + 1
                raise InputError(path, where, "json", f"nested deeper than {MAX_JSON_DEPTH} levels")
        elif bracket in "]}":
            depth -= 1


def _find_huge(value: object, where: str = "") -> tuple[str, _HugeInt] | None:
    """The JSON path and stand-in of the first too-long integer in ``value`` (depth already bounded)."""
    if isinstance(value, _HugeInt):
        return where or "json", value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        child = f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}" if where else str(key)
        found = _find_huge(item, child)
        if found is not None:
            return found
    return None


def parse_json(text: str, path: str, line: int | None) -> object:
    """``text`` parsed as one JSON value under the limits above; ``line`` is the JSON line, or None for a
    whole document (then errors carry the line the parser reports)."""
    _check_depth(text, path, line)
    huge: list[bool] = []

    def parse_int(literal: str) -> int | _HugeInt:
        value = _parse_int(literal)
        if isinstance(value, _HugeInt):
            huge.append(True)
        return value

    try:
        value = json.loads(text, parse_int=parse_int, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        where = line if line is not None else exc.lineno
        raise InputError(path, where, "json", f"malformed JSON: {exc.msg} (column {exc.colno})") from None
    except _RepeatedKey as exc:
        raise InputError(path, line, str(exc.key), "key repeated in one JSON object") from None
    if huge:
        field_name, found = _find_huge(value)
        raise InputError(path, line, field_name,
                         f"integer with {found.digits} digits; at most {MAX_INT_DIGITS} allowed")
    return value


def read_json_lines(source: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON-lines file."""
    path, out = str(source), []
    for line, raw in enumerate(read_text(source, "source").split("\n"), start=1):
        if not raw.strip():
            continue
        record = parse_json(raw, path, line)
        if not isinstance(record, dict):
            raise InputError(path, line, "json", f"expected a JSON object, got {type(record).__name__}")
        out.append((line, record))
    return out


def read_json_document(source: Path) -> object:
    """A whole JSON file (COCO captions and instances) as one value."""
    return parse_json(read_text(source, "source"), str(source), None)
