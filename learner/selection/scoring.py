"""Scores for active learning on image-text pairs: pure functions of arrays, ``(n, ...) -> (n,)``.

It stays one module because the component functions, their rank fusion (``InformativenessWeights``)
and the chunked pool driver (``pool_scores``) all revolve around the one list ``COMPONENTS``.

Every function takes the learner's arrays (never a model) and returns one number per pair,
higher meaning "more worth labelling". References:

- ASCMR: Qi et al., *Active Supervised Cross-Modal Retrieval*, TPAMI 2025. §3 (probabilistic
  multi-modal informativeness): intra-modality uncertainty of each Gaussian embedding and
  inter-modality uncertainty of the pair.
- PCME: Chun et al., *Probabilistic Embeddings for Cross-Modal Retrieval*, CVPR 2021, eq. 3
  (match probability) and §3.2 (Monte-Carlo estimate over K x K sample pairs).
- BALD: Houlsby et al., *Bayesian Active Learning for Classification and Preference Learning*,
  2011, eq. 2 (mutual information = predictive entropy - expected entropy); Gal et al. 2017 for
  its MC estimate.
- Jensen-Shannon divergence: Lin, *Divergence measures based on the Shannon entropy*, IEEE
  Trans. Inf. Theory 1991.

Class probabilities are multi-label sigmoid outputs, so every entropy here is the sum over
classes of the binary (Bernoulli) entropy, in nats.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata

from learner.outputs import InferenceOutputs

logger = logging.getLogger(__name__)

CHUNK_ROWS = 16384  # pool rows scored per chunk: bounds the temporaries of every per-row score
_EPS = np.float32(1e-6)  # probabilities are clipped to [eps, 1 - eps] before taking logs (float32-safe)

#: The raw components that :func:`pool_scores` computes, in the order they are reported.
COMPONENTS = (
    "spread_image", "spread_text",
    "entropy_image", "entropy_text",
    "mutual_information_image", "mutual_information_text",
    "match_probability", "match_entropy", "mismatch",
    "disagreement",
)


# --------------------------------------------------------------------------- elementwise helpers

def _binary_entropy(p: np.ndarray) -> np.ndarray:
    """Elementwise Bernoulli entropy -p log p - (1-p) log(1-p) in nats, float32; any shape."""
    q = np.clip(p, _EPS, 1 - _EPS, dtype=np.float32)
    r = 1 - q
    out = np.log(q)
    out *= q
    tmp = np.log(r)
    tmp *= r
    out += tmp
    np.negative(out, out=out)
    return out


def bernoulli_entropy(probs: np.ndarray) -> np.ndarray:
    """Multi-label predictive entropy: sum over classes of the binary entropy.

    probs: (n, C) sigmoid probabilities.  Returns (n,) in nats, in [0, C ln 2]; maximal at p = 0.5.
    """
    return _binary_entropy(probs).sum(axis=1, dtype=np.float64)


def mc_entropy_and_mutual_information(mc_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predictive entropy and BALD mutual information from K Monte-Carlo class probabilities.

    mc_probs: (n, K, C) probabilities of K samples (embedding samples z ~ N(mu, sigma^2) pushed
    through the classifier, or MC-dropout passes), K >= 1.

    entropy = sum_c h(mean_k p_kc)                          (total uncertainty)
    mi      = entropy - mean_k sum_c h(p_kc)                 (BALD, Houlsby 2011 eq. 2: the
                                                              epistemic part, >= 0 by concavity)
    Returns two (n,) float64 arrays.
    """
    n, k, c = mc_probs.shape
    mean = mc_probs.mean(axis=1, dtype=np.float32)                                   # (n, C)
    entropy = _binary_entropy(mean).sum(axis=1, dtype=np.float64)                    # (n,)
    expected = _binary_entropy(mc_probs).reshape(n, k * c).sum(axis=1, dtype=np.float64) / k
    return entropy, np.maximum(entropy - expected, 0.0)


def embedding_spread(var: np.ndarray) -> np.ndarray:
    """Intra-modality embedding uncertainty (ASCMR §3, PCME §3.3): mean of the diagonal sigma^2.

    var: (n, d) variances.  Returns (n,).
    """
    return var.mean(axis=1, dtype=np.float64)


