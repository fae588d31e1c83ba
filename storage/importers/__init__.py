"""Importers (DESIGN §2, §8 ``pairlab import``): manifest, coco, wiki and features.

``import_source`` is all or nothing: every row is parsed and checked (images fully decoded) before one
write transaction adds pairs, ``import`` events of the ``system`` user, new labels and precomputed
feature sets. Re-importing identical pairs skips them; an id seen before with different content is an
``InputError`` naming file, line and field. Format details live in each module's docstring.

Modules: ``rows`` (what a parser produces), ``fields`` (per-field checks shared by every format, the
path validator ``check_path`` among them), ``jsonrows`` (the JSON reader: depth, huge integers, repeated
keys), ``images`` (image verification), ``commit`` (ids, new labels and the one-transaction write), and
one parser per format (``manifest``, ``coco``, ``wiki``, ``features``). The text rule is
``storage.text``, the features validator ``storage.features.feature_matrix``.
"""
from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from storage.errors import InputError
from storage.features import FeatureSetInfo
from storage.importers.coco import parse_coco
from storage.importers.commit import assign_ids, commit, labels_to_add
from storage.importers.features import parse_features
from storage.importers.fields import check_path
from storage.importers.images import verify_images
from storage.importers.manifest import parse_manifest
from storage.importers.rows import ImportReport, ParsedSource
from storage.importers.wiki import parse_wiki
from storage.models import SPLITS
from storage.progress import CountProgress
from storage.store import Store
from storage.vocabulary import label_names

__all__ = ["FORMATS", "FeatureSetInfo", "ImportReport", "ParsedSource", "check_source", "import_source", "parse_source"]

FORMATS = ("manifest", "coco", "wiki", "features")
log = logging.getLogger(__name__)


def check_source(source: str | Path) -> Path:
    """The source to import, after the path validator (``fields.check_path``); ``InputError`` (field
    ``source``) when the path is unusable or nothing is there."""
    path = Path(check_path(str(source), str(source), None, "source"))
    try:
        found = path.exists()
    except OSError as exc:
        raise InputError(str(source), None, "source", f"cannot read ({exc.strerror or exc})") from None
    if not found:
        raise InputError(str(source), None, "source", "no such file or folder")
    return path


def parse_source(source: Path, fmt: str, *, split: str | None = None, allow_absolute: bool = False) -> ParsedSource:
    """Parse ``source`` without touching a workspace (images are not decoded yet); see ``import_source``."""
    source = check_source(source)
    default_split = split or "pool"
    if default_split not in SPLITS:
        raise InputError(str(source), None, "split", f"{split!r} is not a split; allowed: {', '.join(SPLITS)}")
    if fmt == "manifest":
        return parse_manifest(source, split=default_split, allow_absolute=allow_absolute)
    if fmt == "coco":
        return parse_coco(source, split=default_split, allow_absolute=allow_absolute)
    if fmt == "wiki":
        return parse_wiki(source, allow_absolute=allow_absolute)
    if fmt == "features":
        return parse_features(source, split=default_split)
    raise InputError(str(source), None, "format", f"unknown format {fmt!r}; allowed: {', '.join(FORMATS)}")


def import_source(store: Store, source: Path, fmt: str, *, split: str | None = None, add_labels: bool = False,
                  allow_absolute: bool = False, progress: CountProgress | None = None) -> ImportReport:
    """Import ``source`` in format ``fmt`` into ``store``; the workspace is unchanged on any error.

    split: the default split of rows that name none (``pool`` when None); wiki uses its lists' splits.
    add_labels: accept labels missing from a non-empty vocabulary (an empty vocabulary is always inferred).
    allow_absolute: accept absolute image paths and paths outside the source's folder.
    progress: called as ``progress(done, total)`` per row while images are verified.
    """
    source = Path(source)
    with _cyclic_gc_paused():
        parsed = parse_source(source, fmt, split=split, allow_absolute=allow_absolute)
        if not parsed.rows:
            raise InputError(str(source), None, "rows", "no pairs found")
        with store.db.read() as session:
            labels_to_add(parsed.rows, parsed.vocabulary, label_names(session), add_labels=add_labels)
        log.info("verifying %d rows from %s", len(parsed.rows), source)
        shas = verify_images(parsed.rows, store.workspace.config.imports.max_image_pixels, progress)
        ids, keep = assign_ids(parsed.rows, shas, parsed.features)
        return commit(store, parsed, shas, ids, keep, add_labels=add_labels)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic collector off while an import builds millions of row objects (none in a cycle): its
    full passes re-walked all of them, 5 of 35 s of a 300k-pair import."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
