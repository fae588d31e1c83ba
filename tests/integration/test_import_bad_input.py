"""Every bad input is one ``InputError`` naming file, line and field, and leaves the workspace unchanged."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storage.errors import InputError
from storage.importers import import_source
from storage.store import open_store


@pytest.fixture()
def data(tmp_path, make_image) -> Path:
    """A source folder with two good images."""
    folder = tmp_path / "data"
    make_image(folder / "images" / "a.jpg", color=(200, 30, 30))
    make_image(folder / "images" / "b.png", color=(30, 200, 30))
    return folder


@pytest.fixture()
def store(make_workspace, data):
    """A workspace that already holds a first import (pairs, events, labels, precomputed features)."""
    store = make_workspace(labels=["cat", "dog"])
    first = data / "first.jsonl"
    _jsonl(first, [{"id": "p1", "image": "images/a.jpg", "text": "a red square", "labels": ["cat"]},
                   {"id": "p2", "image": "images/b.png", "text": "a green square"}])
    import_source(store, first, "manifest")
    features = data / "first.npz"
    np.savez(features, image=np.ones((2, 4)), text=np.ones((2, 3)), ids=np.array(["f1", "f2"]))
    import_source(store, features, "features")
    return store


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _good(i: int, **fields) -> dict:
    return {"id": f"n{i}", "image": "images/a.jpg", "text": f"new pair {i}", **fields}


def _fails(store, workspace_state, source: Path, line: int | None, field: str, fmt: str = "manifest",
           **kwargs) -> InputError:
    before = workspace_state(store)
    with pytest.raises(InputError) as caught:
        import_source(store, source, fmt, **kwargs)
    error = caught.value
    assert (error.path, error.line, error.field) == (str(source), line, field), str(error)
    where = str(source) if line is None else f"{source}:{line}"
    assert str(error).startswith(f"{where}: {field}: ")
    assert workspace_state(store) == before
    return error


def test_missing_image(store, data, workspace_state):
    source = _jsonl(data / "m.jsonl", [_good(1), _good(2, image="images/nope.jpg")])
    assert "file not found" in _fails(store, workspace_state, source, 2, "image").message


def test_truncated_jpeg(store, data, workspace_state):
    broken = data / "images" / "broken.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(broken, quality=95)
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    source = _jsonl(data / "m.jsonl", [_good(1), _good(2), _good(3, image="images/broken.jpg")])
    assert "cannot decode" in _fails(store, workspace_state, source, 3, "image").message


def test_file_that_is_not_an_image(store, data, workspace_state):
    (data / "images" / "notes.jpg").write_text("just some text", encoding="utf-8")
    source = _jsonl(data / "m.jsonl", [_good(1, image="images/notes.jpg")])
    assert "not an image" in _fails(store, workspace_state, source, 1, "image").message


def test_folder_instead_of_an_image(store, data, workspace_state):
    source = _jsonl(data / "m.jsonl", [_good(1, image="images")])
    assert "not a regular file" in _fails(store, workspace_state, source, 1, "image").message


def test_non_utf8_text_jsonl(store, data, workspace_state):
    source = data / "m.jsonl"
    source.write_bytes(json.dumps(_good(1)).encode() + b"\n" + b'{"image": "images/a.jpg", "text": "caf\xe9"}\n')
    assert "UTF-8" in _fails(store, workspace_state, source, 2, "text").message


def test_non_utf8_text_csv(store, data, workspace_state):
    source = data / "m.csv"
    source.write_bytes(b"image,text\nimages/a.jpg,fine\nimages/b.png,\xff\xfe broken\n")
    _fails(store, workspace_state, source, 3, "text")


def test_empty_text(store, data, workspace_state):
    source = _jsonl(data / "m.jsonl", [_good(1), _good(2, text="   ")])
    assert "empty" in _fails(store, workspace_state, source, 2, "text").message


def test_malformed_json_row(store, data, workspace_state):
    source = data / "m.jsonl"
    source.write_text(json.dumps(_good(1)) + "\n\n" + '{"image": "images/a.jpg", "text": "x"\n', encoding="utf-8")
    assert "malformed JSON" in _fails(store, workspace_state, source, 3, "json").message


def test_json_row_that_is_not_an_object(store, data, workspace_state):
    source = data / "m.jsonl"
    source.write_text('["images/a.jpg", "text"]\n', encoding="utf-8")
    _fails(store, workspace_state, source, 1, "json")


def test_csv_row_with_wrong_number_of_fields(store, data, workspace_state):
    source = data / "m.csv"
    source.write_text("id,image,text\nn1,images/a.jpg,one\nn2,images/b.png,two,extra\n", encoding="utf-8")
    assert "expected 3 fields, got 4" in _fails(store, workspace_state, source, 3, "row").message


def test_csv_unterminated_quote(store, data, workspace_state):
    source = data / "m.csv"
    source.write_text('id,image,text\nn1,images/a.jpg,one\nn2,images/b.png,"two\nn3,images/a.jpg,three\n',
                      encoding="utf-8")
    assert "malformed CSV" in _fails(store, workspace_state, source, 3, "row").message


def test_csv_missing_column(store, data, workspace_state):
    source = data / "m.csv"
    source.write_text("id,image\nn1,images/a.jpg\n", encoding="utf-8")
    assert "'text'" in _fails(store, workspace_state, source, 1, "header").message


def test_duplicate_id_with_different_content_in_the_file(store, data, workspace_state):
    source = _jsonl(data / "m.jsonl", [_good(1), _good(2), _good(1, text="another text")])
    assert "line 1" in _fails(store, workspace_state, source, 3, "id").message


def test_identical_duplicate_rows_are_skipped_once(store, data):
    source = _jsonl(data / "m.jsonl", [_good(1), _good(1)])
    report = import_source(store, source, "manifest")
    assert (report.added, report.skipped) == (1, 1)


def test_duplicate_id_against_an_earlier_import(store, data, workspace_state):
    source = _jsonl(data / "m.jsonl", [_good(1), {"id": "p1", "image": "images/a.jpg", "text": "not the same"}])
    assert "imported before with a different text" in _fails(store, workspace_state, source, 2, "id").message


def test_split_change_against_an_earlier_import(store, data, workspace_state):
    source = _jsonl(data / "m.jsonl", [{"id": "p2", "image": "images/b.png", "text": "a green square",
                                        "split": "test"}])
    assert "different split" in _fails(store, workspace_state, source, 1, "id").message


def test_unknown_label_then_accepted_with_add_labels(store, data, workspace_state):
    source = _jsonl(data / "m.jsonl", [_good(1, labels=["cat"]), _good(2, labels=["dog", "bird"])])
    assert "'bird'" in _fails(store, workspace_state, source, 2, "labels").message

    report = import_source(store, source, "manifest", add_labels=True)
    assert (report.added, report.labels_added, report.labelled) == (2, ["bird"], 2)


def test_bad_split(store, data, workspace_state):
    source = _jsonl(data / "m.jsonl", [_good(1, split="holdout")])
    _fails(store, workspace_state, source, 1, "split")


def test_path_escape_with_dotdot(store, data, tmp_path, make_image, workspace_state):
    make_image(tmp_path / "outside.jpg")
    source = _jsonl(data / "m.jsonl", [_good(1), _good(2, image="../outside.jpg")])
    assert "outside" in _fails(store, workspace_state, source, 2, "image").message


def test_symlink_escape(store, data, tmp_path, make_image, workspace_state):
    (data / "images" / "link.jpg").symlink_to(make_image(tmp_path / "elsewhere" / "x.jpg"))
    source = _jsonl(data / "m.jsonl", [_good(1, image="images/link.jpg")])
    _fails(store, workspace_state, source, 1, "image")


def test_absolute_path_needs_allow_absolute(store, data, workspace_state):
    absolute = str(data / "images" / "a.jpg")
    source = _jsonl(data / "m.jsonl", [_good(1, image=absolute)])
    assert "allow_absolute" in _fails(store, workspace_state, source, 1, "image").message

    assert import_source(store, source, "manifest", allow_absolute=True).added == 1


def _png_with_declared_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb's signature)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    body = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_over_the_configured_cap(store, data, workspace_state):
    config = store.root / "pairlab.toml"
    config.write_text(config.read_text(encoding="utf-8").replace("max_image_pixels = 64000000",
                                                                  "max_image_pixels = 100000"), encoding="utf-8")
    capped = open_store(store.root)
    try:
        assert capped.workspace.config.imports.max_image_pixels == 100_000
        _png_with_declared_size(data / "images" / "bomb.png", 1000, 1000)
        source = _jsonl(data / "m.jsonl", [_good(1), _good(2, image="images/bomb.png")])
        assert "max_image_pixels" in _fails(capped, workspace_state, source, 2, "image").message
    finally:
        capped.close()


def test_decompression_bomb_refused_by_pil(store, data, workspace_state):
    _png_with_declared_size(data / "images" / "bomb.png", 100_000, 100_000)
    source = _jsonl(data / "m.jsonl", [_good(1, image="images/bomb.png")])
    assert "decompression bomb" in _fails(store, workspace_state, source, 1, "image").message


def test_features_failure_after_writing_leaves_no_feature_files(store, data, workspace_state):
    source = data / "more.npz"  # text dim 5 does not match the registered 3 (found after image is written)
    np.savez(source, image=np.zeros((2, 4)), text=np.zeros((2, 5)), ids=np.array(["f3", "f4"]))
    assert "dim 3" in _fails(store, workspace_state, source, None, "text", fmt="features").message


def test_features_with_mismatched_rows(store, data, workspace_state):
    source = data / "bad.npz"
    np.savez(source, image=np.zeros((3, 4)), text=np.zeros((2, 3)))
    _fails(store, workspace_state, source, None, "text", fmt="features")