def semantic_disagreement(probs_image: np.ndarray, probs_text: np.ndarray) -> np.ndarray:
    """Inter-modality semantic disagreement (ASCMR §3): Jensen-Shannon divergence of the branches.

    probs_image, probs_text: (n, C) sigmoid probabilities.  Multi-label outputs are C independent
    Bernoulli variables, so the divergence is the sum over classes of the Bernoulli JS divergence
    (Lin 1991):  JS = sum_c [ h((p_c + q_c)/2) - (h(p_c) + h(q_c)) / 2 ],  in nats, in [0, C ln 2].
    Zero iff both branches predict the same probabilities.  Returns (n,).
    """
    m = (probs_image + probs_text) * np.float32(0.5)
    js = _binary_entropy(m)
    js -= np.float32(0.5) * (_binary_entropy(probs_image) + _binary_entropy(probs_text))
    return np.maximum(js.sum(axis=1, dtype=np.float64), 0.0)


def match_noise(n_samples: int, dim: int, *, seed: int | np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal draws for :func:`match_probability`: two (n_samples, dim) float32 arrays."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n_samples, dim), dtype=np.float32),
            rng.standard_normal((n_samples, dim), dtype=np.float32))


def match_probability(mu_image: np.ndarray, var_image: np.ndarray, mu_text: np.ndarray, var_text: np.ndarray,
                      *, a: float, b: float, noise_image: np.ndarray, noise_text: np.ndarray) -> np.ndarray:
    """PCME match probability (Chun et al. 2021, eq. 3; ASCMR §3 inter-modality uncertainty).

    p_match = 1/K^2 sum_{k,l} sigmoid(-a * ||z_v^k - z_t^l|| + b),
    z_v^k = mu_v + sigma_v * eps_v^k,  z_t^l = mu_t + sigma_t * eps_t^l.

    mu_*, var_*: (n, d); noise_image, noise_text: (K, d) standard-normal draws (:func:`match_noise`).
    The same draws are used for every pair (common random numbers): each pair still gets the
    K x K Monte-Carlo estimate of PCME, and sharing the draws makes the estimates comparable across
    pairs and independent of how the pool is chunked. It also turns the K^2 distances into GEMMs:
    with D = mu_v - mu_t,
      ||z_v^k - z_t^l||^2 = ||D||^2 + var_v.(e_v^k)^2 + var_t.(e_t^l)^2 + 2 (D sigma_v).e_v^k
                            - 2 (D sigma_t).e_t^l - 2 (sigma_v sigma_t).(e_v^k e_t^l),
    so the cost is O(n d K^2) multiply-adds in BLAS and no per-pair random numbers.
    Returns (n,) float64 in (0, 1).
    """
    k = noise_image.shape[0]
    sd_v = np.sqrt(var_image)                                                     # (n, d)
    sd_t = np.sqrt(var_text)
    diff = mu_image - mu_text                                                     # (n, d)
    base = np.einsum("nd,nd->n", diff, diff)                                      # (n,)
    term_v = var_image @ np.square(noise_image).T + 2 * ((diff * sd_v) @ noise_image.T)   # (n, K)
    term_t = var_text @ np.square(noise_text).T - 2 * ((diff * sd_t) @ noise_text.T)      # (n, K)
    pair_noise = (noise_image[:, None, :] * noise_text[None, :, :]).reshape(k * k, -1)    # (K^2, d)
    cross = ((sd_v * sd_t) @ pair_noise.T).reshape(-1, k, k)                      # (n, K, K)
    dist2 = base[:, None, None] + term_v[:, :, None] + term_t[:, None, :] - 2 * cross
    dist = np.sqrt(np.maximum(dist2, 0))
    logits = np.float32(b) - np.float32(a) * dist
    return (1 / (1 + np.exp(-logits, dtype=np.float64))).mean(axis=(1, 2))


def match_entropy(p_match: np.ndarray) -> np.ndarray:
    """Match uncertainty: binary entropy of p_match, (n,) -> (n,), maximal at p_match = 0.5.

    We use the entropy rather than low p_match (exposed as ``mismatch = 1 - p_match``): a pair the
    model is sure is mismatched (p ~ 0) is a noisy pair for the annotator to flag, not one whose
    label teaches the model much; the entropy targets pairs on the match decision boundary.
    """
    return _binary_entropy(p_match).astype(np.float64)


