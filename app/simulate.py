"""``pairlab simulate``: replay the active-learning loop with the dataset's labels as the oracle (DESIGN §6).

Every strategy sees the same seeds, initial labelled sets and training settings. Hyperparameters
come from the configs' defaults (chosen on validation splits carved from the pool, see
``docs/``); the test split is only ever evaluated, never used to choose anything. To tune,
``evaluate_on="validation"`` carves a validation split off the pool and evaluates there instead,
and named *variants* (a registry strategy with options, from a TOML file) run beside the
registry strategies. Strategy x seed runs are independent and can run in parallel processes.
"""
from __future__ import annotations

import logging
import multiprocessing
import time
import tomllib
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from learner.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, encode_images, encode_texts, get_encoder
from learner.encoders.tfidf import TfidfEncoder
from learner.inference import evaluate_model, infer
from learner.selection.strategies import STRATEGY_NAMES, get_strategy
from learner.training import TrainConfig, train_model
from storage.errors import InputError, PairlabError
from storage.importers import parse_source

log = logging.getLogger(__name__)

CARVED_TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.2
EVALUATION_SPLITS = ("test", "validation")


@dataclass(frozen=True)
class SimulationData:
    """image (N, Di) and text (N, Dt) features, labels (N, C) 0/1, split (N,) names, and groups (N,):
    the image reference of each pair, so a carved test split never shares an image with the pool."""

    name: str
    image: np.ndarray
    text: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    groups: np.ndarray
    encoders: dict[str, str]
    test_carved: bool = False


@dataclass(frozen=True)
class Variant:
    """A named configuration of a registry strategy: ``get_strategy(strategy, **options)``."""

    strategy: str
    options: Mapping[str, Any] = field(default_factory=dict)


def load_variants(path: Path) -> dict[str, Variant]:
    """Named strategy variants from a TOML file, one table each::

        [ascmr-intra]                   # the name to pass to --strategies
        strategy = "ascmr"              # a registry strategy
        weights = {match = 0.0, disagreement = 0.0}   # its options (AscmrConfig fields)

    Every variant is built once here, so a bad name or option fails before any training.
    """
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(str(path), None, "--variants", "file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(str(path), None, "--variants", f"not valid TOML: {exc}") from None
    variants = {}
    for name, table in raw.items():
        if not isinstance(table, dict) or not isinstance(table.get("strategy"), str):
            raise InputError(str(path), None, f"[{name}].strategy", "each variant is a table naming its strategy")
        if name in STRATEGY_NAMES:
            raise InputError(str(path), None, f"[{name}]", "a variant cannot take a registry strategy's name")
        options = {k: v for k, v in table.items() if k != "strategy"}
        try:
            get_strategy(table["strategy"], **options)
        except (TypeError, ValueError) as exc:
            raise InputError(str(path), None, f"[{name}]", str(exc)) from None
        variants[name] = Variant(table["strategy"], options)
    return variants


@dataclass(frozen=True)
class SimulationConfig:
    """initial and budget: a fraction of the pool when < 1, else a count of pairs.

    strategies:  registry names or names of ``variants``.
    mc_samples / dropout_samples: Monte-Carlo samples handed to the strategies (dropout only for BALD).
    warm_start:  each round's training starts from the previous round's model; off by default, since
                 on Wikipedia retraining from scratch gave a higher AULC for 6 of 7 strategies
                 (docs/benchmarks.md).
    evaluate_on: "test", or "validation" for tuning: a validation split (VALIDATION_FRACTION of the
                 pool's images, seeded by the first seed) is carved off the pool and evaluated
                 instead, so the test split is never read.
    jobs:        processes running the strategy x seed runs (each with one torch thread).
    """

    strategies: tuple[str, ...] = STRATEGY_NAMES
    initial: float = 0.01
    budget: float = 0.01
    rounds: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)
    train: TrainConfig = field(default_factory=TrainConfig)
    mc_samples: int = 8
    dropout_samples: int = 10
    warm_start: bool = False
    variants: Mapping[str, Variant] = field(default_factory=dict)
    evaluate_on: str = "test"
    jobs: int = 1

    def __post_init__(self) -> None:
        known = (*STRATEGY_NAMES, *self.variants)
        unknown = [s for s in self.strategies if s not in known]
        if unknown:
            raise PairlabError(f"--strategies: unknown {unknown[0]!r}; allowed: {', '.join(known)}")
        if not self.strategies:
            raise PairlabError("--strategies: give at least one")
        if len(set(self.strategies)) != len(self.strategies):
            raise PairlabError("--strategies: a name is repeated")
        if self.rounds < 1:
            raise PairlabError("--rounds: must be >= 1")
        if not self.seeds:
            raise PairlabError("--seeds: give at least one")
        for name in ("initial", "budget"):
            if getattr(self, name) <= 0:
                raise PairlabError(f"--{name}: must be > 0")
        if self.evaluate_on not in EVALUATION_SPLITS:
            raise PairlabError(f"--evaluate-on: {self.evaluate_on!r}; allowed: {', '.join(EVALUATION_SPLITS)}")
        if self.jobs < 1:
            raise PairlabError("--jobs: must be >= 1")

    def variant(self, name: str) -> Variant:
        """The strategy and options that ``name`` stands for."""
        return self.variants.get(name) or Variant(name)


