"""Small datasets held whole as uint8 tensors, batched by index slices, not a DataLoader.

A per-sample DataLoader spends most of its time in Python for 28×28 digits; here one epoch
is one permutation and each batch is one gather, normalized on the training device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from cnnkit.data.augment import batch_seed
from cnnkit.data.shards import batches_per_epoch, shard_bounds

# augment(float images (B, C, H, W) on the 0..255 scale, seed=...) -> the same shape
Augmenter = Callable[..., torch.Tensor]


@dataclass
class Split:
    images: torch.Tensor  # uint8 (N, C, H, W), 0..255
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device) -> Split:
        pin = device.type == "cuda"
        images, labels = (self.images.pin_memory(), self.labels.pin_memory()) if pin \
            else (self.images, self.labels)
        return Split(images.to(device, non_blocking=pin), labels.to(device, non_blocking=pin))


def epoch_permutation(n: int, *, seed: int, epoch: int) -> torch.Tensor:
    """The order of epoch `epoch`: a function of (seed, epoch) alone, so resume needs no state.

    Drawn on the CPU so the order is the same whichever device trains."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


class TensorLoader:
    """Batches of (normalized float images, labels) from a Split that lives on `device`.

    With `world_size` > 1 (data-parallel training) `batch_size` is the global batch: this
    rank gets its contiguous part of each one (cnnkit.data.shards.shard_bounds), and a last
    batch with fewer examples than ranks is left out so every rank takes the same steps."""

    def __init__(self, split: Split, *, batch_size: int, shuffle: bool, seed: int,
                 mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                 augment: Augmenter | None = None, rank: int = 0, world_size: int = 1):
        self.split = split.to(device)
        self.augment = augment
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.device = device
        self.rank, self.world_size = rank, world_size
        # x = (u8 / 255 - mean) / std = u8 * scale - shift, per channel: (1, C, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = mean_t / std_t

    def __len__(self) -> int:
        return batches_per_epoch(len(self.split), self.batch_size, self.world_size)

    def global_batch_size(self, i: int) -> int:
        """Examples in batch i over all ranks (this rank holds its part of them)."""
        return min(self.batch_size, len(self.split) - i * self.batch_size)

    def bounds(self, i: int) -> tuple[int, int]:
        """Positions [lo, hi) in the epoch's order that this rank takes for batch i."""
        lo = i * self.batch_size
        a, b = shard_bounds(self.global_batch_size(i), self.rank, self.world_size)
        return lo + a, lo + b

    def order(self, epoch: int) -> torch.Tensor | None:
        if not self.shuffle:
            return None
        order = epoch_permutation(len(self.split), seed=self.seed, epoch=epoch)
        pin = self.device.type == "cuda"  # a pinned source lets the copy run asynchronously
        return (order.pin_memory() if pin else order).to(self.device, non_blocking=pin)

    def batches(self, epoch: int = 0, *, start: int = 0
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch, from batch index `start` (for mid-epoch resume)."""
        order = self.order(epoch)
        for i in range(start, len(self)):
            lo, hi = self.bounds(i)
            if order is None:
                images, labels = self.split.images[lo:hi], self.split.labels[lo:hi]
            else:
                index = order[lo:hi]
                images, labels = self.split.images[index], self.split.labels[index]
            if self.augment is not None:
                images = self.augment(images.float(), seed=batch_seed(self.seed, epoch, i))
            yield self.normalize(images), labels

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mul_(self.scale).sub_(self.shift)
