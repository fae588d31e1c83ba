"""Image decoding and ImageNet preprocessing with PIL + numpy, and a parallel decode pipeline.

torchvision is not a dependency (it has no CPU wheel here), so the usual
``Resize -> CenterCrop -> ToTensor -> Normalize`` is done by hand:

* :func:`open_image` is the one decoder of image files for the encoders and the
  workbench's display: RGB, turned upright by the EXIF Orientation tag (phones
  store photos sideways with that tag, and browsers show them upright, so the
  model must see what the annotator sees).
* :func:`load_center_crop` decodes a file with :func:`open_image`, takes the centre
  square crop of side ``min(h, w) * crop_size / resize_size`` and resizes it to
  ``crop_size`` (bicubic). This equals "resize the shorter side to 256, centre-crop
  224" and is the order the TF EfficientNet reference uses (crop, then resize).
* :func:`normalize_batch` turns a ``(B, S, S, 3)`` uint8 batch into a
  ``(B, 3, S, S)`` float32 tensor normalised with the ImageNet mean and std.
* :func:`iter_image_batches` decodes files on a thread pool (PIL releases the GIL
  while decoding and resampling) while the caller runs the model on the previous
  batch, so both cores stay busy.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from learner.encoders.base import ImageDecodeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

T = TypeVar("T")


def center_crop_box(width: int, height: int, crop_size: int, resize_size: int) -> tuple[float, float, float, float]:
    """The centre square ``(left, top, right, bottom)`` whose side is ``min(w, h) * crop_size / resize_size``."""
    side = min(width, height) * crop_size / resize_size
    left = (width - side) / 2.0
    top = (height - side) / 2.0
    return (left, top, left + side, top + side)


def open_image(path: str | Path, *, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode an image file to an upright RGB image (EXIF orientation applied, ``ImageOps.exif_transpose``).

    draft_size: JPEG only, decode at the smallest reduced DCT scale whose size is still at least this
    ``(w, h)`` (``Image.draft``); None decodes at full size. Raises :class:`ImageDecodeError` naming
    the file if it is missing or not a decodable image.
    """
    try:
        with Image.open(path) as img:
            if draft_size is not None:
                img.draft("RGB", draft_size)
            ImageOps.exif_transpose(img, in_place=True)
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageDecodeError(f"{path}: cannot decode image ({exc})") from exc


def load_center_crop(path: str | Path, *, crop_size: int = 224, resize_size: int = 256) -> np.ndarray:
    """Decode an image file (:func:`open_image`, upright) to a centre-cropped RGB array.

    Returns ``(crop_size, crop_size, 3)`` uint8. Raises :class:`ImageDecodeError`
    naming the file if it is missing or not a decodable image.
    """
    rgb = open_image(path, draft_size=(resize_size, resize_size))  # a square request: any orientation fits
    box = center_crop_box(rgb.width, rgb.height, crop_size, resize_size)
    out = rgb.resize((crop_size, crop_size), Image.Resampling.BICUBIC, box=box)
    return np.asarray(out, dtype=np.uint8)


def normalize_batch(
    batch: np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """``(B, S, S, 3)`` uint8 -> ``(B, 3, S, S)`` float32, scaled to [0, 1] then ``(x - mean) / std``."""
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)  # (B, 3, S, S)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def iter_image_batches(
    paths: Sequence[str | Path],
    load: Callable[[str | Path], T],
    *,
    batch_size: int,
    workers: int,
) -> Iterator[list[T]]:
    """Yield ``load(path)`` results in input order, ``batch_size`` at a time.

    With ``workers >= 1`` files are decoded on a thread pool that keeps up to
    ``2 * batch_size`` decodes in flight, so the next batch is being decoded while
    the caller processes the current one. ``workers == 0`` decodes sequentially in
    the calling thread (the baseline the benchmark compares against).
    """
    if workers == 0:
        for start in range(0, len(paths), batch_size):
            yield [load(p) for p in paths[start:start + batch_size]]
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pairlab-decode") as pool:
        pending: deque[Future[T]] = deque()
        todo = iter(paths)
        for path in todo:
            pending.append(pool.submit(load, path))
            if len(pending) >= 2 * batch_size:
                break
        batch: list[T] = []
        while pending:
            batch.append(pending.popleft().result())
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(load, nxt))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
