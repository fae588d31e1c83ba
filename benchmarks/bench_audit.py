"""How well does the mismatch audit find captions that were swapped between pairs? (learner.audit)

    .venv/bin/python benchmarks/bench_audit.py --dataset coco                 # coco-mini, 3 seeds
    .venv/bin/python benchmarks/bench_audit.py --dataset fashion --noise 0.05 0.1 0.2 --seeds 0 1 2

For each noise rate and seed: a seeded fraction of the pool (validation carve removed, test never
read) has its captions swapped between pairs of *different* labels, so the truth is known; the learner
trains on the corrupted pool as ``pairlab train`` would (default TrainConfig, a seeded ``--labelled``
fraction of pairs labelled with their image's labels, every pair's pairing signal); then the audit
ranks every pool pair. Reported per run: ROC-AUC, average precision and precision at k = the number
of corrupted pairs, for the audit score, each of its components alone, and two baselines computed in
the same process: cosine similarity of the raw features after a CCA fitted on all pool pairs (PCA to
``--pca`` dims first), and the model's own mu_v . mu_t. The audit is also scored with exact whole-pool
neighbourhoods (``audit_exact_neighbours``, ``only_inconsistency_exact``), to show what the bounded
search costs on pools past ``AuditConfig.exact_max_pool``. Candidate weightings of the fused score
(``WEIGHTINGS``) are compared with ``--on validation``, which corrupts and audits the validation carve
instead of the pool, so the defaults are never chosen on the figures reported. Prints a table;
``--out`` writes the raw figures as JSON.

``--mode train`` is the training half: for each noise rate and seed, train on (a) the clean pool,
(b) the corrupted pool, (c) the corrupted pool with each pair weighted in the pairing loss by its
P(clean) from an audit of (b)'s model on the corrupted pool (``learner.audit.clean_probability`` of the
raw ``inconsistency`` values, what ``[train].correspondence_weighting = "audit"`` does), (c') the same with
P(clean) times that of the model's ``mismatch`` values (``pair_clean_probability``, what ``"audit+model"``
does; "weighted_model"), and (d) with ``--oracle``, the corrupted
pool with the truly swapped pairs at weight 0 (what confirmed mismatch verdicts do), and (e) with
``--control``, the *clean* pool with as many seeded random pairs as were swapped at weight 0 (what (d)
loses in pairing signal, without the noise: if (e) sits near (d), the oracle's gap to (a) is the lost
pairs, not what remains of the noise); then report the
retrieval mAP (i2t, t2i, avg) of each model on the validation carve (which the defaults are chosen on)
and on the test split (reported), and the share of the noise's cost that (c) and (c') recover,
((c) - (b)) / ((a) - (b)) of the avg mAP, on each:

    .venv/bin/python benchmarks/bench_audit.py --mode train --dataset coco --noise 0.2 0.1 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.cross_decomposition import CCA  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.bench.data import VALIDATION_FRACTION, carve_by_group, load_simulation_data, split_pool_and_test  # noqa: E402
from learner.audit import AUDIT_COMPONENTS, CLEAN_PROBABILITY_COMPONENT, MODEL_CLEAN_PROBABILITY_COMPONENT, \
    AuditConfig, cross_modal_consistency, audit_pairs, clean_probability, pair_clean_probability  # noqa: E402
from learner.inference import evaluate_model, infer  # noqa: E402
from learner.selection.scoring import rank01  # noqa: E402
from learner.training import TrainConfig, train_model  # noqa: E402

# Candidate weightings of the fused score (AUDIT_COMPONENTS order: mismatch, contrastive, posterior,
# disagreement, inconsistency), compared on validation pools to choose AuditConfig's defaults.
WEIGHTINGS = {
    "equal": (1, 1, 1, 1, 1),
    "model_only": (1, 1, 1, 1, 0),
    "inconsistency_x3": (1, 1, 1, 1, 3),
    "inconsistency_x4+mismatch": (1, 0, 0, 0, 4),
    "inconsistency_x2+mismatch": (1, 0, 0, 0, 2),
}

DATASETS = {
    "coco": (ROOT.parent / "shared" / "datasets" / "coco-mini", "coco"),
    "fashion": (ROOT.parent / "shared" / "datasets" / "fashion" / "manifest.jsonl", "manifest"),
}


def swap_captions(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A permutation of n rows that swaps the captions of a seeded ``fraction`` of them in pairs whose
    label sets differ. labels: (n, C). Returns (text_row (n,), corrupted (n,) bool)."""
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    wanted = int(round(fraction * n)) // 2 * 2
    text_row = np.arange(n)
    corrupted = np.zeros(n, dtype=bool)
    waiting: list[int] = []
    for row in order:
        if corrupted.sum() >= wanted:
            break
        partner = next((w for w in waiting if not np.array_equal(labels[w], labels[row])), None)
        if partner is None:
            waiting.append(int(row))
            continue
        waiting.remove(partner)
        text_row[row], text_row[partner] = partner, row
        corrupted[[row, partner]] = True
    return text_row, corrupted


