"""Batch mixing on the device: torchvision.transforms.v2's MixUp and CutMix on each training
batch, class indices in, soft targets (B, K) out.

Which batches mix and with what: batch i of epoch e draws from generators seeded by
`batch_seed(train.seed, epoch, i)` (salted apart from the tensor augmentation's), never from
the run's own streams: whether it mixes (`mix_prob`), CutMix or MixUp (`mix_switch_prob`,
when both alphas are on), then torchvision's own draws (lambda, the box) under a forked
global generator. A resumed run mixes every batch as the run it continues did.

The global batch is mixed, as one process mixes it: torchvision pairs image j with image j - 1
of the batch (a roll by one). Under DDP each rank holds a contiguous part of the global batch
(data/shards.py), so its first image pairs with the last image of the rank before it (rank 0:
the last rank's, the roll's wrap); the ranks exchange their last image and label
(`all_gather`, one image each) and run the same transform, with the same draws, on their part
with that image in front. The mixing happens before the batch is cut into micro-batches
(train.accumulate_steps), so neither the number of processes nor accumulate_steps changes a
draw or a pair.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F

from cnnkit.data.augment import batch_seed
from cnnkit.schema import AugmentConfig, Config
from cnnkit.training.distributed import Cluster

if TYPE_CHECKING:
    from torchvision.transforms import v2

_SALT = 0x6D6978  # "mix": these draws apart from data/augment.py's for the same batch


class BatchMix:
    """MixUp and/or CutMix as data.augment configures them; `mix(x, y, epoch=, index=)`."""

    def __init__(self, aug: AugmentConfig, *, num_classes: int, seed: int,
                 cluster: Cluster | None = None):
        from torchvision.transforms import v2  # only runs that mix pay for its import

        self.num_classes, self.seed, self.cluster = num_classes, seed, cluster or Cluster()
        self.mixup = v2.MixUp(alpha=aug.mixup_alpha, num_classes=num_classes) \
            if aug.mixup_alpha else None
        self.cutmix = v2.CutMix(alpha=aug.cutmix_alpha, num_classes=num_classes) \
            if aug.cutmix_alpha else None
        self.prob, self.switch = aug.mix_prob, aug.mix_switch_prob

    def choose(self, seed: int) -> v2.Transform | None:
        """The transform batch `seed` uses: None (not mixed), CutMix or MixUp."""
        mixes, cutmix = torch.rand(2, generator=torch.Generator().manual_seed(seed)).tolist()
        if mixes >= self.prob:
            return None
        if self.mixup is None or self.cutmix is None:
            return self.mixup or self.cutmix
        return self.cutmix if cutmix < self.switch else self.mixup

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, epoch: int, index: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's part of global batch `index`: images (B, C, H, W) and class indices
        (B,) -> mixed images and soft targets (B, K) in float32."""
        seed = batch_seed(self.seed ^ _SALT, epoch, index)
        transform = self.choose(seed)
        if transform is None:
            return x, F.one_hot(y, self.num_classes).float()
        before_x, before_y = previous_last(x, y, self.cluster)
        return mix_after(transform, x, y, before_x, before_y, seed=seed)


def mix_after(transform: v2.Transform, x: torch.Tensor, y: torch.Tensor,
              before_x: torch.Tensor, before_y: torch.Tensor, *, seed: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's `transform` on [before; x] with its draws from `seed`, the first row
    dropped: x's first image is paired with `before` (1, C, H, W), the others as torchvision
    pairs them."""
    with torch.random.fork_rng(devices=[]):  # torchvision draws on the CPU's global generator
        torch.default_generator.manual_seed(seed)
        mixed, soft = transform(torch.cat([before_x, x]), torch.cat([before_y, y]))
    return mixed[1:], soft[1:].float()


def previous_last(x: torch.Tensor, y: torch.Tensor, cluster: Cluster
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The last image and label of the part of the global batch before this rank's (the
    wrap: the last rank's for rank 0; in one process, this batch's own last)."""
    if not cluster.active:
        return x[-1:], y[-1:]
    images = [torch.empty_like(x[-1:]) for _ in range(cluster.world_size)]
    labels = [torch.empty_like(y[-1:]) for _ in range(cluster.world_size)]
    dist.all_gather(images, x[-1:].contiguous())
    dist.all_gather(labels, y[-1:].contiguous())
    before = (cluster.rank - 1) % cluster.world_size
    return images[before], labels[before]


def dominant(target: torch.Tensor) -> torch.Tensor:
    """Class indices: as they are, or the largest share of each soft target (B, K) from
    batch mixing (what accuracy and the other metrics count against in mixed runs; other
    tasks' targets are never passed here)."""
    return target.argmax(dim=1) if target.dim() == 2 else target


def build_mix(cfg: Config, *, num_classes: int, cluster: Cluster | None = None
              ) -> BatchMix | None:
    """The batch mixing data.augment turns on, seeded by train.seed (validate.py refuses it
    for tasks other than classification)."""
    aug = cfg.data.augment
    if not (aug.mixup_alpha or aug.cutmix_alpha):
        return None
    return BatchMix(aug, num_classes=num_classes, seed=cfg.train.seed, cluster=cluster)
