"""`Predictor` and `cnnkit predict`: what a trained checkpoint says about images.

The images are prepared by the checkpoint's preprocessing record (cnnkit.infer.images), then
the task reads the model's output (`task.read`): for classification, softmax probabilities and
the top k class names; for localization also the box, which is sized here to each image.
infer/model.py's `load_predictor` makes a Predictor; this module imports nothing of infer/
but the images.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from cnnkit.atomic import atomic_write_text
from cnnkit.data.image_files import file_oddity, oddity_line
from cnnkit.errors import CnnkitError, DataError
from cnnkit.infer.images import (
    expand,
    image_size,
    name_of,
    normalize,
    pixels,
    prepare,
)
from cnnkit.models.builder import Network
from cnnkit.rundir.metrics import rows_csv
from cnnkit.schema import Config
from cnnkit.tasks import Task, main_logits

CHUNK = 64  # images per forward pass, to bound memory on long lists
Image = Any  # a path, a PIL image, or a (C, H, W) tensor (uint8, or float in [0, 1])


@dataclass
class Predictor:
    """A checkpoint's model, ready: `predict(images)` gives classes with probabilities (and
    boxes for localization); `inputs(images)` the tensor the model sees."""

    model: Network  # eval mode, on `device`
    cfg: Config  # the run's config, with the recorded preprocessing and any overrides
    classes: list[str]
    task: Task  # reads the model's output (task.read); task.name is what the config says
    preprocessing: dict[str, Any]  # the checkpoint's record (cnnkit.data.preprocess)
    weights: str  # "ema" (the run's weight average) or "raw"
    path: Path
    device: torch.device

    def to(self, device: str | torch.device) -> Predictor:
        device = torch.device(device)
        return replace(self, model=self.model.to(device), device=device)

    def inputs(self, images: Sequence[Image], *, invert: bool = False, first: int = 0
               ) -> torch.Tensor:
        """(B, C, H, W) float on the device: decoded, resized and normalized as recorded;
        `invert` and the warning of an inverted image: infer/invert.py (`first`: the index of
        images[0] among all, for the names of unnamed images)."""
        return prepare(images, self.preprocessing, invert=invert, first=first).to(self.device)

    def predict(self, images: Image | Sequence[Image], *, top: int = 5) -> list[dict[str, Any]]:
        """One dict per image (a folder: every image under it): "class", "probability" and
        "top" [{"class", "probability"}, ...]; for localization also "object", "p_object",
        "box" (x, y, w, h as fractions) and "box_pixels"."""
        return predict(self, images, top=top)


def predict(predictor: Predictor, images: Any, *, top: int = 5, invert: bool = False,
            skip_bad: bool = False, bad: list[dict[str, str]] | None = None
            ) -> list[dict[str, Any]]:
    """One result per image (folders expanded), in order: see Predictor.predict; "label"
    where the image sits in a folder named after one of the checkpoint's classes. `invert`:
    each image's brightness flipped first (infer/invert.py). An image that cannot be decoded
    is an error naming the chunk's bad files, as training's is; with `skip_bad` it has no
    result and is added to `bad` as {"image", "error"}. Tiny images and images with an alpha
    channel are counted in one warning per kind (data/image_files.py)."""
    if top < 1:
        raise CnnkitError(f"--top: expected 1 or more classes, found {top}")
    if isinstance(images, (str, Path)) or not isinstance(images, Sequence):
        images = [images]  # one path, PIL image or tensor
    images = expand(images)
    results, odd = [], {}
    for start in range(0, len(images), CHUNK):
        good, x, failed = _decoded(images[start:start + CHUNK], predictor, start)
        if failed and not skip_bad:
            more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
            raise DataError("; ".join(f["error"] for f in failed[:3]) + more +
                            "; pass --skip-bad to predict the others and list these at the end")
        if bad is not None:
            bad += failed
        if not good:
            continue
        names = [name_of(image, k) for k, image in good]
        with torch.no_grad():
            output = predictor.model(normalize(x, names, predictor.preprocessing,
                                               invert=invert).to(predictor.device))
        found = predictor.task.read(main_logits(output), predictor.classes, top=top)
        for (_, image), name, result in zip(good, names, found):
            if "box" in result:  # fractions -> pixels of the image as given (upright by EXIF)
                width, height = image_size(image)
                result["box_pixels"] = [round(f * s, 1) for f, s in
                                        zip(result["box"], (width, height, width, height))]
            label = Path(name).parent.name if isinstance(image, (str, Path)) else None
            known = {"label": label} if label in predictor.classes else {}
            results.append({"image": name, **known, **result})
            kind = file_oddity(image) if isinstance(image, (str, Path)) else None
            if kind:
                odd.setdefault(kind, []).append(name)
    for kind, names in odd.items():  # one line per kind, as training and evaluation warn
        print(f"cnnkit: warning: {oddity_line(kind, names)}", file=sys.stderr, flush=True)
    return results


def _decoded(chunk: list[Any], predictor: Predictor, start: int
             ) -> tuple[list[tuple[int, Any]], torch.Tensor | None, list[dict[str, str]]]:
    """The chunk's images that decode, (index, image) each, their pixels (B, C, H, W) in
    [0, 1], and the others as {"image", "error"}."""
    good, pixels_, failed = [], [], []
    for k, image in enumerate(chunk, start=start):
        try:
            pixels_.append(pixels(image, predictor.preprocessing))
            good.append((k, image))
        except DataError as exc:
            failed.append({"image": name_of(image, k), "error": str(exc)})
    return good, torch.stack(pixels_) if pixels_ else None, failed


def format_predictions(results: list[dict[str, Any]]) -> str:
    """One line per image: `path: cat 0.9731, dog 0.0269`."""
    return "\n".join(f"{r['image']}: " + ", ".join(f"{c['class']} {c['probability']:.4f}"
                                                  for c in r["top"]) for r in results)


def predictions_csv(results: list[dict[str, Any]]) -> str:
    """image, label (the true class, where its folder names one), class, probability (the top
    class), then class_2, probability_2, ... for the rest of the top k; localization adds
    object, p_object and the box in pixels."""
    rows = []
    for r in results:
        row = {"image": r["image"], **({"label": r["label"]} if "label" in r else {}),
               "class": r["class"], "probability": r["probability"]}
        for k, c in enumerate(r["top"][1:], start=2):
            row[f"class_{k}"], row[f"probability_{k}"] = c["class"], c["probability"]
        if "box_pixels" in r:
            row.update(object=int(r["object"]), p_object=r["p_object"],
                       **dict(zip(("x", "y", "w", "h"), r["box_pixels"])))
        rows.append(row)
    return rows_csv(rows)


def write_csv(results: list[dict[str, Any]], path: str | Path) -> None:
    try:
        atomic_write_text(Path(path), predictions_csv(results))
    except OSError as exc:
        raise CnnkitError(f"--csv {path}: cannot write it ({exc.strerror})") from None
