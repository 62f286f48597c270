"""`cnnkit visualize`: each picture is a valid PNG of the size its grid implies, not blank;
images are prepared as the dataset prepares its digits; bad input is one line, exit 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.checkpoint import save_checkpoint
from cnnkit.config import config_from_dict, config_to_dict
from cnnkit.data import DIGITS
from cnnkit.data.mnist_sample import MEAN, STD, read_sample
from cnnkit.data.tensors import Split, TensorLoader
from cnnkit.inspect.visualize import DPI, figure_size, read_image, saliency_map
from cnnkit.models.builder import build_model
from tests.conftest import SMALL_CONV

RGB_CONV = {
    "model": {"input": [3, 16, 16],
              "layers": [["Conv2d", 3, 6, 3], ["ReLU"], ["Flatten"], ["Linear", 10]]},
    "data": {"name": "mnist-sample", "mean": [0.5, 0.4, 0.3], "std": [0.2]},
}


def _checkpoint(tmp_path, raw: dict, name: str = "model.pt"):
    """A checkpoint as training writes it (weights, resolved config, classes), untrained."""
    torch.manual_seed(0)
    cfg = config_from_dict(raw)
    path = tmp_path / name
    save_checkpoint(path, {"model": build_model(cfg).state_dict(), "config": config_to_dict(cfg),
                           "classes": DIGITS})
    return path


@pytest.fixture
def checkpoint(tmp_path):
    return _checkpoint(tmp_path, SMALL_CONV)


@pytest.fixture
def digit(tmp_path):
    """The first digit of the embedded MNIST sample as a 28×28 grayscale PNG."""
    images, _ = read_sample()
    path = tmp_path / "digit.png"
    Image.fromarray(images[0, 0].numpy()).save(path)
    return path


def _grid_px(rows: int, cols: int) -> tuple[int, int]:
    width, height = figure_size(rows, cols)
    return round(width * DPI), round(height * DPI)


def assert_picture(path, size: tuple[int, int]) -> None:
    """A PNG of `size` pixels (width, height) that shows something: many colours, contrast."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert pixels.std() > 20  # a blank or flat picture has (almost) none
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


def test_filters_of_each_layer(cli, checkpoint, tmp_path):
    code, out, err = cli("visualize", checkpoint, "filters", "--out", tmp_path / "f.png")
    assert code == 0, err
    assert out.strip() == f"wrote {tmp_path / 'f.png'}"
    assert_picture(tmp_path / "f.png", _grid_px(3, 3))  # 8 filters of 1 channel: a 3×3 grid
    code, _, err = cli("visualize", checkpoint, "filters", "--layer", "3",
                       "--out", tmp_path / "f3.png")
    assert code == 0, err
    assert_picture(tmp_path / "f3.png", _grid_px(16, 8))  # 16 filters down, 8 channels across


def test_rgb_filters_one_colour_tile_each(cli, tmp_path):
    checkpoint = _checkpoint(tmp_path, RGB_CONV)
    code, _, err = cli("visualize", checkpoint, "filters", "--out", tmp_path / "rgb.png")
    assert code == 0, err
    assert_picture(tmp_path / "rgb.png", _grid_px(2, 3))  # 6 RGB filters


def test_unknown_layer_lists_the_conv_layers(cli, checkpoint, tmp_path):
    code, out, err = cli("visualize", checkpoint, "filters", "--layer", "2",
                         "--out", tmp_path / "f.png")
    assert code == 2 and out == ""
    valid = "(valid: 0, 3)"
    assert err.strip() == f"cnnkit: error: --layer 2: not a conv layer of {checkpoint} {valid}"
    assert not (tmp_path / "f.png").exists()


def test_activations_one_grid_per_conv_layer(cli, checkpoint, digit, tmp_path):
    out_dir = tmp_path / "maps"
    code, out, err = cli("visualize", checkpoint, "activations", "--image", digit,
                         "--out", out_dir)
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["layer_0.png", "layer_3.png"]
    assert_picture(out_dir / "layer_0.png", _grid_px(3, 3))  # 8 maps of 24×24
    assert_picture(out_dir / "layer_3.png", _grid_px(4, 4))  # 16 maps of 10×10
    assert "wrote 2 files" in out


