"""The workbench at scale (issue 13): import, select, train, export, page renders and label submission
on a synthetic features pool with cluster structure, at several pool sizes.

    .venv/bin/python benchmarks/bench_scale.py --n 20000                  # quick mode
    .venv/bin/python benchmarks/bench_scale.py --n 10000,100000,1000000   # the cost curve
    .venv/bin/python benchmarks/bench_scale.py --n 100000 --alternate 3   # + audit vs select, 3 runs each
    .venv/bin/python benchmarks/bench_scale.py --workspace WS --alternate 3   # the same on an existing workspace
    .venv/bin/python benchmarks/bench_scale.py --n 1000000 --train-epochs 40 --train-only   # the training's phases

For each N a fresh workspace gets a ``features`` import of N pairs (``--image-dim`` / ``--text-dim``
float32 features around ``--groups`` cluster centres, ``--classes`` labels from each centre's
prototype, 1 % labelled at import, 2 % test split). Then, each step a separate ``pairlab`` process
timed from outside (wall seconds and peak RSS via ``wait4``): ``import``, ``train --epochs
--train-epochs``, ``select --strategy ascmr --budget N/100``, ``audit`` and ``export --format jsonl``; ``train``'s own
breakdown (read, train, test, save, embeddings of every pair) comes from its log.
``--alternate R`` then runs ``select`` and ``audit`` R more times each on the same workspace, alternating
(select first in odd runs, audit first in even ones, so drift in the load hits both), and reports each
one's median wall and peak RSS and the load before every run: issue 15's "scoring the whole pool is as
fast as a selection round". In this
process: ``--submits`` label submissions by one annotator through ``app.services.annotate`` (claim and
submit timed separately: the submit is the server time of a label submission), then every page
rendered by Streamlit's AppTest for an operator and an annotator (first run and the median of
``--reruns`` reruns). Figures go to stdout and, as JSON, to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHUNK = 65_536
PASSWORD = "bench-pass-9"
PAGES = (("annotate", "ann"), ("explore", "ann"), ("review", "op"), ("explore", "op"), ("rounds", "op"),
         ("export", "op"))


def synthetic_pool(path: Path, n: int, *, image_dim: int, text_dim: int, classes: int, groups: int,
                   labelled: float, test: float, seed: int) -> None:
    """Write a ``features`` import file: clustered image (n, Di) / text (n, Dt) features, labels, splits."""
    rng = np.random.default_rng(seed)
    centres_i = rng.standard_normal((groups, image_dim), dtype=np.float32)
    centres_t = rng.standard_normal((groups, text_dim), dtype=np.float32)
    protos = rng.random((groups, classes)) < 2.0 / classes                           # ~2 labels per group
    with tempfile.TemporaryDirectory(dir=path.parent) as parts:
        def part(name, dtype, shape):
            return np.lib.format.open_memmap(Path(parts) / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

        image, text = part("image", np.float32, (n, image_dim)), part("text", np.float32, (n, text_dim))
        labels = part("labels", np.uint8, (n, classes))
        for s in range(0, n, CHUNK):
            m = min(CHUNK, n - s)
            g = rng.integers(0, groups, m)
            image[s:s + m] = centres_i[g] + 0.6 * rng.standard_normal((m, image_dim), dtype=np.float32)
            text[s:s + m] = centres_t[g] + 0.6 * rng.standard_normal((m, text_dim), dtype=np.float32)
            labels[s:s + m] = protos[g]
        u = rng.random(n)
        split = np.where(u < test, "test", "pool")
        is_labelled = (u >= test) & (u < test + labelled) | (u < test)               # test pairs carry labels
        ids = np.char.add("s", np.char.zfill(np.arange(n).astype(str), 8))
        label_names = np.array([f"class{j:02d}" for j in range(classes)])
        with open(path, "wb") as fh:
            np.savez(fh, image=image, text=text, labels=labels, label_names=label_names, labelled=is_labelled,
                     split=split, ids=ids)


# ``pairlab`` in a child that writes its own peak RSS (VmHWM of its address space, so not the forked
# copy of this process that ru_maxrss would also count) to $BENCH_HWM when it exits.
_PAIRLAB = """import atexit, os, sys
def _hwm():
    with open('/proc/self/status') as status, open(os.environ['BENCH_HWM'], 'w') as out:
        out.write(next(line for line in status if line.startswith('VmHWM')).split()[1])
