"""The workspace's one configuration object, :class:`Settings`: ``pairlab.toml`` parsed and validated once.

``storage.workspace`` reads the file, refuses unknown tables and parses the tables it owns
(``[database]``, ``[annotation]``, ``[import]``, ``[jobs]``, ``[auth]``, ``[export]``). Here the learner's
tables become the learner's frozen configs through the same validator (``storage.workspace.parse_table``): ``[encoders]`` ->
:class:`EncoderSettings`, ``[train]`` -> ``TrainConfig`` (``warm_start`` included),
``[selection.<strategy>]`` -> that strategy's config, ``[inference]`` -> ``InferenceConfig``, ``[audit]`` -> ``AuditConfig``.
Every error names the file, the table and the key. :func:`open_workspace` opens a store and
validates its settings at once, so a bad file fails when the workspace loads, not halfway
through a job.
"""
from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from learner.audit import AuditConfig
from learner.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, ENCODER_NAMES
from learner.encoders.openclip import PREFIX as OPEN_CLIP_PREFIX
from learner.inference import InferenceConfig
from learner.selection.strategies import STRATEGY_NAMES, QueryStrategy, build_strategy, strategy_config_class
from learner.training import TrainConfig
from storage.errors import InputError
from storage.features import PRECOMPUTED, list_features
from storage.store import Store, open_store
from storage.workspace import AnnotationConfig, AuthConfig, ExportConfig, ImportConfig, JobsConfig, Workspace, \
    parse_table


@dataclass(frozen=True)
class EncoderSettings:
    """``[encoders]``: encoder names per modality (unset: precomputed features when the workspace has
    them, else EfficientNet-Lite0 and TF-IDF) and their options (e.g. ``weights_path`` for
    ``open_clip:<arch>``)."""

    image: str | None = None
    text: str | None = None
    image_options: dict[str, Any] = field(default_factory=dict)
    text_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for modality in ("image", "text"):
            name = getattr(self, modality)
            if name is not None and name not in ENCODER_NAMES and not name.startswith(OPEN_CLIP_PREFIX):
                raise ValueError(f"{modality}: unknown encoder {name!r}; allowed: {', '.join(ENCODER_NAMES)}")


@dataclass(frozen=True)
class EncoderChoice:
    """The encoders in use: ``EncoderSettings`` with unset names resolved against the workspace."""

    image: str
    text: str
    image_options: dict[str, Any] = field(default_factory=dict)
    text_options: dict[str, Any] = field(default_factory=dict)

    def names(self) -> dict[str, str]:
        return {"image": self.image, "text": self.text}


@dataclass(frozen=True)
class Settings:
    """Everything ``pairlab.toml`` configures; ``selection`` maps a strategy name to its config
    (strategies without a ``[selection.<name>]`` table use their defaults)."""

    path: Path
    database_url: str
    annotation: AnnotationConfig
    imports: ImportConfig
    jobs: JobsConfig = JobsConfig()
    auth: AuthConfig = AuthConfig()
    export: ExportConfig = ExportConfig()
    encoders: EncoderSettings = EncoderSettings()
    train: TrainConfig = TrainConfig()
    selection: Mapping[str, Any] = field(default_factory=dict)
    inference: InferenceConfig = InferenceConfig()
    audit: AuditConfig = AuditConfig()

    def strategy(self, name: str) -> QueryStrategy:
        """The query strategy ``name`` with this workspace's options for it."""
        return build_strategy(name, self.selection.get(name))


def parse_strategy_options(strategy: str, options: dict[str, Any], *, path: Path, name: str) -> Any:
    """The config of registry strategy ``strategy`` from the TOML table ``[name]`` (None for a strategy
    without options, which then must be empty); shared by ``[selection.<strategy>]`` and ``--variants``."""
    config_class = strategy_config_class(strategy)
    if config_class is None:
        if options:
            raise InputError(str(path), None, f"[{name}]", f"strategy {strategy!r} takes no options")
        return None
    return parse_table(config_class, options, path=path, name=name)


def parse_settings(workspace: Workspace) -> Settings:
    """Validate the learner's tables of ``workspace`` (see the module docstring)."""
    path, tables = workspace.config_path, workspace.config.learner
    selection = tables.get("selection", {})
    configs = {}
    for name, table in selection.items():
        if name not in STRATEGY_NAMES:
            raise InputError(str(path), None, f"[selection.{name}]",
                             f"unknown strategy; allowed: {', '.join(STRATEGY_NAMES)}")
        config = parse_strategy_options(name, table, path=path, name=f"selection.{name}")
        if config is not None:
            configs[name] = config
    return Settings(
        path=path,
        database_url=workspace.config.database_url,
        annotation=workspace.config.annotation,
        imports=workspace.config.imports,
        jobs=workspace.config.jobs,
        auth=workspace.config.auth,
        export=workspace.config.export,
        encoders=parse_table(EncoderSettings, tables.get("encoders", {}), path=path, name="encoders"),
        train=parse_table(TrainConfig, tables.get("train", {}), path=path, name="train"),
        selection=configs,
        inference=parse_table(InferenceConfig, tables.get("inference", {}), path=path, name="inference"),
        audit=parse_table(AuditConfig, tables.get("audit", {}), path=path, name="audit"),
    )


_PARSED: weakref.WeakKeyDictionary[Workspace, Settings] = weakref.WeakKeyDictionary()


def settings(store: Store) -> Settings:
    """The store's settings, parsed on first use and kept for the life of its ``Workspace`` object."""
    found = _PARSED.get(store.workspace)
    if found is None:
        found = _PARSED[store.workspace] = parse_settings(store.workspace)
    return found


def open_workspace(root: str | Path) -> Store:
    """Open a workspace and validate all of its settings: every entry point (CLI, worker, web) uses this."""
    store = open_store(root)
    try:
        settings(store)
    except BaseException:
        store.close()
        raise
    return store


def encoder_choice(store: Store) -> EncoderChoice:
    """The configured encoders; an unset name falls back to precomputed features when the workspace
    has them, else to the defaults (EfficientNet-Lite0, TF-IDF)."""
    configured = settings(store).encoders
    with store.db.read() as s:
        precomputed = {f.modality for f in list_features(s) if f.encoder == PRECOMPUTED}
    names = {m: getattr(configured, m) or (PRECOMPUTED if m in precomputed else default)
             for m, default in (("image", DEFAULT_IMAGE_ENCODER), ("text", DEFAULT_TEXT_ENCODER))}
    return EncoderChoice(names["image"], names["text"], dict(configured.image_options),
                         dict(configured.text_options))
