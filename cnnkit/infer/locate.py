"""Predict with a localization checkpoint: the numbers per image, and the image drawn with its
box, class and confidence (or "nothing" when p_c is below the task's threshold).

As for a classifier, `top` asks for the k most probable classes of each image's object (the
drawn box is labelled with the first), and the model runs on the device asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from cnnkit.data.image_files import open_image
from cnnkit.errors import CnnkitError
from cnnkit.infer.model import Predictor, load_predictor
from cnnkit.infer.predict import predict
from cnnkit.tasks.localization import decode
from cnnkit.training.trainer import resolve_device

ORIENTATION = 0x0112  # the EXIF tag
MIN_DRAWN = 256  # px: smaller images are enlarged (nearest neighbour) before drawing
BOX_COLOUR, NOTHING_COLOUR = (255, 64, 64), (255, 200, 0)


def read_boxes(predictor: Predictor, output: torch.Tensor, images: list[Any], *, top: int
               ) -> list[dict[str, Any]]:
    """The localization head's output (B, 5 + K) read per image: object (bool), p_object,
    class, probability, top (the `top` most probable classes), box (fractions) and box_pixels
    (in the image as given)."""
    threshold = predictor.cfg.task.threshold
    results = []
    for image, p, box, probs in zip(images, *(t.float().cpu() for t in decode(output))):
        values, indices = probs.topk(min(top, probs.numel()))
        best = [{"class": _class_name(predictor, k), "probability": round(v, 4)}
                for v, k in zip(values.tolist(), indices.tolist())]
        fractions = [round(float(v), 4) for v in box]
        width, height = _size(image)
        scale = (width, height, width, height)
        results.append({"object": bool(p >= threshold), "p_object": round(float(p), 4),
                        "class": best[0]["class"], "probability": best[0]["probability"],
                        "top": best, "box": fractions,
                        "box_pixels": [round(f * s, 1) for f, s in zip(fractions, scale)]})
    return results


def _size(image: Any) -> tuple[int, int]:
    """(width, height) of an image path, PIL image or (C, H, W) tensor."""
    if isinstance(image, torch.Tensor):
        return image.shape[-1], image.shape[-2]
    if isinstance(image, Image.Image):
        return image.size
    with Image.open(image) as opened:  # the header only; the pixels were read already
        width, height = opened.size
        # EXIF orientations 5 to 8 turn the image a quarter: the model saw it upright
        # (data/image_files.py's open_image), so the box is in the turned frame
        return (height, width) if opened.getexif().get(ORIENTATION) in (5, 6, 7, 8) \
            else (width, height)


def predict_localization(path: str | Path, images: list[str | Path], *,
                         out_dir: str | Path | None = None, top: int = 1, device: str = "auto",
                         predictor: Predictor | None = None, invert: bool = False
                         ) -> list[dict[str, Any]]:
    """Predictor.predict's dicts and, with `out_dir`, each image drawn with its box as
    OUT_DIR/STEM.png (the path in "out"). `invert`: see infer/invert.py."""
    if predictor is None:
        predictor = load_predictor(path, device=resolve_device(device, key="--device"))
    results = predict(predictor, images, top=top, invert=invert)
    if out_dir is not None:
        out_dir = Path(out_dir)
        _make_dir(out_dir)
        used: set[str] = set()
        for result in results:
            target = _unique(out_dir, Path(result["image"]).stem, used)
            # upright by EXIF, as the model saw it (open_image, as infer/images.py reads it)
            draw_prediction(open_image(result["image"]), result).save(target)
            result["out"] = str(target)
    return results


def _class_name(predictor: Predictor, k: int) -> str:
    return predictor.classes[k] if k < len(predictor.classes) else str(k)


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
