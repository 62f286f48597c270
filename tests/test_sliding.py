"""The output-size formula (geometry.conv.output_size) as the builder uses it: equal to torch's
shapes for every conv and pooling layer of every config, and in the too-small-input error."""

import doctest

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import cnnkit.geometry.sliding
from cnnkit.errors import ShapeError
from cnnkit.geometry.sliding import window_output
from cnnkit.models.builder import build_model
from tests.conftest import CONFIGS, ZOO


def test_doctests_pass():
    assert doctest.testmod(cnnkit.geometry.sliding).failed == 0


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_formula_matches_every_window_layer_of_the_configs(path, meta_zoo):
    """Hooks on every conv and pool module, blocks and aux heads included (training mode runs
    them), during one forward pass on the meta device (the zoo's models built once a
    session: ResNet-152 takes seconds even there)."""
    if path.stem in ZOO:
        model = meta_zoo(path.stem).train()
    else:
        with torch.device("meta"):
            model = build_model(path).train()
    checked = []

    def check(module, inputs, output):
        expected = tuple(output.shape[2:])
        assert window_output(module, tuple(inputs[0].shape[1:])) == expected, module
        checked.append(module)

    windows = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))]
    for module in windows:
        module.register_forward_hook(check)
    with torch.no_grad():
        model(torch.empty((2, *model.input_shape), device="meta"))  # 2: BatchNorm in training
    assert len({id(m) for m in checked}) == len(windows)


pools = st.sampled_from(["conv", "max", "avg"])


@settings(max_examples=60, deadline=None)
@given(kind=pools, n=st.integers(1, 12), kernel=st.integers(1, 5), stride=st.integers(1, 3),
       padding=st.integers(0, 2), dilation=st.integers(1, 2), ceil=st.booleans())
def test_formula_is_torch_on_random_layers(kind, n, kernel, stride, padding, dilation, ceil):
    if kind != "conv" and padding > kernel // 2:
        return  # torch refuses such pools outright ("pad should be at most half"), not a size
    if kind == "conv":
        module = nn.Conv1d(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
    elif kind == "max":
        module = nn.MaxPool1d(kernel, stride=stride, padding=padding, dilation=dilation,
                              ceil_mode=ceil)
    else:
        module = nn.AvgPool1d(kernel, stride=stride, padding=padding, ceil_mode=ceil)
    try:
        expected = tuple(module(torch.zeros(1, 1, n)).shape[2:])
    except RuntimeError:
        with pytest.raises(ValueError, match="along length: no output"):
            window_output(module, (1, n))
    else:
        assert window_output(module, (1, n)) == expected


def test_other_modules_have_no_window():
    assert window_output(nn.ReLU(), (1, 5, 5)) is None
    assert window_output(nn.Conv2d(1, 1, 3), (1, 5)) is None  # wrong rank: torch will say


def _config(write_config, layers):
    return write_config({"model": {"input": [1, 28, 28], "layers": layers}})


def test_builder_explains_a_too_small_input(write_config):
    path = _config(write_config, [["Conv2d", 1, 8, 5], ["MaxPool2d", 2], ["Conv2d", 8, 8, 13]])
    with pytest.raises(ShapeError) as error:
        build_model(path)
    assert str(error.value) == (
        f"{path}: model.layers.2 (Conv2d): cannot take an input of shape 8×12×12: along "
        f"height: no output: the kernel spans 13 samples (n_h=13, dilation=1) but the padded "
        f"input has 12 (n_x=12, padding=(0, 0))")
    path = _config(write_config, [["MaxPool2d", [1, 30]]])
    with pytest.raises(ShapeError, match=r"model.layers.0 \(MaxPool2d\): cannot take an input "
                                         r"of shape 1×28×28: along width: no output: the kernel "
                                         r"spans 30 samples"):
        build_model(path)