def fuse_gaussians(mu_image: np.ndarray, var_image: np.ndarray, mu_text: np.ndarray, var_text: np.ndarray,
                   *, normalise: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Joint representation of a pair: the product of its two diagonal Gaussians (ASCMR §3).

    Sigma_z = (Sigma_v^-1 + Sigma_t^-1)^-1,  mu_z = Sigma_z (Sigma_v^-1 mu_v + Sigma_t^-1 mu_t),
    computed per dimension as var_z = var_v var_t / (var_v + var_t) and
    mu_z = (var_t mu_v + var_v mu_t) / (var_v + var_t).
    With ``normalise`` mu_z is L2-normalised so that dot products are cosine similarities.
    mu_*, var_*: (n, d).  Returns (mu_z (n, d), var_z (n, d)) in the input dtype.
    """
    total = var_image + var_text
    var_z = var_image * var_text / total
    mu_z = (var_text * mu_image + var_image * mu_text) / total
    if normalise:
        norm = np.linalg.norm(mu_z, axis=1, keepdims=True)
        mu_z /= np.maximum(norm, np.finfo(mu_z.dtype).tiny)
    return mu_z, var_z


def rank01(values: np.ndarray) -> np.ndarray:
    """Rank-normalise to [0, 1]: (average rank - 1) / (n - 1); ties share a rank.

    values: (n,) finite.  The smallest maps to 0, the largest to 1, a constant vector (or n = 1) to 0.5.
    Ranks make components with different scales and skews commensurable (ASCMR §3 combines them).
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"rank01: expected a 1-d array, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("rank01: values must be finite")
    n = values.shape[0]
    if n <= 1:
        return np.full(n, 0.5)
    return (rankdata(values, method="average") - 1) / (n - 1)


# --------------------------------------------------------------------------- informativeness

@dataclass(frozen=True)
class InformativenessWeights:
    """Weights of the rank-normalised components in I_i (ASCMR §3); recorded with each round.

    Per-modality components (spread, entropy, mutual_information) split their weight equally
    between image and text.  Defaults, chosen on validation splits carved from the Wikipedia pool
    (docs/benchmarks.md, "Tuning"): the inter-modality terms (match entropy 1, disagreement 1) and
    the semantic density rho at 2, so representative pairs count as much as both inter-modality
    terms together (information density, Settles & Craven 2008).  The intra-modality terms are
    computed and explained but weigh 0: in every ablation at 1-6 % labels they lowered the area
    under the learning curve.  mismatch (1 - p_match) is off, see :func:`match_entropy`.
    """

    spread: float = 0.0
    entropy: float = 0.0
    mutual_information: float = 0.0
    match: float = 1.0
    mismatch: float = 0.0
    disagreement: float = 1.0
    density: float = 2.0

    def __post_init__(self) -> None:
        values = asdict(self)
        bad = {k: v for k, v in values.items() if not (np.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"InformativenessWeights: weights must be finite and >= 0, got {bad}")
        if sum(values.values()) <= 0:
            raise ValueError("InformativenessWeights: at least one weight must be > 0")

    def per_component(self) -> dict[str, float]:
        """Weight of each raw component name (those with weight > 0)."""
        groups = {
            "spread": ("spread_image", "spread_text"),
            "entropy": ("entropy_image", "entropy_text"),
            "mutual_information": ("mutual_information_image", "mutual_information_text"),
            "match": ("match_entropy",),
            "mismatch": ("mismatch",),
            "disagreement": ("disagreement",),
            "density": ("density",),
        }
        per: dict[str, float] = {}
        for group, weight in asdict(self).items():
            if weight > 0:
                names = groups[group]
                per.update({name: weight / len(names) for name in names})
        return per


def informativeness(components: Mapping[str, np.ndarray], weights: InformativenessWeights) -> np.ndarray:
    """I_i = sum_c w_c rank01(component_c)_i / sum_c w_c, in [0, 1] (ASCMR §3, our rank fusion).

    components: name -> (n,) raw scores (higher = more informative); must contain every component
    with a positive weight.  Returns (n,) float64.
    """
    per = weights.per_component()
    missing = sorted(set(per) - set(components))
    if missing:
        raise ValueError(f"informativeness: missing components {missing}; have {sorted(components)}")
    total = sum(per.values())
    return sum(w * rank01(components[name]) for name, w in per.items()) / total


# --------------------------------------------------------------------------- pool driver

@dataclass(frozen=True)
class PoolScores:
    """Components of every pool pair and its joint embedding, aligned with the pool rows.

    components: name -> (n_pool,) float64, names in :data:`COMPONENTS`.
    mu_z:       (n_pool, d) float32, L2-normalised mean of the fused Gaussian.
    """

    components: Mapping[str, np.ndarray]
    mu_z: np.ndarray


def fused_means(outputs: InferenceOutputs, rows: np.ndarray, *, chunk_size: int = CHUNK_ROWS) -> np.ndarray:
    """L2-normalised joint means mu_z of ``outputs`` rows, (len(rows), d) float32, in chunks."""
    out = np.empty((len(rows), outputs.mu_image.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), chunk_size):
        r = rows[start:start + chunk_size]
        out[start:start + len(r)] = fuse_gaussians(outputs.mu_image[r], outputs.var_image[r],
                                                   outputs.mu_text[r], outputs.var_text[r])[0]
    return out


def pool_scores(outputs: InferenceOutputs, rows: np.ndarray, *, match_samples: int = 7,
                seed: int | np.random.Generator = 0, chunk_size: int = CHUNK_ROWS, n_jobs: int = 1,
                noise: tuple[np.ndarray, np.ndarray] | None = None) -> PoolScores:
    """Every informativeness component of ``outputs`` rows, computed in chunks of rows.

    rows: (n_pool,) row indices into ``outputs``.  Arrays are gathered ``chunk_size`` rows at a
    time, so memory stays O(chunk_size * K * C) beyond the outputs; ``n_jobs`` threads score
    chunks concurrently (numpy releases the GIL; the result does not depend on n_jobs or
    chunk_size).  If the outputs carry no embedding samples (K = 0), the entropies use the
    deterministic branch probabilities and the mutual information is 0.  ``noise``: the
    :func:`match_noise` draws to use instead of drawing them from ``seed`` (a pool scored batch by
    batch, :func:`learner.selection.streaming.stream_pool_scores`, shares one draw).
    """
    n, d = len(rows), outputs.mu_image.shape[1]
    comps = {name: np.empty(n, dtype=np.float64) for name in COMPONENTS}
    mu_z = np.empty((n, d), dtype=np.float32)
    noise_image, noise_text = noise if noise is not None else match_noise(match_samples, d, seed=seed)

    def score_chunk(start: int) -> None:
        r = rows[start:start + chunk_size]
        s = slice(start, start + len(r))
        mu_v, var_v = outputs.mu_image[r], outputs.var_image[r]
        mu_t, var_t = outputs.mu_text[r], outputs.var_text[r]
        comps["spread_image"][s] = embedding_spread(var_v)
        comps["spread_text"][s] = embedding_spread(var_t)
        p_match = match_probability(mu_v, var_v, mu_t, var_t, a=outputs.match_a, b=outputs.match_b,
                                    noise_image=noise_image, noise_text=noise_text)
        comps["match_probability"][s] = p_match
        comps["match_entropy"][s] = match_entropy(p_match)
        comps["mismatch"][s] = 1 - p_match
        mu_z[s] = fuse_gaussians(mu_v, var_v, mu_t, var_t)[0]
        for modality, mc, probs in (("image", outputs.mc_probs_image, outputs.probs_image),
                                    ("text", outputs.mc_probs_text, outputs.probs_text)):
            if mc.shape[1] > 0:
                ent, mi = mc_entropy_and_mutual_information(mc[r])
            else:
                ent, mi = bernoulli_entropy(probs[r]), 0.0
            comps[f"entropy_{modality}"][s] = ent
            comps[f"mutual_information_{modality}"][s] = mi
        comps["disagreement"][s] = semantic_disagreement(outputs.probs_image[r], outputs.probs_text[r])

    with ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        list(pool.map(score_chunk, range(0, n, chunk_size)))
    logger.debug("scored %d pool pairs (d=%d, %d match samples, %d threads)", n, d, match_samples, n_jobs)
    return PoolScores(components=comps, mu_z=mu_z)
