"""What turns an image file into a model's input, resolved to numbers once, at training time.

A run's config leaves `data.mean` and `data.std` null to mean "the dataset's own"; training
resolves them here, so config.yaml and every checkpoint show numbers, and the checkpoint's
`preprocessing` record is the one place eval, predict and visualize read them from. Evaluating
a checkpoint on other data then uses the statistics it was trained with, not the other
dataset's defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from cnnkit.data import mnist_sample
from cnnkit.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.errors import ConfigError
from cnnkit.schema import Config


def _grey_or_rgb(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from cnnkit.data.localization import csv_normalization

    return csv_normalization(channels)


# data.name -> channels -> (mean, std) when the config leaves them null; the same numbers
# build_data gives each dataset
DEFAULT_NORMALIZATION = {
    "mnist-sample": lambda channels: (mnist_sample.MEAN, mnist_sample.STD),
    "mnist": lambda channels: (mnist_sample.MEAN, mnist_sample.STD),
    "mnist-localization": lambda channels: (mnist_sample.MEAN, mnist_sample.STD),
    "imagefolder": lambda channels: (IMAGENET_MEAN, IMAGENET_STD),
    "localization-csv": _grey_or_rgb,
}
# how each dataset resizes a decoded image to the model's input (PIL filters): torchvision's
# Resize for class folders and MNIST files, PIL's own default (bicubic) for localization-csv
INTERPOLATION = {"imagefolder": "bilinear", "localization-csv": "bicubic",
                 "mnist-localization": "bicubic"}


def resolve_normalization(cfg: Config) -> Config:
    """`cfg` with data.mean and data.std as numbers where they are null (the dataset's
    defaults for the model's input channels); values that are set stay as written (one
    value stands for every channel), for build_data to check against the images. Also
    data.augment.hflip null as the dataset's default (on for class folders), so a run's
    config.yaml says whether it flipped."""
    channels = cfg.model.input[0] if cfg.model.input else 1
    default = DEFAULT_NORMALIZATION.get(cfg.data.name)
    resolved = {}
    for key, fallback in zip(("mean", "std"), default(channels) if default else (None, None)):
        value = getattr(cfg.data, key)
        value = list(fallback) if value is None and fallback is not None else value
        resolved[key] = None if value is None else [float(v) for v in value]
    from cnnkit.data.transforms import hflip_of

    augment = dataclasses.replace(cfg.data.augment, hflip=hflip_of(cfg.data))
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augment=augment,
                                                             **resolved))


def preprocessing_record(cfg: Config, *, mean: Sequence[float] | None = None,
                         std: Sequence[float] | None = None) -> dict[str, Any]:
    """How an image becomes this model's input, as plain data for a checkpoint: decode to
    `channels` (L or RGB), resize (the shorter side to `resize`, then a centre crop to
    `crop` × `crop`, where `resize` is set; else straight to height × width) with
    `interpolation`, scale to [0, 1], subtract `mean`, divide by `std` (per channel).
    height × width is the training size (model.input); `crop` is the evaluation's (FixRes:
    data.val_crop), for class folders only (absent: height × width, as in checkpoints from
    before it).
    `mean` and `std`, when given, are what the data used (a dataset registered elsewhere has
    no default here)."""
    cfg = resolve_normalization(cfg)
    if mean is not None and std is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, mean=list(mean),
                                                                std=list(std)))
    if cfg.data.mean is None or cfg.data.std is None:
        raise ConfigError(f"{cfg.source}: data.mean, data.std: null, and '{cfg.data.name}' has "
                          f"no default normalization; set both")
    channels, height, width = cfg.model.input
    mean, std = ([float(v) for v in values] * (channels if len(values) == 1 else 1)
                 for values in (cfg.data.mean, cfg.data.std))
    from cnnkit.data.transforms import val_sizes  # torchvision: only where a record is made

    resize, crop = val_sizes(cfg.data) if cfg.data.name == "imagefolder" else (None, None)
    interpolation = cfg.data.augment.interpolation if cfg.data.name == "imagefolder" \
        else INTERPOLATION.get(cfg.data.name, "bilinear")
    record = {"channels": channels, "height": height, "width": width,
              "mean": mean, "std": std, "resize": resize, "interpolation": interpolation}
    return record if crop is None else {**record, "crop": crop}
