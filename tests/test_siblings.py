"""Inference beside training (issue 22): `cnnkit eval` scores with the training loop's own
evaluation pass, a command parses and validates its config once, and eval's --print-config,
--tta and averaged checkpoints work on class-folder runs as on digit runs."""

from __future__ import annotations

import json

import pytest
import yaml

import cnnkit.config
from cnnkit.checkpoint import load_checkpoint
from cnnkit.schema import Config
from cnnkit.training.trainer import train
from tests.conftest import SMALL_CONV
from tests.imagefiles import write_class_folders

FOLDERS = {  # 3 classes of 16×16 colour images; EMA on, so eval must pick the EMA weights
    "model": {"input": [3, 16, 16], "layers": [["Conv2d", 3, 4, 3], ["BatchNorm2d"], ["ReLU"],
                                               ["Flatten"], ["Linear", 3]]},
    "data": {"name": "imagefolder", "image_size": 16, "workers": 0},
    "train": {"batch_size": 4, "epochs": 2, "optimizer": "sgd", "lr": 0.05,
              "ema_decay": 0.9},
}


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """(run directory, RunResult) of a class-folder run: 2 epochs, 12 images, EMA kept."""
    root = tmp_path_factory.mktemp("folders")
    data = write_class_folders(root / "data", classes=("cat", "dog", "owl"),
                               counts={"train": 4, "val": 3})
    config = {**FOLDERS, "data": {**FOLDERS["data"], "root": str(data)}}
    path = root / "folders.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return root / "run", train(path, out_dir=root / "run", quiet=True)


@pytest.fixture(params=["digits", "folders"])
def run_dir(request, trained_run, folder_run):
    return trained_run[1].out_dir if request.param == "digits" else folder_run[0]


def _best_row(run_dir, history):
    epoch = load_checkpoint(run_dir / "best.pt")["epoch"]
    return next(row for row in history if row["epoch"] == epoch)


@pytest.mark.parametrize("kind", ["digits", "folders"])
def test_eval_of_best_pt_prints_the_final_validation(kind, trained_run, folder_run, cli):
    """Same weights (the EMA's on the folder run), same split, same pass, same precision and
    memory format: the numbers of metrics.csv's best row, to the last digit."""
    run_dir, result = (trained_run[1].out_dir, trained_run[1]) if kind == "digits" \
        else folder_run
    code, out, err = cli("eval", run_dir / "best.pt", "--json")
    assert code == 0, err
    scored, row = json.loads(out), _best_row(run_dir, result.history)
    assert scored["weights"] == ("ema" if kind == "folders" else "raw")
    assert scored["accuracy"] == row["val_acc"] and scored["loss"] == row["val_loss"]
    assert scored["balanced_acc"] == row["val_balanced_acc"]
    assert scored["macro_f1"] == row["val_macro_f1"]


def test_eval_print_config_is_the_checkpoints_config_with_set(run_dir, cli):
    code, out, err = cli("eval", run_dir, "--print-config", "--set", "train.batch_size=7")
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["train"]["batch_size"] == 7
    assert printed["data"]["name"] == yaml.safe_load((run_dir / "config.yaml").read_text()
                                                     )["data"]["name"]


def test_tta_and_averaged_checkpoints_score_every_kind_of_classifier(run_dir, cli):
    code, out, err = cli("eval", run_dir, "--tta", "--json")
    assert code == 0, err
    tta = json.loads(out)
    assert tta["tta_views"] == 7 and 0 <= tta["accuracy"] <= 1
    code, out, err = cli("eval", run_dir / "best.pt", run_dir / "last.pt", "--json")
    assert code == 0, err
    both = json.loads(out)
    assert both["n"] == tta["n"] and len(both["members"]) == 2
    code, out, err = cli("eval", run_dir / "best.pt", run_dir / "last.pt")
    assert code == 0 and "2 checkpoints averaged" in out


@pytest.fixture
def counted(monkeypatch):
    """Counts of YAML files read, configs parsed (the raw mapping into a Config) and
    validate() runs, however the command reaches them."""
    counts = {"yaml": 0, "parse": 0, "validate": 0}
    read, build, check = (cnnkit.config._read_yaml, cnnkit.config._build_dataclass,
                          cnnkit.config.validate)

    def read_yaml(*args, **kwargs):
        counts["yaml"] += 1
        return read(*args, **kwargs)

    def build_dataclass(cls, *args, **kwargs):
        counts["parse"] += cls is Config  # the root; its sections recurse through here too
        return build(cls, *args, **kwargs)

    def validate(cfg):
        counts["validate"] += 1
        return check(cfg)

    monkeypatch.setattr(cnnkit.config, "_read_yaml", read_yaml)
    monkeypatch.setattr(cnnkit.config, "_build_dataclass", build_dataclass)
    monkeypatch.setattr(cnnkit.config, "validate", validate)
    return counts


def test_one_parse_and_one_validation_per_command(counted, cli, write_config, tmp_path,
                                                  trained_run):
    config = write_config({**SMALL_CONV, "data": {"name": "mnist-sample", "train_size": 100,
                                                  "val_size": 50}})
    code, _, err = cli("train", config, "--out", tmp_path / "run", "--quiet",
                       "--set", "train.epochs=1")
    assert code == 0, err
    assert counted == {"yaml": 1, "parse": 1, "validate": 1}, "train"
    run_dir = trained_run[1].out_dir
    for command in (["eval", run_dir], ["eval", run_dir, "--set", "train.batch_size=50"],
                    ["predict", run_dir, "--device", "cpu", tmp_path / "digit.png"]):
        if command[0] == "predict":
            from PIL import Image

            Image.new("L", (28, 28)).save(tmp_path / "digit.png")
        counted.update(yaml=0, parse=0, validate=0)
        code, _, err = cli(*command)
        assert code == 0, err
        assert counted == {"yaml": 0, "parse": 1, "validate": 1}, command
