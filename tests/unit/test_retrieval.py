"""Explore's search on memory-mapped embeddings (``app.services.retrieval``, ``storage.features.npz_arrays``):
the chunked scores and top-k equal one full product over the matrix in memory."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from app.services import retrieval
from storage.features import npz_arrays


@pytest.fixture()
def embeddings(tmp_path):
    """An embeddings file as ``model_embeddings`` writes it, over more than two chunks of rows: (path, arrays)."""
    rng = np.random.default_rng(0)
    n, d = 2 * retrieval.SCORE_CHUNK_ROWS + 37, 8
    arrays = {"pair_ids": np.arange(1, n + 1, dtype=np.int64) * 3,
              "mu_image": rng.standard_normal((n, d), dtype=np.float32),
              "mu_text": rng.standard_normal((n, d), dtype=np.float32)}
    path = tmp_path / "embeddings-v1.npz"
    np.savez(path, **arrays)
    return path, arrays


def test_npz_arrays_maps_stored_members_and_reads_compressed_ones(tmp_path):
    arrays = {"matrix": np.arange(12, dtype=np.float32).reshape(3, 4), "fortran": np.asfortranarray(np.eye(3, 2)),
              "names": np.array(["a", "bb"]), "empty": np.zeros((0, 3)), "flag": np.bool_(True)}
    for save, mapped in ((np.savez, True), (np.savez_compressed, False)):
        path = tmp_path / f"{save.__name__}.npz"
        save(path, **arrays)
        got = npz_arrays(path)
        assert set(got) == set(arrays)
        for name, value in arrays.items():
            assert got[name].dtype == value.dtype and got[name].shape == value.shape
            np.testing.assert_array_equal(got[name], value)
        assert isinstance(got["matrix"], np.memmap) == mapped


def test_npz_arrays_refuses_object_arrays_and_a_member_shorter_than_its_header(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, texts=np.array(["a", None], dtype=object))
    with pytest.raises(ValueError, match="object arrays"):
        npz_arrays(path)
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w") as archive:  # a header declaring 4 float64 values, 2 stored
        header = tmp_path / "x.npy"
        np.save(header, np.zeros(4))
        archive.writestr("x.npy", header.read_bytes()[:-16])
    with pytest.raises(zipfile.BadZipFile, match="header declares"):
        npz_arrays(path)


def test_chunked_similarities_equal_the_full_product(embeddings):
    path, arrays = embeddings
    mapped = npz_arrays(path)["mu_text"]
    vector = arrays["mu_image"][5]
    full = arrays["mu_text"] @ vector  # (N,), in memory
    for chunk in (retrieval.SCORE_CHUNK_ROWS, 1000, 7):
        scores = retrieval.similarities(mapped, vector, chunk=chunk)
        np.testing.assert_allclose(scores, full, rtol=1e-5, atol=1e-5)
        assert retrieval._top(scores, 50).tolist() == retrieval._top(full, 50).tolist()


def test_similarities_over_a_row_slice_of_a_mapping_read_those_rows(embeddings):
    path, arrays = embeddings
    mapped = npz_arrays(path)["mu_text"][100:]          # still an np.memmap, with the whole mapping's offset
    vector = arrays["mu_image"][5]
    np.testing.assert_allclose(retrieval.similarities(mapped, vector, chunk=1000), arrays["mu_text"][100:] @ vector,
                               rtol=1e-5, atol=1e-5)


def test_top_texts_from_the_mapped_file_equal_the_in_memory_ranking(embeddings):
    path, arrays = embeddings
    loaded = retrieval._load_embeddings(str(path), path.stat().st_mtime, 1)
    assert isinstance(loaded.mu_text, np.memmap)
    for row in (0, retrieval.SCORE_CHUNK_ROWS + 3, len(arrays["pair_ids"]) - 1):
        pair_id = int(arrays["pair_ids"][row])
        hits = retrieval._texts_for_image(loaded, pair_id, 10)
        full = arrays["mu_text"] @ arrays["mu_image"][row]
        expected = np.argsort(-full, kind="stable")[:10]
        assert [h.pair_id for h in hits] == arrays["pair_ids"][expected].tolist()
        np.testing.assert_allclose([h.score for h in hits], full[expected], rtol=1e-5)
