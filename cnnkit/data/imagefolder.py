"""`imagefolder`: ImageNet-style class folders, ROOT/train|val|test/<class>/<image>.

Images are decoded and transformed by DataLoader workers (data/transforms.py: torchvision's
RandomResizedCrop, flip and what data.augment adds to train, Resize + CenterCrop at
data.val_resize and data.val_crop to evaluate) into uint8 tensors; a batch crosses to the
device as uint8 (pinned, non-blocking on CUDA, a quarter of the bytes of float32) and is
normalized there, as the tensor loader does.

Resume stays exact: the order of an epoch is `epoch_permutation(seed, epoch)`, as for the
tensor datasets, and each image's random crop and flip are drawn from a generator seeded by
(seed, epoch, image index), so neither depends on the number of workers or on where a run
was stopped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate
from torchvision.transforms import v2

from cnnkit.data.checks import check_training_device
from cnnkit.data.decode import decode_eval, decode_train
from cnnkit.data.device_decode import Encoded, decode_batch, read_encoded
from cnnkit.data.folder_index import SplitIndex, index_folder, left_out_line
from cnnkit.data.image_files import oddity_line, oddity_of
from cnnkit.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.data.shards import batches_per_epoch, shard_bounds
from cnnkit.data.tensors import epoch_permutation
from cnnkit.data.transforms import eval_transform, train_transform
from cnnkit.errors import DataError
from cnnkit.schema import DataConfig

NAMED = 3  # undecodable files a training error names, of those in the failing batch


@dataclass
class FolderSplit:
    """One split's files; `len()` is its number of images."""

    root: Path  # ROOT/<split>
    index: SplitIndex

    def __len__(self) -> int:
        return len(self.index.files)


class Bad(NamedTuple):
    """An image a worker could not decode, passed back to the main process to report."""

    path: str
    message: str


class Odd(NamedTuple):
    """An image that decodes but may mislead ("tiny" or "alpha": data/image_files.oddity_of),
    noted by a worker from the decode it did anyway, passed back to the main process."""

    path: str
    kind: str


class _Decoded(Dataset):
    """Key (index, epoch) -> (uint8 C×H×W tensor, label, Odd or None), or Bad; with
    `on_device`, (Encoded, label, Odd or None): the file read for data/device_decode.py to
    decode on the device."""

    def __init__(self, split: FolderSplit, transform: v2.Compose, *, augment: bool, seed: int,
                 draft: bool = True, on_device: bool = False):
        self.split, self.transform, self.augment, self.seed = split, transform, augment, seed
        self.draft = draft  # JPEG decoded at a reduced size where the crop allows (decode.py)
        self.on_device = on_device

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, Odd | None] | Bad:
        i, epoch = key
        path = self.split.root / self.split.index.files[i]
        label = self.split.index.labels[i]
        kinds: list[str | None] = []

        def note(image, size: tuple[int, int]) -> None:  # the image as the decode left it
            kinds.append(oddity_of(image, size))

        try:
            x = self._decode(path, epoch, i, note)
        except DataError as exc:
            return Bad(str(path), str(exc))
        return x, label, Odd(str(path), kinds[0]) if kinds and kinds[0] else None

    def _decode(self, path: Path, epoch: int, i: int, note) -> torch.Tensor | Encoded:
        if self.on_device:
            seed = _sample_seed(self.seed, epoch, i) if self.augment else None
            return read_encoded(path, seed, note)
        if not self.augment:
            return decode_eval(path, self.transform, note=note)
        # torchvision's random transforms draw from torch's global CPU generator: fork it, so
        # the crop is a function of (seed, epoch, i) and the caller's stream is untouched.
        # That generator alone: torch.manual_seed also queues a lazy seed per accelerator,
        # formatting a stack trace each, 0.8 ms an image (scripts/bench.py f)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(_sample_seed(self.seed, epoch, i))
            return decode_train(path, self.transform, draft=self.draft, note=note)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed % 2**64, epoch, index]).generate_state(1)[0])


