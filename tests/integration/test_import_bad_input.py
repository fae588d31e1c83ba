"""Every bad input is one ``InputError`` naming file, line and field, and leaves the workspace unchanged.

The hostile-input battery of issue 14, one test (or one table row) per kind of bad input, across
manifest JSONL and CSV, COCO, the Wikipedia lists, features files and images; export targets are in
``test_export_targets.py``. A refusal is checked in process (``import_source``) for most kinds and through
the ``pairlab`` CLI (exit code 2, one line, no traceback) for one kind per format. The kinds that are
accepted say so in their name (``test_accepted_...``, ``ACCEPTED_...``).
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat
from sqlalchemy import select

from storage.annotations import record_event
from storage.errors import InputError, PairlabError, one_line
from storage.importers import import_source
from storage.models import Event, FeatureSet, Pair
from storage.store import init_workspace, open_store
from tests.support.cli import assert_user_error, pairlab
from tests.support.postgres import DatabaseSnapshot, database_url


def _two_images(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (16, 12), (200, 30, 30)).save(folder / "images" / "a.jpg")
    Image.new("RGB", (16, 12), (30, 200, 30)).save(folder / "images" / "b.png")
    return folder


@pytest.fixture()
def data(tmp_path) -> Path:
    """A source folder with two good images."""
    return _two_images(tmp_path / "data")


@pytest.fixture(scope="module")
def postgres():
    """The URL of one throw-away PostgreSQL server's database for the whole module (``store`` resets it)."""
    with database_url("postgresql") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request, tmp_path_factory) -> tuple[Path, DatabaseSnapshot | None]:
    """A workspace that already holds a first import (pairs, events, labels, precomputed features), on a
    SQLite file or on the module's PostgreSQL server, built once per module and database; each test gets
    its own copy (``store``). Returns the workspace and, on PostgreSQL, the snapshot of its database."""
    folder = tmp_path_factory.mktemp(f"seeded-{request.param}")
    data = _two_images(folder / "data")
    url = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    store = init_workspace(folder / "ws", labels=["cat", "dog"], database_url=url)
    try:
        first = data / "first.jsonl"
        _jsonl(first, [{"id": "p1", "image": "images/a.jpg", "text": "a red square", "labels": ["cat"]},
                       {"id": "p2", "image": "images/b.png", "text": "a green square"}])
        import_source(store, first, "manifest")
        features = data / "first.npz"
        np.savez(features, image=np.ones((2, 4)), text=np.ones((2, 3)), ids=np.array(["f1", "f2"]))
        import_source(store, features, "features")
        snapshot = DatabaseSnapshot(store.db.engine) if url else None
    finally:
        store.close()
    return folder / "ws", snapshot


@pytest.fixture()
def store(seeded, tmp_path):
    """A copy of the ``seeded`` workspace (on PostgreSQL: the one database, reset to the seeded rows), its
    feature sets pointing at the copy's files."""
    seeded_root, snapshot = seeded
    root = shutil.copytree(seeded_root, tmp_path / "ws")
    store = open_store(root)
    if snapshot is not None:
        snapshot.restore(store.db.engine)
    with store.db.write() as s:
        for feature_set in s.scalars(select(FeatureSet)):
            feature_set.path = str(root / "features" / Path(feature_set.path).name)
    yield store
    store.close()


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _good(i: int, **fields) -> dict:
    return {"id": f"n{i}", "image": "images/a.jpg", "text": f"new pair {i}", **fields}


def _fails(store, workspace_state, source: Path, line: int | None, field: str, fmt: str = "manifest", *,
           path: Path | None = None, **kwargs) -> InputError:
    """Import ``source`` and check the refusal: one ``InputError`` at ``path`` (default: the source), ``line``
    and ``field``, a one-line message, and the workspace unchanged (every table, the pairs, the files)."""
    before = workspace_state(store)
    with pytest.raises(InputError) as caught:
        import_source(store, source, fmt, **kwargs)
    error = caught.value
    expected = str(path or source)
    assert (error.path, error.line, error.field) == (expected, line, field), str(error)
    where = expected if line is None else f"{expected}:{line}"
    assert str(error).startswith(one_line(f"{where}: {field}: ")) and "\n" not in str(error), str(error)
    assert workspace_state(store) == before
    return error


def _cli_fails(store, workspace_state, source: Path, where: str, field: str, *args) -> str:
    """``pairlab import`` refuses ``source``: exit code 2, one line ``pairlab: error: where: field: ...``."""
    before = workspace_state(store)
    line = assert_user_error(pairlab("import", store.root, source, *args), f"{where}: {field}: ")
    assert workspace_state(store) == before
    return line


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


# --------------------------------------------------------------------------- manifest JSON lines

def _line(**fields) -> str:
    return json.dumps({"id": "n1", "image": "images/a.jpg", "text": "new pair", **fields})


_DEEP = "[" * 100_000 + "]" * 100_000
_GOOD_LINE = _line(id="n0", text="the first good row")

