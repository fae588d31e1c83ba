"""``pairlab simulate``: replay the active-learning loop with the dataset's labels as the oracle (DESIGN §6).

Every strategy sees the same seeds, initial labelled sets and training settings. Hyperparameters
come from the configs' defaults (chosen on validation splits carved from the pool, see
``docs/``); the test split is only ever evaluated, never used to choose anything. To tune,
``evaluate_on="validation"`` carves a validation split off the pool and evaluates there instead,
and named *variants* (a registry strategy with options, from a TOML file) run beside the
registry strategies. Strategy x seed runs are independent and can run in parallel processes.

Validation protocol: per seed, one fixed slice of the initial labelled set (``VALIDATION_SHARE``
of it, drawn with the seed) is held out for early stopping by every strategy in every round and by
the full-supervision reference. It is an unbiased sample of the pool (the initial set is uniformly
random), so model selection never depends on which pairs a strategy picked; its labels are part of
the initial set's, so they count in the budget.
"""
from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from app.bench.data import CARVED_TEST_FRACTION, VALIDATION_FRACTION, SimulationData, carve_by_group, count, \
    split_pool_and_test
from app.bench.variants import Variant
from learner.inference import InferenceConfig, evaluate_model, infer
from learner.metrics import competence
from learner.selection.strategies import STRATEGY_NAMES, get_strategy
from learner.training import TrainConfig, train_model
from storage.errors import PairlabError

log = logging.getLogger(__name__)

EVALUATION_SPLITS = ("test", "validation")
VALIDATION_SHARE = 0.2     # of the initial labelled set, held out for early stopping (the learner's val_fraction)
VALIDATION_STREAM = 2      # a second seed word: the slice does not share draws with the initial set