def test_saliency_picture(cli, checkpoint, digit, tmp_path):
    code, _, err = cli("visualize", checkpoint, "saliency", "--image", digit,
                       "--out", tmp_path / "s.png")
    assert code == 0, err
    assert_picture(tmp_path / "s.png", (1000, 360))  # input | saliency | overlay, 10×3.6 in


def test_feature_maps_are_the_conv_outputs_before_an_inplace_relu():
    from cnnkit.inspect.visualize import feature_maps

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(inplace=True),
                                torch.nn.Conv2d(4, 2, 3))
    x = torch.randn(1, 1, 8, 8)
    maps = feature_maps(model, x)
    assert list(maps) == ["0", "2"] and maps["2"].shape == (1, 2, 4, 4)
    torch.testing.assert_close(maps["0"], model[0](x))
    assert (maps["0"] < 0).any()  # not the ReLU's output


def test_saliency_is_the_input_gradient_of_the_top_score():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, -2, 0, 0], [0, 0, 3, -4], [0, 0, 0, 0]]))
        model[1].bias.zero_()
    x = torch.tensor([[[[0.0, 0], [1, 0]]]])  # (1, 1, 2, 2): class 1 scores 3, the others 0
    saliency, top, probability = saliency_map(model, x)
    assert top == 1 and probability > 0.9
    np.testing.assert_allclose(saliency, [[0, 0], [3, 4]])  # |weights of class 1|


def test_image_prepared_as_the_dataset_prepares_digits(checkpoint, digit, tmp_path):
    from cnnkit.inspect.visualize import load_network

    predictor = load_network(checkpoint)
    images, labels = read_sample()
    loader = TensorLoader(Split(images[:1], labels[:1]), batch_size=1, shuffle=False, seed=0,
                          mean=MEAN, std=STD, device=torch.device("cpu"))
    expected, _ = next(loader.batches())
    torch.testing.assert_close(read_image(digit, predictor), expected)
    big = tmp_path / "big.png"  # an RGB image of another size: grayscale, resized to 28×28
    Image.fromarray(np.zeros((56, 40, 3), dtype=np.uint8)).save(big)
    x = read_image(big, predictor)
    assert x.shape == (1, 1, 28, 28)
    torch.testing.assert_close(x, torch.full_like(x, -MEAN[0] / STD[0]))


def test_image_uses_the_configs_normalization(tmp_path):
    checkpoint = _checkpoint(tmp_path, RGB_CONV)
    from cnnkit.inspect.visualize import load_network

    predictor = load_network(checkpoint)
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((16, 16, 3), 255, dtype=np.uint8)).save(path)
    x = read_image(path, predictor)  # white: (1 - mean) / std per channel
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([2.5, 3.0, 3.5]))


@pytest.mark.parametrize("kind", ["activations", "saliency"])
def test_bad_images_are_one_line(cli, checkpoint, tmp_path, kind):
    code, _, err = cli("visualize", checkpoint, kind, "--image", tmp_path / "none.png")
    assert code == 2 and err.strip() == f"cnnkit: error: {tmp_path / 'none.png'}: image not found"
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    code, _, err = cli("visualize", checkpoint, kind, "--image", text)
    assert code == 2 and err.startswith(f"cnnkit: error: {text}: cannot decode image")
    assert len(err.strip().splitlines()) == 1


def test_model_without_convs(cli, tmp_path):
    dense = {"model": {"input": [1, 28, 28], "layers": [["Flatten"], ["Linear", 10]]}}
    checkpoint = _checkpoint(tmp_path, dense)
    code, _, err = cli("visualize", checkpoint, "filters", "--out", tmp_path / "f.png")
    assert code == 2 and "has no Conv2d layers" in err


def test_missing_checkpoint(cli, tmp_path):
    code, _, err = cli("visualize", tmp_path / "no.pt", "filters")
    assert code == 2 and err.strip() == f"cnnkit: error: {tmp_path / 'no.pt'}: checkpoint not found"
