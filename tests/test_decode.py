"""data/decode.py: JPEGs decoded at a reduced size where the training crop allows, against
full-size decoding with the same draws; EXIF orientation without a copy for upright images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, JpegImagePlugin
from torchvision.transforms.v2 import functional as F

from cnnkit.data import decode
from cnnkit.data.decode import decode_eval, decode_train
from cnnkit.data.transforms import eval_transform, train_transform
from cnnkit.schema import AugmentConfig, DataConfig

MEAN = (0.485, 0.456, 0.406)


def photo(path, *, size=(480, 360), orientation: int | None = None):
    """A smooth picture with edges (gradients, a disc, stripes) as a JPEG; `orientation` 6:
    stored turned a quarter counter-clockwise with the tag that turns it back."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 120 + 100 * np.sin(x / 37) * np.cos(y / 23)
    g = 255 * x / w
    b = np.where((x - w / 2) ** 2 + (y - h / 2) ** 2 < (h / 3) ** 2, 220, 40) + 20 * ((x // 8) % 2)
    image = Image.fromarray(np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8))
    if orientation == 6:
        exif = Image.Exif()
        exif[decode.ORIENTATION] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(path, quality=92, exif=exif)
    else:
        image.save(path, quality=92)
    return path


def folder_cfg(size: int, **augment) -> DataConfig:
    return DataConfig(name="imagefolder", root="x", image_size=size,
                      augment=AugmentConfig(**augment))


def draws(path, transform, seeds, *, draft: bool) -> torch.Tensor:
    out = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out.append(decode_train(path, transform, draft=draft).float())
    return torch.stack(out)


def test_reduced_decoding_draws_the_same_crops_with_the_same_statistics(tmp_path, monkeypatch):
    path = photo(tmp_path / "a.jpg")
    transform = train_transform(folder_cfg(48, hflip=False), mean=MEAN)
    drafted = []
    real_draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, mode, size: drafted.append(size) or real_draft(self, mode,
                                                                                    size))
    seeds = range(120)
    fast = draws(path, transform, seeds, draft=True)
    assert len(drafted) > 40  # most crops of a 480×360 photo allow 1/2 or more at 48 px
    full = draws(path, transform, seeds, draft=False)
    # the same crop of the same picture, resampled from a smaller decode: close per image...
    per_image = (fast - full).abs().mean(dim=(1, 2, 3))
    assert per_image.max() < 8 and per_image.mean() < 4  # 0..255 units
    # ...and the same statistics over all draws (mean and spread per channel)
    for stat in (torch.mean, torch.std):
        assert torch.allclose(stat(fast, dim=(0, 2, 3)), stat(full, dim=(0, 2, 3)), atol=1.5)


def test_without_reduction_it_is_exactly_torchvision_s_pipeline_on_the_tensor(tmp_path):
    path = photo(tmp_path / "a.jpg", size=(120, 90))  # 224 px: never reduced
    cfg = folder_cfg(224, policy="trivialaugment", random_erasing=0.5)
    transform = train_transform(cfg, mean=MEAN)
    for seed in range(5):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            want = transform(F.pil_to_tensor(Image.open(path).convert("RGB")))
        assert torch.equal(draws(path, transform, [seed], draft=True)[0].to(torch.uint8), want)


# the turn that brings a stored image upright, per EXIF orientation (what exif_transpose does)
TURNS = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
         4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
         6: [Image.Transpose.ROTATE_270], 7: [Image.Transpose.TRANSVERSE],
         8: [Image.Transpose.ROTATE_90]}


@pytest.mark.parametrize("orientation", sorted(TURNS))
def test_each_orientation_crops_the_upright_picture(tmp_path, orientation):
    """A crop of the stored pixels, turned after the resize, is torchvision's crop of the
    upright picture: the same to a level or two of 255 (rounding), for every EXIF turn."""
    upright = Image.open(photo(tmp_path / "up.jpg", size=(160, 120)))
    upright = upright.convert("RGB")
    # stored so that the tag's turn gives the upright picture back (PNG: no JPEG loss)
    undo = {Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
            Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270}
    stored = upright.transpose(undo.get(TURNS[orientation][0], TURNS[orientation][0]))
    exif = Image.Exif()
    exif[decode.ORIENTATION] = orientation
    path = tmp_path / "turned.png"
    stored.save(path, exif=exif)
    assert torch.equal(F.pil_to_tensor(ImageOps.exif_transpose(Image.open(path))),
                       F.pil_to_tensor(upright))
    transform = train_transform(folder_cfg(40), mean=MEAN)  # with a flip drawn half the time
    for seed in range(6):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            want = transform(F.pil_to_tensor(upright))
        got = draws(path, transform, [seed], draft=False)[0]
        assert (got - want.float()).abs().max() <= 2, (seed, (got - want.float()).abs().max())


@pytest.mark.parametrize("size", [48, 224])
def test_an_oriented_photo_is_decoded_upright(tmp_path, size):
    upright = photo(tmp_path / "up.jpg", size=(480, 360))
    turned = photo(tmp_path / "turned.jpg", size=(480, 360), orientation=6)
    with Image.open(turned) as image:
        assert image.size == (360, 480)  # stored sideways
    transform = train_transform(folder_cfg(size, hflip=False), mean=MEAN)
    a, b = draws(upright, transform, range(20), draft=True), draws(turned, transform, range(20),
                                                                  draft=True)
    assert (a - b).abs().mean() < 4  # the same crops of the same upright picture
    val = eval_transform(folder_cfg(size))
    assert (decode_eval(upright, val).float() - decode_eval(turned, val).float()).abs().mean() < 4


def test_an_upright_image_is_not_copied(tmp_path, monkeypatch):
    path = photo(tmp_path / "a.jpg")
    monkeypatch.setattr(decode.ImageOps, "exif_transpose",
                        lambda *a, **k: pytest.fail("copied an upright image"))
    assert decode_eval(path, eval_transform(folder_cfg(32))).shape == (3, 32, 32)
    grey = tmp_path / "g.png"
    Image.new("L", (40, 30), 128).save(grey)
    assert decode_eval(grey, eval_transform(folder_cfg(16))).shape == (3, 16, 16)
