"""train.norm_weight_decay and train.bias_weight_decay: optimizer groups by module type, the
start header, and (both null) the groups of before, so an older run's last.pt resumes."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from cnnkit.checkpoint import load_checkpoint
from cnnkit.cli import main
from cnnkit.config import config_from_dict
from cnnkit.models.freeze import decay_counts, param_groups
from cnnkit.schema import TrainConfig

# a 1-epoch mnist_conv run (40 digits, train.weight_decay 0.001) written by cnnkit at commit
# 45e5ab6, before the keys: PYTHONPATH=<45e5ab6 tree> python -m cnnkit train mnist_conv
# --set data.train_size=40 --set data.val_size=20 --set train.epochs=1
# --set train.batch_size=20 --set train.weight_decay=0.001 (best.pt and curves.png left out)
OLD_RUN = Path(__file__).parent / "fixtures" / "run_45e5ab6"


def net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.LayerNorm(4 * 6 * 6), nn.Linear(4 * 6 * 6, 2))


def names_by_decay(model: nn.Module, groups: list[dict]) -> dict:
    name = {id(p): n for n, p in model.named_parameters()}
    return {(g["lr"], g.get("weight_decay")): sorted(name[id(p)] for p in g["params"])
            for g in groups}


def test_both_null_keep_the_groups_of_before():
    model = net()
    groups = param_groups(model, TrainConfig(lr=0.1, weight_decay=1e-4))
    assert [set(g) for g in groups] == [{"params", "lr"}]  # the optimizer's weight_decay
    assert len(groups[0]["params"]) == 8


def test_norm_exempt_as_torchvision_s_recipe():
    model = net()
    cfg = TrainConfig(lr=0.1, weight_decay=1e-4, norm_weight_decay=0.0)
    assert names_by_decay(model, param_groups(model, cfg)) == {
        (0.1, 1e-4): ["0.bias", "0.weight", "5.bias", "5.weight"],
        (0.1, 0.0): ["1.bias", "1.weight", "4.bias", "4.weight"]}
    assert decay_counts(model, cfg) == {1e-4: 4 * 27 + 4 + 144 * 2 + 2, 0.0: 8 + 288}


def test_bias_key_wins_over_norm_and_lr_groups_split_by_decay():
    model = net()
    cfg = config_from_dict({"model": {"layers": []}, "train": {
        "lr": 0.1, "weight_decay": 1e-4, "norm_weight_decay": 0.0, "bias_weight_decay": 1e-5,
        "lr_groups": [{"modules": ["5"], "lr": 0.01}]}}).train
    assert names_by_decay(model, param_groups(model, cfg)) == {
        (0.1, 1e-4): ["0.weight"], (0.1, 1e-5): ["0.bias", "1.bias", "4.bias"],
        (0.1, 0.0): ["1.weight", "4.weight"], (0.01, 1e-5): ["5.bias"],
        (0.01, 1e-4): ["5.weight"]}
    optimizer = torch.optim.SGD(param_groups(model, cfg), lr=0.1, weight_decay=1e-4)
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == [0.0, 1e-5, 1e-5, 1e-4,
                                                                         1e-4]


def test_a_last_pt_from_before_the_keys_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    before = load_checkpoint(run / "last.pt")
    assert main(["resume", str(run), "--quiet", "--set", "train.epochs=2"]) == 0
    after = load_checkpoint(run / "last.pt")
    assert before["epoch"] == 1 and after["epoch"] == 2
    assert len(after["optimizer"]["param_groups"]) == len(before["optimizer"]["param_groups"])
    assert len((run / "metrics.csv").read_text().splitlines()) == 3  # header, 2 epochs


def test_the_start_header_shows_the_decays(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "mnist_conv", "--out", str(out), "--set", "data.train_size=20",
                 "--set", "data.val_size=10", "--set", "train.epochs=0",
                 "--set", "train.weight_decay=0.001", "--set", "train.bias_weight_decay=0"]) == 0
    log = (out / "train.log").read_text()  # mnist_conv: 8 + 16 + 10 biases
    assert "parameters 5,386 (5,386 trainable), weight decay 0.001 on 5,352, 0 on 34" in log
