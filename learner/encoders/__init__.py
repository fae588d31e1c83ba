"""Frozen feature extractors (DESIGN §3): a registry of named encoders and a content-hash cache.

    from learner.encoders import get_encoder, encode_images, encode_texts

    image_enc = get_encoder("efficientnet-lite0")
    X = encode_images(image_enc, paths, cache_dir=ws / "cache" / "features")   # (N, 1280) float32
    text_enc = get_encoder("tfidf").fit(captions)
    text_enc.save(ws / "encoders" / "tfidf.joblib")
    T = encode_texts(text_enc, captions, cache_dir=ws / "cache" / "features")   # (N, <=512) float32

See docs/encoders.md for dimensions, licences, the cache layout and throughput.
"""
from learner.encoders.base import (
    Encoder,
    EncoderError,
    ImageDecodeError,
    MissingExtraError,
    NotFittedError,
    ProgressFn,
    UnsupportedModalityError,
)
from learner.encoders.cache import FeatureCache, encode_images, encode_texts
from learner.encoders.efficientnet import EfficientNetLite0Config, EfficientNetLite0Encoder
from learner.encoders.minilm import MiniLMConfig, MiniLMEncoder
from learner.encoders.openclip import OpenClipConfig, OpenClipEncoder
from learner.encoders.precomputed import PrecomputedConfig, PrecomputedEncoder, save_features
from learner.encoders.registry import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER, ENCODER_NAMES, get_encoder
from learner.encoders.tfidf import TfidfConfig, TfidfEncoder

__all__ = [
    "DEFAULT_IMAGE_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "ENCODER_NAMES",
    "EfficientNetLite0Config",
    "EfficientNetLite0Encoder",
    "Encoder",
    "EncoderError",
    "FeatureCache",
    "ImageDecodeError",
    "MiniLMConfig",
    "MiniLMEncoder",
    "MissingExtraError",
    "NotFittedError",
    "OpenClipConfig",
    "OpenClipEncoder",
    "PrecomputedConfig",
    "PrecomputedEncoder",
    "ProgressFn",
    "TfidfConfig",
    "TfidfEncoder",
    "UnsupportedModalityError",
    "encode_images",
    "encode_texts",
    "get_encoder",
    "save_features",
]
