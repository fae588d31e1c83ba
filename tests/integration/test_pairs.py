"""Pair columns on a real SQLite file."""
from __future__ import annotations

import numpy as np

from storage.models import Pair
from storage.pairs import all_pairs, image_digests, pair_index


def test_all_pairs_and_the_pair_index_are_columns_in_id_order(make_workspace):
    store = make_workspace()
    with store.db.read() as s:
        empty, empty_index = all_pairs(s), pair_index(s)
    assert empty.ids.dtype == np.int64 and empty.ids.shape == (0,) and empty.texts == empty.image_paths == []
    assert empty_index.ids.dtype == np.int64 and empty_index.ids.shape == empty_index.splits.shape == (0,)
    with store.db.write() as s:
        for pid, split in ((9, "test"), (2, "pool"), (5, "train")):
            s.add(Pair(id=pid, external_id=f"p{pid}", image_path=f"/img/{pid}.jpg", image_sha256="a" * 64,
                       text=f"caption {pid}", split=split))
    with store.db.read() as s:
        pairs, index = all_pairs(s), pair_index(s)
    assert pairs.ids.dtype == np.int64 and pairs.ids.tolist() == [2, 5, 9]
    assert index.ids.dtype == np.int64 and index.ids.tolist() == [2, 5, 9]
    assert index.splits.dtype == object and index.splits.tolist() == ["pool", "train", "test"]
    assert pairs.image_paths == ["/img/2.jpg", "/img/5.jpg", "/img/9.jpg"]
    assert pairs.texts == ["caption 2", "caption 5", "caption 9"]
    assert pairs.splits.dtype == object and pairs.splits.tolist() == ["pool", "train", "test"]


def test_image_digests_map_every_pair_to_its_image_sha256(make_workspace):
    store = make_workspace()
    with store.db.write() as s:
        for i, sha in enumerate(("a" * 64, "b" * 64, "a" * 64)):
            s.add(Pair(id=i + 1, external_id=f"p{i}", image_path="/img/x.jpg", image_sha256=sha, text=f"t{i}"))
    with store.db.read() as s:
        assert image_digests(s) == {1: "a" * 64, 2: "b" * 64, 3: "a" * 64}