def load_simulation_data(source: Path, fmt: str, *, cache_dir: Path, carve_seed: int,
                         image_encoder: str | None = None, text_encoder: str | None = None) -> SimulationData:
    """Parse a labelled dataset; use its precomputed features, or encode its images and texts once
    (cached by content hash in ``cache_dir``). TF-IDF is fitted on the pool's texts only."""
    parsed = parse_source(source, fmt, allow_absolute=True)
    if not parsed.rows:
        raise InputError(str(source), None, "rows", "no pairs found")
    unlabelled = next((r for r in parsed.rows if r.labels is None), None)
    if unlabelled is not None:
        raise unlabelled.error(unlabelled.labels_field, "simulate needs a label set for every pair (the oracle)")
    vocabulary = list(dict.fromkeys([*parsed.vocabulary, *(name for r in parsed.rows for name in r.labels)]))
    column = {name: j for j, name in enumerate(vocabulary)}
    labels = np.zeros((len(parsed.rows), len(vocabulary)), dtype=np.float32)
    for i, row in enumerate(parsed.rows):
        labels[i, [column[name] for name in row.labels]] = 1.0
    split = np.array([r.split for r in parsed.rows], dtype=object)
    groups = np.array([r.image_ref for r in parsed.rows], dtype=object)
    carved = not np.any(split == "test")
    if carved:  # carved here, before any encoder is fitted, so TF-IDF never sees a test text
        pool, test = split_pool_and_test(split, groups, carve_seed)
        split = split.copy()
        split[test] = "test"
    if "image" in parsed.features and "text" in parsed.features and not (image_encoder or text_encoder):
        image, text = parsed.features["image"], parsed.features["text"]
        encoders = {"image": "precomputed", "text": "precomputed"}
    else:
        missing = next((r for r in parsed.rows if r.image is None), None)
        if missing is not None:
            raise missing.error(missing.image_field, "no image file to encode (feature-only pair)")
        image_name, text_name = image_encoder or DEFAULT_IMAGE_ENCODER, text_encoder or DEFAULT_TEXT_ENCODER
        image = encode_images(get_encoder(image_name), [r.image for r in parsed.rows], cache_dir)
        texts = [r.text for r in parsed.rows]
        encoder = get_encoder(text_name)
        if isinstance(encoder, TfidfEncoder):
            encoder.fit([t for t, s in zip(texts, split) if s in ("train", "pool")] or texts)
        text = encode_texts(encoder, texts, cache_dir)
        encoders = {"image": image_name, "text": text_name}
    return SimulationData(source.name, np.asarray(image, dtype=np.float32), np.asarray(text, dtype=np.float32),
                          labels, split, groups, encoders, carved)


def count(amount: float, pool_size: int) -> int:
    """A fraction (< 1) of the pool, at least 1, or an absolute count."""
    return max(1, round(amount * pool_size)) if amount < 1 else int(amount)


