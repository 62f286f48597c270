"""The localization task: head, the seed's loss and its variant, IoU, metrics, task choice."""

import math

import pytest
import torch
import yaml

from cnnkit.config import load_config
from cnnkit.errors import ConfigError
from cnnkit.models.builder import build_model
from cnnkit.tasks import build_task
from cnnkit.tasks.localization import (
    Localization,
    bce_ce_loss,
    box_iou,
    giou_loss,
    squared_loss,
)
from tests.conftest import CONFIGS, SMALL_CONV


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def softmax(vs):
    e = [math.exp(v) for v in vs]
    return [x / sum(e) for x in e]


# K = 3 classes: s = [s_pc, s_x, s_y, s_w, s_h, s_1, s_2, s_3]
SCORES = [0.3, -1.0, 0.5, 0.2, -0.4, 1.5, -0.5, 0.25]
BOX = [0.1, 0.6, 0.3, 0.2]


def by_hand_squared(scores, target):
    """The seed's formula, written out: (p̂_c - p_c)², plus the rest only when p_c = 1."""
    p = sigmoid(scores[0])
    if target[0] == 0:
        return (p - 0) ** 2
    box = [sigmoid(s) for s in scores[1:5]]
    probs = softmax(scores[5:])
    onehot = [1.0 if k == target[5] else 0.0 for k in range(len(probs))]
    return ((p - 1) ** 2 + sum((b - t) ** 2 for b, t in zip(box, target[1:5]))
            + sum((q - o) ** 2 for q, o in zip(probs, onehot)))


def by_hand_bce_ce(scores, target):
    p = sigmoid(scores[0])
    if target[0] == 0:
        return -math.log(1 - p)
    box = [sigmoid(s) for s in scores[1:5]]
    return (-math.log(p) + sum((b - t) ** 2 for b, t in zip(box, target[1:5]))
            - math.log(softmax(scores[5:])[int(target[5])]))


@pytest.mark.parametrize("target", [[0, 0, 0, 0, 0, 0], [1, *BOX, 2], [1, *BOX, 0]],
                         ids=["empty", "object-class2", "object-class0"])
@pytest.mark.parametrize(("loss", "by_hand"), [(squared_loss, by_hand_squared),
                                              (bce_ce_loss, by_hand_bce_ce)],
                         ids=["squared", "bce-ce"])
def test_loss_matches_the_formula_by_hand(loss, by_hand, target):
    got = loss(torch.tensor([SCORES], dtype=torch.float64),
               torch.tensor([target], dtype=torch.float64))
    assert got.item() == pytest.approx(by_hand(SCORES, target), rel=1e-12)


def test_loss_is_the_batch_mean_with_weights():
    scores = torch.tensor([SCORES, SCORES], dtype=torch.float64)
    target = torch.tensor([[0, 0, 0, 0, 0, 0], [1, *BOX, 1]], dtype=torch.float64)
    p = sigmoid(SCORES[0])
    box = sum((sigmoid(s) - t) ** 2 for s, t in zip(SCORES[1:5], BOX))
    cls = sum((q - o) ** 2 for q, o in zip(softmax(SCORES[5:]), [0, 1, 0]))
    expected = (2 * p**2 + (2 * (p - 1) ** 2 + 5 * box + 0.5 * cls)) / 2
    got = squared_loss(scores, target, weights=(2.0, 5.0, 0.5))
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss", [squared_loss, bce_ce_loss])
def test_dont_care_entries_of_empty_images_never_contribute(loss):
    scores = torch.tensor([SCORES], dtype=torch.float64, requires_grad=True)
    clean = loss(scores, torch.tensor([[0.0, 0, 0, 0, 0, 0]], dtype=torch.float64))
    garbage = torch.tensor([[0.0, math.nan, 1e9, -math.inf, 7, 99]], dtype=torch.float64)
    dirty = loss(scores, garbage)
    assert dirty.item() == clean.item()
    dirty.backward()
    grad = scores.grad[0]
    assert torch.isfinite(grad).all()
    assert grad[0] != 0 and (grad[1:] == 0).all()  # only p_c learns from an empty image


@pytest.mark.parametrize("box_loss", ["mse", "smooth_l1", "giou"])
def test_box_losses_vanish_on_the_right_box(box_loss):
    box = torch.tensor(BOX)
    scores = torch.cat([torch.tensor([20.0]), torch.logit(box), torch.tensor([20.0, 0, 0])])
    target = torch.tensor([[1.0, *BOX, 0]])
    assert bce_ce_loss(scores[None], target, box_loss=box_loss).item() < 1e-5
    moved = target.clone()
    moved[0, 1] += 0.2
    assert bce_ce_loss(scores[None], moved, box_loss=box_loss).item() > 1e-3


