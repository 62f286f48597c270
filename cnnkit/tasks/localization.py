"""Classify and locate: the seed's output vector y = [p_c, x, y, w, h, p_1, ..., p_K] (5.8.1).

Conventions, used by the head, the loss, the data and predict alike:

- The head outputs raw scores s (B, 5 + K): p_c = sigmoid(s_0), the box
  (x, y, w, h) = sigmoid(s_1..s_4) and the class probabilities softmax(s_5..). Raw scores
  keep BCE and cross-entropy numerically stable; the sigmoid keeps a box inside the image.
- A box is (x, y, w, h) in fractions of the image's width and height, (x, y) its top-left
  corner: a box of pixels [x0, x0 + w) × [y0, y0 + h) in a W × H image is
  (x0 / W, y0 / H, w / W, h / H).
- A target is a float row [p_c, x, y, w, h, class] (p_c 0 or 1, class an index stored as a
  float). On empty images (p_c = 0) the other five are "don't care": never read by a loss
  or a metric.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cnnkit.errors import ConfigError
from cnnkit.schema import TASK_METRICS

BOX = slice(1, 5)  # the box's columns in both the head's output and the target


def decode(scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Raw scores (B, 5 + K) -> p_c (B,), box (B, 4) in fractions, class probabilities (B, K)."""
    return (torch.sigmoid(scores[:, 0]), torch.sigmoid(scores[:, BOX]),
            torch.softmax(scores[:, 5:], dim=1))


def _intersection_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Areas of intersection and union of paired boxes (..., 4) -> two (...) tensors."""
    inter_w = (torch.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2])
               - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    inter_h = (torch.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3])
               - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = inter_w * inter_h
    return inter, a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of paired boxes (..., 4) as (x, y, w, h) with (x, y) the top-left corner; (...)."""
    inter, union = _intersection_union(a, b)
    return inter / union.clamp(min=1e-12)


def giou_loss(a: Tensor, b: Tensor) -> Tensor:
    """1 - generalized IoU of paired boxes (..., 4): 0 for equal boxes, up to 2 for far ones;
    unlike 1 - IoU it still has a gradient when the boxes do not overlap."""
    inter, union = _intersection_union(a, b)
    hull_w = (torch.maximum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2])
              - torch.minimum(a[..., 0], b[..., 0]))
    hull_h = (torch.maximum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3])
              - torch.minimum(a[..., 1], b[..., 1]))
    hull = (hull_w * hull_h).clamp(min=1e-12)
    return 1 - inter / union.clamp(min=1e-12) + (hull - union) / hull


def _smooth_l1(a: Tensor, b: Tensor) -> Tensor:
    # beta 0.05: quadratic within 5% of the image size, linear beyond (fractions, not pixels)
    return F.smooth_l1_loss(a, b, reduction="none", beta=0.05).sum(dim=-1)


BOX_LOSSES = dict(
    mse=lambda a, b: ((a - b) ** 2).sum(dim=-1),
    smooth_l1=_smooth_l1,
    giou=giou_loss,
)


def squared_loss(scores: Tensor, target: Tensor, *, weights: tuple[float, float, float] = (1, 1, 1)
                 ) -> Tensor:
    """The seed's loss, averaged over the batch: per image (p̂_c - p_c)² alone when p_c = 0,
    and (p̂_c - p_c)² + Σ(box̂ - box)² + Σ_k(p̂_k - 1[k = class])² when p_c = 1."""
    p, box, probs = decode(scores)
    target = _cared(target)
    has = target[:, 0]  # (B,) 1 where there is an object
    onehot = F.one_hot(_class_index(target, probs.shape[1]), probs.shape[1]).to(probs.dtype)
    obj = (p - has) ** 2
    box_term = ((box - target[:, BOX]) ** 2).sum(dim=1)
    cls_term = ((probs - onehot) ** 2).sum(dim=1)
    w_obj, w_box, w_cls = weights
    per_image = w_obj * obj + torch.where(has > 0, w_box * box_term + w_cls * cls_term, 0.0)
    return per_image.mean()


def bce_ce_loss(scores: Tensor, target: Tensor, *, box_loss: str = "mse",
                weights: tuple[float, float, float] = (1, 1, 1)) -> Tensor:
    """The seed's variant, averaged over the batch: BCE on p_c for every image; for images
    with an object also cross-entropy on the classes and `box_loss` on the box."""
    target = _cared(target)
    has = target[:, 0]
    obj = F.binary_cross_entropy_with_logits(scores[:, 0], has, reduction="none")
    box_term = BOX_LOSSES[box_loss](torch.sigmoid(scores[:, BOX]), target[:, BOX])
    cls_term = F.cross_entropy(scores[:, 5:], _class_index(target, scores.shape[1] - 5),
                               reduction="none")
    w_obj, w_box, w_cls = weights
    per_image = w_obj * obj + torch.where(has > 0, w_box * box_term + w_cls * cls_term, 0.0)
    return per_image.mean()


