"""The ``pairlab`` command line (DESIGN §8).

Every error a user can cause prints one line naming the file, line or field and exits non-zero;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from storage.errors import PairlabError
from storage.exporters import EXPORT_FORMATS, EXPORT_SUFFIX
from storage.importers import FORMATS as IMPORT_FORMATS
from storage.models import SPLITS

log = logging.getLogger("pairlab")

EXIT_USER_ERROR = 2
STRATEGIES = ("ascmr", "random", "entropy", "bald", "coreset", "badge", "inter")


def _progress_bar(description: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar fed by ``(done, total)`` callbacks, and a function that closes it."""
    bar = tqdm(desc=description, unit="item", disable=None, file=sys.stderr)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()

    return update, bar.close


def _split_names(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


# --- verbs -----------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    from storage.store import init_workspace

    labels = _split_names(args.labels)
    if args.labels_file:
        path = Path(args.labels_file)
        if not path.is_file():
            raise PairlabError(f"{path}: --labels-file not found")
        from storage.errors import InputError
        from storage.vocabulary import clean_label

        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    labels.append(clean_label(line))
                except ValueError as exc:
                    raise InputError(str(path), line_no, "label", str(exc)) from None
    store = init_workspace(args.workspace, labels=labels or None, database_url=args.db)
    log.info("created workspace %s (%d labels, database %s)", store.root, len(labels), store.workspace.database_url)
    return 0


def _guess_format(source: Path) -> str:
    if source.is_dir():
        if (source / "categories.list").is_file():
            return "wiki"
        if (source / "annotations").is_dir():
            return "coco"
    elif source.suffix.lower() in (".jsonl", ".csv"):
        return "manifest"
    elif source.suffix.lower() in (".npz", ".mat"):
        return "features"
    elif source.name.startswith("captions_") and source.suffix == ".json":
        return "coco"
    raise PairlabError(f"{source}: cannot tell the format; give --format ({', '.join(IMPORT_FORMATS)})")


def cmd_import(args: argparse.Namespace) -> int:
    from storage.importers import import_source
    from storage.store import open_store

    store = open_store(args.workspace)
    source = Path(args.source)
    if not source.exists():
        raise PairlabError(f"{source}: not found")
    fmt = args.format or _guess_format(source)
    update, close = _progress_bar(f"import {source.name}")
    try:
        report = import_source(store, source, fmt, split=args.split, add_labels=args.add_labels,
                               allow_absolute=args.allow_absolute, progress=update)
    finally:
        close()
    log.info("imported %d pairs (%d already present, %d with labels)%s", report.added, report.skipped,
             report.labelled, f"; new labels: {', '.join(report.labels_added)}" if report.labels_added else "")
    return 0


def _job_progress(description: str) -> tuple[Callable[[float, str], None], Callable[[], None]]:
    """A percentage bar fed by ``(fraction, message)`` callbacks, and a function that closes it."""
    bar = tqdm(desc=description, total=100, unit="%", disable=None, file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def update(fraction: float, message: str) -> None:
        bar.n = round(100 * fraction)
        bar.set_postfix_str(message[:60], refresh=True)

    return update, bar.close


def cmd_encode(args: argparse.Namespace) -> int:
    from app.services import encode_workspace
    from storage.store import open_store

    store = open_store(args.workspace)
    update, close = _job_progress("encode")
    try:
        result = encode_workspace(store, image_encoder=args.image_encoder, text_encoder=args.text_encoder,
                                  progress=update)
    finally:
        close()
    log.info("encoded %d pairs: image %s, text %s", result["pairs"], result["image_encoder"], result["text_encoder"])
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from app.services import train_workspace
    from storage.store import open_store

    store = open_store(args.workspace)
    update, close = _job_progress("train")
    try:
        info = train_workspace(store, warm_start=args.warm_start, epochs=args.epochs, progress=update)
    finally:
        close()
    log.info("model v%d trained on %d labelled pairs: %s", info.version, info.labelled_count,
             json.dumps({k: v for k, v in info.metrics.items() if k in ("validation", "test")}))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from app.services import evaluate_workspace
    from storage.store import open_store

    print(json.dumps(evaluate_workspace(open_store(args.workspace), split=args.split), indent=1))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from app.simulate import SimulationConfig, load_simulation_data, load_variants, run_simulation
    from app.reports import write_reports

    try:
        seeds = tuple(int(s) for s in _split_names(args.seeds))
    except ValueError:
        raise PairlabError(f"--seeds: {args.seeds!r} is not a comma-separated list of integers") from None
    variants = load_variants(Path(args.variants)) if args.variants else {}
    config = SimulationConfig(strategies=tuple(_split_names(args.strategies)), initial=args.initial,
                              budget=args.budget, rounds=args.rounds, seeds=seeds, warm_start=args.warm_start,
                              variants=variants, evaluate_on=args.evaluate_on, jobs=args.jobs)
    source = Path(args.source)
    if not source.exists():
        raise PairlabError(f"{source}: not found")
    out = Path(args.out)
    data = load_simulation_data(source, args.format or _guess_format(source), cache_dir=out / "cache",
                                carve_seed=seeds[0], image_encoder=args.image_encoder, text_encoder=args.text_encoder)
    results = run_simulation(data, config, progress=lambda message: log.info("%s", message))
    write_reports(results, out)
    log.info("wrote %s, %s and %s", out / "results.json", out / "learning_curves.png", out / "summary.md")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from app.services import run_selection
    from storage.store import open_store
    from storage.users import get_user

    store = open_store(args.workspace)
    with store.db.read() as s:
        actor = get_user(s, args.user)
    update, close = _job_progress("select")
    try:
        report = run_selection(store, strategy=args.strategy, budget=args.budget, actor=actor,
                               assign=_split_names(args.assign), overlap=args.overlap, seed=args.seed,
                               progress=update)
    finally:
        close()
    log.info("round %d: %s selected %d pairs, %d annotation slots queued", report.round_number, report.strategy,
             report.selected, report.queued_slots)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from storage.exporters import export_workspace
    from storage.store import open_store

    store = open_store(args.workspace)
    out = Path(args.out) if args.out else store.workspace.subdir("exports") / f"pairlab{EXPORT_SUFFIX[args.format]}"
    update, close = _progress_bar(f"export {args.format}")
    try:
        report = export_workspace(store, args.format, out, progress=update)
    finally:
        close()
    log.info("wrote %d rows to %s", report.rows, report.path)
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from storage.store import open_store
    from storage.users import add_user

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise PairlabError("password: the two entries differ")
    else:
        raise PairlabError("password: give --password-stdin when standard input is not a terminal")
    store = open_store(args.workspace)
    with store.db.write() as s:
        user = add_user(s, args.name, args.role, password)
    log.info("added %s (%s)", user.name, user.role)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import DEMO_OPERATOR, build_demo_workspace
    from app.serve import serve

    store = build_demo_workspace(Path(args.workspace))
    root = store.root
    store.close()
    return serve(root, host="127.0.0.1", port=args.port, auto_login=DEMO_OPERATOR)


def cmd_serve(args: argparse.Namespace) -> int:
    from app.serve import serve

    return serve(args.workspace, host=args.host, port=args.port)


def cmd_worker(args: argparse.Namespace) -> int:
    from app.worker import run_worker

    run_worker(args.workspace)
    return 0


# --- parser ----------------------------------------------------------------------------------

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
    p.add_argument("--strategy", choices=STRATEGIES, default="ascmr")
    p.add_argument("--budget", type=int, required=True)
    p.add_argument("--assign", help="comma-separated annotators to deal the pairs to")
    p.add_argument("--overlap", type=int, help="annotators per pair (default: the workspace's [annotation].overlap)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--user", default="system", help="acting operator (default: the CLI's system user)")

    p = verb("evaluate", cmd_evaluate, "print retrieval metrics of the latest model as JSON")
    p.add_argument("workspace")
    p.add_argument("--split", default="test", choices=SPLITS)

    p = verb("simulate", cmd_simulate, "replay active learning with the dataset's labels as the oracle")
    p.add_argument("source")
    p.add_argument("--format", choices=IMPORT_FORMATS)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
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
    p.add_argument("--jobs", type=int, default=1, help="processes for the strategy x seed runs (one torch thread each)")
    p.add_argument("--image-encoder", help="for raw images (default efficientnet-lite0)")
    p.add_argument("--text-encoder", help="for raw texts (default tfidf)")

    p = verb("export", cmd_export, "export the workspace")
    p.add_argument("workspace")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="jsonl")
    p.add_argument("--out", help="output file (default: WS/exports/pairlab.<ext>)")

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
        print(f"pairlab: error: {exc}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
