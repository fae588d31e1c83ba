"""Model versions on a real SQLite file: numbering, parents, the latest version's features."""
from __future__ import annotations

from sqlalchemy import select

from storage.model_versions import (ModelVersionInfo, add_model_version, latest_model_version, latest_version_number,
                                    model_version_id)
from storage.models import ModelVersion

FEATURES = {"image": "precomputed:8x4:2024-01-01T00:00:00", "text": "tfidf:8x16:2024-01-01T00:00:01"}


def test_an_empty_workspace_has_no_model(make_workspace):
    store = make_workspace()
    with store.db.read() as s:
        assert (latest_model_version(s), latest_version_number(s), model_version_id(s, 1)) == (None, None, None)


def test_versions_count_up_and_a_warm_start_names_its_parent(make_workspace, tmp_path):
    store = make_workspace()
    metrics = {"validation": {"avg": 0.5}}
    with store.db.write() as s:
        first = add_model_version(s, path=tmp_path / "m1.pt", parent_version=None, labelled_count=4, metrics=metrics,
                                  config={"train": {"epochs": 3}, "features": FEATURES})
    with store.db.read() as s:
        assert latest_model_version(s) == ModelVersionInfo(1, str(tmp_path / "m1.pt"), 4, metrics, FEATURES)
    with store.db.write() as s:
        second = add_model_version(s, path="m2.pt", parent_version=first, labelled_count=6, metrics={}, config={})
        third = add_model_version(s, path="m3.pt", parent_version=None, labelled_count=7, metrics={}, config={})
    with store.db.read() as s:
        rows = {row.version: row for row in s.scalars(select(ModelVersion))}
        assert (first, second, third) == (1, 2, 3) and latest_version_number(s) == 3
        assert latest_model_version(s) == ModelVersionInfo(3, "m3.pt", 7, {}, {})
        assert model_version_id(s, 1) == rows[1].id == rows[2].parent_id
        assert rows[1].parent_id is None and rows[3].parent_id is None