# kind, the file's lines, the line and field at fault, a fragment of the message
JSONL_REFUSED = [
    ("nul-in-text", [_GOOD_LINE, _line(text="a\u0000b")], 2, "text", "U+0000 (NUL)"),
    ("escape-control-in-text", [_line(text="bell \u001b[31m red")], 1, "text", "U+001B"),
    ("lone-surrogate-escape-in-text", ['{"image": "images/a.jpg", "text": "x\\ud800y"}'], 1, "text", "UTF-8"),
    ("nul-in-image-path", [_line(image="images/a\u0000.jpg")], 1, "image", "U+0000"),
    ("newline-in-image-path", [_line(image="images/a\n.jpg")], 1, "image", "newline"),
    ("nul-in-id", [_line(id="n\u00001")], 1, "id", "U+0000"),
    ("tab-in-id", [_line(id="n\t1")], 1, "id", "tab"),
    ("nul-in-label", [_line(labels=["cat\u0000"])], 1, "labels", "U+0000"),
    ("newline-in-label", [_line(labels=["ca\nt"])], 1, "labels", "newline"),
    ("pipe-in-label", [_line(labels=["cat|dog"])], 1, "labels", "'|'"),
    ("5000-digit-integer-id", ['{"id": ' + "9" * 5000 + ', "image": "images/a.jpg", "text": "x"}'], 1, "id",
     "5000 digits"),
    ("huge-negative-integer-in-ignored-field", ['{"image": "images/a.jpg", "text": "x", "extra": {"n": [0, -'
                                                + "1" * 4400 + "]}}"], 1, "extra.n[1]", "4400 digits"),
    ("100000-deep-nesting", ['{"image": "images/a.jpg", "text": "x", "extra": ' + _DEEP + "}"], 1, "json",
     "nested deeper than 64"),
    ("nesting-one-over-the-limit", ['{"image": "images/a.jpg", "text": "x", "extra": ' + "[" * 64 + "]" * 64 + "}"],
     1, "json", "nested deeper than 64"),
    ("repeated-key", ['{"image": "images/a.jpg", "text": "one", "text": "two"}'], 1, "text", "repeated"),
    ("text-too-long", [_line(text="x" * 100_001)], 1, "text", "at most 100000"),
    ("id-too-long", [_line(id="i" * 201)], 1, "id", "longer than 200"),
    ("file-name-over-255-bytes", [_line(image="images/" + "a" * 300 + ".jpg")], 1, "image", "304 bytes"),
    ("path-over-4096-bytes", [_line(image="/".join(["d" * 200] * 25))], 1, "image", "at most 4096"),
    ("empty-image", [_line(image="")], 1, "image", "missing"),
    ("missing-text", ['{"image": "images/a.jpg"}'], 1, "text", "missing"),
    ("id-is-a-list", [_line(id=[1])], 1, "id", "got list"),
    ("id-is-an-object", [_line(id={"a": 1})], 1, "id", "got dict"),
    ("id-is-a-float", [_line(id=1.5)], 1, "id", "got float"),
    ("id-is-true", [_line(id=True)], 1, "id", "got bool"),
    ("id-is-NaN", ['{"id": NaN, "image": "images/a.jpg", "text": "x"}'], 1, "id", "got float"),
    ("image-is-a-number", [_line(image=7)], 1, "image", "got int"),
    ("image-is-a-list", [_line(image=["images/a.jpg"])], 1, "image", "got list"),
    ("text-is-a-number", [_line(text=42)], 1, "text", "got int"),
    ("text-is-a-list", [_line(text=["a", "b"])], 1, "text", "got list"),
    ("text-is-an-object", [_line(text={"en": "a"})], 1, "text", "got dict"),
    ("text-is-false", [_line(text=False)], 1, "text", "got bool"),
    ("labels-is-a-string", [_line(labels="cat")], 1, "labels", "got str"),
    ("labels-is-an-object", [_line(labels={"cat": 1})], 1, "labels", "got dict"),
    ("label-is-a-number", [_line(labels=[3])], 1, "labels", "not a string"),
    ("label-is-null", [_line(labels=[None])], 1, "labels", "not a string"),
    ("label-is-a-list", [_line(labels=[["cat"]])], 1, "labels", "not a string"),
    ("split-is-a-number", [_line(split=1)], 1, "split", "not a split"),
    ("split-is-a-list", [_line(split=["train"])], 1, "split", "not a split"),
    ("line-is-a-string", ['"just a string"'], 1, "json", "got str"),
    ("line-is-null", ["null"], 1, "json", "got NoneType"),
]


@pytest.mark.parametrize("kind, lines, line, field, fragment", JSONL_REFUSED, ids=[c[0] for c in JSONL_REFUSED])
def test_jsonl_refused(store, data, workspace_state, kind, lines, line, field, fragment):
    source = data / "m.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert fragment in _fails(store, workspace_state, source, line, field).message


def test_jsonl_utf16_file_is_refused(store, data, workspace_state):
    source = data / "m.jsonl"
    source.write_bytes((_line() + "\n").encode("utf-16"))
    assert "malformed JSON" in _fails(store, workspace_state, source, 1, "json").message


def test_cli_jsonl_nul_in_text(store, data, workspace_state):
    source = data / "m.jsonl"
    source.write_text(_GOOD_LINE + "\n" + _line(text="a\u0000b") + "\n", encoding="utf-8")
    assert "U+0000" in _cli_fails(store, workspace_state, source, f"{source}:2", "text")


def _stored(store, external_id: str) -> tuple[str, str]:
    with store.db.read() as s:
        return s.execute(select(Pair.text, Pair.image_path).where(Pair.external_id == external_id)).one()


