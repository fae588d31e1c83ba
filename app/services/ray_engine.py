"""The Ray engine: encoding and pool scoring fanned out over Ray actors (DESIGN §9; ``pip install 'pairlab[ray]'``).

Ray Data ``map_batches`` (Moritz et al., *Ray: A Distributed Framework for Emerging AI Applications*,
OSDI 2018) runs a pool of actors. Each actor loads its encoder or model once, in its constructor, and
applies to every batch the same pure function as the local path: ``Encoder.embed_images`` /
``embed_texts`` for encoding, ``learner.inference.infer_batch`` followed by
``learner.selection.streaming.batch_pool_scores`` (or ``fused_means``) for scoring. Only work items
travel: file paths, texts, batch numbers. Each actor reads its feature rows from the workspace's
memory-mapped files, so on a cluster the workspace and the images must sit on a shared file system.
Results come back in any order with their positions and are put in place. The callers
(``app.services.encode``, ``app.services.select``) write the store exactly as they do locally.

Inference batch b is ``infer_batch`` of the same rows and seed on either engine, so a pool scored on Ray equals the
pool scored locally. Each actor takes one CPU and runs torch on one thread.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from storage.errors import PairlabError

logger = logging.getLogger(__name__)

DEFAULT_LOCAL_WORKERS = 2  # a throw-away local Ray gets this many CPUs (one actor each) unless told otherwise
PROBE_SECONDS = 5.0  # how long --address may take to accept a connection before it counts as unreachable
#: The runtime-only encoder settings that make one actor use one core (``learner.encoders`` config fields).
ONE_CORE = {"decode_workers": 0, "inference_workers": 1}
_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
_ITEMS_PER_BLOCK = 64  # work items per Ray Data input block (at least 4 blocks per actor): every actor stays busy


@dataclass(frozen=True)
class RayEngine:
    """Where the work runs. address: a running Ray cluster (``ray.init(address=...)``, e.g.
    ``10.0.0.5:6379`` or ``ray://head:10001``); None starts a throw-away local Ray and shuts it down
    afterwards. workers: actors (one CPU each); default the cluster's CPUs, or 2 for a local Ray."""

    address: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise PairlabError(f"--workers: must be >= 1, got {self.workers}")
        if self.address is not None and not self.address.strip():
            raise PairlabError("--address: empty; give host:port of a Ray cluster, or leave it out for a local Ray")


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the 'data' extra of ray
    except ImportError:
        raise PairlabError("--engine ray: Ray is not installed; pip install 'pairlab[ray]'") from None
    return ray


def _probe(address: str) -> None:
    """Fail fast with one line when nothing accepts connections at ``host:port`` (``ray.init`` would retry
    for minutes). ``auto`` and addresses without a port are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        raise PairlabError(f"--address {address}: no Ray cluster reachable ({exc.strerror or exc})") from None


@contextmanager
def ray_session(engine: RayEngine) -> Iterator[int]:
    """A connected Ray for the duration of the block; yields the number of actors to start.

    An ``engine.address`` that accepts no connection is an error first. Reuses a Ray the process already
    has (``ray.is_initialized()``, e.g. a test's session) and leaves it running; otherwise connects to
    ``engine.address`` or starts a local Ray with ``workers`` CPUs, and shuts it down on exit."""
    ray = _import_ray()
    if engine.address is not None:
        _probe(engine.address)
    if ray.is_initialized():
        yield engine.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        return
    runtime_env = {"env_vars": _THREAD_ENV}
    if engine.address is not None:
        try:
            ray.init(address=engine.address, runtime_env=runtime_env, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise PairlabError(f"--address {engine.address}: cannot connect to Ray ({exc})") from None
        workers = engine.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    else:
        workers = engine.workers or DEFAULT_LOCAL_WORKERS
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logger.info("Ray: %d workers on %s", workers, engine.address or "a local Ray")
    try:
        yield workers
    finally:
        ray.shutdown()


def _pin_threads() -> None:
    """One torch thread per actor: each actor holds one CPU."""
    import torch

    torch.set_num_threads(1)


def _run(columns: dict[str, Sequence], actor: type, kwargs: dict, workers: int, *, items_per_call: int = 1):
    """``map_batches`` of ``actor(**kwargs)`` over the work items ``columns`` (equal-length columns),
    ``items_per_call`` items per call, on up to ``workers`` actors; yields the result batches (dicts of
    numpy arrays) in the order they finish. An actor's error is re-raised as itself."""
    ray = _import_ray()
    n = len(next(iter(columns.values())))
    blocks = max(1, min(n, max(4 * workers, -(-n // _ITEMS_PER_BLOCK))))
    dataset = ray.data.from_items([{k: v[i] for k, v in columns.items()} for i in range(n)],
                                  override_num_blocks=blocks)
    out = dataset.map_batches(actor, fn_constructor_kwargs=kwargs, batch_size=items_per_call,
                              compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)), num_cpus=1,
                              batch_format="numpy")
    try:
        yield from out.iter_batches(batch_size=None, batch_format="numpy")
    except Exception as exc:  # Ray wraps the actor's exception; the user should see the original one line
        cause = exc
        while cause.__cause__ is not None and type(cause).__module__.startswith("ray"):
            cause = cause.__cause__
        if cause is exc:
            raise
        raise cause from None


# --------------------------------------------------------------------------- encoding


def one_core(encoder):
    """The encoder with its runtime-only thread settings (``ONE_CORE``) at one core where it has them."""
    fields = {f.name for f in dataclasses.fields(encoder.config)}
    changes = {k: v for k, v in ONE_CORE.items() if k in fields}
    return type(encoder)(dataclasses.replace(encoder.config, **changes)) if changes else encoder


class EmbedActor:
    """Holds one encoder (model loaded once); ``{"position", "item"}`` batches -> ``{"position", "features"}``."""

    def __init__(self, encoder, modality: str) -> None:
        _pin_threads()
        self._embed = encoder.embed_images if modality == "image" else encoder.embed_texts

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [str(x) for x in batch["item"]]
        return {"position": batch["position"], "features": self._embed(items)}   # (B,), (B, D)


def ray_embedder(encoder, modality: str, workers: int, *, items_per_call: int = 32) -> Callable[..., np.ndarray]:
    """An ``embed(items, progress=None)`` for ``learner.encoders.encode_images`` / ``encode_texts`` that runs
    ``encoder.embed_images`` (``embed_texts``) on ``workers`` actors: ``(M,)`` paths or texts -> ``(M, D)``."""
    actor_encoder = one_core(encoder)

    def embed(items: Sequence[str], *, progress=None) -> np.ndarray:
        out = np.empty((len(items), encoder.dim), dtype=np.float32)   # (M, D)
        if not len(items):
            return out
        work = {"position": np.arange(len(items)), "item": [str(x) for x in items]}
        done = 0
        kwargs = {"encoder": actor_encoder, "modality": modality}
        for batch in _run(work, EmbedActor, kwargs, workers, items_per_call=items_per_call):
            out[batch["position"]] = batch["features"]
            done += len(batch["position"])
            if progress is not None:
                progress(done, len(items))
        return out

    return embed


# --------------------------------------------------------------------------- pool scoring


class ScoreActor:
    """Holds the model and the memory-mapped feature rows of one pass; ``{"batch"}`` work items -> the
    pool positions of each inference batch and its scores (``reduce="ascmr"``: the informativeness
    components and mu_z; ``"fused"``: mu_z only)."""

    def __init__(self, model_path: str, image: tuple[str, np.ndarray], text: tuple[str, np.ndarray], *,
                 reduce: str, mc_samples: int, batch_size: int, seed: int, match_samples: int,
                 noise: tuple[np.ndarray, np.ndarray] | None) -> None:
        from app.services.data import FeatureRows
        from learner.checkpoint import load_checkpoint

        _pin_threads()
        self.model = load_checkpoint(model_path)[0].eval()
        self.image, self.text = (FeatureRows(np.load(path, mmap_mode="r"), where) for path, where in (image, text))
        self.reduce, self.mc_samples, self.batch_size, self.seed = reduce, mc_samples, batch_size, seed
        self.match_samples, self.noise = match_samples, noise

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from learner.inference import infer_batch
        from learner.selection.scoring import COMPONENTS, fused_means
        from learner.selection.streaming import batch_pool_scores

        parts = []
        for b in batch["batch"].tolist():
            rows = slice(b * self.batch_size, (b + 1) * self.batch_size)
            outputs = infer_batch(self.model, self.image[rows], self.text[rows], mc_samples=self.mc_samples,
                                  seed=self.seed, batch_index=b)
            part = {"position": np.arange(rows.start, rows.start + outputs.n)}
            if self.reduce == "ascmr":
                scored = batch_pool_scores(outputs, match_samples=self.match_samples, noise=self.noise)
                part.update({name: scored.components[name] for name in COMPONENTS}, mu_z=scored.mu_z)
            else:
                part["mu_z"] = fused_means(outputs, np.arange(outputs.n))                  # (B, d)
            parts.append(part)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _score_work(n: int, batch_size: int) -> dict[str, np.ndarray]:
    """One work item per inference batch of ``n`` rows: its number b (rows b * batch_size ...)."""
    return {"batch": np.arange(-(-n // batch_size))}


def _feature_source(rows) -> tuple[str, np.ndarray]:
    """``(file, rows)`` of a ``FeatureRows`` view: what an actor needs to memory-map the same rows."""
    return os.fspath(rows.matrix.filename), np.asarray(rows.where)


def ray_pool_scores(workers: int, model_path: str, image, text, *, mc_samples: int, batch_size: int, seed: int,
                    match_samples: int, noise: tuple[np.ndarray, np.ndarray]):
    """``learner.selection.streaming.stream_pool_scores`` of the pool ``image``, ``text`` (``FeatureRows`` in
    pool order) on ``workers`` actors: the same ``PoolScores`` (components (n,), mu_z (n, d))."""
    from learner.selection.scoring import COMPONENTS, PoolScores
    from learner.selection.streaming import gather_pool_scores

    kwargs = {"model_path": model_path, "image": _feature_source(image), "text": _feature_source(text),
              "reduce": "ascmr", "mc_samples": mc_samples, "batch_size": batch_size, "seed": seed,
              "match_samples": match_samples, "noise": noise}
    parts = ((b["position"], PoolScores({name: b[name] for name in COMPONENTS}, b["mu_z"]))
             for b in _run(_score_work(len(image), batch_size), ScoreActor, kwargs, workers))
    return gather_pool_scores(parts, len(image))


def ray_fused_means(workers: int, model_path: str, image, text, *, batch_size: int) -> np.ndarray:
    """``stream_fused_means`` of ``iter_infer(..., mc_samples=0)`` on ``workers`` actors: mu_z (n, d)."""
    if len(image) == 0:
        return np.zeros((0, 0), np.float32)
    kwargs = {"model_path": model_path, "image": _feature_source(image), "text": _feature_source(text),
              "reduce": "fused", "mc_samples": 0, "batch_size": batch_size, "seed": 0, "match_samples": 0,
              "noise": None}
    out = None
    for b in _run(_score_work(len(image), batch_size), ScoreActor, kwargs, workers):
        if out is None:
            out = np.empty((len(image), b["mu_z"].shape[1]), dtype=np.float32)
        out[b["position"]] = b["mu_z"]
    return out
