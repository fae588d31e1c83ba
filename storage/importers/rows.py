"""What every importer produces: the parsed rows of a source and the report of an import.

Importers parse a source into ``SourceRow``s (DESIGN §2) without touching the workspace; the rows are
then checked (``images.verify_images``) and written (``commit.commit``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from storage.errors import InputError
from storage.features import FeatureSetInfo


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
