"""Classification: cross-entropy on logits (optionally weighted per class); accuracy, balanced
accuracy and macro-F1."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError
from cnnkit.models.builder import NetworkOutput
from cnnkit.schema import TASK_METRICS


class Classification:
    """Cross-entropy on logits; accuracy, balanced accuracy (the mean of per-class recalls) and
    macro-F1 (the mean of per-class F1 over the classes seen or predicted), so a model that
    predicts only the majority class shows it. Auxiliary heads add `aux_weight` × their loss.

    `label_smoothing` (in [0, 1): the schema checks) softens the training targets only:
    validation losses are plain cross-entropy (training=False), so they compare across runs.
    `class_weights` (one positive number per class, task.class_weights resolved) weight the
    loss of each example by its class, in training and validation alike.

    Targets are class indices (B,) or, from batch mixing, soft targets (B, K) that sum to 1.
    Soft targets use the class-index scale, which torch's cross_entropy gives only to
    indices (soft targets it divides by B whatever the weights): the sum over examples of
    Σ_k w_k t'_k (-log p_k), with t' the smoothed targets (1 - ε) t + ε / K, divided by
    Σ_examples Σ_k w_k t_k. A one-hot soft target gives exactly the loss of its index."""

    name = "classification"
    metrics = TASK_METRICS[name]
    class_targets = True  # also: eval reports a confusion matrix, ensembles average
    extra_outputs = 0  # the model outputs one score per class, nothing else
    shown_classes = 5  # cnnkit predict's default --top
    scores = "logits (B, K): softmax over K gives the probabilities of the classes"

    def __init__(self, *, aux_weight: float = 0.3, label_smoothing: float = 0.0,
                 class_weights: list[float] | None = None):
        self.aux_weight = aux_weight
        self.label_smoothing = label_smoothing
        self.weight = None if class_weights is None else torch.tensor(class_weights)

    def check(self, output_shape: tuple[int, ...], num_classes: int, *, source: str) -> None:
        if output_shape != (num_classes,):
            raise ConfigError(f"{source}: model.layers: the model outputs "
                              f"{'×'.join(map(str, output_shape))} values per example, but the "
                              f"dataset has {num_classes} classes")
        if self.weight is not None and len(self.weight) != num_classes:
            raise ConfigError(f"{source}: task.class_weights: expected {num_classes} weights "
                              f"(one per class), found {len(self.weight)}")

    def loss(self, output: torch.Tensor | NetworkOutput, target: torch.Tensor, *,
             training: bool = True) -> torch.Tensor:
        smoothing = self.label_smoothing if training else 0.0
        logits = output.logits if isinstance(output, NetworkOutput) else output
        if self.weight is not None and self.weight.device != logits.device:
            self.weight = self.weight.to(logits.device)  # once per device, not per step
        loss = self._cross_entropy(logits, target, smoothing)
        if isinstance(output, NetworkOutput):
            loss = loss + self.aux_weight * sum(
                self._cross_entropy(a, target, smoothing) for a in output.aux)
        return loss

    def _cross_entropy(self, logits: torch.Tensor, target: torch.Tensor, smoothing: float
                       ) -> torch.Tensor:
        if target.dim() == 1:
            return F.cross_entropy(logits, target, weight=self.weight, label_smoothing=smoothing)
        target = target.float()
        weight = torch.ones_like(target[0]) if self.weight is None else self.weight.float()
        smoothed = target * (1 - smoothing) + smoothing / target.shape[1]
        log_p = F.log_softmax(logits.float(), dim=1)
        return -(smoothed * weight * log_p).sum() / (target * weight).sum()

    def stats(self, logits: torch.Tensor, target: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """[loss sum, correct, count, then per class K: hits, predicted, true] for one batch,
        as a float64 device tensor to add up (scatter_add, not bincount: no host sync)."""
        n, k = target.shape[0], logits.shape[1]
        predicted = logits.argmax(dim=1)
        hit = (predicted == target).double()
        per_class = target.new_zeros((3, k), dtype=torch.float64)
        per_class[0].scatter_add_(0, target, hit)
        per_class[1].scatter_add_(0, predicted, torch.ones_like(hit))
        per_class[2].scatter_add_(0, target, torch.ones_like(hit))
        # new_full is a fill kernel on the device; torch.tensor(n, device=cuda) would be a
        # blocking host-to-device copy, i.e. a host sync every step
        return torch.cat([torch.stack([loss.detach().double() * n, hit.sum(),
                                       target.new_full((), n, dtype=torch.float64)]),
                          per_class.flatten()])

    def summarize(self, totals: torch.Tensor) -> dict[str, float]:
        values = totals.tolist()  # the one host sync per epoch and split
        (loss_sum, correct, n), rest = values[:3], values[3:]
        k = len(rest) // 3
        hits, predicted, true = rest[:k], rest[k:2 * k], rest[2 * k:]
        recalls = [h / t for h, t in zip(hits, true) if t]
        f1s = [2 * h / (p + t) for h, p, t in zip(hits, predicted, true) if p + t]
        return {"loss": loss_sum / max(n, 1), "acc": correct / max(n, 1),
                "balanced_acc": sum(recalls) / max(len(recalls), 1),
                "macro_f1": sum(f1s) / max(len(f1s), 1)}

    def class_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K) the scores of the classes: the logits themselves."""
        return logits

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, K) float32 softmax probabilities."""
        return torch.softmax(logits.float(), dim=1)

    def read(self, logits: torch.Tensor, classes: list[str], *, top: int
             ) -> list[dict[str, Any]]:
        """Per image, "class" and "probability" of the most probable class and "top", the `top`
        most probable: [{"class": name, "probability": p}, ...]."""
        values, indices = self.probabilities(logits).topk(min(top, logits.shape[1]), dim=1)
        return [{"class": classes[ix[0]], "probability": vs[0],
                 "top": [{"class": classes[i], "probability": p} for p, i in zip(vs, ix)]}
                for vs, ix in zip(values.cpu().tolist(), indices.cpu().tolist())]
