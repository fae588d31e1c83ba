"""Unit tests of learner.encoders: registry errors, configs, preprocessing shapes, tfidf and the cache."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.feature_extraction.text import TfidfVectorizer

from learner.encoders import (
    ENCODER_NAMES,
    EfficientNetLite0Config,
    FeatureCache,
    ImageDecodeError,
    MissingExtraError,
    NotFittedError,
    TfidfConfig,
    TfidfEncoder,
    UnsupportedModalityError,
    encode_images,
    encode_texts,
    get_encoder,
    save_features,
)
from learner.encoders.cache import hash_texts
from learner.encoders.images import center_crop_box, iter_image_batches, load_center_crop, normalize_batch, open_image
from learner.encoders.openclip import _load_and_preprocess
from learner.encoders.tfidf import char_wb_ngrams, is_space_separated

CORPUS = [
    "a cat sleeps on the sofa",
    "a small cat sleeping on a couch",
    "a red bus drives down the street",
    "a double decker bus on a city street",
    "two dogs play with a ball in the park",
    "a dog catches a frisbee in the grass",
]


# --- registry -------------------------------------------------------------------------------

def test_unknown_encoder_lists_allowed_names():
    with pytest.raises(ValueError) as err:
        get_encoder("resnet50")
    for name in ("efficientnet-lite0", "tfidf", "minilm", "precomputed", "open_clip:<arch>"):
        assert name in str(err.value)
    assert set(ENCODER_NAMES) >= {"efficientnet-lite0", "tfidf", "minilm", "precomputed"}


def test_unknown_option_lists_allowed_options():
    with pytest.raises(ValueError, match=r"unknown option\(s\) n_dims; allowed: max_dim"):
        get_encoder("tfidf", n_dims=3)


def test_missing_required_option_is_named():
    with pytest.raises(ValueError, match="missing required option.*path"):
        get_encoder("precomputed")


@pytest.mark.parametrize("name", ["open_clip:", "open_clip:  "])
def test_open_clip_needs_an_architecture(name):
    with pytest.raises(ValueError, match="open_clip:<arch>"):
        get_encoder(name, weights_path="/nonexistent.pt")


def test_open_clip_needs_local_weights(tmp_path):
    with pytest.raises(ValueError, match="weights_path"):
        get_encoder("open_clip:ViT-B-32")
    with pytest.raises(FileNotFoundError, match="weights_path"):
        get_encoder("open_clip:ViT-B-32", weights_path=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="architecture in the name"):
        get_encoder("open_clip:ViT-B-32", arch="RN50", weights_path=str(tmp_path / "missing.pt"))


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is not None, reason="open_clip_torch is installed")
def test_open_clip_missing_package_names_the_extra(tmp_path):
    weights = tmp_path / "vit-b-32.pt"
    weights.write_bytes(b"not read before the package check")
    with pytest.raises(MissingExtraError, match=r"pip install 'pairlab\[clip\]'"):
        get_encoder("open_clip:ViT-B-32", weights_path=str(weights))


@pytest.mark.parametrize(
    "options, field",
    [({"crop_size": 256}, "crop_size"), ({"resize_size": 200}, "resize_size"), ({"batch_size": 0}, "batch_size"),
     ({"decode_workers": -1}, "decode_workers"), ({"inference_workers": 0}, "inference_workers"),
     ({"std": (0.5, 0.0, 0.5)}, "std")],
)
def test_efficientnet_config_rejects_bad_values(options, field):
    with pytest.raises(ValueError, match=field):
        EfficientNetLite0Config(**options)


def test_fingerprint_ignores_runtime_only_fields():
    a = get_encoder("efficientnet-lite0")
    b = get_encoder("efficientnet-lite0", batch_size=8, decode_workers=0, inference_workers=1)
    c = get_encoder("efficientnet-lite0", resize_size=224)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert a.dim == 1280


# --- preprocessing --------------------------------------------------------------------------

@pytest.mark.parametrize("size, fmt", [((320, 213), "JPEG"), ((100, 300), "PNG"), ((640, 480), "JPEG")])
def test_load_center_crop_shape(tmp_path, size, fmt):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path = tmp_path / f"img.{fmt.lower()}"
    Image.fromarray(pixels).convert("L" if fmt == "PNG" else "RGB").save(path, fmt)  # grey PNG -> RGB too
    out = load_center_crop(path)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("orientation, upright", [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_270),
                                                  (8, Image.Transpose.ROTATE_90)])
def test_decoding_applies_the_exif_orientation(tmp_path, orientation, upright):
    """open_image, and the open_clip loader built on it, return the pixels upright, in RGB (the EfficientNet
    loader: tests/integration/test_encoders.py)."""
    pixels = np.random.default_rng(1).integers(0, 256, size=(12, 20, 3), dtype=np.uint8)  # (h, w, 3) stored
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    path = tmp_path / "phone.png"  # lossless, so the pixels can be compared exactly
    Image.fromarray(pixels).convert("RGBA").save(path, exif=exif)
    expected = np.asarray(Image.fromarray(pixels).transpose(upright))
    image = open_image(path)
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image), expected)
    np.testing.assert_array_equal(np.asarray(_load_and_preprocess(path, lambda img: img)), expected)


def test_center_crop_box_is_centred_square():
    left, top, right, bottom = center_crop_box(400, 200, crop_size=224, resize_size=256)
    assert right - left == pytest.approx(175.0) and bottom - top == pytest.approx(175.0)
    assert (left + right) / 2 == pytest.approx(200.0) and (top + bottom) / 2 == pytest.approx(100.0)


def test_normalize_batch_shape_and_values():
    batch = np.full((2, 224, 224, 3), 255, dtype=np.uint8)
    x = normalize_batch(batch, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x, torch.ones_like(x))


def test_undecodable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        load_center_crop(bad)
    with pytest.raises(ImageDecodeError, match="missing.jpg"):
        encode_images(get_encoder("efficientnet-lite0"), [tmp_path / "missing.jpg"], cache_dir=None)


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_iter_image_batches_keeps_order(workers):
    items = list(range(10))
    batches = list(iter_image_batches(items, lambda i: i * i, batch_size=4, workers=workers))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert [v for b in batches for v in b] == [i * i for i in items]


# --- tfidf ----------------------------------------------------------------------------------

def test_tfidf_must_be_fitted():
    enc = get_encoder("tfidf")
    with pytest.raises(NotFittedError, match="fit"):
        encode_texts(enc, ["hello"], cache_dir=None)
    with pytest.raises(ValueError, match="at least 2"):
        enc.fit(["only one"])


def test_tfidf_dim_shrinks_with_small_corpus():
    enc = TfidfEncoder().fit(CORPUS)
    assert enc.dim == len(CORPUS) - 1
    x = enc.embed_texts(CORPUS)
    assert x.shape == (6, 5) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)
    assert TfidfEncoder(TfidfConfig(max_dim=3)).fit(CORPUS).dim == 3
    assert TfidfEncoder(TfidfConfig(svd_max_docs=4)).fit(CORPUS).dim == 3   # SVD fitted on a 4-text sample


def test_tfidf_unknown_text_gives_zero_row():
    enc = TfidfEncoder().fit(CORPUS)
    assert not enc.embed_texts(["ЖЖЖ"]).any()


def test_space_separated_detection():
    assert is_space_separated(CORPUS, 0.5)
    assert not is_space_separated(["一只猫坐在沙发上", "一辆公共汽车"], 0.5)


def test_tfidf_save_load_round_trip(tmp_path):
    enc = TfidfEncoder().fit(CORPUS)
    enc.save(tmp_path / "tfidf.joblib")
    loaded = TfidfEncoder.load(tmp_path / "tfidf.joblib")
    assert loaded.fingerprint() == enc.fingerprint()
    np.testing.assert_array_equal(loaded.embed_texts(["a cat on a bus"]), enc.embed_texts(["a cat on a bus"]))
    assert list(tmp_path.iterdir()) == [tmp_path / "tfidf.joblib"]  # no temp file left behind


def test_tfidf_refit_changes_fingerprint():
    assert TfidfEncoder().fit(CORPUS).fingerprint() != TfidfEncoder().fit(CORPUS[:4]).fingerprint()


# --- cache ----------------------------------------------------------------------------------

class _Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))

    @property
    def total(self) -> int:
        return self.calls[-1][1]


def test_cache_encodes_only_new_distinct_texts(tmp_path):
    enc = TfidfEncoder().fit(CORPUS)
    first = _Progress()
    x1 = encode_texts(enc, CORPUS[:4] + CORPUS[:2], tmp_path, progress=first)
    assert first.total == 4                                   # duplicates encoded once
    np.testing.assert_array_equal(x1[:2], x1[4:])
    again = _Progress()
    x2 = encode_texts(enc, CORPUS[:4], tmp_path, progress=again)
    assert again.calls == [(0, 0)]                            # nothing encoded
    np.testing.assert_array_equal(x2, x1[:4])
    more = _Progress()
    x3 = encode_texts(enc, CORPUS, tmp_path, progress=more)
    assert more.total == 2
    np.testing.assert_allclose(x3, enc.embed_texts(CORPUS), rtol=1e-6, atol=1e-7)
    assert len(FeatureCache(tmp_path, enc).shard_ids()) == 2


def test_cache_ignores_uncommitted_shard(tmp_path):
    enc = TfidfEncoder().fit(CORPUS)
    encode_texts(enc, CORPUS[:2], tmp_path)
    cache = FeatureCache(tmp_path, enc)
    (shard,) = cache.shard_ids()
    (cache.dir / f"{shard}.keys.npy").unlink()               # as if the writer died before committing
    assert cache.shard_ids() == []
    found, rows = cache.lookup(hash_texts(CORPUS[:2]))
    assert not found.any() and rows.shape == (0, enc.dim)
    progress = _Progress()
    encode_texts(enc, CORPUS[:2], tmp_path, progress=progress)
    assert progress.total == 2


def test_empty_input_gives_empty_matrix(tmp_path):
    enc = TfidfEncoder().fit(CORPUS)
    assert encode_texts(enc, [], tmp_path).shape == (0, enc.dim)


def test_modality_and_type_errors(tmp_path):
    enc = TfidfEncoder().fit(CORPUS)
    with pytest.raises(UnsupportedModalityError, match="does not embed images"):
        encode_images(enc, [tmp_path / "x.jpg"], tmp_path)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        encode_texts(enc, ["ok", 3], tmp_path)
    save_features(np.zeros((2, 3)), tmp_path / "f.npy")
    pre = get_encoder("precomputed", path=str(tmp_path / "f.npy"))
    with pytest.raises(UnsupportedModalityError, match="features()"):
        encode_texts(pre, ["a"], tmp_path)


def test_save_features_validates(tmp_path):
    with pytest.raises(ValueError, match="NaN"):
        save_features(np.array([[np.nan, 1.0]]), tmp_path / "f.npy")
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        save_features(np.zeros(3), tmp_path / "f.npy")
    assert not (tmp_path / "f.npy").exists()


def test_char_wb_ngrams_match_sklearn_without_space_unigram():
    text = "A  Cat, on 一只猫"
    reference = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3)).build_analyzer()(text)
    assert sorted(char_wb_ngrams(text, (1, 3))) == sorted(g for g in reference if g != " ")
