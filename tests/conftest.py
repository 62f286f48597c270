"""Shared fixtures: small configs written into tmp_path, and the CLI run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
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