ACCEPTED_TEXTS = [
    ("tab-newline-carriage-return-inside", "a\tcaption\nover two\r\nlines"),
    ("del-and-c1-controls", "del \u007f and c1 \u0085\u009f"),
    ("emoji-bidi-override-zero-width", "cat \U0001f408 \u202eevil\u202c zero\u200bwidth"),
    ("brackets-in-a-string-do-not-count-as-nesting", "[" * 500 + "{" * 500),
]


@pytest.mark.parametrize("kind, text", ACCEPTED_TEXTS, ids=[c[0] for c in ACCEPTED_TEXTS])
def test_accepted_text(store, data, kind, text):
    import_source(store, _jsonl(data / "m.jsonl", [_good(1, text=f"  {text}  ")]), "manifest")
    assert _stored(store, "n1")[0] == text  # stored exactly, outer whitespace stripped


def test_accepted_jsonl_with_bom_crlf_blank_lines_and_bounded_nesting(store, data):
    rows = [_line(id="n1", extra=[[[[{"deep": [1, 2]}]]]]), "", "   ", _line(id="n2", text="second")]
    (data / "m.jsonl").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode("utf-8") + b"\r\n")
    assert import_source(store, data / "m.jsonl", "manifest").added == 2


def test_accepted_integer_ids_as_strings(store, data):
    big = int("7" * 50)
    report = import_source(store, _jsonl(data / "m.jsonl", [_good(0, id=5), _good(0, id="5"), _good(1, id=big)]),
                           "manifest")
    assert (report.added, report.skipped) == (2, 1)  # 5 and "5" are the same id, and the same pair
    assert _stored(store, "7" * 50)[0] == "new pair 1"


def test_conflicting_labels_for_one_id(store, data, workspace_state):
    source = _jsonl(data / "m.jsonl", [_good(1, labels=["cat"]), _good(1, labels=["dog"])])
    assert "different content than line 1" in _fails(store, workspace_state, source, 2, "id").message


def test_accepted_identical_rows_without_ids_collapse_to_one(store, data):
    report = import_source(store, _jsonl(data / "m.jsonl", [{"image": "images/b.png", "text": "same"}] * 3),
                           "manifest")
    assert (report.added, report.skipped) == (1, 2)


# --------------------------------------------------------------------------- manifest CSV

CSV_REFUSED = [
    ("nul-in-a-cell", b"image,text\nimages/a.jpg,fine\nimages/b.png,bad\x00cell\n", 3, "text", "U+0000"),
    ("bell-control-in-a-cell", b"image,text\nimages/a.jpg,ring \x07 ring\n", 2, "text", "U+0007"),
    ("nul-in-the-header", b"image,te\x00xt\nimages/a.jpg,x\n", 1, "header", "U+0000"),
    ("repeated-column", b"image,text,text\nimages/a.jpg,x,y\n", 1, "header", "repeated"),
    ("utf16-file", "image,text\nimages/a.jpg,x\n".encode("utf-16"), 1, "header", "UTF-8"),
    ("cell-over-the-csv-field-limit", b"image,text\nimages/a.jpg," + b"x" * 200_000 + b"\n", 2, "row",
     "field larger than field limit"),
    ("bad-labelled-flag", b"image,text,labels,labelled\nimages/a.jpg,x,cat,maybe\n", 2, "labelled", "'maybe'"),
    ("labels-but-labelled-false", b"image,text,labels,labelled\nimages/a.jpg,x,cat,0\n", 2, "labels",
     "labelled is false"),
    ("control-in-a-label", b"image,text,labels\nimages/a.jpg,x,ca\x1bt\n", 2, "labels", "U+001B"),
    ("id-too-long", b"id,image,text\n" + b"i" * 201 + b",images/a.jpg,x\n", 2, "id", "longer than 200"),
    ("nul-in-the-image-cell", b"image,text\nimages/\x00a.jpg,x\n", 2, "image", "U+0000"),
    ("empty-file", b"", 1, "header", "empty file"),
    ("absolute-path-without-allow-absolute", b"image,text\n/etc/hostname,x\n", 2, "image", "allow_absolute"),
]


@pytest.mark.parametrize("kind, content, line, field, fragment", CSV_REFUSED, ids=[c[0] for c in CSV_REFUSED])
def test_csv_refused(store, data, workspace_state, kind, content, line, field, fragment):
    source = data / "m.csv"
    source.write_bytes(content)
    assert fragment in _fails(store, workspace_state, source, line, field).message


def test_cli_csv_nul_in_a_cell(store, data, workspace_state):
    source = data / "m.csv"
    source.write_bytes(b"image,text\nimages/a.jpg,fine\nimages/b.png,bad\x00cell\n")
    _cli_fails(store, workspace_state, source, f"{source}:3", "text")


def test_accepted_csv_with_bom_crlf_and_a_formula_cell(store, data):
    source = data / "m.csv"
    source.write_bytes(b"\xef\xbb\xbfid,image,text\r\nn1,images/a.jpg,=HYPERLINK(1)\r\n")
    assert import_source(store, source, "manifest").added == 1
    assert _stored(store, "n1")[0] == "=HYPERLINK(1)"  # kept as text; the CSV exporter neutralises it


# --------------------------------------------------------------------------- COCO


