"""The one validation pass (cnnkit/validate.py over cnnkit/schema.py): every range and
cross-key rule fails at load time, as one line naming the config file and the full key path,
before any file is written."""

from __future__ import annotations

import dataclasses
import re

import pytest

from cnnkit.cli import main
from cnnkit.config import load_config
from cnnkit.errors import ConfigError
from cnnkit.schema import Config, ModelConfig, Range
from cnnkit.validate import validate


def _error(path, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("setting", "expected"), [
    ("train.lr=0", "train.lr: expected a number > 0, found 0.0"),
    ("train.lr=-1.0e-3", "train.lr: expected a number > 0, found -0.001"),
    ("train.lr=.nan", "train.lr: expected a finite number, found nan"),
    ("train.weight_decay=-0.1", "train.weight_decay: expected a number >= 0, found -0.1"),
    ("train.momentum=-1", "train.momentum: expected a number >= 0, found -1.0"),
    ("train.epochs=-1", "train.epochs: expected an integer >= 0, found -1"),
    ("train.batch_size=0", "train.batch_size: expected a positive integer, found 0"),
    ("train.log_every=0", "train.log_every: expected a positive integer, found 0"),
    ("train.checkpoint_every_steps=0",
     "train.checkpoint_every_steps: expected a positive number of steps or null, found 0"),
    ("train.grad_clip=0", "train.grad_clip: expected a positive max norm or null, found 0.0"),
    ("train.grad_clip=.inf", "train.grad_clip: expected a positive max norm or null, found inf"),
    ("train.ema_decay=1",
     "train.ema_decay: expected a fraction in (0, 1), or 0 for no average, found 1.0"),
    ("train.ema_decay=-0.5",
     "train.ema_decay: expected a fraction in (0, 1), or 0 for no average, found -0.5"),
    ("train.early_stopping.patience=-1",
     "train.early_stopping.patience: expected an integer >= 0, found -1"),
    ("train.early_stopping.min_delta=-0.01",
     "train.early_stopping.min_delta: expected a number >= 0, found -0.01"),
    ("train.schedule.warmup_epochs=-1",
     "train.schedule.warmup_epochs: expected a number >= 0, found -1.0"),
    ("train.schedule.step_size=0",
     "train.schedule.step_size: expected a positive number of epochs, found 0.0"),
    ("train.schedule.gamma=1.5", "train.schedule.gamma: expected a factor in (0, 1], found 1.5"),
    ("train.schedule.min_lr=-1", "train.schedule.min_lr: expected a number >= 0, found -1.0"),
    ("train.schedule.pct_start=1",
     "train.schedule.pct_start: expected a fraction in (0, 1), found 1.0"),
    ("train.schedule.div_factor=0.5",
     "train.schedule.div_factor: expected a number >= 1, found 0.5"),
    ("train.schedule.final_div_factor=0",
     "train.schedule.final_div_factor: expected a number >= 1, found 0.0"),
    ("train.schedule.milestones=[1, -2]",
     "train.schedule.milestones.1: expected a number >= 0, found -2.0"),
    ("train.lr_groups=[{modules: [0], lr: 0}]",
     "train.lr_groups.0.lr: expected a number > 0, found 0.0"),
    ("data.train_size=0", "data.train_size: expected an integer >= 1, found 0"),
    ("data.val_size=-1", "data.val_size: expected an integer >= 0, found -1"),
    ("data.std=[.nan]", "data.std.0: expected a finite number, found nan"),
    ("data.std=[0.3, 0]", "data.std.1: expected a number > 0, found 0.0"),
    ("data.mean=[.inf]", "data.mean.0: expected a finite number, found inf"),
    ("data.augment.translate=1.5",
     "data.augment.translate: expected a fraction in [0, 1], found 1.5"),
    ("data.augment.rotate=181", "data.augment.rotate: expected degrees in [0, 180], found 181.0"),
    ("data.augment.scale=1", "data.augment.scale: expected a fraction in [0, 1), found 1.0"),
    ("data.augment.crop_padding=-1", "data.augment.crop_padding: expected pixels >= 0, found -1"),
    ("data.augment.cutout=-1", "data.augment.cutout: expected a side in pixels >= 0, found -1"),
    ("data.augment.cutout=29",
     "data.augment.cutout: expected a side in pixels from 0 to 28, found 29"),
    ("model.aux_weight=-1", "model.aux_weight: expected a number >= 0, found -1.0"),
    ("task.box_weight=.nan", "task.box_weight: expected a finite number, found nan"),
    ("task.threshold=1.5", "task.threshold: expected a number in [0, 1], found 1.5"),
    # checks that ran only when the data, the model or the task was built
    ("train.label_smoothing=1",
     "train.label_smoothing: expected a fraction in [0, 1), found 1.0"),
    ("data.localization.empty=1.0",
     "data.localization.empty: expected a share in [0, 1), found 1.0"),
    ("data.localization.noise=-1", "data.localization.noise: expected a std >= 0, found -1.0"),
    ("data.localization.size=0",
     "data.localization.size: expected a positive size in pixels, found 0"),
    ("data.localization.channels=2",
     "data.localization.channels: expected one of 1, 3, found 2 (int)"),
    ("data.localization.channels=true",
     "data.localization.channels: expected one of 1, 3, found True (bool)"),
    ("data.image_size=0", "data.image_size: expected a positive size in pixels, found 0"),
    ("data.workers=-1", "data.workers: expected 0 or more processes, found -1"),
    ("data.train_per_class=0", "data.train_per_class: expected an integer >= 1, found 0"),
    ("model.input=[0, 28, 28]",
     "model.input: expected 1 to 3 positive sizes (C, H, W), found [0, 28, 28]"),
    ("model.input=[]", "model.input: expected 1 to 3 positive sizes (C, H, W), found []"),
    ("model.input=[1, 1, 28, 28]",
     "model.input: expected 1 to 3 positive sizes (C, H, W), found [1, 1, 28, 28]"),
    # what torch cannot hold fails here, not inside Adam or torch.manual_seed after the start
    ("train.lr=1.0e39",
     "train.lr: expected a number of size at most 3.4e38 (torch keeps it as float32), "
     "found 1e+39"),
    ("train.seed=100000000000000000000",
     "train.seed: expected an integer that fits in 64 bits, found 100000000000000000000"),
    ("data.localization.seed=-9223372036854775809",
     "data.localization.seed: expected an integer that fits in 64 bits, "
     "found -9223372036854775809"),
])
def test_a_bad_value_names_the_file_and_the_key_path(write_config, setting, expected):
    path = write_config()  # SMALL_CONV: model.input [1, 28, 28], train.lr 0.005
    assert _error(path, [setting]) == f"{path}: {expected}"


