"""Receptive fields against hand computation and against gradient support.

Hand rule used for every literal below: a k×k conv (stride s) adds (k - 1)*jump to the field
and multiplies the jump by s; a 2×2/2 pool adds 1*jump and doubles it; a 3×3/2 pool adds
2*jump and doubles it. Grid-keeping layers (ReLU, BatchNorm...) repeat the field before them.
"""

import doctest

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import cnnkit.geometry.receptive
from cnnkit.geometry.receptive import GLOBAL, Field, Geometry, layer_geometry, receptive_fields

GLOBAL_FIELD = Field(None, None)


def _on_meta(build):
    """Build a torchvision model without allocating or initialising real weights: fast."""
    with torch.device("meta"):
        return build()


def _without_relu(modules, fields):
    """Fields of the geometry-changing layers, after checking ReLUs repeat their input's."""
    kept, previous = [], Field(1, 1)
    for module, field in zip(modules, fields, strict=True):
        if isinstance(module, nn.ReLU):
            assert field == previous
        else:
            kept.append(tuple(field))
        previous = field
    return kept


def test_doctests_pass():
    result = doctest.testmod(cnnkit.geometry.receptive, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 5


def test_course_model2():
    model2 = nn.Sequential(
        nn.Conv2d(1, 8, 5),  # 5, 1
        nn.ReLU(),
        nn.MaxPool2d(2),  # 5 + 1*1 = 6, jump 2
        nn.Conv2d(8, 16, 3),  # 6 + 2*2 = 10
        nn.ReLU(),
        nn.MaxPool2d(2),  # 10 + 1*2 = 12, jump 4
        nn.Flatten(),
        nn.Linear(400, 10),  # every logit mixes all 400 features: global
    )
    expected = [(5, 1), (5, 1), (6, 2), (10, 2), (10, 2), (12, 4), (12, 4), (None, None)]
    assert [tuple(f) for f in receptive_fields(model2)] == expected


def test_vgg19_features():
    features = _on_meta(torchvision.models.vgg19).features
    expected = [
        (3, 1), (5, 1), (6, 2),  # 64, 64, M
        (10, 2), (14, 2), (16, 4),  # 128, 128, M
        (24, 4), (32, 4), (40, 4), (48, 4), (52, 8),  # 256 x4, M
        (68, 8), (84, 8), (100, 8), (116, 8), (124, 16),  # 512 x4, M
        (156, 16), (188, 16), (220, 16), (252, 16), (268, 32),  # 512 x4, M
    ]  # fmt: skip
    assert _without_relu(features, receptive_fields(features)) == expected


def test_alexnet_features():
    features = _on_meta(torchvision.models.alexnet).features
    expected = [
        (11, 4),  # conv 11x11 /4
        (19, 8),  # pool 3/2: 11 + 2*4
        (51, 8),  # conv 5x5: 19 + 4*8
        (67, 16),  # pool 3/2: 51 + 2*8
        (99, 16), (131, 16), (163, 16),  # three conv 3x3: + 2*16 each
        (195, 32),  # pool 3/2: 163 + 2*16
    ]  # fmt: skip
    assert _without_relu(features, receptive_fields(features)) == expected


def test_resnet18_blocks_ignore_the_shortcut_stride():
    model = _on_meta(torchvision.models.resnet18)
    expected = [
        (7, 2),  # conv1 7x7 /2
        (7, 2),  # bn1
        (7, 2),  # relu
        (11, 4),  # maxpool 3/2: 7 + 2*2
        (43, 4),  # layer1, four 3x3 convs: 11 + 4*(2*4)
        (99, 8),  # layer2: 3x3/2 (+2*4 = 51, jump 8), then three 3x3 (+16 each)
        (211, 16),  # layer3: 99 + 2*8 = 115, jump 16, then + 3*32
        (435, 32),  # layer4: 211 + 2*16 = 243, jump 32, then + 3*64
        None,  # avgpool: adaptive, global
        None,  # fc
    ]
    fields = receptive_fields(model.children())
    assert [None if f == GLOBAL_FIELD else tuple(f) for f in fields] == expected
    # Main path conv1 3x3/2 then conv2 3x3: 1 + 2 + 2*2 = 7, jump 2; downsample 1x1/2 beside it.
    assert layer_geometry(model.layer2[0]) == Geometry(7, 2)
    assert layer_geometry(model) == GLOBAL


def test_resnet50_bottleneck_strides_in_its_3x3():
    block = _on_meta(torchvision.models.resnet50).layer2[0]
    assert layer_geometry(block) == Geometry(3, 2)  # 1x1, 3x3/2, 1x1; downsample 1x1/2


def test_googlenet_inception_branches_take_the_widest():
    model = _on_meta(lambda: torchvision.models.googlenet(aux_logits=False, init_weights=False))
    # Every torchvision Inception block: 1x1 | 1x1,3x3 | 1x1,3x3 | pool 3/1,1x1 -> field 3.
    assert layer_geometry(model.inception3a) == Geometry(3, 1)
    expected = [
        (7, 2),  # conv1 7x7 /2
        (11, 4),  # maxpool1 3/2
        (11, 4),  # conv2 1x1
        (19, 4),  # conv3 3x3
        (27, 8),  # maxpool2 3/2
        (43, 8), (59, 8),  # inception3a, 3b: + 2*8 each
        (75, 16),  # maxpool3 3/2
        (107, 16), (139, 16), (171, 16), (203, 16), (235, 16),  # inception4a..4e
        (251, 32),  # maxpool4 2/2: + 1*16
        (315, 32), (379, 32),  # inception5a, 5b: + 2*32 each
        None, None, None,  # avgpool (adaptive), dropout, fc
    ]  # fmt: skip
    fields = receptive_fields(model.children())
    assert [None if f == GLOBAL_FIELD else tuple(f) for f in fields] == expected


@pytest.mark.parametrize("axis", [0, 1])
def test_inception_v3_numbered_branch_stages_run_in_sequence(axis):
    # branch7x7dbl_1.._5: 1x1, 7x1, 1x7, 7x1, 1x7 -> two 7-tap convs per axis: 1 + 6 + 6 = 13.
    block = _on_meta(lambda: torchvision.models.inception.InceptionC(768, channels_7x7=128))
    assert layer_geometry(block, axis=axis) == Geometry(13, 1)


def test_leaf_geometries():
    conv = nn.Conv2d(1, 1, kernel_size=(3, 5), stride=(1, 2), dilation=(2, 1))
    assert layer_geometry(conv, axis=0) == Geometry(3, 1, 2)
    assert layer_geometry(conv, axis=1) == Geometry(5, 2, 1)
    assert layer_geometry(nn.MaxPool2d(3, stride=2, dilation=2)) == Geometry(3, 2, 2)
    assert layer_geometry(nn.AvgPool2d(2)) == Geometry(2, 2)
    assert layer_geometry(nn.LPPool2d(2, 3)) == Geometry(3, 3)  # stride None means kernel
    assert layer_geometry(nn.PixelUnshuffle(2)) == Geometry(2, 2)
    assert layer_geometry(nn.AdaptiveMaxPool2d((7, 7))) == GLOBAL
    for keeps_grid in (nn.ReLU(), nn.BatchNorm2d(3), nn.Dropout(), nn.Flatten()):
        assert layer_geometry(keeps_grid) is None
    assert layer_geometry(nn.Linear(2, 2)) == GLOBAL  # after Flatten: mixes every unit
    assert layer_geometry(nn.Sequential(nn.BatchNorm2d(3), nn.ReLU())) is None


def test_global_pooling_makes_every_later_field_global():
    fields = receptive_fields([nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()])
    assert fields == [Field(3, 1), GLOBAL_FIELD, GLOBAL_FIELD]


def test_unsupported_and_inconsistent_modules_raise():
    with pytest.raises(ValueError, match="ConvTranspose2d upsamples"):
        layer_geometry(nn.ConvTranspose2d(1, 1, 2, stride=2))
    with pytest.raises(ValueError, match="axis 1 out of range"):
        layer_geometry(nn.Conv1d(1, 1, 3), axis=1)

    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.branch1 = nn.Conv2d(1, 1, 3)
            self.branch2 = nn.Conv2d(1, 1, 3, stride=2)

    with pytest.raises(ValueError, match="different strides"):
        layer_geometry(TwoBranches())


layer_specs = st.lists(
    st.tuples(
        st.sampled_from(["conv", "avg"]),
        st.integers(1, 4),  # kernel
        st.integers(1, 3),  # stride
        st.integers(1, 3),  # dilation (conv only)
    ),
    min_size=1,
    max_size=4,
)


def _positive_stack(specs) -> nn.Sequential:
    """Conv1d (weights 1) and AvgPool1d: every input a unit sees gets a positive gradient."""
    layers = []
    for kind, kernel, stride, dilation in specs:
        if kind == "avg":
            layers.append(nn.AvgPool1d(kernel, stride=stride))
            continue
        conv = nn.Conv1d(1, 1, kernel, stride=stride, dilation=dilation, bias=False)
        nn.init.ones_(conv.weight)
        layers.append(conv)
    return nn.Sequential(*layers).double()


def _support(output: torch.Tensor, x: torch.Tensor) -> tuple[int, int]:
    (grad,) = torch.autograd.grad(output, x, retain_graph=True)
    seen = grad[0, 0].nonzero()
    return int(seen.min()), int(seen.max())


@settings(max_examples=30, deadline=None)
@given(specs=layer_specs)
def test_field_and_jump_match_gradient_support(specs):
    model = _positive_stack(specs)
    rf, jump = receptive_fields(model)[-1]
    x = torch.ones(1, 1, rf + jump, dtype=torch.float64, requires_grad=True)  # (N, C, L)
    y = model(x)
    assert y.shape[-1] == 2  # rf inputs give one output; each further jump one more
    assert _support(y[0, 0, 0], x) == (0, rf - 1)
    assert _support(y[0, 0, 1], x) == (jump, jump + rf - 1)
