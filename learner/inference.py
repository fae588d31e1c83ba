"""Batched inference: the arrays selection consumes (``learner.outputs.InferenceOutputs``).

mc_probs_*: K samples z_k = mu + sigma * eps_k ~ N(mu, sigma^2) per modality through the shared
classifier (PCME sampling; ASCMR intra-modality uncertainty). The K standard-normal draws eps_k (K, d)
of a modality are common random numbers: one draw per call (``embedding_noise``, from the seed), shared by
every row, as ``learner.selection.scoring.match_probability`` shares its draws. Each row still gets K
independent samples of its own N(mu, sigma^2), so every per-pair Monte-Carlo estimate (entropy, mutual
information) has the distribution, hence the expectation and bias, it had with per-row draws; only the
estimates of different pairs are now correlated. The outputs no longer depend on the batching, and
the draws cost O(K d) per call instead of O(N K d) (``CrossModalModel.classify_samples``).
dropout_probs: K' stochastic forward passes with only the dropout layers active, each the mean of the
two branches' probabilities (MC dropout, Gal & Ghahramani ICML 2016; BALD, Houlsby et al. 2011); each
batch draws its dropout masks from its own stream (``batch_seed``). Seeded, so repeated calls agree,
and the global torch RNG is left untouched; one batch computed alone (``infer_batch``, e.g. on a Ray
actor) equals that batch of a whole call.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from learner.metrics import evaluate_retrieval
from learner.model import CrossModalModel
from learner.outputs import InferenceOutputs


@dataclass(frozen=True)
class InferenceConfig:
    """How many samples ``infer`` draws for selection, and its batch size.

    mc_samples:      Gaussian samples z ~ N(mu, sigma^2) per modality (K >= 0, 8): the MC
                     entropies and mutual information of the embeddings (ASCMR §3, PCME §3.2).
    dropout_samples: MC-dropout passes (K' >= 0, 10), used only by BALD (Houlsby et al. 2011);
                     callers pass 0 for the other strategies, which is ``infer``'s default.
    batch_size:      rows per forward pass (>= 1, 1024).
    workers:         batches inferred at once on threads with one torch thread each (>= 1, 2: one per
                     core here) by the streamed selection path (``iter_infer(workers=...)``); the
                     outputs do not depend on it.
    """

    mc_samples: int = 8
    dropout_samples: int = 10
    batch_size: int = 1024
    workers: int = 2

    def __post_init__(self) -> None:
        for name in ("mc_samples", "dropout_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"InferenceConfig.{name}: expected >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"InferenceConfig.batch_size: expected >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise ValueError(f"InferenceConfig.workers: expected >= 1, got {self.workers}")


_DEFAULTS = InferenceConfig()
NOISE_STREAM = 2**62  # the batch_seed stream of the embedding draws: no batch index reaches it
T = TypeVar("T")


def _set_dropout(model: nn.Module, active: bool) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train(active)


def iter_infer(
    model: CrossModalModel,
    image_features: np.ndarray,
    text_features: np.ndarray,
    *,
    mc_samples: int = _DEFAULTS.mc_samples,
    dropout_samples: int = 0,
    batch_size: int = _DEFAULTS.batch_size,
    seed: int = 0,
    workers: int = 1,
    then: Callable[[InferenceOutputs], T] | None = None,
) -> Iterator[InferenceOutputs] | Iterator[T]:
    """Model outputs of N pairs, one batch of ``batch_size`` rows at a time, in row order.

    image_features (N, Di), text_features (N, Dt): anything with ``shape`` whose row slices are float
    arrays - a memory-mapped matrix or a row view of one (``FeatureRows``) - so only one batch of
    features and outputs is in memory at a time. Every batch is :func:`infer_batch` of its rows (the
    embedding draws are the call's, the dropout masks batch b's own, ``batch_seed(seed, b)``), so the
    batches equal the rows of :func:`infer` and any one batch can be computed on its own; the global
    torch RNG is left untouched. ``then``: a function applied to each batch's outputs on the thread that
    inferred it (e.g. scoring them), whose results are yielded instead, in row order.
    ``workers`` > 1 computes that many batches at once on threads, torch and BLAS (``threadpoolctl``)
    at one thread for the duration (restored afterwards), at most ``2 * workers`` batches in flight;
    the same outputs. It needs ``dropout_samples = 0`` (dropout draws from torch's global RNG).
    """
    h = model.hparams
    if len(image_features.shape) != 2 or image_features.shape[1] != h["image_dim"]:
        raise ValueError(f"image_features: expected (N, {h['image_dim']}), got {image_features.shape}")
    n = image_features.shape[0]
    if tuple(text_features.shape) != (n, h["text_dim"]):
        raise ValueError(f"text_features: expected ({n}, {h['text_dim']}), got {text_features.shape}")
    InferenceConfig(mc_samples=mc_samples, dropout_samples=dropout_samples, batch_size=batch_size,
                    workers=workers)   # validates
    if workers > 1 and dropout_samples:
        raise ValueError("iter_infer: workers > 1 needs dropout_samples = 0 (dropout uses torch's global RNG)")

    def batch(b: int) -> InferenceOutputs | T:
        rows = slice(b * batch_size, (b + 1) * batch_size)
        outputs = infer_batch(model, image_features[rows], text_features[rows], mc_samples=mc_samples,
                              dropout_samples=dropout_samples, seed=seed, batch_index=b)
        return outputs if then is None else then(outputs)

    n_batches = -(-n // batch_size)
    was_training = model.training
    model.eval()
    try:
        if workers == 1:
            for b in range(n_batches):
                yield batch(b)
            return
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with (threadpool_limits(limits=1, user_api="blas"),
                  ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pairlab-infer") as pool):
                pending: deque[Future[InferenceOutputs | T]] = deque()
                for b in range(n_batches):
                    pending.append(pool.submit(batch, b))
                    if len(pending) >= 2 * workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
        finally:
            torch.set_num_threads(torch_threads)
    finally:
        model.train(was_training)


def batch_seed(seed: int, batch_index: int) -> int:
    """The torch seed of batch ``batch_index`` of a call seeded ``seed`` (numpy ``SeedSequence`` of both,
    so the streams of neighbouring seeds and batches do not overlap)."""
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def infer_batch(model: CrossModalModel, image_rows: np.ndarray, text_rows: np.ndarray, *, mc_samples: int,
                dropout_samples: int = 0, seed: int = 0, batch_index: int = 0) -> InferenceOutputs:
    """Outputs of one batch: image_rows (B, Di), text_rows (B, Dt) -> B rows of outputs, equal to batch
    ``batch_index`` of :func:`iter_infer` with the same ``seed``. ``model`` must be in eval mode. The
    embedding samples use the call's common draws (``embedding_noise``, from ``seed`` alone) through a
    generator of their own, so batches can run on threads at once; dropout, which draws from torch's
    global RNG, runs inside ``fork_rng`` seeded ``batch_seed(seed, batch_index)``, so the global torch
    RNG is left untouched."""
    xv = torch.from_numpy(np.ascontiguousarray(image_rows, dtype=np.float32))    # (B, Di)
    xt = torch.from_numpy(np.ascontiguousarray(text_rows, dtype=np.float32))     # (B, Dt)
    noise = embedding_noise(mc_samples, model.hparams["dim"], seed)
    with torch.no_grad(), torch.random.fork_rng(devices=[]) if dropout_samples else nullcontext():
        if dropout_samples:
            torch.manual_seed(batch_seed(seed, batch_index))
        return _infer_batch(model, xv, xt, dropout_samples, noise)


def embedding_noise(mc_samples: int, dim: int, seed: int) -> dict[str, torch.Tensor]:
    """The call's common draws eps (K, d) for the embedding samples, one per modality ("image", "text"),
    from a torch generator seeded ``batch_seed(seed, NOISE_STREAM)`` (a stream no batch uses)."""
    generator = torch.Generator().manual_seed(batch_seed(seed, NOISE_STREAM))
    return {m: torch.randn(mc_samples, dim, generator=generator) for m in ("image", "text")}


def _infer_batch(model: CrossModalModel, xv: torch.Tensor, xt: torch.Tensor, dropout_samples: int,
                 noise: dict[str, torch.Tensor]) -> InferenceOutputs:
    out = model(xv, xt)
    arrays = {"mu_image": out.mu_image, "mu_text": out.mu_text,                     # (B, d)
              "var_image": out.logvar_image.exp(), "var_text": out.logvar_text.exp(),
              "probs_image": out.logits_image.sigmoid(), "probs_text": out.logits_text.sigmoid()}   # (B, C)
    for m in ("image", "text"):
        logits = model.classify_samples(getattr(out, f"logits_{m}"), getattr(out, f"logvar_{m}"), noise[m])
        arrays[f"mc_probs_{m}"] = logits.sigmoid_()                                    # (B, K, C)
    if dropout_samples:
        _set_dropout(model, True)
        runs = []
        for _ in range(dropout_samples):
            o = model(xv, xt)
            runs.append(0.5 * (o.logits_image.sigmoid() + o.logits_text.sigmoid()))   # (B, C)
        _set_dropout(model, False)
        arrays["dropout_probs"] = torch.stack(runs, dim=1)                              # (B, K', C)
    return InferenceOutputs(**{k: v.numpy().astype(np.float32, copy=False) for k, v in arrays.items()},
                            match_a=float(model.match_a.detach()), match_b=float(model.match_b.detach()))


def infer(
    model: CrossModalModel,
    image_features: np.ndarray,
    text_features: np.ndarray,
    *,
    mc_samples: int = _DEFAULTS.mc_samples,
    dropout_samples: int = 0,
    batch_size: int = _DEFAULTS.batch_size,
    seed: int = 0,
) -> InferenceOutputs:
    """Model outputs for N pairs, all rows at once (the batches of :func:`iter_infer`, concatenated).

    image_features: (N, Di), text_features: (N, Dt), float32 (or row views, see ``iter_infer``);
    mc_samples, dropout_samples, batch_size: as in :class:`InferenceConfig` (dropout_samples 0
    gives ``dropout_probs=None``); seed for the sampling and dropout.
    """
    batches = list(iter_infer(model, image_features, text_features, mc_samples=mc_samples,
                              dropout_samples=dropout_samples, batch_size=batch_size, seed=seed))
    if batches:
        return concatenate_outputs(batches)
    h = model.hparams
    d, c = h["dim"], h["num_classes"]
    empty = {k: np.zeros((0, d), np.float32) for k in ("mu_image", "mu_text", "var_image", "var_text")}
    return InferenceOutputs(**empty, probs_image=np.zeros((0, c), np.float32), probs_text=np.zeros((0, c), np.float32),
                            mc_probs_image=np.zeros((0, mc_samples, c), np.float32),
                            mc_probs_text=np.zeros((0, mc_samples, c), np.float32),
                            match_a=float(model.match_a.detach()), match_b=float(model.match_b.detach()),
                            dropout_probs=np.zeros((0, dropout_samples, c), np.float32) if dropout_samples else None)


def concatenate_outputs(batches: list[InferenceOutputs]) -> InferenceOutputs:
    """The rows of several batches of outputs as one (same model, hence same match_a, match_b)."""
    first = batches[0]
    names = ("mu_image", "mu_text", "var_image", "var_text", "probs_image", "probs_text",
             "mc_probs_image", "mc_probs_text")
    arrays = {k: np.concatenate([getattr(b, k) for b in batches]) for k in names}
    dropout = None if first.dropout_probs is None else np.concatenate([b.dropout_probs for b in batches])
    return InferenceOutputs(**arrays, match_a=first.match_a, match_b=first.match_b, dropout_probs=dropout)


def evaluate_model(model: CrossModalModel, image_features: np.ndarray, text_features: np.ndarray,
                   labels: np.ndarray) -> dict[str, float]:
    """Retrieval metrics (``learner.metrics.evaluate_retrieval``) of the model's means on one split:
    image (N, Di), text (N, Dt), labels (N, C); query set and gallery are both that split."""
    out = infer(model, image_features, text_features, mc_samples=0)
    return {k: float(v) for k, v in evaluate_retrieval(out.mu_image, out.mu_text, labels).items()}
