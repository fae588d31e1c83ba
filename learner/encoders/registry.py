"""The encoder registry: ``get_encoder(name, **options)`` (DESIGN §3).

``options`` are the fields of the encoder's config dataclass; unknown names are
rejected with the allowed ones listed. Optional encoders import their packages
lazily and raise :class:`MissingExtraError` naming the pip extra.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from learner.encoders.base import Encoder
from learner.encoders.efficientnet import EfficientNetLite0Config, EfficientNetLite0Encoder
from learner.encoders.minilm import MiniLMConfig, MiniLMEncoder
from learner.encoders.openclip import PREFIX as OPEN_CLIP_PREFIX
from learner.encoders.openclip import OpenClipConfig, OpenClipEncoder, parse_arch
from learner.encoders.precomputed import PrecomputedConfig, PrecomputedEncoder
from learner.encoders.tfidf import TfidfConfig, TfidfEncoder

#: name -> (config dataclass, encoder class). ``open_clip:<arch>`` is handled by prefix.
_REGISTRY: dict[str, tuple[type, Callable[[Any], Encoder]]] = {
    "efficientnet-lite0": (EfficientNetLite0Config, EfficientNetLite0Encoder),
    "tfidf": (TfidfConfig, TfidfEncoder),
    "minilm": (MiniLMConfig, MiniLMEncoder),
    "precomputed": (PrecomputedConfig, PrecomputedEncoder),
}

#: Every accepted name, as shown in error messages.
ENCODER_NAMES: tuple[str, ...] = (*_REGISTRY, f"{OPEN_CLIP_PREFIX}<arch>")
DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
DEFAULT_TEXT_ENCODER = "tfidf"


def _make_config(config_cls: type, name: str, options: dict[str, Any]) -> Any:
    fields = dataclasses.fields(config_cls)
    allowed = [f.name for f in fields]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"encoder {name!r}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    required = [
        f.name for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in options
    ]
    if required:
        raise ValueError(f"encoder {name!r}: missing required option(s) {', '.join(required)}")
    return config_cls(**options)


def get_encoder(name: str, **options: Any) -> Encoder:
    """Build the encoder registered as ``name`` with its config fields given as ``options``.

    Names: ``efficientnet-lite0`` (image), ``tfidf`` (text, call ``fit``), ``minilm``
    (text, extra), ``open_clip:<arch>`` (both, extra, ``weights_path=`` required),
    ``precomputed`` (both, ``path=`` required). Raises ValueError listing the allowed
    names or options.
    """
    if name.startswith(OPEN_CLIP_PREFIX):
        arch = parse_arch(name)
        if "arch" in options:
            raise ValueError(f"encoder {name!r}: give the architecture in the name only, not as arch=")
        return OpenClipEncoder(_make_config(OpenClipConfig, name, {"arch": arch, **options}))
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoder {name!r}; allowed: {', '.join(ENCODER_NAMES)}")
    config_cls, encoder_cls = _REGISTRY[name]
    return encoder_cls(_make_config(config_cls, name, options))
