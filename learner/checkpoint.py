"""Atomic model checkpoints: a crash while saving leaves the previous file intact.

The file is a ``torch.save`` dict of plain types only (hyperparameters, state dict, metadata as
JSON text), so it loads with ``weights_only=True``, never unpickling arbitrary objects.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from learner.model import CrossModalModel

FORMAT_VERSION = 1


def save_checkpoint(model: CrossModalModel, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` and JSON-serialisable ``metadata`` to ``path`` atomically.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, and the file
    then replaces ``path`` with ``os.replace`` (atomic on POSIX and Windows). Returns the path.
    """
    path = Path(path)
    try:
        meta_json = json.dumps(metadata or {})
    except TypeError as exc:
        raise ValueError(f"metadata: must be JSON-serialisable ({exc})") from None
    payload = {"format_version": FORMAT_VERSION, "hparams": dict(model.hparams),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "metadata": meta_json}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> tuple[CrossModalModel, dict[str, Any]]:
    """Rebuild the model from a checkpoint's stored hyperparameters; returns (model in eval mode, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format_version {payload.get('format_version')!r}")
    h = payload["hparams"]
    model = CrossModalModel(h["image_dim"], h["text_dim"], h["num_classes"], dim=h["dim"], hidden=h["hidden"],
                            dropout=h["dropout"], logvar_init=h["logvar_init"], logit_scale=h["logit_scale"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, json.loads(payload["metadata"])
