"""Class-folder images decoded for their transform, no larger than it needs (the loader's
workers call these; data/imagefolder.py).

Where the time goes in a worker (scripts/bench.py section f): the JPEG decode, then the
crop and resize, far ahead of the rest. Three savings, none of which changes what the model
sees beyond resampling:

- No copy for upright images: `ImageOps.exif_transpose` returns a copy of every image,
  tagged or not. A training crop of a tagged image is cut from the stored pixels and only
  the small output is turned; evaluation transposes tagged images alone.
- JPEG's DCT scaling (PIL's `draft`): a JPEG decodes at 1/2, 1/4 or 1/8 of its size for
  less work. A training crop is drawn first, with torchvision's own
  RandomResizedCrop.make_params on the full upright size read from the header (the same
  draws from the same generator as on a decoded image); the decode is then reduced only as
  far as keeps that crop at least as large as the output, and the crop box is scaled to the
  reduced image. Other formats, and evaluation (whose pixels must be those `cnnkit
  predict` sees), decode at full size.
- The training crop is resized by torchvision's resize on a uint8 tensor (torch's
  vectorized antialiasing kernel) rather than on a PIL image: 0.38 against 0.99 ms for a
  224 px output on this project's 2-core machine (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from cnnkit.errors import DataError

ORIENTATION = 0x0112  # EXIF: 1 upright; 5-8 turn the image a quarter (width and height swap)


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
    `path`: the crop drawn on the upright size from the header, the JPEG decoded at the
    smallest DCT scale that crop allows, the crop cut from the stored pixels, resized by
    torchvision's uint8 tensor kernel, then turned upright (a flip or a quarter turn of the
    small output, not of the whole photo), then the rest of `transform` on the tensor. Draws
    come from torch's global generator, in torchvision's order."""
    crop, rest = _split(transform)
    out = crop.size[0]

    def work(image: Image.Image) -> torch.Tensor:
        orientation, (width, height) = stored_orientation(image)
        box = crop.make_params([torch.empty(()).expand(3, height, width)])  # no pixels read
        scale = _reduction((box["width"], box["height"]), out) if draft else 1
        stored = image.size
        if scale > 1 and image.format == "JPEG":
            image.draft("RGB", (math.ceil(stored[0] / scale), math.ceil(stored[1] / scale)))
        region = _stored_box(box, orientation, stored, image.size)
        pixels = image.crop(region)  # decodes (reduced where drafted); copies the region only
        if pixels.mode != "RGB":
            pixels = pixels.convert("RGB")
        tensor = F.resize(F.pil_to_tensor(pixels), [out, out], interpolation=crop.interpolation,
                          antialias=True)
        return _upright(tensor, orientation)

    return rest(read_image(path, work, note))


@functools.lru_cache(maxsize=8)
def _split(transform: v2.Compose) -> tuple[v2.RandomResizedCrop, v2.Compose]:
    """(the crop, the rest of the transform): built once per transform, not per image (a
    Compose is a Module, 70 µs to make)."""
    crop = transform.transforms[0]
    assert isinstance(crop, v2.RandomResizedCrop)
    return crop, v2.Compose(transform.transforms[1:])


def _stored_box(box: dict, orientation: int, stored: tuple[int, int],
                decoded: tuple[int, int]) -> tuple[int, int, int, int]:
    """The crop `box` (drawn on the upright image) as a (left, top, right, bottom) box of the
    stored pixels as decoded (reduced by `draft` from `stored`), rounded to whole pixels."""
    w, h = stored
    x0, y0 = box["left"], box["top"]
    x1, y1 = x0 + box["width"], y0 + box["height"]
    # the stored point (u, v) of an upright point (x, y), per EXIF orientation (the inverse of
    # the turn exif_transpose applies); 5-8 swap the axes
    inverse = {2: lambda x, y: (w - x, y),
               3: lambda x, y: (w - x, h - y), 4: lambda x, y: (x, h - y),
               5: lambda x, y: (y, x), 6: lambda x, y: (y, h - x),
               7: lambda x, y: (w - y, h - x), 8: lambda x, y: (w - y, x)
               }.get(orientation, lambda x, y: (x, y))  # other values: upright, as PIL
    (u0, v0), (u1, v1) = inverse(x0, y0), inverse(x1, y1)
    sx, sy = decoded[0] / w, decoded[1] / h
    left, right = sorted((u0, u1))
    top, bottom = sorted((v0, v1))
    if (sx, sy) == (1, 1):
        return left, top, right, bottom  # whole pixels already: torchvision's crop
    left, top = min(round(left * sx), decoded[0] - 1), min(round(top * sy), decoded[1] - 1)
    return (left, top, max(left + 1, round(right * sx)), max(top + 1, round(bottom * sy)))


def _upright(t: torch.Tensor, orientation: int) -> torch.Tensor:
    """A square (C, S, S) crop of the stored pixels turned as EXIF `orientation` says."""
    if orientation in (5, 6, 7, 8):
        t = t.transpose(-1, -2)
    dims = {2: (-1,), 3: (-1, -2), 4: (-2,), 6: (-1,), 7: (-1, -2), 8: (-2,)}.get(orientation)
    return t.flip(dims) if dims else t


def decode_eval(path: Path, transform: v2.Compose, *, note=None) -> torch.Tensor:
    """`transform` applied to the image at `path`, decoded at full size (as `cnnkit predict`
    decodes it: the val metrics are those of the pixels predict sees), without the copy."""

    def work(image: Image.Image) -> Image.Image:
        return finish(image, stored_orientation(image)[0], "RGB")

    return transform(read_image(path, work, note))
