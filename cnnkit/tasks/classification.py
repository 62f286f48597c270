"""Classification: cross-entropy on logits, accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError
from cnnkit.models.builder import NetworkOutput


class Classification:
    """Cross-entropy on logits; accuracy. Auxiliary heads add `aux_weight` × their loss.

    `label_smoothing` (in [0, 1): the schema checks) softens the training targets only:
    validation losses are plain cross-entropy (training=False), so they compare across runs."""

    metrics = ("loss", "acc")
    class_targets = True

    def __init__(self, *, aux_weight: float = 0.3, label_smoothing: float = 0.0):
        self.aux_weight = aux_weight
        self.label_smoothing = label_smoothing

    def check(self, output_shape: tuple[int, ...], num_classes: int, *, source: str) -> None:
        if output_shape != (num_classes,):
            raise ConfigError(f"{source}: model.layers: the model outputs "
                              f"{'×'.join(map(str, output_shape))} values per example, but the "
                              f"dataset has {num_classes} classes")

    def loss(self, output: torch.Tensor | NetworkOutput, target: torch.Tensor, *,
             training: bool = True) -> torch.Tensor:
        smoothing = self.label_smoothing if training else 0.0
        if isinstance(output, NetworkOutput):
            main = F.cross_entropy(output.logits, target, label_smoothing=smoothing)
            return main + self.aux_weight * sum(
                F.cross_entropy(a, target, label_smoothing=smoothing) for a in output.aux)
        return F.cross_entropy(output, target, label_smoothing=smoothing)

    def stats(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """[loss sum, correct, count] for one batch, as a float64 device tensor to add up."""
        n = target.shape[0]
        correct = (logits.argmax(dim=1) == target).sum()
        # new_full is a fill kernel on the device; torch.tensor(n, device=cuda) would be a
        # blocking host-to-device copy, i.e. a host sync every step
        return torch.stack([loss.detach().double() * n, correct.double(),
                            target.new_full((), n, dtype=torch.float64)])

    def summarize(self, totals: torch.Tensor) -> dict[str, float]:
        loss_sum, correct, n = totals.tolist()  # the one host sync per epoch and split
        return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1)}
