"""Per-field checks shared by every import format: one guard per concern, raising ``InputError``
that names the file, line and field.

Conventions:
- every string obeys the text rule of ``storage.text`` (valid UTF-8; no C0 control character but tab,
  newline and carriage return, and none at all in ids, labels and paths);
- text is stripped, non-empty and at most ``MAX_TEXT_LENGTH`` characters; ids at most ``MAX_ID_LENGTH``;
- paths pass ``check_path`` (the path validator) before the file system sees them;
- the default external id is ``sha256(image_sha256 + "\\n" + text)[:16]`` (hex);
- a feature-only pair (no image file, e.g. the Wikipedia benchmark) keeps its image reference as is in
  ``Pair.image_path`` (never an absolute path, unlike real images) and
  ``image_sha256 = sha256(reference encoded as UTF-8)``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from storage.errors import InputError
from storage.models import SPLITS
from storage.text import check_text_chars
from storage.vocabulary import clean_label

MAX_ID_LENGTH = 200
MAX_TEXT_LENGTH = 100_000
MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
MAX_NAME_BYTES = 255   # NAME_MAX: one path component


def shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about values of any size."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_text(value: object, path: str, line: int | None, field_name: str) -> str:
    """A string that obeys the text rule, stripped, non-empty and at most ``MAX_TEXT_LENGTH`` characters."""
    if not isinstance(value, str):
        raise InputError(path, line, field_name, f"expected a string, got {type(value).__name__}")
    check_text_chars(value, path, line, field_name)
    text = value.strip()
    if not text:
        raise InputError(path, line, field_name, "empty text")
    if len(text) > MAX_TEXT_LENGTH:
        raise InputError(path, line, field_name, f"{len(text)} characters; at most {MAX_TEXT_LENGTH} allowed")
    return text


def check_id(value: object, path: str, line: int | None, field_name: str = "id", *, prefix: str = "") -> str | None:
    """A string or integer id as a one-line string, ``prefix`` (``coco:``) prepended, of at most
    ``MAX_ID_LENGTH`` characters in all; None when absent or empty."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(path, line, field_name, f"expected a string, got {type(value).__name__}")
    text = str(value).strip()
    check_text_chars(text, path, line, field_name, single_line=True)
    if not text:
        return None
    if len(prefix + text) > MAX_ID_LENGTH:
        raise InputError(path, line, field_name, f"longer than {MAX_ID_LENGTH - len(prefix)} characters")
    return prefix + text


def check_key(value: object, path: str, line: int | None, field_name: str) -> int | str:
    """An id that other records refer to (COCO ``images[].id``, ``image_id``, ``category_id``): an integer
    or a non-empty one-line string, returned as is so references compare by value and type."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and check_id(value, path, line, field_name) is not None:
        return value
    raise InputError(path, line, field_name, f"expected an integer or a non-empty string id, got {shown(value)}")


def check_labels(values: object, path: str, line: int | None, field_name: str = "labels") -> tuple[str, ...]:
    """A list of label names, cleaned (``vocabulary.clean_label``), duplicates dropped (first-seen order kept)."""
    if not isinstance(values, (list, tuple)):
        raise InputError(path, line, field_name, f"expected a list of label names, got {type(values).__name__}")
    out: dict[str, None] = {}
    for raw in values:
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
        raise InputError(path, line, field_name, f"{shown(value)} is not a split; allowed: {', '.join(SPLITS)}")
    return value.strip()


def check_path(ref: object, path: str, line: int | None, field_name: str) -> str:
    """The path validator: a non-empty string that obeys the one-line text rule (so no NUL byte) and the
    OS limits (at most ``MAX_PATH_BYTES`` in all, ``MAX_NAME_BYTES`` per component); returned stripped.

    Run it before a string reaches the file system, which would raise ``ValueError`` or ``OSError``.
    """
    if not isinstance(ref, str):
        raise InputError(path, line, field_name, f"expected a non-empty path, got {type(ref).__name__}")
    value = ref.strip()
    if not value:
        raise InputError(path, line, field_name, "expected a non-empty path")
    check_text_chars(value, path, line, field_name, single_line=True)
    encoded = os.fsencode(value)
    if len(encoded) > MAX_PATH_BYTES:
        raise InputError(path, line, field_name, f"path of {len(encoded)} bytes; at most {MAX_PATH_BYTES} allowed")
    longest = max(len(part) for part in encoded.split(b"/"))
    if longest > MAX_NAME_BYTES:
        raise InputError(path, line, field_name,
                         f"a path component of {longest} bytes; at most {MAX_NAME_BYTES} allowed")
    return value


def resolve_image(base: Path, ref: object, *, allow_absolute: bool, path: str, line: int | None,
                  field_name: str = "image") -> Path:
    """The image file ``ref`` names, relative to ``base``; confined to ``base`` (symlinks resolved)
    unless ``allow_absolute``. ``ref`` passes ``check_path`` first."""
    candidate = Path(check_path(ref, path, line, field_name))
    if candidate.is_absolute() and not allow_absolute:
        raise InputError(path, line, field_name, f"absolute path {shown(ref)} not allowed (use allow_absolute)")
    try:
        full = (base / candidate).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        raise InputError(path, line, field_name, f"cannot resolve {shown(ref)}: {exc}") from None
    if not allow_absolute and not full.is_relative_to(base.resolve()):
        raise InputError(path, line, field_name, f"{shown(ref)} resolves outside {base.resolve()}")
    if len(os.fsencode(full)) > MAX_PATH_BYTES:
        raise InputError(path, line, field_name, f"resolves to a path longer than {MAX_PATH_BYTES} bytes")
    return full


def default_id(image_sha256: str, text: str) -> str:
    """The stable default external id: ``sha256(image_sha256 + "\\n" + text)[:16]``."""
    return hashlib.sha256(f"{image_sha256}\n{text}".encode("utf-8")).hexdigest()[:16]


def reference_sha256(reference: str) -> str:
    return hashlib.sha256(reference.encode("utf-8")).hexdigest()