def ranking_metrics(suspicion: np.ndarray, corrupted: np.ndarray) -> dict[str, float]:
    """ROC-AUC, average precision and precision at k = #corrupted of a score, higher = more suspicious."""
    k = int(corrupted.sum())
    top = np.argsort(-suspicion, kind="stable")[:k]
    return {"roc_auc": float(roc_auc_score(corrupted, suspicion)),
            "average_precision": float(average_precision_score(corrupted, suspicion)),
            "precision_at_k": float(corrupted[top].mean())}


def cca_cosine(image: np.ndarray, text: np.ndarray, *, pca_dims: int, components: int, seed: int) -> np.ndarray:
    """Baseline: cosine similarity of each pair in a CCA space fitted on all (corrupted) pairs. (n,)"""
    reduced = [PCA(n_components=min(pca_dims, x.shape[1], x.shape[0] - 1), random_state=seed).fit_transform(x)
               for x in (image, text)]
    cca = CCA(n_components=min(components, *(r.shape[1] for r in reduced)), max_iter=500)
    u, v = cca.fit_transform(*reduced)
    u /= np.linalg.norm(u, axis=1, keepdims=True) + 1e-12
    v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-12
    return np.einsum("nd,nd->n", u, v)


def run_one(data, pool: np.ndarray, noise: float, seed: int, args: argparse.Namespace) -> dict:
    labels = data.labels[pool]
    text_row, corrupted = swap_captions(labels, noise, seed)
    image, text = data.image[pool], data.text[pool][text_row]
    rng = np.random.default_rng(1000 + seed)
    labelled = np.zeros(pool.shape[0], dtype=bool)
    labelled[rng.choice(pool.shape[0], size=max(2, int(round(args.labelled * pool.shape[0]))), replace=False)] = True
    started = time.perf_counter()
    model = train_model(image, text, labels, labelled, TrainConfig(seed=seed)).model
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    outputs = infer(model, image, text, mc_samples=0)
    scores = audit_pairs(outputs, image, text, AuditConfig(seed=seed))
    audit_s = time.perf_counter() - started
    started = time.perf_counter()
    cca = cca_cosine(image, text, pca_dims=args.pca, components=args.cca_components, seed=seed)
    cca_s = time.perf_counter() - started
    fused = {f"fused_{key}": sum(w * scores.ranks[name] for w, name in zip(weights, AUDIT_COMPONENTS))
             for key, weights in WEIGHTINGS.items()}
    exact, exact_s = _exact_neighbourhoods(scores, image, text, seed)
    rankings = {"audit": scores.score, **{f"only_{name}": scores.ranks[name] for name in AUDIT_COMPONENTS}, **fused,
                **exact,
                "baseline_model_cosine": -np.einsum("nd,nd->n", outputs.mu_image, outputs.mu_text),
                "baseline_cca_cosine": -cca}
    return {"noise": noise, "seed": seed, "pool": int(pool.shape[0]), "corrupted": int(corrupted.sum()),
            "labelled": int(labelled.sum()), "train_s": round(train_s, 1), "audit_s": round(audit_s, 2),
            "cca_s": round(cca_s, 1), **exact_s, "metrics": {name: ranking_metrics(v, corrupted) for name, v in rankings.items()}}


