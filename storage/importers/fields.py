"""Per-field checks shared by every import format: one guard per concern, raising ``InputError``
that names the file, line and field.

Conventions:
- text is stripped and must be valid UTF-8 and non-empty;
- the default external id is ``sha256(image_sha256 + "\\n" + text)[:16]`` (hex);
- a feature-only pair (no image file, e.g. the Wikipedia benchmark) keeps its image reference as is in
  ``Pair.image_path`` (never an absolute path, unlike real images) and
  ``image_sha256 = sha256(reference encoded as UTF-8)``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from storage.errors import InputError
from storage.models import SPLITS
from storage.vocabulary import clean_label

MAX_ID_LENGTH = 200


def check_text(value: object, path: str, line: int | None, field_name: str) -> str:
    """A non-empty, valid UTF-8 string, stripped."""
    if not isinstance(value, str):
        raise InputError(path, line, field_name, f"expected a string, got {type(value).__name__}")
    check_utf8(value, path, line, field_name)
    text = value.strip()
    if not text:
        raise InputError(path, line, field_name, "empty text")
    return text


def check_utf8(value: str, path: str, line: int | None, field_name: str) -> None:
    """Strings are decoded with ``surrogateescape``: a lone surrogate marks bytes that are not UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(path, line, field_name, "not valid UTF-8") from None


def check_id(value: object, path: str, line: int | None, field_name: str = "id") -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(path, line, field_name, f"expected a string, got {type(value).__name__}")
    text = str(value).strip()
    check_utf8(text, path, line, field_name)
    if not text:
        return None
    if len(text) > MAX_ID_LENGTH:
        raise InputError(path, line, field_name, f"longer than {MAX_ID_LENGTH} characters")
    return text


def check_labels(values: object, path: str, line: int | None, field_name: str = "labels") -> tuple[str, ...]:
    """A list of label names, cleaned, duplicates dropped (first-seen order kept)."""
    if not isinstance(values, (list, tuple)):
        raise InputError(path, line, field_name, f"expected a list of label names, got {type(values).__name__}")
    out: dict[str, None] = {}
    for raw in values:
        if isinstance(raw, str):
            check_utf8(raw, path, line, field_name)
        try:
            out[clean_label(raw)] = None
        except ValueError as exc:
            raise InputError(path, line, field_name, str(exc)) from None
    return tuple(out)


def check_split(value: object, default: str, path: str, line: int | None, field_name: str = "split") -> str:
    """The row's own split wins; ``default`` (the ``split`` argument, else ``pool``) fills in when absent."""
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value.strip() not in SPLITS:
        raise InputError(path, line, field_name, f"{value!r} is not a split; allowed: {', '.join(SPLITS)}")
    return value.strip()


def resolve_image(base: Path, ref: object, *, allow_absolute: bool, path: str, line: int | None,
                  field_name: str = "image") -> Path:
    """The image file ``ref`` names, relative to ``base``; confined to ``base`` (symlinks resolved)
    unless ``allow_absolute``."""
    if not isinstance(ref, str) or not ref.strip():
        raise InputError(path, line, field_name, "expected a non-empty path")
    check_utf8(ref, path, line, field_name)
    candidate = Path(ref.strip())
    if candidate.is_absolute():
        if not allow_absolute:
            raise InputError(path, line, field_name, f"absolute path {ref!r} not allowed (use allow_absolute)")
        return candidate.resolve()
    full = (base / candidate).resolve()
    if not allow_absolute and not full.is_relative_to(base.resolve()):
        raise InputError(path, line, field_name, f"{ref!r} resolves outside {base.resolve()}")
    return full


def default_id(image_sha256: str, text: str) -> str:
    """The stable default external id: ``sha256(image_sha256 + "\\n" + text)[:16]``."""
    return hashlib.sha256(f"{image_sha256}\n{text}".encode("utf-8")).hexdigest()[:16]


def reference_sha256(reference: str) -> str:
    return hashlib.sha256(reference.encode("utf-8")).hexdigest()