def _coco_doc() -> dict:
    return {"images": [{"id": 1, "file_name": "images/a.jpg"}, {"id": 2, "file_name": "images/b.png"}],
            "annotations": [{"id": 10, "image_id": 1, "caption": "a red square"},
                            {"id": 11, "image_id": 2, "caption": "a green square"}]}


def _instances_doc() -> dict:
    return {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 2}]}


def _set(where: str, key, value):
    """A change to one COCO document: ``doc[where...][key] = value`` (``where`` as ``annotations.0``)."""
    def change(doc):
        target = doc
        for part in where.split(".") if where else ():
            target = target[int(part)] if part.isdigit() else target[part]
        target[key] = value
        return doc
    return change


# kind, change to the captions doc, field at fault, fragment
COCO_REFUSED = [
    ("image-id-is-a-list", _set("annotations.0", "image_id", [1]), "annotations[0].image_id", "got [1]"),
    ("image-id-is-an-object", _set("annotations.1", "image_id", {"id": 2}), "annotations[1].image_id", "got {"),
    ("image-id-is-true", _set("annotations.0", "image_id", True), "annotations[0].image_id", "got True"),
    ("images-id-is-a-float", _set("images.0", "id", 1.5), "images[0].id", "got 1.5"),
    ("images-id-is-null", _set("images.1", "id", None), "images[1].id", "got None"),
    ("images-id-listed-twice", _set("images.1", "id", 1), "images[1].id", "listed twice"),
    ("unknown-image-id", _set("annotations.1", "image_id", 99), "annotations[1].image_id", "no image with id 99"),
    ("caption-is-a-number", _set("annotations.0", "caption", 3), "annotations[0].caption", "got int"),
    ("caption-is-missing", lambda d: (d["annotations"][1].pop("caption"), d)[1], "annotations[1].caption", "missing"),
    ("nul-in-caption", _set("annotations.1", "caption", "a\u0000b"), "annotations[1].caption", "U+0000"),
    ("caption-id-is-a-list", _set("annotations.0", "id", [10]), "annotations[0].id", "got list"),
    ("caption-id-too-long", _set("annotations.0", "id", "c" * 200), "annotations[0].id", "longer than 195"),
    ("nul-in-file-name", _set("images.0", "file_name", "images/\u0000a.jpg"), "images[0].file_name", "U+0000"),
    ("file-name-is-a-number", _set("images.0", "file_name", 5), "images[0].file_name", "got int"),
    ("absolute-file-name", _set("images.0", "file_name", "/etc/hostname"), "images[0].file_name", "allow_absolute"),
    ("dotdot-file-name", _set("images.0", "file_name", "../../outside.jpg"), "images[0].file_name", "outside"),
    ("images-is-not-a-list", _set("", "images", {"1": "a.jpg"}), "images", "not a list"),
    ("annotations-missing", lambda d: (d.pop("annotations"), d)[1], "annotations", "not a list"),
    ("images-entry-is-a-string", _set("images", 0, "images/a.jpg"), "images[0].id", "missing"),
    ("document-is-a-list", lambda d: [d], "json", "expected a JSON object"),
    ("missing-image-file", _set("images.1", "file_name", "images/none.png"), "images[id=2].file_name",
     "file not found"),
]


@pytest.mark.parametrize("kind, change, field, fragment", COCO_REFUSED, ids=[c[0] for c in COCO_REFUSED])
def test_coco_refused(store, data, workspace_state, kind, change, field, fragment):
    source = data / "captions_bad.json"
    source.write_text(json.dumps(change(_coco_doc())), encoding="utf-8")
    assert fragment in _fails(store, workspace_state, source, None, field, "coco").message


COCO_TEXT_REFUSED = [
    ("5000-digit-caption-id", lambda t: t.replace('"id": 10', '"id": ' + "1" * 5000), None, "annotations[0].id",
     "5000 digits"),
    ("non-utf8-bytes-in-caption", lambda t: t.replace("a red", "a r\udce9d"), None, "annotations[0].caption",
     "byte 0xe9"),
    ("deep-nesting-on-line-3", lambda t: t.replace("\n", "\n" + " " * 2, 1)
     .replace('"annotations"', '\n\n"deep": ' + _DEEP + ', "annotations"'), 3, "json", "nested deeper than 64"),
    ("repeated-key", lambda t: t.replace('"caption": "a red square"', '"caption": "a", "caption": "b"'), None,
     "caption", "repeated"),
    ("malformed-on-line-2", lambda t: t.replace('"annotations"', '\n"annotations" ['), 2, "json", "malformed JSON"),
]


@pytest.mark.parametrize("kind, change, line, field, fragment", COCO_TEXT_REFUSED,
                         ids=[c[0] for c in COCO_TEXT_REFUSED])
def test_coco_file_refused(store, data, workspace_state, kind, change, line, field, fragment):
    source = data / "captions_bad.json"
    source.write_bytes(change(json.dumps(_coco_doc())).encode("utf-8", errors="surrogateescape"))
    assert fragment in _fails(store, workspace_state, source, line, field, "coco").message


INSTANCES_REFUSED = [
    ("category-id-is-a-list", _set("annotations.0", "category_id", [2]), "annotations[0].category_id", "got [2]"),
    ("category-id-listed-twice", _set("categories.1", "id", 1), "categories[1].id", "listed twice"),
    ("unknown-category", _set("annotations.0", "category_id", 7), "annotations[0].category_id", "unknown category"),
    ("nul-in-category-name", _set("categories.0", "name", "c\u0000t"), "categories[0].name", "U+0000"),
]


