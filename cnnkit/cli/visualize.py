"""`cnnkit visualize`."""

from __future__ import annotations

import argparse

from cnnkit.cli import HelpFormatter

EPILOG = """examples:
  cnnkit visualize runs/mnist_conv/best.pt filters --out filters.png
  cnnkit sample-images samples
  cnnkit visualize runs/mnist_conv/best.pt activations --image samples/digit_7.png --out acts/
  cnnkit visualize runs/mnist_conv/best.pt saliency --image samples/digit_7.png"""

def run(args: argparse.Namespace) -> int:
    from cnnkit.inspect.visualize import visualize

    paths = visualize(args.checkpoint, args.kind, out=args.out, layer=getattr(args, "layer", None),
                      image=getattr(args, "image", None))
    print(f"wrote {paths[0]}" if len(paths) == 1 else
          f"wrote {len(paths)} files in {paths[0].parent}: {', '.join(p.name for p in paths)}")
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "visualize", parents=[common], help="filters, feature maps, saliency",
        description="Pictures of what a checkpoint's conv layers hold: the filters of one "
                    "layer, every conv layer's feature maps for an image, or the input "
                    "gradient of the top class over an image (saliency).",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a cnnkit checkpoint (best.pt), or a run directory (best.pt, else "
                        "last.pt)")
    pictures = p.add_subparsers(dest="kind", required=True, metavar="PICTURE",
                                help="filters, activations or saliency")
    q = pictures.add_parser("filters", parents=[common], help="a conv layer's weights (PNG)",
                            description="A conv layer's weights, one tile per filter (PNG).")
    q.add_argument("--layer", metavar="PATH",
                   help="conv layer path as in `cnnkit summary`, e.g. features.0 (default: the "
                        "first conv layer)")
    q.add_argument("--out", metavar="FILE", help="the PNG to write (default: filters.png)")
    q = pictures.add_parser("activations", parents=[common],
                            help="each conv layer's feature maps for an image (PNGs in a folder)",
                            description="Each conv layer's feature maps for one image, a PNG "
                                        "per layer in a folder.")
    q.add_argument("--image", required=True, metavar="IMAGE",
                   help="the image to feed (`cnnkit sample-images DIR` writes digits)")
    q.add_argument("--out", metavar="DIR", help="folder to write into (default: activations/)")
    q = pictures.add_parser("saliency", parents=[common],
                            help="the top class's input gradient over the image (PNG)",
                            description="The gradient of the top class's score with respect "
                                        "to the input, over the image (PNG).")
    q.add_argument("--image", required=True, metavar="IMAGE",
                   help="the image to explain (`cnnkit sample-images DIR` writes digits)")
    q.add_argument("--out", metavar="FILE", help="the PNG to write (default: saliency.png)")
    return p
