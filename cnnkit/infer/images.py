"""Images as a checkpoint's model sees them, by its preprocessing record alone: decoded to L or
RGB, resized (and centre-cropped) with the recorded filter, scaled to [0, 1], normalized.

The record says what the run's evaluation data did (cnnkit.data.preprocess): class folders
are resized on the shorter side and centre-cropped as torchvision's evaluation transforms do,
other datasets are resized straight to the model's input size.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from cnnkit.data.folder_index import EXTENSIONS, left_out_line, suffix_counts
from cnnkit.data.image_files import open_image
from cnnkit.errors import DataError

ORIENTATION = 0x0112  # the EXIF tag


def expand(images: Iterable[Any]) -> list[Any]:
    """Each folder replaced by the images under it (recursively, sorted by path; the other
    files counted in one warning line per folder); files, PIL images and tensors kept as
    they are."""
    out = []
    for item in images:
        if isinstance(item, (str, Path)) and Path(item).is_dir():
            files = [p for p in Path(item).rglob("*") if p.is_file()
                     and not any(part.startswith(".") for part in p.relative_to(item).parts)]
            found = sorted(p for p in files if p.suffix.lower() in EXTENSIONS)
            if not found:
                raise DataError(f"{item}: a folder without images ({', '.join(EXTENSIONS)})")
            others = suffix_counts([p.name for p in files if p.suffix.lower() not in EXTENSIONS])
            if others:
                print(f"cnnkit: warning: {left_out_line(item, others)}", file=sys.stderr,
                      flush=True)
            out.extend(found)
        else:
            out.append(item)
    return out


def name_of(image: Any, index: int) -> str:
    """How a result names its image: the path, or `<image N>` for one given in memory."""
    return str(image) if isinstance(image, (str, Path)) else f"<image {index}>"


def input_size(record: dict[str, Any]) -> tuple[int, int]:
    """(H, W) of what the model is fed at evaluation: the recorded crop (FixRes's, which may
    differ from the training size), else the training size height × width."""
    crop = record.get("crop")
    return (crop, crop) if crop else (record["height"], record["width"])


def transform(record: dict[str, Any]) -> T.Compose:
    """The resize (and crop) of the record, for a PIL image or a (C, H, W) tensor."""
    mode = InterpolationMode(record["interpolation"])
    size = input_size(record)
    if record.get("resize"):
        return T.Compose([T.Resize(record["resize"], interpolation=mode), T.CenterCrop(size)])
    return T.Compose([T.Resize(size, interpolation=mode)])


def pixels(image: Any, record: dict[str, Any]) -> torch.Tensor:
    """One image as (C, H, W) float in [0, 1], resized as recorded, not yet normalized."""
    channels = record["channels"]
    if isinstance(image, (str, Path)):
        image = open_image(image, "L" if channels == 1 else "RGB")
    if isinstance(image, Image.Image):
        image = image.convert("L" if channels == 1 else "RGB")
        x = transform(record)(image)
        return T.functional.pil_to_tensor(x).float().div_(255)
    if isinstance(image, torch.Tensor):
        return _tensor(image, record)
    raise DataError(f"expected an image path, a PIL image or a (C, H, W) tensor, found "
                    f"{type(image).__name__}")


def _tensor(image: torch.Tensor, record: dict[str, Any]) -> torch.Tensor:
    channels = record["channels"]
    if image.dim() == 2:
        image = image.unsqueeze(0)
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise DataError(f"expected a (C, H, W) image tensor with 1 or 3 channels, found shape "
                        f"{list(image.shape)}")
    x = image.float().div(255) if image.dtype == torch.uint8 else image.float()
    if x.shape[0] != channels:  # grey to RGB by repeating, RGB to grey as PIL's "L" weighs it
        x = x.expand(channels, -1, -1) if channels == 3 else \
            (x * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
    if tuple(x.shape[1:]) != input_size(record) or record.get("resize"):
        x = transform(record)(x)
    return x


def prepare(images: Sequence[Any], record: dict[str, Any], *, invert: bool = False,
            first: int = 0) -> torch.Tensor:
    """(B, C, H, W): the images decoded, resized and normalized as the record says; with a
    warning for each that looks inverted against the training data (infer/invert.py)."""
    x = torch.stack([pixels(image, record) for image in images])  # (B, C, H, W) in [0, 1]
    names = [name_of(image, first + k) for k, image in enumerate(images)]
    return normalize(x, names, record, invert=invert)


def normalize(x: torch.Tensor, names: Sequence[str], record: dict[str, Any], *,
              invert: bool = False) -> torch.Tensor:
    """(B, C, H, W) pixels in [0, 1] normalized as the record says, after the brightness check
    (infer/invert.py)."""
    from cnnkit.infer.invert import match_brightness

    mean = torch.tensor(record["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(record["std"], dtype=torch.float32).view(1, -1, 1, 1)
    return (match_brightness(x, names, record, invert=invert) - mean) / std


def image_size(image: Any) -> tuple[int, int]:
    """(width, height) of an image path, PIL image or (C, H, W) tensor, as the model saw it."""
    if isinstance(image, torch.Tensor):
        return image.shape[-1], image.shape[-2]
    if isinstance(image, Image.Image):
        return image.size
    with Image.open(image) as opened:  # the header only; the pixels were read already
        width, height = opened.size
        # EXIF orientations 5 to 8 turn the image a quarter: the model saw it upright
        # (open_image), so the box is in the turned frame
        return (height, width) if opened.getexif().get(ORIENTATION) in (5, 6, 7, 8) \
            else (width, height)