@pytest.mark.parametrize(("a", "b", "iou"), [
    ([0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], 1.0),            # the same box
    ([0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.5, 0.5], 1 / 3),         # half overlap: .125 / .375
    ([0.0, 0.0, 1.0, 1.0], [0.25, 0.25, 0.5, 0.5], 0.25),         # one inside the other
    ([0.0, 0.0, 0.2, 0.2], [0.2, 0.0, 0.2, 0.2], 0.0),            # touching edges
    ([0.0, 0.0, 0.2, 0.2], [0.6, 0.6, 0.3, 0.3], 0.0),            # far apart
    ([0.1, 0.2, 0.4, 0.2], [0.3, 0.1, 0.2, 0.4], 0.04 / 0.12),    # a cross: 0.2 × 0.2 shared
])
def test_iou_on_known_boxes(a, b, iou):
    got = box_iou(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
    assert got.item() == pytest.approx(iou, abs=1e-12)
    assert box_iou(torch.tensor([b]), torch.tensor([a]))[0].item() == pytest.approx(iou, abs=1e-6)


def test_giou_keeps_a_gradient_for_disjoint_boxes():
    a = torch.tensor([0.0, 0.0, 0.2, 0.2], requires_grad=True)
    b = torch.tensor([0.6, 0.6, 0.3, 0.3])
    loss = giou_loss(a, b)
    assert 1 < loss.item() < 2
    loss.backward()
    assert a.grad.abs().sum() > 0
    assert giou_loss(b, b).item() == pytest.approx(0.0, abs=1e-6)


def _logits(p, box, cls, k=3):
    """Raw scores that decode to objectness p, the given box, and class `cls` winning."""
    scores = [math.log(p / (1 - p)), *(math.log(v / (1 - v)) for v in box)]
    return scores + [5.0 if j == cls else 0.0 for j in range(k)]


def test_metrics_count_what_they_say():
    task = Localization()
    truth = [0.2, 0.2, 0.4, 0.4]
    logits = torch.tensor([
        _logits(0.9, truth, 1),                   # found, class right, IoU 1: all right
        _logits(0.9, [0.4, 0.2, 0.4, 0.4], 1),    # found, class right, IoU 1/3: not right
        _logits(0.9, truth, 2),                   # found, wrong class
        _logits(0.2, truth, 1),                   # missed the object (p_c low)
        _logits(0.1, truth, 0),                   # empty, declared empty: right
        _logits(0.8, truth, 0),                   # empty, object declared: wrong
    ])
    target = torch.tensor([[1, *truth, 1]] * 4 + [[0, 0, 0, 0, 0, 0]] * 2)
    totals = task.stats(logits, target, torch.tensor(0.5))
    metrics = task.summarize(totals)
    assert metrics["obj_acc"] == pytest.approx(4 / 6)
    assert metrics["cls_acc"] == pytest.approx(3 / 4)
    assert metrics["iou"] == pytest.approx((1 + 1 / 3 + 1 + 1) / 4, rel=1e-5)
    assert metrics["acc"] == pytest.approx(2 / 6)
    assert metrics["loss"] == pytest.approx(0.5)


def _localization_config(write_config, layers, **task):
    config = {**SMALL_CONV, "model": {"input": [1, 32, 32], "layers": layers},
              "data": {"name": "mnist-localization", "train_size": 50, "val_size": 20,
                       "localization": {"size": 32, "digit_size": [12, 24]}},
              "task": {"name": "localization", **task}}
    return load_config(write_config(config))


def test_head_from_yaml_infers_its_input(write_config):
    cfg = _localization_config(write_config, [["Conv2d", 4, 3], ["ReLU"], ["Flatten"],
                                              ["LocalizationHead", 10]])
    model = build_model(cfg)
    assert model.output_shape == (15,)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 15)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("3.")}
    features = 4 * 30 * 30
    assert shapes == {"3.objectness.weight": (1, features), "3.objectness.bias": (1,),
                      "3.box.weight": (4, features), "3.box.bias": (4,),
                      "3.classes.weight": (10, features), "3.classes.bias": (10,)}


def test_task_comes_from_the_config(write_config):
    cfg = _localization_config(write_config, [["Flatten"], ["LocalizationHead", 10]],
                               loss="bce-ce", box_loss="giou", box_weight=5.0, threshold=0.7)
    task = build_task(cfg)
    assert isinstance(task, Localization)
    assert (task.loss_name, task.box_loss, task.weights, task.threshold) == (
        "bce-ce", "giou", (1.0, 5.0, 1.0), 0.7)
    assert build_task(load_config(write_config())).metrics == ("loss", "acc", "balanced_acc",
                                                                 "macro_f1")


def test_unknown_task_lists_the_valid_ones(write_config):
    cfg = _localization_config(write_config, [["Flatten"], ["LocalizationHead", 10]])
    cfg.task.name = "localisation"
    with pytest.raises(ConfigError, match="task.name: unknown task 'localisation'; did you "
                                          "mean 'localization'.*classification, localization"):
        build_task(cfg)


def test_a_classifier_output_is_refused_for_localization(write_config, tmp_path):
    from cnnkit.training.trainer import train

    cfg = _localization_config(write_config, [["Flatten"], ["Linear", 10]])
    with pytest.raises(ConfigError, match=r"localization needs 5 \+ 10 outputs.*"
                                          r"\[LocalizationHead, 10\].*outputs 10"):
        train(cfg, out_dir=tmp_path / "run", quiet=True)


def test_head_on_a_zoo_backbone(write_config):
    """ResNet-18 from its zoo config, with `fc` swapped for the head: the same state_dict
    keys up to the head, so torchvision's backbone weights still load."""
    raw = yaml.safe_load((CONFIGS / "resnet18.yaml").read_text())
    raw["model"]["input"] = [3, 64, 64]
    raw["model"]["layers"]["fc"] = ["LocalizationHead", 3]
    raw["task"] = {"name": "localization"}
    with torch.device("meta"):  # keys and shapes: no weights needed
        model = build_model(write_config(raw, "resnet18_localization.yaml")).eval()
    assert model.output_shape == (8,)
    assert "layer4.1.conv2.weight" in model.state_dict()
    assert {k for k in model.state_dict() if k.startswith("fc.")} == {
        f"fc.{part}.{p}" for part in ("objectness", "box", "classes") for p in ("weight", "bias")}
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64, device="meta")).shape == (2, 8)
