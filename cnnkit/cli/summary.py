"""`cnnkit summary`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cnnkit.cli import HelpFormatter

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")

EPILOG = """examples:
  cnnkit summary mnist_conv
  cnnkit summary resnet18 --set data.image_size=128 --set model.num_classes=2
  cnnkit summary configs/vgg16.yaml --json"""

def run(args: argparse.Namespace) -> int:
    from cnnkit.inspect.summary import format_summary, summarize

    source = Path(args.config)
    if source.is_dir() or source.suffix in CHECKPOINT_SUFFIXES:
        from cnnkit.infer.model import load_predictor

        predictor = load_predictor(source, overrides=tuple(args.set))
        model, title = predictor.model, str(predictor.path)
    else:
        from cnnkit.config import load_config
        from cnnkit.models.builder import build_model
        from cnnkit.models.freeze import freeze_for_training

        cfg = load_config(args.config, tuple(args.set))
        model, title = build_model(cfg), args.config
        freeze_for_training(model, cfg.train, source=cfg.source)  # so frozen layers show
    summary = summarize(model)
    print(json.dumps(summary) if args.json else format_summary(summary, title=title))
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "summary", parents=[common, overrides], help="layers, shapes, parameters",
        description="Build a config's model (no data read) and print each layer with its "
                    "output shape, parameters and receptive field. Where model.num_classes is "
                    "auto, the head has the fallback count (1000 for the ImageNet zoo, 10 for "
                    "digits, the count of data.classes where set).",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("config",
                   help="a config file, a shipped config's name (e.g. resnet18), or a "
                        "checkpoint (.pt) or run directory")
    p.add_argument("--json", action="store_true",
                   help="the summary as one JSON object instead of a table")
    return p
