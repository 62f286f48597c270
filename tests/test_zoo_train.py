"""Every zoo config trains end to end through the CLI on a tiny class-folder dataset written
here (2 classes, 16 small images), then checkpoints, evaluates and predicts.

The configs are used as shipped, changed only by the `--set` lines a user would write for a
small dataset: the input size, the 2-class head, a small batch and one epoch.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.conftest import CONFIGS
from tests.imagefiles import write_class_folders

SLOW = pytest.mark.slow
# AlexNet is slow for its size: 61 M parameters make each checkpoint (weights + momentum) 490 MB
ZOO = ["googlenet", "resnet18", pytest.param("alexnet", marks=SLOW),
       pytest.param("resnet34", marks=SLOW), pytest.param("resnet50", marks=SLOW),
       pytest.param("resnet101", marks=SLOW), pytest.param("resnet152", marks=SLOW),
       *(pytest.param(f"vgg{d}{bn}", marks=SLOW) for bn in ("", "_bn") for d in (11, 13, 16, 19))]

# the smallest input each family takes: AlexNet's last pooling needs 3×3 left at 64×64
SIZE = dict(alexnet=64, vgg=32, googlenet=32, resnet=32)
HEAD = dict(alexnet=["model.layers.classifier.6.2=2"], vgg=["model.layers.classifier.6.2=2"],
            resnet=["model.layers.fc.2=2"],
            googlenet=["model.layers.fc.2=2", "model.layers.aux1.2=2", "model.layers.aux2.2=2"])


def family(name: str) -> str:
    return next(f for f in ("alexnet", "vgg", "googlenet", "resnet") if name.startswith(f))


def small_run_overrides(name: str, root) -> list[str]:
    size = SIZE[family(name)]
    sets = [f"data.root={root}", f"data.image_size={size}", f"model.input=[3,{size},{size}]",
            "data.workers=0", "train.batch_size=4", "train.epochs=1", "train.lr=0.001",
            *HEAD[family(name)]]
    return [arg for item in sets for arg in ("--set", item)]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("zoo") / "data")


@pytest.fixture
def run(tmp_path):
    """The run directory, deleted after the test: VGG's checkpoints are 1.1 GB each."""
    yield tmp_path / "run"
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_config_trains_evaluates_and_predicts(name, tiny_folder, cli, run, tmp_path,
                                                  monkeypatch):
    monkeypatch.setenv("CNNKIT_CACHE_DIR", str(tmp_path / "cache"))
    code, _, err = cli("train", CONFIGS / f"{name}.yaml", "--out", run, "--quiet",
                       *small_run_overrides(name, tiny_folder))
    assert code == 0, err
    checkpoint = torch.load(run / "last.pt", weights_only=True)
    assert checkpoint["classes"] == ["cat", "dog"] and checkpoint["epoch"] == 1
    assert checkpoint["config"]["data"]["name"] == "imagefolder"
    assert json.loads((run / "classes.json").read_text()) == ["cat", "dog"]

    code, out, err = cli("eval", run / "last.pt", "--split", "test", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["n"] == 4 and 0 <= result["accuracy"] <= 1

    images = [tiny_folder / "test" / "cat" / "0.jpg", tiny_folder / "test" / "dog" / "1.png"]
    code, out, err = cli("predict", run / "last.pt", *images, "--top", "2", "--json")
    assert code == 0, err
    predictions = json.loads(out)
    assert [p["image"] for p in predictions] == [str(i) for i in images]
    for p in predictions:
        assert {c["class"] for c in p["top"]} == {"cat", "dog"}
        assert sum(c["probability"] for c in p["top"]) == pytest.approx(1.0, abs=1e-5)
