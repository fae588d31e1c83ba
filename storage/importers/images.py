"""Image verification: every image of a source is fully decoded (size-capped) before anything is written."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from storage.importers.fields import reference_sha256
from storage.importers.rows import SourceRow
from storage.progress import CountProgress


class _ImageProblem(Exception):
    pass


_HASH_CHUNK = 1 << 20  # bytes read at a time while hashing


def _sha256(path: Path) -> str:
    """sha256 of a file, read in chunks: memory stays bounded whatever the file's size."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_image(path: Path, max_pixels: int) -> str:
    """sha256 of the file after a full decode; raise ``_ImageProblem`` with a readable reason.

    Memory is bounded by the pixel cap, not by the file: the header's size is checked before any
    pixel is decoded, the decoder reads from the file, and the hash is streamed. Whatever the
    decoder raises on hostile bytes becomes "cannot decode image"; only a regular file is read (a
    FIFO would block, a device never end).
    """
    try:
        if not path.exists():
            raise _ImageProblem(f"file not found: {path}")
        if not path.is_file():
            raise _ImageProblem(f"not a regular file: {path}")
        sha = _sha256(path)
    except OSError as exc:
        raise _ImageProblem(f"cannot read ({exc.strerror or exc}): {path}") from None
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise _ImageProblem(f"{width}x{height} pixels exceeds imports.max_image_pixels={max_pixels} "
                                    f"(decompression bomb guard): {path}")
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _ImageProblem(f"decompression bomb refused ({exc}): {path}") from None
    except UnidentifiedImageError:
        raise _ImageProblem(f"not an image PIL can read: {path}") from None
    except _ImageProblem:
        raise
    except Exception as exc:  # noqa: BLE001 - a decoder fed hostile bytes may raise anything
        raise _ImageProblem(f"cannot decode image ({exc.__class__.__name__}: {str(exc)[:200]}): {path}") from None
    return sha


def verify_images(rows: Sequence[SourceRow], max_pixels: int, progress: CountProgress | None) -> list[str]:
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
