"""Shared fixtures: small configs written into tmp_path, the CLI run in-process, runs trained
once per session, and the zoo (configs/ that are torchvision's ImageNet models) on the meta
device."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
import yaml

from cnnkit.cli import main

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

SMALL_CONV = {
    "model": {
        "input": [1, 28, 28],
        "layers": [["Conv2d", 1, 8, 5], ["ReLU"], ["MaxPool2d", 2], ["Conv2d", 8, 16, 3],
                   ["ReLU"], ["MaxPool2d", 2], ["Flatten"], ["Linear", 10]],
    },
    "data": {"name": "mnist-sample", "train_size": 1000, "val_size": 300},
    "train": {"optimizer": "adam", "lr": 0.005, "batch_size": 100, "epochs": 2},
}


def pytest_configure(config):
    """Under pytest-xdist (`-n 2`, the default in pyproject.toml) each worker is one process:
    one torch thread each, so the workers share the cores instead of 2 × N threads fighting
    over them (measured on 2 cores: 376 s of CPU for the suite with 2 threads a worker)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """A test marked `cuda` skips where torch sees no CUDA device: the one place that decides,
    so `-m cuda` (scripts/gpu_check.sh) selects exactly the tests a GPU machine must run."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def write_config(tmp_path):
    """write_config(dict=SMALL_CONV, name=...) -> path of a YAML file in tmp_path."""

    def write(config: dict | None = None, name: str = "small.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(SMALL_CONV if config is None else config, sort_keys=False))
        return path

    return write


@pytest.fixture
def cli(capsys):
    """cli(*args) -> (exit code, stdout, stderr), running `cnnkit ARGS` in this process."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


# The zoo: every config under configs/ that is one of torchvision's ImageNet models. The one
# list that tests going over the zoo use; test_blocks checks it names exactly these files.
ZOO_FAMILIES = ("alexnet", "vgg", "googlenet", "resnet")
ZOO = ["alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
       "vgg19_bn", "googlenet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def zoo_family(name: str) -> str:
    """'vgg' for vgg16_bn, 'resnet' for resnet50, ..."""
    return next(f for f in ZOO_FAMILIES if name.startswith(f))


@pytest.fixture(scope="session")
def meta_zoo():
    """meta_zoo(name) -> the zoo config's model built on the meta device: shapes, parameter
    counts and module tree without allocating or initializing weights. Each config is built
    once per session (ResNet-152 takes seconds even on meta); each call returns a deep copy,
    which a test may change (hooks, modes, overrides of its layers)."""
    from cnnkit.models.builder import build_model

    built = {}

    def get(name: str):
        if name not in built:
            with torch.device("meta"):
                built[name] = build_model(CONFIGS / f"{name}.yaml")
        return copy.deepcopy(built[name])

    return get


LOCALIZATION_TINY = {
    "model": {"input": [1, 32, 32], "layers": [
        ["Conv2d", 1, 8, 3, {"padding": 1}], ["BatchNorm2d"], ["ReLU"], ["MaxPool2d", 2],
        ["Conv2d", 16, 3, {"padding": 1}], ["BatchNorm2d"], ["ReLU"], ["MaxPool2d", 2],
        ["Flatten"], ["LocalizationHead", 10]]},
    "data": {"name": "mnist-localization", "train_size": 2000, "val_size": 200,
             "localization": {"size": 32, "digit_size": [14, 28]}},
    "task": {"name": "localization", "loss": "bce-ce", "box_loss": "giou"},
    "train": {"optimizer": "adam", "lr": 0.005, "batch_size": 50, "epochs": 5},
}


def _train_once(tmp_path_factory, name: str, config: dict):
    """(config path, RunResult) of a run trained in a session-wide temporary folder."""
    from cnnkit.training.trainer import train

    root = tmp_path_factory.mktemp(name)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, train(path, out_dir=root / "run", quiet=True)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """(config path, RunResult) of SMALL_CONV trained once per session: 2 epochs on 1,000
    digits of the embedded sample, run dir `result.out_dir` with last.pt, best.pt, metrics.csv,
    curves.png. Shared: read it, never write into it or change `result.model`; a test that
    writes (resume, new files) copies it first: shutil.copytree(result.out_dir, tmp_path /
    "run")."""
    return _train_once(tmp_path_factory, "small", SMALL_CONV)


@pytest.fixture(scope="session")
def trained_localization_run(tmp_path_factory):
    """(config path, RunResult) of LOCALIZATION_TINY trained once per session: 5 epochs on
    2,000 32×32 canvases, val IoU about 0.34 -> 0.53 at the default seed (asserted in
    test_localization_run.py). Shared as `trained_run` is."""
    return _train_once(tmp_path_factory, "localization", LOCALIZATION_TINY)


def untimed(history: list[dict]) -> list[dict]:
    """History rows without the columns that time the run (seconds, data_wait), which no
    two runs share: what an exact resume must repeat."""
    return [{k: v for k, v in row.items() if k not in ("seconds", "data_wait")}
            for row in history]


FOLDER_TINY = {
    "model": {"input": [3, 32, 32], "num_classes": "auto", "layers": [
        ["Conv2d", 3, 8, 3, {"padding": 1}], ["BatchNorm2d"], ["ReLU"], ["MaxPool2d", 4],
        ["Flatten"], ["Linear", "num_classes"]]},
    "data": {"name": "imagefolder", "image_size": 32, "workers": 0},
    "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 4, "epochs": 1},
}


@pytest.fixture(scope="session")
def trained_folder_run(tmp_path_factory):
    """(config path, RunResult) of FOLDER_TINY trained once per session for 1 epoch on class
    folders (tests/imagefiles.py: cat, dog; 4 train, 2 val and 2 test images each, in five
    formats) at the config's data.root. Shared as `trained_run` is."""
    from tests.imagefiles import write_class_folders

    photos = write_class_folders(tmp_path_factory.mktemp("folder") / "photos")
    config = copy.deepcopy(FOLDER_TINY)
    config["data"]["root"] = str(photos)
    return _train_once(tmp_path_factory, "folder", config)
