"""`cnnkit visualize`."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from cnnkit.inspect.visualize import visualize

    paths = visualize(args.checkpoint, args.kind, out=args.out, layer=getattr(args, "layer", None),
                      image=getattr(args, "image", None))
    print(f"wrote {paths[0]}" if len(paths) == 1 else
          f"wrote {len(paths)} files in {paths[0].parent}: {', '.join(p.name for p in paths)}")
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser("visualize", parents=[common], help="filters, feature maps, saliency")
    p.add_argument("checkpoint", help="a checkpoint file, or a run directory (best.pt, else "
                                      "last.pt)")
    pictures = p.add_subparsers(dest="kind", required=True, metavar="PICTURE")
    q = pictures.add_parser("filters", parents=[common], help="a conv layer's weights (PNG)")
    q.add_argument("--layer", help="conv layer path (default: the first)")
    q.add_argument("--out", metavar="FILE", help="default: filters.png")
    q = pictures.add_parser("activations", parents=[common],
                            help="each conv layer's feature maps for an image (PNGs in a folder)")
    q.add_argument("--image", required=True)
    q.add_argument("--out", metavar="DIR", help="default: activations/")
    q = pictures.add_parser("saliency", parents=[common],
                            help="the top class's input gradient over the image (PNG)")
    q.add_argument("--image", required=True)
    q.add_argument("--out", metavar="FILE", help="default: saliency.png")
    return p
