"""Datasets by name: the `data` section of a config in, train/val(/test) splits out."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cnnkit.data import mnist_sample
from cnnkit.data.select import select
from cnnkit.data.tensors import Augmenter, Split, TensorLoader
from cnnkit.errors import ConfigError, DataError
from cnnkit.schema import DataConfig

if TYPE_CHECKING:
    from cnnkit.data.imagefolder import FolderData

DIGITS = [str(d) for d in range(10)]
ALL_SPLITS = frozenset({"train", "val", "test"})


@dataclass
class Data:
    """In-memory splits (uint8 images) with their class names and normalization."""

    splits: dict[str, Split]  # "train", "val" and, where the dataset has one, "test"
    classes: list[str]
    mean: tuple[float, ...]  # per channel, [0, 1] scale
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(next(iter(self.splits.values())).images.shape[1:])  # splits agree

    def loader(self, split: str, *, batch_size: int, shuffle: bool, seed: int,
               device: torch.device, augment: Augmenter | None = None, rank: int = 0,
               world_size: int = 1) -> TensorLoader:
        if split not in self.splits:
            raise DataError(f"split '{split}': this dataset has {', '.join(self.splits)}")
        return TensorLoader(self.splits[split], batch_size=batch_size, shuffle=shuffle,
                            seed=seed, mean=self.mean, std=self.std, device=device,
                            augment=augment, rank=rank, world_size=world_size)


def _mnist_sample(cfg: DataConfig) -> Data:
    splits = mnist_sample.load(train_size=cfg.train_size, val_size=cfg.val_size,
                               folds=cfg.folds, fold=cfg.fold)
    return Data(splits, DIGITS, mnist_sample.MEAN, mnist_sample.STD)


def _mnist(cfg: DataConfig, needed: frozenset[str] = ALL_SPLITS) -> Data:
    from cnnkit.data.mnist import load_splits

    return Data(load_splits(cfg, needed), DIGITS, mnist_sample.MEAN, mnist_sample.STD)


def _imagefolder(cfg: DataConfig) -> FolderData:
    from cnnkit.data import imagefolder  # PIL and torchvision's transforms, only when used

    return imagefolder.load(cfg)


def _mnist_localization(cfg: DataConfig) -> Data:
    from cnnkit.data.localization import mnist_canvases

    return Data(mnist_canvases(cfg), DIGITS, mnist_sample.MEAN, mnist_sample.STD)


def _localization_csv(cfg: DataConfig) -> Data:
    from cnnkit.data.localization import csv_normalization, read_csv_dataset

    splits, classes = read_csv_dataset(cfg)
    return Data(splits, classes, *csv_normalization(cfg.localization.channels))


DATASETS = {"mnist-sample": _mnist_sample, "mnist": _mnist, "imagefolder": _imagefolder,
            "mnist-localization": _mnist_localization, "localization-csv": _localization_csv}


# datasets whose files are read split by split (the others are small or made in memory)
BY_SPLIT = {"mnist"}


def build_data(cfg: DataConfig, *, source: str = "<config>",
               splits: tuple[str, ...] | None = None) -> Data | FolderData:
    """The dataset a `data` section names, with its normalization resolved. `splits`: the
    ones to be used (None: all); a dataset read from files split by split reads only those."""
    if cfg.name not in DATASETS:
        close = difflib.get_close_matches(cfg.name, list(DATASETS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{source}: data.name: unknown dataset '{cfg.name}'{hint} "
                          f"(valid: {', '.join(DATASETS)})")
    load = DATASETS[cfg.name]
    if cfg.name in BY_SPLIT and splits is not None:
        data = load(cfg, frozenset(splits))
    else:
        data = load(cfg)
    data = select(data, cfg, source=source)
    if cfg.val_size == 0:  # no validation split at all, rather than an empty one
        data = dataclasses.replace(data, splits={k: v for k, v in data.splits.items()
                                                 if k != "val"})
    return _with_normalization(data, cfg, source)


def _with_normalization(data: Data | FolderData, cfg: DataConfig, source: str
                        ) -> Data | FolderData:
    channels = data.input_shape[0]
    for key in ("mean", "std"):
        value = getattr(cfg, key)
        if value is None:
            continue
        if len(value) not in (1, channels):
            raise ConfigError(f"{source}: data.{key}: expected 1 or {channels} values (one per "
                              f"channel), found {len(value)}")
        setattr(data, key, tuple(value) * (channels // len(value)))  # finite, std > 0: schema
    return data
