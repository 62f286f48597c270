"""Output sizes of sliding-window layers (convolution, pooling) by the course's formula,
``cnnkit.geometry.conv.output_size``, one spatial axis at a time.

The builder infers every layer's output shape by running it on the meta device, which covers
any module; for these layers it also asks this formula, so that an input too small for a
kernel is explained along the axis that fails, in the course's terms, instead of in torch's
words (which differ between convolution and pooling).
"""

from __future__ import annotations

from torch import nn

from cnnkit.geometry.conv import output_size
from cnnkit.geometry.receptive import layer_geometry

_AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.LPPool1d, nn.LPPool2d, nn.LPPool3d)


def window_output(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Spatial output sizes of a conv or pooling layer for one input example C×H×W (C×L,
    C×D×H×W); None for any other module or an input of the wrong rank.

    >>> window_output(nn.Conv2d(3, 64, 11, stride=4, padding=2), (3, 224, 224))  # AlexNet
    (55, 55)
    >>> window_output(nn.MaxPool2d(3, stride=2, ceil_mode=True), (64, 112, 112))  # GoogLeNet
    (56, 56)
    >>> window_output(nn.Conv2d(16, 4, (1, 3)), (16, 5, 2))
    Traceback (most recent call last):
    ...
    ValueError: along width: no output: the kernel spans 3 samples (n_h=3, dilation=1) but \
the padded input has 2 (n_x=2, padding=(0, 0))
    """
    if not isinstance(module, _CONVS + _POOLS):
        return None
    spatial = in_shape[1:]
    if len(spatial) not in _AXES or len(spatial) != _rank(module):
        return None
    return tuple(_axis_output(module, axis, n_x, name)
                 for axis, (n_x, name) in enumerate(zip(spatial, _AXES[len(spatial)])))


def _axis_output(module: nn.Module, axis: int, n_x: int, name: str) -> int:
    kernel, stride, dilation = layer_geometry(module, axis=axis)
    padding = getattr(module, "padding", 0)
    padding = padding if isinstance(padding, str) else _pick(padding, axis)
    ceil = getattr(module, "ceil_mode", False)
    try:
        if not ceil:
            return output_size(n_x, kernel, padding=padding, stride=stride, dilation=dilation)
        # ceil((a) / s) = floor((a + s - 1) / s): as s - 1 more zeros at the end; torch then
        # drops a last window that would start in the right-hand padding.
        n_y = output_size(n_x, kernel, padding=(padding, padding + stride - 1), stride=stride,
                          dilation=dilation)
        return n_y - 1 if (n_y - 1) * stride >= n_x + padding else n_y
    except ValueError as exc:
        raise ValueError(f"along {name}: {exc}") from None


def _rank(module: nn.Module) -> int:
    return int(type(module).__name__[-2])  # Conv2d -> 2, MaxPool1d -> 1


def _pick(value: int | tuple[int, ...], axis: int) -> int:
    return value if isinstance(value, int) else value[axis]
