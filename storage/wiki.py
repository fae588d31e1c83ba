"""Reader for the Wikipedia cross-modal benchmark (Rasiwasia et al., ACM MM 2010).

The folder holds ``trainset_txt_img_cat.list`` and ``testset_txt_img_cat.list`` (tab-separated
``text_id  image_id  category``, categories 1-based), ``categories.list`` and, optionally,
``raw_features.mat`` with ``I_tr, I_te`` (image) and ``T_tr, T_te`` (text) whose rows follow the lists.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.errors import InputError

LIST_FILES = {"train": "trainset_txt_img_cat.list", "test": "testset_txt_img_cat.list"}


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
    """Parse the list files (and ``raw_features.mat`` when present); raise ``InputError`` naming file and line."""
    folder = Path(folder)
    cat_path = folder / "categories.list"
    if not cat_path.is_file():
        raise InputError(str(cat_path), None, "file", "categories.list not found")
    categories = [c.strip() for c in cat_path.read_text(encoding="utf-8").splitlines() if c.strip()]
    records: list[WikiRecord] = []
    counts = {}
    for split, name in LIST_FILES.items():
        path = folder / name
        if not path.is_file():
            raise InputError(str(path), None, "file", f"{name} not found")
        n = 0
        for line_no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not raw.strip():
                continue
            parts = raw.split("\t")
            if len(parts) != 3:
                raise InputError(str(path), line_no, "row", f"expected 3 tab-separated fields, got {len(parts)}")
            text_id, image_id, cat = (p.strip() for p in parts)
            if not cat.isdigit() or not 1 <= int(cat) <= len(categories):
                raise InputError(str(path), line_no, "category", f"{cat!r} is not in 1..{len(categories)}")
            records.append(WikiRecord(text_id, image_id, categories[int(cat) - 1], split, line_no))
            n += 1
        counts[split] = n
    image_features = text_features = None
    mat_path = folder / "raw_features.mat"
    if mat_path.is_file():
        from scipy.io import loadmat

        mat = loadmat(mat_path)
        try:
            image_features = np.vstack([mat["I_tr"], mat["I_te"]]).astype(np.float32)
            text_features = np.vstack([mat["T_tr"], mat["T_te"]]).astype(np.float32)
        except KeyError as exc:
            raise InputError(str(mat_path), None, str(exc.args[0]), "variable missing (need I_tr, I_te, T_tr, T_te)") from None
        for name, arr in (("I_tr/I_te", image_features), ("T_tr/T_te", text_features)):
            if arr.shape[0] != len(records):
                raise InputError(str(mat_path), None, name, f"{arr.shape[0]} rows but the lists have {len(records)}")
    return WikiDataset(folder, categories, records, image_features, text_features)
