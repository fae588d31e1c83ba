"""Explore at scale (issue 13): the page's first render, a rerun, showing another pair and a text search,
on a workspace with a trained model (e.g. one kept by ``bench_scale.py --keep``).

    .venv/bin/python benchmarks/bench_explore.py --workspace WS            # page cache as it is
    .venv/bin/python benchmarks/bench_explore.py --workspace WS --cold     # the embeddings file evicted first

In this (fresh) process: the page module is imported (timed apart: a running server has imported it for
any earlier page), then Streamlit's AppTest renders Explore for ``--user`` (first run, then the median of
``--reruns`` reruns; where the page computes the first listed pair's "Top texts for this image" at once,
the first run also reads the embeddings), then, where the top texts wait for their toggle, turns it on
(the embeddings mapped, one pass over the text means), then shows ``--pairs`` other pairs of the list
one after another (each its own pass), then runs ``--queries`` image searches through ``retrieval.images_for_text``. A workspace
whose text features were precomputed has no text encoder, so its queries are random vectors of the
common space (the encoder's own cost does not grow with N). ``--cold`` asks the kernel to drop the
embeddings file from the page cache (``posix_fadvise DONTNEED``, this file only) before the first render.
Figures (seconds, peak RSS of this process) go to stdout and, as JSON, to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_rss_mib() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024


def evict(path: Path) -> None:
    """Drop ``path``'s cached pages (only this file's) so the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--user", default="op", help="who is signed in (default op, as bench_scale.py names it)")
    parser.add_argument("--reruns", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=5, help="other pairs shown after the first render")
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--cold", action="store_true", help="evict the embeddings file from the page cache first")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    ws = Path(args.workspace)

    t = time.perf_counter()
    from streamlit.testing.v1 import AppTest

    from app.services import retrieval
    from app.services.models import current_model
    from app.services.settings import encoder_choice
    from app.web import state
    from app.web.pages import explore  # noqa: F401  (imported here, timed apart from the render)
    from app.web.runtime import AUTO_LOGIN_ENV, WORKSPACE_ENV
    from storage.features import PRECOMPUTED
    from storage.models import utcnow
    from storage.store import open_store
    from storage.users import get_user

    imports = time.perf_counter() - t
    os.environ[WORKSPACE_ENV] = str(ws)
    os.environ.pop(AUTO_LOGIN_ENV, None)
    store = open_store(ws)
    with store.db.read() as s:
        user = get_user(s, args.user)
    path = retrieval._embeddings_path(store, current_model(store).version)
    if args.cold:
        evict(path)
    load = os.getloadavg()
    script = Path(tempfile.mkdtemp(prefix="bench-explore-")) / "explore.py"
    script.write_text("from app.web.pages import explore\nexplore.render()\n", encoding="utf-8")
    at = AppTest.from_file(str(script), default_timeout=600)
    at.session_state[state.USER] = user
    at.session_state[state.SESSION_STARTED] = utcnow()
    t = time.perf_counter()
    at.run()
    first = time.perf_counter() - t
    reruns = []
    for _ in range(args.reruns):
        t = time.perf_counter()
        at.run()
        reruns.append(time.perf_counter() - t)
    error = at.exception[0].message if at.exception else None
    asked = None
    if not error and getattr(state, "EXPLORE_TOP_TEXTS", None):  # the top texts wait for their toggle
        t = time.perf_counter()
        at.toggle(key=state.EXPLORE_TOP_TEXTS).set_value(True).run()
        asked = time.perf_counter() - t
    listed = at.selectbox(key=state.EXPLORE_PAIR).options if not error else []
    shown = []
    for option in listed[1:1 + args.pairs]:
        t = time.perf_counter()
        at.selectbox(key=state.EXPLORE_PAIR).set_value(int(option.removeprefix("pair "))).run()
        shown.append(time.perf_counter() - t)
    emb = retrieval.model_embeddings(store)
    if encoder_choice(store).text == PRECOMPUTED:
        rng = np.random.default_rng(0)
        retrieval.embed_query_text = lambda _store, _query: rng.standard_normal(emb.mu_image.shape[1]).astype(np.float32)
    searches = []
    for i in range(args.queries):
        t = time.perf_counter()
        hits = retrieval.images_for_text(store, f"query {i}", k=explore.SEARCH_HITS)
        searches.append(time.perf_counter() - t)
    store.close()
    row = {"workspace": str(ws), "pairs": len(emb.pair_ids), "embeddings_mib": round(path.stat().st_size / 2**20),
           "cold": args.cold, "load_before": [round(x, 2) for x in load],
           "load_after": [round(x, 2) for x in os.getloadavg()], "imports_s": round(imports, 3),
           "first_render_s": round(first, 3), "rerun_median_s": round(statistics.median(reruns), 3),
           "top_texts_on_s": None if asked is None else round(asked, 3),
           "other_pair_median_s": round(statistics.median(shown), 3) if shown else None,
           "other_pair_s": [round(x, 3) for x in shown],
           "search_median_s": round(statistics.median(searches), 3), "search_s": [round(x, 3) for x in searches],
           "search_hits": len(hits), "peak_rss_mib": round(peak_rss_mib(), 1), "error": error}
    print(json.dumps(row, indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(row, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
