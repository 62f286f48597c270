"""cnnkit.geometry.conv against numpy.convolve and torch.nn.functional.conv1d/conv2d (float64)."""

import doctest

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnkit.geometry.conv
from cnnkit.geometry.conv import (
    conv1d,
    correlate1d,
    correlate2d,
    correlate_volume,
    output_size,
    toeplitz,
)

FAST = settings(max_examples=40, deadline=None)
seeds = st.integers(0, 2**32 - 1)
pads = st.integers(0, 4)


def _random(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@st.composite
def axis_geometry(draw: st.DrawFn, *, max_kernel: int = 5) -> dict:
    """Kernel, uneven padding, stride, dilation, and an input long enough for one output."""
    n_h = draw(st.integers(1, max_kernel))
    dilation, stride = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = (draw(pads), draw(pads))
    n_min = max(1, dilation * (n_h - 1) + 1 - sum(padding))
    n_x = draw(st.integers(n_min, n_min + 12))
    return dict(n_x=n_x, n_h=n_h, padding=padding, stride=stride, dilation=dilation)


def _axis(g: dict) -> dict:
    return dict(padding=g["padding"], stride=g["stride"], dilation=g["dilation"])


def _torch_conv1d(x: np.ndarray, h: np.ndarray, g: dict) -> np.ndarray:
    """Reference: uneven padding through F.pad, then torch's unpadded conv1d."""
    x_t = F.pad(torch.from_numpy(x)[None, None], g["padding"])  # (1, 1, n_x + P)
    y = F.conv1d(
        x_t, torch.from_numpy(h.copy())[None, None], stride=g["stride"], dilation=g["dilation"]
    )
    return y[0, 0].numpy()


def test_doctests_pass():
    result = doctest.testmod(cnnkit.geometry.conv, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 20


@FAST
@given(seed=seeds, n_x=st.integers(1, 20), n_h=st.integers(1, 8))
def test_default_conv1d_is_numpy_convolve(seed, n_x, n_h):
    x, h = _random(seed, n_x), _random(seed + 1, n_h)
    np.testing.assert_allclose(conv1d(x, h), np.convolve(x, h), atol=1e-12)
    np.testing.assert_allclose(conv1d(x, h, padding="full"), np.convolve(x, h, "full"), atol=1e-12)


@FAST
@given(seed=seeds, n_h=st.integers(1, 8), extra=st.integers(0, 12))
def test_valid_and_same_match_numpy(seed, n_h, extra):
    x, h = _random(seed, n_h + extra), _random(seed + 1, n_h)  # numpy's modes need n_x >= n_h
    for mode in ("valid", "same"):
        np.testing.assert_allclose(conv1d(x, h, padding=mode), np.convolve(x, h, mode), atol=1e-12)


@FAST
@given(seed=seeds, g=axis_geometry())
def test_correlate1d_is_torch_conv1d(seed, g):
    x, h = _random(seed, g["n_x"]), _random(seed + 1, g["n_h"])
    opts = _axis(g)
    expected = _torch_conv1d(x, h, g)
    np.testing.assert_allclose(correlate1d(x, h, **opts), expected, atol=1e-12)
    np.testing.assert_allclose(conv1d(x, h, flip=False, **opts), expected, atol=1e-12)
    # Convolution is correlation with the kernel reversed.
    np.testing.assert_allclose(conv1d(x, h[::-1], **opts), expected, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's perf note
@FAST
@given(seed=seeds, n_h=st.integers(1, 6), dilation=st.integers(1, 3), extra=st.integers(0, 10))
def test_same_padding_matches_torch(seed, n_h, dilation, extra):
    x, h = _random(seed, n_h + extra), _random(seed + 1, n_h)
    w = torch.from_numpy(h)[None, None]
    expected = F.conv1d(torch.from_numpy(x)[None, None], w, padding="same", dilation=dilation)
    y = correlate1d(x, h, padding="same", dilation=dilation)
    np.testing.assert_allclose(y, expected[0, 0].numpy(), atol=1e-12)


@FAST
@given(g=axis_geometry(max_kernel=8), shortfall=st.integers(0, 3))
def test_output_size_is_torch_length(g, shortfall):
    # A shortfall can leave the input too short for one output: torch raises, so must we.
    g = {**g, "n_x": max(1, g["n_x"] - shortfall)}
    try:
        torch_length = _torch_conv1d(np.zeros(g["n_x"]), np.zeros(g["n_h"]), g).shape[0]
    except RuntimeError:
        with pytest.raises(ValueError, match="no output"):
            output_size(g["n_x"], g["n_h"], **_axis(g))
    else:
        assert output_size(g["n_x"], g["n_h"], **_axis(g)) == torch_length


def test_output_size_formula_and_errors():
    assert output_size(28, 5) == 24
    assert output_size(224, 11, padding=2, stride=4) == 55  # AlexNet conv1
    assert output_size(7, 3, padding=(0, 1), stride=2) == 3  # floor((7 + 1 - 3) / 2) + 1
    assert output_size(10, 3, padding="same") == 10
    assert output_size(10, 3, padding="full", dilation=2) == 14
    with pytest.raises(ValueError, match="no output"):
        output_size(4, 3, dilation=2)
    with pytest.raises(ValueError, match="stride must be an int >= 1"):
        output_size(4, 3, stride=0)
    with pytest.raises(ValueError, match="padding must be"):
        output_size(4, 3, padding=(1, -1))
    with pytest.raises(ValueError, match="'same' needs stride 1"):
        output_size(4, 3, padding="same", stride=2)


@FAST
@given(seed=seeds, n_x=st.integers(1, 12), n_y=st.integers(1, 12))
def test_toeplitz_both_orientations(seed, n_x, n_y):
    x, y = _random(seed, n_x), _random(seed + 1, n_y)
    expected = np.convolve(x, y)
    assert toeplitz(x, n_y).shape == (n_x + n_y - 1, n_y)
    np.testing.assert_allclose(toeplitz(x, n_y) @ y, expected, atol=1e-12)
    np.testing.assert_allclose(toeplitz(y, n_x) @ x, expected, atol=1e-12)


def _torch_conv2d(x, w, bias, rows: dict, cols: dict) -> np.ndarray:
    """Reference: batch of one, uneven padding via F.pad (last axis first), then conv2d."""
    x_t = F.pad(torch.from_numpy(x)[None], (*cols["padding"], *rows["padding"]))  # (1, C, H+P, W+P)
    b = None if bias is None else torch.from_numpy(bias)
    y = F.conv2d(
        x_t,
        torch.from_numpy(w),
        b,
        stride=(rows["stride"], cols["stride"]),
        dilation=(rows["dilation"], cols["dilation"]),
    )
    return y[0].numpy()  # (F, H', W')


def _opts2d(rows: dict, cols: dict) -> dict:
    return dict(
        padding=(rows["padding"], cols["padding"]),
        stride=(rows["stride"], cols["stride"]),
        dilation=(rows["dilation"], cols["dilation"]),
    )


@FAST
@given(seed=seeds, rows=axis_geometry(), cols=axis_geometry())
def test_correlate2d_is_torch_conv2d(seed, rows, cols):
    image = _random(seed, rows["n_x"], cols["n_x"])
    kernel = _random(seed + 1, rows["n_h"], cols["n_h"])
    expected = _torch_conv2d(image[None], kernel[None, None], None, rows, cols)[0]
    np.testing.assert_allclose(
        correlate2d(image, kernel, **_opts2d(rows, cols)), expected, atol=1e-12
    )


@FAST
@given(
    seed=seeds,
    rows=axis_geometry(max_kernel=4),
    cols=axis_geometry(max_kernel=4),
    channels=st.integers(1, 3),
    filters=st.integers(1, 3),
    with_bias=st.booleans(),
)
def test_correlate_volume_is_torch_conv2d(seed, rows, cols, channels, filters, with_bias):
    volume = _random(seed, channels, rows["n_x"], cols["n_x"])
    kernels = _random(seed + 1, filters, channels, rows["n_h"], cols["n_h"])
    bias = _random(seed + 2, filters) if with_bias else None
    y = correlate_volume(volume, kernels, bias, **_opts2d(rows, cols))
    expected = _torch_conv2d(volume, kernels, bias, rows, cols)
    assert y.shape == (
        filters,
        output_size(rows["n_x"], rows["n_h"], **_axis(rows)),
        expected.shape[2],
    )
    np.testing.assert_allclose(y, expected, atol=1e-12)


def test_symmetric_2d_forms_match_torch_padding():
    volume, kernels = _random(0, 2, 7, 6), _random(1, 4, 2, 3, 3)
    expected = F.conv2d(
        torch.from_numpy(volume)[None], torch.from_numpy(kernels), padding=(1, 2), stride=2
    )
    y = correlate_volume(volume, kernels, padding=(1, 2), stride=2)
    np.testing.assert_allclose(y, expected[0].numpy(), atol=1e-12)
    expected = F.conv2d(torch.from_numpy(volume)[None], torch.from_numpy(kernels), padding="same")
    np.testing.assert_allclose(
        correlate_volume(volume, kernels, padding="same"), expected[0].numpy()
    )


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="kernels have 3 channels"):
        correlate_volume(np.ones((2, 5, 5)), np.ones((1, 3, 3, 3)))
    with pytest.raises(ValueError, match="bias must have length 1"):
        correlate_volume(np.ones((2, 5, 5)), np.ones((1, 2, 3, 3)), bias=[1, 2])
    with pytest.raises(ValueError, match="h must have 1 non-empty axes"):
        conv1d([1, 2], [])
    with pytest.raises(ValueError, match="image must have 2 non-empty axes"):
        correlate2d(np.ones(3), np.ones((1, 1)))
