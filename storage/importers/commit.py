"""Writing an import: external ids, the labels to add, and the one-transaction commit.

``commit`` writes pairs, ``import`` events of the ``system`` user (and the labelled pairs' materialised
state), new labels and precomputed feature sets in one ``store.db.write()`` transaction. A feature set's
new rows go, with its old ones, into new files under unique names that the transaction registers; the
files it replaces are deleted only after the commit, and the new ones on any error. So a failed import leaves the workspace as it was, and a
process killed at any point leaves the database naming complete files (at worst an unnamed file is left).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from sqlalchemy import func, insert, select

from storage.errors import InputError
from storage.faults import crash_point
from storage.features import (
    PRECOMPUTED, FeatureSetInfo, ids_path, register_features, temporary_name, unique_feature_path,
)
from storage.importers.fields import default_id
from storage.importers.rows import ImportReport, ParsedSource, SourceRow
from storage.models import Event, FeatureSet, Pair, User, utcnow
from storage.pair_state import refresh_pair_states
from storage.store import SYSTEM_USER, Store
from storage.vocabulary import add_labels as add_vocabulary, label_names

log = logging.getLogger(__name__)

_DB_CHUNK = 500
# SQLite's page cache for the import's transaction: the pairs' indexes of 1M pairs (~130 MiB) stay in it,
# where SQLite's default 2 MiB spilled a page to the WAL on most inserts into the image_sha256 index.
_IMPORT_CACHE_MIB = 256
_WRITE_ROWS = 65_536  # feature rows copied at a time into the new feature files


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


def assign_ids(rows: Sequence[SourceRow], shas: Sequence[str],
               features: Mapping[str, np.ndarray] | None = None) -> tuple[list[str], list[bool]]:
    """External ids (explicit or default) and a keep-mask that drops identical repeats within the source.

    A repeated id with different content raises ``InputError`` at the later row; with ``features``
    (modality -> (N, D), aligned with rows) a repeat must also carry the same feature rows.
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
        elif first[1] == content and all(np.array_equal(m[i], m[first[0]]) for m in (features or {}).values()):
            keep.append(False)
        else:
            other = rows[first[0]]
            where = f"line {other.line}" if other.line is not None else f"{other.id_field}"
            raise row.error(row.id_field, f"duplicate id {ext!r} with different content than {where}")
        ids.append(ext)
    return ids, keep


def commit(store: Store, parsed: ParsedSource, shas: list[str], ids: list[str], keep: list[bool], *,
           add_labels: bool) -> ImportReport:
    """Write everything in one transaction; delete the feature files it replaced only after it commits."""
    rows = parsed.rows
    written: list[Path] = []
    replaced: list[Path] = []
    try:
        with store.db.write(cache_mib=_IMPORT_CACHE_MIB) as session:
            added_labels = add_vocabulary(session, labels_to_add(
                rows, parsed.vocabulary, label_names(session), add_labels=add_labels))
            new_index, skipped, earlier = _split_existing(session, rows, shas, ids, keep)
            if earlier and parsed.features:
                _check_features_unchanged(session, rows, ids, parsed.features, earlier)
            system_id = session.scalar(select(User.id).where(User.name == SYSTEM_USER))
            pair_ids = _insert_pairs(session, rows, shas, ids, new_index)
            labelled = [(pid, rows[i].labels) for pid, i in zip(pair_ids, new_index) if rows[i].labels is not None]
            if labelled:
                session.execute(insert(Event), [
                    {"pair_id": pid, "user_id": system_id, "kind": "import", "labels": sorted(labels)}
                    for pid, labels in labelled])
                refresh_pair_states(session, [pid for pid, _ in labelled])
            infos = []
            if pair_ids and parsed.features:
                features_dir = store.workspace.subdir("features")
                for modality, matrix in parsed.features.items():
                    info = _write_features(session, features_dir, modality, matrix, new_index,
                                           np.asarray(pair_ids, dtype=np.int64), written, replaced, rows[0].path)
                    infos.append(info)
            crash_point("import.before_commit")
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    crash_point("import.after_commit")
    for path in replaced:
        path.unlink(missing_ok=True)
    log.info("imported %d pairs (%d skipped, %d labelled)", len(pair_ids), skipped, len(labelled))
    return ImportReport(added=len(pair_ids), skipped=skipped, labels_added=added_labels, labelled=len(labelled),
                        features=infos)


def _split_existing(session, rows, shas, ids, keep) -> tuple[list[int], int, list[tuple[int, int]]]:
    """Indices of rows to insert, how many are skipped (in-source repeats and identical earlier imports), and
    ``(row index, pair id)`` of the rows identical to an earlier import.

    An id imported earlier with a different image, text, split or imported labels raises ``InputError``.
    """
    candidates = [i for i, k in enumerate(keep) if k]
    existing: dict[str, tuple] = {}
    if session.scalar(select(Pair.id).limit(1)) is None:  # the first import: nothing to look up
        return candidates, len(rows) - len(candidates), []
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
            existing[ext] = (pid, (sha, text, split, imported.get(pid)))
    new_index, earlier = [], []
    for i in candidates:
        pid, before = existing.get(ids[i], (None, None))
        if before is None:
            new_index.append(i)
            continue
        now = _content(rows[i], shas[i])
        if now != before:
            row = rows[i]
            differs = next(name for name, a, b in zip(("image", "text", "split", "labels"), now, before) if a != b)
            raise row.error(row.id_field, f"id {ids[i]!r} was imported before with a different {differs}")
        earlier.append((i, pid))
    return new_index, len(rows) - len(new_index), earlier


