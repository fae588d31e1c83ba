"""What every importer shares: parsed rows, field checks, image verification and the one-transaction commit.

Importers parse a source into ``SourceRow``s (DESIGN §2) without touching the workspace; ``verify_images``
then decodes every image, and ``commit`` writes pairs, import events, new labels and precomputed feature
sets in one ``store.db.write()`` transaction. Feature files are written under temporary names and renamed
only after the transaction commits, so a failed import leaves the workspace as it was.

Conventions shared by the formats:
- text is stripped and must be valid UTF-8 and non-empty;
- the default external id is ``sha256(image_sha256 + "\\n" + text)[:16]`` (hex);
- a feature-only pair (no image file, e.g. the Wikipedia benchmark) keeps its image reference as is in
  ``Pair.image_path`` (never an absolute path, unlike real images) and
  ``image_sha256 = sha256(reference encoded as UTF-8)``.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from sqlalchemy import insert, select

from storage.errors import InputError
from storage.features import FeatureSetInfo, feature_paths, temporary_name
from storage.models import SPLITS, Event, FeatureSet, Pair, User
from storage.store import SYSTEM_USER, Store
from storage.vocabulary import add_labels as add_vocabulary, clean_label, label_names

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
MAX_ID_LENGTH = 200
PRECOMPUTED = "precomputed"
_DB_CHUNK = 500


@dataclass(frozen=True)
class SourceRow:
    """One pair as parsed from a source, before its image is verified.

    image: the image file to verify, or None for a feature-only pair.
    image_ref: what ``Pair.image_path`` stores: the resolved image path, or a feature-only reference.
    labels: label names, None when the row is unlabelled (``()`` = labelled with no class).
    *_field: the field names used in error messages for this row's format.
    """

    path: str
    line: int | None
    external_id: str | None
    image: Path | None
    image_ref: str
    text: str
    labels: tuple[str, ...] | None
    split: str
    id_field: str = "id"
    image_field: str = "image"
    labels_field: str = "labels"

    def error(self, field_name: str, message: str) -> InputError:
        return InputError(self.path, self.line, field_name, message)


@dataclass(frozen=True)
class ParsedSource:
    """rows; vocabulary: label names in the order to infer them; features: modality -> (N, D) aligned with rows."""

    rows: list[SourceRow]
    vocabulary: list[str]
    features: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportReport:
    """added / skipped (already present and identical) pair counts, labels added to the vocabulary,
    labelled: added pairs that carry labels, features: feature sets written or extended."""

    added: int
    skipped: int
    labels_added: list[str]
    labelled: int
    features: list[FeatureSetInfo]


# ---------------------------------------------------------------- field checks


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


# ---------------------------------------------------------------- images


class _ImageProblem(Exception):
    pass


def _check_image(path: Path, max_pixels: int) -> str:
    """sha256 of the file after a full decode; raise ``_ImageProblem`` with a readable reason."""
    if not path.exists():
        raise _ImageProblem(f"file not found: {path}")
    if not path.is_file():
        raise _ImageProblem(f"not a regular file: {path}")
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise _ImageProblem(f"{width}x{height} pixels exceeds imports.max_image_pixels={max_pixels} "
                                    f"(decompression bomb guard): {path}")
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _ImageProblem(f"decompression bomb refused ({exc}): {path}") from None
    except UnidentifiedImageError:
        raise _ImageProblem(f"not an image PIL can read: {path}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _ImageProblem(f"cannot decode image ({exc}): {path}") from None
    return hashlib.sha256(data).hexdigest()


def verify_images(rows: Sequence[SourceRow], max_pixels: int, progress: Progress | None) -> list[str]:
    """The image sha256 of every row, in row order; images are decoded in a thread pool.

    Raises ``InputError`` for the first row (in source order) whose image is missing or undecodable.
    Feature-only rows get ``reference_sha256(image_ref)``.
    """
    total = len(rows)
    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pairlab-import") as pool:
        futures: dict[Path, Future[str]] = {}
        for row in rows:
            if row.image is not None and row.image not in futures:
                futures[row.image] = pool.submit(_check_image, row.image, max_pixels)
        shas = []
        try:
            for done, row in enumerate(rows, start=1):
                if row.image is None:
                    shas.append(reference_sha256(row.image_ref))
                else:
                    try:
                        shas.append(futures[row.image].result())
                    except _ImageProblem as exc:
                        raise row.error(row.image_field, str(exc)) from None
                if progress is not None:
                    progress(done, total)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return shas


# ---------------------------------------------------------------- vocabulary and ids


def labels_to_add(rows: Iterable[SourceRow], vocabulary: list[str], known: list[str], *,
                  add_labels: bool) -> list[str]:
    """Labels the import adds: the inferred vocabulary when ``known`` is empty, else the unknown ones
    (only with ``add_labels``; otherwise the first row using one raises ``InputError``)."""
    if not known:
        used = dict.fromkeys(vocabulary)
        for row in rows:
            used.update(dict.fromkeys(row.labels or ()))
        return list(used)
    known_set = set(known)
    unknown: dict[str, None] = {}
    for row in rows:
        for name in row.labels or ():
            if name not in known_set and name not in unknown:
                if not add_labels:
                    raise row.error(row.labels_field, f"unknown label {name!r}: not in the workspace vocabulary "
                                                      "(use add_labels to add it)")
                unknown[name] = None
    order = {name: i for i, name in enumerate(vocabulary)}
    return sorted(unknown, key=lambda n: order.get(n, len(order)))


def _content(row: SourceRow, sha: str) -> tuple:
    return sha, row.text, row.split, None if row.labels is None else tuple(sorted(row.labels))


def assign_ids(rows: Sequence[SourceRow], shas: Sequence[str]) -> tuple[list[str], list[bool]]:
    """External ids (explicit or default) and a keep-mask that drops identical repeats within the source.

    A repeated id with different content raises ``InputError`` at the later row.
    """
    ids, keep = [], []
    seen: dict[str, tuple[int, tuple]] = {}
    for i, (row, sha) in enumerate(zip(rows, shas)):
        ext = row.external_id or default_id(sha, row.text)
        content = _content(row, sha)
        first = seen.get(ext)
        if first is None:
            seen[ext] = (i, content)
            keep.append(True)
        elif first[1] == content:
            keep.append(False)
        else:
            other = rows[first[0]]
            where = f"line {other.line}" if other.line is not None else f"{other.id_field}"
            raise row.error(row.id_field, f"duplicate id {ext!r} with different content than {where}")
        ids.append(ext)
    return ids, keep


# ---------------------------------------------------------------- commit


def commit(store: Store, parsed: ParsedSource, shas: list[str], ids: list[str], keep: list[bool], *,
           add_labels: bool) -> ImportReport:
    """Write everything in one transaction; rename feature files only after it commits."""
    rows = parsed.rows
    renames: list[tuple[Path, Path]] = []
    try:
        with store.db.write() as session:
            added_labels = add_vocabulary(session, labels_to_add(
                rows, parsed.vocabulary, label_names(session), add_labels=add_labels))
            new_index, skipped = _split_existing(session, rows, shas, ids, keep)
            system_id = session.scalar(select(User.id).where(User.name == SYSTEM_USER))
            pair_ids = _insert_pairs(session, rows, shas, ids, new_index)
            labelled = [(pid, rows[i].labels) for pid, i in zip(pair_ids, new_index) if rows[i].labels is not None]
            if labelled:
                session.execute(insert(Event), [
                    {"pair_id": pid, "user_id": system_id, "kind": "import", "labels": sorted(labels)}
                    for pid, labels in labelled])
            infos = []
            if pair_ids and parsed.features:
                features_dir = store.workspace.subdir("features")
                for modality, matrix in parsed.features.items():
                    info = _write_features(session, features_dir, modality, matrix[new_index],
                                           np.asarray(pair_ids, dtype=np.int64), renames, rows[0].path)
                    infos.append(info)
    except BaseException:
        for tmp, _ in renames:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in renames:
        os.replace(tmp, final)
    log.info("imported %d pairs (%d skipped, %d labelled)", len(pair_ids), skipped, len(labelled))
    return ImportReport(added=len(pair_ids), skipped=skipped, labels_added=added_labels, labelled=len(labelled),
                        features=infos)


def _split_existing(session, rows, shas, ids, keep) -> tuple[list[int], int]:
    """Indices of rows to insert, and how many are skipped (in-source repeats and identical earlier imports).

    An id imported earlier with a different image, text, split or imported labels raises ``InputError``.
    """
    candidates = [i for i, k in enumerate(keep) if k]
    existing: dict[str, tuple] = {}
    for start in range(0, len(candidates), _DB_CHUNK):
        chunk = [ids[i] for i in candidates[start:start + _DB_CHUNK]]
        found = session.execute(select(Pair.id, Pair.external_id, Pair.image_sha256, Pair.text, Pair.split)
                                .where(Pair.external_id.in_(chunk))).all()
        if not found:
            continue
        imported: dict[int, tuple | None] = {}
        for pid, labels in session.execute(select(Event.pair_id, Event.labels)
                                           .where(Event.pair_id.in_([f[0] for f in found]), Event.kind == "import")
                                           .order_by(Event.id)):
            imported[pid] = None if labels is None else tuple(sorted(labels))
        for pid, ext, sha, text, split in found:
            existing[ext] = (sha, text, split, imported.get(pid))
    new_index = []
    for i in candidates:
        before = existing.get(ids[i])
        if before is None:
            new_index.append(i)
            continue
        now = _content(rows[i], shas[i])
        if now != before:
            row = rows[i]
            differs = next(name for name, a, b in zip(("image", "text", "split", "labels"), now, before) if a != b)
            raise row.error(row.id_field, f"id {ids[i]!r} was imported before with a different {differs}")
    return new_index, len(rows) - len(new_index)


def _insert_pairs(session, rows, shas, ids, new_index) -> list[int]:
    if not new_index:
        return []
    values = [{"external_id": ids[i], "image_path": rows[i].image_ref,
               "image_sha256": shas[i], "text": rows[i].text, "split": rows[i].split} for i in new_index]
    return list(session.scalars(insert(Pair).returning(Pair.id, sort_by_parameter_order=True), values))


def _write_features(session, features_dir: Path, modality: str, matrix: np.ndarray, pair_ids: np.ndarray,
                    renames: list[tuple[Path, Path]], source: str) -> FeatureSetInfo:
    """Write (or extend) the ``precomputed`` feature set of ``modality`` under temporary names."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)  # (n_new, D)
    final, final_ids = feature_paths(features_dir, modality, PRECOMPUTED)
    row = session.scalar(select(FeatureSet).where(FeatureSet.modality == modality, FeatureSet.encoder == PRECOMPUTED))
    old_rows = 0
    if row is not None:
        if row.dim != matrix.shape[1]:
            raise InputError(source, None, modality, f"has dim {matrix.shape[1]} but the workspace's precomputed "
                                                     f"{modality} features have dim {row.dim}")
        old_rows = row.rows
    tmp, tmp_ids = temporary_name(final), temporary_name(final_ids)
    renames += [(tmp, final), (tmp_ids, final_ids)]
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(old_rows + len(matrix), matrix.shape[1]))
    out_ids = np.lib.format.open_memmap(tmp_ids, mode="w+", dtype=np.int64, shape=(old_rows + len(matrix),))
    if old_rows:
        out[:old_rows] = np.load(row.path, mmap_mode="r")
        out_ids[:old_rows] = np.load(feature_paths(Path(row.path).parent, modality, PRECOMPUTED)[1], mmap_mode="r")
    out[old_rows:] = matrix
    out_ids[old_rows:] = pair_ids
    out.flush()
    out_ids.flush()
    del out, out_ids
    if row is None:
        row = FeatureSet(modality=modality, encoder=PRECOMPUTED, path=str(final), dim=matrix.shape[1], rows=0)
        session.add(row)
    row.path, row.rows = str(final), old_rows + len(matrix)
    session.flush()
    return FeatureSetInfo(modality, PRECOMPUTED, str(final), str(final_ids), row.dim, row.rows)