@pytest.mark.parametrize("kind, change, field, fragment", INSTANCES_REFUSED, ids=[c[0] for c in INSTANCES_REFUSED])
def test_coco_instances_refused(store, data, workspace_state, kind, change, field, fragment):
    source = data / "captions_bad.json"
    source.write_text(json.dumps(_coco_doc()), encoding="utf-8")
    instances = data / "instances_bad.json"
    instances.write_text(json.dumps(change(_instances_doc())), encoding="utf-8")
    assert fragment in _fails(store, workspace_state, source, None, field, "coco", path=instances).message


def test_cli_coco_image_id_is_a_list(store, data, workspace_state):
    source = data / "captions_bad.json"
    source.write_text(json.dumps(_set("annotations.0", "image_id", [1])(_coco_doc())), encoding="utf-8")
    _cli_fails(store, workspace_state, source, str(source), "annotations[0].image_id", "--format", "coco")


def test_accepted_coco_with_string_ids_and_instances(store, data):
    doc = _set("annotations.0", "image_id", "one")(_set("images.0", "id", "one")(_coco_doc()))
    (data / "captions_ok.json").write_text(json.dumps(doc), encoding="utf-8")
    (data / "instances_ok.json").write_text(json.dumps(_instances_doc()), encoding="utf-8")
    report = import_source(store, data / "captions_ok.json", "coco")
    assert (report.added, report.labelled) == (2, 1)  # only image 2 is listed in both files


# --------------------------------------------------------------------------- Wikipedia lists