def _collate(items: list) -> tuple[torch.Tensor | None, torch.Tensor, list[Bad], list[Odd]]:
    good = [item[:2] for item in items if not isinstance(item, Bad)]
    bad = [item for item in items if isinstance(item, Bad)]
    odd = [item[2] for item in items if not isinstance(item, Bad) and item[2] is not None]
    if not good:
        return None, torch.zeros(0, dtype=torch.int64), bad, odd
    # torch's own collate: in a worker it stacks straight into shared memory, where the batch
    # crosses to the main process without a second copy (uint8 (B, 3, S, S), int64 (B,))
    if isinstance(good[0][0], Encoded):  # decoded on the device by the main process
        return [x for x, _ in good], torch.tensor([y for _, y in good]), bad, odd
    images, labels = default_collate(good)
    return images, labels, bad, odd


class _BatchKeys(Sampler):
    """The batches of one epoch as lists of (index, epoch) keys, from batch `start`: this
    rank's contiguous part of each global batch (all of it in one process). A last batch
    with fewer images than ranks is left out, as in cnnkit.data.tensors.TensorLoader."""

    def __init__(self, n: int, *, batch_size: int, shuffle: bool, seed: int, rank: int,
                 world_size: int):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def total(self) -> int:
        return batches_per_epoch(self.n, self.batch_size, self.world_size)

    def __len__(self) -> int:
        return self.total() - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = epoch_permutation(self.n, seed=self.seed, epoch=self.epoch) if self.shuffle \
            else torch.arange(self.n)
        for i in range(self.start, self.total()):
            lo = i * self.batch_size
            a, b = shard_bounds(min(self.batch_size, self.n - lo), self.rank, self.world_size)
            yield [(k, self.epoch) for k in order[lo + a:lo + b].tolist()]


