"""Class folders' per-image transforms, configured from `data.augment` and built from
torchvision.transforms.v2 (not copies of them), in torchvision's reference order:

    train: RandomResizedCrop(image_size, crop_scale, crop_ratio) -> flip -> ColorJitter ->
           policy (TrivialAugmentWide | RandAugment | AutoAugment) -> uint8 tensor ->
           RandomErasing
    eval:  Resize(val_resize) -> CenterCrop(val_crop) -> uint8 tensor

Images leave the worker as uint8 and are normalized on the device (data/imagefolder.py), so
random erasing fills the dataset's mean in 0..255 units: 0 after normalization, the value
torchvision's recipe erases with after its Normalize.
"""

from __future__ import annotations

from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode

from cnnkit.schema import AugmentConfig, DataConfig

CROP_FRACTION = 0.875  # evaluation: the short side is resized to crop / 0.875 (256 for 224)


def hflip_of(data: DataConfig) -> bool:
    """data.augment.hflip, with null resolved per dataset: on for class folders only."""
    hflip = data.augment.hflip
    return data.name == "imagefolder" if hflip is None else hflip


def val_sizes(data: DataConfig) -> tuple[int, int]:
    """(resize, crop) of the evaluation transform: data.val_resize and data.val_crop, with
    null resolved to crop = image_size and resize = crop / 0.875."""
    crop = data.val_crop or data.image_size
    return data.val_resize or round(crop / CROP_FRACTION), crop


def policy_of(aug: AugmentConfig, interpolation: InterpolationMode) -> v2.Transform | None:
    if aug.policy == "trivialaugment":
        return v2.TrivialAugmentWide(interpolation=interpolation)
    if aug.policy == "randaugment":
        return v2.RandAugment(num_ops=aug.randaugment_n, magnitude=aug.randaugment_m,
                              interpolation=interpolation)
    if aug.policy == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, interpolation=interpolation)
    return None


def train_transform(data: DataConfig, *, mean: tuple[float, ...]) -> v2.Compose:
    """PIL image -> uint8 (3, S, S) tensor, S = data.image_size, with every random transform
    data.augment turns on; the draws come from torch's global generator (the caller seeds it
    per image)."""
    aug = data.augment
    mode = InterpolationMode(aug.interpolation)
    steps: list[v2.Transform] = [v2.RandomResizedCrop(
        data.image_size, scale=tuple(aug.crop_scale), ratio=tuple(aug.crop_ratio),
        interpolation=mode, antialias=True)]
    if hflip_of(data):
        steps.append(v2.RandomHorizontalFlip())
    if aug.color_jitter:
        c = aug.color_jitter
        steps.append(v2.ColorJitter(brightness=c, contrast=c, saturation=c))
    policy = policy_of(aug, mode)
    if policy is not None:
        steps.append(policy)
    steps.append(v2.PILToTensor())
    if aug.random_erasing:
        steps.append(v2.RandomErasing(p=aug.random_erasing,
                                      value=[round(255 * m) for m in mean]))
    return v2.Compose(steps)


def eval_transform(data: DataConfig) -> v2.Compose:
    resize, crop = val_sizes(data)
    mode = InterpolationMode(data.augment.interpolation)
    return v2.Compose([v2.Resize(resize, interpolation=mode, antialias=True),
                       v2.CenterCrop(crop), v2.PILToTensor()])
