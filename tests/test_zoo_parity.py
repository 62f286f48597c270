"""Each zoo config builds torchvision's model: same state_dict keys and shapes, strict load of
torchvision's weights, the same module tree, same parameter count, equal eval-mode outputs.

Keys, shapes, counts and module trees are compared on the meta device, for every config. The
trees are compared by `repr`, which shows every module's class and arguments in order (each
conv's kernel, stride and padding, each ReLU, pool and BatchNorm where it sits). Outputs need
real tensors; they are compared for the smallest config of each kind of forward pass:
AlexNet for the `features`, `avgpool`, `flatten`, `classifier` path that VGG shares (a VGG's
`features` and `classifier` are plain `nn.Sequential`s of torch layers, so with an equal tree
and equal weights they compute the same function), GoogLeNet, and ResNet-18 for the ResNet
path (cnnkit's BasicBlock and Bottleneck compute torchvision's outputs: tests/test_blocks.py).

BatchNorm statistics are randomized in torchvision's model before its weights are copied, so
the outputs also check that each BatchNorm sits where torchvision's does.
"""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from cnnkit.config import load_config
from cnnkit.models.builder import NetworkOutput, build_model
from tests.conftest import CONFIGS, ZOO

# torchvision's counts, as in its weight metadata (googlenet: with the two auxiliary heads)
PARAMS = dict(alexnet=61_100_840, vgg19=143_667_240, vgg16_bn=138_365_992,
              googlenet=13_004_888, resnet18=11_689_512, resnet50=25_557_032,
              resnet152=60_192_808)


def torchvision_model(name: str) -> nn.Module:
    if name == "googlenet":
        return tvm.googlenet(aux_logits=True, init_weights=False)
    return getattr(tvm, name)()


def _randomize_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ZOO)
def test_zoo_config_is_torchvisions_model(name, meta_zoo):
    ours = meta_zoo(name)
    with torch.device("meta"):
        theirs = torchvision_model(name)
    assert _shapes(ours) == _shapes(theirs)
    n_params = sum(p.numel() for p in ours.parameters())
    assert n_params == sum(p.numel() for p in theirs.parameters())
    assert n_params == PARAMS.get(name, n_params)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    for child, module in theirs.named_children():
        assert repr(ours.get_submodule(child)) == repr(module), child
    if name != "googlenet":  # its aux heads are taps, run where torchvision's forward runs them
        ours_order = [child for child, _ in ours.named_children() if child != "flatten"]
        assert ours_order == [child for child, _ in theirs.named_children()]


def _real_pair(name: str, meta_zoo) -> tuple[nn.Module, nn.Module]:
    """torchvision's model with random BatchNorm statistics, and ours holding its weights
    (built on meta, then given memory: its own init would only be overwritten)."""
    torch.manual_seed(0)
    theirs = torchvision_model(name)
    _randomize_bn(theirs)
    ours = meta_zoo(name).to_empty(device="cpu")
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


@pytest.mark.parametrize("name", ["alexnet", "resnet18"])
def test_zoo_config_computes_torchvisions_outputs(name, meta_zoo):
    ours, theirs = _real_pair(name, meta_zoo)
    x = torch.randn(2, 3, 64, 64)  # small: every zoo model takes 64×64 (AlexNet needs 63)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))


def test_googlenet_is_torchvisions_in_eval_and_with_its_aux_heads_in_training(meta_zoo):
    """In training, the taps see the tensors torchvision's aux1 and aux2 see, and consume the
    random stream in the same order, so even the dropout masks agree."""
    ours, theirs = _real_pair("googlenet", meta_zoo)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))
    torch.manual_seed(1)
    out = ours.train()(x)
    torch.manual_seed(1)
    ref = theirs.train()(x)
    assert isinstance(out, NetworkOutput) and len(out.aux) == 2
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.aux[0], ref.aux_logits1)
    torch.testing.assert_close(out.aux[1], ref.aux_logits2)


def test_googlenet_without_aux_heads_loads_torchvisions_headless_weights():
    with torch.device("meta"):
        ours = build_model(load_config(CONFIGS / "googlenet.yaml", ["model.aux_heads=false"]))
        theirs = tvm.googlenet(aux_logits=False, init_weights=False)
    assert _shapes(ours) == _shapes(theirs)
    assert sum(p.numel() for p in ours.parameters()) == 6_624_904
