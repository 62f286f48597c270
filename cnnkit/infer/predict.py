"""`cnnkit predict` and `Predictor.predict`: what a trained checkpoint says about images.

The images are prepared by the checkpoint's preprocessing record (cnnkit.infer.images), then
the task's head reads the model's output: for classification, softmax probabilities and the
top k class names; for localization, also the box (cnnkit.infer.locate).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cnnkit.atomic import atomic_write_text
from cnnkit.errors import CnnkitError
from cnnkit.infer.images import expand, name_of
from cnnkit.infer.model import Predictor
from cnnkit.tasks import main_logits

CHUNK = 64  # images per forward pass, to bound memory on long lists


def predict(predictor: Predictor, images: Any, *, top: int = 5, invert: bool = False
            ) -> list[dict[str, Any]]:
    """One result per image (folders expanded), in order: see Predictor.predict. `invert`:
    each image's brightness flipped first (infer/invert.py)."""
    if top < 1:
        raise CnnkitError(f"--top: expected 1 or more classes, found {top}")
    if isinstance(images, (str, Path)) or not isinstance(images, Sequence):
        images = [images]  # one path, PIL image or tensor
    images = expand(images)
    results = []
    for start in range(0, len(images), CHUNK):
        chunk = images[start:start + CHUNK]
        with torch.no_grad():
            output = predictor.model(predictor.inputs(chunk, invert=invert,
                                                      first=start))
        if predictor.task == "localization":
            from cnnkit.infer.locate import read_boxes

            found = read_boxes(predictor, output, chunk, top=top)
        else:
            found = [{"class": best[0]["class"], "probability": best[0]["probability"],
                      "top": best} for best in classify(output, predictor.classes, top=top)]
        results += [{"image": name_of(image, start + k), **r}
                    for k, (image, r) in enumerate(zip(chunk, found))]
    return results


def classify(output: Any, classes: list[str], *, top: int) -> list[list[dict[str, Any]]]:
    """Per image, the `top` most probable classes: [{"class": name, "probability": p}, ...]."""
    probs = torch.softmax(main_logits(output).float(), dim=1)  # logits -> (B, K)
    values, indices = probs.topk(min(top, probs.shape[1]), dim=1)
    return [[{"class": classes[i], "probability": p} for p, i in zip(vs, ix)]
            for vs, ix in zip(values.cpu().tolist(), indices.cpu().tolist())]


def predict_images(path: str | Path, images: Sequence[Any], *, top: int = 5,
                   device: str = "auto") -> list[dict[str, Any]]:
    """[{"image", "class", "probability", "top": [{"class", "probability"}, ...]}, ...]."""
    from cnnkit.infer.model import load_predictor
    from cnnkit.training.trainer import resolve_device

    predictor = load_predictor(path, device=resolve_device(device, key="--device"))
    return predict(predictor, images, top=top)


def format_predictions(results: list[dict[str, Any]]) -> str:
    """One line per image: `path: cat 0.9731, dog 0.0269`."""
    return "\n".join(f"{r['image']}: " + ", ".join(f"{c['class']} {c['probability']:.4f}"
                                                  for c in r["top"]) for r in results)


def predictions_csv(results: list[dict[str, Any]]) -> str:
    """image, class, probability (the top class), then class_2, probability_2, ... for the
    rest of the top k; localization adds object, p_object and the box in pixels."""
    rows = []
    for r in results:
        row = {"image": r["image"], "class": r["class"], "probability": r["probability"]}
        for k, c in enumerate(r["top"][1:], start=2):
            row[f"class_{k}"], row[f"probability_{k}"] = c["class"], c["probability"]
        if "box_pixels" in r:
            row.update(object=int(r["object"]), p_object=r["p_object"],
                       **dict(zip(("x", "y", "w", "h"), r["box_pixels"])))
        rows.append(row)
    buffer = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_csv(results: list[dict[str, Any]], path: str | Path) -> None:
    try:
        atomic_write_text(Path(path), predictions_csv(results))
    except OSError as exc:
        raise CnnkitError(f"--csv {path}: cannot write it ({exc.strerror})") from None
