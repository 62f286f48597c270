"""ImageNet-style class folders made from the real photos that scikit-image ships in its wheel
(no download): OUT/train/<class>/*.jpg and OUT/val/<class>/*.jpg. A benchmark and smoke-test
fixture, outside the cnnkit wheel (scikit-image is in the `bench` extra).

    PYTHONPATH=. python scripts/photo_folders.py /tmp/photos --train-per-class 729 \\
        --val-per-class 100          # the loader bench's 1,458 training photos, 2 classes
    PYTHONPATH=. python scripts/photo_folders.py /tmp/few --train-per-class 125 \\
        --val-per-class 50           # the photo quick start's ~250 photos

A wheel ships only 16 real photographs (8 colour, 8 grayscale; the scans, charts and synthetic
pictures are left out), so each file is a fresh random crop of one of them (a fifth to all of
its area, aspect 3:4 to 4:3), resized to a long side of 400-560 px (about a camera's 500x375),
sometimes mirrored, and re-encoded as a baseline JPEG at quality 75-95. One file in
`--oriented-every` is stored sideways with an EXIF orientation tag (6) that turns it upright,
as phones write them. The colour and the grayscale photos are each dealt to the classes in
turn (so colour alone tells no class): a class is a set of scenes, and val draws other crops
of the same scenes with another seed, a check that a model learns from photos, not a
held-out benchmark.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# file names inside skimage/data/ that are photographs and ship in the wheel
COLOUR = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "retina.jpg", "ihc.png")
GRAY = ("camera.png", "moon.png", "coins.png", "grass.png", "gravel.png", "brick.png",
        "clock_motion.png", "cell.png")
PHOTOS = COLOUR + GRAY
ORIENTATION = 0x0112  # the EXIF tag a viewer reads to turn the stored pixels upright


def photo_dir() -> Path:
    try:
        import skimage.data
    except ImportError:
        sys.exit("photo_folders.py: error: needs scikit-image (pip install 'cnnkit[bench]')")
    return Path(skimage.data.__file__).parent


def load_photos() -> dict[str, Image.Image]:
    folder = photo_dir()
    return {name.split(".")[0]: Image.open(folder / name).convert("RGB") for name in PHOTOS}


def random_view(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop (area fraction 0.2-1, aspect 3:4-4:3), resized to a long side of 400-560,
    mirrored half the time."""
    w, h = photo.size
    for _ in range(10):
        area = w * h * rng.uniform(0.2, 1.0)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = round((area * aspect) ** 0.5), round((area / aspect) ** 0.5)
        if cw <= w and ch <= h:
            break
    else:
        cw, ch = w, h
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    view = photo.crop((x, y, x + cw, y + ch))
    scale = rng.integers(400, 561) / max(cw, ch)
    view = view.resize((max(1, round(cw * scale)), max(1, round(ch * scale))),
                       Image.Resampling.BICUBIC)
    return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else view


def save_jpeg(view: Image.Image, path: Path, *, quality: int, oriented: bool) -> None:
    """Baseline JPEG; `oriented`: stored turned 90 degrees counter-clockwise with orientation 6
    (rotate 90 clockwise to view), so the upright picture is `view`."""
    if oriented:
        exif = Image.Exif()
        exif[ORIENTATION] = 6
        view.transpose(Image.Transpose.ROTATE_90).save(path, quality=quality, exif=exif)
    else:
        view.save(path, quality=quality)


def write_split(out: Path, split: str, per_class: int, classes: list[list[str]],
                photos: dict[str, Image.Image], *, seed: int, oriented_every: int) -> int:
    rng = np.random.default_rng(seed)
    count = 0
    for c, names in enumerate(classes):
        folder = out / split / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            name = names[i % len(names)]
            oriented = oriented_every > 0 and count % oriented_every == oriented_every - 1
            save_jpeg(random_view(photos[name], rng), folder / f"{name}_{i:05d}.jpg",
                      quality=int(rng.integers(75, 96)), oriented=oriented)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write train/ and val/ into")
    parser.add_argument("--train-per-class", type=int, default=729, metavar="N")
    parser.add_argument("--val-per-class", type=int, default=100, metavar="M")
    parser.add_argument("--classes", type=int, default=2, metavar="K",
                        help=f"classes the {len(PHOTOS)} photos are dealt into, 2 to {len(GRAY)}")
    parser.add_argument("--oriented-every", type=int, default=8, metavar="E",
                        help="one file in E carries an EXIF orientation tag; 0: none")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 2 <= args.classes <= len(GRAY):
        parser.error(f"--classes must be 2 to {len(GRAY)}")
    if args.train_per_class < 1 or args.val_per_class < 0:
        parser.error("--train-per-class must be >= 1 and --val-per-class >= 0")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty")
    photos = load_photos()
    stem = [name.split(".")[0] for name in PHOTOS]
    colour, gray = stem[:len(COLOUR)], stem[len(COLOUR):]
    classes = [colour[c::args.classes] + gray[c::args.classes] for c in range(args.classes)]
    n = write_split(args.out, "train", args.train_per_class, classes, photos,
                    seed=args.seed, oriented_every=args.oriented_every)
    if args.val_per_class:
        n += write_split(args.out, "val", args.val_per_class, classes, photos,
                         seed=args.seed + 1_000_003, oriented_every=args.oriented_every)
    for c, group in enumerate(classes):
        print(f"class_{c}: {', '.join(group)}")
    print(f"wrote {n} JPEG files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
