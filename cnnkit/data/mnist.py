"""MNIST read from torchvision's on-disk layout, as uint8 image and int64 label tensors.

The files live in ``ROOT/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, plain or
``.gz`` (plain wins when both are there, as torchvision leaves both after a download). Any
MNIST-format set placed under these names loads too (Fashion-MNIST, KMNIST): the image size
H x W comes from the IDX header rather than being fixed at 28 x 28; labels must lie in 0..9.
Nothing is cached beyond the files torchvision itself downloads.
"""

from __future__ import annotations

import http.client
import os
from pathlib import Path

import numpy as np
import torch

from cnnkit.data.idx import read_idx
from cnnkit.data.mnist_sample import fold_split, stratified_split
from cnnkit.data.tensors import Split
from cnnkit.errors import ConfigError, DataError
from cnnkit.schema import DataConfig

SPLITS = {"train": "train", "test": "t10k"}  # split -> file-name prefix
NUM_CLASSES = 10


def load_mnist(
    root: str | os.PathLike[str], split: str, *, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 [N, 1, H, W] and labels int64 [N] of one split ("train" or "test").

    Only the two files of ``split`` are needed. Missing files are fetched through
    ``torchvision.datasets.MNIST`` when ``download`` is true, and are a DataError otherwise.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown MNIST split {split!r}: expected one of {sorted(SPLITS)}")
    raw = Path(root) / "MNIST" / "raw"
    names = [f"{SPLITS[split]}-images-idx3-ubyte", f"{SPLITS[split]}-labels-idx1-ubyte"]
    if download and any(_find(raw, name) is None for name in names):
        _download(root, raw, names, train=split == "train")
    image_path, label_path = (_require(raw, name, split=split) for name in names)
    images = read_idx(image_path, ndim=3)  # [N, H, W]
    labels = read_idx(label_path, ndim=1)  # [N]
    _check_counts(image_path, images, label_path, labels)
    _check_labels(label_path, labels)
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long()


def load_splits(cfg: DataConfig, needed: frozenset[str]) -> dict[str, Split]:
    """The splits of a `data: {name: mnist}` section: train and val carved from the training
    files (stratified, or one fold of data.folds), test the t10k files. Only the files of the
    splits needed are read: `eval --split test` needs t10k alone."""
    # data.root is set (the schema checks); whether it holds MNIST, load_mnist does
    splits = {}
    if needed & {"train", "val"}:
        images, labels = load_mnist(cfg.root, "train", download=cfg.download)
        if cfg.folds is not None:
            train, val = fold_split(labels, cfg.folds, cfg.fold)
        else:
            train, val = stratified_split(labels, _sizes(cfg, len(labels)))
        splits = {"train": Split(images[train], labels[train]),
                  "val": Split(images[val], labels[val])}
    if "test" in needed:
        test_images, test_labels = load_mnist(cfg.root, "test", download=cfg.download)
        splits["test"] = Split(test_images, test_labels)
    return splits


MNIST_VAL = 5000  # data.val_size's default for mnist; train_size's: the rest (55,000 of 60,000)


def _sizes(cfg: DataConfig, n: int) -> tuple[int, int]:
    """(train, val) sizes carved from n training digits; an error names the keys as the user
    set them, or the default each came from (sizes >= 1 and >= 0: the schema checks)."""
    val = MNIST_VAL if cfg.val_size is None else cfg.val_size
    val_text = (f"data.val_size {val}" if cfg.val_size is not None
                else f"data.val_size's default {MNIST_VAL}")
    if cfg.train_size is None:
        if val >= n:
            raise DataError(f"{val_text}: the MNIST training files hold {n} digits; at most "
                            f"{n - 1} leaves a training split (data.train_size: the rest)")
        return n - val, val
    if cfg.train_size + val > n:
        raise DataError(f"data.train_size {cfg.train_size} + {val_text}: the MNIST training "
                        f"files hold {n} digits; together at most {n}")
    return cfg.train_size, val


def _find(raw: Path, name: str) -> Path | None:
    """The plain file if present, else the .gz one, else None."""
    for path in (raw / name, raw / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _require(raw: Path, name: str, *, split: str) -> Path:
    path = _find(raw, name)
    if path is None:
        raise DataError(
            f"MNIST {split} file not found: {raw / name} (or {name}.gz); set data.download: true "
            f"when online, or place the file there"
        )
    return path


def _download(root: str | os.PathLike[str], raw: Path, names: list[str], *, train: bool) -> None:
    from torchvision import datasets  # looked up at call time, so tests can stand in for it

    try:
        datasets.MNIST(root, train=train, download=True)
    # torchvision turns failed mirrors into RuntimeError; URLError, timeouts and SSL errors
    # are OSError; a connection dropped mid-body is an HTTPException.
    except (OSError, RuntimeError, http.client.HTTPException) as exc:
        files = " and ".join(f"{name}[.gz]" for name in names)
        raise DataError(
            f"MNIST download into {raw} failed ({_one_line(exc)}); when offline, place "
            f"{files} there by hand"
        ) from exc


def _one_line(exc: BaseException, *, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_counts(
    image_path: Path, images: np.ndarray, label_path: Path, labels: np.ndarray
) -> None:
    if len(images) != len(labels):
        raise DataError(
            f"{label_path}: expected {len(images)} labels, one per image in {image_path}, "
            f"found {len(labels)}"
        )
    if len(images) == 0:
        raise DataError(f"{image_path}: expected at least one image, found 0")


def _check_labels(label_path: Path, labels: np.ndarray) -> None:
    bad = np.flatnonzero(labels >= NUM_CLASSES)  # uint8, so never below 0
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{label_path}: expected labels in 0..{NUM_CLASSES - 1}, found {labels[i]} at "
            f"index {i} ({bad.size} labels out of range)"
        )
