"""Class folders trained the way ImageNet is (issue 25): data.augment built from
torchvision.transforms.v2, FixRes's evaluation size through the checkpoint's record, the
recipe config, and a run with all of it killed and resumed bit for bit."""

from __future__ import annotations

import json
import signal

import pytest
import torch
import yaml
from torchvision.transforms import v2

from cnnkit.checkpoint import load_checkpoint
from cnnkit.cli import main
from cnnkit.config import load_config
from cnnkit.data.transforms import eval_transform, train_transform
from cnnkit.infer.model import load_predictor
from tests.conftest import CONFIGS, untimed
from tests.imagefiles import write_class_folders
from tests.test_crash import Child, launcher, run_to_end  # noqa: F401 (launcher: a fixture)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("folders"),
                               counts={"train": 6, "val": 3})


# TrivialAugment, random erasing, MixUp and CutMix, norm and bias exempt from weight decay,
# FixRes (train at 16, evaluate at a resize of 24 and a crop of 20); dropout for randomness
RECIPE = {
    "model": {"layers": [["Conv2d", 3, 8, 3, {"bias": True}], ["BatchNorm2d", 8], ["ReLU"],
                         ["AdaptiveAvgPool2d", 2], ["Flatten"], ["Dropout", 0.2],
                         ["Linear", 2]]},
    "data": {"name": "imagefolder", "image_size": 16, "val_resize": 24, "val_crop": 20,
             "workers": 0,
             "augment": {"policy": "trivialaugment", "random_erasing": 0.5,
                         "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "crop_scale": [0.25, 1.0]}},
    "train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1.0e-3,
              "norm_weight_decay": 0.0, "bias_weight_decay": 0.0, "label_smoothing": 0.1,
              "batch_size": 4, "epochs": 2, "seed": 5, "device": "cpu",
              "checkpoint_every_steps": 2},
}


def test_train_and_eval_transforms_are_torchvision_s_as_configured(folders):
    cfg = load_config(CONFIGS / "imagenet_resnet50.yaml", [f"data.root={folders}"])
    steps = train_transform(cfg.data, mean=(0.485, 0.456, 0.406)).transforms
    assert [type(t) for t in steps] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip,
                                        v2.TrivialAugmentWide, v2.PILToTensor, v2.RandomErasing]
    assert tuple(steps[0].size) == (176, 176) and steps[-1].p == 0.1
    assert steps[-1].value == [124, 116, 104]  # ImageNet's mean: 0 after normalization
    resize, crop, _ = eval_transform(cfg.data).transforms
    assert list(resize.size) == [232] and list(crop.size) == [224, 224]
    digits = load_config(CONFIGS / "mnist_conv.yaml")
    assert digits.data.augment.hflip is None  # per dataset: off for digits
    policy = load_config(CONFIGS / "resnet18.yaml", [f"data.root={folders}",
                                                     "data.augment.policy=randaugment",
                                                     "data.augment.randaugment_n=3",
                                                     "data.augment.color_jitter=0.4"])
    steps = train_transform(policy.data, mean=(0.5,) * 3).transforms
    assert [type(t) for t in steps] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip,
                                        v2.ColorJitter, v2.RandAugment, v2.PILToTensor]
    assert (steps[3].num_ops, steps[3].magnitude) == (3, 9)


@pytest.mark.slow  # ResNet-50 forward and backward on the CPU: 8 s alone, 45 s on a loaded machine
def test_the_recipe_config_builds_and_trains_one_step(folders):
    """configs/imagenet_resnet50.yaml as written (ResNet-50, TrivialAugment, random erasing,
    MixUp/CutMix, norm exempt from weight decay, EMA, FixRes) on 12 images at 32 px: one
    optimizer step through the trainer's loop, then the val pass at its own crop (no run
    directory: ResNet-50's checkpoints would be most of the time)."""
    from cnnkit.runtime.assemble import assemble
    from cnnkit.runtime.evaluate import evaluate
    from cnnkit.training.ema import build_ema
    from cnnkit.training.loop import Stepper, train_one_epoch
    from cnnkit.training.mixing import build_mix
    from cnnkit.training.optim import build_optimizer, build_scheduler

    cfg = load_config(CONFIGS / "imagenet_resnet50.yaml", [
        f"data.root={folders}", "data.image_size=32", "data.val_resize=48", "data.val_crop=40",
        "data.workers=0", "train.batch_size=12", "train.epochs=1", "model.num_classes=2"])
    model, data, task = assemble(cfg, torch.device("cpu"))
    optimizer = build_optimizer(model, cfg.train)
    assert sorted({g["weight_decay"] for g in optimizer.param_groups}) == [0.0, 2e-5]
    cpu = torch.device("cpu")
    loader = data.loader("train", batch_size=12, shuffle=True, seed=0, device=cpu)
    stepper = Stepper(model, optimizer, build_scheduler(optimizer, cfg.train, steps_per_epoch=1),
                      task, ema=build_ema(model, decay=cfg.train.ema_decay),
                      mix=build_mix(cfg, num_classes=2))
    before = model.fc.weight.detach().clone()
    metrics, _ = train_one_epoch(stepper, loader, epoch=0)
    assert stepper.scheduler.last_epoch == 1 and not torch.equal(before, model.fc.weight)
    val = data.loader("val", batch_size=6, shuffle=False, seed=0, device=cpu)
    assert next(val.batches(0))[0].shape == (6, 3, 40, 40)
    assert 0 <= evaluate(model, val, task).metrics["acc"] <= 1


@pytest.mark.slow  # two class-folder runs in processes of their own, one killed: ~20 s
def test_recipe_run_killed_resumes_bit_for_bit_and_evaluates_at_its_own_crop(folders,
                                                                              tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "data": {**RECIPE["data"],
                                                          "root": str(folders)}}))
    run_to_end(tmp_path, "reference")
    child = Child(tmp_path, "run", CNNKIT_PAUSE_STEP="5")  # inside epoch 2 (3 steps each)
    child.wait_paused()
    child.process.send_signal(signal.SIGKILL)
    assert child.finish()[0] == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 1  # saved after epoch 1
    run_to_end(tmp_path, "run", "--resume")
    a, b = (load_checkpoint(tmp_path / name / "last.pt") for name in ("reference", "run"))
    assert a["epoch"] == b["epoch"] == 2
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert [g["weight_decay"] for g in a["optimizer"]["param_groups"]] == [1e-3, 0.0]
    assert untimed(a["history"]) == untimed(b["history"])

    predictor = load_predictor(tmp_path / "run" / "last.pt")
    record = predictor.preprocessing
    assert (record["height"], record["resize"], record["crop"]) == (16, 24, 20)
    image = next((folders / "val").rglob("*.jpg"))
    assert predictor.inputs([image]).shape == (1, 3, 20, 20)
    # cnnkit eval on the val split gives the val metrics training logged for that epoch:
    # the same resize and crop through the checkpoint
    assert main(["eval", str(tmp_path / "run" / "last.pt"), "--json"]) == 0


def test_eval_json_matches_the_logged_val_metrics(folders, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**RECIPE, "data": {**RECIPE["data"],
                                                          "root": str(folders)},
                                      "train": {**RECIPE["train"], "epochs": 1}}))
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--quiet"]) == 0
    state = load_checkpoint(out / "last.pt")
    capsys.readouterr()
    assert main(["eval", str(out / "last.pt"), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    logged = state["history"][-1]
    assert got["loss"] == pytest.approx(logged["val_loss"], rel=1e-5)
    assert got["accuracy"] == pytest.approx(logged["val_acc"])
    assert got["n"] == 6