@pytest.mark.parametrize(("overrides", "key", "expected"), [
    (["train.optimizer=sgd", "train.nesterov=true", "train.momentum=0"], "train.nesterov",
     "needs train.momentum > 0, found 0.0"),
    (["train.unfreeze_at=2"], "train.unfreeze_at",
     "expected an epoch >= 1 with a non-empty train.freeze, found 2 with freeze []"),
    (["train.freeze=[0]", "train.unfreeze_at=0"], "train.unfreeze_at",
     "expected an epoch >= 1 with a non-empty train.freeze, found 0"),
    (["train.lr_groups=[{modules: [0, 3], lr: 0.1}, {modules: [3], lr: 0.2}]"],
     "train.lr_groups.1.modules", "'3' is already in an earlier group"),
    (["train.schedule.name=multistep"], "train.schedule.milestones",
     "expected a non-empty list of epochs, found []"),
    (["train.schedule.name=cosine", "train.lr=0.1", "train.schedule.min_lr=0.2"],
     "train.schedule.min_lr", "expected a learning rate in [0, train.lr = 0.1], found 0.2"),
    (["train.schedule.name=onecycle", "train.schedule.warmup_epochs=0.5"],
     "train.schedule.warmup_epochs", "onecycle has its own warmup (pct_start)"),
    (["data.name=imagefolder", "data.root=x", "data.train_size=null", "data.val_size=null",
      "data.augment.elastic=34"], "data.augment.elastic",
     "applies to the digit sets' batches on the device, not to imagefolder"),
    (["data.augment.policy=trivialaugment"], "data.augment.policy",
     "applies to class folders (imagefolder), image by image, not to mnist-sample"),
    (["data.augment.random_erasing=0.25"], "data.augment.random_erasing",
     "applies to class folders (imagefolder), image by image, not to mnist-sample"),
    (["data.augment.mix_prob=0.5"], "data.augment.mix_prob",
     "applies to batch mixing, which is off (set data.augment.mixup_alpha or cutmix_alpha > 0)"),
    (["data.name=imagefolder", "data.root=x", "data.train_size=null", "data.val_size=null",
      "data.augment.randaugment_n=3"], "data.augment.randaugment_n",
     "applies to policy randaugment; data.augment.policy is null"),
    (["data.name=imagefolder", "data.root=x", "data.train_size=null", "data.val_size=null",
      "data.augment.crop_scale=[0.5,0.2]"], "data.augment.crop_scale",
     "expected [low, high] with low <= high, found [0.5, 0.2]"),
    (["data.name=mnist-localization", "task.name=localization", "data.train_size=null",
      "data.val_size=null", "data.augment.cutmix_alpha=1.0"], "data.augment.cutmix_alpha",
     "batch mixing makes soft class targets (classification); task is localization "
     "(mnist-localization)"),
    (["data.val_crop=24"], "data.val_crop",
     "resizes class folders (imagefolder) for evaluation; mnist-sample is fed at model.input's "
     "size"),
    (["data.name=imagefolder", "data.root=x", "data.train_size=null", "data.val_size=null",
      "data.val_resize=200", "data.val_crop=224"], "data.val_crop",
     "expected a crop of at most data.val_resize (200) pixels, found 224"),
    (["data.val_size=0", "train.monitor=train_loss", "train.early_stopping.patience=3"],
     "train.early_stopping.patience",
     "3 turns early stopping on, which needs a validation split, but data.val_size is 0"),
    (["data.train_size=null", "data.val_size=null", "data.fold=1"], "data.fold",
     "1 picks a fold, but data.folds is null"),
    (["data.train_size=null", "data.val_size=null", "data.folds=5", "data.fold=5"],
     "data.fold", "expected a fold from 0 to 4 (0-based), found 5"),
    (["data.folds=5"], "data.train_size", "data.folds (5) makes the splits; found 1000"),
    (["data.train_size=null", "data.folds=3"], "data.val_size", "found 300, expected null"),
    (["data.name=mnist-localization", "data.folds=3"], "data.folds",
     "cross-validation folds cut mnist-sample and mnist; mnist-localization has its own"),
    (["data.name=mnist"], "data.root",
     "mnist needs the folder that holds MNIST/raw/ (torchvision's layout), found null"),
    (["data.name=imagefolder", "data.train_size=null", "data.val_size=null"], "data.root",
     "imagefolder needs the folder that holds train/ and val/ (each with one folder per "
     "class), found null"),
    (["data.name=localization-csv"], "data.root",
     "localization-csv needs the folder that holds train.csv and val.csv, found null"),
    (["data.name=imagefolder", "data.root=imgs", "data.val_size=null"], "data.train_size",
     "imagefolder takes its splits from ROOT/train and ROOT/val as they are; found 1000, "
     "expected null"),
    (["data.name=imagefolder", "data.root=imgs", "data.train_size=null"], "data.val_size",
     "as they are; found 300, expected null"),
    (["data.name=mnist-localization", "data.localization.digit_size=[30, 80]"],
     "data.localization.digit_size", "expected [min, max] pixels with 8 <= min <= max <= "
     "data.localization.size (64), found [30, 80]"),
    (["data.name=mnist-localization", "data.localization.digit_size=[20]"],
     "data.localization.digit_size", "found [20]"),
    (["data.name=mnist-localization", "data.localization.digit_size=[4, 20]"],
     "data.localization.digit_size", "found [4, 20]"),
    (["data.name=mnist-localization", "data.localization.digit_size=[30, 20]"],
     "data.localization.digit_size", "found [30, 20]"),
])
def test_cross_key_rules_name_the_file_and_the_key(write_config, overrides, key, expected):
    path = write_config()
    message = _error(path, overrides)
    assert message.startswith(f"{path}: {key}: ") and expected in message


