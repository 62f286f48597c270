"""Heads that end a network for a task other than classification: the localization head
(cnnkit.tasks.localization holds its loss, metrics and decoding)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LocalizationHead(nn.Module):
    """(B, in_features) -> (B, 5 + num_classes) raw scores: objectness, box, classes.

    Three linear maps on the same features, named for what they predict, so a state_dict
    reads `head.box.weight`. Needs flat features: put `[Flatten]` before it, and keep the
    spatial layout up to there (a global average pool forgets where the object is)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.objectness = nn.Linear(in_features, 1)
        self.box = nn.Linear(in_features, 4)
        self.classes = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.objectness(x), self.box(x), self.classes(x)], dim=1)


BLOCKS: dict[str, type[nn.Module]] = dict(LocalizationHead=LocalizationHead)
