"""Precomputed features (DESIGN §2, §3 ``precomputed``): a ``.npz`` or ``.mat`` file.

Keys (N rows):
- ``image`` (N, Di) and ``text`` (N, Dt): float features (required);
- ``labels``: (N, C) 0/1 with ``label_names`` (C,), or (N,) label names ('' = unlabelled); optional;
- ``labelled`` (N,) bool: rows with ``labelled = 0`` are unlabelled (default: all rows labelled when
  ``labels`` is given, an all-zero row meaning "no class");
- ``split`` (N,) split names (optional; the ``split`` argument, else ``pool``, fills in);
- ``ids`` (N,) external ids (optional; default ``sha256(image row bytes + text row bytes)[:16]``);
- ``texts`` (N,) texts (optional; default the external id).
Pairs are feature-only: ``Pair.image_path`` is the external id. A ``.mat`` with the Wikipedia
variables (``I_tr``, ``I_te``, ``T_tr``, ``T_te``) and the list files beside it is read as ``wiki``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from storage.errors import InputError
from storage.features import feature_matrix, load_arrays
from storage.importers.fields import check_id, check_labels, check_split, check_text
from storage.importers.rows import ParsedSource, SourceRow
from storage.importers.wiki import parse_wiki
from storage.wiki import LIST_FILES

WIKI_VARIABLES = ("I_tr", "I_te", "T_tr", "T_te")


def parse_features(source: Path, *, split: str) -> ParsedSource:
    arrays = load_arrays(source)
    if source.suffix.lower() == ".mat" and all(k in arrays for k in WIKI_VARIABLES) \
            and all((source.parent / name).is_file() for name in LIST_FILES.values()):
        return parse_wiki(source.parent, allow_absolute=False)
    path = str(source)
    image, text = _matrix(arrays, "image", path), _matrix(arrays, "text", path)
    n = len(image)
    if len(text) != n:
        raise InputError(path, None, "text", f"{len(text)} rows but image has {n}")
    ids = _strings(arrays, "ids", n, path)
    texts = _strings(arrays, "texts", n, path)
    splits = _strings(arrays, "split", n, path)
    labels, label_order = _labels(arrays, n, path)
    rows, first_seen = [], dict.fromkeys(check_labels(label_order, path, None, "label_names"))
    for i in range(n):
        ext = check_id(ids[i], path, None, f"ids[{i}]") if ids is not None else None
        if ext is None:
            ext = hashlib.sha256(image[i].tobytes() + text[i].tobytes()).hexdigest()[:16]
        row_labels = None if labels[i] is None else check_labels(labels[i], path, None, f"labels[{i}]")
        first_seen.update(dict.fromkeys(row_labels or ()))
        rows.append(SourceRow(
            path=path, line=None, external_id=ext, image=None, image_ref=ext,
            text=check_text(texts[i], path, None, f"texts[{i}]") if texts is not None else ext,
            labels=row_labels,
            split=check_split(splits[i] if splits is not None else None, split, path, None, f"split[{i}]"),
            id_field=f"ids[{i}]", image_field=f"image[{i}]", labels_field=f"labels[{i}]"))
    return ParsedSource(rows, list(first_seen), {"image": image, "text": text})


def _matrix(arrays: dict, key: str, path: str) -> np.ndarray:
    if key not in arrays:
        raise InputError(path, None, key, "missing (need image and text feature matrices)")
    return feature_matrix(arrays[key], path, key)


def _strings(arrays: dict, key: str, n: int | None, path: str) -> list[str] | None:
    """A 1-d array of strings (``.mat`` char and cell arrays included), or None when absent."""
    if key not in arrays:
        return None
    value = np.asarray(arrays[key])
    if value.dtype.kind not in "USOiu":
        raise InputError(path, None, key, f"expected strings, got {value.dtype}")
    out = [_scalar_string(v) for v in value.reshape(-1)]
    if n is not None and len(out) != n:
        raise InputError(path, None, key, f"{len(out)} entries but the features have {n} rows")
    return out


def _scalar_string(value) -> str:
    while isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="surrogateescape")
    return str(value).strip()


def _labels(arrays: dict, n: int, path: str) -> tuple[list[list[str] | None], list[str]]:
    """Per-row label names (None = unlabelled) and the ``label_names`` order (the vocabulary to infer)."""
    if "labels" not in arrays:
        return [None] * n, []
    names: list[str] = []
    value = np.asarray(arrays["labels"])
    if value.ndim == 2 and np.issubdtype(value.dtype, np.number):
        if value.shape[0] != n:
            raise InputError(path, None, "labels", f"{value.shape[0]} rows but the features have {n}")
        names = _strings(arrays, "label_names", value.shape[1], path)
        if names is None:
            raise InputError(path, None, "label_names", "missing (needed with an (N, C) label matrix)")
        if not np.isin(value, (0, 1)).all():
            raise InputError(path, None, "labels", "an (N, C) label matrix must hold only 0 and 1")
        rows, columns = np.nonzero(value)                                           # row-major: rows ascending
        bounds, columns = np.searchsorted(rows, np.arange(n + 1)).tolist(), columns.tolist()
        out = [[names[c] for c in columns[bounds[i]:bounds[i + 1]]] for i in range(n)]
    else:
        out = [[name] if name else None for name in _strings(arrays, "labels", n, path)]
    if "labelled" in arrays:
        mask = np.asarray(arrays["labelled"]).reshape(-1)
        if len(mask) != n:
            raise InputError(path, None, "labelled", f"{len(mask)} entries but the features have {n} rows")
        if mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all():
            raise InputError(path, None, "labelled", "must hold only 0 and 1 (or false and true)")
        out = [(labels or []) if flag else None for labels, flag in zip(out, mask.astype(bool))]
    return out, names
