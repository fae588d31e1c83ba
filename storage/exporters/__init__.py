"""Exporters (DESIGN §7 Export, §8 ``pairlab export``): jsonl, csv, coco, label-studio and npz.

Every export is streamed: pairs are read in batches (``yield_per``) with their current labels
(the materialised ``storage.pair_state``) and written as they come, to a temporary file in the target
folder that is ``os.replace``d onto ``out`` only when complete (and removed on any error). ``out`` is
checked first by ``targets.check_export_target``: never a folder, never the workspace's own files.

Modules: ``targets`` (the export-target validator), ``rows`` (reading pairs with their annotation
state), ``manifest`` (jsonl, csv), ``documents`` (coco, label-studio) and ``npz``; each docstring gives
its formats' shapes.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import TextIO
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from storage.errors import InputError
from storage.exporters.documents import image_references, write_coco, write_label_studio
from storage.exporters.manifest import neutralise, write_csv, write_jsonl
from storage.exporters.npz import write_npz
from storage.exporters.rows import RowCounter
from storage.exporters.targets import check_export_target
from storage.faults import crash_point
from storage.features import temporary_name
from storage.progress import CountProgress
from storage.store import Store

__all__ = ["EXPORT_FORMATS", "EXPORT_SUFFIX", "ExportReport", "atomic_text_file", "export_workspace", "neutralise"]

EXPORT_FORMATS = ("jsonl", "csv", "coco", "label-studio", "npz")
# distinct per format, so default file names never collide (coco and label-studio are both JSON)
EXPORT_SUFFIX = {"jsonl": ".jsonl", "csv": ".csv", "coco": ".coco.json", "label-studio": ".label-studio.json",
                 "npz": ".npz"}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    rows: int
    path: Path


def export_workspace(store: Store, fmt: str, out: Path, *, progress: CountProgress | None = None,
                     image_encoder: str | None = None, text_encoder: str | None = None) -> ExportReport:
    """Write the workspace to ``out`` in ``fmt``; ``out`` appears only when complete.

    image_encoder/text_encoder: npz only; the feature sets to export (default ``precomputed``, else the latest).
    """
    if fmt not in EXPORT_FORMATS:
        raise InputError(str(out), None, "format",
                         f"unknown export format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    out = check_export_target(store, out)
    images = image_references(store.workspace.config.export)
    writers = {"jsonl": write_jsonl, "csv": write_csv, "coco": write_coco,
               "label-studio": lambda s, fh, counter: write_label_studio(s, fh, counter, images)}
    with store.db.read() as session, _atomic(out) as tmp:
        if fmt == "npz":
            rows = write_npz(session, tmp, progress, image_encoder, text_encoder)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                rows = writers[fmt](session, fh, RowCounter(session, progress))
    log.info("exported %d rows to %s", rows, out)
    return ExportReport(rows=rows, path=out)


@contextmanager
def atomic_text_file(store: Store, out: Path) -> Iterator[TextIO]:
    """A UTF-8 text file for writing at ``out`` (checked like every export target) that appears only
    when the block completes; on any error nothing is left at ``out``."""
    out = check_export_target(store, out)
    with _atomic(out) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        yield fh


@contextmanager
def _atomic(out: Path) -> Iterator[Path]:
    tmp = temporary_name(out)
    try:
        yield tmp
        crash_point("export.before_rename")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
