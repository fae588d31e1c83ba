"""The Wikipedia benchmark (Rasiwasia et al., ACM MM 2010; DESIGN §2), read with ``storage.wiki.read_wiki``.

Splits ``train``/``test`` come from the list files (the ``split`` argument is not used); labels are
the category, the vocabulary is ``categories.list`` in order; external id ``wiki:<text id>``.
With an ``images/`` folder beside the lists, the image is ``images/<image id>.*`` and with ``texts/``
the text is the content of ``texts/<text id>.*``. Without them (the features-only benchmark) the pair
is feature-only: ``Pair.image_path`` is the image id and the text is the text id.
``raw_features.mat``, when present, becomes the ``precomputed`` image and text feature sets.
"""
from __future__ import annotations

from glob import escape
from pathlib import Path

from storage.errors import InputError
from storage.importers.fields import check_id, check_labels, check_text, resolve_image
from storage.importers.rows import ParsedSource, SourceRow
from storage.text import read_text
from storage.wiki import LIST_FILES, read_wiki


def parse_wiki(source: Path, *, allow_absolute: bool) -> ParsedSource:
    folder = source if source.is_dir() else source.parent
    data = read_wiki(folder)
    images, texts = folder / "images", folder / "texts"
    rows = []
    for record in data.records:
        path = str(folder / LIST_FILES[record.split])
        image, image_ref, text = None, record.image_id, record.text_id
        if images.is_dir():
            image = _find(images, record.image_id, allow_absolute, path, record.line, "image_id")
            image_ref = str(image)
        external_id = check_id(record.text_id, path, record.line, "text_id", prefix="wiki:")
        if texts.is_dir():
            text_file = _find(texts, record.text_id, allow_absolute, path, record.line, "text_id")
            text = check_text(read_text(text_file, "text"), str(text_file), None, "text")
        rows.append(SourceRow(path=path, line=record.line, external_id=external_id, image=image,
                              image_ref=image_ref, text=text, labels=(record.category,), split=record.split,
                              id_field="text_id", image_field="image_id", labels_field="category"))
    features = {}
    if data.image_features is not None:
        features = {"image": data.image_features, "text": data.text_features}
    categories = check_labels(data.categories, str(folder / "categories.list"), None, "categories")
    return ParsedSource(rows, list(categories), features)


def _find(folder: Path, stem: str, allow_absolute: bool, path: str, line: int, field_name: str) -> Path:
    """``folder/<stem>.*`` (first match by name), confined to ``folder``; a missing file is reported by
    the image check (or here, for texts). ``stem`` is a file name, never a path."""
    if "/" in stem or stem in (".", ".."):
        raise InputError(path, line, field_name, f"{stem[:60]!r} is not a file name (no '/', '.' or '..')")
    matches = sorted(p.name for p in folder.glob(f"{escape(stem)}.*"))
    name = matches[0] if matches else f"{stem}.jpg"
    found = resolve_image(folder, name, allow_absolute=allow_absolute, path=path, line=line, field_name=field_name)
    if field_name == "text_id" and not found.is_file():
        raise InputError(path, line, field_name, f"no text file {folder / stem}.*")
    return found
