"""`cnnkit predict`: what a trained checkpoint says about image files.

The images are prepared as the checkpoint's dataset prepared its evaluation images (from the
resolved config stored in the checkpoint), then the task's head reads the model's output:
for classification, softmax probabilities and the top k class names. A task with another
head (e.g. localization) adds its reader beside `classify`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import transforms as T

from cnnkit.data import mnist_sample
from cnnkit.data.imagefolder import eval_transform, open_image
from cnnkit.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.errors import CnnkitError, ConfigError
from cnnkit.infer.invert import match_brightness
from cnnkit.infer.model import load_model
from cnnkit.schema import Config
from cnnkit.tasks import main_logits
from cnnkit.training.trainer import resolve_device

ImageReader = Callable[[Path], torch.Tensor]  # image file -> uint8 (C, H, W)
CHUNK = 64  # images per forward pass, to bound memory on long lists


def _digits(cfg: Config) -> tuple[ImageReader, tuple[float, ...], tuple[float, ...]]:
    """MNIST-style models: grayscale resized to the model's input, MNIST's normalization.
    MNIST digits are white on black; a photographed black-on-white digit needs inverting."""
    channels, height, width = cfg.model.input
    resize = T.Compose([T.Resize((height, width)), T.PILToTensor()])
    mode = "L" if channels == 1 else "RGB"
    return (lambda path: resize(open_image(path, mode))), mnist_sample.MEAN, mnist_sample.STD


def _folder(cfg: Config) -> tuple[ImageReader, tuple[float, ...], tuple[float, ...]]:
    """Class-folder models: the evaluation transforms (Resize + CenterCrop), ImageNet's stats."""
    transform = eval_transform(cfg.data.image_size)
    return (lambda path: transform(open_image(path, "RGB"))), IMAGENET_MEAN, IMAGENET_STD


PREPROCESS = {"mnist-sample": _digits, "mnist": _digits, "imagefolder": _folder}


def preprocessing(cfg: Config) -> tuple[ImageReader, torch.Tensor, torch.Tensor]:
    """(file -> uint8 tensor, mean, std as (1, C, 1, 1)), as the config's dataset evaluates."""
    if cfg.data.name not in PREPROCESS:
        raise ConfigError(f"{cfg.source}: data.name: predict knows the preprocessing of "
                          f"{', '.join(PREPROCESS)}, not '{cfg.data.name}'")
    load, mean, std = PREPROCESS[cfg.data.name](cfg)
    channels = cfg.model.input[0]
    mean = cfg.data.mean or mean
    std = cfg.data.std or std
    as_tensor = [torch.tensor(v, dtype=torch.float32) for v in (mean, std)]
    return load, *(t.expand(channels).reshape(1, -1, 1, 1) if t.numel() == 1
                   else t.reshape(1, -1, 1, 1) for t in as_tensor)


def classify(model: nn.Module, x: torch.Tensor, classes: list[str], *, top: int
             ) -> list[list[dict[str, Any]]]:
    """Per image, the `top` most probable classes: [{"class": name, "probability": p}, ...]."""
    with torch.no_grad():
        probs = torch.softmax(main_logits(model(x)).float(), dim=1)  # logits -> (B, K)
    values, indices = probs.topk(min(top, probs.shape[1]), dim=1)
    return [[{"class": classes[i], "probability": p} for p, i in zip(vs, ix)]
            for vs, ix in zip(values.tolist(), indices.tolist())]


def predict_images(path: str | Path, images: Sequence[str | Path], *, top: int = 5,
                   device: str = "auto", checkpoint: dict | None = None, invert: bool = False
                   ) -> list[dict[str, Any]]:
    """[{"image": path, "top": [{"class", "probability"}, ...]}, ...], one per image.
    `invert`: each image's brightness flipped first (infer/invert.py)."""
    if top < 1:
        raise CnnkitError(f"--top: expected 1 or more classes, found {top}")
    dev = resolve_device(device, key="--device")
    model, cfg, classes = load_model(path, device=dev, checkpoint=checkpoint)
    load, mean, std = preprocessing(cfg)
    results = []
    for start in range(0, len(images), CHUNK):
        paths = [Path(p) for p in images[start:start + CHUNK]]
        raw = match_brightness(torch.stack([load(p) for p in paths]), paths, cfg, invert=invert)
        x = raw.float().div_(255).sub_(mean).div_(std)
        for path, best in zip(paths, classify(model, x.to(dev), classes, top=top)):
            results.append({"image": str(path), "top": best})
    return results


def format_predictions(results: list[dict[str, Any]]) -> str:
    """One line per image: `path: cat 0.9731, dog 0.0269`."""
    return "\n".join(f"{r['image']}: " + ", ".join(f"{c['class']} {c['probability']:.4f}"
                                                  for c in r["top"]) for r in results)
