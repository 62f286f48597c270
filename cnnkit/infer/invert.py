"""Brightness that is the inverse of the training data's: MNIST's digits are light strokes
on black, a digit written on paper is dark on light. `cnnkit predict` warns of it, and
`--invert` flips it, before normalization.

Whether the training data is dark comes from the checkpoint's own record (its per-channel
mean, in [0, 1] units: MNIST's 0.1307), not from a table of dataset names, so a model
trained on any dark-background data gets the warning and one trained on photos does not."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import torch

DARK = 0.25  # a training mean below this: light strokes on a dark background (MNIST: 0.13)
LIGHT = 0.5  # a border mean from which an image's background counts as light


def match_brightness(images: torch.Tensor, names: Sequence[str], record: dict[str, Any], *,
                     invert: bool = False) -> torch.Tensor:
    """(B, C, H, W) images in [0, 1], flipped (1 - x) where `invert`; one warning line per
    image whose background (the mean of its border pixels) is light where the training
    data's is dark."""
    if invert:
        images = 1.0 - images
    if sum(record["mean"]) / len(record["mean"]) >= DARK:
        return images
    for name, level in zip(names, border_mean(images).tolist()):
        if level >= LIGHT:
            fix = "the image was inverted by --invert; drop it" if invert else "pass --invert"
            print(f"cnnkit: warning: {name}: a light background (border mean {level:.2f} of "
                  f"1), but the model was trained on light strokes on a dark background "
                  f"(mean {sum(record['mean']) / len(record['mean']):.2f}): the image looks "
                  f"inverted; {fix}", file=sys.stderr, flush=True)
    return images


def border_mean(images: torch.Tensor) -> torch.Tensor:
    """(B,) mean of the pixels on each image's outer rows and columns, all channels."""
    x = images.float()
    edges = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1)
    return edges.flatten(1).mean(dim=1)
