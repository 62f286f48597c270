"""`cnnkit summary`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


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
    p = sub.add_parser("summary", parents=[common, overrides], help="layers, shapes, parameters")
    p.add_argument("config", metavar="CONFIG",
                   help="a YAML config, or a checkpoint (.pt) or run directory")
    p.add_argument("--json", action="store_true")
    return p
