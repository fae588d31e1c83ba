"""Retrieval metrics on hand-computed toy cases (learner.metrics)."""
import numpy as np
import pytest

from learner.metrics import (_descending_order, _normalise, evaluate_retrieval, mean_average_precision, precision_at_k,
                             premark_threshold)

# Two queries, four gallery items, two classes A=[1,0], B=[0,1].
QUERY = np.array([[1.0, 0.0], [0.0, 1.0]])
GALLERY = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
QUERY_LABELS = np.array([[1, 0], [0, 1]], dtype=np.float32)          # q1: A, q2: B
GALLERY_LABELS = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)  # g1 A, g2 B, g3 A, g4 B
# q1 cosines: g1 1.0, g2 0.8, g3 0.0, g4 -1.0 -> ranking g1(rel) g2 g3(rel) g4
#   AP@all = (1/2) * (1/1 + 2/3) = 0.833333;  AP@2 = (1/1) * (1/1) = 1.0;  P@2 = 1/2
# q2 cosines: g1 0.0, g2 0.6, g3 1.0, g4 0.0 -> ranking g3 g2(rel) g1 g4(rel)  (tie g1/g4 kept in gallery order)
#   AP@all = (1/2) * (1/2 + 2/4) = 0.5;       AP@2 = (1/1) * (1/2) = 0.5;  P@2 = 1/2
# mAP@all = (0.833333 + 0.5) / 2 = 0.666667;  mAP@2 = (1.0 + 0.5) / 2 = 0.75;  P@2 = 0.5


def test_map_all_hand_computed():
    assert mean_average_precision(QUERY, GALLERY, QUERY_LABELS, GALLERY_LABELS) == pytest.approx((5 / 6 + 0.5) / 2)


def test_map_at_k_hand_computed():
    assert mean_average_precision(QUERY, GALLERY, QUERY_LABELS, GALLERY_LABELS, top_k=2) == pytest.approx(0.75)


def test_precision_at_k_hand_computed():
    assert precision_at_k(QUERY, GALLERY, QUERY_LABELS, GALLERY_LABELS, k=2) == pytest.approx(0.5)
    # P@1: q1 -> g1 relevant (1), q2 -> g3 not relevant (0)
    assert precision_at_k(QUERY, GALLERY, QUERY_LABELS, GALLERY_LABELS, k=1) == pytest.approx(0.5)


def test_multilabel_relevance_and_query_without_relevant_items():
    # q1 has labels {A, B}: every gallery item shares one -> AP = 1. q2 has label C, nothing relevant -> AP = 0.
    ql = np.array([[1, 1, 0], [0, 0, 1]], dtype=np.float32)
    gl = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    assert mean_average_precision(QUERY, GALLERY, ql, gl) == pytest.approx(0.5)


def test_chunking_and_scale_do_not_change_results():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(37, 8)), rng.normal(size=(53, 8))
    ql = (rng.random((37, 5)) < 0.3).astype(np.float32)
    gl = (rng.random((53, 5)) < 0.3).astype(np.float32)
    full = mean_average_precision(q, g, ql, gl, chunk=1000)
    assert mean_average_precision(q * 3.0, g, ql, gl, chunk=4) == pytest.approx(full)
    assert mean_average_precision(q, g, ql, gl, top_k=10, chunk=7) == pytest.approx(
        mean_average_precision(q, g, ql, gl, top_k=10, chunk=1000))


def test_map_all_matches_sklearn_average_precision():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    q, g = rng.normal(size=(20, 6)), rng.normal(size=(40, 6))
    ql = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 20)]
    gl = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 40)]
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    expected = np.mean([average_precision_score((gl @ ql[i]) > 0, gn @ qn[i]) for i in range(20)])
    assert mean_average_precision(q, g, ql, gl) == pytest.approx(expected)


def test_evaluate_retrieval_keys_and_perfect_alignment():
    labels = np.eye(3, dtype=np.float32)[[0, 0, 1, 1, 2, 2]]
    mu = labels + 0.01 * np.arange(6)[:, None]           # same-class items closest
    out = evaluate_retrieval(mu, mu, labels, ks=(2,), precision_ks=(2,))
    assert set(out) == {"i2t", "t2i", "avg", "i2t@2", "t2i@2", "avg@2", "i2t_p@2", "t2i_p@2", "p@2"}
    assert out["avg"] == pytest.approx(1.0) and out["p@2"] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", ["gallery", "labels", "top_k"])
def test_invalid_input_raises_value_error(bad):
    kwargs = dict(query=QUERY, gallery=GALLERY, query_labels=QUERY_LABELS, gallery_labels=GALLERY_LABELS)
    if bad == "gallery":
        kwargs["gallery"] = GALLERY[:, :1]
    elif bad == "labels":
        kwargs["gallery_labels"] = GALLERY_LABELS[:2]
    else:
        kwargs["top_k"] = 0
    with pytest.raises(ValueError):
        mean_average_precision(**kwargs)


def test_a_cut_below_one_names_its_argument():
    with pytest.raises(ValueError, match="^top_k: expected a positive integer, got 0$"):
        mean_average_precision(QUERY, GALLERY, QUERY_LABELS, GALLERY_LABELS, top_k=0)
    with pytest.raises(ValueError, match="^k: expected a positive integer, got -1$"):
        precision_at_k(QUERY, GALLERY, QUERY_LABELS, GALLERY_LABELS, k=-1)
    with pytest.raises(ValueError, match="^top_k: "):
        evaluate_retrieval(QUERY, QUERY, QUERY_LABELS, ks=(0,))


