"""Model-wide weight init (`model.init`), as torchvision's model classes run after building.

A config's plain `torch.nn` layers keep PyTorch's per-layer default init; torchvision's VGG,
ResNet and GoogLeNet classes instead loop over all their modules once built. `model.init`
names that loop, so a zoo model built from YAML starts training where torchvision's does.
cnnkit's blocks already initialize themselves like this; the loop covers the layers between.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torch import nn

from cnnkit.models.blocks import BLOCKS, init_googlenet, init_resnet

_BLOCK_TYPES = tuple(BLOCKS.values())


def plain_modules(model: nn.Module) -> Iterator[nn.Module]:
    """Every module outside cnnkit's blocks: those initialized themselves as torchvision does,
    and GoogLeNet's truncated normal costs seconds to draw twice."""
    yield model
    for child in model.children():
        if not isinstance(child, _BLOCK_TYPES):
            yield from plain_modules(child)


def vgg(model: nn.Module) -> None:
    """torchvision's VGG: He normal (fan_out) convs, Linear ~ N(0, 0.01); biases 0, BN 1 and 0."""
    for m in plain_modules(model):
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def resnet(model: nn.Module) -> None:
    """torchvision's ResNet: He normal (fan_out) convs, BN 1 and 0; Linear keeps its default."""
    init_resnet(plain_modules(model))


def googlenet(model: nn.Module) -> None:
    """torchvision's GoogLeNet: conv and Linear weights ~ N(0, 0.01) truncated at ±2 (absolute
    bounds, so never reached), BN 1 and 0; biases keep PyTorch's default."""
    init_googlenet(plain_modules(model))


# `default` is no loop: every layer keeps the init its constructor gave it
INITS: dict[str, Callable[[nn.Module], None] | None] = dict(
    default=None, vgg=vgg, resnet=resnet, googlenet=googlenet)


def apply_init(model: nn.Module, name: str) -> None:
    """Run the named model-wide init; config checking has already limited `name` to INITS."""
    init = INITS[name]
    if init is not None:
        init(model)
