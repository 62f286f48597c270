"""IDX reading and writing, and load_mnist on small generated MNIST-layout trees (no network)."""

from __future__ import annotations

import gzip
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision

from cnnkit.data.idx import read_idx, write_idx
from cnnkit.data.mnist import load_mnist
from cnnkit.errors import DataError


def _images(n: int, h: int = 28, w: int = 28) -> np.ndarray:
    return np.arange(n * h * w, dtype=np.int64).reshape(n, h, w).astype(np.uint8)


def _labels(n: int) -> np.ndarray:
    return (np.arange(n) % 10).astype(np.uint8)


def _make_split(
    root: Path, prefix: str, images: np.ndarray, labels: np.ndarray, *, suffix: str = ""
) -> tuple[Path, Path]:
    """Write ROOT/MNIST/raw/{prefix}-{images,labels}-...-ubyte{suffix}; return both paths."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    image_path = raw / f"{prefix}-images-idx3-ubyte{suffix}"
    label_path = raw / f"{prefix}-labels-idx1-ubyte{suffix}"
    write_idx(image_path, images)
    write_idx(label_path, labels)
    return image_path, label_path


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_then_read_round_trips(tmp_path: Path, suffix: str) -> None:
    images, labels = _images(3, 5, 7), _labels(3)
    write_idx(tmp_path / f"i{suffix}", images)
    write_idx(tmp_path / f"l{suffix}", labels)
    assert (tmp_path / f"i{suffix}").read_bytes().startswith(b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(tmp_path / f"i{suffix}", ndim=3)
    assert back.dtype == np.uint8 and back.flags.writeable
    np.testing.assert_array_equal(back, images)
    np.testing.assert_array_equal(read_idx(tmp_path / f"l{suffix}"), labels)


def test_header_is_the_mnist_header(tmp_path: Path) -> None:
    write_idx(tmp_path / "i", _images(2))
    # magic 0x00000803, then N=2, H=28, W=28 as big-endian uint32; 16 header bytes + pixels
    assert (tmp_path / "i").read_bytes()[:16] == bytes.fromhex("00000803000000020000001c0000001c")
    assert (tmp_path / "i").stat().st_size == 16 + 2 * 28 * 28


def test_write_rejects_values_uint8_cannot_hold(tmp_path: Path) -> None:
    assert "float32" in _error(write_idx, tmp_path / "x", np.zeros(3, dtype=np.float32))
    assert "0..300" in _error(write_idx, tmp_path / "x", np.array([0, 300]))


def test_truncated_image_file(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, _images(3))
    path.write_bytes(path.read_bytes()[:-100])
    message = _error(read_idx, path, ndim=3)
    assert str(path) in message and "(3, 28, 28)" in message
    assert f"needs {16 + 3 * 784} bytes" in message and f"has {16 + 3 * 784 - 100} bytes" in message


def test_truncated_gzip_image_file(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-200])
    message = _error(read_idx, path, ndim=3)
    assert str(path) in message and f"needs {16 + 3 * 784} bytes" in message
    assert "gzip stream ends early and yields" in message


def test_truncated_label_file(tmp_path: Path) -> None:
    _, label_path = _make_split(tmp_path, "train", _images(4), _labels(4))
    label_path.write_bytes(label_path.read_bytes()[:-1])
    message = _error(load_mnist, tmp_path, "train")
    assert str(label_path) in message and "needs 12 bytes" in message and "has 11 bytes" in message


def test_wrong_magic_names_expected_and_found(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    write_idx(path, _labels(4))
    message = _error(read_idx, path, ndim=3)
    assert (
        str(path) in message and "expected 0x00000803" in message and "found 0x00000801" in message
    )
    html = tmp_path / "page.html"
    html.write_bytes(b"<!DOCTYPE html>")
    assert "found 0x3C21444F (not an IDX file)" in _error(read_idx, html)


def test_label_count_differs_from_image_count(tmp_path: Path) -> None:
    image_path, label_path = _make_split(tmp_path, "train", _images(5), _labels(4))
    message = _error(load_mnist, tmp_path, "train")
    assert str(label_path) in message and str(image_path) in message
    assert "expected 5 labels" in message and "found 4" in message


def test_mislabelled(tmp_path: Path) -> None:
    labels = _labels(6)
    labels[2] = 10
    _, label_path = _make_split(tmp_path, "train", _images(6), labels)
    message = _error(load_mnist, tmp_path, "train")
    assert str(label_path) in message and "found 10 at index 2" in message and "0..9" in message


def test_missing_file_without_download(tmp_path: Path) -> None:
    message = _error(load_mnist, tmp_path, "train")
    assert "train-images-idx3-ubyte" in message and str(tmp_path / "MNIST" / "raw") in message
    assert "data.download: true" in message


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_load_train_split(tmp_path: Path, suffix: str) -> None:
    images, labels = _images(7), _labels(7)
    _make_split(tmp_path, "train", images, labels, suffix=suffix)
    x, y = load_mnist(tmp_path, "train")
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (7,) and y.dtype == torch.int64
    assert torch.equal(x[:, 0], torch.from_numpy(images))
    assert y.tolist() == labels.tolist()


def test_test_split_reads_t10k_files_only(tmp_path: Path) -> None:
    images, labels = _images(3), _labels(3)
    _make_split(tmp_path, "t10k", images, labels)
    x, y = load_mnist(str(tmp_path), "test")
    assert torch.equal(x[:, 0], torch.from_numpy(images)) and y.tolist() == [0, 1, 2]


def test_plain_file_wins_over_gz(tmp_path: Path) -> None:
    _make_split(tmp_path, "train", _images(2), np.array([1, 1], dtype=np.uint8))
    _make_split(tmp_path, "train", _images(2), np.array([2, 2], dtype=np.uint8), suffix=".gz")
    assert load_mnist(tmp_path, "train")[1].tolist() == [1, 1]


def test_image_size_comes_from_the_header(tmp_path: Path) -> None:
    _make_split(tmp_path, "train", _images(2, 5, 7), _labels(2))
    assert load_mnist(tmp_path, "train")[0].shape == (2, 1, 5, 7)


def test_download_offline_gives_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args, **kwargs):
        # torchvision's message after every mirror failed spans several lines
        raise RuntimeError("Error downloading t10k-images-idx3-ubyte.gz:\nTried x, got:\nerr")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    message = _error(load_mnist, tmp_path, "test", download=True)
    assert (
        "download" in message and "failed" in message and str(tmp_path / "MNIST" / "raw") in message
    )
    assert "t10k-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message

    def no_network(*args, **kwargs):
        raise URLError("no net")

    monkeypatch.setattr(torchvision.datasets, "MNIST", no_network)
    assert "(<urlopen error no net>)" in _error(load_mnist, tmp_path, "test", download=True)


def test_download_fetches_then_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_mnist(root, *, train: bool, download: bool) -> None:
        # torchvision leaves both the .gz and the extracted plain file in ROOT/MNIST/raw
        calls.append((Path(root), train, download))
        for suffix in ("", ".gz"):
            prefix = "train" if train else "t10k"
            _make_split(Path(root), prefix, _images(2), _labels(2), suffix=suffix)

    monkeypatch.setattr(torchvision.datasets, "MNIST", fake_mnist)
    x, y = load_mnist(tmp_path, "train", download=True)
    assert calls == [(tmp_path, True, True)] and x.shape == (2, 1, 28, 28)
    load_mnist(tmp_path, "train", download=True)
    assert len(calls) == 1  # files present: torchvision is not called again


def test_gzip_detected_by_content(tmp_path: Path) -> None:
    path = tmp_path / "labels-without-suffix"
    path.write_bytes(gzip.compress(bytes.fromhex("0000080100000002") + b"\x03\x04"))
    assert read_idx(path, ndim=1).tolist() == [3, 4]