def test_data_rules_apply_to_the_datasets_they_concern(write_config):
    path = write_config()
    assert load_config(path).data.root is None  # mnist-sample and canvases are made in memory
    assert load_config(path, ["data.name=mnist-localization"]).data.root is None
    # canvases' digit sizes say nothing about csv images: no digit_size rule there
    cfg = load_config(path, ["data.name=localization-csv", "data.root=set",
                             "data.localization.size=16", "data.localization.channels=1"])
    assert (cfg.data.localization.size, cfg.data.localization.digit_size) == (16, [20, 44])
    cfg = load_config(path, ["data.name=imagefolder", "data.root=imgs", "data.train_size=null",
                             "data.val_size=null", "data.workers=0", "model.input=null"])
    assert (cfg.data.root, cfg.data.workers, cfg.model.input) == ("imgs", 0, [3, 224, 224])


def _ranged_fields(cls: type, prefix: str = ""):
    """(key path, Range, is a list, is an int) of every field declared with a range."""
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            yield from _ranged_fields(type(default), f"{prefix}{f.name}.")
        elif "range" in f.metadata:
            kind = str(f.type)
            yield f"{prefix}{f.name}", f.metadata["range"], "list" in kind, "int" in kind


def _outside(bounds: Range, is_int: bool):
    """A value just outside `bounds`."""
    if bounds.ge is not None:
        return bounds.ge - 1
    if bounds.gt is not None:
        return bounds.gt
    if bounds.le is not None:
        return bounds.le + 1
    return bounds.lt if is_int else float(bounds.lt)


