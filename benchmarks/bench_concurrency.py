"""Benchmark claim latency with many annotator processes on one workspace, SQLite and PostgreSQL.

    .venv/bin/python benchmarks/bench_concurrency.py --annotators 20 --submissions 20 --pause 0.5
    .venv/bin/python benchmarks/bench_concurrency.py --annotators 40 --submissions 10 --pause 0.5 --db sqlite

The same processes as ``tests/integration/test_queue_concurrency.py`` (``tests/support/``): each annotator
claims a pair, looks at it ``--pause`` seconds, submits, and goes on; beside them one process exports the
workspace to jsonl again and again and one writes a job's progress every 2 ms. Prints one line a database.
PostgreSQL needs its server binaries (a throw-away cluster is started, as in the tests).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import postgres_server  # noqa: E402
from tests.support.processes import annotate_together, claim_latency, seed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--submissions", type=int, default=20, help="per annotator")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds on each pair (0: back to back)")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    args = parser.parse_args()
    names = [f"annotator{i}" for i in range(args.annotators)]
    for db in args.db.split(","):
        with postgres_server() if db == "postgresql" else nullcontext(None) as url, \
                tempfile.TemporaryDirectory() as folder:
            seed(Path(folder) / "ws", url, names, pairs=args.annotators * args.submissions, overlap=1)
            results, load = annotate_together(Path(folder) / "ws", Path(folder) / "barrier", names,
                                              limit=args.submissions, pause=args.pause,
                                              load_modes=("export", "progress"))
        errors = sum(len(r["errors"]) for r in results)
        print(f"{db}: pause {args.pause} s: {claim_latency(results)}; {errors} errors; beside them "
              f"{load[0]['exports']} exports and {load[1]['writes']} progress writes")


if __name__ == "__main__":
    main()