def _check_features_unchanged(session, rows, ids, features: Mapping[str, np.ndarray],
                              earlier: list[tuple[int, int]]) -> None:
    """A re-imported pair must bring the feature rows stored for it: features are not changed (or added) by
    re-importing. ``earlier``: (row index, pair id) of the rows identical to an earlier import; compared
    ``_DB_CHUNK`` rows at a time against the memory-mapped feature set."""
    index = np.array([i for i, _ in earlier], dtype=np.int64)
    pair_ids = np.array([pid for _, pid in earlier], dtype=np.int64)
    for modality, matrix in features.items():
        row = session.scalar(select(FeatureSet).where(FeatureSet.modality == modality,
                                                      FeatureSet.encoder == PRECOMPUTED))
        found, positions, stored = np.zeros(len(earlier), dtype=bool), np.zeros(len(earlier), dtype=np.int64), None
        if row is not None and row.rows:
            stored_ids, stored = np.load(ids_path(row.path)), np.load(row.path, mmap_mode="r")
            order = np.argsort(stored_ids, kind="stable")
            positions = order[np.minimum(np.searchsorted(stored_ids, pair_ids, sorter=order), len(order) - 1)]
            found = stored_ids[positions] == pair_ids
        for start in range(0, len(earlier), _DB_CHUNK):
            part = slice(start, start + _DB_CHUNK)
            same = found[part].copy()
            if stored is not None and same.any():
                rows_here = np.flatnonzero(same)
                new = np.asarray(matrix[index[part][rows_here]], dtype=np.float32)
                same[rows_here] = (np.asarray(stored[positions[part][rows_here]], dtype=np.float32) == new).all(axis=1)
            bad = np.flatnonzero(~same)
            if len(bad):
                k = start + int(bad[0])
                i, source_row = int(index[k]), rows[int(index[k])]
                field = f"{modality}[{i}]" if source_row.line is None else f"{modality} features"
                what = "with different" if found[k] else "without precomputed"
                raise source_row.error(field, f"id {ids[i]!r} was imported before {what} {modality} features; "
                                              "features cannot be changed by re-importing (import them under new ids)")


def _insert_pairs(session, rows, shas, ids, new_index) -> list[int]:
    """Insert the new pairs with one executemany and read their ids back, in row order.

    (``INSERT ... RETURNING`` in parameter order ran one statement per row on SQLite: 25 s of a
    100k-pair import.) The ids are read back by one query over the ids above the largest one before
    the insert: the new rows are among them (SQLite's writer is alone; a PostgreSQL sequence only grows),
    and a row another transaction committed meanwhile has an external id that is not ours."""
    if not new_index:
        return []
    now = utcnow()
    before = session.scalar(select(func.coalesce(func.max(Pair.id), 0)))
    session.execute(insert(Pair.__table__), [{"external_id": ids[i], "image_path": rows[i].image_ref, "image_sha256": shas[i],
                                    "text": rows[i].text, "split": rows[i].split, "created_at": now}
                                   for i in new_index])
    by_external = {external: pid for external, pid in session.execute(
        select(Pair.external_id, Pair.id).where(Pair.id > before).execution_options(yield_per=50_000))}
    return [by_external[ids[i]] for i in new_index]


def _write_features(session, features_dir: Path, modality: str, matrix: np.ndarray, new_index: list[int],
                    pair_ids: np.ndarray, written: list[Path], replaced: list[Path], source: str) -> FeatureSetInfo:
    """Write the ``precomputed`` feature set of ``modality``, its old rows and then the new ones (``matrix``
    (N, D) float32, maybe memory-mapped, at the increasing rows ``new_index``), to new files (listed in
    ``written``) and register them; the files they replace are added to ``replaced``."""
    dim = matrix.shape[1]
    row = session.scalar(select(FeatureSet).where(FeatureSet.modality == modality, FeatureSet.encoder == PRECOMPUTED))
    old_rows = 0
    if row is not None:
        if row.dim != dim:
            raise InputError(source, None, modality, f"has dim {dim} but the workspace's precomputed "
                                                     f"{modality} features have dim {row.dim}")
        old_rows = row.rows
    final = unique_feature_path(features_dir, modality, PRECOMPUTED)
    final_ids = Path(ids_path(str(final)))
    n = old_rows + len(new_index)
    every_row = len(new_index) == len(matrix)  # increasing, so 0..N-1
    for target, dtype, shape, old, new, where in (
            (final, np.float32, (n, dim), row and row.path, matrix, None if every_row else np.asarray(new_index)),
            (final_ids, np.int64, (n,), row and ids_path(row.path), pair_ids, None)):
        tmp = temporary_name(target)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            if old_rows:
                out[:old_rows] = np.load(old, mmap_mode="r")
            for start in range(0, n - old_rows, _WRITE_ROWS):  # memory bounded by a block, not by N
                stop = min(start + _WRITE_ROWS, n - old_rows)
                out[old_rows + start:old_rows + stop] = new[start:stop] if where is None else new[where[start:stop]]
            out.flush()
            del out
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(target)
    info, previous = register_features(session, modality, PRECOMPUTED, final, dim, n)
    if previous:
        replaced += [Path(previous), Path(ids_path(previous))]
    return info
