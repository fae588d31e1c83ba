"""Writing an import: external ids, the labels to add, and the one-transaction commit.

``commit`` writes pairs, ``import`` events of the ``system`` user (and the labelled pairs' materialised
state), new labels and precomputed feature sets in one ``store.db.write()`` transaction. Feature files
are written under temporary names and renamed only after the transaction commits, so a failed import
leaves the workspace as it was.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from sqlalchemy import insert, select

from storage.errors import InputError
from storage.features import PRECOMPUTED, FeatureSetInfo, feature_paths, temporary_name
from storage.importers.fields import default_id
from storage.importers.rows import ImportReport, ParsedSource, SourceRow
from storage.models import Event, FeatureSet, Pair, User, utcnow
from storage.pair_state import refresh_pair_states
from storage.store import SYSTEM_USER, Store
from storage.vocabulary import add_labels as add_vocabulary, label_names

log = logging.getLogger(__name__)

_DB_CHUNK = 500


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
                refresh_pair_states(session, [pid for pid, _ in labelled])
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
    """Insert the new pairs with one executemany and read their ids back by external id, in row order.

    (``INSERT ... RETURNING`` in parameter order ran one statement per row on SQLite: 25 s of a
    100k-pair import.)"""
    if not new_index:
        return []
    now = utcnow()
    session.execute(insert(Pair.__table__), [{"external_id": ids[i], "image_path": rows[i].image_ref, "image_sha256": shas[i],
                                    "text": rows[i].text, "split": rows[i].split, "created_at": now}
                                   for i in new_index])
    by_external: dict[str, int] = {}
    for start in range(0, len(new_index), _DB_CHUNK):
        chunk = [ids[i] for i in new_index[start:start + _DB_CHUNK]]
        by_external.update(session.execute(select(Pair.external_id, Pair.id).where(Pair.external_id.in_(chunk))).all())
    return [by_external[ids[i]] for i in new_index]


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
