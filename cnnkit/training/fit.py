"""A config fitted to its data before training: what only the data can decide, resolved
(model.num_classes auto, task.class_weights auto), and one warning line for each setting that
does not fit it (few steps per epoch, a batch larger than the training split, more decoding
workers than CPUs, classes far out of balance)."""

from __future__ import annotations

import dataclasses
import os
import warnings

import torch

from cnnkit.data import Data
from cnnkit.data.shards import batches_per_epoch
from cnnkit.schema import Config


class FitWarning(UserWarning):
    """A setting that does not fit the data; the CLI prints it as one `cnnkit: warning:` line."""


MIN_STEPS = 10  # optimizer steps per epoch below which an epoch says little
IMBALANCE = 5  # largest class / smallest class above which a warning is printed


def fit_to_data(cfg: Config, data: Data, *, world_size: int = 1, show: bool = True) -> Config:
    """The config with the data's class count and class weights resolved (so the saved config
    holds numbers); `data`'s decoding workers capped at the CPUs. `show`: issue the warnings
    (FitWarning; under torchrun rank 0 alone)."""
    counts = class_counts(data.splits["train"], len(data.classes))
    model, task = cfg.model, cfg.task
    if model.num_classes == "auto":
        model = dataclasses.replace(model, num_classes=len(data.classes))
    if task.class_weights == "auto" and counts is not None:
        task = dataclasses.replace(task, class_weights=inverse_frequency(counts))
    lines = fit_warnings(cfg, data, counts, world_size=world_size)
    if show:
        for line in lines:
            warnings.warn(line, FitWarning, stacklevel=2)
    return dataclasses.replace(cfg, model=model, task=task)


def class_counts(split, num_classes: int) -> list[int] | None:
    """Training examples per class; None where targets are not class indices (localization)."""
    labels = getattr(split, "labels", None)
    if labels is None:  # a class-folder split: its index holds the labels
        labels = torch.tensor(split.index.labels, dtype=torch.int64)
    if labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32, torch.uint8) \
            or (len(labels) and labels.min() < 0):
        return None  # not class indices; bad labels are check_splits' error, named there
    return torch.bincount(labels, minlength=num_classes).tolist()


def inverse_frequency(counts: list[int]) -> list[float]:
    """n / (K × n_k) per class: 1 for every class when balanced; a class with no training
    example gets 1 (it adds nothing to the loss either way)."""
    n, k = sum(counts), len(counts)
    return [round(n / (k * c), 6) if c else 1.0 for c in counts]


def fit_warnings(cfg: Config, data: Data, counts: list[int] | None, *, world_size: int = 1
                 ) -> list[str]:
    n, batch = len(data.splits["train"]), cfg.train.batch_size
    lines = []
    if batch > n:
        lines.append(f"train.batch_size {batch} is larger than the training split ({n} "
                     f"examples): every step sees the whole split")
    steps = batches_per_epoch(n, batch, world_size)
    if steps < MIN_STEPS:
        # the largest power of 2 that gives MIN_STEPS steps; the rate is the user's to scale
        smaller = 2 ** max(0, (n // MIN_STEPS).bit_length() - 1)
        lines.append(f"{steps} optimizer step{'s' if steps != 1 else ''} per epoch ({n} "
                     f"training examples, train.batch_size {batch}), fewer than {MIN_STEPS}: "
                     f"a smaller batch_size gives more updates per epoch (e.g. "
                     f"train.batch_size={smaller}: "
                     f"{batches_per_epoch(n, smaller, world_size)} steps; lower train.lr "
                     f"with it, about in proportion)")
    cpus = available_cpus()
    workers = getattr(data, "workers", 0)  # class folders decode in worker processes
    if workers > cpus:
        data.workers = cpus
        lines.append(f"data.workers {workers} is more than the {cpus} CPUs available; "
                     f"using {cpus}")
    if counts and min(counts) * IMBALANCE < max(counts):
        big, small = counts.index(max(counts)), counts.index(min(counts))
        lines.append(f"classes out of balance: '{data.classes[big]}' has {max(counts)} training "
                     f"examples, '{data.classes[small]}' {min(counts)} (more than {IMBALANCE} "
                     f"times as many); watch val_balanced_acc and val_macro_f1, and consider "
                     f"task.class_weights: auto")
    return lines


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as PyTorch's DataLoader counts)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
