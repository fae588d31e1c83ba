"""One function per ``pairlab`` verb: ``cmd_<verb>(args) -> exit code``.

Errors a user can cause are raised as ``storage.errors.PairlabError``; ``app.cli.parser.main``
prints them as one line. Each verb imports what it needs inside, so light verbs start fast: the
storage-only verbs (``init``, ``import``, ``export``, ``user add``, ``jobs``, ``rebuild-state``) open the workspace with
``storage.store.open_store``, which checks the table names and the storage tables of
``pairlab.toml`` in 0.4 s; every verb that runs the learner opens it with
``app.services.settings.open_workspace``, which validates the whole file (3.7 s with torch).
"""
from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from pathlib import Path

from app.cli.progress import count_bar, step_bar
from storage.errors import PairlabError
from storage.exporters import EXPORT_SUFFIX
from storage.importers import FORMATS as IMPORT_FORMATS

log = logging.getLogger("pairlab")


def split_names(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def engine_from(args: argparse.Namespace):
    """The ``--engine ray [--address A] [--workers K]`` of ``encode`` and ``select`` as an
    ``app.services.ray_engine.RayEngine``, or None for ``--engine local``."""
    from app.services.ray_engine import RayEngine

    if args.engine != "ray":
        for flag, value in (("--address", args.address), ("--workers", args.workers)):
            if value is not None:
                raise PairlabError(f"{flag}: only with --engine ray")
        return None
    return RayEngine(address=args.address, workers=args.workers)


def cmd_init(args: argparse.Namespace) -> int:
    from storage.errors import InputError
    from storage.store import init_workspace
    from storage.text import read_text
    from storage.vocabulary import clean_label

    labels = split_names(args.labels)
    if args.labels_file:
        path = Path(args.labels_file)
        for line_no, line in enumerate(read_text(path, "--labels-file").split("\n"), start=1):
            if line.strip():
                try:
                    labels.append(clean_label(line))
                except ValueError as exc:
                    raise InputError(str(path), line_no, "label", str(exc)) from None
    store = init_workspace(args.workspace, labels=labels or None, database_url=args.db)
    log.info("created workspace %s (%d labels, database %s)", store.root, len(labels), store.workspace.database_url)
    return 0


def guess_format(source: Path) -> str:
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
    from storage.importers import check_source, import_source
    from storage.store import open_store

    store = open_store(args.workspace)
    source = check_source(args.source)
    fmt = args.format or guess_format(source)
    update, close = count_bar(f"import {source.name}")
    try:
        report = import_source(store, source, fmt, split=args.split, add_labels=args.add_labels,
                               allow_absolute=args.allow_absolute, progress=update)
    finally:
        close()
    log.info("imported %d pairs (%d already present, %d with labels)%s", report.added, report.skipped,
             report.labelled, f"; new labels: {', '.join(report.labels_added)}" if report.labels_added else "")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from app.services.encode import encode_workspace
    from app.services.settings import open_workspace

    engine = engine_from(args)
    store = open_workspace(args.workspace)
    update, close = step_bar("encode")
    try:
        result = encode_workspace(store, image_encoder=args.image_encoder, text_encoder=args.text_encoder,
                                  progress=update, engine=engine)
    finally:
        close()
    log.info("encoded %d pairs: image %s, text %s", result["pairs"], result["image_encoder"], result["text_encoder"])
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from app.services.settings import open_workspace
    from app.services.train import train_workspace

    store = open_workspace(args.workspace)
    update, close = step_bar("train")
    try:
        info = train_workspace(store, warm_start=args.warm_start, epochs=args.epochs, progress=update)
    finally:
        close()
    log.info("model v%d trained on %d labelled pairs: %s", info.version, info.labelled_count,
             json.dumps({k: v for k, v in info.metrics.items() if k in ("validation", "test")}))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from app.services.settings import open_workspace
    from app.services.train import evaluate_workspace

    print(json.dumps(evaluate_workspace(open_workspace(args.workspace), split=args.split), indent=1))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from app.bench.reports import write_reports
    from app.bench.data import load_simulation_data
    from app.bench.simulate import SimulationConfig, run_simulation
    from app.bench.variants import load_variants
    from learner.selection.strategies import STRATEGY_NAMES
    from learner.training import TrainConfig

    try:
        seeds = tuple(int(s) for s in split_names(args.seeds))
    except ValueError:
        raise PairlabError(f"--seeds: {args.seeds!r} is not a comma-separated list of integers") from None
    variants = load_variants(Path(args.variants)) if args.variants else {}
    config = SimulationConfig(strategies=tuple(split_names(args.strategies)) or STRATEGY_NAMES, initial=args.initial,
                              budget=args.budget, rounds=args.rounds, seeds=seeds,
                              train=TrainConfig(warm_start=args.warm_start), variants=variants,
                              evaluate_on=args.evaluate_on, jobs=args.jobs, threads=args.threads)
    source = Path(args.source)
    if not source.exists():
        raise PairlabError(f"{source}: not found")
    out = Path(args.out)
    cache_dir = Path(args.cache_dir) if args.cache_dir else out / "cache"
    data = load_simulation_data(source, args.format or guess_format(source), cache_dir=cache_dir,
                                carve_seed=seeds[0], image_encoder=args.image_encoder, text_encoder=args.text_encoder)
    results = run_simulation(data, config, progress=lambda message: log.info("%s", message))
    write_reports(results, out)
    log.info("wrote %s, %s and %s", out / "results.json", out / "learning_curves.png", out / "summary.md")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from app.services.select import run_selection
    from app.services.settings import open_workspace
    from storage.users import get_user

    engine = engine_from(args)
    store = open_workspace(args.workspace)
    with store.db.read() as s:
        actor = get_user(s, args.user)
    update, close = step_bar("select")
    try:
        report = run_selection(store, strategy=args.strategy, budget=args.budget, actor=actor,
                               assign=split_names(args.assign), overlap=args.overlap, seed=args.seed,
                               progress=update, engine=engine)
    finally:
        close()
    log.info("round %d: %s selected %d pairs, %d annotation slots queued", report.round_number, report.strategy,
             report.selected, report.queued_slots)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from app.services.audit import check_verification_request, queue_verification, run_audit
    from app.services.settings import open_workspace
    from storage.users import get_user

    assign = split_names(args.assign)
    if not args.queue:
        for given, name in ((args.assign, "--assign"), (args.overlap, "--overlap"), (args.latest, "--latest")):
            if given:
                raise PairlabError(f"{name}: only with --queue")
    elif args.top is None:
        raise PairlabError("--queue: give --top N, how many of the most suspicious pairs to queue")
    if args.latest and args.out:
        raise PairlabError("--out: not with --latest, which runs no audit")
    check_verification_request(args.top, args.overlap, assign)
    store = open_workspace(args.workspace)
    with store.db.read() as s:
        actor = get_user(s, args.user)
        for name in assign:  # before the audit runs, not after
            get_user(s, name)
    run_id = None
    if not args.latest:
        update, close = step_bar("audit")
        try:
            report = run_audit(store, actor=actor, out=Path(args.out) if args.out else None, progress=update,
                               show=10 if args.queue or args.top is None else args.top)
        finally:
            close()
        log.info("audit %d: %d pairs ranked with model v%d%s", report.run_id, report.pairs, report.model_version,
                 f", written to {args.out}" if args.out else "")
        for item in report.top:
            log.info("  %4d. %s  mismatch %.3f", item["rank"], item["id"], item["mismatch"])
        run_id = report.run_id
    if args.queue:
        queued = queue_verification(store, actor=actor, top=args.top, run_id=run_id, assign=assign,
                                    overlap=args.overlap)
        log.info("%s", queued.summary())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from storage.exporters import export_workspace
    from storage.store import open_store

    store = open_store(args.workspace)
    out = Path(args.out) if args.out else store.workspace.subdir("exports") / f"pairlab{EXPORT_SUFFIX[args.format]}"
    update, close = count_bar(f"export {args.format}")
    try:
        report = export_workspace(store, args.format, out, progress=update)
    finally:
        close()
    log.info("wrote %d rows to %s", report.rows, report.path)
    return 0


def cmd_rebuild_state(args: argparse.Namespace) -> int:
    from storage.pair_state import rebuild_pair_states
    from storage.store import open_store

    store = open_store(args.workspace)
    with store.db.write() as s:
        pairs = rebuild_pair_states(s)
    log.info("rebuilt the state of %d pairs from the event log", pairs)
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


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from storage.jobs import recent_jobs
    from storage.store import open_store

    store = open_store(args.workspace)
    try:
        with store.db.read() as s:
            jobs = recent_jobs(s, max(args.limit, 1))
    finally:
        store.close()
    for job in jobs:
        print(f"{job.id}\t{job.kind}\t{job.status}{' (cancel requested)' if job.cancel_requested else ''}\t"
              f"{job.progress:.0%}\t{job.message}")
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    from storage.jobs import request_cancel
    from storage.store import open_store

    store = open_store(args.workspace)
    try:
        with store.db.write() as s:
            job = request_cancel(s, args.job)
    finally:
        store.close()
    if job.status == "cancelled":
        log.info("job %d (%s) cancelled", job.id, job.kind)
    else:
        log.info("job %d (%s) is running: its worker stops it at its next progress report", job.id, job.kind)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.cli.demo import DEMO_OPERATOR, build_demo_workspace
    from app.cli.serve import serve

    store = build_demo_workspace(Path(args.workspace))
    root = store.root
    store.close()
    return serve(root, host="127.0.0.1", port=args.port, auto_login=DEMO_OPERATOR)


def cmd_serve(args: argparse.Namespace) -> int:
    from app.cli.serve import serve

    return serve(args.workspace, host=args.host, port=args.port)


def cmd_worker(args: argparse.Namespace) -> int:
    from app.jobs.worker import run_worker

    run_worker(args.workspace)
    return 0
