"""The workspace's model versions: the latest one, the one fit to use now, checkpoints loaded once.

A model version remembers the signatures of the feature files it was trained on; :func:`current_model`
refuses one whose features were re-encoded since (a new TF-IDF fit is a new feature space of the
same size: mixing the two gives silent nonsense).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from app.services.settings import EncoderChoice, encoder_choice
from learner.checkpoint import load_checkpoint
from learner.model import CrossModalModel
from storage.errors import NotFoundError, PairlabError
from storage.features import feature_signature
from storage.model_versions import ModelVersionInfo, latest_model_version
from storage.store import Store


def latest_model(store: Store) -> ModelVersionInfo | None:
    with store.db.read() as s:
        return latest_model_version(s)


def feature_signatures(store: Store, choice: EncoderChoice) -> dict[str, str]:
    """modality -> signature of the feature set the workspace now has for ``choice``."""
    with store.db.read() as s:
        try:
            return {m: feature_signature(s, m, name) for m, name in choice.names().items()}
        except NotFoundError as exc:
            raise PairlabError(str(exc)) from None


def current_model(store: Store) -> ModelVersionInfo:
    """The latest model, refusing one trained on features that were re-encoded since."""
    info = latest_model(store)
    if info is None:
        raise PairlabError("no trained model yet; run 'pairlab train' first")
    if info.features != feature_signatures(store, encoder_choice(store)):
        raise PairlabError(f"the features changed since model v{info.version} was trained (re-encoded or other "
                           "encoders); run 'pairlab train' first")
    return info


def cached_model(path: str) -> CrossModalModel:
    """A checkpoint loaded once per process (files are written once per version, never changed)."""
    return _load_model(path, Path(path).stat().st_mtime)


@lru_cache(maxsize=4)
def _load_model(path: str, _mtime: float) -> CrossModalModel:
    return load_checkpoint(path)[0]