atexit.register(_hwm)
sys.argv[0] = 'pairlab'
from app.cli import main
sys.exit(main())
"""


def run_step(name: str, argv: list[str], stdin: str | None = None, keep: str | None = None) -> dict:
    """Run ``pairlab ARGV`` in a fresh process: wall seconds, peak RSS (MiB), exit code, and the lines of
    its output that start with ``keep`` (a step's own breakdown, e.g. ``train``'s phases)."""
    with tempfile.NamedTemporaryFile(prefix="hwm-") as hwm:
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", BENCH_HWM=hwm.name)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _PAIRLAB, *argv], env=env, input=stdin or "",
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - start
        peak = int(Path(hwm.name).read_text() or 0) / 1024
    output = proc.stdout
    row = {"step": name, "wall_s": round(wall, 2), "peak_rss_mib": round(peak, 1), "rc": proc.returncode}
    print(f"  {name:<28} {wall:8.2f} s  peak RSS {peak:8.1f} MiB  rc {proc.returncode}", flush=True)
    if keep:
        row["log"] = [line for line in output.splitlines() if line.startswith(keep)]
        print("".join(f"    {line}\n" for line in row["log"]), end="", flush=True)
    if proc.returncode != 0:
        print("    " + "\n    ".join(output.strip().splitlines()[-8:]), flush=True)
    return row


def time_submissions(ws: Path, count: int) -> dict:
    """``count`` claims and submits by one annotator: median and p95 milliseconds of each."""
    from app.services.annotate import annotate, claim
    from storage.store import open_store
    from storage.users import get_user
    from storage.vocabulary import label_names

    store = open_store(ws)
    try:
        with store.db.read() as s:
            user, names = get_user(s, "ann"), label_names(s)
        claims, submits = [], []
        for i in range(count):
            t = time.perf_counter()
            held = claim(store, user)
            claims.append(time.perf_counter() - t)
            if held is None:
                break
            t = time.perf_counter()
            annotate(store, user, held.queue_item_id, kind="submit", labels=[names[i % len(names)]], verdict="match")
            submits.append(time.perf_counter() - t)
    finally:
        store.close()

    def ms(values, q):
        return round(1000 * float(np.quantile(values, q)), 1) if values else None

    row = {"submissions": len(submits), "claim_median_ms": ms(claims, 0.5), "claim_p95_ms": ms(claims, 0.95),
           "submit_median_ms": ms(submits, 0.5), "submit_p95_ms": ms(submits, 0.95)}
    print(f"  {len(submits)} label submissions: submit median {row['submit_median_ms']} ms, p95 "
          f"{row['submit_p95_ms']} ms; claim median {row['claim_median_ms']} ms", flush=True)
    return row


def time_pages(ws: Path, reruns: int) -> list[dict]:
    """Each page rendered by AppTest: first run and the median of ``reruns`` reruns, in seconds."""
    from streamlit.testing.v1 import AppTest

    from app.web import state
    from app.web.runtime import AUTO_LOGIN_ENV, WORKSPACE_ENV
    from storage.models import utcnow
    from storage.store import open_store
    from storage.users import get_user

    os.environ[WORKSPACE_ENV] = str(ws)
    os.environ.pop(AUTO_LOGIN_ENV, None)
    store = open_store(ws)
    with store.db.read() as s:
        users = {name: get_user(s, name) for name in ("ann", "op")}
    store.close()
    scripts = Path(tempfile.mkdtemp(prefix="bench-pages-"))
    rows = []
    for page, who in PAGES:
        script = scripts / f"{page}.py"
        script.write_text(f"from app.web.pages import {page}\n{page}.render()\n", encoding="utf-8")
        at = AppTest.from_file(str(script), default_timeout=600)
        at.session_state[state.USER] = users[who]
        at.session_state[state.SESSION_STARTED] = utcnow()
        t = time.perf_counter()
        at.run()
        first = time.perf_counter() - t
        again = []
        for _ in range(reruns):
            t = time.perf_counter()
            at.run()
            again.append(time.perf_counter() - t)
        error = at.exception[0].message if at.exception else None
        row = {"page": page, "as": who, "first_s": round(first, 3), "rerun_median_s": round(statistics.median(again), 3),
               "error": error}
        rows.append(row)
        print(f"  page {page:<9} as {who:<4} first {first:6.3f} s, rerun median {row['rerun_median_s']:6.3f} s"
              + (f"  ERROR {error}" if error else ""), flush=True)
    return rows


def bench(n: int, args, folder: Path) -> dict:
    print(f"N = {n}", flush=True)
    ws, source = folder / f"ws-{n}", folder / f"pool-{n}.npz"
    t = time.perf_counter()
    synthetic_pool(source, n, image_dim=args.image_dim, text_dim=args.text_dim, classes=args.classes,
                   groups=args.groups, labelled=0.01, test=0.02, seed=args.seed)
    print(f"  generated the pool file ({source.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s",
          flush=True)
    steps = [run_step("init", ["init", str(ws)]),
             run_step("import", ["import", str(ws), str(source), "--format", "features"])]
    source.unlink()
    for name, role in (("ann", "annotator"), ("op", "operator")):
        steps.append(run_step(f"user add {name}", ["user", "add", str(ws), name, "--role", role, "--password-stdin"],
                              stdin=PASSWORD + "\n"))
    steps.append(run_step(f"train --epochs {args.train_epochs}", ["train", str(ws), "--epochs", str(args.train_epochs)],
                          keep="train: read"))
    if args.train_only:
        if not args.keep:
            shutil.rmtree(ws, ignore_errors=True)
        return {"n": n, "steps": steps}
    budget = max(1, n // 100)
    steps.append(run_step(f"select ascmr --budget {budget}",
                          ["select", str(ws), "--strategy", "ascmr", "--budget", str(budget)]))
    steps.append(run_step("audit", ["audit", str(ws)]))
    alternated = alternate(ws, budget, args.alternate) if args.alternate else None
    steps.append(run_step("export jsonl", ["export", str(ws), "--format", "jsonl", "--out", str(folder / f"{n}.jsonl")]))
    (folder / f"{n}.jsonl").unlink(missing_ok=True)
    submissions = time_submissions(ws, args.submits)
    pages = time_pages(ws, args.reruns)
    if not args.keep:
        shutil.rmtree(ws, ignore_errors=True)
    return {"n": n, "budget": budget, "steps": steps, "audit_vs_select": alternated, "submissions": submissions,
            "pages": pages}


def alternate(ws: Path, budget: int, runs: int) -> dict:
    """``runs`` runs each of ``select --strategy ascmr --budget budget`` and ``audit`` on ``ws``, alternating
    which goes first: every run's figures and load, each step's median wall and peak RSS, and the ratio."""
    argv = {"select": ["select", str(ws), "--strategy", "ascmr", "--budget", str(budget)], "audit": ["audit", str(ws)]}
    rows = []
    for r in range(runs):
        for name in (("select", "audit") if r % 2 == 0 else ("audit", "select")):
            load = os.getloadavg()[0]
            rows.append({**run_step(f"{name} (run {r + 1})", argv[name]), "name": name, "load_1min": round(load, 2)})
    median = {name: {key: statistics.median(row[key] for row in rows if row["name"] == name)
                     for key in ("wall_s", "peak_rss_mib")} for name in argv}
    ratio = round(median["audit"]["wall_s"] / median["select"]["wall_s"], 2)
    print(f"  median select {median['select']['wall_s']:.2f} s / {median['select']['peak_rss_mib']:.0f} MiB, "
          f"audit {median['audit']['wall_s']:.2f} s / {median['audit']['peak_rss_mib']:.0f} MiB: audit / select "
          f"= {ratio} (wall)", flush=True)
    return {"budget": budget, "runs": rows, "median": median, "audit_over_select_wall": ratio}


def _pairs(ws: Path) -> int:
    from app.services.data import pair_table
    from storage.store import open_store

    store = open_store(ws)
    try:
        return len(pair_table(store).ids)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", default="10000,100000", help="comma-separated pool sizes (default 10000,100000)")
    parser.add_argument("--image-dim", type=int, default=256)
    parser.add_argument("--text-dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--groups", type=int, default=200, help="cluster centres of the synthetic pool")
    parser.add_argument("--train-epochs", type=int, default=1)
    parser.add_argument("--train-only", action="store_true",
                        help="stop after the train step (import, users, train: the training's breakdown)")
    parser.add_argument("--submits", type=int, default=200)
    parser.add_argument("--reruns", type=int, default=3)
    parser.add_argument("--folder", help="where workspaces go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the workspaces")
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--alternate", type=int, default=0, metavar="R",
                        help="then R alternating runs each of select and audit (default 0: none)")
    parser.add_argument("--workspace", help="only --alternate, on this existing trained workspace (budget: 1 %% "
                                            "of its pairs, --budget to change)")
    parser.add_argument("--budget", type=int, help="with --workspace: select's budget")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    if args.train_only and (args.alternate or args.workspace):
        parser.error("--train-only: not with --alternate or --workspace (it stops before select and audit)")
    if args.workspace:
        if not args.alternate:
            parser.error("--workspace: give --alternate R")
        print(f"load: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores", flush=True)
        results = [{"workspace": args.workspace, "audit_vs_select": alternate(Path(args.workspace), args.budget or
                                                                               _pairs(Path(args.workspace)) // 100,
                                                                               args.alternate)}]
        print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2), encoding="utf-8")
        return
    folder = Path(args.folder) if args.folder else Path(tempfile.mkdtemp(prefix="bench-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on "
          f"{os.cpu_count()} cores; workspaces in {folder}", flush=True)
    results = [bench(int(n), args, folder) for n in args.n.split(",")]
    print(f"load after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