def _exact_neighbourhoods(scores, image: np.ndarray, text: np.ndarray, seed: int) -> tuple[dict, dict]:
    """The audit as it would be with exact whole-pool neighbourhoods (``exact_max_pool`` = the pool), to set
    the bounded search the default uses on pools past ``AuditConfig.exact_max_pool`` against: the exact
    ``inconsistency`` alone and fused with the other components at the default weights, and the seconds of
    the default and the exact consistency in this process ("bounded" is the default config, which is itself
    exact on pools up to ``exact_max_pool``)."""
    default = AuditConfig(seed=seed)
    times, values = {}, {}
    for name, config in (("bounded", default), ("exact", replace(default, exact_max_pool=image.shape[0]))):
        started = time.perf_counter()
        values[name] = 1.0 - cross_modal_consistency(image, text, config)
        times[f"inconsistency_{name}_s"] = round(time.perf_counter() - started, 2)
    ranks = {**scores.ranks, "inconsistency": rank01(values["exact"])}
    weights = default.weights()
    fused = sum(weights[name] * ranks[name] for name in AUDIT_COMPONENTS) / sum(weights.values())
    return {"audit_exact_neighbours": fused, "only_inconsistency_exact": ranks["inconsistency"]}, times


def _labelled_rows(n: int, fraction: float, seed: int) -> np.ndarray:
    """The seeded ``fraction`` of n pool pairs that carry their image's labels. (n,) bool"""
    labelled = np.zeros(n, dtype=bool)
    rng = np.random.default_rng(1000 + seed)
    labelled[rng.choice(n, size=max(2, int(round(fraction * n))), replace=False)] = True
    return labelled


