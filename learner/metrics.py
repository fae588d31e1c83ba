"""Cross-modal retrieval metrics (DESIGN §4): mAP@all, mAP@k and precision@k, in NumPy.

Similarity is cosine; a gallery item is relevant to a query when they share at least one label.
Queries are processed in chunks of ``chunk`` rows, so memory is O(chunk * G) and a 20k x 20k
evaluation fits easily.

Average precision of one query over its ranked gallery (Manning et al., *Introduction to
Information Retrieval*, §8.4; the convention of the cross-modal retrieval literature, e.g.
Rasiwasia et al. 2010, DSCMR, Zhen et al. CVPR 2019):

    AP@k = (1 / R_k) * sum_{i=1..k} P@i * rel_i,       R_k = sum_{i=1..k} rel_i

where rel_i is 1 when the i-th retrieved item is relevant and P@i is the precision of the top i.
AP@all is AP@G (R_G = number of relevant items in the gallery). A query with R_k = 0 contributes
AP = 0. Ties in similarity are broken by gallery order (stable sort).
"""
from __future__ import annotations

import numpy as np


def _check_pair(query: np.ndarray, gallery: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray) -> None:
    if query.ndim != 2 or gallery.ndim != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"query, gallery: expected (Q, d) and (G, d), got {query.shape} and {gallery.shape}")
    if query_labels.ndim != 2 or query_labels.shape[0] != query.shape[0]:
        raise ValueError(f"query_labels: expected ({query.shape[0]}, C), got {query_labels.shape}")
    if gallery_labels.shape != (gallery.shape[0], query_labels.shape[1]):
        raise ValueError(f"gallery_labels: expected {(gallery.shape[0], query_labels.shape[1])}, got {gallery_labels.shape}")
    if query.shape[0] == 0 or gallery.shape[0] == 0:
        raise ValueError("query, gallery: need at least one row each")


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _ranked_relevance(q: np.ndarray, g: np.ndarray, ql: np.ndarray, gl: np.ndarray, k: int) -> np.ndarray:
    """(c, k) bool relevance of the top-k gallery items of each query in the chunk, best first."""
    sim = q @ g.T                                                       # (c, G)
    relevant = (ql @ gl.T) > 0                                          # (c, G)
    if k < sim.shape[1]:
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]               # (c, k) unordered
        top.sort(axis=1)                                                # ties then keep gallery order
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        idx = np.take_along_axis(top, order, axis=1)                    # (c, k)
    else:
        idx = np.argsort(-sim, axis=1, kind="stable")                   # (c, G)
    return np.take_along_axis(relevant, idx, axis=1)


def mean_average_precision(
    query: np.ndarray,
    gallery: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    top_k: int | None = None,
    chunk: int = 256,
) -> float:
    """mAP@k (or mAP@all when top_k is None) of cosine retrieval; see the module docstring for AP@k.

    query: (Q, d), gallery: (G, d), query_labels: (Q, C), gallery_labels: (G, C) in {0, 1}.
    """
    _check_pair(query, gallery, query_labels, gallery_labels)
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k: expected a positive integer or None, got {top_k}")
    q, g = _normalise(query), _normalise(gallery)
    ql, gl = np.asarray(query_labels, dtype=np.float32), np.asarray(gallery_labels, dtype=np.float32)
    k = g.shape[0] if top_k is None else min(top_k, g.shape[0])
    ranks = np.arange(1, k + 1, dtype=np.float64)                       # (k,)
    total = 0.0
    for start in range(0, q.shape[0], chunk):
        rel = _ranked_relevance(q[start:start + chunk], g, ql[start:start + chunk], gl, k)   # (c, k)
        hits = np.cumsum(rel, axis=1)                                   # (c, k)
        n_rel = hits[:, -1]                                             # (c,)
        ap_sum = (hits / ranks * rel).sum(1)                            # (c,)
        total += np.where(n_rel > 0, ap_sum / np.maximum(n_rel, 1), 0.0).sum()
    return float(total / q.shape[0])


def precision_at_k(
    query: np.ndarray,
    gallery: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    *,
    k: int,
    chunk: int = 256,
) -> float:
    """Mean over queries of the fraction of relevant items among the top k (cosine). Shapes as in ``mean_average_precision``."""
    _check_pair(query, gallery, query_labels, gallery_labels)
    if k < 1:
        raise ValueError(f"k: expected a positive integer, got {k}")
    q, g = _normalise(query), _normalise(gallery)
    ql, gl = np.asarray(query_labels, dtype=np.float32), np.asarray(gallery_labels, dtype=np.float32)
    k = min(k, g.shape[0])
    total = 0.0
    for start in range(0, q.shape[0], chunk):
        total += _ranked_relevance(q[start:start + chunk], g, ql[start:start + chunk], gl, k).mean(1).sum()
    return float(total / q.shape[0])


