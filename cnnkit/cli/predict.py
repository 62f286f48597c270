"""`cnnkit predict`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cnnkit.cli import HelpFormatter
from cnnkit.errors import CnnkitError

EPILOG = """examples:
  cnnkit sample-images samples
  cnnkit predict runs/mnist_conv samples/digit_7.png samples/digit_2.png
  cnnkit predict runs/mnist_conv samples/ --csv predictions.csv
  cnnkit predict runs/mnist_conv/best.pt photo_of_paper.png --invert --top 3
  cnnkit predict runs/localization_mnist/best.pt canvas.png --out boxes/"""


def run(args: argparse.Namespace) -> int:
    from cnnkit.infer.locate import draw_boxes, format_prediction
    from cnnkit.infer.model import load_predictor
    from cnnkit.infer.predict import format_predictions, predict, write_csv
    from cnnkit.runtime.assemble import resolve_device

    _refuse_swapped(args.checkpoint, args.images)
    predictor = load_predictor(args.checkpoint, device=resolve_device(args.device,
                                                                      key="--device"))
    boxes = predictor.task.extra_outputs > 0  # p_c and a box before the class scores
    if args.out is not None and not boxes:
        raise CnnkitError(f"--out: draws boxes of localization checkpoints; "
                          f"{predictor.path} is a {predictor.task.name} checkpoint")
    top = predictor.task.shown_classes if args.top is None else args.top
    bad: list[dict[str, str]] = []
    results = predict(predictor, args.images, top=top, invert=args.invert,
                      skip_bad=args.skip_bad, bad=bad)
    if args.out is not None:
        draw_boxes(results, args.out)
    text = "\n".join(map(format_prediction, results)) if boxes else format_predictions(results)
    if args.csv is not None:
        write_csv(results, args.csv)
    if args.json:
        print(json.dumps(results))
    elif args.csv is None:
        print(text)
    else:
        print(f"wrote {len(results)} predictions to {args.csv}")
    if bad:  # together at the end, each with its reason
        print(f"cnnkit: warning: skipped {len(bad)} of {len(results) + len(bad)} images that "
              f"cannot be decoded (--skip-bad):", file=sys.stderr)
        for item in bad:
            print(f"  {item['error']}", file=sys.stderr)
    return 0


def _refuse_swapped(checkpoint: str, images: list[str]) -> None:
    """An image where the checkpoint goes (`cnnkit predict IMAGE RUN`): one line saying which
    comes first, instead of a checkpoint reader's complaint about a JPEG."""
    from cnnkit.data.folder_index import EXTENSIONS
    from cnnkit.rundir import BEST, LAST

    if Path(checkpoint).suffix.lower() in EXTENSIONS and Path(checkpoint).is_file():
        run = next((i for i in images if i.endswith(".pt") or (Path(i) / BEST).exists()
                    or (Path(i) / LAST).exists()), "RUN")
        raise CnnkitError(f"{checkpoint}: an image where the checkpoint goes; the checkpoint "
                          f"or run directory comes first: cnnkit predict {run} {checkpoint}")


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict", parents=[common], help="classes (or boxes) of image files and folders",
        description="Classify image files with a checkpoint: each image is preprocessed as "
                    "the checkpoint records (size, channels, normalization) and "
                    "its most probable classes printed. A localization checkpoint prints the "
                    "box and its class, and draws it with --out.",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a cnnkit checkpoint (best.pt, an exported file), or a run directory "
                        "(best.pt, else last.pt)")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (PNG, JPEG, ...), or folders (every image under them, "
                        "recursively)")
    p.add_argument("--top", type=int, metavar="K",
                   help="the K most probable classes per image (default 5; for a localization "
                        "checkpoint 1, the class of its box)")
    p.add_argument("--out", metavar="DIR",
                   help="localization: write each image with its predicted box drawn")
    p.add_argument("--csv", metavar="FILE",
                   help="write the predictions as CSV (image, class, probability, ...)")
    p.add_argument("--json", action="store_true",
                   help="one JSON list of results instead of a line per image")
    p.add_argument("--device", default="auto",
                   help="auto (cuda, then mps, then cpu; the default), cpu, cuda, cuda:N or mps")
    p.add_argument("--skip-bad", action="store_true",
                   help="predict the images that decode and list the others at the end, each "
                        "with its reason (as data.skip_bad does in training); without it, an "
                        "undecodable image stops the command, named")
    p.add_argument("--invert", action="store_true",
                   help="invert each image's brightness first (dark digits on light paper, for "
                        "a model trained on light on dark, as MNIST is)")
    return p
