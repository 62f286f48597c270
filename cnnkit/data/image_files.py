"""Image files opened the one way training and inference both use: decoded by PIL, turned
upright by EXIF, in the mode asked for. PIL only: torchvision's transforms are not imported,
so `cnnkit predict` on one image does not pay for them. And the images that decode but may
mislead (tiny, or transparent), judged the same way for training, evaluation and prediction."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from cnnkit.errors import DataError, counted


def open_image(path: str | Path, mode: str = "RGB", *, where: str | None = None) -> Image.Image:
    """The decoded image in `mode`, turned upright by its EXIF orientation (a phone's photo
    stored sideways): boxes and crops are in the frame the image is seen in. A DataError
    names the file, after `where` (a CSV's line, say) where it is given."""
    said = f"{where}: image {path}" if where else f"{path}: image"
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I;16") or image.mode == "I":  # a 16-bit PNG: 0..65535
                image = image.convert("I").point(lambda v: v * (1 / 257)).convert("L")
            # convert decodes every pixel, so truncation shows here
            return image.convert(mode)
    except FileNotFoundError:
        raise DataError(f"{said} not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        why = str(exc) or type(exc).__name__
        raise DataError(f"{where}: cannot decode image {path} ({why})" if where
                        else f"{path}: cannot decode image ({why})") from None


TINY = 8  # pixels: an image with a shorter side below this says little at any input size
ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")  # PIL modes whose last band is alpha


def oddity_of(image: Image.Image, size: tuple[int, int]) -> str | None:
    """"tiny" or "alpha" for an image that decodes but may mislead, else None: `size` (as
    stored, from the header) under TINY pixels on a side, or transparent pixels, which
    converting to L or RGB drops (they show their stored colour, often black). An opaque
    alpha channel loses nothing and is not counted. Looks at pixels only where the mode
    has transparency, and those `image` already holds where it was decoded."""
    if min(size) < TINY:
        return "tiny"
    if image.mode in ALPHA_MODES:
        alpha = image.getchannel(image.getbands()[-1])
    elif "transparency" in image.info:  # a palette or colour key marks some pixels clear
        alpha = image.convert("RGBA").getchannel("A")
    else:
        return None
    return "alpha" if alpha.getextrema()[0] < 255 else None


def file_oddity(path: str | Path) -> str | None:
    """oddity_of the image file at `path` (its header; its pixels where it has transparency);
    None for a file that does not decode, which is reported where it is decoded."""
    try:
        with Image.open(path) as image:
            return oddity_of(image, image.size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def oddity_line(kind: str, paths: list[str]) -> str:
    """One warning's text for the images of one oddity kind: their count and the first."""
    images = counted(len(paths), "image")
    what = f"smaller than {TINY} pixels on a side" if kind == "tiny" else \
        "with transparent pixels (decoding drops the alpha channel)"
    return f"{images} {what} (first: {paths[0]})"
