"""Reader for the Wikipedia cross-modal benchmark (Rasiwasia et al., ACM MM 2010).

The folder holds ``trainset_txt_img_cat.list`` and ``testset_txt_img_cat.list`` (tab-separated
``text_id  image_id  category``, categories 1-based), ``categories.list`` and, optionally,
``raw_features.mat`` with ``I_tr, I_te`` (image) and ``T_tr, T_te`` (text) whose rows follow the lists.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.errors import InputError
from storage.features import feature_matrix, load_arrays
from storage.text import check_text_chars, read_text

LIST_FILES = {"train": "trainset_txt_img_cat.list", "test": "testset_txt_img_cat.list"}
_CATEGORY = re.compile("[0-9]{1,9}")


@dataclass(frozen=True)
class WikiRecord:
    text_id: str
    image_id: str
    category: str
    split: str          # "train" or "test"
    line: int           # 1-based line in its list file


@dataclass(frozen=True)
class WikiDataset:
    """records: N rows, train then test; image_features (N, 128) and text_features (N, 10) or None."""

    folder: Path
    categories: list[str]
    records: list[WikiRecord]
    image_features: np.ndarray | None
    text_features: np.ndarray | None

    def label_matrix(self) -> np.ndarray:
        """(N, C) float32 one-hot category matrix."""
        index = {c: i for i, c in enumerate(self.categories)}
        out = np.zeros((len(self.records), len(self.categories)), dtype=np.float32)
        out[np.arange(len(self.records)), [index[r.category] for r in self.records]] = 1.0
        return out

    def split_mask(self, split: str) -> np.ndarray:
        return np.array([r.split == split for r in self.records])


def read_wiki(folder: str | Path) -> WikiDataset:
    """Parse the list files (and ``raw_features.mat`` when present); raise ``InputError`` naming file and line.

    Files are read with ``storage.text.read_text``; every field obeys the one-line text rule, a
    category name appears once, and the features pass ``storage.features.feature_matrix``.
    """
    folder = Path(folder)
    cat_path = folder / "categories.list"
    if not cat_path.is_file():
        raise InputError(str(cat_path), None, "file", "categories.list not found")
    categories: list[str] = []
    for line_no, raw in enumerate(read_text(cat_path).split("\n"), start=1):
        name = raw.strip()
        if not name:
            continue
        check_text_chars(name, str(cat_path), line_no, "category", single_line=True)
        if name in categories:
            raise InputError(str(cat_path), line_no, "category", f"{name!r} is listed twice")
        categories.append(name)
    records: list[WikiRecord] = []
    for split, name in LIST_FILES.items():
        path = folder / name
        if not path.is_file():
            raise InputError(str(path), None, "file", f"{name} not found")
        for line_no, raw in enumerate(read_text(path).split("\n"), start=1):
            if not raw.strip():
                continue
            parts = raw.split("\t")
            if len(parts) != 3:
                raise InputError(str(path), line_no, "row", f"expected 3 tab-separated fields, got {len(parts)}")
            text_id, image_id, cat = (p.strip() for p in parts)
            for field_name, value in (("text_id", text_id), ("image_id", image_id)):
                if not value:
                    raise InputError(str(path), line_no, field_name, "empty")
                check_text_chars(value, str(path), line_no, field_name, single_line=True)
            if not _CATEGORY.fullmatch(cat) or not 1 <= int(cat) <= len(categories):
                raise InputError(str(path), line_no, "category", f"{cat[:20]!r} is not in 1..{len(categories)}")
            records.append(WikiRecord(text_id, image_id, categories[int(cat) - 1], split, line_no))
    image_features = text_features = None
    mat_path = folder / "raw_features.mat"
    if mat_path.is_file():
        mat = load_arrays(mat_path)
        image_features = _stacked(mat, mat_path, ("I_tr", "I_te"), len(records))
        text_features = _stacked(mat, mat_path, ("T_tr", "T_te"), len(records))
    return WikiDataset(folder, categories, records, image_features, text_features)


def _stacked(mat: dict, path: Path, names: tuple[str, str], rows: int) -> np.ndarray:
    """The train and test matrices of one modality, checked and stacked: (rows, D) float32."""
    parts = []
    for name in names:
        if name not in mat:
            raise InputError(str(path), None, name, "variable missing (need I_tr, I_te, T_tr, T_te)")
        parts.append(feature_matrix(mat[name], str(path), name))
    if parts[0].shape[1] != parts[1].shape[1]:
        raise InputError(str(path), None, names[1], f"{parts[1].shape[1]} columns but {names[0]} has {parts[0].shape[1]}")
    stacked = np.vstack(parts)
    if len(stacked) != rows:
        raise InputError(str(path), None, "/".join(names), f"{len(stacked)} rows but the lists have {rows}")
    return stacked
