"""Receptive field and jump of CNN layers, in input pixels, along one spatial axis.

Starting from r = j = 1 at the input, a layer with kernel k, stride s and dilation d gives::

    k_eff = d*(k - 1) + 1          # its own input samples one output reads
    r_out = r_in + (k_eff - 1)*j_in  # input pixels one output unit sees
    j_out = j_in * s                 # input pixels between neighbouring output units

Padding moves where a field starts, not its width, so it plays no part.

What the geometry of a module is (``layer_geometry``):

* Conv and pooling layers: their kernel, stride and dilation along ``axis``
  (0 = height, 1 = width for 2-D layers).
* Adaptive pooling: ``GLOBAL``. Its window depends on the input size, which a module does
  not know; for global pooling (output 1×1) every output sees the whole input, and we
  report that for all adaptive pools (VGG's ``AdaptiveAvgPool2d(7)`` after a 224×224 input
  is in fact the identity). Every later layer is then global too.
* Linear layers: ``GLOBAL``. In a CNN they come after Flatten (or global pooling), where
  each output mixes every feature of the map, so it sees all the input that map sees.
* Layers that keep the grid (ReLU, BatchNorm, Dropout, padding, and also Flatten, whose
  features are the units of the map before it, each with that unit's field): None.
* Anything with children is composed from them in registration order, except that
  consecutive children named ``branch*`` are parallel branches (Inception), and children
  named ``downsample``/``shortcut`` run beside the rest (ResNet); parallel paths give the
  widest field. Branch children that differ only by a ``_<number>`` suffix
  (``branch7x7_1``, ``branch7x7_2``, torchvision's Inception v3) run in sequence.
* Upsampling layers (transposed conv, Upsample, PixelShuffle, unpooling...) raise
  ValueError: the recurrence above does not model them.

Operations called inside ``forward`` (``F.max_pool2d`` and the like) are invisible here.
"""

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Final, Literal, NamedTuple, TypeAlias

from torch import nn

GLOBAL: Final = "global"
_SHORTCUT_NAMES: Final = ("downsample", "shortcut")
_BRANCH_PREFIX: Final = "branch"
_STAGE_SUFFIX: Final = re.compile(r"_\d+$")  # branch5x5_1, branch5x5_2: one branch


class Geometry(NamedTuple):
    """One layer's sampling along an axis, in its own input samples."""

    kernel: int
    stride: int
    dilation: int = 1


class Field(NamedTuple):
    """Receptive field and jump after a layer, in input pixels; None for both: global."""

    rf: int | None
    jump: int | None


Effect: TypeAlias = Geometry | Literal["global"] | None


def layer_geometry(module: nn.Module, *, axis: int = 0) -> Effect:
    """Kernel, stride and dilation of a module along ``axis``; GLOBAL; or None if it keeps the grid.

    >>> layer_geometry(nn.Conv2d(3, 8, kernel_size=(3, 5), stride=(1, 2), dilation=2), axis=1)
    Geometry(kernel=5, stride=2, dilation=2)
    >>> layer_geometry(nn.MaxPool2d(2))
    Geometry(kernel=2, stride=2, dilation=1)
    >>> layer_geometry(nn.ReLU()) is None, layer_geometry(nn.AdaptiveAvgPool2d(1))
    (True, 'global')
    >>> layer_geometry(nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.Conv2d(1, 1, 3, stride=2)))
    Geometry(kernel=5, stride=2, dilation=1)
    """
    for cls in type(module).__mro__:
        if cls in _UNSUPPORTED:
            raise ValueError(
                f"{type(module).__name__} upsamples or samples irregularly, which the "
                f"receptive-field recurrence does not model; supported: {_supported_names()}"
            )
        if cls in _LEAF_RULES:
            return _LEAF_RULES[cls](module, axis)
    if next(module.children(), None) is not None:
        return _composite_geometry(module, axis)
    return None


def receptive_fields(modules: Iterable[nn.Module], *, axis: int = 0) -> list[Field]:
    """Field after each module of an ordered list (an ``nn.Sequential`` works as one).

    The course's model2 on 28×28 MNIST digits:

    >>> model2 = nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2),
    ...                        nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
    ...                        nn.Flatten(), nn.Linear(400, 10))
    >>> [(f.rf, f.jump) for f in receptive_fields(model2)]
    [(5, 1), (5, 1), (6, 2), (10, 2), (10, 2), (12, 4), (12, 4), (None, None)]

    The last is global: each of the 10 logits mixes all 400 features, so sees every pixel.
    """
    field, fields = Field(1, 1), []
    for module in modules:
        field = _advance(field, layer_geometry(module, axis=axis))
        fields.append(field)
    return fields


def path_fields(
    modules: Sequence[nn.Module], *, axes: int, taps: Collection[int] = ()
) -> list[tuple[Field, ...] | None]:
    """Per module, its Field along each of ``axes`` spatial axes (height, width for 2-D).

    Modules whose index is in ``taps`` are side branches (GoogLeNet's auxiliary heads): they
    see the field before them but the main path goes on as if they were not there. From a
    module the recurrence cannot model (upsampling, a kernel with fewer axes than ``axes``)
    on, the main path's entries are None.

    >>> stack = [nn.Conv2d(1, 1, (1, 7)), nn.AdaptiveAvgPool2d(4), nn.Conv2d(1, 1, 3, stride=2)]
    >>> path_fields(stack, axes=2, taps=[1])
    [(Field(rf=1, jump=1), Field(rf=7, jump=1)), (Field(rf=None, jump=None), \
Field(rf=None, jump=None)), (Field(rf=3, jump=2), Field(rf=9, jump=2))]
    """
    current: tuple[Field, ...] | None = (Field(1, 1),) * axes
    out: list[tuple[Field, ...] | None] = []
    for index, module in enumerate(modules):
        try:
            after = None if current is None else tuple(
                _advance(field, layer_geometry(module, axis=axis))
                for axis, field in enumerate(current)
            )
        except ValueError:
            after = None
        out.append(after)
        if index not in taps:
            current = after
    return out


