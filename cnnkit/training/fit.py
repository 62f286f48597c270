"""A config fitted to its data before training: what only the data can decide, resolved
(model.num_classes auto, task.class_weights auto, decoding workers capped at the CPUs), and
one warning line, with a value to set, for each setting that does not fit it (few optimizer
steps in the whole run, a batch larger than the training split, classes far out of balance
with nothing done about it). The shipped configs used as designed warn of nothing: mnist_conv
takes 4 steps an epoch for 30 epochs (120), finetune_resnet18 8 for 15 on its 244 photos."""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch

from cnnkit.data import Data
from cnnkit.data.imagefolder import available_cpus
from cnnkit.data.shards import batches_per_epoch
from cnnkit.errors import counted
from cnnkit.schema import Config


class FitWarning(UserWarning):
    """A setting that does not fit the data; the CLI prints it as one `cnnkit: warning:` line."""


MIN_STEPS = 100  # optimizer steps over the whole run below which little can be learned
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
        for line in lines:  # explicit: no caller's source line printed under the message
            warnings.warn_explicit(line, FitWarning, filename="cnnkit", lineno=0)
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
    n, batch, epochs = len(data.splits["train"]), cfg.train.batch_size, cfg.train.epochs
    lines = []
    if batch > n:
        lines.append(f"train.batch_size {batch} is larger than the training split ("
                     f"{counted(n, 'example')}): every step sees the whole split; "
                     f"train.batch_size {max(1, n // 10)} gives 10 steps per epoch")
    steps = batches_per_epoch(n, batch, world_size)
    if 0 < steps * epochs < MIN_STEPS:
        smaller = n // math.ceil(MIN_STEPS / epochs)  # the largest batch that gives enough
        fix = [f"train.batch_size {smaller}"] if 0 < smaller < batch else []
        fix.append(f"train.epochs {math.ceil(MIN_STEPS / steps)}")
        lines.append(f"{counted(steps * epochs, 'optimizer step')} in all ("
                     f"{counted(steps, 'step')} per epoch × {counted(epochs, 'epoch')}; "
                     f"{counted(n, 'training example')}, train.batch_size {batch}), fewer "
                     f"than {MIN_STEPS}: {' or '.join(fix)} gives {MIN_STEPS} or more")
    if hasattr(data, "workers"):  # class folders decode in worker processes
        # load() caps class folders' already; this caps a Data given another way
        data.workers = min(data.workers, available_cpus())  # the zoo's 8 on 2 cores: 2
    if counts and min(counts) * IMBALANCE < max(counts) and cfg.task.class_weights is None:
        big, small = counts.index(max(counts)), counts.index(min(counts))
        watch = "" if "balanced" in cfg.train.monitor or "f1" in cfg.train.monitor else \
            "train.monitor: val_balanced_acc and "
        lines.append(f"classes out of balance: '{data.classes[big]}' has {max(counts)} training "
                     f"examples, '{data.classes[small]}' {min(counts)} (more than {IMBALANCE} "
                     f"times as many); consider {watch}task.class_weights: auto")
    return lines

