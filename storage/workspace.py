"""A workspace: a directory with ``pairlab.toml``, the database, features, models and exports (DESIGN §2)."""
from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from storage.errors import InputError, WorkspaceError

CONFIG_NAME = "pairlab.toml"
DATABASE_ENV = "PAIRLAB_DATABASE_URL"


@dataclass(frozen=True)
class AnnotationConfig:
    """Queue settings.

    overlap: how many distinct annotators label each selected pair (1 = no overlap).
    lease_minutes: how long a claimed pair stays reserved before it returns to the queue.
    """

    overlap: int = 1
    lease_minutes: float = 30.0


@dataclass(frozen=True)
class ImportConfig:
    """max_image_pixels: images larger than this are refused (decompression-bomb guard)."""

    max_image_pixels: int = 64_000_000


@dataclass(frozen=True)
class WorkspaceConfig:
    """The parsed ``pairlab.toml``.

    database_url: SQLAlchemy URL; ``sqlite:///pairlab.db`` is relative to the workspace.
    learner: the raw ``[encoders]``, ``[train]`` and ``[selection]`` tables; ``app`` turns them into
    the learner's own frozen configs, so ``storage`` never imports the learner.
    """

    database_url: str = "sqlite:///pairlab.db"
    annotation: AnnotationConfig = AnnotationConfig()
    imports: ImportConfig = ImportConfig()
    learner: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Workspace:
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


def _section(raw: dict, name: str, cls: type, path: Path):
    table = raw.get(name, {})
    allowed = set(cls.__dataclass_fields__)
    unknown = set(table) - allowed
    if unknown:
        raise InputError(str(path), None, f"[{name}].{sorted(unknown)[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
    try:
        return cls(**table)
    except TypeError as exc:
        raise InputError(str(path), None, f"[{name}]", str(exc)) from None


def load_workspace(root: str | Path) -> Workspace:
    """Read ``root/pairlab.toml``; raise ``WorkspaceError`` when it is not a workspace."""
    root = Path(root).resolve()
    path = root / CONFIG_NAME
    if not path.is_file():
        raise WorkspaceError(f"{root}: not a pairlab workspace (no {CONFIG_NAME}); run 'pairlab init {root}' first")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(str(path), getattr(exc, "lineno", None), "toml", str(exc)) from None
    annotation = _section(raw, "annotation", AnnotationConfig, path)
    if annotation.overlap < 1:
        raise InputError(str(path), None, "[annotation].overlap", "must be >= 1")
    if annotation.lease_minutes <= 0:
        raise InputError(str(path), None, "[annotation].lease_minutes", "must be > 0")
    config = WorkspaceConfig(
        database_url=raw.get("database", {}).get("url", WorkspaceConfig.database_url),
        annotation=annotation,
        imports=_section(raw, "import", ImportConfig, path),
        learner={k: dict(raw.get(k, {})) for k in ("encoders", "train", "selection")},
    )
    return Workspace(root, config)


def write_config(root: Path, config: WorkspaceConfig) -> None:
    """Write ``pairlab.toml`` atomically (temp file, then rename)."""
    doc: dict[str, Any] = {
        "database": {"url": config.database_url},
        "annotation": asdict(config.annotation),
        "import": asdict(config.imports),
    }
    doc.update({k: v for k, v in config.learner.items() if v})
    tmp = root / (CONFIG_NAME + ".tmp")
    tmp.write_text("# pairlab workspace configuration\n" + tomli_w.dumps(doc), encoding="utf-8")
    os.replace(tmp, root / CONFIG_NAME)
