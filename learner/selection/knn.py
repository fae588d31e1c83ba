"""Nearest-neighbour searches of the selection code, through faiss on large inputs and scikit-learn below.

faiss (Johnson et al., *Billion-scale similarity search with GPUs*, IEEE TBD 2019; the optional
``scale`` extra, ``pip install 'pairlab[scale]'``) runs the exact flat indexes here (``IndexFlatIP``,
``IndexFlatL2``: blocked BLAS plus a k-heap), so both back ends return the same neighbours up to
float32 rounding; faiss is used when the query side has at least ``FAISS_MIN_ROWS`` rows and the
package is installed (``pass_rows``: the rows of the whole pass when a pool is searched cluster by
cluster, so one pass uses one back end). faiss searches on one OpenMP thread: most calls are the small
per-cluster searches of ascmr, which its two OpenMP threads made 4x slower than one on the loaded 2-core
machine (16 vs 64 ms for 3,900 queries over 256 references, docs/benchmarks.md). The searches stay exact
because ascmr already restricts them to clusters on large pools (``learner.selection.density``), which
bounds their cost by O(n R d), not O(n^2 d).
"""
from __future__ import annotations

import importlib.util

import numpy as np
from sklearn import config_context
from sklearn.metrics import pairwise_distances_argmin, pairwise_distances_argmin_min
from sklearn.neighbors import NearestNeighbors

FAISS_MIN_ROWS = 50_000  # below this scikit-learn is as fast and needs no extra package
HAVE_FAISS = importlib.util.find_spec("faiss") is not None
_QUERY_CHUNK = 65_536  # query rows per faiss search call: bounds the (chunk, k) results and the normalised copy
_SKLEARN_MIB = 128  # scikit-learn's chunked distance blocks (its default of 1024 MiB doubled select's peak RSS)


def use_faiss(n_rows: int) -> bool:
    """Whether searches over ``n_rows`` query rows in all (one call, or the calls of one pass over a pool
    split into clusters) go through faiss."""
    return HAVE_FAISS and n_rows >= FAISS_MIN_ROWS


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.finfo(np.float32).tiny)


def _flat_search(index_class: str, ref: np.ndarray, queries: np.ndarray, k: int, *,
                 unit: bool) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    prepare = _unit if unit else (lambda a: np.ascontiguousarray(a, dtype=np.float32))
    index = getattr(faiss, index_class)(ref.shape[1])
    index.add(prepare(ref))
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)   # this thread's OpenMP setting (threadpoolctl rescans the libraries per call)
    try:
        for start in range(0, len(queries), _QUERY_CHUNK):
            chunk = slice(start, start + _QUERY_CHUNK)
            scores[chunk], ids[chunk] = index.search(prepare(queries[chunk]), k)
    finally:
        faiss.omp_set_num_threads(threads)
    return scores, ids


def cosine_neighbours(ref: np.ndarray, queries: np.ndarray, k: int, *,
                      pass_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k most cosine-similar rows of ``ref`` (m, d) for each of ``queries`` (n, d), most similar first:
    (cosine distances 1 - cos (n, k) float64, indices into ref (n, k) int64); needs k <= m."""
    if use_faiss(len(queries) if pass_rows is None else pass_rows):
        sims, ids = _flat_search("IndexFlatIP", ref, queries, k, unit=True)
        return 1.0 - sims.astype(np.float64), ids
    with config_context(working_memory=_SKLEARN_MIB):
        nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine").fit(ref)
        dist, ids = nn.kneighbors(queries)
    return dist, ids.astype(np.int64)


def nearest_cosine(queries: np.ndarray, ref: np.ndarray, *, pass_rows: int | None = None) -> np.ndarray:
    """Cosine distance (n,) float64 of each query row to its nearest row of ``ref`` (m >= 1, d)."""
    if use_faiss(len(queries) if pass_rows is None else pass_rows):
        sims, _ = _flat_search("IndexFlatIP", ref, queries, 1, unit=True)
        return 1.0 - sims[:, 0].astype(np.float64)
    with config_context(working_memory=_SKLEARN_MIB):
        _, dist = pairwise_distances_argmin_min(queries, ref, metric="cosine")
    return dist


def nearest_centre(x: np.ndarray, centres: np.ndarray, *, pass_rows: int | None = None) -> np.ndarray:
    """Index (n,) int64 of the Euclidean-nearest centre (K, d) of each row of x (n, d)."""
    if use_faiss(len(x) if pass_rows is None else pass_rows):
        return _flat_search("IndexFlatL2", centres, x, 1, unit=False)[1][:, 0]
    with config_context(working_memory=_SKLEARN_MIB):
        return pairwise_distances_argmin(x, centres).astype(np.int64)
