"""Feature matrices of a workspace: ``features/<encoder>-<modality>.npy`` (float32, memory-mapped) with
``<encoder>-<modality>.ids.npy`` (int64 pair ids of the rows), registered in the ``FeatureSet`` table."""
from __future__ import annotations

import os
import struct
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import InputError, NotFoundError
from storage.models import FeatureSet, utcnow

PRECOMPUTED = "precomputed"  # the encoder name of feature sets imported with the data


@dataclass(frozen=True)
class FeatureSetInfo:
    """A registered feature matrix: ``path`` (.npy) and its ``.ids.npy`` of pair ids, ``rows`` x ``dim``."""

    modality: str
    encoder: str
    path: str
    ids_path: str
    dim: int
    rows: int


def load_arrays(source: Path) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` (no pickles; stored members memory-mapped, ``npz_arrays``) or ``.mat`` file
    by name; ``InputError`` (field ``source``) when it is not a regular file, not of that format, corrupt
    (a CRC-32 that does not match included), or declares arrays too large to allocate."""
    path, suffix = str(source), source.suffix.lower()
    if suffix not in (".npz", ".mat"):
        raise InputError(path, None, "format", f"unknown features extension {suffix!r}; use .npz or .mat")
    if not source.is_file():
        raise InputError(path, None, "source", "no such file" if not source.exists() else "not a regular file")
    from scipy.io.matlab import MatReadError

    try:
        if suffix == ".npz":
            return npz_arrays(source, verify=True)
        from scipy.io import loadmat

        return {k: v for k, v in loadmat(source).items() if not k.startswith("__")}
    except MemoryError:
        raise InputError(path, None, "source", "declares an array too large to load") from None
    except (OSError, ValueError, EOFError, KeyError, NotImplementedError, zipfile.BadZipFile, zlib.error,
            MatReadError) as exc:
        raise InputError(path, None, "source", f"cannot read {suffix} file ({exc.__class__.__name__}: "
                                               f"{str(exc)[:200]})") from None


def npz_arrays(source: Path, *, verify: bool = False) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` by name, each stored (``np.savez``) member memory-mapped read-only, so
    nothing is read until it is used; compressed (``np.savez_compressed``), empty or version-3 members are
    read into memory, and object arrays refused (``ValueError``) as ``np.load(allow_pickle=False)`` does.
    verify: check each mapped member's CRC-32 as ``np.load`` does while reading (one pass over the file in
    ``CRC_CHUNK_BYTES`` reads); ``zipfile.BadZipFile`` when one differs.

    A stored member is a ``.npy`` file at a fixed offset of the zip: after its local header (APPNOTE 4.3.7),
    the ``.npy`` header, then the raw array.
    """
    out: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(source) as archive, open(source, "rb") as fh:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            mapped = _stored_member(source, fh, info) if info.compress_type == zipfile.ZIP_STORED else None
            if mapped is not None and verify:
                _check_crc(fh, info)
            if mapped is None:
                with archive.open(info) as member:
                    mapped = np.lib.format.read_array(member, allow_pickle=False)
            out[name] = mapped
    return out


def _stored_member(source: Path, fh, info: zipfile.ZipInfo) -> np.ndarray | None:
    """The stored ``.npy`` member ``info`` memory-mapped, or None when it cannot be (empty, version 3)."""
    start = _member_start(fh, info)
    fh.seek(start)
    version = np.lib.format.read_magic(fh)
    if version not in ((1, 0), (2, 0)):
        return None
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(fh)
    if dtype.hasobject:
        raise ValueError(f"{info.filename}: object arrays cannot be loaded without pickles")
    offset = fh.tell()
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if size == 0:
        return None
    if offset - start + size != info.file_size:
        raise zipfile.BadZipFile(f"{info.filename}: {info.file_size} bytes stored, the header declares "
                                 f"{offset - start + size}")
    return np.memmap(source, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


CRC_CHUNK_BYTES = 16 * 2**20
VALIDATE_ROWS = 65_536  # rows per finiteness check in ``feature_matrix``


def _member_start(fh, info: zipfile.ZipInfo) -> int:
    """Where member ``info``'s data begins: after its local header (30 bytes, the name, the extra field)."""
    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"no local header for {info.filename}")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_length + extra_length


def _check_crc(fh, info: zipfile.ZipInfo) -> None:
    """The stored member's bytes against the CRC-32 in the zip's directory."""
    fh.seek(_member_start(fh, info))
    crc, left = 0, info.file_size
    while left:
        block = fh.read(min(left, CRC_CHUNK_BYTES))
        if not block:
            raise zipfile.BadZipFile(f"{info.filename}: truncated")
        crc, left = zlib.crc32(block, crc), left - len(block)
    if crc != info.CRC:
        raise zipfile.BadZipFile(f"Bad CRC-32 for file {info.filename!r}")


