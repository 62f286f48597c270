"""Data checks that run once, on the CPU tensors, before the first training step.

On CUDA a label outside the class range is a device-side assert far from its cause, and a
count mismatch is an index error mid-epoch; here both are one `DataError` naming the split,
and the same on every device because nothing has moved to one yet.
"""

from __future__ import annotations

import torch

from cnnkit.data.tensors import Split
from cnnkit.errors import ConfigError, DataError


def check_split(split: Split, name: str, *, num_classes: int, shape: tuple[int, ...],
                where: str, class_targets: bool = True) -> None:
    """`where` names the dataset, e.g. 'config.yaml: data (mnist-sample)'."""
    images, labels = split.images, split.labels
    prefix = f"{where}: split '{name}'"
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{prefix}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.shape[0] == 0:
        raise DataError(f"{prefix}: is empty (0 examples)")
    if tuple(images.shape[1:]) != tuple(shape):
        raise DataError(f"{prefix}: images are {_shape(images.shape[1:])}, the training split's "
                        f"are {_shape(shape)}")
    if not class_targets:
        return
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dim() != 1:
        raise DataError(f"{prefix}: labels must be one integer class index per example, "
                        f"found {labels.dtype} of shape {tuple(labels.shape)}")
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        index = int(bad.nonzero()[0, 0])
        raise DataError(f"{prefix}: label {int(labels[index])} at index {index} is outside "
                        f"the {num_classes} classes (0..{num_classes - 1})")


def check_splits(splits: dict, *, num_classes: int, where: str, class_targets: bool = True,
                 required: tuple[str, ...] = ("train",)) -> None:
    """In-memory splits only: a class-folder split's labels come from its folder names and
    its emptiness is checked when the folders are indexed (data/imagefolder.py)."""
    if "train" in required and "train" not in splits:
        raise DataError(f"{where}: has no 'train' split (has {', '.join(splits) or 'none'})")
    if class_targets and "train" in required and num_classes < 2:
        raise DataError(f"{where}: {num_classes} class; a classifier needs two or more (over "
                        f"one class the loss is 0 from the first step and nothing is learned)")
    for name in required:
        if name not in splits:  # e.g. `eval --split test` on a dataset without one
            raise DataError(f"{where}: split '{name}': this dataset has "
                            f"{', '.join(splits) or 'none'}")
    if not all(isinstance(split, Split) for split in splits.values()):
        return
    shape = tuple(next(iter(splits.values())).images.shape[1:])
    for name, split in splits.items():
        check_split(split, name, num_classes=num_classes, shape=shape, where=where,
                    class_targets=class_targets)


def _shape(shape) -> str:
    return "×".join(str(s) for s in shape)


def check_training_device(decode: str, device: torch.device) -> None:
    """data.decode gpu trains on a CUDA device only: one line otherwise."""
    if decode == "gpu" and device.type != "cuda":
        raise ConfigError(f"data.decode: gpu decodes JPEGs with nvJPEG on a CUDA device; this "
                          f"run trains on {device.type} (set data.decode: cpu)")
