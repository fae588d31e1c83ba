"""COCO captions (DESIGN §2): each caption becomes one pair that shares its image.

Source: a ``captions_<name>.json`` file, or a folder holding ``annotations/captions_*.json`` (every one
found is imported). Images are looked up in ``<root>/<name>/``, ``<json folder>/<name>/``, then beside
the json, where ``<root>`` is the parent of an ``annotations`` folder (else the json's folder); they must
stay inside ``<root>`` unless ``allow_absolute``. When ``instances_<name>.json`` sits beside the
captions file, an image listed there is labelled with the union of its instances' categories (``[]`` if
none); other images stay unlabelled. External id: ``coco:<caption id>``; split: the ``split`` argument.
The vocabulary is inferred in category order. Image and category ids are integers or strings
(``fields.check_key``); an id listed twice in ``images`` or ``categories`` is an error.
"""
from __future__ import annotations

from pathlib import Path

from storage.errors import InputError
from storage.importers.fields import check_id, check_key, check_labels, check_text, resolve_image
from storage.importers.jsonrows import read_json_document
from storage.importers.rows import ParsedSource, SourceRow


def parse_coco(source: Path, *, split: str, allow_absolute: bool) -> ParsedSource:
    rows, vocabulary = [], {}
    for captions in _caption_files(source):
        _parse_one(captions, split, allow_absolute, rows, vocabulary)
    return ParsedSource(rows, list(vocabulary))


def _caption_files(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise InputError(str(source), None, "source", "no such file or folder")
    found = sorted((source / "annotations").glob("captions_*.json")) or sorted(source.glob("captions_*.json"))
    if not found:
        raise InputError(str(source), None, "source", "no annotations/captions_*.json in this folder")
    return found


def _load(path: Path) -> dict:
    doc = read_json_document(path)
    if not isinstance(doc, dict):
        raise InputError(str(path), None, "json", "expected a JSON object")
    for key in ("images", "annotations"):
        if not isinstance(doc.get(key), list):
            raise InputError(str(path), None, key, "missing or not a list")
    return doc


def _field(item: object, key: str, path: Path, where: str):
    if not isinstance(item, dict) or key not in item:
        raise InputError(str(path), None, f"{where}.{key}", "missing")
    return item[key]


def _id(item: object, key: str, path: Path, where: str) -> int | str:
    return check_key(_field(item, key, path, where), str(path), None, f"{where}.{key}")


def _new_id(seen: dict, value: int | str, path: Path, where: str) -> None:
    if value in seen:
        raise InputError(str(path), None, f"{where}.id", f"id {value!r} is listed twice (also at {seen[value]})")
    seen[value] = where


def _parse_one(captions: Path, split: str, allow_absolute: bool, rows: list[SourceRow], vocabulary: dict) -> None:
    doc = _load(captions)
    folder = captions.resolve().parent
    root = folder.parent if folder.name == "annotations" else folder
    name = captions.stem.removeprefix("captions_")
    dirs = list(dict.fromkeys([root / name, folder / name, folder, root]))
    images: dict[object, Path] = {}
    listed: dict[object, str] = {}
    for i, image in enumerate(doc["images"]):
        where = f"images[{i}]"
        image_id = _id(image, "id", captions, where)
        _new_id(listed, image_id, captions, where)
        file_name = _field(image, "file_name", captions, where)
        candidates = [resolve_image(d, file_name, allow_absolute=allow_absolute, path=str(captions), line=None,
                                    field_name=f"{where}.file_name") for d in dirs]
        images[image_id] = next((c for c in candidates if c.is_file()), candidates[0])
    labels = _instance_labels(folder / f"instances_{name}.json", vocabulary)
    for i, ann in enumerate(doc["annotations"]):
        where = f"annotations[{i}]"
        image_id = _id(ann, "image_id", captions, where)
        if image_id not in images:
            raise InputError(str(captions), None, f"{where}.image_id", f"no image with id {image_id!r}")
        external_id = check_id(_field(ann, "id", captions, where), str(captions), None, f"{where}.id", prefix="coco:")
        if external_id is None:
            raise InputError(str(captions), None, f"{where}.id", "empty")
        rows.append(SourceRow(
            path=str(captions), line=None, external_id=external_id,
            image=images[image_id], image_ref=str(images[image_id]),
            text=check_text(_field(ann, "caption", captions, where), str(captions), None, f"{where}.caption"),
            labels=labels.get(image_id) if labels is not None else None, split=split,
            id_field=f"{where}.id", image_field=f"images[id={image_id}].file_name", labels_field=f"{where}.labels"))


def _instance_labels(path: Path, vocabulary: dict) -> dict[object, tuple[str, ...]] | None:
    """image id -> category names of its instances (category order); None without an instances file."""
    if not path.is_file():
        return None
    doc = _load(path)
    categories = doc.get("categories")
    if not isinstance(categories, list):
        raise InputError(str(path), None, "categories", "missing or not a list")
    names: dict[object, str] = {}
    listed: dict[object, str] = {}
    for i, cat in enumerate(categories):
        where = f"categories[{i}]"
        category = _id(cat, "id", path, where)
        _new_id(listed, category, path, where)
        names[category] = check_labels([_field(cat, "name", path, where)], str(path), None, f"{where}.name")[0]
        vocabulary[names[category]] = None
    order = {name: i for i, name in enumerate(names.values())}
    per_image: dict[object, set[str]] = {_id(im, "id", path, f"images[{i}]"): set()
                                         for i, im in enumerate(doc["images"])}
    for i, ann in enumerate(doc["annotations"]):
        where = f"annotations[{i}]"
        category = _id(ann, "category_id", path, where)
        if category not in names:
            raise InputError(str(path), None, f"{where}.category_id", f"unknown category {category!r}")
        per_image.setdefault(_id(ann, "image_id", path, where), set()).add(names[category])
    return {image: tuple(sorted(found, key=order.__getitem__)) for image, found in per_image.items()}
