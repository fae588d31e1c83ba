"""The ``pairlab`` argument parser and ``main``: one line per user error, exit code 2 (DESIGN §8).

Every error a user can cause prints one line naming the file, line or field and exits non-zero;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from app.cli.verbs import (
    cmd_audit, cmd_demo, cmd_encode, cmd_evaluate, cmd_export, cmd_import, cmd_init, cmd_jobs_cancel, cmd_jobs_list,
    cmd_rebuild_state, cmd_select, cmd_serve, cmd_simulate, cmd_train, cmd_user_add, cmd_worker,
)
from storage.errors import PairlabError, one_line
from storage.exporters import EXPORT_FORMATS
from storage.importers import FORMATS as IMPORT_FORMATS
from storage.models import SPLITS

EXIT_USER_ERROR = 2


def engine_options(p: argparse.ArgumentParser) -> None:
    """``--engine``, ``--address``, ``--workers`` of the verbs that can run on Ray (``encode``, ``select``)."""
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where to encode / score: this process (default) or Ray actors (pip install 'pairlab[ray]')")
    p.add_argument("--address", help="with --engine ray: a running Ray cluster (host:port); default a local Ray")
    p.add_argument("--workers", type=int, help="with --engine ray: actors, one CPU each (default: the cluster's "
                                               "CPUs, 2 for a local Ray)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    parser = argparse.ArgumentParser(prog="pairlab", parents=[common],
                                     description="Active-learning annotation workbench for image-text pairs.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = verb("init", cmd_init, "create a workspace")
    p.add_argument("workspace")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--labels", help="comma-separated label vocabulary")
    labels.add_argument("--labels-file", help="a file with one label per line")
    p.add_argument("--db", help="SQLAlchemy database URL (default: sqlite file in the workspace)")

    p = verb("import", cmd_import, "import pairs from a manifest, COCO, Wikipedia lists or a features file")
    p.add_argument("workspace")
    p.add_argument("source")
    p.add_argument("--format", choices=IMPORT_FORMATS, help="default: guessed from the source")
    p.add_argument("--split", choices=SPLITS, help="split for rows that give none")
    p.add_argument("--add-labels", action="store_true", help="add unknown labels to the vocabulary")
    p.add_argument("--allow-absolute", action="store_true", help="allow absolute image paths outside the manifest folder")

    p = verb("encode", cmd_encode, "compute image and text features (cached by content hash)")
    p.add_argument("workspace")
    p.add_argument("--image-encoder", help="efficientnet-lite0 (default), open_clip:<arch>, precomputed")
    p.add_argument("--text-encoder", help="tfidf (default), minilm, open_clip:<arch>, precomputed")
    engine_options(p)

    p = verb("train", cmd_train, "train a new model version")
    p.add_argument("workspace")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-scratch", dest="warm_start", action="store_false", default=None,
                       help="train from scratch (the default unless [train].warm_start = true)")
    start.add_argument("--warm-start", dest="warm_start", action="store_true", default=None,
                       help="start from the latest version's weights")
    p.add_argument("--epochs", type=int, help="maximum epochs (early stopping may end sooner)")

    p = verb("select", cmd_select, "select pairs for annotation and queue them")
    p.add_argument("workspace")
    p.add_argument("--strategy", default="ascmr", help="a strategy of the registry (docs/selection.md); default ascmr")
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--assign", help="comma-separated annotators to deal the pairs to")
    p.add_argument("--overlap", type=int, help="annotators per pair (default: the workspace's [annotation].overlap)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--user", default="system", help="acting operator (default: the CLI's system user)")
    engine_options(p)

    p = verb("audit", cmd_audit, "rank every pair by how likely its caption does not belong to its image")
    p.add_argument("workspace")
    p.add_argument("--out", help="write the ranking as JSONL, most suspicious first")
    p.add_argument("--top", type=int, help="the most suspicious pairs to queue (with --queue) or print (default 10)")
    p.add_argument("--queue", action="store_true",
                   help="queue the top N as a verification round (the Annotate page asks for the caption verdict)")
    p.add_argument("--latest", action="store_true",
                   help="with --queue: queue from the latest stored audit instead of running a new one")
    p.add_argument("--assign", help="with --queue: comma-separated annotators to deal the pairs to")
    p.add_argument("--overlap", type=int,
                   help="with --queue: annotators per pair (default: the workspace's [annotation].overlap)")
    p.add_argument("--user", default="system", help="acting operator (default: the CLI's system user)")

    p = verb("evaluate", cmd_evaluate, "print retrieval metrics of the latest model as JSON")
    p.add_argument("workspace")
    p.add_argument("--split", default="test", choices=SPLITS)

    p = verb("simulate", cmd_simulate, "replay active learning with the dataset's labels as the oracle")
    p.add_argument("source")
    p.add_argument("--format", choices=IMPORT_FORMATS)
    p.add_argument("--strategies", help="comma-separated strategies and variants (default: every registry strategy)")
    p.add_argument("--initial", type=float, default=0.01)
    p.add_argument("--budget", type=float, default=0.01)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", required=True)
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-scratch", dest="warm_start", action="store_false", default=False,
                       help="retrain each round from scratch (the default)")
    start.add_argument("--warm-start", dest="warm_start", action="store_true",
                       help="start each round's training from the previous round's model")
    p.add_argument("--variants", help="TOML file of named strategy variants to run beside the registry strategies")
    p.add_argument("--evaluate-on", choices=("test", "validation"), default="test",
                   help="'validation' carves a validation split off the pool for tuning and never reads the test split")
    p.add_argument("--jobs", type=int, default=1, help="processes for the strategy x seed runs")
    p.add_argument("--threads", type=int, default=1, help="torch and BLAS threads per process (default 1)")
    p.add_argument("--cache-dir", help="where encoded features are cached (default: OUT/cache); share one between runs")
    p.add_argument("--image-encoder", help="for raw images (default efficientnet-lite0)")
    p.add_argument("--text-encoder", help="for raw texts (default tfidf)")

    p = verb("export", cmd_export, "export the workspace")
    p.add_argument("workspace")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="jsonl")
    p.add_argument("--out", help="output file (default: WS/exports/pairlab.<ext>)")

    p = verb("rebuild-state", cmd_rebuild_state, "recompute the materialised per-pair state from the event log")
    p.add_argument("workspace")

    p = verb("user", None, "manage users")
    user_verbs = p.add_subparsers(dest="user_verb", required=True, metavar="ACTION")
    p = user_verbs.add_parser("add", parents=[common], help="add a user")
    p.set_defaults(handler=cmd_user_add)
    p.add_argument("workspace")
    p.add_argument("name")
    p.add_argument("--role", choices=("annotator", "reviewer", "operator"), required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    p = verb("serve", cmd_serve, "serve the browser workbench and its worker")
    p.add_argument("workspace")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)

    p = verb("worker", cmd_worker, "run background jobs")
    p.add_argument("workspace")

    p = verb("jobs", None, "list and cancel background jobs")
    job_verbs = p.add_subparsers(dest="jobs_verb", required=True, metavar="ACTION")
    p = job_verbs.add_parser("list", parents=[common], help="print the latest jobs, newest first")
    p.set_defaults(handler=cmd_jobs_list)
    p.add_argument("workspace")
    p.add_argument("--limit", type=int, default=20)
    p = job_verbs.add_parser("cancel", parents=[common],
                             help="cancel a queued job, or stop a running one at its next progress report")
    p.set_defaults(handler=cmd_jobs_cancel)
    p.add_argument("workspace")
    p.add_argument("job", type=int)

    p = verb("demo", cmd_demo, "build the sample workspace and serve it on 127.0.0.1, signed in as its operator")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--workspace", default="demo-workspace", help="where to build it (default: ./demo-workspace)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args.handler(args)
    except PairlabError as exc:
        if debug:
            raise
        print(f"pairlab: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("pairlab: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, not a traceback
        if debug:
            raise
        print(f"pairlab: internal error: {exc.__class__.__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1

