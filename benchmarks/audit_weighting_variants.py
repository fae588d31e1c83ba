"""Which pair weighting recovers most of the noise's cost on fashion with swapped captions? (validation only)

    .venv/bin/python benchmarks/audit_weighting_variants.py 0.2 0 "inc*clean(mism1);gmm2d(inc,mism2)"

Swaps a seeded fraction of the fashion pool's captions (as ``bench_audit.py``), trains the noisy model
("noisy"), audits it (components "1"), trains with P(clean) of the raw inconsistency ("inc", what
``correspondence_weighting = "audit"`` does) and audits that model (components "2": a second
audit-train cycle). Prints each component's ROC-AUC for both audits; for every candidate weighting the
weight left on the swapped pairs and the weight taken from the kept ones; then trains the named
variants (";"-separated) and prints their avg mAP on the validation carve (the test split is not read).
Components are cached in bench-out/explore/, mAPs in a JSON beside them."""
import json
import os
import sys
import time
os.environ.setdefault("OMP_NUM_THREADS", "1")
from pathlib import Path
import numpy as np, torch
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_audit import swap_captions, _labelled_rows, DATASETS
from app.bench.data import VALIDATION_FRACTION, carve_by_group, load_simulation_data, split_pool_and_test
from learner.audit import AUDIT_COMPONENTS, AuditConfig, audit_pairs, clean_probability
from learner.inference import evaluate_model, infer
from learner.training import TrainConfig, train_model

torch.set_num_threads(1)
noise, seed = float(sys.argv[1]), int(sys.argv[2])
wanted = sys.argv[3].split(";") if len(sys.argv) > 3 and sys.argv[3] else []
source, fmt = DATASETS["fashion"]
data = load_simulation_data(source, fmt, cache_dir=ROOT / "bench-out/cache-fashion", carve_seed=10)
pool, test = split_pool_and_test(data.split, data.groups, 10)
pool, validation = carve_by_group(pool, data.groups, VALIDATION_FRACTION, 10)
labels = data.labels[pool]
text_row, corrupted = swap_captions(labels, noise, seed)
image, noisy_text = data.image[pool], data.text[pool][text_row]
labelled = _labelled_rows(pool.shape[0], 0.05, seed)
config = TrainConfig(seed=seed)
(ROOT / "bench-out/explore").mkdir(parents=True, exist_ok=True)
cache = ROOT / f"bench-out/explore/pclean-{noise}-{seed}.npz"
results_path = ROOT / f"bench-out/explore/pclean-{noise}-{seed}.json"
results = json.loads(results_path.read_text()) if results_path.exists() else {}


def train(name, weights):
    t = time.perf_counter()
    model = train_model(image, noisy_text, labels, labelled, config, pair_weights=weights).model
    got = evaluate_model(model, data.image[validation], data.text[validation], data.labels[validation])
    print(f"TRAIN {name:28s} val avg {got['avg']:.4f} (i2t {got['i2t']:.4f} t2i {got['t2i']:.4f}) "
          f"{time.perf_counter() - t:.0f} s", flush=True)
    results[name] = got["avg"]
    results_path.write_text(json.dumps(results, indent=1))
    return model


def audit(model):
    s = audit_pairs(infer(model, image, noisy_text, mc_samples=0), image, noisy_text, AuditConfig(seed=seed))
    return {k: np.asarray(v, dtype=np.float64) for k, v in s.components.items()}, s.score


if cache.exists():
    z = np.load(cache)
    c1 = {k: z["c1_" + k] for k in AUDIT_COMPONENTS}
    c2 = {k: z["c2_" + k] for k in AUDIT_COMPONENTS}
else:
    noisy = train("noisy", None)
    c1, s1 = audit(noisy)
    p = clean_probability(c1["inconsistency"], seed=seed)
    weighted = train("inc", p)
    c2, s2 = audit(weighted)
    np.savez(cache, **{"c1_" + k: v for k, v in c1.items()}, **{"c2_" + k: v for k, v in c2.items()},
             s1=s1, s2=s2)

for tag, c in (("1", c1), ("2", c2)):
    print("ROC", tag, {k: round(roc_auc_score(corrupted, v), 4) for k, v in c.items()})


def cp(v):
    return clean_probability(v, seed=seed)


def gmm2d(*cols):
    x = np.column_stack([(c - c.min()) / (c.max() - c.min()) for c in cols])
    g = GaussianMixture(2, reg_covar=5e-4, random_state=seed).fit(x)
    clean = int(np.argmin(g.means_.sum(axis=1)))
    return g.predict_proba(x)[:, clean]


inc = cp(c1["inconsistency"])
variants = {
    "inc": lambda: inc,
    "inc_sq": lambda: inc ** 2,
    "inc_hard": lambda: (inc >= 0.5).astype(float),
    "inc*clean(mism1)": lambda: inc * cp(c1["mismatch"]),
    "inc*clean(contr1)": lambda: inc * cp(c1["contrastive"]),
    "inc*clean(mism2)": lambda: inc * cp(c2["mismatch"]),
    "inc*clean(contr2)": lambda: inc * cp(c2["contrastive"]),
    "inc*post2": lambda: inc * (1 - c2["posterior"]),
    "min(inc,clean(mism2))": lambda: np.minimum(inc, cp(c2["mismatch"])),
    "gmm2d(inc,mism1)": lambda: gmm2d(c1["inconsistency"], c1["mismatch"]),
    "gmm2d(inc,mism2)": lambda: gmm2d(c1["inconsistency"], c2["mismatch"]),
    "gmm2d(inc,contr2)": lambda: gmm2d(c1["inconsistency"], c2["contrastive"]),
}
weights = {}
for name, f in variants.items():
    w = np.clip(f(), 0, 1)
    weights[name] = w
    print(f"W {name:24s} swapped residual {w[corrupted].sum():7.1f} (>=.5: {(w[corrupted] >= .5).sum():4d}) "
          f"kept lost {(1 - w[~corrupted]).sum():7.1f} (<.5: {(w[~corrupted] < .5).sum():4d})", flush=True)
for name in wanted:
    if name in results:
        print(f"TRAIN {name:28s} val avg {results[name]:.4f} (cached)")
        continue
    train(name, weights[name].astype(np.float32))
