"""Mismatch audit: how likely each pair's caption does not describe its image (noisy correspondence).

Pure functions of the learner's arrays (``InferenceOutputs``), higher meaning "more likely mismatched".
Five components, each computed per pair and reported with its rank:

- ``mismatch``:      1 - p_match, the PCME match probability (Chun et al. CVPR 2021, eq. 3) that the
                     model learns on every pair (``learner.selection.scoring.match_probability``).
- ``contrastive``:   the pair's own symmetric InfoNCE loss against a candidate set of the pool's other
                     captions and images (all of them up to ``max_candidates``, else a seeded sample),
                     with the ranks of its caption for its image and of its image for its caption.
- ``posterior``:     P(mismatch) under a two-component Gaussian mixture fitted to the min-max
                     normalised contrastive losses, the high-mean component being the noisy one (NCR,
                     Huang et al. NeurIPS 2021, §3.2; scikit-learn's ``GaussianMixture``).
- ``disagreement``:  Jensen-Shannon divergence of the image and text branches' class probabilities
                     (``scoring.semantic_disagreement``): a caption swapped in from another class makes
                     the two branches predict different labels.
- ``inconsistency``: 1 - the cross-modal neighbourhood consistency of the pair in the *raw* feature
                     spaces (BiCro, Yang et al. CVPR 2023, §3.2: pairs whose images are alike should have
                     alike captions): the mean text similarity of the pair's caption to the captions of its
                     k visual neighbours, and the image similarity to the images of its k textual
                     neighbours, averaged. Raw features cannot memorise a wrong pairing the way a model
                     trained on it does (on the COCO sample the model-space version was at chance).

The audit score is the weighted mean of the components' rank-normalised values (``scoring.rank01``),
the same fusion the selection scores use, so components of different scales are commensurable.

A pool is audited batch by batch as inference produces it (``gather_audit_inputs`` over
``learner.inference.iter_infer``, the path ``pairlab select`` streams): only the means (N, d) and two (N,)
components are kept of the outputs, and the raw features are read a chunk at a time, so memory is
O(N (d + reduced_dims)) whatever the raw feature dimensions. ``audit_pairs`` audits outputs already in memory.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from learner.outputs import InferenceOutputs
from learner.selection.density import cluster_members, kmeans_centres
from learner.selection.knn import cosine_neighbours
from learner.selection.scoring import CHUNK_ROWS, match_noise, match_probability, rank01, semantic_disagreement

T, R = TypeVar("T"), TypeVar("R")

LIST_CAP_FACTOR = 4  # an inverted list is searched through at most this many times cluster_rows of its rows
SIMILARITY_CELLS = 1 << 22  # entries of one chunk's pairs x candidates similarity matrix (16 MB in float32)

#: The components of the audit score, in the order they are reported.
AUDIT_COMPONENTS = ("mismatch", "contrastive", "posterior", "disagreement", "inconsistency")
#: The component whose raw values ``clean_probability`` turns into pair weights for training.
CLEAN_PROBABILITY_COMPONENT = "inconsistency"
#: The model's component that ``pair_clean_probability`` multiplies in ("audit+model" weighting).
MODEL_CLEAN_PROBABILITY_COMPONENT = "mismatch"
#: The model's P(clean) is used only when the noise it implies, sum(1 - P), is at most this many times
#: the raw features' (docs/audit.md: uncapped, a weak model took 96 % of the weight of the COCO sample's clean pairs).
MODEL_NOISE_CAP = 1.5


@dataclass(frozen=True)
class AuditConfig:
    """Settings of :func:`audit_pairs`.

    weights:        one weight >= 0 per ``AUDIT_COMPONENTS`` name (at least one > 0). The defaults
                    (inconsistency 4, mismatch 1, the rest 0; 128 reduced dimensions, 10 neighbours) were
                    chosen with ``benchmarks/bench_audit.py --on validation`` on the fashion set's validation
                    carve with 10 % of captions swapped (docs/audit.md); the components at weight 0 are still
                    computed and reported in every breakdown.
    neighbours:     k of the neighbourhood consistency (``inconsistency``).
    reduced_dims:   PCA dimensions each modality's raw features are reduced to for the neighbourhoods.
    exact_max_pool: pools up to this many pairs search neighbours exactly over the whole pool (O(N^2 d));
                    larger ones search an inverted file (:func:`cluster_neighbours`,
                    O(N (N / cluster_rows + probes cluster_rows) d)).
    cluster_rows:   mean members per k-means cluster (inverted list) of the bounded search.
    probes:         lists each pair searches: those of its most similar centres. The bounded defaults
                    (500, 5) found 99.0 % (image) and 98.1 % (text) of the exact 10 neighbours on the
                    fashion pool's reduced features; scaled to its validation carve's size (125, 5) they kept
                    the ``inconsistency`` ranking's AP within 0.002 of the exact one there (docs/audit.md).
    temperature:    of the per-pair InfoNCE loss (the training default, 0.2).
    max_candidates: captions/images each pair is ranked against; the whole pool when it is smaller,
                    else a seeded sample, so the cost is O(N * max_candidates * d). 2048, not 8192: on the
                    fashion validation carve (5,871 pairs, 10 % swapped) the contrastive ranking's AP was
                    0.616 with 2,048 candidates against 0.612 with all of them, and the component took 10.6
                    of the audit's ~41 s at 100k pairs with 8,192 (docs/benchmarks.md, *Audit at scale*).
    match_samples:  K of the K x K Monte-Carlo estimate of p_match.
    mixture_rows:   rows the Gaussian mixture is fitted on (a seeded sample beyond it); all rows are scored.
    evidence_rows:  the most suspicious pairs that get the pool's best alternative caption and image as
                    evidence (:func:`best_alternatives`, O(evidence_rows * N * d)).
    seed:           candidate sample, match noise and mixture initialisation.
    """

    mismatch: float = 1.0
    contrastive: float = 0.0
    posterior: float = 0.0
    disagreement: float = 0.0
    inconsistency: float = 4.0
    neighbours: int = 10
    reduced_dims: int = 128
    exact_max_pool: int = 10_000
    cluster_rows: int = 500
    probes: int = 5
    temperature: float = 0.2
    max_candidates: int = 2048
    match_samples: int = 7
    mixture_rows: int = 200_000
    evidence_rows: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        weights = [getattr(self, name) for name in AUDIT_COMPONENTS]
        if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"AuditConfig: component weights must be >= 0 with one > 0, got {weights}")
        if not self.temperature > 0:
            raise ValueError(f"AuditConfig.temperature: expected > 0, got {self.temperature}")
        for name in ("max_candidates", "match_samples", "mixture_rows", "reduced_dims"):
            if getattr(self, name) < 2:
                raise ValueError(f"AuditConfig.{name}: expected >= 2, got {getattr(self, name)}")
        for name in ("neighbours", "cluster_rows", "probes"):
            if getattr(self, name) < 1:
                raise ValueError(f"AuditConfig.{name}: expected >= 1, got {getattr(self, name)}")
        if self.exact_max_pool < 0:
            raise ValueError(f"AuditConfig.exact_max_pool: expected >= 0, got {self.exact_max_pool}")
        if self.evidence_rows < 0:
            raise ValueError(f"AuditConfig.evidence_rows: expected >= 0, got {self.evidence_rows}")

    def weights(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in AUDIT_COMPONENTS}


@dataclass(frozen=True)
class AuditScores:
    """The audit of N pairs (float64, (N,) each).

    score:       the fused audit score in [0, 1], higher = more likely mismatched.
    components:  name -> raw value of each ``AUDIT_COMPONENTS`` component (higher = more suspicious).
    ranks:       name -> the component's rank in [0, 1] (1 = the most suspicious pair of the pool).
    caption_rank: fraction of candidate captions closer to the pair's image than its own caption.
    image_rank:   fraction of candidate images closer to the pair's caption than its own image.
    """

    score: np.ndarray
    components: dict[str, np.ndarray]
    ranks: dict[str, np.ndarray]
    caption_rank: np.ndarray
    image_rank: np.ndarray

    def order(self) -> np.ndarray:
        """Row indices, most suspicious first (ties broken by row index)."""
        return np.lexsort((np.arange(self.score.shape[0]), -self.score))


@dataclass(frozen=True)
class AuditInputs:
    """What the audit keeps of N pairs' inference outputs.

    mu_image, mu_text: (N, d) float32 L2-normalised means (the contrastive component and the evidence).
    mismatch:          (N,) float64, 1 - p_match.
    disagreement:      (N,) float64, the branches' Jensen-Shannon divergence.
    """

    mu_image: np.ndarray
    mu_text: np.ndarray
    mismatch: np.ndarray
    disagreement: np.ndarray


def gather_audit_inputs(batches: Iterable[InferenceOutputs], n: int, *, match_samples: int,
                        seed: int) -> AuditInputs:
    """The ``AuditInputs`` of ``n`` pairs whose outputs come as consecutive batches in row order
    (``learner.inference.iter_infer``); each batch is dropped once read, so memory is O(N d) plus one batch.
    p_match (PCME eq. 3, ``scoring.match_probability``) uses one draw of match noise seeded ``seed`` for
    every batch, so the result does not depend on the batch size."""
    mu_image = mu_text = noise = None
    mismatch, disagreement = np.empty(n), np.empty(n)
    start = 0
    for batch in batches:
        if noise is None:
            d = batch.mu_image.shape[1]
            mu_image, mu_text = np.empty((n, d), np.float32), np.empty((n, d), np.float32)
            noise = match_noise(match_samples, d, seed=seed)
        if start + batch.n > n:
            raise ValueError(f"gather_audit_inputs: the batches hold more than the {n} rows expected")
        rows = slice(start, start + batch.n)
        mu_image[rows], mu_text[rows] = batch.mu_image, batch.mu_text
        mismatch[rows] = 1.0 - match_probability(batch.mu_image, batch.var_image, batch.mu_text, batch.var_text,
                                                 a=batch.match_a, b=batch.match_b, noise_image=noise[0],
                                                 noise_text=noise[1])
        disagreement[rows] = semantic_disagreement(batch.probs_image, batch.probs_text)
        start += batch.n
    if start != n:
        raise ValueError(f"gather_audit_inputs: the batches held {start} rows, expected {n}")
    return AuditInputs(mu_image, mu_text, mismatch, disagreement)


def candidate_rows(n: int, max_candidates: int, seed: int) -> np.ndarray:
    """The rows every pair is ranked against: all n when n <= max_candidates, else a seeded sample (sorted)."""
    if n <= max_candidates:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_candidates, replace=False))


def contrastive_losses(mu_image: np.ndarray, mu_text: np.ndarray, candidates: np.ndarray, temperature: float,
                       *, chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pair symmetric InfoNCE and ranks against candidate rows, in chunks of pairs.

    mu_image, mu_text: (N, d) L2-normalised means; candidates: (M,) row indices. For pair i, with
    s_ij = mu_image[i] . mu_text[j] and C_i = candidates without i,
        loss_i2t = -s_ii/tau + logsumexp({s_ii/tau} + {s_ij/tau : j in C_i}), loss_t2i likewise on s^T,
    loss = (loss_i2t + loss_t2i) / 2; caption_rank = |{j in C_i : s_ij > s_ii}| / |C_i| and
    image_rank the same over images. Memory is O(chunk_rows * M), chunk_rows by default such that a
    chunk's similarity matrix holds about ``SIMILARITY_CELLS`` values; it is worked on in place in float32,
    the sums in float64. Returns three (N,) float64 arrays.
    """
    n = mu_image.shape[0]
    chunk_rows = chunk_rows or max(1, SIMILARITY_CELLS // max(1, candidates.shape[0]))
    loss = np.empty(n)
    caption_rank = np.empty(n)
    image_rank = np.empty(n)
    cand_text = np.ascontiguousarray(mu_text[candidates], dtype=np.float32)     # (M, d)
    cand_image = np.ascontiguousarray(mu_image[candidates], dtype=np.float32)   # (M, d)
    position = np.full(n, -1)
    position[candidates] = np.arange(candidates.shape[0])
    for s in range(0, n, chunk_rows):
        rows = np.arange(s, min(s + chunk_rows, n))
        mv = np.asarray(mu_image[rows], dtype=np.float32)
        mt = np.asarray(mu_text[rows], dtype=np.float32)
        own32 = np.einsum("nd,nd->n", mv, mt)                                    # (B,)
        own = own32.astype(np.float64) / temperature                             # (B,) the positive's logit
        self_column = position[rows]                                             # (B,), -1 when not a candidate
        inside = self_column >= 0
        others = candidates.shape[0] - inside.astype(np.int64)                   # (B,) |C_i|
        halves = []
        for sims, rank_out in ((mv @ cand_text.T, caption_rank), (mt @ cand_image.T, image_rank)):   # (B, M)
            sims[inside, self_column[inside]] = -np.inf                          # a pair is not its own negative
            rank_out[rows] = (sims > own32[:, None]).sum(axis=1) / np.maximum(others, 1)
            sims *= np.float32(1 / temperature)                                  # in place: one (B, M) buffer
            top = np.maximum(sims.max(axis=1), own32 / np.float32(temperature))   # (B,) for a stable logsumexp
            sims -= top[:, None]
            np.exp(sims, out=sims)
            lse = top + np.log(sims.sum(axis=1, dtype=np.float64) + np.exp(own - top))
            halves.append(lse - own)
        loss[rows] = 0.5 * (halves[0] + halves[1])
    return loss, caption_rank, image_rank


def mismatch_posterior(losses: np.ndarray, *, max_rows: int = 200_000, seed: int = 0) -> np.ndarray:
    """NCR's P(noisy | loss): a 2-component GaussianMixture on min-max normalised losses (N,) -> (N,).

    The component with the larger mean is the noisy one (mismatched pairs keep a high contrastive loss;
    Huang et al. NeurIPS 2021, §3.2, after Arazo et al. ICML 2019). Fitted on at most ``max_rows``
    seeded rows; a constant loss vector gives 0.5 everywhere (nothing to separate).
    """
    x, fit_rows = _normalised_rows(losses, max_rows, seed)
    if x is None:
        return np.full(np.asarray(losses).shape[0], 0.5)
    return _noisy_posterior(x, _mixture(fit_rows, 2, seed))


def _noisy_posterior(x: np.ndarray, mixture: GaussianMixture) -> np.ndarray:
    """Posterior (N,) of the mixture's high-mean component for rows x (N, 1), in chunks."""
    noisy = int(np.argmax(mixture.means_[:, 0]))
    return np.concatenate([mixture.predict_proba(x[s:s + CHUNK_ROWS])[:, noisy]
                           for s in range(0, x.shape[0], CHUNK_ROWS)])


def two_populations(values: np.ndarray, *, max_rows: int = 200_000, seed: int = 0) -> bool:
    """Whether the values (N,) look like two populations rather than one: a two-component mixture has a
    lower BIC (Schwarz 1978) than a single Gaussian on the same (min-max normalised, at most ``max_rows``
    seeded) rows. On the fashion pool's ``inconsistency`` values, one Gaussian won on the clean pool
    (BIC lower by 169; validation carve 52) and two won from 5 % of captions swapped on (docs/audit.md).
    It is a test against one *Gaussian*: one skewed population (Beta(2, 5), Gamma(4); a review measured
    BIC margins of +1,800 at 20k rows) also counts as two, so it guards near-Gaussian clean pools only."""
    return _two_component_fit(values, max_rows, seed) is not None


def _two_component_fit(values: np.ndarray, max_rows: int, seed: int) -> tuple[np.ndarray, GaussianMixture] | None:
    """(normalised rows (N, 1), the two-component mixture) when it beats one Gaussian by BIC, else None."""
    x, fit_rows = _normalised_rows(values, max_rows, seed)
    if fit_rows is None or fit_rows.shape[0] < 4:
        return None
    two = _mixture(fit_rows, 2, seed)
    return (x, two) if two.bic(fit_rows) < _mixture(fit_rows, 1, seed).bic(fit_rows) else None


def clean_probability(values: np.ndarray, *, max_rows: int = 200_000, seed: int = 0) -> np.ndarray:
    """P(clean) of each pair from a raw per-pair suspicion value (N,) -> (N,) in [0, 1]: one minus the
    posterior of the high-mean component of a two-component GaussianMixture fitted to the values (NCR's
    rule, Huang et al. NeurIPS 2021 §3.2, see :func:`mismatch_posterior`), when the values hold two
    populations (:func:`two_populations`); else 1 for every pair. A two-component fit always splits the
    pool: on the clean fashion pool it put half the pairs below 1/2, which cost 0.007 validation mAP with
    the first version of the weights in DAGNN's loss (docs/audit.md; not remeasured with the final one). Workspace training feeds it
    the ``inconsistency`` values (1 - BiCro consistency of the raw features), not the model's own loss
    (which memorises swapped pairs) nor the fused score (a mean of ranks, uniform by construction, so a
    two-Gaussian fit splits it arbitrarily: on the fashion validation carve with 20 % swapped it put
    38 % of the clean pairs below 1/2, the raw inconsistency 10 %; docs/audit.md). Used as the pairs'
    weights in the pairing loss (soft correspondence)."""
    fit = _two_component_fit(values, max_rows, seed)    # one fit, for the test and the posterior
    if fit is None:
        return np.ones(np.asarray(values).shape[0])
    x, mixture = fit
    return 1.0 - _noisy_posterior(x, mixture)


def pair_clean_probability(inconsistency: np.ndarray, mismatch: np.ndarray | None = None, *,
                           max_rows: int = 200_000, seed: int = 0) -> np.ndarray:
    """Training weights (N,) in [0, 1] from one audit run's raw values (N,) of each pair.

    ``clean_probability(inconsistency)``; with ``mismatch`` (the model's 1 - p_match), times
    ``clean_probability(mismatch)`` when the raw-feature values hold two populations and the model's
    mixture implies at most ``MODEL_NOISE_CAP`` times their noise (sum of 1 - P). The raw features
    decide *whether* and *how much* of the pool is noisy (the model alone splits a clean pool, and a weak
    model's mixture can call most of a pool noisy); the model sharpens *which* pairs are. On the fashion
    pool, 20 % swapped, seed 0, the product left the swapped pairs 200 units of weight instead of 772 and
    took 781 from the kept pairs instead of 512 (docs/audit.md)."""
    p_clean = clean_probability(inconsistency, max_rows=max_rows, seed=seed)
    if mismatch is None or (p_clean == 1.0).all():
        return p_clean
    p_model = clean_probability(mismatch, max_rows=max_rows, seed=seed)
    if (1.0 - p_model).sum() > MODEL_NOISE_CAP * (1.0 - p_clean).sum():
        return p_clean
    return p_clean * p_model


def _normalised_rows(values: np.ndarray, max_rows: int, seed: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(all rows (N, 1), the seeded fit rows) of the min-max normalised values; (None, None) when constant."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not hi > lo or values.shape[0] < 2:
        return None, None
    x = ((values - lo) / (hi - lo))[:, None]
    rng = np.random.default_rng(seed)
    return x, (x if x.shape[0] <= max_rows else x[rng.choice(x.shape[0], size=max_rows, replace=False)])


def _mixture(rows: np.ndarray, components: int, seed: int) -> GaussianMixture:
    return GaussianMixture(n_components=components, max_iter=100, tol=1e-3, reg_covar=5e-4,
                           random_state=seed).fit(rows)


def reduce_features(features: np.ndarray, dims: int, *, seed: int, fit_rows: int = 50_000,
                    chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """(N, D) raw features -> (N, min(dims, D, ...)) float32 rows: PCA fitted on at most ``fit_rows`` seeded
    rows, applied in chunks, then L2-normalised, so dot products are cosine similarities. ``features``:
    anything whose row slices are float arrays (a memory-mapped view), read ``chunk_rows`` rows at a time,
    so memory beyond the result is O(fit_rows D + chunk_rows D)."""
    n, width = features.shape
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, fit_rows), replace=False))
    k = min(dims, width, sample.shape[0] - 1)
    pca = PCA(n_components=k, svd_solver="randomized" if k < min(sample.shape[0], width) // 2 else "full",
              random_state=seed).fit(_sorted_rows(features, sample, chunk_rows))
    reduced = np.empty((n, k), dtype=np.float32)
    for s in range(0, n, chunk_rows):
        part = pca.transform(np.asarray(features[s:s + chunk_rows], dtype=np.float32)).astype(np.float32)
        reduced[s:s + part.shape[0]] = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
    return reduced


