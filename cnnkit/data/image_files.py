"""Image files opened the one way training and inference both use: decoded by PIL, turned
upright by EXIF, in the mode asked for. PIL only: torchvision's transforms are not imported,
so `cnnkit predict` on one image does not pay for them."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from cnnkit.errors import DataError


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
