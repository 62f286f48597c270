"""`cnnkit export`."""

from __future__ import annotations

import argparse

from cnnkit.cli import HelpFormatter


def run(args: argparse.Namespace) -> int:
    from cnnkit.infer.export import export

    written = export(args.run, args.out, onnx=args.onnx)
    print(f"wrote {written['checkpoint']} ({written['bytes'] / 1e6:.2f} MB; the source "
          f"checkpoint is {written['source_bytes'] / 1e6:.2f} MB)")
    if "onnx" in written:
        print(f"wrote {written['onnx']} (outputs within {written['onnx_relative_difference']:.1e} "
              f"of PyTorch's, relative to their scale, on {written['onnx_checked_on']}; "
              f"classes and preprocessing in its metadata)")
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export", parents=[common], help="a slim checkpoint to share or serve (and ONNX)",
        description="Write a slim checkpoint of a run: weights (EMA weights where the run kept "
                    "them), preprocessing, classes, config and a digest; no optimizer, RNG "
                    "state, history or absolute paths. eval, predict, visualize, summary and "
                    "cnnkit.load accept it.",
        epilog="""examples:
  cnnkit export runs/mnist_conv --out mnist_conv.pt
  cnnkit export runs/mnist_conv/best.pt --out mnist_conv.pt --onnx mnist_conv.onnx""",
        formatter_class=HelpFormatter)
    p.add_argument("run", metavar="RUN", help="a run directory (best.pt, else last.pt) or a "
                                              "checkpoint file")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the slim checkpoint: weights, preprocessing, classes, config, digest")
    p.add_argument("--onnx", metavar="FILE",
                   help="also export ONNX (pip install 'cnnkit[onnx]'), with classes, "
                        "preprocessing and task in its metadata; its outputs checked against "
                        "PyTorch's on images of the run's data")
    return p
