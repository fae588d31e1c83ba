"""A workspace: a directory with ``pairlab.toml``, the database, features, models and exports (DESIGN §2).

``pairlab.toml`` is read here once per open. This module owns ``[database]``, ``[annotation]``,
``[import]``, ``[jobs]``, ``[auth]`` and ``[export]``; the learner's tables (``LEARNER_TABLES``) are passed through
as plain tables and turned into the learner's frozen configs by ``app.services.settings`` (``storage``
never imports the learner). Any other table is refused. :func:`parse_table` is the one validator of a table against a
frozen dataclass, shared by both layers.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from storage.errors import InputError, WorkspaceError

CONFIG_NAME = "pairlab.toml"
DATABASE_ENV = "PAIRLAB_DATABASE_URL"
STORAGE_TABLES = ("database", "annotation", "import", "jobs", "auth", "export")
LEARNER_TABLES = ("encoders", "train", "selection", "inference", "audit")  # parsed by app.services.settings


@dataclass(frozen=True)
class DatabaseConfig:
    """url: SQLAlchemy URL; ``sqlite:///pairlab.db`` is relative to the workspace."""

    url: str = "sqlite:///pairlab.db"


@dataclass(frozen=True)
class AnnotationConfig:
    """Queue settings.

    overlap: how many distinct annotators label each selected pair (1 = no overlap).
    lease_minutes: how long a claimed pair stays reserved before it returns to the queue; the open
    Annotate screen renews it (heartbeat) every third of that, so only a closed tab lets it expire.
    suggest_min_map: the model's labels are suggested on Annotate only once its validation mAP
    (``metrics["validation"]["avg"]``) reaches this; above 1 turns suggestions off.
    premark_probability: a suggestion is pre-marked only when the model's probability for it is at
    least this (shown but not marked below; 1.0 never pre-marks) and at least the model's calibrated
    threshold for ``premark_precision``.
    premark_precision: the precision pre-marked labels must show on the workspace's validation pairs
    (95 % lower confidence bound, ``learner.metrics.premark_threshold``); a model with too few
    validation labels to show it pre-marks nothing.
    """

    overlap: int = 1
    lease_minutes: float = 30.0
    suggest_min_map: float = 0.5
    premark_probability: float = 0.9
    premark_precision: float = 0.9

    def __post_init__(self) -> None:
        if self.overlap < 1:
            raise ValueError("overlap: must be >= 1")
        if self.lease_minutes <= 0:
            raise ValueError("lease_minutes: must be > 0")
        if self.suggest_min_map < 0:
            raise ValueError("suggest_min_map: must be >= 0")
        if not 0 < self.premark_probability <= 1:
            raise ValueError("premark_probability: must be in (0, 1]")
        if not 0 < self.premark_precision < 1:
            raise ValueError("premark_precision: must be in (0, 1)")


@dataclass(frozen=True)
class ImportConfig:
    """max_image_pixels: images larger than this are refused (decompression-bomb guard)."""

    max_image_pixels: int = 64_000_000

    def __post_init__(self) -> None:
        if self.max_image_pixels < 1:
            raise ValueError("max_image_pixels: must be >= 1")


@dataclass(frozen=True)
class JobsConfig:
    """How the worker shows it is alive (``storage.jobs``).

    heartbeat_seconds: a running job's worker writes its heartbeat (and reads a cancel request) this often.
    stale_after_seconds: a ``running`` job whose heartbeat is older than this is failed when a worker
    starts or claims a job (its worker died); well above the heartbeat and the 30 s busy-retry bound.
    """

    heartbeat_seconds: float = 5.0
    stale_after_seconds: float = 120.0

    def __post_init__(self) -> None:
        if self.heartbeat_seconds <= 0:
            raise ValueError("heartbeat_seconds: must be > 0")
        if self.stale_after_seconds < 3 * self.heartbeat_seconds:
            raise ValueError("stale_after_seconds: must be at least 3 x heartbeat_seconds")


