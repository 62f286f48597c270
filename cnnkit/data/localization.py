"""Localization data: targets are float rows [p_c, x, y, w, h, class] (cnnkit/localization.py).

- `mnist-localization`: canvases made in memory from the real digits of the MNIST sample, each
  digit pasted at a random size and position, a share of canvases left empty. Train and
  validation canvases come from disjoint digits (the sample's 4,000 / 1,000 stratified split),
  and every canvas is a function of `data.localization.seed`.
- `localization-csv`: `ROOT/train.csv`, `ROOT/val.csv` and optionally `ROOT/test.csv`, each
  with the header `path,x,y,w,h,label` (pixel box, (x, y) its top-left corner; an empty label
  means no object), image paths relative to ROOT. Classes come from `ROOT/classes.txt` (one a
  line) when present, otherwise from the labels of train.csv, sorted.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.data import mnist_sample
from cnnkit.data.imagenet import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.data.tensors import Split
from cnnkit.errors import DataError
from cnnkit.schema import DataConfig, LocalizationDataConfig

DIGIT_SPLIT = (4000, 1000)  # MNIST sample digits behind the train and val canvases, disjoint
CANVASES = (10000, 2000)  # default canvases per split (data.train_size, data.val_size)
INK = 64  # a pixel (0..255) at or above this is ink: the box is the ink's, not the 28×28 frame's
HEADER = ["path", "x", "y", "w", "h", "label"]


def mnist_canvases(cfg: DataConfig) -> dict[str, Split]:
    """Train and val canvases: uint8 (N, 1, S, S) images, float (N, 6) targets."""
    loc = cfg.localization  # digit_size, empty, noise: checked by the schema
    counts = (CANVASES[0] if cfg.train_size is None else cfg.train_size,
              CANVASES[1] if cfg.val_size is None else cfg.val_size)  # ranges: the schema's
    images, labels = mnist_sample.read_sample()
    splits = {}
    for k, (name, digits, count) in enumerate(zip(("train", "val"), digit_sets(), counts)):
        generator = torch.Generator().manual_seed(loc.seed * 1_000_003 + k)
        splits[name] = make_canvases(images[digits], labels[digits], count, loc,
                                     generator=generator)
    return splits


def digit_sets() -> list[torch.Tensor]:
    """Indices into the MNIST sample of the digits behind train and val canvases: disjoint,
    stratified by class, the same on every machine."""
    return mnist_sample.stratified_split(mnist_sample.read_sample()[1], DIGIT_SPLIT)


def make_canvases(digits: torch.Tensor, classes: torch.Tensor, count: int,
                  loc: LocalizationDataConfig, *, generator: torch.Generator) -> Split:
    """`count` canvases from uint8 digits (D, 1, 28, 28) with classes (D,): each digit used
    in turn (in a shuffled order), at a size and position drawn from `generator`."""
    size, (low, high) = loc.size, loc.digit_size
    empty = torch.zeros(count, dtype=torch.bool)
    empty[torch.randperm(count, generator=generator)[:round(loc.empty * count)]] = True
    order = torch.randperm(len(digits), generator=generator).repeat(-(-count // len(digits)))
    which = order[:count]
    sides = torch.randint(low, high + 1, (count,), generator=generator)
    corner = (torch.rand(count, 2, generator=generator) * (size - sides + 1).unsqueeze(1)).long()
    canvases = torch.zeros(count, 1, size, size, dtype=torch.uint8)
    targets = torch.zeros(count, 6)
    for side in sides.unique().tolist():
        index = torch.nonzero((sides == side) & ~empty).flatten()
        if len(index):
            patches = _resize(digits[which[index]], side)  # uint8 (n, 1, side, side)
            boxes = _ink_boxes(patches)  # (n, 4) pixels within the patch
            _paste(canvases, targets, index, patches, boxes, corner[index])
            targets[index, 5] = classes[which[index]].float()
    targets[:, 1:5] /= size
    if loc.noise > 0:
        _add_noise(canvases, loc.noise * 255, generator)
    return Split(canvases, targets)


def _add_noise(canvases: torch.Tensor, std: float, generator: torch.Generator) -> None:
    """Gaussian noise of `std` (0..255 scale) added in place, in chunks (a float copy of all
    canvases would be 4× their size)."""
    for chunk in canvases.split(1000):
        noisy = chunk.float() + torch.randn(chunk.shape, generator=generator) * std
        chunk.copy_(noisy.round_().clamp_(0, 255))


def _resize(digits: torch.Tensor, side: int) -> torch.Tensor:
    resized = F.interpolate(digits.float(), size=(side, side), mode="bilinear",
                            align_corners=False, antialias=side < digits.shape[-1])
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def _ink_boxes(patches: torch.Tensor) -> torch.Tensor:
    """Tight boxes (n, 4) = (x0, y0, w, h) in pixels around the ink of (n, 1, s, s) patches."""
    ink = patches[:, 0] >= INK
    cols, rows = ink.any(dim=1).byte(), ink.any(dim=2).byte()  # (n, s) each
    x0, y0 = cols.argmax(dim=1), rows.argmax(dim=1)  # the first 1 of each row
    x1 = cols.shape[1] - cols.flip(1).argmax(dim=1)
    y1 = rows.shape[1] - rows.flip(1).argmax(dim=1)
    return torch.stack([x0, y0, x1 - x0, y1 - y0], dim=1).float()


def _paste(canvases: torch.Tensor, targets: torch.Tensor, index: torch.Tensor,
           patches: torch.Tensor, boxes: torch.Tensor, corners: torch.Tensor) -> None:
    side = patches.shape[-1]
    for i, patch, (cx, cy) in zip(index.tolist(), patches, corners.tolist()):
        canvases[i, :, cy:cy + side, cx:cx + side] = patch
    targets[index, 0] = 1.0
    targets[index, 1:5] = boxes + torch.cat([corners, torch.zeros_like(corners)], dim=1)


def csv_normalization(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's mean and std (their channel average for grayscale), so zoo backbones with
    pretrained weights see what they were trained on."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)


def read_csv_dataset(cfg: DataConfig) -> tuple[dict[str, Split], list[str]]:
    """The splits under data.root (set, and channels 1 or 3: the schema checks) and the
    class names."""
    loc = cfg.localization
    root = Path(cfg.root)
    tables = {s: _read_table(root / f"{s}.csv") for s in ("train", "val", "test")
              if s in ("train", "val") or (root / "test.csv").is_file()}
    classes = _classes(root, tables["train"])
    splits = {s: _load_split(root / f"{s}.csv", rows, classes, loc)
              for s, rows in tables.items()}
    return splits, classes


def _read_table(path: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row; the header must be HEADER."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if [c.strip() for c in reader.fieldnames or []] != HEADER:
                raise DataError(f"{path}: expected the header {','.join(HEADER)}, found "
                                f"{','.join(reader.fieldnames or []) or 'an empty file'}")
            rows = [(reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items()})
                    for row in reader]
    except FileNotFoundError:
        raise DataError(f"{path}: not found (localization-csv needs train.csv and val.csv "
                        f"in data.root)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if not rows:
        raise DataError(f"{path}: holds no rows")
    return rows


def _classes(root: Path, train_rows: list[tuple[int, dict[str, str]]]) -> list[str]:
    listed = root / "classes.txt"
    if listed.is_file():
        names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines()]
        classes = [n for n in names if n]
        if not classes or len(set(classes)) != len(classes):
            raise DataError(f"{listed}: expected distinct class names, one a line")
        return classes
    classes = sorted({row["label"] for _, row in train_rows if row["label"]})
    if not classes:
        raise DataError(f"{root / 'train.csv'}: no row has a label, so there are no classes")
    return classes


def _load_split(path: Path, rows: list[tuple[int, dict[str, str]]], classes: list[str],
                loc: LocalizationDataConfig) -> Split:
    from cnnkit.data.image_files import open_image  # PIL: localization-csv alone needs it

    index = {name: k for k, name in enumerate(classes)}
    images, targets = [], []
    for line, row in rows:
        where = f"{path} line {line}"
        image = open_image(path.parent / row["path"], "L" if loc.channels == 1 else "RGB",
                           where=where)
        targets.append(_target(row, image.size, index, where))
        images.append(np.asarray(image.resize((loc.size, loc.size)), dtype=np.uint8))
    array = np.stack(images).reshape(len(images), loc.size, loc.size, loc.channels)
    return Split(torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(),
                 torch.tensor(targets, dtype=torch.float32))


def _target(row: dict[str, str], image_size: tuple[int, int], index: dict[str, int],
            where: str) -> list[float]:
    """[p_c, x, y, w, h, class] in fractions of the image, or zeros for an empty label."""
    label = row["label"]
    if not label:
        return [0.0] * 6
    if label not in index:
        raise DataError(f"{where}: unknown label '{label}' (classes: {', '.join(index)})")
    x, y, w, h = (_number(row, key, where) for key in ("x", "y", "w", "h"))
    width, height = image_size
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise DataError(f"{where}: box x={x:g} y={y:g} w={w:g} h={h:g} is not inside the "
                        f"{width}×{height} image {row['path']}")
    return [1.0, x / width, y / height, w / width, h / height, float(index[label])]


def _number(row: dict[str, str], key: str, where: str) -> float:
    try:
        value = float(row[key])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{where}: {key}: expected a number of pixels, found {row[key]!r}")
    return value