def validation_slice(initial: np.ndarray, seed: int, share: float = VALIDATION_SHARE) -> np.ndarray:
    """The fixed validation rows of a seed: ``share`` of the initial rows (at least 2, none when the
    initial set has fewer than 4), drawn with ``seed``; sorted pool positions."""
    size = max(2, round(share * len(initial))) if len(initial) >= 4 else 0
    rng = np.random.default_rng([seed, VALIDATION_STREAM])
    return np.sort(rng.choice(initial, size=size, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class SimulationConfig:
    """initial and budget: a fraction of the pool when < 1, else a count of pairs.

    strategies:  registry names or names of ``variants``.
    train:       training settings of every run; ``train.warm_start`` starts each round's training
                 from the previous round's model (off by default: on Wikipedia retraining from
                 scratch gave a higher AULC for 6 of 7 strategies, docs/benchmarks.md).
    inference:   Monte-Carlo samples handed to the strategies (dropout passes only for BALD).
    evaluate_on: "test", or "validation" for tuning: a validation split (VALIDATION_FRACTION of the
                 pool's images, seeded by the first seed) is carved off the pool and evaluated
                 instead, so the test split is never read.
    jobs:        processes running the strategy x seed runs.
    threads:     torch and BLAS threads of each process running runs (1: ``jobs`` processes share
                 the cores without oversubscribing them, also when jobs is 1).
    """

    strategies: tuple[str, ...] = STRATEGY_NAMES
    initial: float = 0.01
    budget: float = 0.01
    rounds: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)
    train: TrainConfig = field(default_factory=TrainConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    variants: Mapping[str, Variant] = field(default_factory=dict)
    evaluate_on: str = "test"
    jobs: int = 1
    threads: int = 1

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
        if self.threads < 1:
            raise PairlabError("--threads: must be >= 1")

    def variant(self, name: str) -> Variant:
        """The strategy and options that ``name`` stands for."""
        return self.variants.get(name) or Variant(name)


def _evaluate(model, data: SimulationData, test: np.ndarray) -> dict[str, float]:
    metrics = evaluate_model(model, data.image[test], data.text[test], data.labels[test])
    return {k: metrics[k] for k in ("i2t", "t2i", "avg")}


def _competence(outputs, labels: np.ndarray, rows: np.ndarray) -> float | None:
    """``learner.metrics.competence`` of the joint class probabilities on the validation rows."""
    joint = (outputs.probs_image[rows] + outputs.probs_text[rows]) / 2
    return competence(joint, labels[rows])


def _train(data: SimulationData, pool: np.ndarray, labelled_mask: np.ndarray, config: TrainConfig, init,
           validation: np.ndarray):
    """-> (model, seconds, the validation rows it held out)."""
    start = time.perf_counter()
    result = train_model(data.image[pool], data.text[pool], data.labels[pool], labelled_mask, config,
                         init_model=init, validation=validation)
    return result.model, time.perf_counter() - start, result.val_rows


_ROUND_ZERO: dict[tuple, tuple] = {}


def _initial_model(data: SimulationData, pool: np.ndarray, labelled: np.ndarray, config: TrainConfig,
                   validation: np.ndarray):
    """Round 0's training, shared by the strategies of a seed in this process: it sees only the
    initial set, the seed and the settings, which all strategies share, and training is
    deterministic for a seed, so each strategy would train the very same model. ``train_seconds``
    is that one training's time."""
    key = (id(data), pool.tobytes(), labelled.tobytes(), validation.tobytes(), config)
    if key not in _ROUND_ZERO:
        _ROUND_ZERO[key] = _train(data, pool, labelled, config, None, validation)
    return _ROUND_ZERO[key]


def run_strategy(data: SimulationData, pool: np.ndarray, test: np.ndarray, initial: np.ndarray, strategy: str,
                 config: SimulationConfig, seed: int, progress: Callable[[str], None] | None = None,
                 validation: np.ndarray | None = None) -> dict[str, Any]:
    """One strategy (or variant), one seed: R+1 evaluation points (the initial set, then after each batch).

    validation: the seed's fixed validation rows (pool positions inside ``initial``; None: the
    seed's ``validation_slice``). Returns {"rounds": [...], "validation_rows": the distinct sets of
    rows the trainings held out, one list per set (one set when the protocol holds)}.
    """
    validation = validation_slice(initial, seed) if validation is None else validation
    labelled = np.zeros(len(pool), dtype=bool)
    labelled[initial] = True
    budget = count(config.budget, len(pool))
    variant = config.variant(strategy)
    query = get_strategy(variant.strategy, **variant.options)
    train_config = replace(config.train, seed=seed)
    model, rounds, select_seconds, held_out = None, [], 0.0, []
    for r in range(config.rounds + 1):
        if r == 0:
            model, train_seconds, val_rows = _initial_model(data, pool, labelled, train_config, validation)
        else:
            model, train_seconds, val_rows = _train(data, pool, labelled, train_config,
                                                    model if config.train.warm_start else None, validation)
        if list(val_rows) not in held_out:
            held_out.append(list(val_rows))
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
        outputs = infer(model, data.image[pool], data.text[pool], mc_samples=config.inference.mc_samples,
                        dropout_samples=config.inference.dropout_samples if variant.strategy == "bald" else 0,
                        batch_size=config.inference.batch_size, seed=seed)
        outputs = replace(outputs, competence=_competence(outputs, data.labels[pool], np.asarray(val_rows)))
        selection = query.query(outputs, unlabelled, np.flatnonzero(labelled), budget, seed=seed)
        chosen = selection.indices
        select_seconds = time.perf_counter() - start
        rounds[-1]["competence"] = outputs.competence
        if selection.explanation and "mixing_weight" in selection.explanation[0]:
            rounds[-1]["mixing_weight"] = selection.explanation[0]["mixing_weight"]
        labelled[chosen] = True
    return {"rounds": rounds, "validation_rows": held_out}


@dataclass(frozen=True, eq=False)
class _Run:
    """One unit of work: the full-supervision reference of a seed (strategy None) or one strategy's loop."""

    seed: int
    strategy: str | None
    initial: np.ndarray
    validation: np.ndarray


def _execute(run: _Run, data: SimulationData, pool: np.ndarray, evaluation: np.ndarray, config: SimulationConfig,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    if run.strategy is None:  # every pool label, the seed's validation rows held out for early stopping
        model, seconds, val_rows = _train(data, pool, np.ones(len(pool), dtype=bool),
                                          replace(config.train, seed=run.seed), None, run.validation)
        return {**_evaluate(model, data, evaluation), "trained_on": int(len(pool) - len(val_rows)),
                "validation_rows": [list(val_rows)], "train_seconds": round(seconds, 4)}
    return run_strategy(data, pool, evaluation, run.initial, run.strategy, config, run.seed, progress,
                        run.validation)


_WORKER: dict[str, Any] = {}


def _pin_threads(threads: int):
    """torch and BLAS/OpenMP threads of this process; returns the threadpoolctl limiter (keep it alive)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    return threadpool_limits(limits=threads)


def _init_worker(data: SimulationData, pool: np.ndarray, evaluation: np.ndarray, config: SimulationConfig) -> None:
    """A worker process: ``config.threads`` torch and BLAS threads, so ``jobs`` processes share the cores."""
    _WORKER.update(data=data, pool=pool, evaluation=evaluation, config=config, limits=_pin_threads(config.threads))


def _execute_in_worker(run: _Run) -> dict[str, Any]:
    return _execute(run, _WORKER["data"], _WORKER["pool"], _WORKER["evaluation"], _WORKER["config"])


def _describe(run: _Run, result: dict[str, Any]) -> str:
    if run.strategy is None:
        return f"seed {run.seed}: full supervision avg mAP {result['avg']:.4f}"
    curve = ", ".join(f"{r['avg']:.4f}" for r in result["rounds"])
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
        validation = validation_slice(initial, seed)
        runs += [_Run(seed, None, initial, validation),
                 *(_Run(seed, name, initial, validation) for name in config.strategies)]
    results: dict[_Run, Any] = {}
    if config.jobs == 1:
        with _pin_threads(config.threads):
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
    _ROUND_ZERO.clear()
    full = [results[run] for run in runs if run.strategy is None]
    return {
        "dataset": data.name,
        "pool_size": int(len(pool)),
        "test_size": int(len(evaluation)),
        "seeds": list(config.seeds),
        "encoders": dict(data.encoders),
        "full_supervision": {k: float(np.mean([f[k] for f in full])) for k in ("i2t", "t2i", "avg")},
        "strategies": {name: [{"seed": run.seed, **results[run]} for run in runs if run.strategy == name]
                       for name in config.strategies},
        "protocol": {"warm_start": config.train.warm_start, "evaluated_on": config.evaluate_on, "initial": n_initial,
                     "budget": count(config.budget, len(pool)), "rounds": config.rounds,
                     "initial_set": "uniformly random per seed, shared by all strategies",
                     "validation": {
                         "rule": f"per seed, {VALIDATION_SHARE:.0%} of the initial set (at least 2 pairs), drawn "
                                 "with the seed; held out for early stopping by every strategy in every round and "
                                 "by full supervision; its labels count in the initial set",
                         "size": int(len(runs[0].validation)),
                         "rows_per_seed": {str(run.seed): run.validation.tolist() for run in runs
                                           if run.strategy is None}},
                     "full_supervision_trains_on": "every pool label except the seed's validation rows, which it holds out "
                                         "for early stopping",
                     "threads_per_process": config.threads,
                     "variants": {name: {"strategy": v.strategy, **v.options} for name, v in config.variants.items()
                                  if name in config.strategies},
                     "full_supervision_per_seed": full, "test_carved": data.test_carved, "notes": notes},
    }
