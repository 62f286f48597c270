"""`cnnkit sample-images`."""

from __future__ import annotations

import argparse

from cnnkit.cli import HelpFormatter

EPILOG = """examples:
  cnnkit sample-images samples
  cnnkit predict runs/mnist_conv/best.pt samples/digit_7.png
  cnnkit visualize runs/mnist_conv/best.pt saliency --image samples/digit_7.png"""


def run(args: argparse.Namespace) -> int:
    from cnnkit.data.mnist_sample import write_sample_images

    paths = write_sample_images(args.dir)
    print(f"wrote {len(paths)} images in {args.dir}: {', '.join(p.name for p in paths)}")
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sample-images", parents=[common], help="write real digit images to try predict on",
        description="Write ten real MNIST digits as PNG files, DIR/digit_0.png to "
                    "digit_9.png (28×28, light on dark as MNIST is): digits from the embedded "
                    "sample's validation split, which the default runs do not train on.",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("dir", metavar="DIR", help="folder to write into (created if missing)")
    return p