def feature_matrix(value: object, path: str, field_name: str) -> np.ndarray:
    """The features validator: ``value`` as an (N, D) float32 matrix, D >= 1, every value finite.

    Refuses with ``InputError`` naming the file, the array and the row (``image[3]``): arrays that are
    not 2-d or not of integers or reals (booleans, complex numbers, strings, cells), NaN, infinities,
    and values that overflow float32 (|x| > 3.4e38). A float32 matrix is returned as is (a memory-map
    stays one); other types are converted in memory.
    """
    raw = np.asarray(value)
    if raw.ndim != 2 or raw.dtype.kind not in "fiu" or raw.shape[1] == 0:
        raise InputError(path, None, field_name, f"expected a 2-d matrix of numbers, got shape {raw.shape} {raw.dtype}")
    if raw.dtype == np.float32:
        matrix = raw  # not copied: a memory-mapped source stays on disk
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            matrix = raw.astype(np.float32)
    for start in range(0, len(matrix), VALIDATE_ROWS):  # (rows, D) bools at a time, not (N, D)
        finite = np.isfinite(matrix[start:start + VALIDATE_ROWS])
        if finite.all():
            continue
        at = int(np.flatnonzero(~finite.all(axis=1))[0])
        row, column = start + at, int(np.flatnonzero(~finite[at])[0])
        found = raw[row, column]
        what = "NaN" if np.isnan(found) else "an infinite value" if np.isinf(found) else f"{found!r} (overflows float32)"
        raise InputError(path, None, f"{field_name}[{row}]", f"{what} at column {column}; features must be finite")
    return matrix


def feature_paths(features_dir: Path, modality: str, encoder: str) -> tuple[Path, Path]:
    """``<encoder>-<modality>.npy`` and ``<encoder>-<modality>.ids.npy`` in the workspace's features folder."""
    stem = f"{encoder.replace('/', '_').replace(':', '_')}-{modality}"
    return features_dir / f"{stem}.npy", features_dir / f"{stem}.ids.npy"


def temporary_name(final: Path) -> Path:
    """A hidden name beside ``final`` for write-then-rename."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")


def unique_feature_path(features_dir: Path, modality: str, encoder: str) -> Path:
    """A new ``<encoder>-<modality>-<8 hex>.npy`` in the features folder: a registered row's files never change."""
    stem_path, _ = feature_paths(features_dir, modality, encoder)
    return stem_path.with_name(f"{stem_path.stem}-{uuid.uuid4().hex[:8]}.npy")


def write_feature_files(features_dir: Path, modality: str, encoder: str, matrix: np.ndarray,
                        pair_ids: np.ndarray) -> tuple[Path, Path]:
    """Write ``matrix`` (N, D) and ``pair_ids`` (N,) under new, unique names (temp file, then rename).

    Call before the transaction that registers them (``register_features``), so the database write
    lock is never held while large files are written, and the files a registered row names never change.
    """
    if matrix.ndim != 2 or len(matrix) != len(pair_ids):
        raise ValueError(f"matrix {matrix.shape} and pair_ids {pair_ids.shape} do not match")
    final = unique_feature_path(features_dir, modality, encoder)
    for data, target in ((np.ascontiguousarray(matrix, dtype=np.float32), final),
                         (np.asarray(pair_ids, dtype=np.int64), Path(ids_path(str(final))))):
        tmp = temporary_name(target)
        with open(tmp, "wb") as fh:
            np.save(fh, data)
        os.replace(tmp, target)
    return final, Path(ids_path(str(final)))


def register_features(session: Session, modality: str, encoder: str, path: Path, dim: int,
                      rows: int) -> tuple[FeatureSetInfo, str | None]:
    """Point the ``encoder``/``modality`` feature set at ``path``; returns it and the path it replaced
    (delete that file once the transaction has committed)."""
    row = session.scalar(select(FeatureSet).where(FeatureSet.modality == modality, FeatureSet.encoder == encoder))
    old = None
    if row is None:
        row = FeatureSet(modality=modality, encoder=encoder, path=str(path), dim=dim, rows=0)
        session.add(row)
    elif row.path != str(path):
        old = row.path
    row.path, row.dim, row.rows, row.created_at = str(path), int(dim), int(rows), utcnow()
    session.flush()
    return FeatureSetInfo(modality, encoder, str(path), ids_path(str(path)), row.dim, row.rows), old


def feature_signature(session: Session, modality: str, encoder: str) -> str:
    """Identifies one write of a feature set: a model trained on it is stale once this changes."""
    row = session.scalar(select(FeatureSet).where(FeatureSet.modality == modality, FeatureSet.encoder == encoder))
    if row is None:
        raise NotFoundError(f"no {modality} features from encoder {encoder!r}; run 'pairlab encode' first")
    return f"{encoder}:{row.rows}x{row.dim}:{row.created_at.isoformat()}"


def list_features(session: Session) -> list[FeatureSetInfo]:
    rows = session.scalars(select(FeatureSet).order_by(FeatureSet.modality, FeatureSet.encoder))
    return [FeatureSetInfo(r.modality, r.encoder, r.path, ids_path(r.path), r.dim, r.rows) for r in rows]


def load_features(session: Session, modality: str, encoder: str) -> tuple[np.ndarray, np.ndarray]:
    """The memory-mapped matrix (N, D) and its pair ids (N,) of one registered feature set."""
    row = session.scalar(select(FeatureSet).where(FeatureSet.modality == modality, FeatureSet.encoder == encoder))
    if row is None:
        raise NotFoundError(f"no {modality} features from encoder {encoder!r}; run 'pairlab encode' first")
    return np.load(row.path, mmap_mode="r"), np.load(ids_path(row.path))


def ids_path(path: str) -> str:
    """The pair ids of a feature matrix ``X.npy`` live in ``X.ids.npy``."""
    return str(Path(path).with_suffix(".ids.npy"))