@dataclass(frozen=True)
class AuthConfig:
    """Sign-in sessions and throttling (``storage.sessions``).

    session_hours: how long a sign-in lasts (a reload, a new tab or a deep link keeps it meanwhile).
    max_failures_per_user / max_failures_per_address: failed sign-ins within ``throttle_minutes`` after
    which further attempts for that user name, or from that address, are refused until the window passes.
    """

    session_hours: float = 12.0
    max_failures_per_user: int = 5
    max_failures_per_address: int = 20
    throttle_minutes: float = 15.0

    def __post_init__(self) -> None:
        for name in ("session_hours", "throttle_minutes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0")
        for name in ("max_failures_per_user", "max_failures_per_address"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")


@dataclass(frozen=True)
class ExportConfig:
    """Where exported image references point (Label Studio export; DESIGN §7 Export).

    image_root: write each image path relative to this folder (images outside it fail the export).
    image_url: a prefix put before that relative path (URL-quoted), e.g. Label Studio's local-files
    ``/data/local-files/?d=``; needs ``image_root``. Both unset: absolute paths.
    """

    image_root: str | None = None
    image_url: str | None = None

    def __post_init__(self) -> None:
        if self.image_url is not None and self.image_root is None:
            raise ValueError("image_url: needs image_root (the folder the URL paths are relative to)")
        if self.image_root is not None and not os.path.isabs(self.image_root):
            raise ValueError(f"image_root: must be an absolute path, got {self.image_root!r}")


@dataclass(frozen=True)
class WorkspaceConfig:
    """The parsed ``pairlab.toml``.

    learner: the raw ``LEARNER_TABLES`` that are present (``app.services.settings`` validates them).
    """

    database_url: str = DatabaseConfig.url
    annotation: AnnotationConfig = AnnotationConfig()
    imports: ImportConfig = ImportConfig()
    jobs: JobsConfig = JobsConfig()
    auth: AuthConfig = AuthConfig()
    export: ExportConfig = ExportConfig()
    learner: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class Workspace:
    """Compared by identity: one object per open, so derived settings can be cached per workspace."""

    root: Path
    config: WorkspaceConfig

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def database_url(self) -> str:
        """The effective URL: ``PAIRLAB_DATABASE_URL`` wins, relative SQLite paths resolve inside the workspace."""
        url = os.environ.get(DATABASE_ENV) or self.config.database_url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
            url = prefix + str((self.root / url[len(prefix):]).resolve())
        return url

    def subdir(self, name: str) -> Path:
        """``features``, ``models``, ``exports`` or ``cache``; created on first use."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


# --------------------------------------------------------------------------- one table validator

_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a table"}


def _accepts(expected: Any, value: Any) -> bool:
    """Whether a TOML value fits a field annotation (bool is not an int; an int is a float)."""
    if expected is Any:
        return True
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(expected))
    if origin is not None:
        expected = origin
    if expected in (dict, Mapping) or (isinstance(expected, type) and dataclasses.is_dataclass(expected)):
        return isinstance(value, dict)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def _describe(expected: Any) -> str:
    args = [a for a in typing.get_args(expected) if a is not type(None)] \
        if typing.get_origin(expected) in (typing.Union, types.UnionType) else [expected]
    names = []
    for arg in args:
        arg = typing.get_origin(arg) or arg
        names.append(_TYPE_NAMES.get(arg, "a table" if dataclasses.is_dataclass(arg) else getattr(arg, "__name__", str(arg))))
    return " or ".join(names)


def parse_table(cls: type, table: Any, *, path: str | Path, name: str) -> Any:
    """An instance of the frozen dataclass ``cls`` from the TOML table ``[name]`` of ``path``.

    Unknown keys, values of the wrong type and values the dataclass refuses (``ValueError`` from
    its ``__post_init__``) raise ``InputError`` naming the file, the table and the key. A field
    typed as a dataclass is parsed from a sub-table, recursively (``[selection.ascmr].weights``).
    """
    if not isinstance(table, dict):
        raise InputError(str(path), None, f"[{name}]", "must be a table")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise InputError(str(path), None, f"[{name}].{unknown[0]}", f"unknown key; allowed: {', '.join(allowed)}")
    values = {}
    for key, value in table.items():
        expected = hints[key]
        if not _accepts(expected, value):
            raise InputError(str(path), None, f"[{name}].{key}", f"expected {_describe(expected)}, got {value!r}")
        nested = next((a for a in (expected, *typing.get_args(expected))
                       if isinstance(a, type) and dataclasses.is_dataclass(a)), None)
        values[key] = parse_table(nested, value, path=path, name=f"{name}.{key}") if nested else value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise InputError(str(path), None, f"[{name}]", str(exc)) from None


# --------------------------------------------------------------------------- reading and writing

def load_workspace(root: str | Path) -> Workspace:
    """Read ``root/pairlab.toml``; raise ``WorkspaceError`` when it is not a workspace and
    ``InputError`` (file, table, key) for an unknown table or a bad value of the storage tables."""
    root = Path(root).resolve()
    path = root / CONFIG_NAME
    if not path.is_file():
        raise WorkspaceError(f"{root}: not a pairlab workspace (no {CONFIG_NAME}); run 'pairlab init {root}' first")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(str(path), getattr(exc, "lineno", None), "toml", str(exc)) from None
    except UnicodeDecodeError as exc:
        raise InputError(str(path), None, "toml", f"not UTF-8 ({exc.reason})") from None
    known = (*STORAGE_TABLES, *LEARNER_TABLES)
    for table, value in raw.items():
        if table not in known:
            raise InputError(str(path), None, f"[{table}]", f"unknown table; allowed: {', '.join(known)}")
        if not isinstance(value, dict):
            raise InputError(str(path), None, f"[{table}]", "must be a table")
    database = parse_table(DatabaseConfig, raw.get("database", {}), path=path, name="database")
    config = WorkspaceConfig(
        database_url=database.url,
        annotation=parse_table(AnnotationConfig, raw.get("annotation", {}), path=path, name="annotation"),
        imports=parse_table(ImportConfig, raw.get("import", {}), path=path, name="import"),
        jobs=parse_table(JobsConfig, raw.get("jobs", {}), path=path, name="jobs"),
        auth=parse_table(AuthConfig, raw.get("auth", {}), path=path, name="auth"),
        export=parse_table(ExportConfig, raw.get("export", {}), path=path, name="export"),
        learner={k: raw[k] for k in LEARNER_TABLES if k in raw},
    )
    return Workspace(root, config)


def write_config(root: Path, config: WorkspaceConfig) -> None:
    """Write ``pairlab.toml`` atomically (temp file, then rename)."""
    doc: dict[str, Any] = {
        "database": {"url": config.database_url},
        "annotation": asdict(config.annotation),
        "import": asdict(config.imports),
        "jobs": asdict(config.jobs),
        "auth": asdict(config.auth),
    }
    export = {k: v for k, v in asdict(config.export).items() if v is not None}
    if export:
        doc["export"] = export
    doc.update({k: v for k, v in config.learner.items() if v})
    tmp = root / (CONFIG_NAME + ".tmp")
    tmp.write_text("# pairlab workspace configuration\n" + tomli_w.dumps(doc), encoding="utf-8")
    os.replace(tmp, root / CONFIG_NAME)
