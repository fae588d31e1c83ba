"""``--engine ray`` (``app.services.ray_engine``): the same features and the same selection as this process,
on one real local Ray with 2 workers shared by the module; the CLI's one-line errors."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from app.cli.parser import EXIT_USER_ERROR, main
from app.services.encode import encode_workspace
from app.services.ray_engine import RayEngine
from app.services.select import run_selection
from app.services.settings import open_workspace
from app.services.train import train_workspace
from learner.selection.scoring import COMPONENTS
from storage.features import load_features
from storage.importers import import_source
from storage.models import FeatureSet, Pair, Selection
from storage.store import init_workspace
from storage.users import get_user
from tests.integration.workbench_fixtures import FAST_TRAIN, LABELS, SAMPLE_IMAGES, set_table
from tests.support.workspace import copy_workspace

WORKERS = 2


def _require_ray() -> None:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("ray is not installed; CI installs it with the test extra (pairlab[ray])")
        pytest.skip("ray is not installed (pip install 'pairlab[ray]')")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray with 2 CPUs for the module (start-up takes ~10 s); the engine reuses it."""
    _require_ray()
    import ray

    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}})
    yield RayEngine(workers=WORKERS)
    ray.shutdown()


def _features(store, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """The registered features of ``modality`` as (pair external ids (N,), rows (N, D)) in id order."""
    with store.db.read() as s:
        encoder = s.scalar(select(FeatureSet.encoder).where(FeatureSet.modality == modality))
        matrix, ids = load_features(s, modality, encoder)
        names = dict(s.execute(select(Pair.id, Pair.external_id)).all())
    order = np.argsort(ids)
    return np.array([names[int(i)] for i in ids[order]]), np.asarray(matrix)[order]


def _coco_workspace(root: Path, images: list[Path]):
    store = init_workspace(root, labels=LABELS)
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"p{i}", "image": str(img), "text": f"a photo, number {i}"}) + "\n"
                                for i, img in enumerate(images)), encoding="utf-8")
    import_source(store, manifest, "manifest", allow_absolute=True)
    return store


def test_ray_encode_gives_the_features_of_local_encode_on_the_coco_sample(ray_cluster, tmp_path):
    images = sorted(SAMPLE_IMAGES.glob("*.jpg"))[:16]
    local, on_ray = _coco_workspace(tmp_path / "local", images), _coco_workspace(tmp_path / "ray", images)
    try:
        encode_workspace(local)
        result = encode_workspace(on_ray, engine=ray_cluster)
        assert result["pairs"] == len(images)
        for modality in ("image", "text"):
            ids_local, rows_local = _features(local, modality)
            ids_ray, rows_ray = _features(on_ray, modality)
            assert list(ids_ray) == list(ids_local)
            assert rows_ray.shape == rows_local.shape and rows_ray.shape[0] == len(images)
            np.testing.assert_allclose(rows_ray, rows_local, rtol=1e-4, atol=1e-5)
        assert len(set(map(bytes, _features(on_ray, "image")[1]))) == len(images)  # distinct images, distinct rows
    finally:
        local.close()
        on_ray.close()


@pytest.fixture(scope="module")
def trained_features(tmp_path_factory) -> Path:
    """A workspace of 300 clustered feature-only pairs (40 labelled), model v1 trained, inference in
    batches of 64 (so the pool spans several Ray work items); built once, copied per use."""
    root = tmp_path_factory.mktemp("ray-select") / "ws"
    rng = np.random.default_rng(0)
    n, groups = 300, 6
    group = rng.integers(0, groups, n)
    centres = rng.normal(size=(groups, 24))
    image = (centres[group] + 0.3 * rng.normal(size=(n, 24))).astype(np.float32)
    text = (centres[group][:, :16] + 0.3 * rng.normal(size=(n, 16))).astype(np.float32)
    labels = np.where(np.arange(n) < 40, np.array(LABELS)[group % len(LABELS)], "")
    source = root.parent / "pool.npz"
    np.savez(source, image=image, text=text, labels=labels, ids=np.array([f"f{i}" for i in range(n)]))
    store = init_workspace(root, labels=LABELS)
    try:
        import_source(store, source, "features")
    finally:
        store.close()
    set_table(root, "train", FAST_TRAIN)
    set_table(root, "inference", {"batch_size": 64, "mc_samples": 4})
    store = open_workspace(root)
    try:
        train_workspace(store)
    finally:
        store.close()
    return root


def _round(store, engine) -> list[tuple[str, dict]]:
    """The pairs an ``ascmr`` round chose, in order, with each one's recorded explanation."""
    with store.db.read() as s:
        system = get_user(s, "system")
    run_selection(store, strategy="ascmr", budget=12, actor=system, seed=3, engine=engine)
    with store.db.read() as s:
        return [tuple(row) for row in s.execute(select(Pair.external_id, Selection.explanation)
                                                .join(Selection, Selection.pair_id == Pair.id).order_by(Selection.id))]


def test_ray_select_chooses_the_pairs_of_local_select(ray_cluster, trained_features, tmp_path):
    local, on_ray = copy_workspace(trained_features, tmp_path / "local"), copy_workspace(trained_features, tmp_path / "ray")
    try:
        expected = _round(local, None)
        chosen = _round(on_ray, ray_cluster)
    finally:
        local.close()
        on_ray.close()
    assert len(expected) == 12
    assert [pair for pair, _ in chosen] == [pair for pair, _ in expected]   # the same pairs in the same order
    # ... for the same reasons: every informativeness component (the Monte-Carlo ones included), the density
    # and the final score of each pick
    for name in (*COMPONENTS, "density", "informativeness", "score"):
        np.testing.assert_allclose([e[name] for _, e in chosen], [e[name] for _, e in expected],
                                   rtol=1e-4, atol=1e-6, err_msg=name)


def _last_error_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_an_unreachable_ray_address_is_one_line_and_writes_nothing(tmp_path, capsys):
    _require_ray()
    _coco_workspace(tmp_path / "ws", sorted(SAMPLE_IMAGES.glob("*.jpg"))[:2]).close()
    assert main(["encode", str(tmp_path / "ws"), "--engine", "ray", "--address", "127.0.0.1:9"]) == EXIT_USER_ERROR
    assert _last_error_line(capsys).startswith("pairlab: error: --address 127.0.0.1:9: no Ray cluster reachable")
    assert not list((tmp_path / "ws" / "features").glob("*.npy"))


def test_ray_not_installed_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    _coco_workspace(tmp_path / "ws", sorted(SAMPLE_IMAGES.glob("*.jpg"))[:2]).close()
    monkeypatch.setitem(sys.modules, "ray", None)  # what an interpreter without ray sees: import ray fails
    assert main(["encode", str(tmp_path / "ws"), "--engine", "ray"]) == EXIT_USER_ERROR
    assert _last_error_line(capsys) == "pairlab: error: --engine ray: Ray is not installed; pip install 'pairlab[ray]'"


def test_ray_options_need_engine_ray(tmp_path, capsys):
    assert main(["select", str(tmp_path / "ws"), "--budget", "2", "--workers", "2"]) == EXIT_USER_ERROR
    assert _last_error_line(capsys) == "pairlab: error: --workers: only with --engine ray"
