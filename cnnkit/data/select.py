"""Subsets of a dataset by config: some of its classes (`data.classes`) and a few labelled
training examples per class (`data.train_per_class`), for small-data and transfer experiments.

Both act on the built splits: in-memory `Split`s and class folders' `FolderSplit`s (file
lists), for every dataset with one class label per image.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from cnnkit.data.folder_index import SplitIndex
from cnnkit.data.tensors import Split
from cnnkit.errors import ConfigError, DataError
from cnnkit.schema import DataConfig

if TYPE_CHECKING:
    from cnnkit.data import Data
    from cnnkit.data.imagefolder import FolderSplit


def select(data: Data, cfg: DataConfig, *, source: str = "<config>") -> Data:
    """`data` with only `cfg.classes` (relabelled 0..K-1) and `cfg.train_per_class` kept."""
    for key in ("classes", "train_per_class"):
        if getattr(cfg, key) is not None and any(_labels(split).dim() != 1
                                                 for split in data.splits.values()):
            raise ConfigError(f"{source}: data.{key}: needs one class label per image, and "
                              f"{cfg.name}'s targets are not class labels")
    if cfg.classes is not None:
        data = select_classes(data, [str(c) for c in cfg.classes], source=source)
    if cfg.train_per_class is not None and "train" in data.splits:
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


def _relabel(split: Split | FolderSplit, old: torch.Tensor) -> Split | FolderSplit:
    # (N, K) match table: row i says which kept class, if any, example i belongs to
    hits = _labels(split).unsqueeze(1) == old.unsqueeze(0)
    keep = hits.any(dim=1)
    return _subset(split, torch.nonzero(keep).flatten(), hits[keep].int().argmax(dim=1))


def _labels(split: Split | FolderSplit) -> torch.Tensor:
    return split.labels if isinstance(split, Split) else torch.tensor(split.index.labels,
                                                                      dtype=torch.long)


def _subset(split: Split | FolderSplit, index: torch.Tensor, labels: torch.Tensor
            ) -> Split | FolderSplit:
    """Examples `index` of `split`, labelled `labels`."""
    if isinstance(split, Split):
        return Split(split.images[index], labels)
    files = [split.index.files[i] for i in index.tolist()]
    return dataclasses.replace(split, index=SplitIndex(files, labels.tolist()))


def limit_per_class(data: Data, per_class: int, *, source: str = "<config>") -> Data:
    """Keep `per_class` training examples of each class, a fixed random choice (seed 0: the
    subset is part of the experiment's definition, like the train/val carving); per_class
    >= 1 is the schema's check."""
    train = data.splits["train"]
    labels = _labels(train)
    generator = torch.Generator().manual_seed(0)
    chosen = []
    for label, name in enumerate(data.classes):
        members = torch.nonzero(labels == label).flatten()
        if len(members) < per_class:
            raise DataError(f"{source}: data.train_per_class: class {name} has only "
                            f"{len(members)} training examples, {per_class} asked for")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    index = torch.sort(torch.cat(chosen)).values
    splits = {**data.splits, "train": _subset(train, index, labels[index])}
    return dataclasses.replace(data, splits=splits)
