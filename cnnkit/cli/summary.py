"""`cnnkit summary`."""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    from cnnkit.config import load_config
    from cnnkit.inspect.summary import format_summary, summarize
    from cnnkit.models.builder import build_model
    from cnnkit.models.freeze import freeze_for_training

    cfg = load_config(args.config, tuple(args.set))
    model = build_model(cfg)
    freeze_for_training(model, cfg.train, source=cfg.source)  # so frozen layers show as such
    summary = summarize(model)
    print(json.dumps(summary) if args.json else format_summary(summary, title=args.config))
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser("summary", parents=[common, overrides], help="layers, shapes, parameters")
    p.add_argument("config")
    p.add_argument("--json", action="store_true")
    return p