RANGED = list(_ranged_fields(Config))


@pytest.mark.parametrize(("key", "bounds", "is_list", "is_int"), RANGED,
                         ids=[r[0] for r in RANGED])
def test_every_declared_range_is_enforced(write_config, key, bounds, is_list, is_int):
    value = _outside(bounds, is_int)
    message = _error(write_config(), [f"{key}={[value] if is_list else value}"])
    assert f": {key}{'.0' if is_list else ''}: expected " in message


def test_the_defaults_pass_and_the_ranges_are_found():
    assert validate(Config(ModelConfig(input=[1, 28, 28], layers=[]))).train.lr == 0.005
    assert len(RANGED) >= 30  # else the walk above missed the schema's metadata


def test_val_size_0_reads_train_metrics_and_refuses_early_stopping(write_config):
    path = write_config()
    cfg = load_config(path, ["data.val_size=0"])  # the default val_acc monitor reads train_acc
    assert (cfg.data.val_size, cfg.train.monitor) == (0, "val_acc")
    assert load_config(path, ["data.val_size=0", "train.monitor=train_acc",
                              "train.early_stopping.patience=0"]).data.val_size == 0
    both = _error(path, ["data.val_size=0", "train.early_stopping.patience=2"])
    assert "train.early_stopping.patience" in both and "data.val_size" in both


def test_a_checkpoint_config_is_validated_too():
    from cnnkit.config import config_from_dict

    raw = {"model": {"input": [1, 28, 28], "layers": []}, "train": {"lr": 0}}
    with pytest.raises(ConfigError, match=r"^ckpt.pt: train.lr: expected a number > 0"):
        config_from_dict(raw, source="ckpt.pt")


@pytest.mark.parametrize("override", ["train.lr=0", "train.ema_decay=1", "data.std=[.nan]",
                                      "data.augment.cutout=40", "train.schedule.gamma=0",
                                      "train.early_stopping.patience=-1",
                                      "train.label_smoothing=1", "model.input=[0, 28, 28]",
                                      "data.train_per_class=0", "train.lr=1.0e39",
                                      "train.seed=100000000000000000000"])
def test_cnnkit_train_refuses_before_writing_anything(write_config, tmp_path, capsys, override):
    """These failed only after the run directory (or config.yaml) was written."""
    path = write_config()
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out), "--set", override]) == 2
    assert not out.exists()
    assert sorted(tmp_path.iterdir()) == [path]
    err = capsys.readouterr().err
    assert str(path) in err and override.split("=")[0] in err


def test_a_config_made_or_changed_in_python_is_checked_too(write_config, tmp_path):
    """train() and build_model() take a Config as well as a path; that one skipped the pass."""
    from cnnkit.models.builder import build_model
    from cnnkit.training.trainer import train

    path = write_config()
    cfg = load_config(path)
    cfg.train.label_smoothing = 1.0
    expected = rf"^{re.escape(str(path))}: train.label_smoothing: expected a fraction in \[0, 1\)"
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=expected):
        train(cfg, out_dir=out, quiet=True)
    assert not out.exists()
    with pytest.raises(ConfigError, match=expected):
        build_model(cfg)
    with pytest.raises(ConfigError, match=expected):  # overrides that leave it as it is
        train(cfg, out_dir=out, quiet=True, overrides=("train.epochs=1",))
    cfg.train.label_smoothing, cfg.model.input = 0.1, [1, 28, 0]
    with pytest.raises(ConfigError, match=r"model.input: expected 1 to 3 positive sizes"):
        build_model(cfg)
