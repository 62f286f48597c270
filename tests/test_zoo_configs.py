"""The zoo configs' data and train sections, `--set` into layer lists, and `model.init`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cnnkit.config import config_from_dict, load_config
from cnnkit.errors import ConfigError
from cnnkit.models.builder import build_model
from cnnkit.models.init import INITS
from tests.conftest import CONFIGS, ZOO


@pytest.mark.parametrize("name", ZOO)
def test_zoo_configs_train_on_class_folders_with_a_reference_recipe(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert (cfg.data.name, cfg.data.root, cfg.data.image_size) == ("imagefolder",
                                                                    "data/imagenet", 224)
    assert cfg.model.input == [3, 224, 224]
    assert (cfg.train.optimizer, cfg.train.momentum, cfg.train.weight_decay) == ("sgd", 0.9, 1e-4)
    assert cfg.train.lr == (0.1 if name.startswith(("resnet", "googlenet")) else 0.01)
    assert cfg.model.init == next(i for i in ("vgg", "resnet", "googlenet", "default")
                                  if name.startswith(i) or i == "default")


def test_set_reaches_into_layer_lists():
    cfg = load_config(CONFIGS / "vgg11.yaml", ["model.layers.classifier.6.2=10",
                                               "model.layers.features.0=[Conv2d, 3, 64, 5]"])
    assert cfg.model.layers["classifier"][6] == ["Linear", 4096, 10]
    assert cfg.model.layers["features"][0] == ["Conv2d", 3, 64, 5]


@pytest.mark.parametrize(("item", "message"), [
    ("model.layers.classifier.7=[ReLU]", "model.layers.classifier is a list of 7 items; "
                                         "expected an index 0 to 6, found '7'"),
    ("model.layers.classifier.last.2=10", "found 'last'"),
    ("model.layers.classifier.6.2.1=10",
     r"model.layers.classifier.6.2 is 'num_classes' \(str\), not a section"),
])
def test_set_into_a_list_names_bad_indices(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(CONFIGS / "vgg11.yaml", [item])


def test_init_names_are_checked():
    with pytest.raises(ConfigError, match="model.init: expected one of default, resnet, vgg, "
                                          "googlenet, found 'kaiming'"):
        load_config(CONFIGS / "vgg11.yaml", ["model.init=kaiming"])
    assert list(INITS) == ["default", "vgg", "resnet", "googlenet"]


def _layers(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


SMALL = {"input": [3, 16, 16], "layers": {
    "stem": [["Conv2d", 3, 512, 3], ["BatchNorm2d", 512], ["ReLU"]],
    "block": ["BasicConv2d", 512, 64, {"kernel_size": 1}],
    "head": [["AdaptiveAvgPool2d", 1], ["Flatten"], ["Linear", 64, 1024], ["Linear", 1024, 10]]}}


def small(init: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(config_from_dict({"model": {**SMALL, "init": init}}))


def test_vgg_init_is_torchvisions():
    model = small("vgg")
    for linear in _layers(model.head, nn.Linear):
        assert linear.bias.abs().max() == 0
        assert linear.weight.std().item() == pytest.approx(0.01, rel=0.05)
    conv = model.stem[0]  # 512 × 3 × 3 × 3: He std sqrt(2 / fan_out), fan_out = 512 × 9
    assert conv.weight.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.05)
    assert conv.bias.abs().max() == 0
    assert small("default").head[2].bias.abs().max() > 0  # PyTorch's uniform bias


def test_resnet_init_is_torchvisions_and_leaves_linear_alone():
    model, default = small("resnet"), small("default")
    assert model.stem[0].weight.std().item() == pytest.approx((2 / (512 * 9)) ** 0.5, rel=0.05)
    assert torch.equal(model.head[2].weight, default.head[2].weight)


def test_googlenet_init_is_torchvisions():
    model = small("googlenet")
    assert model.head[2].weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert model.stem[0].weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_model_init_leaves_blocks_as_they_initialized_themselves():
    assert torch.equal(small("vgg").block.conv.weight, small("default").block.conv.weight)


def test_zoo_init_reaches_the_resnet_stem():
    torch.manual_seed(0)
    model = build_model(load_config(CONFIGS / "resnet18.yaml", ["model.input=[3,32,32]"]))
    stem = model.conv1.weight  # 64 × 3 × 7 × 7, fan_out = 64 × 49
    assert stem.std().item() == pytest.approx((2 / (64 * 49)) ** 0.5, rel=0.1)


def test_vgg19_summary_shows_the_25088_features_and_19_weight_layers(cli):
    with torch.device("meta"):  # shapes and counts without 143 M initialized weights
        code, out, _ = cli("summary", CONFIGS / "vgg19.yaml")
    assert code == 0
    lines = out.splitlines()
    flatten = next(i for i, line in enumerate(lines) if line.startswith("flatten "))
    assert lines[flatten].split()[2] == "25088"
    assert lines[flatten + 1].split()[:4] == ["classifier.0", "Linear", "4096", "102,764,544"]
    assert "Total params:         143,667,240" in out
    assert "Weight layers:        19 (convolution and linear)" in out


def test_resnet50_summary_counts_its_weight_layers(cli):
    with torch.device("meta"):
        code, out, _ = cli("summary", CONFIGS / "resnet50.yaml", "--json")
    summary = json.loads(out)
    # 1 stem conv + 16 bottlenecks × 3 convs + fc = 50, plus 4 shortcut projections
    assert summary["weight_layers"] == 54 and summary["total_params"] == 25_557_032
