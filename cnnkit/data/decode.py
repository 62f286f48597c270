"""Class-folder images decoded for their transform, no larger than it needs (the loader's
workers call these; data/imagefolder.py).

Where the time goes in a worker (scripts/bench.py section f): the JPEG decode, then the
crop and resize, far ahead of the rest. Two savings, neither of which changes what the
model sees beyond resampling:

- No copy for upright images: `ImageOps.exif_transpose` returns a copy of every image,
  tagged or not; here only an image whose EXIF orientation turns it is transposed.
- JPEG's DCT scaling (PIL's `draft`): a JPEG decodes at 1/2, 1/4 or 1/8 of its size for
  about that fraction of the work. A training crop is drawn first, with torchvision's own
  RandomResizedCrop.make_params on the full upright size read from the header (the same
  draws from the same generator as on a decoded image); the decode is then reduced only as
  far as keeps that crop at least as large as the output, and the crop box is scaled to the
  reduced image. Other formats, and evaluation (whose pixels must be those `cnnkit
  predict` sees), decode at full size.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from cnnkit.errors import DataError

ORIENTATION = 0x0112  # EXIF: 1 upright; 5-8 turn the image a quarter (width and height swap)
FILTERS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
           "bicubic": Image.Resampling.BICUBIC}


def stored_orientation(image: Image.Image) -> tuple[int, tuple[int, int]]:
    """(orientation, (width, height) as the image will stand once turned upright)."""
    orientation = image.getexif().get(ORIENTATION, 1)
    w, h = image.size
    return orientation, ((h, w) if orientation in (5, 6, 7, 8) else (w, h))


def finish(image: Image.Image, orientation: int, mode: str) -> Image.Image:
    """Decode, turn upright where the tag says so (the only copy), convert to `mode`."""
    image.load()
    if orientation not in (None, 1):
        image = ImageOps.exif_transpose(image)
    return image if image.mode == mode else image.convert(mode)


def _reduction(crop: tuple[int, int], size: int) -> int:
    """The largest JPEG scale denominator (1, 2, 4 or 8) that keeps a crop of (w, h) at
    least `size` pixels on its shorter side."""
    fit = min(crop) / size
    return next(s for s in (8, 4, 2, 1) if s <= fit or s == 1)


def read_image(path: Path, work, note=None):
    """work(image) of the image at `path`; then `note(image, its size as stored)`, where given:
    the image as work left it (decoded), for data/image_files.oddity_of without another read."""
    try:
        with Image.open(path) as image:
            size = image.size  # the header's: a reduced decode (draft) shrinks image.size
            out = work(image)
            if note is not None:
                note(image, size)
            return out
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot decode image ({str(exc) or type(exc).__name__})"
                        ) from None


def decode_train(path: Path, transform: v2.Compose, *, draft: bool = True,
                 note=None) -> torch.Tensor:
    """`transform` (RandomResizedCrop first, data/transforms.py) applied to the image at
    `path`, the JPEG decoded at the smallest DCT scale the drawn crop allows; draws come
    from torch's global generator, in torchvision's order."""
    crop, rest = transform.transforms[0], v2.Compose(transform.transforms[1:])
    assert isinstance(crop, v2.RandomResizedCrop)
    out = crop.size[0]

    def work(image: Image.Image) -> Image.Image:
        orientation, (width, height) = stored_orientation(image)
        box = crop.make_params([torch.empty(()).expand(3, height, width)])  # no pixels read
        scale = _reduction((box["width"], box["height"]), out) if draft else 1
        if scale > 1 and image.format == "JPEG":
            w, h = image.size  # as stored: the reduction is the same on both axes
            image.draft("RGB", (math.ceil(w / scale), math.ceil(h / scale)))
        image = finish(image, orientation, "RGB")
        if image.size == (width, height):  # not reduced: exactly torchvision's crop
            return crop.transform(image, box)
        sx, sy = width / image.width, height / image.height
        left, top = box["left"] / sx, box["top"] / sy
        return image.resize((out, out), FILTERS[crop.interpolation.value],
                            box=(left, top, left + box["width"] / sx, top + box["height"] / sy))

    return rest(read_image(path, work, note))


def decode_eval(path: Path, transform: v2.Compose, *, note=None) -> torch.Tensor:
    """`transform` applied to the image at `path`, decoded at full size (as `cnnkit predict`
    decodes it: the val metrics are those of the pixels predict sees), without the copy."""

    def work(image: Image.Image) -> Image.Image:
        return finish(image, stored_orientation(image)[0], "RGB")

    return transform(read_image(path, work, note))