def _sorted_rows(features: np.ndarray, rows: np.ndarray, chunk_rows: int) -> np.ndarray:
    """features[rows] as float32 (len(rows), D) for sorted ``rows``, through row slices of ``chunk_rows``."""
    parts = []
    for s in range(0, features.shape[0], chunk_rows):
        inside = rows[np.searchsorted(rows, s):np.searchsorted(rows, s + chunk_rows)]
        if inside.size:
            parts.append(np.asarray(features[s:s + chunk_rows], dtype=np.float32)[inside - s])
    return np.concatenate(parts)


def neighbour_consistency(space: np.ndarray, other: np.ndarray, k: int, *, neighbours: np.ndarray | None = None,
                          chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """For each row i: the mean of other[i] . other[j] over the k nearest neighbours j != i of row i in
    ``space`` (BiCro's cross-modal consistency). space (N, a), other (N, b): L2-normalised rows; k < N.
    ``neighbours``: (N, k) rows already found (:func:`cluster_neighbours`); else the exact ones, by
    ``learner.selection.knn.cosine_neighbours`` (faiss on large pools, scikit-learn below). (N,)"""
    n = space.shape[0]
    consistency = np.empty(n)
    for s in range(0, n, chunk_rows):
        rows = np.arange(s, min(s + chunk_rows, n))
        found = neighbours[rows] if neighbours is not None else _exact_neighbours(space, rows, k)
        consistency[rows] = np.einsum("bkd,bd->b", other[found], other[rows]) / k
    return consistency


def _exact_neighbours(space: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The k nearest rows j != i of ``space`` (N, d) for each of ``rows``: (len(rows), k) int64. Needs k < N."""
    found = cosine_neighbours(space, space[rows], k + 1, pass_rows=space.shape[0])[1]    # (B, k + 1)
    not_self = found != rows[:, None]                                                   # self, or one extra row
    keep = np.argsort(~not_self, axis=1, kind="stable")[:, :k]                          # first k others
    return np.take_along_axis(found, keep, axis=1)


def cluster_neighbours(space: np.ndarray, k: int, *, cluster_rows: int, probes: int, seed: int,
                       chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Approximate k nearest neighbours j != i of every row of ``space`` (N, d), L2-normalised, k < N:
    (N, k) int64, most similar first. An inverted-file search (Jegou et al., TPAMI 2011) over
    K = ceil(N / cluster_rows) MiniBatchKMeans centres (``learner.selection.density.kmeans_centres``): each
    row is listed under its most cosine-similar centre, and searches exactly the lists of its ``probes``
    most similar centres, one list at a time (the rows that probe a list search it ``chunk_rows`` at a
    time), keeping a running top k per row. A list longer than ``LIST_CAP_FACTOR * cluster_rows`` (many
    identical or near-identical rows: repeated captions) is searched through a seeded sample of that many
    of its rows, so no list costs more than that whatever the data. Cost O(N (K + probes cluster_rows) d);
    memory O(N (k + probes) + chunk_rows (d + cluster_rows)) beyond the input. Rows whose probed lists
    hold fewer than k others search the whole pool."""
    n = space.shape[0]
    n_clusters = max(1, -(-n // cluster_rows))
    centres = kmeans_centres(space, n_clusters=n_clusters, seed=seed)
    probed = cosine_neighbours(centres, space, min(probes, n_clusters), pass_rows=n)[1]    # (N, probes)
    lists = cluster_members(probed[:, 0], n_clusters)
    searching = cluster_members(probed.ravel(), n_clusters)                              # flat positions
    rng = np.random.default_rng(seed)
    cap = LIST_CAP_FACTOR * cluster_rows
    best_sim = np.full((n, k), -np.inf, dtype=np.float32)
    best = np.full((n, k), -1, dtype=np.int64)
    for listed, flat in zip(lists, searching):
        if listed.size == 0:
            continue
        if listed.size > cap:
            listed = np.sort(rng.choice(listed, size=cap, replace=False))
        references = space[listed]
        for s in range(0, flat.size, chunk_rows):
            queries = flat[s:s + chunk_rows] // probed.shape[1]                             # -> rows
            dist, found = cosine_neighbours(references, space[queries], min(k + 1, listed.size), pass_rows=n)
            found = listed[found]
            sim = np.where(found == queries[:, None], -np.inf, 1.0 - dist).astype(np.float32)  # never itself
            merged_sim = np.concatenate([best_sim[queries], sim], axis=1)
            merged = np.concatenate([best[queries], found], axis=1)
            top = np.argsort(-merged_sim, axis=1, kind="stable")[:, :k]
            best_sim[queries] = np.take_along_axis(merged_sim, top, axis=1)
            best[queries] = np.take_along_axis(merged, top, axis=1)
    short = np.flatnonzero(np.isinf(best_sim[:, -1]))
    if short.size:
        best[short] = _exact_neighbours(space, short, k)
    return best


def audit_pairs(outputs: InferenceOutputs, image_features: np.ndarray, text_features: np.ndarray,
                config: AuditConfig = AuditConfig()) -> AuditScores:
    """Score every pair of ``outputs`` (N pairs, all in memory) for being mismatched: :func:`audit_scores`
    of their :func:`gather_audit_inputs`, taken ``CHUNK_ROWS`` rows at a time."""
    chunks = (outputs.take(np.arange(s, min(s + CHUNK_ROWS, outputs.n))) for s in range(0, outputs.n, CHUNK_ROWS))
    inputs = gather_audit_inputs(chunks, outputs.n, match_samples=config.match_samples, seed=config.seed)
    return audit_scores(inputs, image_features, text_features, config)


def audit_scores(inputs: AuditInputs, image_features: np.ndarray, text_features: np.ndarray,
                 config: AuditConfig = AuditConfig(), *, workers: int = 1) -> AuditScores:
    """Score N >= 2 pairs for being mismatched; see the module docstring. image_features (N, Di),
    text_features (N, Dt): the raw features the model read, anything whose row slices are float arrays
    (memory-mapped views are read a chunk at a time, :func:`reduce_features`). ``workers``: threads of
    :func:`cross_modal_consistency`."""
    n = inputs.mu_image.shape[0]
    if n < 2:
        raise ValueError(f"audit_scores: need at least 2 pairs to compare, got {n}")
    if image_features.shape[0] != n or text_features.shape[0] != n:
        raise ValueError(f"audit_scores: expected {n} rows of features, got {image_features.shape[0]} and "
                         f"{text_features.shape[0]}")
    candidates = candidate_rows(n, config.max_candidates, config.seed)
    loss, caption_rank, image_rank = contrastive_losses(inputs.mu_image, inputs.mu_text, candidates,
                                                        config.temperature)
    components = {
        "mismatch": inputs.mismatch,
        "contrastive": loss,
        "posterior": mismatch_posterior(loss, max_rows=config.mixture_rows, seed=config.seed),
        "disagreement": inputs.disagreement,
        "inconsistency": 1.0 - cross_modal_consistency(image_features, text_features, config, workers=workers),
    }
    ranks = {name: rank01(values) for name, values in components.items()}
    weights = config.weights()
    total = sum(weights.values())
    score = sum(weights[name] * ranks[name] for name in AUDIT_COMPONENTS) / total
    return AuditScores(score=score, components=components, ranks=ranks,
                       caption_rank=caption_rank, image_rank=image_rank)


def cross_modal_consistency(image_features: np.ndarray, text_features: np.ndarray, config: AuditConfig,
                            *, workers: int = 1) -> np.ndarray:
    """Mean of the two directions of :func:`neighbour_consistency` on the reduced raw features. (N,)
    ``workers`` >= 2 reduces the two modalities, then searches their neighbourhoods, at once on two threads
    with BLAS and OpenMP at one thread each (``threadpoolctl``: BLAS for the process, OpenMP per thread,
    restored afterwards); the same values up to float rounding (BLAS sums in another order)."""
    n = image_features.shape[0]
    k = min(config.neighbours, n - 1)

    def reduce(features: np.ndarray) -> np.ndarray:
        return reduce_features(features, config.reduced_dims, seed=config.seed)

    def consistency(spaces: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        space, other = spaces
        found = None if n <= config.exact_max_pool else cluster_neighbours(
            space, k, cluster_rows=config.cluster_rows, probes=config.probes, seed=config.seed)
        return neighbour_consistency(space, other, k, neighbours=found)

    if workers < 2:
        image, text = reduce(image_features), reduce(text_features)
        return 0.5 * (consistency((image, text)) + consistency((text, image)))
    with (threadpool_limits(limits=1, user_api="blas"),
          ThreadPoolExecutor(max_workers=2, thread_name_prefix="pairlab-audit") as pool):
        image, text = pool.map(_one_openmp_thread(reduce), (image_features, text_features))
        forward, backward = pool.map(_one_openmp_thread(consistency), ((image, text), (text, image)))
    return 0.5 * (forward + backward)


def _one_openmp_thread(step: Callable[[T], R]) -> Callable[[T], R]:
    """``step`` run with OpenMP at one thread on the calling thread (OpenMP's setting is per thread)."""
    def run(argument: T) -> R:
        with threadpool_limits(limits=1, user_api="openmp"):
            return step(argument)
    return run


def best_alternatives(mu_image: np.ndarray, mu_text: np.ndarray, rows: np.ndarray,
                      *, chunk_rows: int = CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Evidence for flagged pairs: for each of ``rows`` (k,), the pool's best other caption for its image
    and best other image for its caption (exact, over all N pairs, chunked over the pool).

    mu_image, mu_text: (N, d). Returns (best_caption_row, best_image_row), two (k,) int arrays; a pair's
    own row is never its alternative (N >= 2).
    """
    rows = np.asarray(rows, dtype=np.int64)
    query_image = np.asarray(mu_image[rows], dtype=np.float32)        # (k, d)
    query_text = np.asarray(mu_text[rows], dtype=np.float32)
    best = {"caption": (np.full(rows.shape[0], -np.inf), np.zeros(rows.shape[0], dtype=np.int64)),
            "image": (np.full(rows.shape[0], -np.inf), np.zeros(rows.shape[0], dtype=np.int64))}
    n = mu_image.shape[0]
    for s in range(0, n, chunk_rows):
        block = np.arange(s, min(s + chunk_rows, n))
        for key, sims in (("caption", query_image @ np.asarray(mu_text[block], dtype=np.float32).T),
                          ("image", query_text @ np.asarray(mu_image[block], dtype=np.float32).T)):   # (k, B)
            sims[block[None, :] == rows[:, None]] = -np.inf
            arg = sims.argmax(axis=1)
            value = sims[np.arange(rows.shape[0]), arg]
            best_value, best_row = best[key]
            better = value > best_value
            best_value[better] = value[better]
            best_row[better] = block[arg[better]]
    return best["caption"][1], best["image"][1]


def breakdown(scores: AuditScores, row: int, config: AuditConfig = AuditConfig()) -> dict:
    """The "why flagged" record of one pair: each component's value, rank and weight, and the ranks of
    its own caption and image (JSON-ready)."""
    weights = config.weights()
    return {
        "components": {name: {"value": float(scores.components[name][row]),
                              "rank": float(scores.ranks[name][row]),
                              "weight": weights[name]}
                       for name in AUDIT_COMPONENTS},
        "caption_rank": float(scores.caption_rank[row]),
        "image_rank": float(scores.image_rank[row]),
    }
