"""Wikipedia benchmark and precomputed-features imports (DESIGN §2, §3 ``precomputed``)."""
from __future__ import annotations

import numpy as np
from scipy.io import savemat
from sqlalchemy import func, select

from storage.importers import import_source
from storage.models import FeatureSet, Pair
from storage.vocabulary import label_names
from tests.support.workspace import feature_files


def test_real_wiki_lists_and_features_import_once(wiki_dir, make_workspace, workspace_state):
    store = make_workspace()
    report = import_source(store, wiki_dir, "wiki")
    categories = (wiki_dir / "categories.list").read_text(encoding="utf-8").split()

    assert (report.added, report.labelled, report.labels_added) == (2866, 2866, categories)
    with store.db.read() as s:
        splits = dict(s.execute(select(Pair.split, func.count()).group_by(Pair.split)).all())
        sets = {f.modality: (f.encoder, f.dim, f.rows) for f in s.scalars(select(FeatureSet))}
        pair_ids = list(s.scalars(select(Pair.id).order_by(Pair.id)))
    assert splits == {"train": 2173, "test": 693}
    assert sets == {"image": ("precomputed", 128, 2866), "text": ("precomputed", 10, 2866)}
    ids = np.load(feature_files(store)["image"][1])
    assert ids.dtype == np.int64 and ids.tolist() == pair_ids
    before = workspace_state(store)

    again = import_source(store, wiki_dir / "raw_features.mat", "features")  # the .mat beside the lists

    assert (again.added, again.skipped, again.features) == (0, 2866, [])
    assert workspace_state(store) == before


def test_wiki_folder_with_images_and_texts(tmp_path, make_workspace, make_image):
    folder = tmp_path / "wiki"
    (folder / "texts").mkdir(parents=True)
    (folder / "categories.list").write_text("art\nmusic\n", encoding="utf-8")
    (folder / "trainset_txt_img_cat.list").write_text("t1\timg1\t2\nt2\timg2\t1\n", encoding="utf-8")
    (folder / "testset_txt_img_cat.list").write_text("t3\timg1\t1\n", encoding="utf-8")
    for name in ("img1", "img2"):
        make_image(folder / "images" / f"{name}.jpg")
    for name in ("t1", "t2", "t3"):
        (folder / "texts" / f"{name}.xml").write_text(f"  the text of {name}\n", encoding="utf-8")
    store = make_workspace()

    report = import_source(store, folder, "wiki")

    assert (report.added, report.features) == (3, [])
    with store.db.read() as s:
        rows = s.execute(select(Pair.external_id, Pair.image_path, Pair.text, Pair.split).order_by(Pair.id)).all()
        assert label_names(s) == ["art", "music"]
    assert rows[0] == ("wiki:t1", str((folder / "images" / "img1.jpg").resolve()), "the text of t1", "train")
    assert rows[2][3] == "test"


def test_features_npz_and_mat_with_label_names(tmp_path, make_workspace):
    arrays = {"image": np.eye(3, 4), "text": np.ones((3, 2)), "labels": np.array([[1, 0], [0, 0], [1, 1]]),
              "label_names": np.array(["b", "a"]), "labelled": np.array([1, 1, 0]),
              "split": np.array(["train", "test", ""]), "ids": np.array(["x", "y", "z"]),
              "texts": np.array(["one", "two", "three"])}
    np.savez(tmp_path / "f.npz", **arrays)
    savemat(tmp_path / "f.mat", arrays)

    for suffix in ("npz", "mat"):
        store = make_workspace(suffix)
        report = import_source(store, tmp_path / f"f.{suffix}", "features", split="val")
        assert (report.added, report.labelled, report.labels_added) == (3, 2, ["b", "a"])
        with store.db.read() as s:
            rows = s.execute(select(Pair.external_id, Pair.text, Pair.split).order_by(Pair.id)).all()
        assert rows == [("x", "one", "train"), ("y", "two", "test"), ("z", "three", "val")]
        matrix = np.load(feature_files(store)["image"][0])
        assert np.array_equal(matrix, np.eye(3, 4, dtype=np.float32))
