"""`data.decode: gpu`: class-folder JPEGs decoded on the CUDA device by nvJPEG
(`torchvision.io.decode_jpeg(device="cuda")`), and transformed there.

The loader's workers only read: a JPEG's bytes and its EXIF orientation, or, for the other
formats nvJPEG does not read, the pixels decoded on the CPU. The main process decodes a
batch's JPEGs in one call on the device, turns them upright (the CUDA decoder ignores
`apply_exif_orientation`), and applies the same torchvision.transforms.v2 pipeline as the CPU
path (data/transforms.py; `PILToTensor` passes tensors through) to each image on the device.
Each image's draws come from the CPU generator seeded by (seed, epoch, index), as in the CPU
path: the same crops and flips, pixels within the JPEG decoders' and resamplers' tolerance.
No reduced-size decode: nvJPEG decodes at full size. The same functions run on the CPU
(`decode_jpeg(device="cpu")`), which is how the tests cover them.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2

from cnnkit.data.decode import finish, read_image, stored_orientation
from cnnkit.errors import DataError

JPEG_START = b"\xff\xd8\xff"  # SOI and the first marker: what every JPEG file begins with


class Encoded(NamedTuple):
    """One image as a worker passes it to the main process."""

    path: str
    data: torch.Tensor  # uint8: a JPEG's bytes (N,), or decoded RGB pixels (3, H, W)
    orientation: int  # EXIF orientation of a JPEG (1: upright); pixels come upright
    seed: int | None  # the seed of its random transforms; None: evaluation (none drawn)

    @property
    def jpeg(self) -> bool:
        return self.data.dim() == 1


def read_encoded(path: Path, seed: int | None, note=None) -> Encoded:
    """A worker's share: a JPEG's bytes and orientation, or another format's upright pixels
    (`note`: decode.read_image's)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read image ({exc.strerror or exc})") from None
    if raw.startswith(JPEG_START):
        orientation = read_image(path, lambda image: stored_orientation(image)[0], note)
        return Encoded(str(path), torch.frombuffer(bytearray(raw), dtype=torch.uint8),
                       orientation, seed)
    pixels = read_image(path, lambda image: finish(image, stored_orientation(image)[0], "RGB"),
                        note)
    return Encoded(str(path), v2.functional.pil_to_tensor(pixels), 1, seed)


def upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """(3, H, W) pixels as stored -> as `ImageOps.exif_transpose` stands them (EXIF 1-8)."""
    turn = {3: 2, 6: -1, 8: 1}  # quarter turns counter-clockwise (PIL ROTATE_180/_270/_90)
    if orientation in turn:
        return torch.rot90(image, turn[orientation], dims=(-2, -1))
    if orientation == 2:
        return image.flip(-1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:  # TRANSPOSE: the main diagonal
        return image.transpose(-1, -2)
    if orientation == 7:  # TRANSVERSE: the other diagonal
        return torch.rot90(image.transpose(-1, -2), 2, dims=(-2, -1))
    return image


def _decode_jpegs(items: list[Encoded], device: torch.device) -> list[torch.Tensor | str]:
    """Each JPEG decoded on `device`, one call for all; where that call fails, one call per
    image, so a bad file is named (its message in place of its pixels)."""
    datas = [item.data for item in items]
    try:
        return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        out: list[torch.Tensor | str] = []
        for data in datas:
            try:
                out.append(decode_jpeg([data], mode=ImageReadMode.RGB, device=device)[0])
            except RuntimeError as exc:
                out.append(f"cannot decode image ({_reason(exc)})")
        return out


def _reason(exc: RuntimeError) -> str:
    """torchvision's message without its source location: 'decode_jpeg, FILE.cpp:171, Image
    is incomplete or truncated' -> 'Image is incomplete or truncated'."""
    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return line.rsplit(", ", 1)[-1] if ".cpp:" in line or ".cu:" in line else line


def decode_batch(items: list[Encoded], transform: v2.Compose, device: torch.device
                 ) -> tuple[torch.Tensor | None, list[int], list[tuple[str, str]]]:
    """(uint8 (B, 3, S, S) on `device`, which items it holds, [(path, message)] of the bad)."""
    jpegs = [i for i, item in enumerate(items) if item.jpeg]
    pixels: dict[int, torch.Tensor | str] = dict(
        zip(jpegs, _decode_jpegs([items[i] for i in jpegs], device) if jpegs else []))
    out, kept, bad = [], [], []
    for i, item in enumerate(items):
        image = pixels.get(i, item.data)
        if isinstance(image, str):
            bad.append((item.path, f"{item.path}: {image}"))
            continue
        image = upright(image.to(device, non_blocking=True), item.orientation)
        if item.seed is None:
            out.append(transform(image))
        else:
            with torch.random.fork_rng(devices=[]):  # as data/imagefolder.py's workers seed
                torch.default_generator.manual_seed(item.seed)
                out.append(transform(image))
        kept.append(i)
    return (torch.stack(out) if out else None), kept, bad
