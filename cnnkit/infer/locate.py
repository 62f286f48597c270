"""Boxes drawn: each image of a localization checkpoint's predictions (infer/predict.py, read
by the task) drawn with its box, class and confidence, or "nothing" when p_c is below the
task's threshold; and the one-line text of a prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from cnnkit.data.image_files import open_image
from cnnkit.errors import CnnkitError

MIN_DRAWN = 256  # px: smaller images are enlarged (nearest neighbour) before drawing
BOX_COLOUR, NOTHING_COLOUR = (255, 64, 64), (255, 200, 0)


def draw_boxes(results: list[dict[str, Any]], out_dir: str | Path) -> None:
    """Each predicted image drawn with its box as OUT_DIR/STEM.png (the path put in "out")."""
    out_dir = Path(out_dir)
    _make_dir(out_dir)
    used: set[str] = set()
    for result in results:
        target = _unique(out_dir, Path(result["image"]).stem, used)
        # upright by EXIF, as the model saw it (open_image, as infer/images.py reads it)
        draw_prediction(open_image(result["image"]), result).save(target)
        result["out"] = str(target)


def draw_prediction(image: Image.Image, result: dict[str, Any]) -> Image.Image:
    """The image in RGB, enlarged to at least MIN_DRAWN px, with the box and its label drawn,
    or "nothing" in the corner when no object is declared."""
    zoom = max(1, -(-MIN_DRAWN // min(image.width, image.height)))
    canvas = image.convert("RGB").resize((image.width * zoom, image.height * zoom),
                                         Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    font = _font(max(12, canvas.height // 16))
    line = max(2, canvas.height // 128)
    if not result["object"]:
        text = f"nothing (p_c {result['p_object']:.2f})"
        _label(draw, (line, line), text, font, NOTHING_COLOUR)
        return canvas
    x, y, w, h = (f * s for f, s in zip(result["box"], (canvas.width, canvas.height) * 2))
    draw.rectangle([x, y, x + w - 1, y + h - 1], outline=BOX_COLOUR, width=line)
    text = f"{result['class']} {result['probability']:.2f} (p_c {result['p_object']:.2f})"
    _, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    above = y - bottom - line - 3  # the label's background ends just above the box's edge
    left = max(0, min(x, canvas.width - right - 3))  # kept inside the image
    _label(draw, (left, above if above - 2 + top >= 0 else y + line + 2), text, font,
           BOX_COLOUR)
    return canvas


def _label(draw: ImageDraw.ImageDraw, corner: tuple[float, float], text: str, font,
           colour: tuple[int, int, int]) -> None:
    left, top, right, bottom = draw.textbbox(corner, text, font=font)
    draw.rectangle([left - 2, top - 2, right + 2, bottom + 2], fill=(0, 0, 0))
    draw.text(corner, text, fill=colour, font=font)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable since Pillow 10.1
    except TypeError:
        return ImageFont.load_default()


def _make_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"{out_dir}: cannot create the output directory "
                          f"({exc.strerror})") from None


def _unique(out_dir: Path, stem: str, used: set[str]) -> Path:
    """OUT/STEM.png, or OUT/STEM_2.png, ... when two inputs share a stem."""
    name, n = stem, 1
    while name in used:
        n += 1
        name = f"{stem}_{n}"
    used.add(name)
    return out_dir / f"{name}.png"


def format_prediction(result: dict[str, Any]) -> str:
    """One line: `img.png: 7 (0.98) at x 12.0 y 30.0 w 20.0 h 25.0 px, p_c 0.99`, with
    `7 (0.98), 1 (0.01)` for the classes when more than one is asked for."""
    if not result["object"]:
        return f"{result['image']}: nothing (p_c {result['p_object']:.2f})"
    x, y, w, h = result["box_pixels"]
    drawn = f" -> {result['out']}" if "out" in result else ""
    classes = ", ".join(f"{c['class']} ({c['probability']:.2f})" for c in result["top"])
    return (f"{result['image']}: {classes} at x {x} y {y} w {w} h {h} px, "
            f"p_c {result['p_object']:.2f}{drawn}")
