"""Write canvases of a localization config's split as PNG files, with their true boxes.

    python scripts/localization_canvases.py configs/localization_mnist.yaml --n 8 --out canvases/
    python scripts/localization_canvases.py configs/localization_mnist.yaml --n 4 \\
        --set data.train_size=10 --set data.val_size=4      # build only the canvases it shows

Prints one line per canvas: file, p_c, box (x, y, w, h in pixels, top-left corner) and class.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from cnnkit.config import load_config
from cnnkit.data import build_data
from cnnkit.errors import CnnkitError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=8, help="how many canvases, from the first")
    parser.add_argument("--out", default="canvases")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override the config, e.g. data.localization.empty=0.5 (repeatable)")
    args = parser.parse_args(argv)
    try:
        data = build_data(load_config(args.config, args.set).data)
        split = data.splits[args.split]
    except CnnkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = split.images.shape[-1]
    for i in range(min(args.n, len(split))):
        path = out / f"{args.split}_{i:04d}.png"
        image = split.images[i].permute(1, 2, 0).squeeze(-1).numpy()
        Image.fromarray(image).save(path)
        p_c, *box, k = split.labels[i].tolist()
        where = " ".join(f"{v * size:.0f}" for v in box)
        print(f"{path}  p_c {p_c:.0f}" + (f"  box {where}  class {data.classes[int(k)]}"
                                           if p_c else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