def evaluate_retrieval(
    mu_image: np.ndarray,
    mu_text: np.ndarray,
    labels: np.ndarray,
    *,
    ks: tuple[int, ...] = (50,),
    precision_ks: tuple[int, ...] = (10,),
    chunk: int = 256,
) -> dict[str, float]:
    """Image->text and text->image retrieval within one set (queries and gallery both the set; DESIGN §4, §6).

    mu_image, mu_text: (N, d); labels: (N, C). Keys: ``i2t``, ``t2i``, ``avg`` (mAP@all),
    ``i2t@k``, ``t2i@k``, ``avg@k`` for k in ``ks``, and ``i2t_p@k``, ``t2i_p@k``, ``p@k`` for k in
    ``precision_ks``.
    """
    if mu_image.shape != mu_text.shape:
        raise ValueError(f"mu_text: expected shape {mu_image.shape} like mu_image, got {mu_text.shape}")
    out: dict[str, float] = {}
    for suffix, top_k in [("", None)] + [(f"@{k}", k) for k in ks]:
        i2t = mean_average_precision(mu_image, mu_text, labels, labels, top_k=top_k, chunk=chunk)
        t2i = mean_average_precision(mu_text, mu_image, labels, labels, top_k=top_k, chunk=chunk)
        out.update({f"i2t{suffix}": i2t, f"t2i{suffix}": t2i, f"avg{suffix}": 0.5 * (i2t + t2i)})
    for k in precision_ks:
        i2t = precision_at_k(mu_image, mu_text, labels, labels, k=k, chunk=chunk)
        t2i = precision_at_k(mu_text, mu_image, labels, labels, k=k, chunk=chunk)
        out.update({f"i2t_p@{k}": i2t, f"t2i_p@{k}": t2i, f"p@{k}": 0.5 * (i2t + t2i)})
    return out


def competence(probs: np.ndarray, labels: np.ndarray) -> float | None:
    """Competence of a model on labelled pairs (DCoM, Mishal & Weinshall 2024, arXiv 2407.01804,
    mixes coverage and uncertainty by such a score): the share of pairs whose most probable class
    is one of their labels (precision@1 of the class head).

    probs: (n, C) class probabilities (e.g. the mean of the two branches); labels: (n, C) 0/1.
    Returns a float in [0, 1], or None for fewer than 2 pairs (too few to say anything).
    """
    if probs.shape != labels.shape or probs.ndim != 2:
        raise ValueError(f"competence: probs {probs.shape} and labels {labels.shape} must be the same (n, C)")
    if len(probs) < 2:
        return None
    top = np.argmax(probs, axis=1)
    return float(np.mean(labels[np.arange(len(probs)), top] > 0))


def premark_threshold(probs: np.ndarray, labels: np.ndarray, precision: float, z: float = 1.645) -> float | None:
    """The lowest class probability t at which the model's labels can be trusted to ``precision``.

    Among all (pair, class) predictions of labelled pairs with probability >= t, the share that are
    true labels must have a one-sided Wilson lower confidence bound (z = 1.645: 95 %; Wilson 1927,
    Brown, Cai & DasGupta 2001) of at least ``precision``. Few labelled pairs give a wide bound, so a
    weak or barely validated model gets no threshold at all.

    probs: (n, C) class probabilities; labels: (n, C) 0/1 truth. Returns t (one of the probabilities)
    or None when no t qualifies (including n = 0).
    """
    if probs.shape != labels.shape or probs.ndim != 2:
        raise ValueError(f"premark_threshold: probs {probs.shape} and labels {labels.shape} must be the same (n, C)")
    if not 0 < precision < 1:
        raise ValueError(f"premark_threshold: precision must be in (0, 1), got {precision}")
    scores, truth = probs.ravel(), labels.ravel() > 0
    order = np.argsort(-scores, kind="stable")
    scores, truth = scores[order], truth[order]
    last_of_tie = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True]) if len(scores) else np.array([], int)
    m = last_of_tie + 1.0                          # predictions with probability >= scores[last_of_tie]
    hit = np.cumsum(truth)[last_of_tie] / m        # their precision
    centre = hit + z * z / (2 * m)
    spread = z * np.sqrt(hit * (1 - hit) / m + z * z / (4 * m * m))
    lower = (centre - spread) / (1 + z * z / m)
    ok = np.flatnonzero(lower >= precision)
    return float(scores[last_of_tie[ok[-1]]]) if len(ok) else None
