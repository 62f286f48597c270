"""The zoo configs on a tiny class-folder dataset written here (2 classes, 16 small images).

The configs are used as shipped, changed only by the `--set` lines a user would write for a
small dataset: the input size, the 2-class head, a small batch and one epoch. Every config
takes those lines and runs one training step's graph on the meta device (forward, the task's
loss, backward, optimizer step); one config of each kind of forward pass (tests/
test_zoo_parity.py) trains end to end through the CLI, then checkpoints, evaluates and
predicts: the training loop treats every model alike, so the VGGs and deeper ResNets would
repeat it at up to 1.1 GB per checkpoint.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from cnnkit.config import load_config
from cnnkit.models.builder import NetworkOutput, build_model
from cnnkit.tasks import build_task
from cnnkit.training.optim import build_optimizer
from tests.conftest import CONFIGS, ZOO, zoo_family
from tests.imagefiles import write_class_folders

# AlexNet is slow for its size: 61 M parameters make each checkpoint (weights + momentum) 490 MB
# GoogLeNet's three heads through the whole CLI: 3 s; in the whole suite (CI), not -m 'not slow'
TRAINED = [pytest.param("googlenet", marks=pytest.mark.slow), "resnet18",
           pytest.param("alexnet", marks=pytest.mark.slow)]

# the smallest input each family takes: AlexNet's last pooling needs 3×3 left at 64×64
SIZE = dict(alexnet=64, vgg=32, googlenet=32, resnet=32)
HEAD = dict(alexnet=["model.layers.classifier.6.2=2"], vgg=["model.layers.classifier.6.2=2"],
            resnet=["model.layers.fc.2=2"],
            googlenet=["model.layers.fc.2=2", "model.layers.aux1.2=2", "model.layers.aux2.2=2"])


def small_run_sets(name: str, root) -> list[str]:
    size = SIZE[zoo_family(name)]
    return [f"data.root={root}", f"data.image_size={size}", f"model.input=[3,{size},{size}]",
            "data.workers=0", "train.batch_size=4", "train.epochs=1", "train.lr=0.001",
            *HEAD[zoo_family(name)]]


def small_run_overrides(name: str, root) -> list[str]:
    return [arg for item in small_run_sets(name, root) for arg in ("--set", item)]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_class_folders(tmp_path_factory.mktemp("zoo") / "data")


@pytest.fixture
def run(tmp_path):
    """The run directory, deleted after the test: AlexNet's checkpoints are 490 MB each."""
    yield tmp_path / "run"
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


@pytest.mark.parametrize("name", ZOO)
def test_zoo_config_takes_the_small_data_overrides_and_steps(name, tiny_folder):
    cfg = load_config(CONFIGS / f"{name}.yaml", small_run_sets(name, tiny_folder))
    size = SIZE[zoo_family(name)]
    assert (cfg.data.root, cfg.data.image_size, cfg.train.batch_size) == (str(tiny_folder),
                                                                          size, 4)
    with torch.device("meta"):  # shapes and gradients, no weights
        model = build_model(cfg)
    assert model.input_shape == (3, size, size) and model.output_shape == (2,)
    task = build_task(cfg)
    task.check(model.output_shape, 2, source=cfg.source)
    output = model.train()(torch.empty(4, 3, size, size, device="meta"))
    heads = [output.logits, *output.aux] if isinstance(output, NetworkOutput) else [output]
    assert [tuple(h.shape) for h in heads] == [(4, 2)] * (3 if name == "googlenet" else 1)
    task.loss(output, torch.zeros(4, dtype=torch.long, device="meta")).backward()
    for path, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.shape == parameter.shape, path
    build_optimizer(model, cfg.train).step()


@pytest.mark.parametrize("name", TRAINED)
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
