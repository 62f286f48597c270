"""Brightness that is the inverse of the training data's: MNIST's digits are light strokes
on black, a digit written on paper is dark on light. `cnnkit predict` warns of it, and
`--invert` flips it, before normalization."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from cnnkit.schema import Config

# datasets whose images are light on a dark background (MNIST's digits and canvases)
DARK_BACKGROUND = ("mnist-sample", "mnist", "mnist-localization")
LIGHT = 128  # border mean (0-255) from which a background counts as light


def match_brightness(images: torch.Tensor, paths: Sequence[str | Path], cfg: Config, *,
                     invert: bool = False) -> torch.Tensor:
    """uint8 (B, C, H, W) images, inverted (255 - x) where `invert`; one warning line per image
    whose background (the mean of its border pixels) is light where the training data's is
    dark."""
    if invert:
        images = 255 - images
    if cfg.data.name not in DARK_BACKGROUND:
        return images
    for path, level in zip(paths, border_mean(images).tolist()):
        if level >= LIGHT:
            fix = "the image was inverted by --invert; drop it" if invert else "pass --invert"
            print(f"cnnkit: warning: {path}: a light background (border mean {level:.0f} of "
                  f"255), but the model was trained on {cfg.data.name}'s light digits on "
                  f"black: the image looks inverted; {fix}", file=sys.stderr, flush=True)
    return images


def border_mean(images: torch.Tensor) -> torch.Tensor:
    """(B,) mean of the pixels on each image's outer rows and columns, all channels."""
    x = images.float()
    edges = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    return edges.flatten(1).mean(dim=1)
