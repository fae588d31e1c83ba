"""Image verification at import (``storage.importers.images``): memory bounded by the pixel cap, not the file."""
from __future__ import annotations

import hashlib
import tracemalloc

from PIL import Image

from storage.importers.images import verify_images
from storage.importers.rows import SourceRow

PADDING = 48 * 1024 * 1024  # trailing bytes a JPEG decoder ignores: a large file with a tiny image


def test_a_large_file_is_hashed_and_decoded_without_being_read_whole(tmp_path):
    path = tmp_path / "padded.jpg"
    Image.new("RGB", (32, 24), (10, 200, 30)).save(path)
    with path.open("ab") as fh:
        fh.write(b"\0" * PADDING)
    row = SourceRow(path=str(tmp_path / "m.jsonl"), line=1, external_id="p", image=path, image_ref=str(path),
                    text="a padded photo", labels=None, split="pool")
    tracemalloc.start()
    try:
        (sha,) = verify_images([row], max_pixels=10_000, progress=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert peak < PADDING / 8, f"peak {peak / 2**20:.1f} MiB while verifying a {PADDING / 2**20:.0f} MiB file"
