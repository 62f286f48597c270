"""cnnkit.models.blocks against torchvision: same state_dict keys, strict loading, same outputs.

torchvision's blocks get random BatchNorm statistics before their weights are copied, so the
eval-mode comparison also checks that each BatchNorm sits where torchvision's does.
"""

from __future__ import annotations

import types

import pytest
import torch
import torchvision.models as tvm
import yaml
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.googlenet import BasicConv2d as TVBasicConv2d
from torchvision.models.googlenet import Inception as TVInception
from torchvision.models.googlenet import InceptionAux as TVInceptionAux

from cnnkit.models.blocks import (
    BLOCKS,
    AuxHead,
    BasicBlock,
    BasicConv2d,
    Bottleneck,
    Inception,
    InceptionAux,
    InputTransform,
)
from cnnkit.models.layers import REGISTRY
from tests.conftest import CONFIGS, ZOO, ZOO_FAMILIES


def _randomize_bn(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return module


def assert_same_module(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    """Same state_dict keys in the same order, strict load, equal eval-mode outputs."""
    _randomize_bn(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x.clone()), theirs(x.clone()))


def tv_block(block: type, inplanes: int, planes: int, stride: int = 1, *, groups: int = 1,
             base_width: int = 64) -> nn.Module:
    """The first block of a torchvision stage, downsample made by torchvision's _make_layer."""
    stage = types.SimpleNamespace(inplanes=inplanes, dilation=1, groups=groups,
                                  base_width=base_width, _norm_layer=nn.BatchNorm2d)
    return tv_resnet.ResNet._make_layer(stage, block, planes, 1, stride)[0]


@pytest.mark.parametrize("inplanes, planes, stride", [(16, 16, 1), (16, 16, 2), (8, 16, 1),
                                                      (8, 16, 2)])
def test_basic_block_matches_torchvision(inplanes, planes, stride):
    torch.manual_seed(0)
    ours = BasicBlock(inplanes, planes, stride)
    theirs = tv_block(tv_resnet.BasicBlock, inplanes, planes, stride)
    assert (ours.downsample is None) == (theirs.downsample is None)
    assert_same_module(ours, theirs, torch.randn(2, inplanes, 16, 16))


@pytest.mark.parametrize("inplanes, planes, stride, groups, base_width", [
    (16, 4, 1, 1, 64),  # 16 == 4 * 4: identity shortcut
    (8, 4, 1, 1, 64),  # channels differ: downsample
    (16, 4, 2, 1, 64),  # stride: downsample
    (16, 8, 2, 4, 8),  # ResNeXt-style grouped 3×3
])
def test_bottleneck_matches_torchvision(inplanes, planes, stride, groups, base_width):
    torch.manual_seed(0)
    ours = Bottleneck(inplanes, planes, stride, groups=groups, base_width=base_width)
    theirs = tv_block(tv_resnet.Bottleneck, inplanes, planes, stride, groups=groups,
                      base_width=base_width)
    assert (ours.downsample is None) == (theirs.downsample is None)
    assert_same_module(ours, theirs, torch.randn(2, inplanes, 16, 16))


def _as_ours(block: nn.Module) -> nn.Module:
    """Our block with the constructor arguments torchvision's block was built with."""
    if isinstance(block, tv_resnet.BasicBlock):
        return BasicBlock(block.conv1.in_channels, block.conv1.out_channels, block.stride)
    planes = block.bn3.num_features // Bottleneck.expansion
    groups = block.conv2.groups
    return Bottleneck(block.conv1.in_channels, planes, block.stride, groups=groups,
                      base_width=block.conv2.out_channels // groups * 64 // planes,
                      dilation=block.conv2.dilation[0])


@pytest.mark.parametrize("name, kwargs", [
    ("resnet18", {}), ("resnet34", {}), ("resnet50", {}), ("resnext50_32x4d", {}),
    ("wide_resnet50_2", {}), ("resnet50", {"replace_stride_with_dilation": [False, True, True]}),
])
def test_every_torchvision_resnet_block_has_our_keys_and_shapes(name, kwargs):
    """Downsample made exactly where torchvision's _make_layer makes one (meta device: no
    memory, no init time)."""
    with torch.device("meta"):
        model = getattr(tvm, name)(**kwargs)
        for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
            for theirs in stage:
                ours = _as_ours(theirs)
                assert {k: v.shape for k, v in ours.state_dict().items()} == \
                    {k: v.shape for k, v in theirs.state_dict().items()}


def test_basic_block_rejects_what_torchvision_rejects():
    with pytest.raises(ValueError):
        BasicBlock(8, 8, groups=2)
    with pytest.raises(NotImplementedError):
        BasicBlock(8, 8, dilation=2)


def test_basic_conv2d_matches_torchvision():
    torch.manual_seed(0)
    ours = BasicConv2d(8, 16, kernel_size=3, stride=2, padding=1)
    theirs = TVBasicConv2d(8, 16, kernel_size=3, stride=2, padding=1)
    assert ours.bn.eps == theirs.bn.eps == 0.001
    assert_same_module(ours, theirs, torch.randn(2, 8, 16, 16))


def test_inception_matches_torchvision():
    torch.manual_seed(0)
    ours = Inception(16, 4, 6, 8, 2, 4, 4)
    theirs = TVInception(16, 4, 6, 8, 2, 4, 4)
    assert ours.branch3[1].conv.kernel_size == (3, 3)  # torchvision's "5×5" quirk, kept
    assert_same_module(ours, theirs, torch.randn(2, 16, 16, 16))


def test_inception_aux_matches_torchvision():
    torch.manual_seed(0)
    ours = InceptionAux(16, 10)
    theirs = TVInceptionAux(16, 10)
    assert isinstance(ours, AuxHead)
    assert ours.dropout.p == theirs.dropout.p == 0.7
    assert_same_module(ours, theirs, torch.randn(2, 16, 14, 14))


def test_input_transform_equals_torchvision():
    x = torch.randn(2, 3, 16, 16)
    googlenet = types.SimpleNamespace(transform_input=True)
    expected = tvm.GoogLeNet._transform_input(googlenet, x.clone())
    transform = InputTransform()
    assert list(transform.parameters()) == [] and list(transform.buffers()) == []
    assert torch.equal(transform(x), expected)


def test_init_follows_torchvision():
    torch.manual_seed(0)
    block = Bottleneck(256, 64, 2)
    conv = block.conv2.weight  # fan_out = 64 × 3 × 3: He normal std sqrt(2 / 576)
    assert abs(conv.std().item() / (2 / 576) ** 0.5 - 1) < 0.05
    assert torch.all(block.bn3.weight == 1) and torch.all(block.bn3.bias == 0)
    aux = InceptionAux(64, 10)
    for weight in (aux.conv.conv.weight, aux.fc1.weight):
        assert abs(weight.std().item() / 0.01 - 1) < 0.05
    assert torch.all(aux.conv.bn.weight == 1) and torch.all(aux.conv.bn.bias == 0)


def test_blocks_dict_names_its_classes():
    assert all(name == cls.__name__ and issubclass(cls, nn.Module)
               for name, cls in BLOCKS.items())
    assert AuxHead not in BLOCKS.values()  # a marker, not a layer


def _layer_names(spec) -> list[str]:
    """Every class name in a spec of the layer language (docs/DESIGN.md)."""
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, dict):
        return [n for value in spec.values() for n in _layer_names(value)]
    assert isinstance(spec, list) and spec, f"not a layer, list or mapping: {spec!r}"
    if spec[0] == "Repeat":
        assert len(spec) == 3 and isinstance(spec[1], int), f"bad Repeat: {spec!r}"
        return ["Repeat", *_layer_names(spec[2])]
    if isinstance(spec[0], str):
        return [spec[0]]
    return [n for item in spec for n in _layer_names(item)]


def _known(name: str) -> bool:
    cls = getattr(nn, name, None)
    return name == "Repeat" or name in REGISTRY or (
        isinstance(cls, type) and issubclass(cls, nn.Module))


def test_zoo_configs_are_all_there():
    """tests/conftest.py's ZOO, which the zoo tests go over, is exactly the zoo's files."""
    assert {p.stem for p in CONFIGS.glob("*.yaml")} >= set(ZOO)
    assert {p.stem for p in CONFIGS.glob("*.yaml") if p.stem.startswith(ZOO_FAMILIES)} == \
        set(ZOO) and len(ZOO) == len(set(ZOO))


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_config_uses_known_layers(path):
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    names = _layer_names(raw["model"]["layers"])
    unknown = sorted({n for n in names if not _known(n)})
    assert not unknown, f"{path.name}: not in torch.nn or cnnkit.models.layers.REGISTRY: {unknown}"