def train_one(data, pool: np.ndarray, evaluated: dict[str, np.ndarray], noise: float, seed: int,
              args: argparse.Namespace) -> dict:
    """Clean, noisy, audit-weighted (and oracle-excluded) trainings of one noise rate and seed; mAP on each
    ``evaluated`` split (name -> rows)."""
    labels = data.labels[pool]
    text_row, corrupted = swap_captions(labels, noise, seed)
    image, clean_text = data.image[pool], data.text[pool]
    noisy_text = clean_text[text_row]
    labelled = _labelled_rows(pool.shape[0], args.labelled, seed)
    config = TrainConfig(seed=seed)
    figures: dict[str, dict] = {split: {} for split in evaluated}
    seconds: dict[str, float] = {}

    def train(name: str, text: np.ndarray, weights: np.ndarray | None):
        started = time.perf_counter()
        model = train_model(image, text, labels, labelled, config, pair_weights=weights).model
        seconds[name] = round(time.perf_counter() - started, 1)
        for split, rows in evaluated.items():
            got = figures[split][name] = evaluate_model(model, data.image[rows], data.text[rows], data.labels[rows])
            print(f"  {name:9s} {split:10s} i2t {got['i2t']:.4f}  t2i {got['t2i']:.4f}  avg {got['avg']:.4f}"
                  f"  ({seconds[name]} s)", flush=True)
        return model

    clean = train("clean", clean_text, None)
    if corrupted.any():
        noisy = train("noisy", noisy_text, None)
    else:          # noise 0: what "audit" weighting costs on a clean pool; (b) is (a)
        noisy = clean
        for split in figures:
            figures[split]["noisy"] = figures[split]["clean"]
    started = time.perf_counter()
    scores = audit_pairs(infer(noisy, image, noisy_text, mc_samples=0), image, noisy_text, AuditConfig(seed=seed))
    p_clean = clean_probability(scores.components[CLEAN_PROBABILITY_COMPONENT], seed=seed)
    seconds["audit"] = round(time.perf_counter() - started, 1)
    p_clean_model = pair_clean_probability(scores.components[CLEAN_PROBABILITY_COMPONENT],
                                           scores.components[MODEL_CLEAN_PROBABILITY_COMPONENT], seed=seed)
    weighting = {"swapped_weight": {"audit": float(p_clean[corrupted].sum()),
                                    "audit+model": float(p_clean_model[corrupted].sum())},
                 "kept_weight_lost": {"audit": float((1 - p_clean[~corrupted]).sum()),
                                      "audit+model": float((1 - p_clean_model[~corrupted]).sum())},
                 "mean_p_clean_swapped": float(p_clean[corrupted].mean()) if corrupted.any() else None,
                 "mean_p_clean_kept": float(p_clean[~corrupted].mean()),
                 "below_half_swapped": int((p_clean[corrupted] < 0.5).sum()),
                 "below_half_kept": int((p_clean[~corrupted] < 0.5).sum()),
                 "audit_roc_auc": float(roc_auc_score(corrupted, scores.score)) if corrupted.any() else None}
    print(f"  P(clean): swapped mean {weighting['mean_p_clean_swapped']} ({weighting['below_half_swapped']} < 0.5), "
          f"kept mean {weighting['mean_p_clean_kept']:.3f} ({weighting['below_half_kept']} < 0.5)", flush=True)
    train("weighted", noisy_text, p_clean)
    train("weighted_model", noisy_text, p_clean_model.astype(np.float32))
    if args.oracle:
        train("oracle", noisy_text, (~corrupted).astype(np.float32))
    if args.control:
        dropped = np.random.default_rng(2000 + seed).choice(pool.shape[0], size=int(corrupted.sum()), replace=False)
        kept = np.ones(pool.shape[0], dtype=np.float32)
        kept[dropped] = 0.0
        train("control", clean_text, kept)
    recovered = {}
    for split, got in figures.items():
        cost = got["clean"]["avg"] - got["noisy"]["avg"]
        recovered[split] = {arm: (got[arm]["avg"] - got["noisy"]["avg"]) / cost if cost > 0 else None
                            for arm in ("weighted", "weighted_model")}
    return {"noise": noise, "seed": seed, "pool": int(pool.shape[0]),
            "evaluated": {split: int(rows.shape[0]) for split, rows in evaluated.items()},
            "corrupted": int(corrupted.sum()), "labelled": int(labelled.sum()), "seconds": seconds,
            "weighting": weighting, "map": figures, "recovered": recovered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="coco")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--on", choices=("pool", "validation"), default="pool",
                        help="corrupt and audit the pool, or the validation carve (to choose settings)")
    parser.add_argument("--mode", choices=("rank", "train"), default="rank",
                        help="rank: the audit's ranking figures; train: mAP of clean / noisy / weighted training")
    parser.add_argument("--oracle", action="store_true",
                        help="--mode train: also train with the truly swapped pairs at weight 0")
    parser.add_argument("--control", action="store_true",
                        help="--mode train: also train on the clean pool with as many random pairs at weight 0")
    parser.add_argument("--labelled", type=float, default=0.05, help="fraction of the pool labelled (default 0.05)")
    parser.add_argument("--pca", type=int, default=128, help="PCA dims per modality before the CCA baseline")
    parser.add_argument("--cca-components", type=int, default=16)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "bench-out" / "cache", help="encoded-feature cache")
    parser.add_argument("--out", type=Path, help="write the raw figures here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    source, fmt = DATASETS[args.dataset]
    if not source.exists():
        sys.exit(f"{source}: not found (the datasets live in ../shared/datasets)")
    data = load_simulation_data(source, fmt, cache_dir=args.cache_dir, carve_seed=10)
    pool, test = split_pool_and_test(data.split, data.groups, 10)
    pool, validation = carve_by_group(pool, data.groups, VALIDATION_FRACTION, 10)
    if args.mode == "train":
        evaluated = {"validation": validation, "test": test}
        runs = []
        for noise in args.noise:
            for seed in args.seeds:
                print(f"train noise {noise:.2f} seed {seed}: pool {pool.shape[0]}, validation {validation.shape[0]}, "
                      f"test {test.shape[0]}", flush=True)
                runs.append(train_one(data, pool, evaluated, noise, seed, args))
                print(f"  recovered {runs[-1]['recovered']}", flush=True)
                if args.out:   # after every run: a long benchmark keeps what it finished
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps({"dataset": args.dataset, "mode": "train", "labelled": args.labelled,
                                                    "runs": runs}, indent=1))
        return
    if args.on == "validation":
        pool = validation
    runs = []
    for noise in args.noise:
        for seed in args.seeds:
            run = run_one(data, pool, noise, seed, args)
            runs.append(run)
            m = run["metrics"]
            print(f"{args.on} noise {noise:.2f} seed {seed}: pool {run['pool']}, {run['corrupted']} swapped, "
                  f"train {run['train_s']} s, audit {run['audit_s']} s, cca {run['cca_s']} s", flush=True)
            for name, figures in m.items():
                print(f"  {name:40s} roc_auc {figures['roc_auc']:.3f}  ap {figures['average_precision']:.3f}  "
                      f"p@k {figures['precision_at_k']:.3f}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"dataset": args.dataset, "on": args.on, "labelled": args.labelled, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