def _advance(field: Field, effect: Effect) -> Field:
    """The recurrence: the field after a layer, from the field before it."""
    if effect is None or field.rf is None or field.jump is None:
        return field
    if effect == GLOBAL:
        return Field(None, None)
    k_eff = effect.dilation * (effect.kernel - 1) + 1
    return Field(field.rf + (k_eff - 1) * field.jump, field.jump * effect.stride)


def _compose(effects: list[Effect]) -> Effect:
    """A chain of layers as one layer: kernel = its field, stride = its jump."""
    if all(effect is None for effect in effects):
        return None
    field = Field(1, 1)
    for effect in effects:
        field = _advance(field, effect)
    if field.rf is None or field.jump is None:
        return GLOBAL
    return Geometry(field.rf, field.jump)


def _widest(effects: list[Effect]) -> Effect:
    """Parallel paths merged (concatenated or added): the widest field wins."""
    if all(effect is None for effect in effects):
        return None
    if GLOBAL in effects:
        return GLOBAL
    paths = [_undilated(effect) for effect in effects if effect != GLOBAL]
    if len({path.stride for path in paths}) > 1:
        raise ValueError(f"parallel paths have different strides: {paths}")
    return max(paths, key=lambda path: path.kernel)


def _undilated(effect: Geometry | None) -> Geometry:
    """The same field as one undilated layer; a grid-keeping path is a 1-pixel one."""
    if effect is None:
        return Geometry(1, 1)
    return Geometry(effect.dilation * (effect.kernel - 1) + 1, effect.stride)


def _composite_geometry(module: nn.Module, axis: int) -> Effect:
    """Main path in registration order (branch groups in parallel), beside any shortcut."""
    main, shortcuts = [], []
    for name, child in module.named_children():
        (shortcuts if name in _SHORTCUT_NAMES else main).append((name, child))
    path = _compose([_stage_effect(stage, axis) for stage in _stages(main)])
    return _widest([path, *(layer_geometry(child, axis=axis) for _, child in shortcuts)])


def _stages(children: list[tuple[str, nn.Module]]) -> list[dict[str, list[nn.Module]]]:
    """Consecutive branch* children become one stage of named parallel paths; others one each."""
    stages: list[dict[str, list[nn.Module]]] = []
    in_branches = False
    for name, child in children:
        is_branch = name.startswith(_BRANCH_PREFIX)
        if not (is_branch and in_branches):
            stages.append({})
        path = _STAGE_SUFFIX.sub("", name) if is_branch else name
        stages[-1].setdefault(path, []).append(child)
        in_branches = is_branch
    return stages


def _stage_effect(stage: dict[str, list[nn.Module]], axis: int) -> Effect:
    paths = [[layer_geometry(m, axis=axis) for m in modules] for modules in stage.values()]
    return _widest([_compose(path) for path in paths])


def _pick(value: int | tuple[int, ...], axis: int) -> int:
    """One axis of a size that torch stores as an int (all axes) or a per-axis tuple."""
    if isinstance(value, int):
        return value
    if not -len(value) <= axis < len(value):
        raise ValueError(f"axis {axis} out of range for a {len(value)}-D layer ({value})")
    return value[axis]


def _conv_rule(module: nn.Module, axis: int) -> Effect:
    return Geometry(
        _pick(module.kernel_size, axis), _pick(module.stride, axis), _pick(module.dilation, axis)
    )


def _pool_rule(module: nn.Module, axis: int) -> Effect:
    kernel = _pick(module.kernel_size, axis)
    # LPPool keeps stride=None (meaning "= kernel"); Max/AvgPool store the kernel there.
    stride = kernel if module.stride is None else _pick(module.stride, axis)
    return Geometry(kernel, stride, _pick(getattr(module, "dilation", 1), axis))


def _unshuffle_rule(module: nn.Module, axis: int) -> Effect:
    # Space-to-depth: each output pixel holds one r×r block of the input.
    return Geometry(module.downscale_factor, module.downscale_factor)


def _global_rule(module: nn.Module, axis: int) -> Effect:
    return GLOBAL


_LEAF_RULES: Final[dict[type[nn.Module], Callable[[nn.Module, int], Effect]]] = {
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d), _conv_rule),
    **dict.fromkeys((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), _pool_rule),
    **dict.fromkeys((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), _pool_rule),
    **dict.fromkeys((nn.LPPool1d, nn.LPPool2d, nn.LPPool3d), _pool_rule),
    **dict.fromkeys(
        (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _global_rule
    ),
    **dict.fromkeys(
        (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d), _global_rule
    ),
    **dict.fromkeys((nn.Linear, nn.Bilinear, nn.LazyLinear), _global_rule),
    nn.PixelUnshuffle: _unshuffle_rule,
}

_UNSUPPORTED: Final = (
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Upsample,
    nn.PixelShuffle,
    nn.MaxUnpool1d,
    nn.MaxUnpool2d,
    nn.MaxUnpool3d,
    nn.FractionalMaxPool2d,
    nn.FractionalMaxPool3d,
    nn.Fold,
    nn.Unfold,
)


def _supported_names() -> str:
    return ", ".join(cls.__name__ for cls in _LEAF_RULES)