def carve_by_group(rows: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (kept, carved): ``fraction`` of their distinct groups (at least one), drawn
    with ``seed``, go to the carved side with all their rows, so no image is on both sides."""
    names = np.unique(groups[rows])
    carved = np.random.default_rng(seed).permutation(names)[:max(1, round(fraction * len(names)))]
    in_carved = np.isin(groups[rows], carved)
    return rows[~in_carved], rows[in_carved]


def split_pool_and_test(split: np.ndarray, groups: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool = train/pool pairs, test = test pairs. Without a test split, carve one off with ``seed``
    by whole groups (all captions of an image go to the same side)."""
    pool = np.flatnonzero(np.isin(split, ("train", "pool")))
    test = np.flatnonzero(split == "test")
    if len(test):
        return pool, test
    return carve_by_group(pool, groups, CARVED_TEST_FRACTION, seed)


def _evaluate(model, data: SimulationData, test: np.ndarray) -> dict[str, float]:
    metrics = evaluate_model(model, data.image[test], data.text[test], data.labels[test])
    return {k: metrics[k] for k in ("i2t", "t2i", "avg")}


def _train(data: SimulationData, pool: np.ndarray, labelled_mask: np.ndarray, config: TrainConfig, init):
    start = time.perf_counter()
    result = train_model(data.image[pool], data.text[pool], data.labels[pool], labelled_mask, config,
                         init_model=init)
    return result.model, time.perf_counter() - start


def run_strategy(data: SimulationData, pool: np.ndarray, test: np.ndarray, initial: np.ndarray, strategy: str,
                 config: SimulationConfig, seed: int, progress: Callable[[str], None] | None = None) -> list[dict]:
    """One strategy (or variant), one seed: R+1 evaluation points (the initial set, then after each batch)."""
    labelled = np.zeros(len(pool), dtype=bool)
    labelled[initial] = True
    budget = count(config.budget, len(pool))
    variant = config.variant(strategy)
    query = get_strategy(variant.strategy, **variant.options)
    train_config = replace(config.train, seed=seed)
    model, rounds, select_seconds = None, [], 0.0
    for r in range(config.rounds + 1):
        model, train_seconds = _train(data, pool, labelled, train_config,
                                      model if config.warm_start else None)
        metrics = _evaluate(model, data, test)
        rounds.append({"labelled": int(labelled.sum()), "fraction": float(labelled.mean()), **metrics,
                       "select_seconds": round(select_seconds, 4), "train_seconds": round(train_seconds, 4)})
        if progress:
            progress(f"{strategy} seed {seed} round {r}: {int(labelled.sum())} labelled, avg mAP {metrics['avg']:.4f}")
        if r == config.rounds:
            break
        unlabelled = np.flatnonzero(~labelled)
        if len(unlabelled) < budget:
            break
        start = time.perf_counter()
        outputs = infer(model, data.image[pool], data.text[pool], mc_samples=config.mc_samples,
                        dropout_samples=config.dropout_samples if variant.strategy == "bald" else 0, seed=seed)
        chosen = query.query(outputs, unlabelled, np.flatnonzero(labelled), budget, seed=seed).indices
        select_seconds = time.perf_counter() - start
        labelled[chosen] = True
    return rounds


@dataclass(frozen=True, eq=False)
class _Run:
    """One unit of work: the full-supervision reference of a seed (strategy None) or one strategy's loop."""

    seed: int
    strategy: str | None
    initial: np.ndarray


def _execute(run: _Run, data: SimulationData, pool: np.ndarray, evaluation: np.ndarray, config: SimulationConfig,
             progress: Callable[[str], None] | None = None) -> dict[str, Any] | list[dict]:
    if run.strategy is None:
        model, _ = _train(data, pool, np.ones(len(pool), dtype=bool), replace(config.train, seed=run.seed), None)
        return _evaluate(model, data, evaluation)
    return run_strategy(data, pool, evaluation, run.initial, run.strategy, config, run.seed, progress)


_WORKER: dict[str, Any] = {}


def _init_worker(data: SimulationData, pool: np.ndarray, evaluation: np.ndarray, config: SimulationConfig) -> None:
    """A worker process: one torch thread and one BLAS thread, so ``jobs`` processes share the cores."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    _WORKER.update(data=data, pool=pool, evaluation=evaluation, config=config,
                   limits=threadpool_limits(limits=1))


def _execute_in_worker(run: _Run) -> dict[str, Any] | list[dict]:
    return _execute(run, _WORKER["data"], _WORKER["pool"], _WORKER["evaluation"], _WORKER["config"])


def _describe(run: _Run, result: dict[str, Any] | list[dict]) -> str:
    if run.strategy is None:
        return f"seed {run.seed}: full supervision avg mAP {result['avg']:.4f}"
    curve = ", ".join(f"{r['avg']:.4f}" for r in result)
    return f"{run.strategy} seed {run.seed}: avg mAP per round {curve}"


def run_simulation(data: SimulationData, config: SimulationConfig,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The whole protocol; returns the ``results.json`` document (DESIGN §6 schema plus ``protocol``).

    With ``config.evaluate_on == "validation"`` the curves are measured on a validation split carved
    from the pool and ``test_size`` is that split's size; the test split is not read.
    """
    pool, test = split_pool_and_test(data.split, data.groups, config.seeds[0])
    notes = []
    if config.evaluate_on == "validation":
        pool, evaluation = carve_by_group(pool, data.groups, VALIDATION_FRACTION, config.seeds[0])
        notes.append(f"tuning run: evaluated on a validation split of {len(evaluation)} pool pairs "
                     f"({VALIDATION_FRACTION:.0%} of the pool's images, seed {config.seeds[0]}); "
                     "the test split was not used")
    else:
        evaluation = test
    if len(pool) < 2 or len(evaluation) < 2:
        raise PairlabError(f"{data.name}: need at least 2 pool and 2 {config.evaluate_on} pairs, "
                           f"got {len(pool)} and {len(evaluation)}")
    n_initial = count(config.initial, len(pool))
    if n_initial + count(config.budget, len(pool)) * config.rounds > len(pool):
        raise PairlabError(f"--initial/--budget/--rounds: {n_initial} + {config.rounds} x "
                           f"{count(config.budget, len(pool))} pairs exceed the pool of {len(pool)}")
    if len(config.seeds) < 3:
        notes.append(f"only {len(config.seeds)} seed(s): DESIGN §6 asks for at least 3 for reported figures")
    if data.test_carved:
        notes.append(f"no test split in the data: {len(test)} pairs ({CARVED_TEST_FRACTION:.0%} of the images, "
                     f"all captions of each) were carved off the pool with seed {config.seeds[0]}")
    runs = []
    for seed in config.seeds:
        initial = np.random.default_rng(seed).choice(len(pool), size=n_initial, replace=False)
        runs += [_Run(seed, None, initial), *(_Run(seed, name, initial) for name in config.strategies)]
    results: dict[_Run, Any] = {}
    if config.jobs == 1:
        for run in runs:
            results[run] = _execute(run, data, pool, evaluation, config, progress)
            if progress:
                progress(f"[{len(results)}/{len(runs)}] {_describe(run, results[run])}")
    else:
        with ProcessPoolExecutor(config.jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(data, pool, evaluation, config)) as executor:
            futures = {executor.submit(_execute_in_worker, run): run for run in runs}
            for future in as_completed(futures):
                run = futures[future]
                results[run] = future.result()
                if progress:
                    progress(f"[{len(results)}/{len(runs)}] {_describe(run, results[run])}")
    full = [results[run] for run in runs if run.strategy is None]
    return {
        "dataset": data.name,
        "pool_size": int(len(pool)),
        "test_size": int(len(evaluation)),
        "seeds": list(config.seeds),
        "encoders": dict(data.encoders),
        "full_supervision": {k: float(np.mean([f[k] for f in full])) for k in ("i2t", "t2i", "avg")},
        "strategies": {name: [{"seed": run.seed, "rounds": results[run]} for run in runs if run.strategy == name]
                       for name in config.strategies},
        "protocol": {"warm_start": config.warm_start, "evaluated_on": config.evaluate_on, "initial": n_initial,
                     "budget": count(config.budget, len(pool)), "rounds": config.rounds,
                     "initial_set": "uniformly random per seed, shared by all strategies",
                     "variants": {name: {"strategy": v.strategy, **v.options} for name, v in config.variants.items()
                                  if name in config.strategies},
                     "full_supervision_per_seed": full, "test_carved": data.test_carved, "notes": notes},
    }