def _wilson_lower(hits: int, n: int, z: float = 1.645) -> float:
    p = hits / n
    return (p + z * z / (2 * n) - z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)


def test_premark_threshold_is_the_lowest_probability_whose_predictions_above_it_are_precise_enough():
    rng = np.random.default_rng(0)
    probs = rng.random((300, 8))
    truth = (rng.random((300, 8)) < probs).astype(np.float32)  # calibrated by construction: P(label) = p
    t = premark_threshold(probs, truth, 0.9)
    above = probs >= t
    assert _wilson_lower(int(truth[above].sum()), int(above.sum())) >= 0.9
    for lower in np.unique(probs[probs < t])[-50:]:             # every lower cut fails the bound
        cut = probs >= lower
        assert _wilson_lower(int(truth[cut].sum()), int(cut.sum())) < 0.9
    assert 0.8 < t < 0.95  # a calibrated model's precision above t is about (1 + t) / 2


def test_premark_threshold_needs_evidence():
    perfect = np.array([[0.99, 0.01], [0.98, 0.02], [0.97, 0.03]])
    truth = np.array([[1, 0], [1, 0], [1, 0]])
    assert premark_threshold(perfect, truth, 0.9) is None        # 3 correct labels cannot show 90 %
    many = np.tile(perfect, (20, 1)), np.tile(truth, (20, 1))
    assert premark_threshold(*many, 0.9) == pytest.approx(0.97)  # 60 of 60 correct can
    noise = np.random.default_rng(1).random((200, 5))
    assert premark_threshold(noise, (np.random.default_rng(2).random((200, 5)) < 0.2), 0.9) is None
    assert premark_threshold(np.zeros((0, 3)), np.zeros((0, 3)), 0.9) is None
    with pytest.raises(ValueError, match="must be in"):
        premark_threshold(perfect, truth, 1.0)


def _reference_metrics(q, g, ql, gl, k):
    """AP@k and P@k per query, one query at a time, from a stable argsort (ties in gallery order) of the
    float32 cosines the module computes (the same rounding, so the same ties)."""
    sim = _normalise(q) @ _normalise(g).T
    aps, precisions = [], []
    for i in range(len(q)):
        order = np.argsort(-sim[i], kind="stable")[:k]
        rel = (gl[order] @ ql[i]) > 0
        hits = np.cumsum(rel)
        aps.append((hits / np.arange(1, len(order) + 1) * rel).sum() / max(rel.sum(), 1))
        precisions.append(rel.mean())
    return np.mean(aps), np.mean(precisions)


@pytest.mark.parametrize("seed", range(6))
def test_metrics_break_ties_in_gallery_order_at_every_cut(seed):
    """Duplicated and rounded embeddings (exact ties, zero similarities) and cuts that fall inside a run
    of ties: every metric follows one stable ranking per query, as the reference computes it."""
    rng = np.random.default_rng(seed)
    n, d = 60, 3
    base = np.round(rng.normal(size=(12, d)))
    q = base[rng.integers(0, 12, n)]
    g = base[rng.integers(0, 12, n)]
    g[np.linalg.norm(g, axis=1) == 0] = 1.0
    q[np.linalg.norm(q, axis=1) == 0] = 1.0
    labels = (rng.random((n, 4)) < 0.3).astype(np.float32)
    for k in (1, 7, 23, n):
        ap, precision = _reference_metrics(q, g, labels, labels, k)
        assert mean_average_precision(q, g, labels, labels, top_k=k, chunk=17) == pytest.approx(ap, abs=1e-12)
        assert precision_at_k(q, g, labels, labels, k=k, chunk=17) == pytest.approx(precision, abs=1e-12)
    out = evaluate_retrieval(q, g, labels, ks=(7,), precision_ks=(23,), chunk=9)
    assert out["i2t@7"] == pytest.approx(_reference_metrics(q, g, labels, labels, 7)[0], abs=1e-12)
    assert out["t2i_p@23"] == pytest.approx(_reference_metrics(g, q, labels, labels, 23)[1], abs=1e-12)


def test_the_ranking_is_a_stable_argsort_of_minus_the_similarity():
    """Negative, positive and tied values, zeros of both signs (equal, so in gallery order)."""
    rng = np.random.default_rng(0)
    sim = rng.choice(np.array([-0.75, -0.5, -0.0, 0.0, 0.25, 1.0, -1e-30, 3.5e-38], dtype=np.float32), size=(40, 50))
    assert np.array_equal(_descending_order(sim), np.argsort(-sim, axis=1, kind="stable"))
    assert _descending_order(np.array([[-0.0, 0.0, 0.5, 0.0, -0.0]], dtype=np.float32)).tolist() == [[2, 0, 1, 3, 4]]


def test_a_large_gallery_is_ranked_in_smaller_chunks_with_the_same_results(monkeypatch):
    import learner.metrics

    rng = np.random.default_rng(3)
    q, g = rng.normal(size=(30, 5)), rng.normal(size=(40, 5))
    labels_q, labels_g = (rng.random((30, 3)) < 0.4).astype(np.float32), (rng.random((40, 3)) < 0.4).astype(np.float32)
    whole = mean_average_precision(q, g, labels_q, labels_g, top_k=9)
    monkeypatch.setattr(learner.metrics, "RANKING_CELLS", 50)     # one query row and part of another per pass
    assert mean_average_precision(q, g, labels_q, labels_g, top_k=9) == pytest.approx(whole, abs=1e-12)
    monkeypatch.setattr(learner.metrics, "RANKING_CELLS", 1)      # fewer cells than a row: still one row
    assert mean_average_precision(q, g, labels_q, labels_g, top_k=9) == pytest.approx(whole, abs=1e-12)
