"""Batched augmentation: shapes, label alignment, what each transform does, and seeding."""

import pytest
import torch

from cnnkit.config import load_config
from cnnkit.data.augment import Augment, batch_seed, build_augment, cutout, random_crop
from cnnkit.data.tensors import Split, TensorLoader
from cnnkit.errors import ConfigError
from cnnkit.schema import AugmentConfig

TRANSFORMS = {
    "translate": AugmentConfig(translate=0.15),
    "rotate": AugmentConfig(rotate=20),
    "scale": AugmentConfig(scale=0.2),
    "elastic": AugmentConfig(elastic=34),
    "crop_padding": AugmentConfig(crop_padding=3),
    "hflip": AugmentConfig(hflip=True),
    "cutout": AugmentConfig(cutout=6),
    "all": AugmentConfig(translate=0.1, rotate=10, scale=0.1, crop_padding=2, hflip=True,
                         cutout=5),
}


def labelled_blobs(n: int = 64, size: int = 20) -> Split:
    """Image i is a 10×10 square of brightness 20 × (label + 1) on black, off centre so that a
    flip shows: the label can be read back from the brightest pixel after any transform."""
    labels = torch.arange(n) % 10
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    images[:, :, 5:15, 3:13] = (20 * (labels + 1)).view(n, 1, 1, 1).to(torch.uint8)
    return Split(images, labels)


def loader(augment: Augment | None, *, seed: int = 0, shuffle: bool = True,
           split: Split | None = None) -> TensorLoader:
    return TensorLoader(split or labelled_blobs(), batch_size=16, shuffle=shuffle, seed=seed,
                        mean=(0.0,), std=(1 / 255,), device=torch.device("cpu"),
                        augment=augment)  # normalized = the 0..255 values themselves


def augment(cfg: AugmentConfig) -> Augment:
    return build_augment(cfg, mean=(0.0,))


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_shapes_labels_and_seeding(name):
    aug = augment(TRANSFORMS[name])
    plain = list(loader(None).batches(epoch=3))
    first = list(loader(aug).batches(epoch=3))
    again = list(loader(aug).batches(epoch=3))
    other_seed = list(loader(aug, seed=1).batches(epoch=3))
    other_epoch = list(loader(aug).batches(epoch=4))
    changed = 0
    for (x0, y0), (x1, y1), (x2, y2) in zip(plain, first, again):
        assert torch.equal(y2, y1)
        assert x1.shape == x0.shape and x1.dtype == torch.float32
        assert torch.equal(y1, y0)  # the same examples in the same order
        brightest = x1.flatten(1).amax(dim=1)
        assert torch.allclose(brightest, 20.0 * (y1 + 1), atol=1e-3), name  # labels aligned
        assert torch.equal(x1, x2)  # reproducible from (seed, epoch, batch)
        changed += int(not torch.equal(x1, x0))
    assert changed == len(plain)  # every batch was transformed
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other_seed))
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, other_epoch))


def test_mid_epoch_start_sees_the_same_augmented_batches():
    aug = augment(TRANSFORMS["all"])
    whole = list(loader(aug).batches(epoch=2))
    tail = list(loader(aug).batches(epoch=2, start=2))
    for (x, y), (xs, ys) in zip(whole[2:], tail, strict=True):
        assert torch.equal(x, xs) and torch.equal(y, ys)


def test_augmentation_draws_nothing_from_the_global_rng():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    list(loader(augment(TRANSFORMS["all"])).batches(epoch=0))
    assert torch.equal(torch.get_rng_state(), before)


def test_crop_is_an_integer_shift_within_the_padding():
    images = torch.rand(32, 2, 12, 12) * 255
    out = random_crop(images, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    offsets = set()
    for i in range(32):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(out[i], padded[i, :, dy:dy + 12, dx:dx + 12])]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 5  # the offsets vary over the batch


def test_hflip_mirrors_about_half_the_batch():
    images = torch.rand(200, 1, 8, 8)
    out = augment(AugmentConfig(hflip=True))(images, seed=0)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 60 < sum(flipped) < 140


def test_cutout_fills_at_most_one_square_with_the_mean():
    images = torch.full((50, 3, 16, 16), 200.0)
    fill = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    out = cutout(images, 5, torch.Generator().manual_seed(0), fill=fill)
    erased = out[:, 0] != 200.0  # (B, H, W)
    assert 0 < erased.sum(dim=(1, 2)).min() and erased.sum(dim=(1, 2)).max() <= 25
    for c, value in enumerate((10.0, 20.0, 30.0)):
        assert torch.all(out[:, c][erased] == value) and torch.all(out[:, c][~erased] == 200.0)


def test_affine_shift_stays_within_translate():
    """A one-pixel dot moves by at most translate × size (rounded up by interpolation)."""
    images = torch.zeros(64, 1, 21, 21)
    images[:, :, 10, 10] = 255.0
    out = augment(AugmentConfig(translate=0.1))(images, seed=1)
    ys, xs = torch.meshgrid(torch.arange(21.0), torch.arange(21.0), indexing="ij")
    mass = out[:, 0].sum(dim=(1, 2))
    cy = (out[:, 0] * ys).sum(dim=(1, 2)) / mass
    cx = (out[:, 0] * xs).sum(dim=(1, 2)) / mass
    shift = torch.maximum((cy - 10).abs(), (cx - 10).abs())
    assert shift.max() <= 0.1 * 21 + 1e-4 and shift.max() > 1.0


def test_rotation_keeps_a_centred_disc_and_turns_a_bar():
    bar = torch.zeros(1, 1, 21, 21)
    bar[:, :, 10, 2:19] = 255.0  # a horizontal bar through the centre
    out = augment(AugmentConfig(rotate=90))(bar.expand(16, 1, 21, 21), seed=0)
    assert torch.allclose(out[:, :, 10, 10], torch.full((16, 1), 255.0), atol=1.0)
    rows_lit = (out[:, 0] > 50).any(dim=2).sum(dim=1)  # rows a turned bar reaches
    assert rows_lit.max() > 5


def test_all_off_means_no_augmenter_and_defaults_are_off(write_config):
    cfg = load_config(write_config())
    assert cfg.data.augment == AugmentConfig()
    assert build_augment(cfg.data.augment, mean=(0.1,)) is None


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("translate", 1.5, "data.augment.translate: expected a fraction in [0, 1], found 1.5"),
    ("scale", 1.0, "data.augment.scale: expected a fraction in [0, 1), found 1.0"),
    ("cutout", 40, "data.augment.cutout: expected a side in pixels from 0 to 28, found 40"),
    ("crop_padding", -1, "data.augment.crop_padding: expected pixels >= 0, found -1"),
])
def test_bad_values_are_one_line_errors(write_config, key, value, expected):
    path = write_config()  # model.input [1, 28, 28]
    with pytest.raises(ConfigError) as info:
        load_config(path, [f"data.augment.{key}={value}"])
    assert str(info.value) == f"{path}: {expected}"


def test_unknown_augment_key_is_named(write_config):
    with pytest.raises(ConfigError, match="data.augment.rotation: unknown key; did you mean "
                                          "'rotate'?"):
        load_config(write_config(), ["data.augment.rotation=10"])


def test_batch_seeds_differ_across_seed_epoch_and_batch():
    seeds = {batch_seed(s, e, i) for s in range(3) for e in range(20) for i in range(50)}
    assert len(seeds) == 3 * 20 * 50
    assert all(0 <= s < 2**63 for s in seeds)
