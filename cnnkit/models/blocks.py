"""Blocks whose forward is not a straight line: ResNet's residual blocks, GoogLeNet's parts.

Attribute names equal torchvision's (`layer1.0.conv1`, `inception3a.branch2.1.conv`,
`aux1.fc2`), so torchvision's weight files load with `strict=True` and no remapping;
tests/test_blocks.py loads each torchvision block's state_dict and compares outputs.
Each block initializes itself as torchvision's model would (`reset_parameters`), so a model
built from YAML starts training where torchvision's does.

Nothing is registered globally: `BLOCKS` is the dict that cnnkit.models.layers merges.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1,
            dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                     groups=groups, bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _downsample(inplanes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    """The shortcut projection, under exactly the condition of torchvision's `_make_layer`."""
    if stride == 1 and inplanes == out_planes:
        return None
    return nn.Sequential(conv1x1(inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))


def init_resnet(modules: Iterable[nn.Module]) -> None:
    """torchvision's ResNet init: He normal (fan_out) convs, BatchNorm (and GroupNorm) weight 1
    and bias 0. The blocks run it on their own modules, `model.init: resnet` on the rest."""
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """ResNet-18/34 block: two 3×3 convs plus a shortcut; (B, inplanes, H, W) ->
    (B, planes, H/stride, W/stride).

    Unlike torchvision's, the block makes its own `downsample` (1×1 conv + BatchNorm) when
    `stride != 1 or inplanes != planes`, so a YAML list of blocks needs no shortcut spec.
    The options after `stride` are keyword-only: torchvision's positional order has
    `downsample` between `stride` and `groups`, and a shifted argument would build silently.
    """

    expansion: ClassVar[int] = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *, groups: int = 1,
                 base_width: int = 64, dilation: int = 1) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)
        self.stride = stride
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_resnet(self.modules())

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """ResNet-50/101/152 block: 1×1 reduce, 3×3, 1×1 expand to `planes * 4`, plus a shortcut;
    (B, inplanes, H, W) -> (B, 4 * planes, H/stride, W/stride).

    The stride sits on the 3×3 conv (torchvision's "ResNet v1.5"; the paper puts it on the
    first 1×1). The block makes its own `downsample` when `stride != 1 or inplanes != 4 * planes`.
    """

    expansion: ClassVar[int] = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, *, groups: int = 1,
                 base_width: int = 64, dilation: int = 1) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups  # ResNeXt / wide ResNet widen here
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)
        self.stride = stride
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_resnet(self.modules())

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def init_googlenet(modules: Iterable[nn.Module]) -> None:
    """torchvision's GoogLeNet init: weights ~ N(0, 0.01) truncated to [-2, 2]; BN 1 and 0.
    The blocks run it on their own modules, `model.init: googlenet` on the rest.

    The bounds are absolute, not in units of std, so at std 0.01 nothing is ever truncated;
    kept as torchvision has it. Conv and Linear biases keep PyTorch's default init.
    """
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 0.001) + ReLU, GoogLeNet's unit. `conv_kwargs` go to
    nn.Conv2d: `[BasicConv2d, 3, 64, {kernel_size: 7, stride: 2, padding: 3}]`."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_googlenet(self.modules())

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """GoogLeNet's Inception module: four branches concatenated on channels;
    (B, in_channels, H, W) -> (B, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W).

    The "5×5" branch (branch3) uses a 3×3 conv, as torchvision does: a known torchvision bug
    (https://github.com/pytorch/vision/issues/906) kept there, and here, because its
    pretrained weights have 3×3 kernels in that branch.
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1),  # 3×3: see the docstring
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([branch(x) for branch in branches], 1)


class AuxHead(nn.Module):
    """Marker for auxiliary heads: taps on the main path, recognised with isinstance.

    The contract: a Network runs its children in order; an AuxHead child's output is
    collected (training only) and the main tensor passes through. In eval mode the head is
    skipped. The head's own forward is an ordinary one: main tensor in, logits out.
    """


class InceptionAux(AuxHead):
    """GoogLeNet's auxiliary classifier, tapped after inception4a and inception4d;
    (B, in_channels, H, W) -> (B, num_classes). The pooling is adaptive, to 4×4, so any
    H, W works (at 224×224 input the tap sees 14×14)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)  # 128 channels × 4 × 4
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_googlenet(self.modules())

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))  # (B, 128, 4, 4)
        x = F.relu(self.fc1(torch.flatten(x, 1)), inplace=True)  # (B, 1024)
        return self.fc2(self.dropout(x))


class InputTransform(nn.Module):
    """GoogLeNet's `transform_input`, without parameters or buffers: input normalized with
    ImageNet's mean and std is re-normalized to (x - 0.5) / 0.5, the scale torchvision's
    GoogLeNet weights were trained on. Constants and operations copied from torchvision."""

    def forward(self, x: Tensor) -> Tensor:
        x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x_ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x_ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat((x_ch0, x_ch1, x_ch2), 1)


BLOCKS: dict[str, type[nn.Module]] = dict(
    BasicBlock=BasicBlock,
    Bottleneck=Bottleneck,
    BasicConv2d=BasicConv2d,
    Inception=Inception,
    InceptionAux=InceptionAux,
    InputTransform=InputTransform,
)
