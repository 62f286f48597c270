"""Localization end to end: a training run whose IoU rises, eval --json, predict and drawing."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.checkpoint import save_checkpoint
from cnnkit.config import config_to_dict, load_config
from cnnkit.data import build_data
from cnnkit.infer.locate import BOX_COLOUR
from cnnkit.models.builder import build_model
from cnnkit.tasks.localization import box_iou
from tests.conftest import LOCALIZATION_TINY as TINY


@pytest.mark.slow
def test_training_raises_iou_and_writes_every_metric(trained_localization_run):
    _, result = trained_localization_run
    first, last = result.history[0], result.history[-1]
    assert last["val_iou"] > first["val_iou"] + 0.1  # measured: 0.33 -> 0.52
    assert last["val_iou"] > 0.4 and last["val_obj_acc"] > 0.9
    assert last["train_loss"] < first["train_loss"]
    with open(result.out_dir / "metrics.csv", newline="") as f:
        header = next(csv.reader(f))
    for split in ("train", "val"):
        assert {f"{split}_{m}" for m in ("loss", "acc", "obj_acc", "cls_acc", "iou")} <= set(
            header)
    assert (result.out_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_eval_json_reports_the_localization_metrics(trained_localization_run, cli):
    _, result = trained_localization_run
    code, out, err = cli("eval", result.out_dir / "best.pt", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["n"] == 200
    assert {"accuracy", "loss", "obj_acc", "cls_acc", "iou"} <= set(report)
    assert report["iou"] == pytest.approx(max(r["val_iou"] for r in result.history
                                              if r["val_acc"] == report["accuracy"]))
    code, out, _ = cli("eval", result.out_dir / "best.pt")
    assert code == 0 and "obj_acc" in out and "iou" in out


@pytest.mark.slow
def test_predict_draws_the_box_where_the_digit_is(trained_localization_run, cli, tmp_path):
    config, result = trained_localization_run
    val = build_data(load_config(config).data).splits["val"]
    objects = torch.nonzero(val.labels[:, 0] > 0).flatten()[:8]
    paths = []
    for i in objects.tolist():
        paths.append(tmp_path / f"canvas{i}.png")
        Image.fromarray(val.images[i, 0].numpy()).save(paths[-1])
    code, out, err = cli("predict", result.out_dir / "best.pt", *paths, "--out",
                         tmp_path / "drawn", "--json")
    assert code == 0, err
    predictions = json.loads(out)
    boxes = torch.tensor([p["box"] for p in predictions])
    assert box_iou(boxes, val.labels[objects, 1:5]).mean() > 0.35
    assert sum(p["object"] for p in predictions) >= 6
    for p in predictions:
        drawn = np.asarray(Image.open(p["out"]))
        assert drawn.shape == (256, 256, 3)  # 32 px enlarged 8×
        assert (drawn == BOX_COLOUR).all(axis=2).any() == p["object"]


def _fixed_checkpoint(tmp_path, write_config, *, p_c_bias, box):
    """A model whose head ignores the image and says: p_c = sigmoid(bias), `box`, class 3."""
    config = {**TINY, "model": {"input": [1, 64, 64], "layers": [
        ["Flatten"], ["LocalizationHead", 10]]}}
    cfg = load_config(write_config(config))
    model = build_model(cfg)
    head = model[1]
    with torch.no_grad():
        for linear in (head.objectness, head.box, head.classes):
            linear.weight.zero_()
        head.objectness.bias.fill_(p_c_bias)
        head.box.bias.copy_(torch.logit(torch.tensor(box)))
        head.classes.bias.copy_(torch.arange(10) == 3).mul_(4.0)
    path = tmp_path / "fixed.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": config_to_dict(cfg),
                           "classes": [f"digit{d}" for d in range(10)], "mean": [0.1307],
                           "std": [0.3081]})
    return path


def test_predict_draws_the_predicted_box_on_the_image(tmp_path, write_config, cli):
    box = [0.25, 0.5, 0.5, 0.25]  # x, y, w, h: pixels [16, 48) × [32, 48) of a 64×64 image
    checkpoint = _fixed_checkpoint(tmp_path, write_config, p_c_bias=3.0, box=box)
    Image.fromarray(np.full((64, 64), 40, dtype=np.uint8)).save(tmp_path / "grey.png")
    code, out, err = cli("predict", checkpoint, tmp_path / "grey.png", "--out",
                         tmp_path / "drawn", "--json")
    assert code == 0, err
    (result,) = json.loads(out)
    assert result["object"] and result["class"] == "digit3"
    assert result["p_object"] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item(), abs=1e-4)
    assert result["box_pixels"] == pytest.approx([16, 32, 32, 16], abs=0.01)
    drawn = np.asarray(Image.open(tmp_path / "drawn" / "grey.png"))
    red = (drawn == BOX_COLOUR).all(axis=2)  # 64 px enlarged 4×: the box is [64, 192) × [128, 192)
    assert red[128:192, 64].all() and red[128:192, 191].all()  # left and right edges
    assert red[191, 64:192].all()  # bottom edge (the label sits on the top one)
    assert not red[140:180, 80:176].any()  # the inside is left alone
    assert not red[126:, :60].any() and not red[126:, 196:].any()  # nothing beside the box
    assert red[90:126, 64:].any()  # the label, in the box's colour, just above it
    code, out, _ = cli("predict", checkpoint, tmp_path / "grey.png")
    assert code == 0 and "digit3 (0." in out and "x 16.0 y 32.0 w 32.0 h 16.0 px" in out


def test_predict_says_nothing_when_p_c_is_low(tmp_path, write_config, cli):
    checkpoint = _fixed_checkpoint(tmp_path, write_config, p_c_bias=-3.0, box=[0.2] * 4)
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(tmp_path / "black.png")
    code, out, err = cli("predict", checkpoint, tmp_path / "black.png", "--out",
                         tmp_path / "drawn")
    assert code == 0, err
    assert "black.png: nothing (p_c 0.05)" in out
    drawn = np.asarray(Image.open(tmp_path / "drawn" / "black.png"))
    assert drawn.shape == (260, 390, 3)  # enlarged 13× so the short side is at least 256
    assert not (drawn == BOX_COLOUR).all(axis=2).any()
    assert drawn[:40, :200].max() > 0  # the "nothing" label, top left


def test_predict_errors(tmp_path, write_config, cli):
    checkpoint = _fixed_checkpoint(tmp_path, write_config, p_c_bias=0.0, box=[0.2] * 4)
    code, _, err = cli("predict", checkpoint, tmp_path / "none.png")
    assert code == 2 and "none.png: image not found" in err
    (tmp_path / "bad.png").write_bytes(b"nope")
    code, _, err = cli("predict", checkpoint, tmp_path / "bad.png")
    assert code == 2 and "bad.png: cannot decode image" in err
    classifier = tmp_path / "classifier.pt"
    save_checkpoint(classifier, {"model": {}, "config": {"model": {"input": [1, 8, 8],
                                                             "layers": [["Flatten"]]}}})
    code, _, err = cli("predict", classifier, tmp_path / "bad.png", "--out", tmp_path / "drawn")
    assert code == 2 and "--out: draws boxes of localization checkpoints" in err


def test_curves_and_epoch_line_follow_the_task_metrics(tmp_path):
    from cnnkit.tasks.localization import Localization
    from cnnkit.training.curves import metric_names, plot_curves
    from cnnkit.training.trainer import _epoch_line

    metrics = Localization.metrics
    history = [{"epoch": e, **{f"{s}_{m}": 0.1 * e for s in ("train", "val") for m in metrics},
                "lr": 0.002, "seconds": 1.0} for e in (1, 2)]
    assert metric_names(history) == list(metrics)
    plot_curves(history, tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").size == (2500, 400)  # one 5-inch panel each
    line = _epoch_line(history[1], 10, metrics)
    assert line.startswith("epoch   2/10  train loss 0.2000 acc 0.2000 obj_acc 0.2000 ")
    assert "val loss 0.2000 acc 0.2000 obj_acc 0.2000 cls_acc 0.2000 iou 0.2000  1.00s" in line