class FolderLoader:
    """Batches of (normalized float images, labels) on `device`, decoded by worker processes.

    The workers persist across epochs; an image that cannot be decoded is an error naming
    it, or with `skip_bad` is left out and counted in one warning. Images that decode but
    may mislead (tiny, transparent) are counted in one warning per kind, at the end of the
    pass that met them (the first)."""

    def __init__(self, split: FolderSplit, *, augment: bool, transform: v2.Compose,
                 batch_size: int, shuffle: bool, seed: int, mean: tuple[float, ...],
                 std: tuple[float, ...], device: torch.device, workers: int, skip_bad: bool,
                 rank: int = 0, world_size: int = 1, on_device: bool = False):
        self.split, self.batch_size, self.device = split, batch_size, device
        self.transform, self.on_device = transform, on_device
        self.skip_bad = skip_bad
        self.sampler = _BatchKeys(len(split), batch_size=batch_size, shuffle=shuffle, seed=seed,
                                  rank=rank, world_size=world_size)
        self.pin = device.type == "cuda"
        self.loader = DataLoader(
            _Decoded(split, transform, augment=augment, seed=seed, on_device=on_device),
            batch_sampler=self.sampler,
            num_workers=workers, collate_fn=_collate, pin_memory=self.pin,
            persistent_workers=workers > 0,
            # each new iterator draws its workers' base seed from this generator; from the
            # global one it would shift dropout's stream once per worker start, and a resumed
            # run starts its persistent workers an epoch later than the run it continues
            generator=torch.Generator().manual_seed(seed))
        # x = (u8 / 255 - mean) / std = u8 * scale - shift, per channel: (1, C, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * std_t), mean_t / std_t
        self.bad: dict[str, str] = {}  # path -> message, of the files skipped so far
        self.odd: dict[str, dict[str, None]] = {}  # kind -> paths (in the order met) so far

    def __len__(self) -> int:
        return self.sampler.total()

    def global_batch_size(self, i: int) -> int:
        """Images in batch i over all ranks (this rank decodes its part of them)."""
        return min(self.batch_size, len(self.split) - i * self.batch_size)

    def batches(self, epoch: int = 0, *, start: int = 0
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch, from batch index `start` (for mid-epoch resume)."""
        self.sampler.epoch, self.sampler.start = epoch, start
        known, yielded = len(self.bad), 0
        known_odd = {kind: len(paths) for kind, paths in self.odd.items()}
        for images, labels, bad, odd in self.loader:
            if self.on_device and images is not None:
                images, kept, failed = decode_batch(images, self.transform, self.device)
                labels, bad = labels[kept], bad + [Bad(*b) for b in failed]
            self._note_bad(bad)
            for path, kind in odd:
                if path not in self.bad:  # not one the device failed to decode after all
                    self.odd.setdefault(kind, {})[path] = None
            if images is None:
                continue
            images = images.to(self.device, non_blocking=self.pin)
            yielded += 1
            yield images.float().mul_(self.scale).sub_(self.shift), \
                labels.to(self.device, non_blocking=self.pin)
        if len(self.bad) > known:
            self._warn()
        for kind, paths in self.odd.items():
            if len(paths) > known_odd.get(kind, 0):
                print(f"cnnkit: warning: {self.split.root}: {oddity_line(kind, list(paths))}",
                      file=sys.stderr, flush=True)
        if yielded == 0 and len(self) > start:
            raise DataError(f"{self.split.root}: none of its {len(self.split)} images could be "
                            f"decoded (first: {next(iter(self.bad))})")

    def _note_bad(self, bad: list[Bad]) -> None:
        """Without skip_bad, the batch's undecodable files (up to NAMED) in one error line."""
        if bad and not self.skip_bad:
            named = "; ".join(b.message for b in bad[:NAMED])
            more = f"; and {len(bad) - NAMED} more in this batch" if len(bad) > NAMED else ""
            files = "this file" if len(bad) == 1 else f"these {len(bad)} files"
            raise DataError(f"{named}{more}; set data.skip_bad: true (--set data.skip_bad=true)"
                            f" to train without {files} and such others")
        self.bad.update((b.path, b.message) for b in bad)

    def _warn(self) -> None:
        first = next(iter(self.bad.values()))
        print(f"cnnkit: warning: {self.split.root}: skipped {len(self.bad)} of "
              f"{len(self.split)} images that cannot be decoded (data.skip_bad); first: {first}",
              file=sys.stderr, flush=True)


@dataclass
class FolderData:
    """The splits of one class-folder tree, with the settings its loaders share."""

    splits: dict[str, FolderSplit]  # "train", "val" and, when ROOT/test exists, "test"
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cfg: DataConfig  # image_size, augment, val_resize, val_crop
    workers: int = 4  # data.workers, capped at the CPUs by load()
    skip_bad: bool = False

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.cfg.image_size, self.cfg.image_size)

    def loader(self, split: str, *, batch_size: int, shuffle: bool, seed: int,
               device: torch.device, augment: object = None, rank: int = 0,
               world_size: int = 1) -> FolderLoader:
        """A shuffled pass over train is a training pass and gets the random transforms
        (data.augment's); every other pass gets the evaluation transforms. data.decode gpu
        decodes on a CUDA `device`; a training pass on another device is refused, and an
        evaluation there decodes on the CPU (the same pixels within JPEG decoders' tolerance),
        so a run trained with it evaluates anywhere. `augment` is the
        tensor loaders' and always None here: the schema refuses their keys for imagefolder."""
        if split not in self.splits:
            raise DataError(f"split '{split}': this dataset has {', '.join(self.splits)}")
        training = shuffle and split == "train"
        on_device = self.cfg.decode == "gpu" and device.type == "cuda"
        if training:
            check_training_device(self.cfg.decode, device)
        transform = train_transform(self.cfg, mean=self.mean) if training \
            else eval_transform(self.cfg)
        return FolderLoader(self.splits[split], augment=training, transform=transform,
                            batch_size=batch_size, shuffle=shuffle, seed=seed, mean=self.mean,
                            std=self.std, device=device, workers=self.workers,
                            skip_bad=self.skip_bad, rank=rank, world_size=world_size,
                            on_device=on_device)


def load(cfg: DataConfig) -> FolderData:
    """The imagefolder dataset a `data` section describes (root set, sizes null, ranges of
    image_size and workers: checked by the schema)."""
    root = Path(cfg.root)
    index = index_folder(root)
    if index.left_out:
        print(f"cnnkit: warning: {left_out_line(root, index.left_out)}", file=sys.stderr,
              flush=True)
    splits = {name: FolderSplit(root / name, split) for name, split in index.splits.items()}
    # capped at the CPUs for every command (train, eval, predict, export): the zoo's 8 on 2
    # cores is 2, without torch's warning about more workers than CPUs
    return FolderData(splits, index.classes, IMAGENET_MEAN, IMAGENET_STD, cfg,
                      workers=min(cfg.workers, available_cpus()), skip_bad=cfg.skip_bad)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as PyTorch's DataLoader counts)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