def _wiki(folder: Path, *, categories: bytes = b"cat\ndog\n", train: bytes = b"t1\ti1\t1\nt2\ti2\t2\n",
          test: bytes = b"t3\ti1\t2\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "categories.list").write_bytes(categories)
    (folder / "trainset_txt_img_cat.list").write_bytes(train)
    (folder / "testset_txt_img_cat.list").write_bytes(test)
    return folder


TRAIN, CATEGORIES = "trainset_txt_img_cat.list", "categories.list"
# kind, list files, file at fault, line, field, fragment
WIKI_REFUSED = [
    ("non-utf8-bytes-in-a-list", {"train": b"t1\ti1\t1\nt\xe92\ti2\t2\n"}, TRAIN, 2, "text_id", "byte 0xe9"),
    ("non-utf8-bytes-in-categories", {"categories": b"cat\nd\xffg\n"}, CATEGORIES, 2, "category", "byte 0xff"),
    ("nul-in-image-id", {"train": b"t1\ti\x001\t1\n"}, TRAIN, 1, "image_id", "U+0000"),
    ("form-feed-in-text-id", {"train": b"t\x0c1\ti1\t1\n"}, TRAIN, 1, "text_id", "U+000C"),
    ("superscript-digit-category", {"train": "t1\ti1\t\u00b2\n".encode()}, TRAIN, 1, "category", "not in 1..2"),
    ("5000-digit-category", {"train": b"t1\ti1\t" + b"1" * 5000 + b"\n"}, TRAIN, 1, "category", "not in 1..2"),
    ("category-out-of-range", {"train": b"t1\ti1\t3\n"}, TRAIN, 1, "category", "not in 1..2"),
    ("two-fields-on-a-line", {"train": b"t1\ti1\t1\nt2 i2 2\n"}, TRAIN, 2, "row", "got 1"),
    ("category-listed-twice", {"categories": b"cat\ncat\ndog\n"}, CATEGORIES, 2, "category", "listed twice"),
    ("empty-text-id", {"train": b" \ti1\t1\n"}, TRAIN, 1, "text_id", "empty"),
    ("text-id-too-long", {"train": b"t" * 300 + b"\ti1\t1\n"}, TRAIN, 1, "text_id", "longer than 195"),
    ("one-text-id-two-categories", {"train": b"t1\ti1\t1\nt1\ti1\t2\n"}, TRAIN, 2, "text_id", "duplicate id"),
]


@pytest.mark.parametrize("kind, files, name, line, field, fragment", WIKI_REFUSED, ids=[c[0] for c in WIKI_REFUSED])
def test_wiki_refused(store, tmp_path, workspace_state, kind, files, name, line, field, fragment):
    folder = _wiki(tmp_path / "wiki", **files)
    assert fragment in _fails(store, workspace_state, folder, line, field, "wiki", path=folder / name).message


def test_wiki_image_id_that_is_a_path(store, tmp_path, workspace_state, make_image):
    folder = _wiki(tmp_path / "wiki", train=b"t1\t../../data/images/a\t1\n")
    make_image(folder / "images" / "i1.jpg")
    assert "not a file name" in _fails(store, workspace_state, folder, 1, "image_id", "wiki",
                                       path=folder / TRAIN).message


@pytest.mark.parametrize("content, fragment", [(b"a \x00 text", "U+0000"), (b"caf\xe9 text", "byte 0xe9")],
                         ids=["nul", "non-utf8"])
def test_wiki_text_file_refused(store, tmp_path, workspace_state, content, fragment):
    folder = _wiki(tmp_path / "wiki")
    (folder / "texts").mkdir()
    for name in ("t1", "t2", "t3"):
        (folder / "texts" / f"{name}.xml").write_text(f"text of {name}", encoding="utf-8")
    (folder / "texts" / "t2.xml").write_bytes(content)
    assert fragment in _fails(store, workspace_state, folder, None, "text", "wiki",
                              path=folder / "texts" / "t2.xml").message


WIKI_FEATURES_REFUSED = [
    ("nan-in-raw-features", {"I_te": np.array([[0.0, np.nan, 0, 0]])}, "I_te[0]", "NaN at column 1"),
    ("inf-in-raw-features", {"T_tr": np.array([[0.0, 0, 0], [0, 0, -np.inf]])}, "T_tr[1]", "infinite"),
    ("train-and-test-columns-differ", {"I_te": np.zeros((1, 5))}, "I_te", "5 columns but I_tr has 4"),
    ("rows-differ-from-the-lists", {"T_te": np.zeros((3, 3))}, "T_tr/T_te", "5 rows but the lists have 3"),
    ("raw-features-missing-a-variable", {"I_te": None}, "I_te", "variable missing"),
]


@pytest.mark.parametrize("kind, change, field, fragment", WIKI_FEATURES_REFUSED,
                         ids=[c[0] for c in WIKI_FEATURES_REFUSED])
def test_wiki_raw_features_refused(store, tmp_path, workspace_state, kind, change, field, fragment):
    folder = _wiki(tmp_path / "wiki")
    mat = {"I_tr": np.zeros((2, 4)), "I_te": np.zeros((1, 4)), "T_tr": np.zeros((2, 3)), "T_te": np.zeros((1, 3))}
    mat.update(change)
    savemat(folder / "raw_features.mat", {k: v for k, v in mat.items() if v is not None})
    assert fragment in _fails(store, workspace_state, folder, None, field, "wiki",
                              path=folder / "raw_features.mat").message


def test_cli_wiki_non_utf8_list(store, tmp_path, workspace_state):
    folder = _wiki(tmp_path / "wiki", train=b"t1\ti1\t1\nt\xe92\ti2\t2\n")
    _cli_fails(store, workspace_state, folder, f"{folder / TRAIN}:2", "text_id")


def test_accepted_wiki_with_crlf_lists_and_raw_features(store, tmp_path):
    folder = _wiki(tmp_path / "wiki", train=b"t1\ti1\t1\r\nt2\ti2\t2\r\n", test=b"t3\ti1\t2\r\n")
    savemat(folder / "raw_features.mat", {"I_tr": np.ones((2, 4)), "I_te": np.ones((1, 4)),
                                          "T_tr": np.ones((2, 3)), "T_te": np.ones((1, 3))})
    assert import_source(store, folder, "wiki").added == 3


def test_wiki_reimport_that_adds_raw_features_is_refused(store, tmp_path, workspace_state):
    """Imported first without ``raw_features.mat``: features are not added to known pairs by re-importing."""
    folder = _wiki(tmp_path / "wiki")
    assert import_source(store, folder, "wiki").added == 3
    savemat(folder / "raw_features.mat", {"I_tr": np.ones((2, 4)), "I_te": np.ones((1, 4)),
                                          "T_tr": np.ones((2, 3)), "T_te": np.ones((1, 3))})
    error = _fails(store, workspace_state, folder, 1, "image features", "wiki", path=folder / TRAIN)
    assert error.message == ("id 'wiki:t1' was imported before without precomputed image features; features "
                             "cannot be changed by re-importing (import them under new ids)")


# --------------------------------------------------------------------------- features files


def _npz(path: Path, **arrays) -> Path:
    base = {"image": np.zeros((2, 4)), "text": np.zeros((2, 3)), "ids": np.array(["g1", "g2"])}
    base.update(arrays)
    np.savez(path, **{k: v for k, v in base.items() if v is not None})
    return path


# kind, arrays replaced, field at fault, fragment
FEATURES_REFUSED = [
    ("nan-in-image", {"image": np.array([[0, 0, 0, 0], [0, 0, np.nan, 0]])}, "image[1]", "NaN at column 2"),
    ("inf-in-text", {"text": np.array([[np.inf, 0, 0], [0, 0, 0]])}, "text[0]", "infinite value at column 0"),
    ("overflows-float32", {"image": np.array([[0, 0, 0, 0], [0, 1e39, 0, 0]])}, "image[1]", "overflows float32"),
    ("boolean-matrix", {"image": np.ones((2, 4), dtype=bool)}, "image", "2-d matrix of numbers"),
    ("complex-matrix", {"image": np.ones((2, 4), dtype=complex)}, "image", "2-d matrix of numbers"),
    ("string-matrix", {"image": np.full((2, 4), "x")}, "image", "2-d matrix of numbers"),
    ("one-dimensional", {"image": np.zeros(8)}, "image", "shape (8,)"),
    ("three-dimensional", {"image": np.zeros((2, 2, 2))}, "image", "shape (2, 2, 2)"),
    ("zero-columns", {"text": np.zeros((2, 0))}, "text", "shape (2, 0)"),
    ("text-missing", {"text": None}, "text", "missing"),
    ("label-matrix-with-a-2", {"labels": np.array([[1, 2], [0, 0]]), "label_names": np.array(["cat", "dog"])},
     "labels", "only 0 and 1"),
    ("label-matrix-without-names", {"labels": np.array([[1, 0], [0, 0]])}, "label_names", "missing"),
    ("labelled-with-nan", {"labels": np.array(["cat", "dog"]), "labelled": np.array([1.0, np.nan])}, "labelled",
     "only 0 and 1"),
    ("labelled-as-strings", {"labels": np.array(["cat", "dog"]), "labelled": np.array(["yes", "no"])}, "labelled",
     "only 0 and 1"),
    ("nul-in-an-id", {"ids": np.array(["g1", "g\x002"])}, "ids[1]", "U+0000"),
    ("float-ids", {"ids": np.array([1.5, 2.5])}, "ids", "expected strings"),
    ("ids-count-differs", {"ids": np.array(["g1", "g2", "g3"])}, "ids", "3 entries"),
    ("escape-control-in-texts", {"texts": np.array(["ok", "bad \x1b"])}, "texts[1]", "U+001B"),
    ("bad-split", {"split": np.array(["train", "holdout"])}, "split[1]", "not a split"),
    ("one-id-two-contents", {"ids": np.array(["g1", "g1"]), "image": np.eye(2, 4)}, "ids[1]", "duplicate id"),
    ("pickled-object-array", {"texts": np.array(["a", None], dtype=object)}, "source", "cannot read"),
    # the seeded workspace holds f1 and f2 with all-ones features (see ``seeded``)
    ("reimport-with-other-image-features", {"ids": np.array(["f1", "f2"]), "image": np.ones((2, 4)) * [[1], [2]],
                                            "text": np.ones((2, 3))}, "image[1]", "imported before with different "
                                                                                  "image features"),
    ("reimport-with-other-text-features", {"ids": np.array(["g1", "f2"]), "text": np.zeros((2, 3)) + [[0], [1e-6]],
                                           "image": np.ones((2, 4))}, "text[1]", "features cannot be changed by "
                                                                                 "re-importing"),
]


@pytest.mark.parametrize("kind, arrays, field, fragment", FEATURES_REFUSED, ids=[c[0] for c in FEATURES_REFUSED])
def test_features_refused(store, data, workspace_state, kind, arrays, field, fragment):
    source = _npz(data / "bad.npz", **arrays)
    assert fragment in _fails(store, workspace_state, source, None, field, "features").message


def _truncated_npz(path: Path) -> bytes:
    _npz(path)
    return path.read_bytes()[:200]


FEATURES_FILES_REFUSED = [
    ("zero-byte-npz", "bad.npz", lambda p: b"", "source", "cannot read"),
    ("random-bytes-npz", "bad.npz", lambda p: os.urandom(300), "source", "cannot read"),
    ("truncated-npz", "bad.npz", _truncated_npz, "source", "cannot read"),
    ("random-bytes-mat", "bad.mat", lambda p: b"MATLAB 5.0" + os.urandom(300), "source", "cannot read"),
    ("unknown-extension", "bad.npy", lambda p: b"\x93NUMPY", "format", "unknown features extension"),
]


@pytest.mark.parametrize("kind, name, content, field, fragment", FEATURES_FILES_REFUSED,
                         ids=[c[0] for c in FEATURES_FILES_REFUSED])
def test_features_file_refused(store, data, workspace_state, kind, name, content, field, fragment):
    source = data / name
    source.write_bytes(content(source))
    assert fragment in _fails(store, workspace_state, source, None, field, "features").message


def test_accepted_reimport_with_the_same_features_is_skipped(store, data):
    report = import_source(store, _npz(data / "again.npz", ids=np.array(["f1", "n1"]), image=np.ones((2, 4)),
                                       text=np.ones((2, 3))), "features")
    assert (report.added, report.skipped) == (1, 1)


def test_features_mat_with_nan(store, data, workspace_state):
    source = data / "bad.mat"
    savemat(source, {"image": np.array([[0.0, 0, 0, 0], [np.nan, 0, 0, 0]]), "text": np.zeros((2, 3)),
                     "ids": np.array(["g1", "g2"])})
    assert "NaN at column 0" in _fails(store, workspace_state, source, None, "image[1]", "features").message


def test_features_with_no_rows(store, data, workspace_state):
    source = _npz(data / "empty.npz", image=np.zeros((0, 4)), text=np.zeros((0, 3)), ids=None)
    assert "no pairs found" in _fails(store, workspace_state, source, None, "rows", "features").message


def test_cli_features_nan(store, data, workspace_state):
    source = _npz(data / "bad.npz", image=np.array([[0, 0, 0, 0], [0, 0, np.nan, 0]]))
    assert "NaN at column 2" in _cli_fails(store, workspace_state, source, str(source), "image[1]")


# --------------------------------------------------------------------------- images


def _noise(path: Path, size=(64, 64)) -> Path:
    Image.effect_noise(size, 60).convert("RGB").save(path)
    return path


def _truncated_png(path: Path) -> None:
    _noise(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _symlink_loop(path: Path) -> None:
    other = path.with_name("loop-b.png")
    path.symlink_to(other)
    other.symlink_to(path)


IMAGES_REFUSED = [
    ("zero-byte-file", "empty.png", lambda p: p.write_bytes(b""), "not an image"),
    ("truncated-png", "cut.png", _truncated_png, "cannot decode"),
    ("gif-header-only", "head.gif", lambda p: p.write_bytes(b"GIF89a\x10\x00\x10\x00"), "not an image"),
    ("fifo", "pipe.png", os.mkfifo, "not a regular file"),
    ("symlink-loop", "loop-a.png", _symlink_loop, "cannot resolve"),
]


@pytest.mark.parametrize("kind, name, make, fragment", IMAGES_REFUSED, ids=[c[0] for c in IMAGES_REFUSED])
def test_image_refused(store, data, workspace_state, kind, name, make, fragment):
    make(data / "images" / name)
    source = _jsonl(data / "m.jsonl", [_good(1), _good(2, image=f"images/{name}")])
    assert fragment in _fails(store, workspace_state, source, 2, "image").message


def test_device_file_with_allow_absolute(store, data, workspace_state):
    source = _jsonl(data / "m.jsonl", [_good(1, image="/dev/zero")])
    assert "not a regular file" in _fails(store, workspace_state, source, 1, "image", allow_absolute=True).message


def _exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    Image.new("RGB", (20, 10), (10, 120, 200)).save(path, exif=exif)


def _palette_with_alpha(path: Path) -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.save(path, transparency=0)


def _animated_gif(path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)


def _symlink_inside(path: Path) -> None:
    path.symlink_to(path.with_name("a.jpg"))


ACCEPTED_IMAGES = [
    ("cmyk-jpeg", "cmyk.jpg", lambda p: Image.new("CMYK", (8, 8), (0, 100, 200, 0)).save(p)),
    ("16-bit-png", "deep.png", lambda p: Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 900).save(p)),
    ("palette-with-alpha", "palette.png", _palette_with_alpha),
    ("animated-gif", "anim.gif", _animated_gif),
    ("exif-rotated-jpeg", "rotated.jpg", _exif_rotated),
    ("png-named-jpg", "really-png.jpg", lambda p: Image.new("RGB", (8, 8)).save(p, format="PNG")),
    ("grey-with-alpha", "la.png", lambda p: Image.new("LA", (8, 8), (100, 50)).save(p)),
    ("one-pixel", "dot.png", lambda p: Image.new("RGB", (1, 1)).save(p)),
    ("symlink-inside-the-folder", "link.jpg", _symlink_inside),
]


@pytest.mark.parametrize("kind, name, make", ACCEPTED_IMAGES, ids=[c[0] for c in ACCEPTED_IMAGES])
def test_accepted_image(store, data, kind, name, make):
    """Images that decode are fine whatever their mode (the encoders convert to RGB)."""
    make(data / "images" / name)
    report = import_source(store, _jsonl(data / "m.jsonl", [_good(1, image=f"images/{name}")]), "manifest")
    assert report.added == 1
    with Image.open(data / "images" / name) as image:
        image.convert("RGB")  # what the image encoders do with it


# --------------------------------------------------------------------------- the source itself


def _fifo(path: Path) -> None:
    os.mkfifo(path)


SOURCES_REFUSED = [
    ("nul-in-the-source-path", lambda d: d / "m\x00.jsonl", "U+0000"),
    ("source-name-over-255-bytes", lambda d: d / ("m" * 300 + ".jsonl"), "306 bytes"),
    ("missing-source", lambda d: d / "absent.jsonl", "no such file"),
    ("source-is-a-folder", lambda d: (d / "dir.jsonl").mkdir() or d / "dir.jsonl", "not a regular file"),
    ("source-is-a-fifo", lambda d: _fifo(d / "pipe.jsonl") or d / "pipe.jsonl", "not a regular file"),
]


@pytest.mark.parametrize("kind, make, fragment", SOURCES_REFUSED, ids=[c[0] for c in SOURCES_REFUSED])
def test_source_refused(store, data, workspace_state, kind, make, fragment):
    assert fragment in _fails(store, workspace_state, make(data), None, "source").message


def test_cli_source_name_too_long(store, data, workspace_state):
    source = data / ("m" * 300 + ".jsonl")
    _cli_fails(store, workspace_state, source, str(source), "source")


# --------------------------------------------------------------------------- SQLite and PostgreSQL


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_text_rule_holds_on_both_databases(tmp_path, data, kind):
    """NUL is refused before PostgreSQL sees it; what the rule accepts round-trips on both databases."""
    kept = "tab\there, new\nline, crlf\r\n, del \u007f, c1 \u0085, cat \U0001f408"
    with database_url(kind) as url:
        store = init_workspace(tmp_path / "ws", labels=["cat"], database_url=url)
        try:
            nul = _jsonl(data / "nul.jsonl", [_good(1, text="a\u0000b")])
            with pytest.raises(InputError, match="U\\+0000"):
                import_source(store, nul, "manifest")
            import_source(store, _jsonl(data / "ok.jsonl", [_good(2, text=kept)]), "manifest")
            with store.db.write() as s:
                pair_id = s.scalar(select(Pair.id).where(Pair.external_id == "n2"))
                for bad in ("a\u0000b", "esc \u001b", "x\udce9"):
                    with pytest.raises(PairlabError, match="^comment: "):
                        record_event(s, pair_id=pair_id, user_id=store.system_user_id(), kind="flag", comment=bad)
                record_event(s, pair_id=pair_id, user_id=store.system_user_id(), kind="flag", comment=kept)
            with store.db.read() as s:
                assert s.scalar(select(Pair.text).where(Pair.id == pair_id)) == kept
                assert list(s.scalars(select(Event.comment).where(Event.comment.is_not(None)))) == [kept]
        finally:
            store.close()
