"""Subsets of a dataset by config: some of its classes (`data.classes`) and a few labelled
training examples per class (`data.train_per_class`), for small-data and transfer experiments.

Both act on the built splits, so they work for every dataset whose splits are `Split`s.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from cnnkit.config import DataConfig
from cnnkit.data.tensors import Split
from cnnkit.errors import ConfigError, DataError

if TYPE_CHECKING:
    from cnnkit.data import Data


def select(data: Data, cfg: DataConfig, *, source: str = "<config>") -> Data:
    """`data` with only `cfg.classes` (relabelled 0..K-1) and `cfg.train_per_class` kept."""
    if cfg.classes is not None:
        data = select_classes(data, [str(c) for c in cfg.classes], source=source)
    if cfg.train_per_class is not None:
        data = limit_per_class(data, cfg.train_per_class, source=source)
    return data


def select_classes(data: Data, names: list[str], *, source: str = "<config>") -> Data:
    """Keep the classes named, in the order given: the first becomes label 0."""
    unknown = [n for n in names if n not in data.classes]
    if unknown or not names or len(set(names)) != len(names):
        problem = f"unknown {', '.join(unknown)}" if unknown else "empty or repeated names"
        raise ConfigError(f"{source}: data.classes: {problem} (the dataset's classes: "
                          f"{', '.join(data.classes)})")
    old = torch.tensor([data.classes.index(n) for n in names])  # (K,) old label of new label k
    splits = {name: _relabel(split, old) for name, split in data.splits.items()}
    return dataclasses.replace(data, splits=splits, classes=names)


def _relabel(split: Split, old: torch.Tensor) -> Split:
    # (N, K) match table: row i says which kept class, if any, example i belongs to
    hits = split.labels.unsqueeze(1) == old.unsqueeze(0)
    keep = hits.any(dim=1)
    return Split(split.images[keep], hits[keep].int().argmax(dim=1))


def limit_per_class(data: Data, per_class: int, *, source: str = "<config>") -> Data:
    """Keep `per_class` training examples of each class, a fixed random choice (seed 0: the
    subset is part of the experiment's definition, like the train/val carving)."""
    if per_class < 1:
        raise ConfigError(f"{source}: data.train_per_class: expected at least 1, "
                          f"found {per_class}")
    train = data.splits["train"]
    generator = torch.Generator().manual_seed(0)
    chosen = []
    for label, name in enumerate(data.classes):
        members = torch.nonzero(train.labels == label).flatten()
        if len(members) < per_class:
            raise DataError(f"{source}: data.train_per_class: class {name} has only "
                            f"{len(members)} training examples, {per_class} asked for")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    index = torch.sort(torch.cat(chosen)).values
    splits = {**data.splits, "train": Split(train.images[index], train.labels[index])}
    return dataclasses.replace(data, splits=splits)
