"""Augmentation of whole training batches on the device they train on.

A batch (B, C, H, W) of float images on the 0..255 scale goes in and comes out the same shape,
each image transformed by its own random draw; labels are not touched, so they stay aligned.
The draws come from a CPU `torch.Generator` seeded by (run seed, epoch, batch index), never
from the global RNG: batch i of epoch e is augmented the same way on every device and after
any resume, mid-epoch included, with no state to save.

Transforms run in a fixed order: crop with padding, affine (translate, rotate, scale) and
elastic distortion (one resampling together), flip, cutout. Uncovered pixels are 0 (black,
torchvision's default fill); cutout fills the dataset's mean, which is 0 after normalization,
as in DeVries & Taylor's cutout.
ImageNet-style folders keep torchvision's per-image transforms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnnkit.schema import AugmentConfig

_SALT = 0x5DEECE66D  # keeps these seeds apart from the epoch permutation's


def batch_seed(seed: int, epoch: int, index: int) -> int:
    """The generator seed for batch `index` of `epoch`; a 63-bit mix of the three."""
    mixed = ((seed * 1_000_003 + epoch) * 1_000_033 + index) * 2_654_435_761 + _SALT
    return mixed & (2**63 - 1)


class Augment:
    """The enabled transforms of an `AugmentConfig`, called as augment(images, seed=...)."""

    def __init__(self, cfg: AugmentConfig, *, mean: tuple[float, ...]):
        self.cfg = cfg
        self.fill = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0

    def __call__(self, images: torch.Tensor, *, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        cfg = self.cfg
        if cfg.crop_padding:
            images = random_crop(images, cfg.crop_padding, generator)
        if cfg.translate or cfg.rotate or cfg.scale or cfg.elastic:
            images = random_affine(images, generator, translate=cfg.translate,
                                   rotate=cfg.rotate, scale=cfg.scale, elastic=cfg.elastic,
                                   sigma=cfg.elastic_sigma)
        if cfg.hflip:
            images = random_hflip(images, generator)
        if cfg.cutout:
            images = cutout(images, cfg.cutout, generator, fill=self.fill)
        return images


def build_augment(cfg: AugmentConfig, *, mean: tuple[float, ...]) -> Augment | None:
    """The training batches' augmentation, or None when every transform is off. Its ranges
    (cutout against model.input's sides included) are checked by `validate.validate`."""
    enabled = (cfg.translate, cfg.rotate, cfg.scale, cfg.elastic, cfg.crop_padding, cfg.hflip,
               cfg.cutout)
    return Augment(cfg, mean=mean) if any(enabled) else None


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by `padding` px, then cut each image back to H×W at a random offset."""
    b, _, h, w = images.shape
    device = images.device
    dy, dx = torch.randint(0, 2 * padding + 1, (2, b, 1), generator=generator).to(device)
    rows = dy + torch.arange(h, device=device)  # (B, H): source rows in the padded image
    cols = dx + torch.arange(w, device=device)  # (B, W)
    padded = F.pad(images, (padding,) * 4)
    batch = torch.arange(b, device=device).view(b, 1, 1)
    # advanced indices around a slice put their (B, H, W) first: (B, H, W, C) -> (B, C, H, W)
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def random_affine(images: torch.Tensor, generator: torch.Generator, *, translate: float,
                  rotate: float, scale: float, elastic: float = 0.0,
                  sigma: float = 4.0) -> torch.Tensor:
    """Shift by up to `translate` × size, rotate by up to `rotate` degrees, zoom by a factor in
    [1 - scale, 1 + scale], then displace each pixel by an elastic field (`elastic`, `sigma`:
    elastic_field); one bilinear resampling per image."""
    b, _, h, w = images.shape
    u = torch.rand(4, b, generator=generator, dtype=torch.float64) * 2 - 1  # uniform in [-1, 1)
    angle = u[0] * math.radians(rotate)
    zoom = 1 + u[1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # theta maps output to input in [-1, 1] coordinates; H/W terms keep angles true in pixels
    theta = torch.stack([
        torch.stack([cos, -sin * h / w, u[2] * translate * 2], dim=1),
        torch.stack([sin * w / h, cos, u[3] * translate * 2], dim=1),
    ], dim=1).to(images.device, torch.float32)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    if elastic:
        grid = grid + elastic_field(b, h, w, elastic, sigma, generator).to(images.device)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def elastic_field(b: int, h: int, w: int, alpha: float, sigma: float,
                  generator: torch.Generator) -> torch.Tensor:
    """Simard et al.'s displacements: uniform [-1, 1] per pixel and axis, smoothed by a
    Gaussian of std `sigma` px (separable, zero padding), times `alpha` px; as grid_sample
    offsets (B, H, W, 2) in [-1, 1] units. alpha 34, sigma 4 move a stroke about 1.4 px."""
    noise = torch.rand(b * 2, 1, h, w, generator=generator) * 2 - 1
    radius = min(int(3 * sigma), max(h, w) - 1)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1.0) / sigma) ** 2)
    taps = taps / taps.sum()
    smooth = F.conv2d(noise, taps.view(1, 1, 1, -1), padding=(0, radius))
    smooth = F.conv2d(smooth, taps.view(1, 1, -1, 1), padding=(radius, 0))
    field = smooth.view(b, 2, h, w).permute(0, 2, 3, 1) * alpha  # pixels, (x, y) last
    return field * torch.tensor([2.0 / w, 2.0 / h])


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator, *,
           fill: torch.Tensor) -> torch.Tensor:
    """Set one size×size square per image to `fill`; its centre is anywhere in the image, so
    a square may hang over the edge (DeVries & Taylor)."""
    b, _, h, w = images.shape
    device = images.device
    cy = torch.randint(0, h, (b, 1, 1, 1), generator=generator).to(device)
    cx = torch.randint(0, w, (b, 1, 1, 1), generator=generator).to(device)
    y = torch.arange(h, device=device).view(1, 1, h, 1) - (cy - size // 2)
    x = torch.arange(w, device=device).view(1, 1, 1, w) - (cx - size // 2)
    inside = (y >= 0) & (y < size) & (x >= 0) & (x < size)  # (B, 1, H, W)
    return torch.where(inside, fill.to(device, images.dtype), images)