def _cared(target: Tensor) -> Tensor:
    """The target with the don't-care entries of empty images set to 0, so that whatever a
    dataset stores there (even NaN) reaches neither the loss nor its gradient."""
    return torch.where(target[:, :1] > 0, target, 0.0)


def _class_index(target: Tensor, num_classes: int) -> Tensor:
    """The class column as indices, clamped into range so that one_hot and cross_entropy
    accept the (masked) rows of empty images."""
    return target[:, 5].long().clamp(0, num_classes - 1)


class Localization:
    """The seed's classify-and-locate task: loss on [p_c, box, classes] and its metrics.

    Metrics (sums on the device, one host sync per epoch):
      obj_acc  objectness accuracy: p̂_c >= threshold agrees with p_c, over all images;
      cls_acc  class accuracy over the images that have an object;
      iou      mean IoU of the predicted box over the images that have an object;
      acc      the share of images read entirely right: an empty image declared empty, or an
               object found with the right class and IoU >= 0.5 (what `train.monitor` watches).
    """

    name = "localization"
    metrics = TASK_METRICS[name]
    class_targets = False  # [p_c, x, y, w, h, class] rows, checked by the datasets
    extra_outputs = 5  # p_c, x, y, w, h before the class scores
    shown_classes = 1  # cnnkit predict's default --top: the class of the box
    scores = ("raw scores (B, 5 + K): sigmoid(s[:, 0]) is p(object), sigmoid(s[:, 1:5]) the "
              "box x, y, w, h as fractions of the image, softmax(s[:, 5:]) the classes")

    def __init__(self, *, loss: str = "squared", box_loss: str = "mse",
                 weights: tuple[float, float, float] = (1.0, 1.0, 1.0), threshold: float = 0.5):
        self.loss_name, self.box_loss, self.weights = loss, box_loss, weights
        self.threshold = threshold

    def check(self, output_shape: tuple[int, ...], num_classes: int, *, source: str) -> None:
        if output_shape != (5 + num_classes,):
            raise ConfigError(f"{source}: model.layers: localization needs 5 + {num_classes} "
                              f"outputs per example ([p_c, x, y, w, h] and {num_classes} class "
                              f"scores; end with [LocalizationHead, {num_classes}]), but the "
                              f"model outputs {'×'.join(map(str, output_shape))}")

    def loss(self, output: Tensor, target: Tensor, *, training: bool = True) -> Tensor:
        scores = output.logits if hasattr(output, "logits") else output  # aux heads: ignored
        if self.loss_name == "squared":
            return squared_loss(scores, target, weights=self.weights)
        return bce_ce_loss(scores, target, box_loss=self.box_loss, weights=self.weights)

    def stats(self, logits: Tensor, target: Tensor, loss: Tensor) -> Tensor:
        """[loss sum, images, objectness right, objects, class right, IoU sum, all right]."""
        p, box, probs = decode(logits.float())
        target = _cared(target)
        has = target[:, 0] > 0
        found = p >= self.threshold
        cls_right = (probs.argmax(dim=1) == _class_index(target, probs.shape[1])) & has
        iou = torch.where(has, box_iou(box, target[:, BOX]), 0.0)
        all_right = torch.where(has, found & cls_right & (iou >= 0.5), ~found)
        # a fill kernel on the device, not torch.tensor(n, device=...): no host sync per step
        n = target.new_full((), target.shape[0], dtype=torch.float64)
        return torch.stack([loss.detach().double() * n, n, (found == has).sum().double(),
                            has.sum().double(), cls_right.sum().double(), iou.sum().double(),
                            all_right.sum().double()])

    def summarize(self, totals: Tensor) -> dict[str, float]:
        loss_sum, n, obj_right, objects, cls_right, iou_sum, all_right = totals.tolist()
        n, objects = max(n, 1), max(objects, 1)
        return {"loss": loss_sum / n, "acc": all_right / n, "obj_acc": obj_right / n,
                "cls_acc": cls_right / objects, "iou": iou_sum / objects}

    def class_scores(self, scores: Tensor) -> Tensor:
        """(B, 5 + K) -> (B, K): the class scores after p_c and the box."""
        return scores[:, self.extra_outputs:]

    def probabilities(self, scores: Tensor) -> Tensor:
        """(B, K) float32 class probabilities of each image's object."""
        return decode(scores.float())[2]

    def read(self, scores: Tensor, classes: list[str], *, top: int) -> list[dict[str, Any]]:
        """Per image: object (p_object >= threshold), p_object, class, probability, top (the
        `top` most probable classes) and box (x, y, w, h as fractions of the image)."""
        results = []
        for p, box, probs in zip(*(t.float().cpu() for t in decode(scores))):
            values, indices = probs.topk(min(top, probs.numel()))
            best = [{"class": classes[k] if k < len(classes) else str(k),
                     "probability": round(v, 4)}
                    for v, k in zip(values.tolist(), indices.tolist())]
            results.append({"object": bool(p >= self.threshold), "p_object": round(float(p), 4),
                            "class": best[0]["class"], "probability": best[0]["probability"],
                            "top": best, "box": [round(float(v), 4) for v in box]})
        return results
