import pytest
import torch

from cnnkit.config import load_config
from cnnkit.errors import ConfigError, ShapeError
from cnnkit.inspect.summary import summarize
from cnnkit.models.builder import build_model
from tests.conftest import CONFIGS, SMALL_CONV, ZOO

ALL_CONFIGS = sorted(CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: p.stem)
def test_every_config_builds_and_runs_forward(path, meta_zoo):
    """The catalogue test: a config added to configs/ is tested the day it is added. The zoo
    runs on the meta device (shapes without 10⁸ weights; tests/test_zoo_parity.py compares
    outputs with torchvision's), the small configs for real."""
    model = (meta_zoo(path.stem) if path.stem in ZOO else build_model(path)).eval()
    device = next(model.parameters()).device
    x = torch.randn(2, *model.input_shape, device=device)
    with torch.no_grad():
        y = model(x)
    assert tuple(y.shape) == (2, *model.output_shape)
    assert model.layers_info[-1].output_shape == model.output_shape


def test_seed_model1_numbers():
    summary = summarize(build_model(CONFIGS / "mnist_dense.yaml"))
    assert summary["total_params"] == summary["trainable_params"] == 178_110
    assert [r["params"] for r in summary["layers"] if r["params"]] == [157_000, 20_100, 1_010]


def test_seed_model2_numbers():
    summary = summarize(build_model(CONFIGS / "mnist_conv.yaml"))
    assert summary["total_params"] == summary["trainable_params"] == 5_386
    shapes = [tuple(r["output_shape"]) for r in summary["layers"]]
    assert shapes == [(8, 24, 24), (8, 24, 24), (8, 12, 12), (16, 10, 10), (16, 10, 10),
                      (16, 5, 5), (400,), (10,)]
    assert [r["name"] for r in summary["layers"]] == [str(i) for i in range(8)]


def _config(write_config, layers, input_shape=(1, 28, 28)):
    config = {**SMALL_CONV, "model": {"input": list(input_shape), "layers": layers}}
    return load_config(write_config(config))


def test_inferred_and_written_sizes_agree(write_config):
    short = _config(write_config, [["Conv2d", 8, 5], ["BatchNorm2d"], ["Flatten"], ["Linear", 10]])
    null = _config(write_config, [["Conv2d", None, 8, 5], ["BatchNorm2d", None], ["Flatten"],
                                  ["Linear", None, 10]])
    full = _config(write_config, [["Conv2d", 1, 8, 5], ["BatchNorm2d", 8], ["Flatten"],
                                  ["Linear", 4608, 10]])
    shapes = [{k: v.shape for k, v in build_model(c).state_dict().items()}
              for c in (short, null, full)]
    assert shapes[0] == shapes[1] == shapes[2]


def test_written_size_that_disagrees_names_layer_and_shapes(write_config):
    cfg = _config(write_config, [["Conv2d", 1, 8, 5], ["Flatten"], ["Linear", 401, 10]])
    with pytest.raises(ShapeError) as info:
        build_model(cfg)
    assert str(info.value) == (f"{cfg.source}: model.layers.2 (Linear): in_features is 401, "
                               f"but the incoming tensor is 4608 (so in_features = 4608)")


def test_missing_flatten_gets_a_hint(write_config):
    cfg = _config(write_config, [["Conv2d", 1, 8, 5], ["Linear", 4608, 10]])
    with pytest.raises(ShapeError, match=r"model.layers.1 \(Linear\).*8×24×24.*add \[Flatten\]"):
        build_model(cfg)


def test_input_too_small_names_layer(write_config):
    cfg = _config(write_config, [["Conv2d", 1, 8, 5], ["MaxPool2d", 2], ["Conv2d", 8, 8, 13]])
    with pytest.raises(ShapeError, match=r"model.layers.2 \(Conv2d\): cannot take an input of "
                                         r"shape 8×12×12"):
        build_model(cfg)


def test_unknown_layer_suggests_close_names(write_config):
    cfg = _config(write_config, [["Conv2D", 1, 8, 5]])
    with pytest.raises(ConfigError, match=r"model.layers.0: unknown layer 'Conv2D'; did you mean "
                                          r"Conv2d"):
        build_model(cfg)


def test_bad_constructor_arguments_are_config_errors(write_config):
    cfg = _config(write_config, [["Conv2d", 1, 8, 5, {"paddin": 1}]])
    with pytest.raises(ConfigError, match=r"model.layers.0 \(Conv2d\): cannot build Conv2d"):
        build_model(cfg)


def test_mapping_gives_named_children_and_repeat_expands(write_config):
    layers = {"features": [["Conv2d", 8, 3, {"padding": 1}], ["Repeat", 2, ["Conv2d", 8, 3]]],
              "pool": ["AdaptiveAvgPool2d", 1], "flatten": ["Flatten"], "head": ["Linear", 10]}
    model = build_model(_config(write_config, layers))
    assert list(model.state_dict()) == [
        "features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
        "features.2.weight", "features.2.bias", "head.weight", "head.bias"]
    assert [i.name for i in model.layers_info][:3] == ["features.0", "features.1", "features.2"]


def test_malformed_repeat(write_config):
    with pytest.raises(ConfigError, match=r"expected \[Repeat, N, LAYER\]"):
        build_model(_config(write_config, [["Repeat", 0, ["ReLU"]]]))


def test_bad_input_shape(write_config):
    with pytest.raises(ConfigError, match="model.input: expected 1 to 3 positive sizes"):
        build_model(_config(write_config, [["ReLU"]], input_shape=(0, 28, 28)))
