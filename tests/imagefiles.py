"""Tiny class-folder datasets written by tests: ROOT/<split>/<class>/<n>.<ext>."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

EXTENSIONS = ("jpg", "png", "bmp", "webp", "jpeg")
COLORS = {"cat": (200, 60, 40), "dog": (40, 60, 200), "owl": (60, 200, 40)}


def write_image(path: Path, *, color: tuple[int, int, int] = (128, 128, 128),
                size: tuple[int, int] = (40, 48), seed: int = 0, mode: str = "RGB") -> Path:
    """A noisy image of one color, `size` = (height, width), saved in the format of its suffix."""
    rng = np.random.default_rng(seed)
    pixels = (rng.integers(-40, 40, (*size, 3)) + np.array(color)).clip(0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def write_class_folders(root: Path, *, classes: tuple[str, ...] = ("cat", "dog"),
                        counts: dict[str, int] | None = None) -> Path:
    """train/val/test with `counts[split]` images per class, in every supported format
    (and one grayscale and one RGBA file, which are read as RGB)."""
    counts = counts or {"train": 4, "val": 2, "test": 2}
    seed = 0
    for split, n in counts.items():
        for name in classes:
            for i in range(n):
                mode = {1: "L", 3: "RGBA"}.get(i, "RGB") if split == "train" else "RGB"
                ext = EXTENSIONS[i % len(EXTENSIONS)]
                write_image(root / split / name / f"{i}.{ext}", color=COLORS[name], seed=seed,
                            mode=mode if ext in ("png", "webp") else "RGB")
                seed += 1
    return root
