"""Each zoo config builds torchvision's model: same state_dict keys and shapes, strict load of
torchvision's weights, equal eval-mode outputs, same parameter count.

BatchNorm statistics are randomized in torchvision's model before its weights are copied, so
the outputs also check that each BatchNorm sits where torchvision's does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from cnnkit.config import load_config
from cnnkit.models.builder import NetworkOutput, build_model

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# torchvision's counts, as in its weight metadata (googlenet: with the two auxiliary heads)
PARAMS = dict(alexnet=61_100_840, vgg19=143_667_240, vgg16_bn=138_365_992,
              googlenet=13_004_888, resnet18=11_689_512, resnet50=25_557_032,
              resnet152=60_192_808)

SLOW = pytest.mark.slow
ZOO = ["alexnet", "googlenet", "resnet18", "resnet34", "resnet50",
       pytest.param("resnet101", marks=SLOW), pytest.param("resnet152", marks=SLOW),
       *(pytest.param(f"vgg{d}{bn}", marks=SLOW) for bn in ("", "_bn") for d in (11, 13, 16, 19))]


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
def test_zoo_config_is_torchvisions_model(name):
    torch.manual_seed(0)
    ours = build_model(load_config(CONFIGS / f"{name}.yaml"))
    theirs = torchvision_model(name)
    _randomize_bn(theirs)
    assert _shapes(ours) == _shapes(theirs)
    n_params = sum(p.numel() for p in ours.parameters())
    assert n_params == sum(p.numel() for p in theirs.parameters())
    assert n_params == PARAMS.get(name, n_params)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)  # small: every zoo model takes 64×64 (AlexNet needs 63)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x))


def test_googlenet_aux_heads_are_torchvisions_in_training():
    """The taps see the tensors torchvision's aux1 and aux2 see, and consume the random stream
    in the same order, so even the dropout masks agree."""
    torch.manual_seed(0)
    ours = build_model(load_config(CONFIGS / "googlenet.yaml"))
    theirs = torchvision_model("googlenet")
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    out = ours.train()(x)
    torch.manual_seed(1)
    ref = theirs.train()(x)
    assert isinstance(out, NetworkOutput) and len(out.aux) == 2
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.aux[0], ref.aux_logits1)
    torch.testing.assert_close(out.aux[1], ref.aux_logits2)


def test_googlenet_without_aux_heads_loads_torchvisions_headless_weights():
    ours = build_model(load_config(CONFIGS / "googlenet.yaml", ["model.aux_heads=false"]))
    theirs = tvm.googlenet(aux_logits=False, init_weights=False)
    assert _shapes(ours) == _shapes(theirs)
    assert sum(p.numel() for p in ours.parameters()) == 6_624_904
